"""Level finding on the coarse stage's output: L2 one vertebra below L1, hints from the chosen regions."""

import numpy as np

from OsteoScreenLib.segmenter import LEVEL_STEP_MM, find_levels, level_hints
from OsteoScreenLib.volume import Volume

SPACING_MM = 5.0


def coarse_with(bodies: dict[int, list[tuple[int, float]]], shape=(40, 12, 12)) -> Volume:
    """Probabilities (k, j, i, 3) on a 5 mm grid: each label's bodies as (centre slice, probability)
    cubes of 5x5x5 voxels; k grows towards superior (RAS z)."""
    p = np.zeros((*shape, 3), np.float32)
    for label, cubes in bodies.items():
        for k, prob in cubes:
            p[k - 2 : k + 3, 4:9, 4:9, label] = prob
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    return Volume.from_geometry(p, (SPACING_MM,) * 3, (0.0, 0.0, 0.0))


def test_l2_is_the_region_one_vertebra_below_l1_not_the_largest():
    # L1 at slice 30; L2 label on the true L2 (6 slices = 30 mm below) and, with more voxels, on L3.
    coarse = coarse_with({1: [(30, 0.95)], 2: [(24, 0.9), (12, 0.95)]})
    coarse.array[8:17, 3:10, 3:10, 2] = 0.95  # the L3 region: larger than the true L2's
    coarse.array[8:17, 3:10, 3:10, 0] = 0.05
    levels = find_levels(coarse)
    assert levels["L1"]["centroid_ras"][2] == 30 * SPACING_MM
    assert levels["L2"]["centroid_ras"][2] == 24 * SPACING_MM
    hints = level_hints(coarse, levels).array
    assert hints[12, 6, 6, 2] == 0 and hints[12, 6, 6, 0] == 1  # L3's L2 probability goes to background
    assert hints[24, 6, 6, 2] == np.float32(0.9)
    assert np.allclose(hints.sum(-1), 1)


def test_without_a_pair_one_level_apart_each_label_keeps_its_largest_region():
    far = int(LEVEL_STEP_MM[1] / SPACING_MM) + 3
    coarse = coarse_with({1: [(35, 0.95)], 2: [(35 - far, 0.9)]})
    levels = find_levels(coarse)
    assert levels["L2"]["centroid_ras"][2] == (35 - far) * SPACING_MM


def test_a_missing_level_is_left_out_and_its_hint_is_background():
    coarse = coarse_with({1: [(20, 0.95)]})
    levels = find_levels(coarse)
    assert set(levels) == {"L1"}
    assert not level_hints(coarse, levels).array[..., 2].any()


def _with_faint(coarse: Volume, label: int, k: int) -> Volume:
    """A faint region of ``label``: 8 voxels (2x2x2) centred near slice ``k``, below MIN_COARSE_VOXELS."""
    coarse.array[k - 1 : k + 1, 5:7, 5:7, label] = 0.9
    coarse.array[k - 1 : k + 1, 5:7, 5:7, 0] = 0.1
    return coarse


def test_a_faint_level_one_vertebra_from_the_other_is_taken_and_marked():
    """A sharply tilted spine: the coarse stage marks L1 with 8 voxels only, 30 mm above its L2."""
    levels = find_levels(_with_faint(coarse_with({2: [(20, 0.95)]}), 1, 26))
    assert set(levels) == {"L1", "L2"} and levels["L1"]["faint"] and not levels["L2"]["faint"]
    assert levels["L1"]["centroid_ras"][2] == 25.5 * SPACING_MM
    levels = find_levels(_with_faint(coarse_with({1: [(26, 0.95)]}), 2, 21))  # a faint L2 below L1
    assert levels["L2"]["faint"] and levels["L2"]["centroid_ras"][2] == 20.5 * SPACING_MM
    levels = find_levels(_with_faint(coarse_with({2: [(34, 0.95)]}), 1, 39))  # L1 cut by the last slice
    assert levels["L1"]["faint"] and levels["L1"]["centroid_ras"][2] == 38.5 * SPACING_MM


def test_a_faint_region_is_not_guessed_into_a_level_where_it_does_not_fit():
    assert set(find_levels(_with_faint(coarse_with({2: [(20, 0.95)]}), 1, 12))) == {"L2"}  # below L2
    assert set(find_levels(_with_faint(coarse_with({2: [(20, 0.95)]}), 1, 31))) == {"L2"}  # 55 mm above
    assert set(find_levels(_with_faint(coarse_with({}), 1, 20))) == set()  # nothing to be one vertebra from


def test_l1_stays_the_region_of_most_probability():
    # Shifted labels lower down (L1 on L2, L2 on L3) hold more probability as a pair, but L1
    # stays where the network puts most of its L1 probability, and L2 one vertebra below it.
    coarse = coarse_with({1: [(30, 0.95), (18, 0.9)], 2: [(24, 0.6), (12, 0.95)]})
    levels = find_levels(coarse)
    assert levels["L1"]["centroid_ras"][2] == 30 * SPACING_MM
    assert levels["L2"]["centroid_ras"][2] == 24 * SPACING_MM


def _bodies(l1_slices: slice, l2_slices: slice) -> Volume:
    """A label map on a 1 mm grid (k = S) with L1 and L2 as boxes over the given slices."""
    labels = np.zeros((120, 30, 30), np.uint8)
    labels[l1_slices, 5:25, 5:25] = 1
    labels[l2_slices, 5:25, 5:25] = 2
    return Volume.from_geometry(labels, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def test_l2_one_vertebra_below_l1_is_reported():
    from OsteoScreenLib.segmenter import MAX_L1_L2_GAP_MM, order_and_edge_checks

    outline, order = order_and_edge_checks(_bodies(slice(70, 95), slice(50, 62)))  # an 8 mm disc
    assert outline == [] and order == []
    gap = int(MAX_L1_L2_GAP_MM) + 6
    outline, order = order_and_edge_checks(_bodies(slice(70, 95), slice(40, 70 - gap)))
    assert outline == [] and len(order) == 1 and order[0].startswith("L2 does not lie directly below L1")
