"""The rib check: L1 is the first vertebra below the last rib-bearing one, asked of each vertebra."""

import numpy as np
import pytest

from OsteoScreenLib.ct_io import read_ct
from OsteoScreenLib.registry import VERSE_LEVEL_IDS
from OsteoScreenLib.resample import bounds_ras, subvolume
from OsteoScreenLib.rib_check import (MIN_BACK_MM, MIN_FRONT_MM, MIN_SIDE_MM, check_levels, covers, decide, lean, shift_levels,
                                      spine_step)
from OsteoScreenLib.segmenter import L1L2Segmenter, find_levels, rib_check_warnings
from OsteoScreenLib.volume import Volume

SPACING_MM = 5.0


def coarse_with(bodies: dict[int, int], shape=(40, 12, 12)) -> Volume:
    """Probabilities (k, j, i, 3) on a 5 mm grid, each label a 5x5x5 cube at its centre slice."""
    p = np.zeros((*shape, 3), np.float32)
    for label, k in bodies.items():
        p[k - 2 : k + 3, 4:9, 4:9, label] = 0.95
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    return Volume.from_geometry(p, (SPACING_MM,) * 3, (0.0, 0.0, 0.0))


RIBS = 0.99  # rib-bearing probability of a thoracic vertebra
NONE = 0.01


@pytest.mark.parametrize("p, expected", [
    ({-2: RIBS, -1: RIBS, 0: NONE, 1: NONE}, 0),   # the coarse L1 is right
    ({-2: RIBS, -1: RIBS, 0: RIBS, 1: NONE}, 1),   # the coarse L1 bears ribs: it is T12
    ({-2: RIBS, -1: NONE, 0: NONE, 1: NONE}, -1),  # the vertebra above bears none: the coarse L1 is L2
    ({-2: RIBS, -1: RIBS, 0: 0.6, 1: NONE}, 0),    # unclear: the coarse stage's answer stands
    ({-2: RIBS, -1: 0.5, 0: NONE, 1: NONE}, 0),
    # offsets beyond the scan's first or last slice are not asked, and no move relies on them
    ({-1: NONE, 0: NONE, 1: NONE}, 0),             # would move up, but the vertebra two above is not seen
    ({-2: RIBS, -1: RIBS, 0: RIBS}, 0),            # would move down, but the vertebra below is not seen
    ({0: NONE, 1: NONE}, 0),
    ({-1: RIBS, 0: RIBS, 1: NONE}, 1),             # the scan starts just above: a move down needs no more
    ({0: RIBS, 1: NONE}, 1),                       # the scan starts at the coarse L1, which bears ribs
    ({0: 0.6, 1: NONE}, 0),
    # two vertebrae off, as on a spine-cropped scan with little to count from
    ({-1: RIBS, 0: RIBS, 1: RIBS, 2: NONE}, 2),    # the coarse L1 is T11
    ({-3: RIBS, -2: NONE, -1: NONE, 0: NONE, 1: NONE}, -2),  # the coarse L1 is L3
    ({-1: RIBS, 0: 0.6, 1: 0.5, 2: NONE}, 0),      # unclear
])
def test_the_level_moves_only_when_the_ribs_say_so_clearly(p, expected):
    assert decide(p) == expected


@pytest.mark.parametrize("p, expected_move, expected_ratio", [
    ({-2: RIBS, -1: 0.2, 0: NONE, 1: NONE}, -1, 4.0),   # L1 one higher favoured 4 to 1: too weak to move
    ({-2: RIBS, -1: RIBS, 0: 0.6, 1: NONE}, 1, 1.5),    # L1 one lower favoured 1.5 to 1
    ({-2: RIBS, -1: RIBS, 0: NONE, 1: NONE}, 0, 0.0),   # the ribs agree with the coarse L1
    ({-2: RIBS, -1: 0.5, 0: NONE, 1: NONE}, 0, 0.0),    # a tie (1 to 1) is no lean
    ({-2: RIBS, -1: NONE, 0: NONE, 1: NONE}, 0, 0.0),   # clear enough to move: a move, not a lean
    ({-1: 0.9, 0: NONE}, 0, 0.0),                       # no move can be weighed without the vertebra two above
    # no ribs read anywhere (the real abdominal scan): 3.7 to 1 for a move whose likelihood is 0.0004
    ({-1: 0.0001, 0: 0.00037, 1: 0.0001}, 0, 0.0),
])
def test_a_move_the_ribs_favour_too_weakly_to_make_is_reported_as_a_lean(p, expected_move, expected_ratio):
    move, ratio = lean(p)
    assert move == expected_move and ratio == pytest.approx(expected_ratio, rel=1e-3)
    assert decide(p) == 0 or move == 0  # a lean never comes with a move


