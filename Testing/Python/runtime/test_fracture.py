"""Vertebral fracture assessment: heights of bodies of known shape, their Genant grade and type, on any grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from OsteoScreenLib import registry
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.fracture import assess_fractures, body_heights, genant_grade, measure_fractures
from OsteoScreenLib.result import CSV_FIELDS, CaseResult, InputInfo, ModelInfo, Prediction, VertebraResult
from OsteoScreenLib.volume import Volume

A, B, H, DISC = 20.0, 16.0, 28.0, 8.0  # half width, half depth, height of a body; disc between bodies (mm)
TILT_DEG = 12.0  # lordosis: the bodies lean forward in the scanner


def band_centre(position: str) -> float:
    """Local anterior coordinate (mm, + anterior) of the centre of a height band of a body of half depth B."""
    f0, f1 = registry.FRACTURE_HEIGHT_BANDS[position]
    return B - 0.5 * (f0 + f1) * 2 * B


def rotation(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def body_frame() -> np.ndarray:
    """Columns: the bodies' lateral (R), anterior and superior axes in RAS."""
    return rotation(0, TILT_DEG)


def wedge(drop):
    """Top falls linearly from the posterior surface (0) to the anterior surface (``drop``)."""
    return lambda x, y: (np.full_like(x, -H / 2), H / 2 - drop * (y + B) / (2 * B))


def biconcave(dent, radius=0.45):
    """Both endplates pushed in by ``dent`` inside ``radius`` of the cross-section (flat-bottomed)."""
    def shape(x, y):
        inner = (x / A) ** 2 + (y / B) ** 2 < radius**2
        return -H / 2 + dent * inner, H / 2 - dent * inner
    return shape


def height(h):
    return lambda x, y: (np.full_like(x, -h / 2), np.full_like(x, h / 2))


def grid(spacing, directions, size_mm=(50.0, 58.0, 86.0)):
    """A grid of ``spacing`` along ``directions`` (columns) that holds a box of ``size_mm`` around the origin."""
    directions = np.asarray(directions, float)
    reach = np.abs(directions.T) @ np.asarray(size_mm)  # extent of the box along each grid axis
    shape_ijk = np.ceil(reach / np.asarray(spacing)).astype(int)
    origin = -directions @ (0.5 * (shape_ijk - 1) * np.asarray(spacing))
    return Volume.from_geometry(np.zeros(shape_ijk[::-1], np.uint8), spacing, origin, directions)


def label_map(vol: Volume, l1_shape, l2_shape=height(H), arch=False) -> Volume:
    """L1 above L2 along the tilted spine; each body an elliptic cylinder cut by its shape's (bottom, top)."""
    k, j, i = vol.array.shape
    kji = np.stack(np.meshgrid(np.arange(k), np.arange(j), np.arange(i), indexing="ij"), -1).reshape(-1, 3)
    ras = vol.voxel_centers_ras(kji)
    frame = body_frame()
    out = np.zeros(len(ras), np.uint8)
    for label, shape, offset in ((1, l1_shape, 0.5 * (H + DISC)), (2, l2_shape, -0.5 * (H + DISC))):
        x, y, z = ((ras - offset * frame[:, 2]) @ frame).T
        bottom, top = shape(x, y)
        inside = ((x / A) ** 2 + (y / B) ** 2 <= 1) & (z >= bottom) & (z <= top)
        if arch:  # pedicles beside a 12 mm canal, then a lamina and spinous process taller than the body
            pedicles = (np.abs(x) >= 12) & (np.abs(x) <= 18) & (y < -B + 3) & (y >= -B - 12) & (np.abs(z) <= 6)
            lamina = (np.abs(x) <= 18) & (y < -B - 12) & (y >= -B - 40) & (np.abs(z) <= H / 2 + 4)
            inside |= pedicles | lamina
        out[inside] = label
    return vol.with_array(out.reshape(vol.array.shape))


ISO = grid((0.5, 0.5, 0.5), np.eye(3))


def wedge_drop_for(loss: float) -> float:
    """The drop at the anterior surface that makes the anterior band's height ``loss`` short of the posterior's."""
    fa, fp = [(band_centre(p) + B) / (2 * B) for p in ("anterior", "posterior")]
    return loss * H / (fa - fp * (1 - loss))


