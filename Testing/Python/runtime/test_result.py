"""The result of one case renders itself: result.json, command line, Slicer table and panel, CSV, report."""

from __future__ import annotations

import json

import pytest

from OsteoScreenLib.result import CSV_FIELDS, CaseResult, InputInfo, ModelInfo, Prediction, VertebraResult


@pytest.fixture
def an_osteopenia_result():
    return CaseResult(
        input=InputInfo("ct.nii.gz", "ab" * 32, [512, 512, 300], [0.7, 0.7, 1.0], 100, "DICOM header", None),
        segmentation_source="model 0.7.1",
        vertebrae={"L1": VertebraResult(31.2, [1.0, 2.0, 3.0], 131.0, 400.0),
                   "L2": VertebraResult(33.9, [1.0, 2.0, -30.0], 127.5, 410.0)},
        model=ModelInfo("l1l2", "0.5.0", "cd" * 32),
        prediction=Prediction("osteopenia", {"normal": 0.2, "osteopenia": 0.7, "osteoporosis": 0.1}, 101.23),
        warnings=["L2 touches the edge of the scan"], timing_s={"classify": 0.1})


def test_result_json_keeps_the_schema_and_reads_back_the_same(an_osteopenia_result):
    data = an_osteopenia_result.to_json()
    assert list(data) == ["schema", "osteoscreen_version", "input", "segmentation", "model", "prediction",
                          "vertebrae", "warnings", "timing_s", "machine"]
    assert data["schema"] == "osteoscreen.result/1" and data["prediction"]["class"] == "osteopenia"
    assert list(data["vertebrae"]["L1"]) == ["volume_ml", "centroid_mm", "trabecular_roi_hu", "roi_area_mm2"]
    assert data["input"]["tube_voltage_kvp"] == 100 and data["segmentation"] == {"source": "model 0.7.1"}
    back = CaseResult.from_json(json.loads(json.dumps(data)))
    assert back == an_osteopenia_result and back.to_json() == data


def test_the_panel_shows_class_probabilities_roi_hu_bmd_scan_and_warnings(an_osteopenia_result):
    text = an_osteopenia_result.html()
    for part in ("Osteopenia", "Model 1: L1 + L2 fusion", "normal 0.20", "osteopenia 0.70", "osteoporosis 0.10",
                 "101.2 mg/cm", "L1 trabecular ROI: 131.0 HU", "L2 trabecular ROI: 127.5 HU", "L2 touches the edge",
                 "Tube voltage: 100 kVp (DICOM header)", "Contrast phase: unknown"):
        assert part in text, part
    an_osteopenia_result.input.tube_voltage_kvp = None
    assert "Tube voltage: unknown" in an_osteopenia_result.html()


def test_table_rows_csv_row_text_and_report_lines_carry_the_same_figures(an_osteopenia_result):
    rows = dict(an_osteopenia_result.table_rows())
    assert rows["Class"] == "osteopenia" and rows["P(osteopenia)"] == "0.700" and rows["Estimated BMD (mg/cm3)"] == "101.2"
    assert rows["L2 trabecular ROI (HU)"] == "127.5" and rows["Tube voltage (kVp)"] == "100 (DICOM header)"
    row = an_osteopenia_result.csv_row()
    assert set(row) <= set(CSV_FIELDS) and row["class"] == "osteopenia" and row["L1_roi_hu"] == 131.0
    assert row["p_normal"] == 0.2 and row["tube_voltage_kvp"] == 100 and row["warnings"] == "L2 touches the edge of the scan"
    text = "\n".join(an_osteopenia_result.text_lines())
    assert "osteopenia (model l1l2), estimated BMD 101 mg/cm3" in text and "L1: 31.2 ml, trabecular ROI 131 HU" in text
    lines = an_osteopenia_result.report_lines(72.0)
    assert lines[0] == ("OSTEOPENIA   estimated BMD 101 mg/cm3 (mean of L1 and L2)", "title")
    assert ("warning: L2 touches the edge of the scan", "warning") in lines
    assert any("tube voltage 100 kVp, contrast unknown" in t for t, _ in lines)


def test_a_result_json_of_fewer_fields_still_gives_its_csv_row():
    """A batch resumed over case folders written by an older version must still build its table."""
    old = {"prediction": {"class": "normal", "probabilities": {"normal": 0.9, "osteopenia": 0.08, "osteoporosis": 0.02},
                          "bmd_mg_cm3": 150.0},
           "model": {"name": "l1l2"}, "vertebrae": {"L1": {"trabecular_roi_hu": 180.0, "volume_ml": 30.0, "voxels": 9}},
           "warnings": []}
    row = CaseResult.from_json(old).csv_row()
    assert row["class"] == "normal" and row["L1_roi_hu"] == 180.0 and row["tube_voltage_kvp"] is None
    assert row["L2_roi_hu"] is None and row["p_osteoporosis"] == 0.02
