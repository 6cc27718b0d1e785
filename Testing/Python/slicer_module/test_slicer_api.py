"""Every Slicer, MRML and VTK name the code calls is declared by the oldest supported Slicer.

The list is made from Slicer's sources of that version by ``Testing/slicer_api.py``
(no Slicer sources are needed here); a call added since fails until the list is
made again, and a name that version lacks is listed as MISSING.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from OsteoScreenLib.registry import MINIMUM_SLICER_VERSION

REPO = Path(__file__).resolve().parents[3]
LIST = REPO / "Testing" / "Data" / ("slicer-api-%d.%d.txt" % MINIMUM_SLICER_VERSION)


def api_script():
    spec = importlib.util.spec_from_file_location("slicer_api", REPO / "Testing" / "slicer_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listed() -> dict[str, str]:
    rows = [line.split("\t") for line in LIST.read_text().splitlines() if line and not line.startswith("#")]
    return dict(rows)


def test_every_name_the_code_calls_was_checked_against_the_minimum_slicer():
    missing = sorted(api_script().used_names() - set(listed()))
    assert not missing, f"not checked against Slicer sources: {missing}; run Testing/slicer_api.py SLICER_SOURCE_DIR"


def test_the_minimum_slicer_declares_every_name_the_code_calls():
    assert not [name for name, where in listed().items() if where == "MISSING"]
    found = listed()
    assert "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h" in found["widget.setSourceVolumeNode"]
    assert "Libs/vtkSegmentationCore/vtkSegment.h" in found["SetTerminology"]