@pytest.mark.parametrize("loss, grade", [(0.10, 0), (0.225, 1), (0.32, 2), (0.50, 3)])
def test_a_wedge_of_known_height_loss_gives_its_heights_grade_and_type(loss, grade):
    drop = wedge_drop_for(loss)
    h = body_heights(label_map(ISO, wedge(drop)), 1)
    expected = {p: H - drop * (band_centre(p) + B) / (2 * B) for p in ("anterior", "middle", "posterior")}
    for p, value in expected.items():
        assert h.heights[p] == pytest.approx(value, abs=0.75), p  # 1.5 voxels: the voxels and the reading grid
    assert np.degrees(np.arccos(h.axis_si @ body_frame()[:, 2])) < 2.0  # the body's own axis, not the scanner's
    result = assess_fractures(label_map(ISO, wedge(drop)))
    assert result["L1"].losses["wedge"] == pytest.approx(loss, abs=0.03)
    assert result["L1"].grade == grade and result["L1"].type == ("wedge" if grade else None)
    assert result["L2"].grade == 0 and result["L2"].type is None


def test_a_biconcave_body_loses_its_middle_height_only():
    dent = 0.5 * 0.32 * H  # 32 % of the middle height: grade 2
    result = assess_fractures(label_map(ISO, biconcave(dent)))["L1"]
    assert result.middle_mm == pytest.approx(H - 2 * dent, abs=0.75)
    assert result.anterior_mm == pytest.approx(H, abs=0.75) and result.posterior_mm == pytest.approx(H, abs=0.75)
    assert (result.grade, result.type) == (2, "biconcave")


def test_a_crushed_body_is_graded_against_its_neighbour():
    result = assess_fractures(label_map(ISO, height(0.55 * H)))  # 45 % lower than L2, same shape
    assert (result["L1"].grade, result["L1"].type) == (3, "crush")
    assert result["L1"].losses["crush"] == pytest.approx(0.45, abs=0.03)
    assert result["L2"].grade == 0  # taller than its neighbour is no fracture
    alone = label_map(ISO, height(0.55 * H), l2_shape=lambda x, y: (np.full_like(x, 99.0), np.full_like(x, -99.0)))
    assert assess_fractures(alone)["L1"].grade == 0  # without a neighbour a uniformly low body cannot be told


def test_an_outline_taller_in_front_than_behind_is_not_graded():
    """An outline that leaked into a disc or a neighbour in front is no vertebral body: a "severe
    fracture" read from it would be the first thing the reader sees. It is not graded, says why, and is
    no neighbour for the other body (whose crush it would fake)."""
    tall = grid((0.5, 0.5, 0.5), np.eye(3), size_mm=(50.0, 58.0, 160.0))  # the outline's top stays in the scan
    result = assess_fractures(label_map(tall, wedge(-1.0 * H)))  # anterior about 1.8x the posterior height
    assert result["L1"].grade is None and "taller in front" in result["L1"].note
    assert result["L1"].anterior_mm > registry.FRACTURE_MAX_ANTERIOR_OVER_POSTERIOR * result["L1"].posterior_mm
    assert result["L2"].grade == 0 and "crush" not in result["L2"].losses
    mild = assess_fractures(label_map(tall, wedge(-0.3 * H)))  # about 25 % taller in front (a crushed back): graded
    assert mild["L1"].grade == 0


def test_anisotropic_lps_and_oblique_grids_give_the_same_heights():
    drop = wedge_drop_for(0.32)
    reference = assess_fractures(label_map(ISO, wedge(drop)))["L1"]
    lps_oblique = np.diag([-1.0, -1.0, 1.0]) @ rotation(2, 25.0) @ rotation(0, -15.0)  # no axis along the body's
    for spacing, directions in (((0.7, 0.9, 2.0), np.diag([-1.0, -1.0, 1.0])), ((0.8, 0.7, 1.5), lps_oblique)):
        vol = grid(spacing, directions)
        result = assess_fractures(label_map(vol, wedge(drop)))["L1"]
        for p in ("anterior", "middle", "posterior"):
            assert getattr(result, f"{p}_mm") == pytest.approx(getattr(reference, f"{p}_mm"), abs=max(spacing)), p
        assert (result.grade, result.type) == (reference.grade, reference.type) == (2, "wedge")


def test_a_whole_vertebra_mask_is_cut_to_its_body_at_the_canal():
    drop = wedge_drop_for(0.32)
    roomy = grid((0.5, 0.5, 0.5), np.eye(3), (50.0, 134.0, 86.0))  # the arch reaches 56 mm behind the centre
    body = body_heights(label_map(roomy, wedge(drop)), 1)
    whole = body_heights(label_map(roomy, wedge(drop), arch=True), 1)
    assert whole.depth_mm == pytest.approx(body.depth_mm, abs=1.0)
    for p in ("anterior", "middle", "posterior"):
        assert whole.heights[p] == pytest.approx(body.heights[p], abs=0.75), p


