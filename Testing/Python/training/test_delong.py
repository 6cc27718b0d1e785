"""DeLong AUC CIs and the paired test agree with R's pROC (golden values committed)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
from training.classification.delong import auc_ci, paired_test  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "Data"


@pytest.fixture(scope="module")
def cases():
    with open(DATA / "delong_cases.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("y", "a", "b", "c")}


@pytest.fixture(scope="module")
def golden():
    return json.loads((DATA / "delong_golden.json").read_text())


@pytest.mark.parametrize("score", ["a", "b", "c"])
def test_auc_and_confidence_interval_match_proc(cases, golden, score):
    got = auc_ci(cases["y"], cases[score])
    for key in ("auc", "ci_low", "ci_high", "var"):
        assert got[key] == pytest.approx(golden[score][key], rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("a, b", [("a", "b"), ("a", "c")])
def test_paired_delong_test_matches_proc(cases, golden, a, b):
    got = paired_test(cases["y"], cases[a], cases[b])
    assert got["z"] == pytest.approx(golden[f"{a}_vs_{b}"]["z"], rel=1e-8)
    assert got["p"] == pytest.approx(golden[f"{a}_vs_{b}"]["p"], rel=1e-7)


def test_identical_models_do_not_differ(cases):
    assert paired_test(cases["y"], cases["a"], cases["a"])["p"] == 1.0
