"""The coarse stage's training augmentation keeps image and labels consistent (training side)."""

import numpy as np
import pytest

pytest.importorskip("scipy")

from OsteoScreenLib.rib_check import MIN_BACK_MM, MIN_FRONT_MM, MIN_SIDE_MM
from training.segmentation.augment import (AIR, augment_coarse, augment_fine, random_field_of_view, random_image_quality,
                                          random_pose, random_side_crop, shift_hints, stretch_hints)
from training.segmentation.config import COARSE_AUGMENT, FINE_AUGMENT, FINE_RANDOMISATION, RIB_CHECK_AUGMENT


def a_sample():
    """Body of soft tissue (-0.2) in air on a 5 mm grid (k = S, j = A, i = R), two 'bodies' of bone."""
    x = np.full((1, 40, 30, 30), AIR, np.float32)
    x[0, 2:38, 4:26, 4:26] = -0.2
    y = np.zeros((40, 30, 30), np.uint8)
    y[20:26, 12:18, 12:18] = 1  # L1 above
    y[12:18, 12:18, 12:18] = 2  # L2
    x[0][y > 0] = 0.1
    return x, y


def config(**changes):
    return {**COARSE_AUGMENT, "p_pose": 0.0, "p_short_scan": 0.0, "p_spine_crop": 0.0, **changes}


def test_a_pose_without_rotation_or_scaling_changes_nothing():
    x, y = a_sample()
    xs, ys = random_pose(x, y, np.random.default_rng(0), config(p_pose=1.0, rotate_deg=(0, 0, 0), scale=(1, 1)))
    assert np.array_equal(ys, y) and np.allclose(xs, x, atol=1e-5)


def test_a_turned_sample_keeps_its_labels_on_its_bone_and_l1_above_l2():
    x, y = a_sample()
    rng = np.random.default_rng(1)
    for _ in range(5):
        xs, ys = random_pose(x, y, rng, config(p_pose=1.0, rotate_deg=(25, 10, 10), scale=(0.9, 1.1)))
        assert xs.shape == x.shape and ys.shape == y.shape
        for v in (1, 2):
            assert 0.6 < (ys == v).sum() / (y == v).sum() < 1.6
        assert np.mean(xs[0][ys > 0] > -0.05) > 0.9  # labels move with the bone under them (edges blend)
        assert np.argwhere(ys == 1)[:, 0].mean() > np.argwhere(ys == 2)[:, 0].mean()


def test_a_short_scan_is_air_above_its_top_and_keeps_l1_whole():
    x, y = a_sample()
    rng = np.random.default_rng(2)
    for _ in range(10):
        xs, ys = random_field_of_view(x, y, rng, config(p_short_scan=1.0, p_cut_l2=1.0))
        top = np.nonzero(np.any(xs[0] > AIR, axis=(1, 2)))[0].max()
        assert top < 38 and top >= 25  # cut above the image's top, never into L1
        assert (ys == 1).sum() == (y == 1).sum()
        assert 0 < (ys == 2).sum() <= (y == 2).sum()  # L2 may lose its lower part, never all of it
        assert np.all(xs[0][ys > 0] > AIR)  # no label on air


def test_a_spine_crop_is_air_outside_a_box_that_holds_both_bodies():
    x, y = a_sample()
    rng = np.random.default_rng(3)
    for _ in range(10):
        xs, ys = random_field_of_view(x, y, rng, config(p_spine_crop=1.0, crop_width_mm=(20.0, 40.0)))
        assert np.array_equal(ys, y)
        assert np.all(xs[0][y > 0] == x[0][y > 0])
        assert (xs[0] > AIR).sum() < (x[0] > AIR).sum()  # something was cut away


def test_image_quality_changes_keep_air_as_air_and_the_window():
    x, y = a_sample()
    rng = np.random.default_rng(4)
    for _ in range(5):
        xs = random_image_quality(x, rng, COARSE_AUGMENT)
        assert xs.shape == x.shape and xs.dtype == np.float32
        assert np.all(xs[0][x[0] == AIR] == AIR) and xs.min() >= -1 and xs.max() <= 1
        assert not np.array_equal(xs, x)


def test_the_whole_augmentation_is_reproducible_from_the_seed():
    x, y = a_sample()
    a = augment_coarse(x, y, np.random.default_rng(5), COARSE_AUGMENT)
    b = augment_coarse(x, y, np.random.default_rng(5), COARSE_AUGMENT)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_fine_hints_move_together_and_the_ct_stays():
    x = np.full((3, 60, 20, 20), -1.0, np.float32)
    x[0] = np.random.default_rng(6).normal(0, 0.1, x.shape[1:])
    x[1, 30:36, 8:12, 8:12] = 1.0
    x[2, 20:26, 8:12, 8:12] = 1.0
    rng = np.random.default_rng(7)
    moved = 0
    for _ in range(20):
        xs = shift_hints(x, rng, {**FINE_AUGMENT, "p_hint_shift": 1.0})
        assert np.array_equal(xs[0], x[0])
        d1 = np.argwhere(xs[1] > 0).mean(0) - np.argwhere(x[1] > 0).mean(0)
        d2 = np.argwhere(xs[2] > 0).mean(0) - np.argwhere(x[2] > 0).mean(0)
        assert np.allclose(d1, d2) and abs(d1[0]) <= 15 and np.all(np.abs(d1[1:]) <= 6)
        moved += bool(np.any(d1 != 0))
    assert moved > 10


