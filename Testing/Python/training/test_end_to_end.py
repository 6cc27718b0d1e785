"""End to end on a tiny subset: real phantoms, the bundled segmenter and classifiers (ONNX), the
calibrated ROI baseline fitted on real cached training phantoms, DeLong against it."""

from __future__ import annotations

import numpy as np
import pytest

from OsteoScreenLib.registry import CLASSES


@pytest.fixture(scope="module")
def three_test_seeds():
    """The first test phantoms of each QCT class (one each), from their parameters alone."""
    from training.classification.end_to_end import E2E_PRESET
    from training.classification.prepare import labels_of, seeds_of

    seeds = seeds_of("test", 30)
    labels = labels_of(seeds, E2E_PRESET)["label"]
    return [seeds[int(np.nonzero(labels == k)[0][0])] for k in range(len(CLASSES))]


def test_end_to_end_segments_measures_and_scores_each_model_against_the_baseline(tmp_path, monkeypatch, three_test_seeds):
    from training.classification import prepare as prepare_module
    from training.classification.config import MODELS, PRESET
    from training.classification.end_to_end import evaluate, load, prepare
    from training.classification.evaluate import BASELINE_INFORMATION

    # the baseline's line from real cached training phantoms (reference segments), in a cache of the test's own
    monkeypatch.setattr(prepare_module, "CACHE", tmp_path / "cache")
    for seed in prepare_module.seeds_of("train", 6):
        prepare_module.prepare_one((PRESET, seed))
    train = prepare_module.load_split("train", PRESET, 6)
    assert len(train["label"]) == 6

    folder = prepare(None, 1, folder=tmp_path / "e2e", seeds=three_test_seeds)
    files = sorted(folder.glob("*.npz"))
    assert [int(p.stem) for p in files] == sorted(three_test_seeds)
    stamps = [p.stat().st_mtime_ns for p in files]
    prepare(None, 1, folder=folder, seeds=three_test_seeds)  # resumable: nothing is redone
    assert [p.stat().st_mtime_ns for p in files] == stamps

    data = load(folder, three_test_seeds)
    assert data["segmented"].all() and data["found"].all()
    assert data["right_level"].all() and (data["dice"] > 0.85).all(), data["dice"]
    # the automatic segments' ROI reads the same CT as the reference bodies' ROI, within a few HU
    assert np.all(np.abs(data["roi_hu"] - data["roi_hu_reference"]) < 15.0), data["roi_hu"] - data["roi_hu_reference"]

    r = evaluate(folder, three_test_seeds, train=train)
    assert r["cases"] == 3 and r["segmentation_failed"] == 0
    for model in MODELS:
        for suffix in BASELINE_INFORMATION:
            for row in (model + suffix, "cal_hu_" + model + suffix):
                t = r["rows"][row]
                assert t["cases_scored"] == 3 and 0.0 <= t["accuracy_all_cases"] <= 1.0
                assert np.isfinite(t["bmd_mae_mg_cm3"]) and t["bmd_mae_mg_cm3"] < 150.0
                assert all(0.0 <= t["auc"][c]["auc"] <= 1.0 for c in CLASSES)
            d = r["delong_vs_calibrated_hu"][model + suffix]
            assert set(d) == set(CLASSES) and all(0.0 <= d[c]["auc_a"] <= 1.0 for c in CLASSES)
    # what the models are told matters: the same cases scored with and without kVp and phase differ
    assert r["rows"]["l1l2"]["bmd_mae_mg_cm3"] != r["rows"]["l1l2 unknown"]["bmd_mae_mg_cm3"]
