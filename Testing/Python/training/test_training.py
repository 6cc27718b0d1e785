"""The training code runs end to end on tiny data: a few phantoms, a few steps (CPU).

Not a quality check (the evaluations under training/results/ are): it proves that sample
preparation, training, checkpointing and resuming work on a fresh clone.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

REPO = Path(__file__).resolve().parents[3]


def _train_segmentation(cache: Path, out: Path, stage: str, iterations: int, *extra: str) -> str:
    cmd = [sys.executable, "-m", "training.segmentation.train", "--stage", stage, "--preset", "training",
           "--train-count", "1", "--tune-count", "1", "--iterations", str(iterations), "--save-every", "1",
           "--eval-every", "2", "--batch", "1", "--threads", "1", "--cache", str(cache), "--out", str(out), "--augment",
           *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_segmentation_samples_train_checkpoint_and_resume(tmp_path):
    from training.segmentation.prepare import prepare, sample_paths
    from training.segmentation.samples import load

    cache = tmp_path / "cache"
    for split in ("train", "tune"):
        prepare(split, 1, "training", cache, workers=1, coarse_checkpoint=tmp_path / "no-coarse-yet.pt")
    coarse_path, fine_path = sample_paths(cache, "training", 100000)
    coarse, fine = load(coarse_path), load(fine_path)
    assert coarse["x"].shape[0] == 1 and coarse["x"].shape[1:] == coarse["y"].shape
    assert fine["x"].shape == (3, 112, 80, 80) and set(np.unique(fine["y"])) == {0, 1, 2}

    runs = {}
    for stage in ("coarse", "fine"):
        runs[stage] = tmp_path / stage
        _train_segmentation(cache, runs[stage], stage, 2,
                            *(["--randomise", "--preset-weight", "training=3"] if stage == "coarse" else ["--randomise"]))
        log = json.loads((runs[stage] / "log.json").read_text())
        assert [e["iteration"] for e in log] == [1, 2] and "tune_dice" in log[-1]
        assert (runs[stage] / "final.pt").exists()
    # both stages with domain randomisation (coarse: tissue values, bias field, bright blobs, as generator 2.0's;
    # fine: tissue values and bias field on the CT channel)
    assert json.loads((runs["coarse"] / "config.json").read_text())["augment"]["p_remap"] > 0
    assert json.loads((runs["fine"] / "config.json").read_text())["augment"]["p_remap"] > 0
    assert json.loads((runs["coarse"] / "config.json").read_text())["preset_weight"] == {"training": 3.0}
    for stage, key in (("coarse", "p_pose"), ("fine", "p_hint_shift")):  # augmented, as the bundled stages
        assert json.loads((runs[stage] / "config.json").read_text())["augment"][key] > 0
    stdout = _train_segmentation(cache, runs["fine"], "fine", 3)  # a longer run resumes, not restarts
    assert "resumed at iteration 2" in stdout
    assert [e["iteration"] for e in json.loads((runs["fine"] / "log.json").read_text())] == [1, 2, 3]

    # fine samples take their hints from a trained coarse stage when there is one
    prepare("train", 2, "training", tmp_path / "cache2", workers=1, stages="fine",
            coarse_checkpoint=runs["coarse"] / "final.pt")
    assert load(sample_paths(tmp_path / "cache2", "training", 100001)[1])["x"].shape == (3, 112, 80, 80)
    # and one cache never mixes the hints of two coarse stages
    with pytest.raises(SystemExit, match="hints of another coarse stage"):
        prepare("train", 3, "training", tmp_path / "cache2", workers=1, stages="fine",
                coarse_checkpoint=runs["fine"] / "final.pt")


def test_rib_check_boxes_train_one_epoch(tmp_path, real_data, monkeypatch):
    from training.segmentation.prepare import prepare
    from training.segmentation.rib_check import case_items, train

    cache = tmp_path / "cache"
    prepare("train", 2, "chest-coarse", cache, workers=1, stages="coarse")
    prepare("tune", 1, "chest-coarse", cache, workers=1, stages="coarse")
    items = case_items(100000, cache)
    by_level = {it["level"]: it["label"] for it in items}
    assert by_level["T12"] == 1.0 and by_level["L1"] == 0.0  # L1: the first vertebra without ribs
    config = train(1, tmp_path / "run", threads=1, cache=cache, augment=True)  # turned, cut, degraded boxes
    assert config["augment"] and "tune_loss_narrowest" in config["best"]
    assert config["train_cases"] == 2 and config["tune_cases"] == 1 and config["train_boxes"] == len(
        case_items(100000, cache)) + len(case_items(100001, cache))
    assert (tmp_path / "run" / "final.pt").exists()
    # with --rib-swap the same cases with ribs moved between vertebrae join in: seed 100000 loses T12's ribs
    with pytest.raises(SystemExit, match="no cached chest-coarse-ribswap samples"):
        train(1, tmp_path / "swap", threads=1, cache=cache, rib_swap=True)
    prepare("train", 2, "chest-coarse-ribswap", cache, workers=1, stages="coarse")
    prepare("tune", 1, "chest-coarse-ribswap", cache, workers=1, stages="coarse")
    swapped = {it["level"]: it["label"] for it in case_items(100000, cache, "chest-coarse-ribswap")}
    assert swapped["T11"] == 1.0 and swapped["T12"] == 0.0 and swapped["L1"] == 0.0
    config = train(1, tmp_path / "swap", threads=1, cache=cache, rib_swap=True)
    assert config["rib_swap_preset"] == "chest-coarse-ribswap" and config["train_cases"] == 2
    assert config["train_boxes"] == sum(len(case_items(s, cache, p)) for s in (100000, 100001)
                                        for p in ("chest-coarse", "chest-coarse-ribswap"))
    tune_swap = [it for it in case_items(200000, cache, "chest-coarse-ribswap") if it["label"] !=
                 {i["level"]: i["label"] for i in case_items(200000, cache)}[it["level"]]]
    assert tune_swap  # the tune case's swap changed some vertebra's label, which is reported apart
    assert f"{tune_swap[0]['level']} swap, {'ribs' if tune_swap[0]['label'] else 'no ribs'}" in \
        config["best"]["tune_accuracy_by_level"]
    # rib_check_eval scores a run on both sets and on the real vertebrae (S from the reference masks)
    from training.studies.rib_check_eval import load_run, real_boxes, score_run
    from training.studies import rib_check_eval

    names, x = real_boxes("totalsegmentator-example", real_data)
    assert names == ["T11", "T12", "L1", "L2"] and x.shape == (4, 1, 12, 32, 40)
    monkeypatch.setattr(rib_check_eval, "CHECKPOINTS", tmp_path)
    entry = score_run(load_run("swap"), {p: [i for s in (200000,) for i in case_items(s, cache, p)]
                                         for p in ("chest-coarse", "chest-coarse-ribswap")},
                      {"totalsegmentator-example": (names, x)})
    assert set(entry["real"]["totalsegmentator-example"]) == set(names)
    assert "T12" in entry["chest-coarse"]["by_level"]
    assert any("swap" in k for k in entry["chest-coarse-ribswap"]["by_level"])  # swapped vertebrae apart
    assert not np.allclose(x[1], x[2])  # T12's box and L1's: centred on different vertebrae


def test_classifier_features_train_one_epoch(tmp_path, monkeypatch):
    from training.classification import prepare as cls_prepare
    from OsteoScreenLib.features import scan_vector_size
    from training.classification.train import inputs, train

    monkeypatch.setattr(cls_prepare, "CACHE", tmp_path / "cache")
    for seed in (400000, 400001, 500000):
        cls_prepare.prepare_one(("training", seed))
    data = cls_prepare.load_split("train", "training")
    assert data["image_hu"].shape[:2] == (2, 2) and data["label"].shape == (2,)
    images, scans = inputs(data, "l1l2", kvp_known=True)
    assert images.shape == (2, 2, 2, 128, 128) and scans.shape == (2, scan_vector_size(2))
    assert np.allclose(scans[:, :5].sum(1), 1) and not scans[:, 4].any()  # tube voltage known
    assert scans[:, 5] == pytest.approx(data["roi_hu"][:, 0] / 100, abs=0.02)  # ROI HU measured as at run time
    assert inputs(data, "l1l2", kvp_known=False)[1][:, 4].all()
    assert not inputs(data, "l1l2")[1][:, -1].any() and inputs(data, "l1l2", contrast_known=False)[1][:, -1].all()
    assert set(data["contrast"]) <= {"none", "arterial", "portal"}
    # labels: the QCT reading (marrow fat read as missing mineral), not the density drawn
    from OsteoScreenLib.phantom import sample_parameters
    from OsteoScreenLib.phantom.density import qct_measurement, qct_reading
    from OsteoScreenLib.registry import CLASSES, qct_class

    p = sample_parameters(400000, "training")
    # generator 2.2.0: a measurement against calibration rods with its own error, not the analytic inverse
    expected = qct_measurement(p, "L1", p["subject"]["bmd_mg_cm3"]["L1"])
    analytic = qct_reading(p["subject"]["bmd_mg_cm3"]["L1"], p["scanner"]["kvp"], p["scanner"]["slope_jitter"],
                           p["subject"]["marrow_fat_fraction"])
    assert data["bmd"][0, 0] == pytest.approx(expected, abs=1e-2) and abs(expected - analytic) > 1e-2
    assert data["true_bmd"][0, 0] == pytest.approx(p["subject"]["bmd_mg_cm3"]["L1"], abs=1e-2)
    assert [CLASSES[k] for k in data["label"]] == [qct_class(b) for b in data["bmd"][:, 2]]
    config = train("l1", 1, "training", 0, tmp_path / "run", train_count=2, threads=1)
    assert config["train_cases"] == 2 and config["tune_cases"] == 1
    assert config["calibration_init"]["train_mae_mg_cm3"] >= 0  # BMD path started at the least-squares line
    assert (tmp_path / "run" / "best.pt").exists()


def _bundled_checkpoint(stage: str, folder: Path) -> Path:
    """The bundled stage's weights (training/weights) as a training run's folder."""
    import torch

    from training.segmentation.export import load_state
    from training.segmentation.network import build_network

    folder.mkdir(parents=True)
    torch.save({"model": load_state(build_network(stage), f"segmentation-{stage}").state_dict()}, folder / "final.pt")
    (folder / "config.json").write_text("{}")
    return folder


def test_box_preset_fine_samples_take_hints_from_the_whole_chest(tmp_path, monkeypatch):
    """chest-box shows only a box around L1-L2: its fine samples' hints come from the bundled coarse
    stage run on the same case rendered whole on the coarse grid, so they point at the right bodies."""
    from OsteoScreenLib.phantom import generate_case
    from training.segmentation import prepare as prepare_module
    from training.segmentation.prepare import coarse_hints, prepare, sample_paths
    from training.segmentation.samples import fine_sample, levels_agree, load

    # a training seed whose coarse levels the bundled coarse stage alone finds (on generator 2.1.0, 3 of
    # the first 8, as the organs no longer mark L1; the others take blurred reference hints instead)
    seed = 100002
    monkeypatch.setattr(prepare_module, "seeds_of", lambda split, count=None: [seed])
    checkpoint = _bundled_checkpoint("coarse", tmp_path / "coarse") / "final.pt"
    with pytest.raises(SystemExit, match="--stages fine"):
        prepare("train", 1, "chest-box", tmp_path / "cache", workers=1, coarse_checkpoint=checkpoint)
    prepare("train", 1, "chest-box", tmp_path / "cache", workers=1, stages="fine", coarse_checkpoint=checkpoint)
    s = load(sample_paths(tmp_path / "cache", "chest-box", seed)[1])
    x, y = s["x"].astype(np.float32), s["y"]
    hint_l1, hint_l2 = (x[1] + 1) / 2, (x[2] + 1) / 2  # the hint channels back to probabilities
    assert hint_l1[y == 1].mean() > 0.5 > hint_l1[y == 2].mean()
    assert hint_l2[y == 2].mean() > 0.5 > hint_l2[y == 1].mean()
    # they are the coarse stage's own (its levels agree with the truth), not perturbed reference labels
    box = generate_case(seed, "chest-box")
    hints = coarse_hints(generate_case(seed, "chest-coarse").ct, checkpoint)
    assert levels_agree(hints, box.labels)
    expected = fine_sample(box.ct, box.labels, np.random.default_rng(seed + 7), hints)
    np.testing.assert_array_equal(s["x"], expected["x"])


def test_learning_curve_runs_end_to_end(tmp_path):
    """The learning-curve script on one scan of each split: a size trained and scored, the bundled
    fine stage scored on the same box (it outlines a test phantom), table, JSON and plot written."""
    from training.segmentation.prepare import prepare

    coarse = _bundled_checkpoint("coarse", tmp_path / "coarse") / "final.pt"
    fine = _bundled_checkpoint("fine", tmp_path / "fine")
    cache, results = tmp_path / "cache", tmp_path / "results"
    for split in ("train", "tune", "test"):
        prepare(split, 1, "chest-box", cache, workers=1, stages="fine", coarse_checkpoint=coarse)
    cmd = [sys.executable, "-m", "training.studies.learning_curve", "--sizes", "1", "--iterations", "1",
           "--test-count", "1", "--threads", "1", "--init", str(fine), "--reference", str(fine),
           "--cache", str(cache), "--checkpoints", str(tmp_path / "runs"), "--results", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((results / "segmentation_learning_curve.json").read_text())
    assert result["preset"] == "chest-box" and result["hints_from_preset"] == "chest-coarse"
    assert [r["train_scans"] for r in result["rows"]] == [1]
    assert (tmp_path / "runs" / "learning-curve-chest-box-1" / "final.pt").exists()
    assert result["bundled"]["dsc_L1_mean"] > 0.9 and result["bundled"]["dsc_L2_mean"] > 0.9
    assert "| 1 |" in (results / "segmentation_learning_curve.md").read_text()
    assert (results / "segmentation_learning_curve.png").stat().st_size > 0


def test_vertebra_counter_targets_and_a_tiny_run(tmp_path):
    """The counter's targets come from the phantom's anatomy on the counter's own grid: one marked
    body per vertebra in view with a disc between each two, L1 (the first below the last rib pair)
    without ribs and T12 with them; then two iterations of the counting stage."""
    from OsteoScreenLib.phantom import render_case, sample_parameters
    from OsteoScreenLib.postprocess import components
    from OsteoScreenLib.registry import COUNT_CLASSES, LABEL_OF
    from OsteoScreenLib.segmenter import coarse_input
    from training.segmentation.config import PREPROCESSING
    from training.segmentation.count_targets import count_sample
    from training.segmentation.prepare import count_sample_path, prepare
    from training.segmentation.samples import labels_on, load

    params = sample_parameters(100000, "chest-count")
    case = render_case(params)
    sample = count_sample(params, case.ct)
    y = sample["y"]
    _, grid = coarse_input(case.ct, PREPROCESSING["count"])
    assert sample["x"].shape[1:] == y.shape and np.allclose(np.diag(grid)[:3], [5.0, 5.0, 2.5])
    reference = labels_on(case.labels, grid, y.shape)  # the phantom's own L1 and L2 on the counter's grid
    bodies = components((y == COUNT_CLASSES["rib-bearing body"]) | (y == COUNT_CLASSES["body without ribs"]))
    for name in ("L1", "L2"):  # each reference body lies in one marked body without ribs
        under = [b for b in bodies if (b & (reference == LABEL_OF[name])).sum() > 10]
        assert len(under) == 1 and np.all(y[under[0]] == COUNT_CLASSES["body without ribs"]), name
    l1_top = np.argwhere(reference == LABEL_OF["L1"])[:, 0].max()
    t12 = min((b for b in bodies if np.argwhere(b)[:, 0].min() > l1_top), key=lambda b: np.argwhere(b)[:, 0].mean())
    assert np.all(y[t12] == COUNT_CLASSES["rib-bearing body"])
    between = y[l1_top:np.argwhere(t12)[:, 0].min() + 1]  # slices from L1's top to T12's bottom hold the disc
    assert (between == COUNT_CLASSES["disc"]).any()

    cache = tmp_path / "cache"
    for split in ("train", "tune"):
        prepare(split, 1, "training", cache, workers=1, stages="count")
    assert load(count_sample_path(cache, "training", 100000))["y"].max() == COUNT_CLASSES["disc"]
    _train_segmentation(cache, tmp_path / "count", "count", 2, "--randomise")
    config = json.loads((tmp_path / "count" / "config.json").read_text())
    assert config["stage"] == "count" and config["augment"]["p_cut_top"] > 0
    assert len(json.loads((tmp_path / "count" / "log.json").read_text())[-1]["tune_dice"]) == 3  # bodies x2, disc


def test_preset_weights_draw_one_preset_more_often(tmp_path):
    import argparse

    from training.segmentation.prepare import prepare, seeds_of
    from training.segmentation.train import Samples, preset_weights

    assert preset_weights("spine=2, chest-coarse=0.5") == {"spine": 2.0, "chest-coarse": 0.5}
    for bad in ("spine", "spine=0", "spine=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="spine"):
            preset_weights(bad)
    cache = tmp_path / "cache"
    for preset in ("training", "spine"):
        prepare("train", 2, preset, cache, workers=1, stages="coarse", coarse_checkpoint=tmp_path / "none.pt")
    samples = Samples("coarse", seeds_of("train", 2), "training,spine", cache)
    assert samples.presets == ["training", "training", "spine", "spine"]
    samples.weight_presets({"spine": 3.0})
    rng = np.random.default_rng(0)
    drawn = [samples.presets[samples.draw(rng)] for _ in range(4000)]
    assert drawn.count("spine") / len(drawn) == pytest.approx(0.75, abs=0.03)
