"""Scan conditions the classifiers use: the tube voltage (DICOM header, the reader, or unknown)
and the contrast phase (the reader, or unknown)."""

import json

import numpy as np
import pytest

from OsteoScreenLib.cli import main
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.features import scan_vector, scan_vector_size
from OsteoScreenLib.logic import OsteoScreenLogic
from OsteoScreenLib.registry import CONTRAST_PHASES, TUBE_VOLTAGES_KVP, contrast_phase, tube_voltage


@pytest.mark.parametrize("recorded, expected", [(120, 120), ("120", 120), ("135", 140), (80.0, 80), (110, None),
                                                (130, None), (70, None), ("", None), (None, None), ("abc", None)])
def test_a_recorded_kvp_counts_as_a_known_voltage_only_when_close_to_one(recorded, expected):
    assert tube_voltage(recorded) == expected


@pytest.mark.parametrize("word, expected", [("portal", "portal"), ("Portal venous", "portal"), ("none", "none"),
                                           ("unenhanced", "none"), ("arterial", "arterial"), ("delayed", None), (None, None)])
def test_contrast_phase_words(word, expected):
    assert contrast_phase(word) == expected


def test_the_scan_vector_holds_the_voltage_the_roi_hu_their_products_and_the_contrast_phase():
    v = scan_vector(100, [150.0, 90.0], "portal")
    assert v.shape == (scan_vector_size(2),) and v.dtype == np.float32
    k, c = len(TUBE_VOLTAGES_KVP) + 1, len(CONTRAST_PHASES) + 1
    onehot, hu, products, phase = v[:k], v[k : k + 2], v[k + 2 : -c].reshape(k, 2), v[-c:]
    assert onehot.tolist() == [0, 1, 0, 0, 0]
    assert hu.tolist() == pytest.approx([1.5, 0.9])
    assert products[1].tolist() == pytest.approx([1.5, 0.9]) and not products[[0, 2, 3, 4]].any()
    assert phase.tolist() == [0, 0, 1, 0]
    unknown = scan_vector(None, [150.0])
    assert unknown[k - 1] == 1 and unknown[-1] == 1 and unknown.shape == (scan_vector_size(1),)


@pytest.fixture(scope="module")
def a_dicom_phantom(tmp_path_factory):
    from OsteoScreenLib.phantom import generate_case, write_case

    case = generate_case(100003, "training")
    folder = write_case(case, tmp_path_factory.mktemp("dicom") / "case", fmt="dicom")
    return case, folder


def test_a_dicom_series_gives_its_kvp_to_the_classifier(a_dicom_phantom, bundled_models):
    import slicer

    case, folder = a_dicom_phantom
    kvp = case.meta["parameters"]["scanner"]["kvp"]
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct = logic.load_ct(folder / "ct")
    assert logic.tube_voltage(ct) == (kvp, "DICOM header")
    seg = logic.load_segmentation(folder / "labels.nii.gz", ct)
    result = logic.classify(ct, seg, "l1l2").to_json()
    assert result["input"]["tube_voltage_kvp"] == kvp and result["input"]["tube_voltage_source"] == "DICOM header"
    assert not any("tube voltage" in w for w in result["warnings"])
    other = next(v for v in TUBE_VOLTAGES_KVP if v != kvp)
    warnings = logic.default_tube_voltage(ct, other)  # the header wins over a default for files without one
    assert warnings and "DICOM header" in warnings[0] and logic.tube_voltage(ct)[0] == kvp


def test_without_a_header_the_voltage_is_unknown_until_the_reader_gives_it(a_chest_phantom, bundled_models):
    import slicer

    case, folder = a_chest_phantom
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct = logic.load_ct(folder / "ct.nii.gz")
    seg = logic.load_segmentation(folder / "labels.nii.gz", ct)
    assert logic.tube_voltage(ct) == (None, "unknown")
    unknown = logic.classify(ct, seg, "l1l2").to_json()
    assert unknown["input"]["tube_voltage_kvp"] is None
    assert any("tube voltage unknown" in w for w in unknown["warnings"])
    with pytest.raises(OsteoScreenError, match="not one the classifiers know"):
        logic.set_tube_voltage(ct, 90)
    # At a fixed HU, a lower voltage means a steeper HU-per-BMD line, hence a lower BMD: the model reads it.
    bmd = {}
    for kvp in (80, 140):
        assert logic.default_tube_voltage(ct, kvp) == []
        assert logic.tube_voltage(ct) == (kvp, "user")
        bmd[kvp] = logic.classify(ct, seg, "l1l2").to_json()["prediction"]["bmd_mg_cm3"]
    assert bmd[80] < bmd[140] - 10
    logic.set_tube_voltage(ct, None)
    assert logic.tube_voltage(ct) == (None, "unknown")


def test_the_contrast_phase_given_by_the_reader_reaches_the_classifier(a_chest_phantom, bundled_models):
    import slicer

    case, folder = a_chest_phantom
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct = logic.load_ct(folder / "ct.nii.gz")
    seg = logic.load_segmentation(folder / "labels.nii.gz", ct)
    assert logic.contrast_phase(ct) is None
    with pytest.raises(OsteoScreenError, match="contrast phase 'delayed' unknown"):
        logic.set_contrast_phase(ct, "delayed")
    logic.set_tube_voltage(ct, 120)
    bmd = {}
    for phase in ("none", "portal"):
        logic.set_contrast_phase(ct, phase)
        result = logic.classify(ct, seg, "l1l2").to_json()
        assert result["input"]["contrast_phase"] == phase
        bmd[phase] = result["prediction"]["bmd_mg_cm3"]
    # Iodine raises the marrow's HU: at the same HU, a portal-phase scan holds less bone.
    assert bmd["portal"] < bmd["none"] - 5


def test_classify_cli_takes_kvp_for_a_nifti_file(a_chest_phantom, bundled_models, tmp_path, capsys):
    _, folder = a_chest_phantom
    out = tmp_path / "r.json"
    args = ["classify", str(folder / "ct.nii.gz"), "--segmentation", str(folder / "labels.nii.gz"), "--model", "l1"]
    assert main(args + ["--kvp", "100", "--contrast", "arterial", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["input"]["tube_voltage_kvp"], result["input"]["tube_voltage_source"]) == (100, "user")
    assert result["input"]["contrast_phase"] == "arterial"
    with pytest.raises(SystemExit) as exc:
        main(args + ["--kvp", "90"])
    assert exc.value.code != 0 and "invalid choice" in capsys.readouterr().err


def test_the_phantoms_draw_the_voltages_and_phases_the_classifiers_know():
    from OsteoScreenLib.phantom.parameters import CONTRAST_CHOICES, KVP_CHOICES

    assert tuple(KVP_CHOICES) == TUBE_VOLTAGES_KVP and set(CONTRAST_CHOICES) == set(CONTRAST_PHASES)