def test_the_reader_is_warned_of_a_move_and_of_a_lean():
    moved = rib_check_warnings({"checked": True, "shift": -2, "rib_probability": {}})
    assert len(moved) == 1 and moved[0].startswith("L1 and L2 moved 2 vertebrae up by the rib check")
    leaning = rib_check_warnings({"checked": True, "shift": 0, "leaning": -1, "lean_ratio": 4.5})
    assert leaning == ["The rib check leans towards L1 one vertebra higher (4.5 to 1, too weak to move the levels): "
                       "check that L1 is the first vertebra below the last rib-bearing one"]
    assert rib_check_warnings({"checked": True, "shift": 0, "rib_probability": {"0": 0.01}}) == []
    assert rib_check_warnings({}) == []  # no rib check (a field of view without ribs)


def test_the_step_along_the_spine_comes_from_l1_and_l2_when_plausible():
    assert np.allclose(spine_step(np.array([0, 0, 100.0]), np.array([0, -5, 70.0])), [0, -5, -30])
    # 70 mm: two vertebrae apart (the coarse stage skipped one), half of it is one step
    assert np.allclose(spine_step(np.array([0, 0, 100.0]), np.array([0, 6, 30.0])), [0, 3, -35])
    assert np.allclose(spine_step(np.array([0, 0, 100.0]), np.array([0, 0, 10.0])), [0, 0, -32])  # 90 mm: neither
    assert np.allclose(spine_step(np.array([0, 0, 100.0]), np.array([0, 0, 130.0])), [0, 0, -32])  # L2 above L1
    assert np.allclose(spine_step(None, np.array([0, 0, 30.0])), [0, 0, -32])


def test_the_field_of_view_must_show_the_rib_heads_and_necks():
    """R from -60 to +60 mm, A from -80 to +20 mm (voxel centres; 1 mm grid)."""
    ct = Volume.from_geometry(np.zeros((3, 101, 121), np.int16), (1.0, 1.0, 1.0), (-60.0, -80.0, 0.0))
    assert covers(ct, [0.0, 0.0, 1.0])
    assert covers(ct, [60.0 - MIN_SIDE_MM, 20.0 - MIN_FRONT_MM, 1.0])  # just enough to the right and in front
    assert not covers(ct, [61.0 - MIN_SIDE_MM, 0.0, 1.0])  # a rib head cut off on the right
    assert not covers(ct, [0.0, 21.0 - MIN_FRONT_MM, 1.0])
    assert not covers(ct, [0.0, -81.0 + MIN_BACK_MM, 1.0])  # the rib necks behind cut off


def test_shifting_moves_both_levels_one_vertebra_down():
    coarse = coarse_with({1: 30, 2: 24})
    moved = shift_levels(coarse, 1, np.array([0.0, 0.0, -6 * SPACING_MM]), l1_found=True)
    levels = find_levels(moved)
    assert levels["L1"]["centroid_ras"][2] == 24 * SPACING_MM
    assert levels["L2"]["centroid_ras"][2] == 18 * SPACING_MM
    assert np.allclose(moved.array.sum(-1), 1, atol=1e-5)


def test_an_l2_that_was_not_below_l1_follows_the_moved_l1():
    """The coarse L1 two vertebrae high and its L2 on the real L1: after the move both lie where
    the ribs put L1, and L2 is taken one vertebra below it, not moved along from the real L1."""
    coarse = coarse_with({1: 32, 2: 20})
    step = np.array([0.0, 0.0, -6 * SPACING_MM])
    moved = find_levels(shift_levels(coarse, 2, step, l1_found=True, l2_follows_l1=True))
    assert moved["L1"]["centroid_ras"][2] == 20 * SPACING_MM
    assert moved["L2"]["centroid_ras"][2] == 14 * SPACING_MM


def test_without_l1_the_l2_region_becomes_l1_when_the_ribs_say_so():
    coarse = coarse_with({2: 24})
    moved = shift_levels(coarse, 1, np.array([0.0, 0.0, -6 * SPACING_MM]), l1_found=False)
    levels = find_levels(moved)
    assert levels["L1"]["centroid_ras"][2] == 24 * SPACING_MM
    assert levels["L2"]["centroid_ras"][2] == 18 * SPACING_MM


@pytest.fixture(scope="module")
def segmenter(bundled_models):
    return L1L2Segmenter(threads=1)


def _right_level(case, center_ras, verse_id) -> bool:
    ijk = np.round(case.levels.ras_to_ijk @ np.r_[center_ras, 1.0])[:3].astype(int)
    return int(case.levels.array[ijk[2], ijk[1], ijk[0]]) == verse_id


def _check_keeps_right_levels_and_corrects_wrong_ones(segmenter, case, wrong_by=(-1, 1)):
    coarse, coarse_x = segmenter.coarse_stage(case.ct)
    levels = find_levels(coarse)
    ras = {n: lv["centroid_ras"] for n, lv in levels.items()}
    assert all(_right_level(case, ras[n], VERSE_LEVEL_IDS[n]) for n in ("L1", "L2"))
    right = check_levels(case.ct, coarse_x, ras["L1"], ras["L2"], segmenter.rib_net.run, segmenter.rib_cfg)
    assert right.checked and right.shift == 0
    assert right.rib_probability[-1] > 0.5 > right.rib_probability[0]  # T12 bears ribs, L1 none
    step = right.step_ras
    for n in wrong_by:  # L1 put on T12 (-1), on L2 (+1), ...
        wrong = find_levels(shift_levels(coarse, n, step, l1_found=True))
        w = {name: lv["centroid_ras"] for name, lv in wrong.items()}
        assert not _right_level(case, w["L1"], VERSE_LEVEL_IDS["L1"])
        decision = check_levels(case.ct, coarse_x, w["L1"], w["L2"], segmenter.rib_net.run, segmenter.rib_cfg)
        assert decision.checked and decision.shift == -n, (n, decision)


