"""Both bundled classifiers end to end, the result contract, bad segments, batch screening."""

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from OsteoScreenLib.cli import main
from OsteoScreenLib.ct_io import write_volume
from OsteoScreenLib.logic import OsteoScreenLogic
from OsteoScreenLib.registry import CLASSES


@pytest.fixture(scope="module")
def phantom_nodes(a_chest_phantom, bundled_models):
    import slicer

    case, folder = a_chest_phantom
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct_node = logic.load_ct(folder / "ct.nii.gz")
    seg_node = logic.load_segmentation(folder / "labels.nii.gz", ct_node)
    return logic, ct_node, seg_node, case


@pytest.mark.parametrize("model", ["l1l2", "l1"])
def test_both_models_classify_a_phantom_and_fill_the_result_contract(phantom_nodes, model):
    logic, ct_node, seg_node, case = phantom_nodes
    result = logic.classify(ct_node, seg_node, model).to_json()
    assert result["schema"] == "osteoscreen.result/1"
    pred = result["prediction"]
    assert pred["class"] in CLASSES
    assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 0 < pred["bmd_mg_cm3"] < 400
    assert result["model"]["name"] == model and len(result["model"]["sha256"]) == 64
    assert len(result["input"]["sha256"]) == 64 and result["input"]["shape"] == list(case.ct.shape_ijk)
    assert set(result["vertebrae"]) == {"L1", "L2"}


def test_the_trabecular_roi_reads_the_phantoms_true_trabecular_hu(phantom_nodes):
    logic, ct_node, seg_node, case = phantom_nodes
    result = logic.classify(ct_node, seg_node, "l1l2").to_json()
    # generator 2.2.0 paints bone islands and focal fat into some bodies: the ROI takes them in (as on a
    # real scan), the painted mean leaves them out. This phantom (seed 300000) has an island in L1.
    lesions = {les["level"]: les["kind"] for les in case.meta["parameters"]["density"]["focal_lesions"]}
    assert lesions == {"L1": "island"}
    for name in ("L1", "L2"):
        roi, painted = result["vertebrae"][name]["trabecular_roi_hu"], case.meta["trabecular_hu"][name]
        if name in lesions:
            assert roi > painted + 10.0  # the island's 885+ HU raise the mean
        else:
            assert roi == pytest.approx(painted, abs=30)


def test_model_1_with_only_l1_suggests_model_2(phantom_nodes, tmp_path):
    logic, ct_node, _, case = phantom_nodes
    only_l1 = case.labels.with_array((case.labels.array == 1).astype(np.uint8))
    path = write_volume(only_l1, tmp_path / "l1.nii.gz")
    seg = logic.load_segmentation(path, ct_node)
    with pytest.raises(Exception, match="model 2"):
        logic.classify(ct_node, seg, "l1l2")
    assert logic.classify(ct_node, seg, "l1").to_json()["prediction"]["class"] in CLASSES


def test_a_segmentation_on_another_grid_is_resampled_not_misread(phantom_nodes, tmp_path):
    """Read at half the resolution, the bodies' ROIs stay where they are. L2 is compared: this
    phantom's L1 holds a bone island (generator 2.2.0) whose share of a ROI moves with its edge."""
    logic, ct_node, seg_node, case = phantom_nodes
    direct = logic.classify(ct_node, seg_node, "l1l2").to_json()
    coarse = case.labels.array[::2, ::2, ::2]  # half the resolution, same field of view
    m = case.labels.ijk_to_ras.copy()
    m[:3, :3] *= 2
    from OsteoScreenLib.volume import Volume

    path = write_volume(Volume(coarse, m), tmp_path / "coarse.nii.gz")
    resampled = logic.classify(ct_node, logic.load_segmentation(path, ct_node), "l1l2").to_json()
    assert resampled["vertebrae"]["L2"]["trabecular_roi_hu"] == pytest.approx(direct["vertebrae"]["L2"]["trabecular_roi_hu"], abs=15)
    assert resampled["vertebrae"]["L1"]["trabecular_roi_hu"] == pytest.approx(direct["vertebrae"]["L1"]["trabecular_roi_hu"], abs=40)


def test_a_real_case_classifies_without_accuracy_claim(real_data, tmp_path, bundled_models, capsys):
    case = real_data / "totalsegmentator-example"
    code = main(["classify", str(case / "ct.nii.gz"), "--segmentation", str(case / "labels.nii.gz"),
                 "--labels", "totalsegmentator", "--model", "l1l2", "--json", str(tmp_path / "r.json")])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["prediction"]["class"] in CLASSES


def test_screen_records_a_failing_scan_and_resumes(real_data, a_chest_phantom, tmp_path, bundled_models):
    _, folder = a_chest_phantom
    inputs = [str(folder / "ct.nii.gz"), str(real_data / "tptbox-l2-l4" / "ct.nii.gz")]
    out = tmp_path / "out"
    assert main(["screen", *inputs, "--output-dir", str(out)]) == 3
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "not found in the field of view" in rows[1]["error"] and "L1" in rows[1]["error"]
    case_dir = out / rows[0]["case"]
    assert {p.name for p in case_dir.iterdir()} >= {"segmentation.seg.nrrd", "result.json", "report.png"}
    stamp = (case_dir / "result.json").stat().st_mtime_ns
    assert main(["screen", *inputs, "--output-dir", str(out)]) == 3
    assert (case_dir / "result.json").stat().st_mtime_ns == stamp  # finished case skipped