def test_fine_randomisation_changes_the_ct_inside_the_body_and_leaves_the_hints():
    """--randomise for the fine stage: the CT channel's grey values remapped and a bias field inside the
    body, air stays air, the hint channels as ``shift_hints`` and ``stretch_hints`` leave them; the same
    seed, the same box."""
    x = np.full((3, 40, 24, 24), -1.0, np.float32)
    x[0] = AIR
    x[0, :, 4:20, 4:20] = np.random.default_rng(8).uniform(-0.3, 0.6, (40, 16, 16))  # a body in air
    x[1, 20:26, 8:12, 8:12] = 1.0
    x[2, 10:16, 8:12, 8:12] = 1.0
    cfg = {**FINE_RANDOMISATION, "p_hint_shift": 0.0, "p_hint_stretch": 0.0, "p_remap": 1.0, "p_bias": 1.0}
    out = augment_fine(x, np.random.default_rng(9), cfg)
    assert np.array_equal(out, augment_fine(x, np.random.default_rng(9), cfg))
    assert np.array_equal(out[1:], x[1:]) and out.dtype == np.float32
    assert np.abs(out[0, :, 4:20, 4:20] - x[0, :, 4:20, 4:20]).mean() > 0.005
    assert np.array_equal(out[0][x[0] == AIR], x[0][x[0] == AIR])
    plain = augment_fine(x, np.random.default_rng(9), {**FINE_AUGMENT, "p_hint_shift": 0.0})
    assert np.array_equal(plain, x)  # without --randomise the CT is left alone


def test_fine_hint_stretch_reaches_into_the_neighbour_along_the_spine_only():
    """--randomise stretches one hint up or down the spine (k) by 1-12 voxels at 1 mm: the other hint,
    the CT and the hint's extent across the spine stay; both directions and both hints occur."""
    x = np.full((3, 60, 20, 20), -1.0, np.float32)
    x[0] = np.random.default_rng(10).normal(0, 0.1, x.shape[1:])
    x[1, 34:40, 8:12, 8:12] = 1.0
    x[2, 20:26, 8:12, 8:12] = 1.0
    rng, seen = np.random.default_rng(11), set()
    for _ in range(40):
        out = stretch_hints(x, rng, {**FINE_RANDOMISATION, "p_hint_stretch": 1.0})
        assert np.array_equal(out[0], x[0])
        changed = [c for c in (1, 2) if not np.array_equal(out[c], x[c])]
        assert len(changed) == 1
        c = changed[0]
        assert np.array_equal(out[3 - c], x[3 - c])
        before, after = np.argwhere(x[c] > 0), np.argwhere(out[c] > 0)
        assert set(map(tuple, before)) <= set(map(tuple, after))  # it only grows
        assert np.array_equal(np.unique(after[:, 1:], axis=0), np.unique(before[:, 1:], axis=0))
        grown_up = after[:, 0].max() - before[:, 0].max()
        grown_down = before[:, 0].min() - after[:, 0].min()
        assert (grown_up == 0) != (grown_down == 0) and 1 <= max(grown_up, grown_down) <= 12
        seen.add((c, grown_up > 0))
    assert seen == {(1, True), (1, False), (2, True), (2, False)}
    assert stretch_hints(x, rng, {**FINE_RANDOMISATION, "p_hint_stretch": 0.0}) is x


def a_rib_box():
    """A rib-check box (1, k, j, i) on 5 mm: 60 x 160 x 200 mm of soft tissue, a body at the centre."""
    x = np.full((1, 12, 32, 40), -0.2, np.float32)
    x[0, 3:9, 13:19, 17:23] = 0.3
    return x


