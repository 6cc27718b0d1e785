"""One case, from CT to result: segment, classify, report, on Volumes.

Every entry point runs a case through :func:`run_case`: the command line
(``segment``, ``classify``, ``screen``, ``demo``), the logic's batch, the Slicer
worker and the Python console. The CT is read once into a :class:`Volume`; the
body features are computed once (by the classifier) and drawn in the report;
the scan settings travel as arguments. MRML appears only where a segmentation
is read or written (:func:`labels_from_file`, :func:`save_segmentation`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import registry
from .errors import OsteoScreenError
from .result import CaseResult
from .volume import Volume

RESULT_NAME, SEGMENTATION_NAME, REPORT_NAME = "result.json", "segmentation.seg.nrrd", "report.png"
DICOM_HEADER = "DICOM header"


@dataclass
class ScanSettings:
    """The tube voltage (kVp) and contrast phase the classifiers use; None: unknown."""

    kvp: int | None = None
    kvp_source: str = "unknown"
    contrast: str | None = None


def scan_settings(header_kvp=None, kvp=None, contrast=None, kvp_source: str = "user") -> tuple[ScanSettings, list[str]]:
    """The settings of one scan: a usable header kVp wins over ``kvp`` (e.g. ``--kvp``).

    Returns the settings and the warnings to report (a ``kvp`` that the header overrules).
    Raises OsteoScreenError for a ``kvp`` or ``contrast`` the classifiers do not know.
    """
    if kvp is not None and registry.tube_voltage(kvp) is None:
        known = ", ".join(str(v) for v in registry.TUBE_VOLTAGES_KVP)
        raise OsteoScreenError(f"tube voltage {kvp} kVp is not one the classifiers know ({known}); "
                               "choose one of them or leave it unknown")
    phase = registry.contrast_phase(contrast)
    if contrast is not None and phase is None:
        raise OsteoScreenError(f"contrast phase {contrast!r} unknown; choose one of "
                               f"{', '.join(registry.CONTRAST_PHASES)} or leave it unknown")
    user = registry.tube_voltage(kvp)
    header = registry.tube_voltage(header_kvp)
    if header is not None:
        warnings = [] if user in (None, header) else [
            f"the DICOM header gives the tube voltage ({header} kVp); {user} kVp not used"]
        return ScanSettings(header, DICOM_HEADER, phase), warnings
    if user is not None:
        return ScanSettings(user, kvp_source, phase), []
    if header_kvp not in (None, ""):
        source = f"{DICOM_HEADER} ({header_kvp} kVp, not one the classifiers know: treated as unknown)"
        return ScanSettings(None, source, phase), []
    return ScanSettings(None, "unknown", phase), []


@dataclass
class CaseInput:
    """A CT as read, where it comes from, and its scan settings."""

    ct: Volume
    path: str | None = None
    sha256: str | None = None
    scan: ScanSettings = field(default_factory=ScanSettings)
    warnings: list[str] = field(default_factory=list)  # from reading it (e.g. an overruled --kvp)
    series_files: list[str] | None = None  # a DICOM folder: only these files were read (study.py)


def read_case(path: str | os.PathLike, kvp=None, contrast=None, series_files: list | None = None,
              digest: bool = True) -> CaseInput:
    """Read a CT file or DICOM folder with its recorded tube voltage (``series_files``: of a DICOM
    folder, only these files: the series a study's selection chose, :mod:`study`). ``digest``: with
    the input's SHA-256 (what a result records; without it ``sha256`` is None)."""
    from .ct_io import read_ct
    from .hashing import sha256_files, sha256_path

    header: dict = {}
    ct = read_ct(path, header, series_files)
    scan, warnings = scan_settings(header.get("kvp"), kvp, contrast)
    sha256 = None if not digest else sha256_path(path) if series_files is None else sha256_files(series_files, path)
    return CaseInput(ct, str(path), sha256, scan, warnings,
                     [str(p) for p in series_files] if series_files is not None else None)


class Models:
    """The bundled models, each loaded (and verified) on first use and shared by every case of a run."""

    def __init__(self):
        self._segmenter = None
        self._classifiers: dict = {}

    @property
    def segmenter(self):
        if self._segmenter is None:
            from .segmenter import L1L2Segmenter

            self._segmenter = L1L2Segmenter()
        return self._segmenter

    @property
    def segmentation_source(self) -> str:
        return "model " + self.segmenter.card["version"]

    def classifier(self, model: str):
        from .classifier import OsteoporosisClassifier, check_model_name

        check_model_name(model)
        if model not in self._classifiers:
            self._classifiers[model] = OsteoporosisClassifier(model)
        return self._classifiers[model]


@dataclass
class CaseOutcome:
    """What :func:`run_case` returns: the result and what the report draws."""

    labels: Volume  # 1 = L1, 2 = L2 on the CT grid
    result: CaseResult | None = None  # None when only segmented
    features: dict = field(default_factory=dict)  # name -> BodyFeatures, as the classifier measured them
    heights: dict = field(default_factory=dict)  # name -> fracture.BodyHeights, drawn in the report
    segmentation: object | None = None  # the segmenter's SegmentationOutput when the model segmented


def classify(models: Models, case: CaseInput, labels: Volume, model: str = registry.DEFAULT_MODEL,
             source: str = "user segmentation", warnings=(), timing_s: dict | None = None) -> CaseOutcome:
    """Classify a case from its label map on the CT grid (the model's segments or a reader's)."""
    from .fracture import measure_fractures
    from .measurements import vertebra_stats
    from .result import InputInfo, ModelInfo, Prediction, VertebraResult

    t0 = time.perf_counter()
    c = models.classifier(model).classify(case.ct, labels, case.scan.kvp, case.scan.contrast)
    timing = dict(timing_s or {})
    timing["classify"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    heights, fractures = measure_fractures(labels)
    timing["fracture"] = round(time.perf_counter() - t0, 3)
    vertebrae = {}
    for name, s in vertebra_stats(labels).items():
        f = c.features.get(name)
        vertebrae[name] = VertebraResult(s["volume_ml"], s["centroid_mm"], round(f.roi_hu, 1) if f else None,
                                         round(f.roi_area_mm2, 1) if f else None)
    result = CaseResult(
        input=InputInfo.of(case.path, case.ct, case.sha256, case.scan), segmentation_source=source,
        vertebrae=vertebrae, model=ModelInfo(c.model, c.model_version, c.model_sha256),
        prediction=Prediction(c.predicted_class, c.probabilities, c.bmd_mg_cm3),
        warnings=list(warnings) + c.warnings, timing_s=timing, fractures=fractures)
    return CaseOutcome(labels, result, c.features, heights=heights)


def run_case(models: Models, case: CaseInput, model: str | None = registry.DEFAULT_MODEL, labels: Volume | None = None,
             source: str | None = None, progress: Callable[[float, str], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> CaseOutcome:
    """Segment (unless ``labels`` are given), then classify with ``model`` (None: segment only).

    ``cancel()`` returning True stops the segmentation (``segmenter.Cancelled``).
    """
    warnings, timing, output = list(case.warnings), {}, None
    if labels is None:
        output = models.segmenter.segment(case.ct, progress=progress, cancel=cancel)
        labels, source = output.labels, source or models.segmentation_source
        warnings += output.warnings
        timing.update(output.timing_s)
    if model is None:
        return CaseOutcome(labels, segmentation=output)
    outcome = classify(models, case, labels, model, source or "user segmentation", warnings, timing)
    outcome.segmentation = output
    return outcome


# --- the MRML edge: segmentations in and out


def save_segmentation(labels: Volume, path: str | os.PathLike, overwrite: bool = False, name: str = "L1-L2") -> Path:
    """Write a label map as ``.seg.nrrd`` (segments with names, colours, terminology, the CT's geometry)."""
    from .mrml_kits import new_scene
    from .segmentation_nodes import save_segmentation as save_node, segmentation_from_labelmap

    scene = new_scene()
    node, _ = segmentation_from_labelmap(scene, labels, reference_geometry=labels, name=name)
    return save_node(node, path, overwrite)


def labels_from_file(path: str | os.PathLike, ct: Volume, mapping: dict[str, int] | None = None) -> Volume:
    """A ``.seg.nrrd`` or label map file (with its label mapping) as an L1/L2 label map on the CT grid."""
    from .mrml_convert import volume_to_node
    from .mrml_kits import new_scene
    from .segmentation_nodes import labelmap_on_grid, load_segmentation_file

    scene = new_scene()
    ct_node = volume_to_node(scene, ct, "CT")
    node = load_segmentation_file(scene, path, ct_node, mapping)
    return ct.with_array(labelmap_on_grid(node, ct_node))


def write_case(case: CaseInput, outcome: CaseOutcome, folder: str | os.PathLike, overwrite: bool = False,
               segmentation: bool = True) -> Path:
    """The case's files: segmentation.seg.nrrd, for a DICOM series seg.dcm and sr.dcm (DICOM SEG
    and SR, :mod:`dicom_export`), report.png, then result.json (last: in a batch it marks the case done)."""
    from .atomic import write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if segmentation:
        save_segmentation(outcome.labels, folder / SEGMENTATION_NAME, overwrite)
        outcome.result.segmentation_path = SEGMENTATION_NAME
        write_dicom_case(case, outcome, folder, overwrite)
    write_report_image(case.ct, outcome, folder / REPORT_NAME, overwrite)
    write_json(folder / RESULT_NAME, outcome.result.to_json(), overwrite)
    return folder


def write_dicom_case(case: CaseInput, outcome: CaseOutcome, folder: Path, overwrite: bool = False) -> None:
    """seg.dcm and sr.dcm of a case read from a DICOM series (nothing for other inputs).

    A series the SEG cannot be written for (e.g. slices off the volume's grid) costs the DICOM
    files, not the case: the result says why they are missing.
    """
    from .dicom_export import is_dicom_input, write_dicom_outputs

    if not is_dicom_input(case.path):
        return
    try:
        outcome.result.dicom_files = write_dicom_outputs(case.path, outcome.labels, outcome.result, folder, overwrite,
                                                         series_files=case.series_files)
    except OsteoScreenError as exc:
        if "already exists" in str(exc):
            raise
        outcome.result.warnings.append(f"no DICOM SEG/SR written: {exc}")


def write_report_image(ct: Volume, outcome: CaseOutcome, path: Path, overwrite: bool = False) -> Path:
    from .report import render_report, write_png

    features = {n: f for n, f in outcome.features.items() if n in outcome.result.measured()}
    return write_png(render_report(ct, outcome.labels, outcome.result, features, outcome.heights), path, overwrite)
