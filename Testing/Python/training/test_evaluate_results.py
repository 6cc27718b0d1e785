"""The segmentation evaluation writes each preset's results to its own files, and merges metrics into the card."""

import json

import pytest

pytest.importorskip("torch")  # training side

from training.segmentation import evaluate  # noqa: E402


def a_result(preset: str, real: dict) -> dict:
    rows = [{"seed": 1, "dsc_L1": 0.9, "dsc_L2": 0.8, "level_ok_L1": True, "level_ok_L2": False, "time_s": 0.5,
             "flagged": True, "rib_check_shift": 1}]
    return {"machine": "test", "date": "2026-11-27", "model_version": "9.9.9", "real": real,
            "phantoms": {"preset": preset, "cases": 1, "rows": rows, "summary": evaluate.summarise(rows)}}


def test_each_preset_has_its_own_results_and_only_the_chest_run_lists_real_cases(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "RESULTS", tmp_path)
    evaluate.write_results(a_result("chest", {"case": {"L1": {"found": True}}}))
    evaluate.write_results(a_result("spine", {}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "segmentation_eval.json", "segmentation_eval.md", "segmentation_eval_spine.json", "segmentation_eval_spine.md"]
    chest, spine = (tmp_path / "segmentation_eval.md").read_text(), (tmp_path / "segmentation_eval_spine.md").read_text()
    assert "preset `chest`" in chest and "Real cases" in chest
    assert "preset `spine`" in spine and "Real cases" not in spine
    assert "1 of 1 with a wrong level" in spine and "moved the levels of 1 scans" in spine


def test_the_card_keeps_the_metrics_of_other_presets(tmp_path):
    card = {"name": "segmentation", "version": "9.9.9", "task": "t", "files": {}, "preprocessing": {}, "labels": {},
            "training_data": {"source": "s", "generator_version": "1", "splits_first_seed_and_count": {}},
            "metrics": {}, "intended_use": "u", "limits": []}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    evaluate.update_card(tmp_path, {"test_phantoms": {"cases": 400}, "real_cases": {}})
    evaluate.update_card(tmp_path, {"test_phantoms_spine": {"cases": 400}})
    metrics = json.loads((tmp_path / "model_card.json").read_text())["metrics"]
    assert set(metrics) == {"test_phantoms", "real_cases", "test_phantoms_spine"}
    assert "test_phantoms_spine" in (tmp_path / "model_card.md").read_text()
