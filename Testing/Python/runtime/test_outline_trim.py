"""Outline post-processing: an outline that leaked across the L1-L2 disc is cut back to its own body."""

import numpy as np

from OsteoScreenLib.segmenter import DISC_MIDPLANE_MARGIN_MM, trim_beyond_disc
from OsteoScreenLib.volume import Volume


def bodies(tilt_deg: float, l1_height_mm: float = 25.0, disc_mm: float = 8.0, shape=(110, 90, 60)):
    """L1 and L2 bodies (boxes 40 mm wide, 32 mm deep) on a 1 mm grid, stacked along a spine turned
    ``tilt_deg`` forwards in the sagittal plane; returns the grid, the two masks and the unit vector
    from L1 down to L2 (RAS)."""
    grid = Volume.from_geometry(np.zeros(shape, np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    kji = np.indices(shape).reshape(3, -1).T
    ras = grid.voxel_centers_ras(kji)
    t = np.radians(tilt_deg)
    down = np.array([0.0, np.sin(t), -np.cos(t)])
    front = np.array([0.0, np.cos(t), np.sin(t)])
    c1 = np.array([30.0, 40.0, 75.0])
    c2 = c1 + down * (l1_height_mm / 2 + disc_mm + 12.5)
    masks = {}
    for name, c, half_height in (("L1", c1, l1_height_mm / 2), ("L2", c2, 12.5)):
        d = ras - c
        inside = (np.abs(d @ down) <= half_height) & (np.abs(d @ front) <= 16) & (np.abs(d[:, 0]) <= 20)
        masks[name] = inside.reshape(shape)
    return grid, masks, down, front


def test_an_l2_outline_that_leaked_into_the_front_of_l1_is_cut_at_the_disc():
    grid, truth, down, front = bodies(tilt_deg=20.0)
    ras = grid.voxel_centers_ras(np.indices(truth["L1"].shape).reshape(3, -1).T).reshape(*truth["L1"].shape, 3)
    c1 = grid.voxel_centers_ras(np.argwhere(truth["L1"])).mean(axis=0)
    # the L2 label also took the lower front of L1, up to 8 mm above L1's lower endplate
    leak = truth["L1"] & ((ras - c1) @ down >= 12.5 - 8) & ((ras - c1) @ front > 4)
    masks = {"L1": truth["L1"] & ~leak, "L2": truth["L2"] | leak}
    out = trim_beyond_disc(masks, grid)
    assert np.array_equal(out["L2"] & ~leak, truth["L2"]) and np.array_equal(out["L1"], masks["L1"])
    kept = out["L2"] & leak  # only within the margin of the mid-plane: next to L1's endplate
    assert kept.sum() < 0.25 * leak.sum() and ((ras[kept] - c1) @ down).min() >= 12.5 - 2


def test_whole_bodies_keep_every_voxel_also_a_crushed_l1_over_a_thin_disc():
    for tilt, l1_height, disc in ((0.0, 25.0, 8.0), (25.0, 25.0, 8.0), (10.0, 8.0, 5.0)):
        grid, truth, _, _ = bodies(tilt, l1_height, disc)
        out = trim_beyond_disc(truth, grid)
        for name in truth:
            assert np.array_equal(out[name], truth[name]), (tilt, l1_height, disc, name)


def test_without_both_levels_nothing_is_trimmed():
    grid, truth, _, _ = bodies(0.0)
    masks = {"L1": truth["L1"], "L2": np.zeros_like(truth["L2"])}
    out = trim_beyond_disc(masks, grid)
    assert np.array_equal(out["L1"], truth["L1"]) and not out["L2"].any()
    assert DISC_MIDPLANE_MARGIN_MM > 0
