"""Resampling between grids: exact on linear functions, any orientation."""

import numpy as np
import pytest
from conftest import oblique_matrix

from OsteoScreenLib.postprocess import fill_holes, largest_component
from OsteoScreenLib.resample import axis_aligned_grid, block_mean, centred_grid, crop_to_grid, crop_to_mask, mask_box, sample
from OsteoScreenLib.volume import Volume


def linear_field(volume_grid, shape):
    """A volume whose value is a linear function of world position: trilinear sampling is exact."""
    v = Volume(np.zeros(shape, np.float32), volume_grid)
    kji = np.argwhere(np.ones(shape, bool))
    world = v.voxel_centers_ras(kji)
    v.array[...] = (world @ np.array([0.5, -1.5, 2.0]) + 3.0).reshape(shape)
    return v


def test_trilinear_sampling_reproduces_a_linear_field_on_an_oblique_grid():
    source = linear_field(oblique_matrix(spacing=(1.0, 1.1, 1.3)), (40, 40, 40))
    center = source.voxel_centers_ras([20, 20, 20])[0]
    grid, shape = centred_grid(center, (12.0, 10.0, 8.0), 0.7)
    values = sample(source, grid, shape, order=1, antialias=False)
    world = Volume(np.zeros(shape), grid).voxel_centers_ras(np.argwhere(np.ones(shape, bool)))
    expected = (world @ np.array([0.5, -1.5, 2.0]) + 3.0).reshape(shape)
    np.testing.assert_allclose(values, expected, atol=1e-3)


def test_nearest_sampling_keeps_labels_and_fills_outside():
    labels = Volume(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.diag([2.0, 2.0, 2.0, 1.0]))
    out = sample(labels, labels.ijk_to_ras, (2, 3, 5), order=0, fill=99)
    np.testing.assert_array_equal(out[:, :, :4], labels.array)
    assert (out[:, :, 4] == 99).all()


def test_block_mean_keeps_the_world_position_of_the_content():
    source = linear_field(np.diag([0.5, 0.5, 0.5, 1.0]), (8, 8, 8))
    coarse = block_mean(source, (2, 2, 2))
    assert coarse.array.shape == (4, 4, 4)
    np.testing.assert_allclose(coarse.spacing_mm, [1.0, 1.0, 1.0])
    # the mean of a linear field over a block is its value at the block centre
    centre = coarse.voxel_centers_ras([1, 2, 3])[0]
    assert coarse.array[1, 2, 3] == pytest.approx(centre @ np.array([0.5, -1.5, 2.0]) + 3.0, abs=1e-4)


def test_block_mean_of_an_integer_ct_is_the_exact_mean_in_any_block_shape():
    # int16 HU summed in integers: each block's mean is the float32 nearest the true mean,
    # also for factors that leave a remainder (cut off) and blocks of unequal sides
    rng = np.random.default_rng(3)
    hu = rng.integers(-3024, 3072, (11, 13, 17)).astype(np.int16)
    coarse = block_mean(Volume(hu, np.diag([0.7, 0.7, 2.5, 1.0])), (5, 3, 2))
    assert coarse.array.shape == (5, 4, 3) and coarse.array.dtype == np.float32
    exact = hu[:10, :12, :15].astype(np.float64).reshape(5, 2, 4, 3, 3, 5).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(coarse.array, exact.astype(np.float32))


def test_axis_aligned_grid_covers_the_box():
    grid, shape = axis_aligned_grid([0, 0, 0], [10, 20, 31], 5.0)
    assert shape == (7, 4, 2)
    np.testing.assert_allclose(grid[:3, 3], [2.5, 2.5, 2.5])


def test_crop_to_grid_keeps_geometry():
    source = linear_field(oblique_matrix(), (30, 30, 30))
    center = source.voxel_centers_ras([15, 15, 15])[0]
    grid, shape = centred_grid(center, (6.0, 6.0, 6.0), 1.0)
    cropped = crop_to_grid(source, grid, shape)
    assert cropped.array.size < source.array.size
    np.testing.assert_allclose(
        sample(cropped, grid, shape, antialias=False), sample(source, grid, shape, antialias=False), rtol=1e-6, atol=1e-3
    )  # float32 sums in another order: values ~1e3 agree to 1e-6