def test_a_rib_box_is_cut_at_the_sides_and_front_no_closer_than_the_run_time_check_accepts():
    x = a_rib_box()
    rng = np.random.default_rng(8)
    r = (np.arange(40) - 19.5) * 5.0  # mm from the centre sideways
    a = (np.arange(32) - 15.5) * 5.0  # towards A
    cut_sides = cut_front = 0
    for _ in range(40):
        xs = random_side_crop(x, rng, RIB_CHECK_AUGMENT, 5.0)
        air = xs[0] == AIR
        assert np.array_equal(xs[0][~air], x[0][~air])  # only ever air put in
        kept_r = r[~np.all(air, axis=(0, 1))]
        kept_a = a[~np.all(air, axis=(0, 2))]
        # the window keeps the body and at least what the run-time check asks for (its offset
        # moves the centre by up to side_offset_mm)
        off = RIB_CHECK_AUGMENT["side_offset_mm"] + 5.0
        assert kept_r.min() <= -(MIN_SIDE_MM - off) and kept_r.max() >= MIN_SIDE_MM - off
        assert kept_a.max() >= MIN_FRONT_MM - 10.0 and kept_a.min() <= -(MIN_BACK_MM - 5.0)
        cut_sides += bool(np.all(air[..., 0]))
        cut_front += bool(np.all(air[:, -1, :]))
    assert 5 < cut_sides < 35 and 5 < cut_front < 30


def randomisation(**changes):
    from training.segmentation.config import COARSE_RANDOMISATION

    return {**COARSE_RANDOMISATION, "p_pose": 0.0, "p_short_scan": 0.0, "p_spine_crop": 0.0, **changes}


def test_tissue_values_are_remapped_monotonically_and_air_stays_air():
    from training.segmentation.augment import random_tissue_contrast

    x, _ = a_sample()
    x[0, 2:38, 4:8, 4:26] = np.linspace(-0.9, 0.9, 36)[:, None, None]  # a ramp of tissue values
    out = random_tissue_contrast(x, np.random.default_rng(3), randomisation(p_remap=1.0))
    assert not np.allclose(out, x)
    assert (out[x == AIR] == AIR).all()
    ramp_in, ramp_out = x[0, 2:38, 5, 10], out[0, 2:38, 5, 10]
    assert (np.diff(ramp_out) >= 0).all() and (np.diff(ramp_in) > 0).all()  # order kept


def test_a_bias_field_is_smooth_and_leaves_the_air_alone():
    from training.segmentation.augment import random_bias_field

    x, _ = a_sample()
    out = random_bias_field(x, np.random.default_rng(1), randomisation(p_bias=1.0, bias_hu=50.0))
    change = out - x
    assert (change[x == AIR] == 0).all()
    inside = change[0][x[0] != AIR]
    assert 0 < np.abs(inside).max() < 0.5  # tens of HU, never a new tissue
    assert np.abs(np.diff(change[0, 2:38, 15, 15])).max() < 0.02  # smooth from slice to slice


@pytest.mark.parametrize("shape", [(64, 64, 64), (40, 30, 30), (61, 7, 96)])
def test_the_bias_field_upsampling_equals_scipys_cubic_zoom(shape):
    from scipy import ndimage

    from training.segmentation.augment import smooth_upsample

    coarse = np.random.default_rng(4).normal(0.0, 1.0, (4, 4, 4)).astype(np.float32)
    expected = ndimage.zoom(coarse, [n / 4 for n in shape], order=3, mode="nearest")
    got = smooth_upsample(coarse, shape)
    assert got.shape == expected.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bright_blobs_never_touch_the_vertebrae_or_their_surroundings_and_leave_the_labels():
    from scipy import ndimage

    from training.segmentation.augment import random_bright_blobs

    x, y = a_sample()
    cfg = randomisation(p_blobs=1.0, blob_count=(8, 8), blob_radius_mm=(5.0, 25.0), blob_hu=(800.0, 1500.0))
    out = random_bright_blobs(x, y, np.random.default_rng(5), cfg)
    near = ndimage.binary_dilation(y > 0, iterations=3)  # 15 mm at 5 mm voxels
    changed = out[0] != x[0]
    assert changed.any() and not (changed & near).any()
    assert (out[0][changed] > 0.1).all()  # bright: 800 HU and more


def test_the_randomised_augmentation_keeps_labels_and_is_reproducible():
    x, y = a_sample()
    cfg = randomisation(p_pose=1.0, p_remap=1.0, p_bias=1.0, p_blobs=1.0)
    a = augment_coarse(x, y, np.random.default_rng(11), cfg)
    b = augment_coarse(x, y, np.random.default_rng(11), cfg)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert set(np.unique(a[1])) <= {0, 1, 2} and (a[1] == 1).any()


def test_a_short_scan_may_end_at_the_l1_l2_disc_with_no_l2_left():
    x, y = a_sample()
    cfg = randomisation(p_short_scan=1.0, above_l1_mm=(20.0, 20.0), p_cut_l2=1.0, cut_l2_max_fraction=1.25)
    kept_l2 = []
    for seed in range(40):
        xs, ys = random_field_of_view(x, y, np.random.default_rng(seed), cfg)
        assert (ys == 1).sum() == (y == 1).sum()  # L1 stays whole
        kept_l2.append(int((ys == 2).sum()))
    assert min(kept_l2) == 0 and max(kept_l2) > 0  # sometimes no L2 at all, sometimes part of it