def test_on_a_phantom_the_rib_check_keeps_right_levels_and_corrects_wrong_ones(segmenter, a_chest_phantom):
    """The real networks: levels moved one vertebra up or down (as a miscounting coarse stage would
    leave them) are moved back, and the right levels stay."""
    case, _ = a_chest_phantom
    _check_keeps_right_levels_and_corrects_wrong_ones(segmenter, case)


def _spine_crop(width_mm: float):
    """A spine-cropped phantom like verse012: a sagittal slab of 3 mm voxels, ``width_mm`` wide."""
    from OsteoScreenLib.phantom import render_case, sample_parameters

    params = sample_parameters(300003, "spine")
    params["fov"].update(crop_width_mm=width_mm, orientation="sagittal_slab", slab_mm=3.0)
    return render_case(params)


def test_on_a_spine_crop_that_shows_the_rib_heads_the_rib_check_corrects_levels(segmenter):
    """A 105 mm slab hides the ribs beyond their necks; the check (trained on boxes cut that
    narrow) still tells T12 from L1, and moves levels put one or two vertebrae off back."""
    _check_keeps_right_levels_and_corrects_wrong_ones(segmenter, _spine_crop(105.0), wrong_by=(-2, -1, 1))


def test_a_field_of_view_narrower_than_the_rib_heads_is_not_checked(segmenter):
    """A 50 mm crop cuts the rib heads off: the rib check stays out and the coarse levels stand."""
    case = _spine_crop(50.0)
    coarse, coarse_x = segmenter.coarse_stage(case.ct)
    _, levels, report = segmenter.checked_levels(case.ct, coarse, coarse_x)
    assert report == {"checked": False, "shift": 0, "rib_probability": {}}


def test_vertebrae_beyond_the_first_slice_are_not_asked(segmenter, a_chest_phantom):
    """A scan that starts 45 mm above L1 does not show the vertebra two above it: the check asks
    only of the vertebrae inside the scan (a box of padding would answer anything)."""
    case, _ = a_chest_phantom
    coarse, coarse_x = segmenter.coarse_stage(case.ct)
    ras = {n: lv["centroid_ras"] for n, lv in find_levels(coarse).items()}
    s_axis = int(np.argmax(np.abs(case.ct.ijk_to_ras[2, :3])))  # the i, j or k axis along S
    n = case.ct.array.shape[2 - s_axis]
    s_of = case.ct.ijk_to_ras[2, s_axis] * np.arange(n) + case.ct.ijk_to_ras[2, 3]
    keep = np.nonzero(s_of <= ras["L1"][2] + 45.0)[0]
    lo, hi = np.zeros(3, int), np.array(case.ct.array.shape[::-1])
    lo[s_axis], hi[s_axis] = keep.min(), keep.max() + 1
    short = subvolume(case.ct, lo, hi)
    assert bounds_ras(short)[1][2] < ras["L1"][2] + 46.0
    decision = check_levels(short, coarse_x, ras["L1"], ras["L2"], segmenter.rib_net.run, segmenter.rib_cfg)
    assert decision.checked and set(decision.rib_probability) == {-1, 0, 1, 2}  # not -2 or -3, above the first slice
    assert decision.shift == 0


@pytest.mark.training
def test_level_diagnosis_names_the_abdominal_scans_levels_under_every_change_and_reads_its_t12_ribs(segmenter, real_data):
    """training/results/level_diagnosis.md: on the abdominal scan the levels stay L1 and L2 whatever
    slice is taken off or when the input is mirrored, and the check reads ribs at T12's centre
    only (none on L1 or L2)."""
    from training.segmentation.evaluate import REAL_CASE_LEVEL_NAMES
    from training.studies.level_diagnosis import diagnose, slices_off

    case = "totalsegmentator-example"
    result = diagnose(segmenter, real_data / case, REAL_CASE_LEVEL_NAMES[case])
    assert len(result["levels"]) == 8 == len(slices_off(read_ct(real_data / case / "ct.nii.gz"))) + 2
    for name, e in result["levels"].items():
        assert e["before"] == e["after"] == {"L1": "L1", "L2": "L2"} and e["shift"] == 0, name
    l1_regions = [r for r in result["coarse_regions"] if r["label"] == "L1"]
    assert max(l1_regions, key=lambda r: r["mass"])["under"]["L1"] > 100
    by = {}
    for p in result["rib_profile"]:
        by.setdefault(p["nearest"], []).append(p["rib_probability"])
    assert max(by["T12"]) > 0.9 and max(by["L1"] + by["L2"]) < 0.1, by