def test_a_body_cut_by_the_scan_is_not_assessed_and_its_neighbour_still_is():
    labels = label_map(ISO, wedge(wedge_drop_for(0.32)))
    cut = labels.array.copy()
    rows = np.flatnonzero((cut == 2).any(axis=(1, 2)))
    # the lower half of L2 is below the scan: its heights would be too low
    first = rows[len(rows) // 2]
    m = labels.ijk_to_ras.copy()
    m[:3, 3] = labels.voxel_centers_ras([[first, 0, 0]])[0]  # the scan starts at that slice
    result = assess_fractures(Volume(np.ascontiguousarray(cut[first:]), m))
    assert result["L2"].grade is None and "edge of the scan" in result["L2"].note
    assert (result["L1"].grade, result["L1"].type) == (2, "wedge")  # its own principal axis, no neighbour


def test_genant_grades_at_their_thresholds():
    assert [genant_grade(x) for x in (0.0, 0.199, 0.20, 0.249, 0.25, 0.399, 0.40, 0.9)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_bad_input_is_one_clear_error():
    with pytest.raises(OsteoScreenError, match="3D Volume"):
        assess_fractures(np.zeros((4, 4, 4)))
    assert assess_fractures(ISO) == {}  # nothing segmented: nothing to grade


@pytest.mark.parametrize("kind, height_loss", [("wedge", 0.8), ("biconcave", 0.5), ("crush", 0.55)])
def test_phantom_fractures_get_the_heights_and_grade_of_their_shape(kind, height_loss):
    """The phantom generator's fractures: heights against the renderer's own body shape (1.5 mm voxels)."""
    from OsteoScreenLib.phantom import render_case, sample_parameters
    from OsteoScreenLib.phantom.heights import true_heights, true_losses
    from OsteoScreenLib.phantom.render import build_anatomy

    params = sample_parameters(3, "training")
    params["spine"]["fractures"] = [{"level": "L1", "type": kind, "height_loss": height_loss}]
    case = render_case(params)
    bodies = {vb.name: vb for vb in build_anatomy(params).vertebrae}
    truth = {n: true_heights(params, bodies[n]) for n in ("L1", "L2")}
    losses = true_losses(truth["L1"], truth["L2"])
    worst = max(losses, key=losses.get)
    assert worst == kind  # the generator made the fracture it was asked for
    assert min(abs(losses[worst] - t) for t in registry.FRACTURE_GRADE_MIN_LOSS) > 0.03  # not on a grade's edge
    heights, result = measure_fractures(case.labels)
    for n in ("L1", "L2"):
        for p, value in truth[n].items():
            assert heights[n].heights[p] == pytest.approx(value, abs=1.5), (n, p)  # one voxel
    assert (result["L1"].grade, result["L1"].type) == (genant_grade(losses[worst]), kind)
    assert result["L1"].grade >= 2 and result["L2"].grade == 0


def a_result(fractures):
    return CaseResult(
        input=InputInfo("ct.nii.gz", "ab" * 32, [512, 512, 300], [0.7, 0.7, 1.0], 120, "DICOM header", None),
        segmentation_source="model 0.8.0",
        vertebrae={"L1": VertebraResult(25.0, [0.0, 0.0, 0.0], 150.0, 400.0),
                   "L2": VertebraResult(33.9, [0.0, 0.0, -30.0], 145.0, 410.0)},
        model=ModelInfo("l1l2", "0.5.0", "cd" * 32),
        prediction=Prediction("normal", {"normal": 0.8, "osteopenia": 0.15, "osteoporosis": 0.05}, 140.0),
        fractures=fractures)


def test_a_fracture_is_the_first_thing_every_view_of_the_result_shows():
    drop = wedge_drop_for(0.32)
    result = a_result(assess_fractures(label_map(ISO, wedge(drop))))
    text = result.text_lines()
    assert text[0].startswith("  FINDING: L1 vertebral fracture, Genant grade 2 (moderate, wedge")
    assert "osteoporosis whatever the BMD" in text[0]
    assert any(line.startswith("  L2:") and "Genant grade 0" in line for line in text)
    assert result.table_rows()[0][0] == "Finding" and "Genant grade 2" in result.table_rows()[0][1]
    assert result.html().startswith('<b style="color:#c00000">L1 vertebral fracture')
    assert result.report_lines(72.0)[0][1] == "finding"
    row = result.csv_row()
    assert set(row) <= set(CSV_FIELDS) and row["L1_fracture_grade"] == 2 and row["L1_fracture_type"] == "wedge"
    assert row["L2_fracture_grade"] == 0 and row["fracture_finding"].startswith("L1 vertebral fracture")
    back = CaseResult.from_json(json.loads(json.dumps(result.to_json())))
    assert back.fractures == result.fractures and back.text_lines() == text
    intact = a_result(assess_fractures(label_map(ISO, height(H))))
    assert intact.findings() == [] and not intact.text_lines()[0].startswith("  FINDING")


def test_the_report_image_draws_the_heights(tmp_path):
    from OsteoScreenLib.report import HEIGHT_COLORS, sagittal_panel

    labels = label_map(ISO, wedge(wedge_drop_for(0.32)))
    heights, _ = measure_fractures(labels)
    ct = labels.with_array(np.where(labels.array > 0, 300, -100).astype(np.int16))
    lines = [(p0, p1, HEIGHT_COLORS[p]) for h in heights.values() for p, (p0, p1) in h.height_lines().items()]
    plain = sagittal_panel(ct, labels, np.zeros(3))
    drawn = sagittal_panel(ct, labels, np.zeros(3), lines)
    green = np.all(drawn == np.asarray(HEIGHT_COLORS["anterior"], np.float32) * 255, axis=-1)
    assert green.sum() > 2 * 0.5 * H and not np.array_equal(plain, drawn)  # both bodies' anterior heights drawn


def test_classifying_a_phantom_with_a_crushed_l1_reports_the_fracture_first(tmp_path):
    """The whole path: pipeline.classify (the bundled classifier), the result's views and the report image."""
    from OsteoScreenLib.phantom import render_case, sample_parameters
    from OsteoScreenLib.pipeline import CaseInput, Models, ScanSettings, classify, write_report_image

    params = sample_parameters(3, "chest-box")
    params["spine"]["fractures"] = [{"level": "L1", "type": "crush", "height_loss": 0.5}]
    case = render_case(params)
    outcome = classify(Models(), CaseInput(case.ct, scan=ScanSettings(params["scanner"]["kvp"], "user")), case.labels)
    result = outcome.result
    assert (result.fractures["L1"].grade, result.fractures["L1"].type) == (3, "crush")
    assert result.fractures["L2"].grade == 0 and "fracture" in result.timing_s
    assert result.text_lines()[0].startswith("  FINDING: L1 vertebral fracture, Genant grade 3 (severe, crush")
    assert CaseResult.from_json(json.loads(json.dumps(result.to_json()))).fractures == result.fractures
    assert set(outcome.heights) == {"L1", "L2"}
    png = write_report_image(case.ct, outcome, tmp_path / "report.png")
    assert png.stat().st_size > 10_000


def test_results_csv_carries_the_grade_type_and_heights_of_each_level(tmp_path):
    """The batch's table, as `screen` writes it (from result.json of each case folder): one column per
    level and measure, with the result's values; an unassessed level's cells are empty."""
    import csv

    from OsteoScreenLib.batch import csv_row, write_csv
    from OsteoScreenLib.result import FractureResult

    fractures = assess_fractures(label_map(ISO, wedge(wedge_drop_for(0.32))))
    done = tmp_path / "case1"
    done.mkdir()
    (done / "result.json").write_text(json.dumps(a_result(fractures).to_json()))
    cut = tmp_path / "case2"
    cut.mkdir()
    edge = {"L1": fractures["L1"], "L2": FractureResult(note="the body reaches the edge of the scan")}
    (cut / "result.json").write_text(json.dumps(a_result(edge).to_json()))
    write_csv(tmp_path / "results.csv", [csv_row("case1", done, tmp_path / "a"), csv_row("case2", cut, tmp_path / "b")])
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_FIELDS)
    for n, f in fractures.items():
        assert int(rows[0][f"{n}_fracture_grade"]) == f.grade and rows[0][f"{n}_fracture_type"] == (f.type or "")
        for p in ("anterior", "middle", "posterior"):
            assert float(rows[0][f"{n}_{p}_mm"]) == getattr(f, f"{p}_mm")
        assert float(rows[0][f"{n}_height_loss"]) == f.height_loss
    assert rows[0]["L1_fracture_grade"] == "2" and rows[0]["L1_fracture_type"] == "wedge"
    assert float(rows[0]["L1_anterior_mm"]) < float(rows[0]["L1_posterior_mm"])  # a wedge
    assert rows[1]["L1_fracture_grade"] == "2" and rows[1]["L2_fracture_grade"] == ""
    assert all(rows[1][f"L2_{p}_mm"] == "" for p in ("anterior", "middle", "posterior"))
