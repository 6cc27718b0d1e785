"""Batch bookkeeping: unique case names, resume, failures recorded and the batch goes on."""

import csv
import json

import pytest

from OsteoScreenLib.batch import case_names, expand_inputs, run_batch
from OsteoScreenLib.errors import OsteoScreenError


def test_case_names_are_unique_even_when_inputs_share_a_file_name(tmp_path):
    paths = [tmp_path / "p1" / "ct.nii.gz", tmp_path / "p2" / "ct.nii.gz", tmp_path / "p3" / "scan.nrrd"]
    assert case_names(paths) == ["p1_ct", "p2_ct", "scan"]
    assert case_names([tmp_path / "a" / "x" / "ct.nii.gz", tmp_path / "b" / "x" / "ct.nii.gz"]) == ["a_x_ct", "b_x_ct"]


def test_folders_expand_to_their_scans(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("b.nii.gz", "a.nrrd", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([tmp_path / "in"])] == ["a.nrrd", "b.nii.gz"]
    with pytest.raises(OsteoScreenError, match="no such file"):
        expand_inputs([tmp_path / "missing"])


def a_processor(calls, fail_on=()):
    def process(source, folder):
        calls.append(source.name)
        if source.name in fail_on:
            raise OsteoScreenError(f"{source.name}: L1 not found in the field of view")
        result = {"prediction": {"class": "normal", "probabilities": {"normal": 0.9, "osteopenia": 0.08,
                                 "osteoporosis": 0.02}, "bmd_mg_cm3": 150.0},
                  "model": {"name": "l1l2"}, "vertebrae": {"L1": {"trabecular_roi_hu": 180.0, "volume_ml": 30.0}},
                  "warnings": []}
        (folder / "result.json").write_text(json.dumps(result))
    return process


def test_a_failing_scan_is_recorded_and_the_batch_goes_on(tmp_path):
    inputs = [tmp_path / f"{n}.nii.gz" for n in ("a", "b", "c")]
    calls = []
    summary = run_batch(inputs, tmp_path / "out", a_processor(calls, fail_on={"b.nii.gz"}))
    assert summary.done == ["a", "c"] and list(summary.failed) == ["b"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "L1 not found" in rows[1]["error"]
    assert rows[0]["class"] == "normal" and float(rows[0]["L1_roi_hu"]) == 180.0


def test_a_rerun_skips_finished_cases_and_retries_failed_ones(tmp_path):
    inputs = [tmp_path / f"{n}.nii.gz" for n in ("a", "b")]
    run_batch(inputs, tmp_path / "out", a_processor([], fail_on={"b.nii.gz"}))
    calls = []
    summary = run_batch(inputs, tmp_path / "out", a_processor(calls))
    assert calls == ["b.nii.gz"] and summary.skipped == ["a"] and summary.done == ["b"]
    assert not (tmp_path / "out" / "b" / "error.json").exists()


def test_an_interrupted_case_is_redone_and_earlier_ones_are_kept(tmp_path):
    inputs = [tmp_path / f"{n}.nii.gz" for n in ("a", "b", "c")]

    def killed_at_b(source, folder):
        if source.name == "b.nii.gz":
            (folder / "segmentation.seg.nrrd").write_bytes(b"half written")
            raise KeyboardInterrupt  # as if the process were killed here
        a_processor([])(source, folder)

    with pytest.raises(KeyboardInterrupt):
        run_batch(inputs, tmp_path / "out", killed_at_b)
    assert (tmp_path / "out" / "a" / "result.json").exists()
    calls = []
    summary = run_batch(inputs, tmp_path / "out", a_processor(calls))
    assert calls == ["b.nii.gz", "c.nii.gz"] and summary.skipped == ["a"]


def test_cancel_stops_before_the_next_case(tmp_path):
    inputs = [tmp_path / f"{n}.nii.gz" for n in ("a", "b", "c")]
    calls = []
    summary = run_batch(inputs, tmp_path / "out", a_processor(calls), cancel=lambda: len(calls) >= 1)
    assert calls == ["a.nii.gz"] and summary.done == ["a"]
