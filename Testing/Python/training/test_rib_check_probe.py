"""The rib-check probe takes away what it says it takes away, and nothing else (training side)."""

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("torch")

from OsteoScreenLib.segmenter import L1L2Segmenter
from training.segmentation.augment import AIR, SOFT_TISSUE
from training.studies.rib_check_probe import (CHANGES, LUNG, blurred, probabilities, without_bone_beside,
                                                   without_centre, without_lung)


def a_box():
    """(1, 1, k, j, i) on the 5 mm grid: soft tissue, a 'vertebra' at the centre, 'ribs' 30-60 mm
    out each side, 'lung' beside them, air (outside the scan) at one edge."""
    x = np.full((1, 1, 12, 32, 40), -0.2, np.float32)
    x[..., 4:8, 12:20, 17:23] = 0.4  # vertebra: within 15 mm of the centre
    x[..., 5:7, 10:12, 25:32] = 0.5  # right 'rib', 30-60 mm out
    x[..., 5:7, 10:12, 8:15] = 0.5  # left
    x[..., 2:10, 14:24, 32:37] = -0.9  # 'lung'
    x[..., :2] = AIR
    return x


def test_bone_beside_goes_and_the_centre_stays():
    x = a_box()
    out = without_bone_beside(x, 25.0)
    assert np.all(out[..., 5:7, 10:12, 25:32] == SOFT_TISSUE) and np.all(out[..., 5:7, 10:12, 8:15] == SOFT_TISSUE)
    assert np.array_equal(out[..., 17:23], x[..., 17:23])  # the vertebra
    assert np.array_equal(out[x <= 0.0], x[x <= 0.0])  # soft tissue, lung and air untouched


def test_the_centre_goes_and_the_sides_stay():
    x = a_box()
    out = without_centre(x)
    assert np.all(out[..., 4:8, 12:20, 17:23] == SOFT_TISSUE)
    assert np.array_equal(out[..., 25:], x[..., 25:]) and np.array_equal(out[..., :15], x[..., :15])


def test_lung_goes_and_the_air_around_the_body_stays():
    x = a_box()
    out = without_lung(x)
    assert np.all(out[..., 2:10, 14:24, 32:37] == SOFT_TISSUE)
    assert np.all(out[..., :2] == AIR) and np.array_equal(out[x > LUNG], x[x > LUNG])


def test_blurring_keeps_the_air_outside_the_scan():
    out = blurred(a_box())
    assert np.all(out[..., :2] == AIR) and not np.array_equal(out, a_box())


def test_the_bundled_check_keeps_its_answer_under_every_harmless_change_of_a_phantom_box():
    """On the real model: a box of a rib-bearing phantom vertebra is still read as one mirrored,
    noisier or without lung, and every change keeps the box's shape."""
    from OsteoScreenLib.phantom import generate_case
    from OsteoScreenLib.rib_check import crop
    from OsteoScreenLib.segmenter import coarse_input
    from OsteoScreenLib.volume import Volume

    seg = L1L2Segmenter(threads=1)
    case = generate_case(200000, "chest-coarse")
    x, grid = coarse_input(case.ct, seg.coarse_cfg)
    t10 = case.levels.voxel_centers_ras(np.argwhere(case.levels.array == 17)).mean(axis=0)
    box = crop(Volume(x[0], grid), t10, seg.rib_cfg)[None]
    for name, change in CHANGES.items():
        assert change(box).shape == box.shape, name
    for name in ("as at run time", "mirrored", "no lung"):
        assert probabilities(seg.rib_net.run, CHANGES[name](box))[0] > 0.5, name