def test_a_killed_batch_loses_no_finished_case(a_chest_phantom, tmp_path, bundled_models):
    _, folder = a_chest_phantom
    links = []
    for n in range(3):  # three inputs with distinct names
        d = tmp_path / f"p{n}"
        d.mkdir()
        (d / "ct.nii.gz").symlink_to(folder / "ct.nii.gz")
        links.append(str(d / "ct.nii.gz"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "OsteoScreenLib.cli", "screen", *links, "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "p0_ct" / "result.json").exists() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stamp = (out / "p0_ct" / "result.json").stat().st_mtime_ns
    assert main(["screen", *links, "--output-dir", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    assert (out / "p0_ct" / "result.json").stat().st_mtime_ns == stamp  # kept, not redone


def test_a_class_outside_the_estimated_bmd_range_is_flagged(phantom_nodes):
    """Class head and BMD head are separate outputs: when their classes differ, the result says so."""
    from OsteoScreenLib.registry import qct_class

    logic, ct_node, seg_node, _ = phantom_nodes
    for kvp in (80, 100, 120, 140, None):
        logic.set_tube_voltage(ct_node, kvp)
        for model in ("l1l2", "l1"):
            result = logic.classify(ct_node, seg_node, model).to_json()
            pred = result["prediction"]
            disagree = qct_class(pred["bmd_mg_cm3"]) != pred["class"]
            assert disagree == any("disagree" in w for w in result["warnings"]), (kvp, model, pred)
    logic.set_tube_voltage(ct_node, None)


def a_copied_classifier(tmp_path, change):
    """The bundled model 1 folder copied, its card's preprocessing changed by ``change`` (the weights,
    whose SHA-256 the card lists, untouched)."""
    import shutil

    from OsteoScreenLib.model_store import model_folder
    from OsteoScreenLib.registry import MODELS

    folder = shutil.copytree(model_folder(MODELS["l1l2"]["folder"]), tmp_path / "classifier")
    card = json.loads((folder / "model_card.json").read_text())
    change(card["preprocessing"])
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def test_the_classifier_makes_its_inputs_as_its_model_card_says(a_chest_phantom, tmp_path, bundled_models):
    """The preprocessing is read from the card, as the segmenter's: another ROI scale or HU window in the
    card changes the ROI HU or the network's input, and so the result."""
    from OsteoScreenLib.classifier import OsteoporosisClassifier
    from OsteoScreenLib.features import DEFAULT_PREPROCESSING

    case, _ = a_chest_phantom
    bundled = OsteoporosisClassifier("l1l2")
    assert bundled.preprocessing == DEFAULT_PREPROCESSING  # what the bundled models were trained with
    before = bundled.classify(case.ct, case.labels, kvp=120, contrast="none")

    smaller_roi = OsteoporosisClassifier("l1l2", folder=a_copied_classifier(tmp_path / "roi", lambda p: p["roi"].update(scale=0.3)))
    after = smaller_roi.classify(case.ct, case.labels, kvp=120, contrast="none")
    assert smaller_roi.preprocessing.roi_scale == 0.3
    assert after.features["L1"].roi_area_mm2 < 0.5 * before.features["L1"].roi_area_mm2
    assert after.features["L1"].roi_hu != before.features["L1"].roi_hu

    window = OsteoporosisClassifier("l1l2", folder=a_copied_classifier(tmp_path / "win", lambda p: p.update(hu_window=[-1000.0, 3000.0])))
    moved = window.classify(case.ct, case.labels, kvp=120, contrast="none")
    assert moved.features["L1"].roi_hu == before.features["L1"].roi_hu  # the same ROI, another network input
    assert not np.array_equal(moved.features["L1"].network_image(), before.features["L1"].network_image())
    assert moved.probabilities != before.probabilities or moved.bmd_mg_cm3 != before.bmd_mg_cm3


@pytest.mark.parametrize("change", [lambda p: p.pop("roi"), lambda p: p.update(image_size_px=0),
                                    lambda p: p.update(hu_window=[1200.0, -200.0]),
                                    lambda p: p.update(field_of_view_mm="wide"),
                                    lambda p: p.update(channels=["body only (0 outside the segment)"])],
                         ids=["no roi", "zero size", "reversed window", "not a number", "one channel"])
def test_a_card_without_a_usable_preprocessing_is_refused(tmp_path, bundled_models, change):
    from OsteoScreenLib.classifier import OsteoporosisClassifier
    from OsteoScreenLib.errors import OsteoScreenError

    with pytest.raises(OsteoScreenError, match="preprocessing is missing or invalid"):
        OsteoporosisClassifier("l1l2", folder=a_copied_classifier(tmp_path, change))


def test_a_card_whose_weights_do_not_match_is_still_refused(tmp_path, bundled_models):
    from OsteoScreenLib.classifier import OsteoporosisClassifier
    from OsteoScreenLib.errors import OsteoScreenError

    folder = a_copied_classifier(tmp_path, lambda p: None)
    with open(folder / "classifier.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(OsteoScreenError, match="SHA-256"):
        OsteoporosisClassifier("l1l2", folder=folder)