def test_largest_component_and_hole_filling():
    m = np.zeros((12, 12, 12), bool)
    m[1:7, 1:7, 1:7] = True
    m[3, 3, 3] = False  # an enclosed hole
    m[9:11, 9:11, 9:11] = True  # a small island
    big = largest_component(m)
    assert big.sum() == 6**3 - 1 and not big[10, 10, 10]
    assert fill_holes(big).sum() == 6**3
    open_cavity = big.copy()
    open_cavity[3, 3, 0:4] = False  # tunnel to the border: not a hole
    assert not fill_holes(open_cavity)[3, 3, 3]


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, -1, 1), (1, -1, -1)])
def test_the_fast_path_for_grids_sharing_axes_equals_the_general_path(order, flips):
    from OsteoScreenLib import resample

    rng = np.random.default_rng(3)
    source = Volume(rng.normal(size=(20, 24, 28)).astype(np.float32),
                    np.diag([0.7 * flips[0], 0.8 * flips[1], 1.25 * flips[2], 1.0]) + np.c_[np.zeros((4, 3)), [5.0, -3.0, 2.0, 0.0]])
    grid, shape = centred_grid(source.voxel_centers_ras([10, 12, 14])[0], (18.0, 16.0, 30.0), 0.9)
    fast = sample(source, grid, shape, order=order, fill=-5.0, antialias=False)
    coords = resample.source_coords(source, grid, shape)
    general = resample.interpolate_at(source.array, coords, order, -5.0).reshape(shape)
    np.testing.assert_allclose(fast, general, atol=1e-5)


def test_the_fast_path_handles_permuted_axes_and_channels():
    from OsteoScreenLib import resample

    rng = np.random.default_rng(4)
    pir = np.array([[0, 0, 1.5, -20.0], [-1.5, 0, 0, 10.0], [0, -1.5, 0, 15.0], [0, 0, 0, 1.0]])
    source = Volume(rng.normal(size=(16, 18, 20, 2)).astype(np.float32), pir)
    grid, shape = centred_grid(source.voxel_centers_ras([8, 9, 10])[0], (12.0, 10.0, 14.0), 1.1)
    fast = sample(source, grid, shape, order=1, antialias=False)
    coords = resample.source_coords(source, grid, shape)
    for c in range(2):
        general = resample.interpolate_at(source.array[..., c], coords, 1, 0.0).reshape(shape)
        np.testing.assert_allclose(fast[..., c], general, atol=1e-5)


def test_mask_box_is_the_bounding_box_of_the_voxels_and_crop_keeps_their_world_position():
    rng = np.random.default_rng(3)
    vol = Volume(rng.normal(size=(20, 30, 40)), oblique_matrix(spacing=(0.7, 0.8, 2.5)))
    mask = np.zeros(vol.array.shape, bool)
    mask[4, 7, 30] = mask[11, 20, 5] = mask[6, 12, 12] = True
    kji = np.argwhere(mask)
    lo, hi = mask_box(mask)
    np.testing.assert_array_equal(lo, kji.min(axis=0))
    np.testing.assert_array_equal(hi, kji.max(axis=0) + 1)
    lo2, hi2 = mask_box(mask, margin=5)
    np.testing.assert_array_equal(lo2, [0, 2, 0])  # clipped at the array's edges
    np.testing.assert_array_equal(hi2, [17, 26, 36])
    assert mask_box(np.zeros((3, 3, 3), bool)) is None
    box = crop_to_mask(vol, mask, margin=0)
    inside = np.argwhere(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    np.testing.assert_allclose(box.voxel_centers_ras(inside), vol.voxel_centers_ras(kji), atol=1e-9)
    np.testing.assert_array_equal(box.array[tuple(inside.T)], vol.array[tuple(kji.T)])
