"""Feature images and the trabecular ROI on known geometry."""

import numpy as np
import pytest
from conftest import oblique_matrix

from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.features import DEFAULT_PREPROCESSING, body_features
from OsteoScreenLib.volume import Volume

IMAGE_FOV_MM, IMAGE_SIZE_PX = DEFAULT_PREPROCESSING.field_of_view_mm, DEFAULT_PREPROCESSING.image_size_px

TRABECULAR_HU, CORTEX_HU, TISSUE_HU = 150.0, 700.0, 40.0
RADIUS_MM, HALF_HEIGHT_MM, SHELL_MM = 20.0, 13.0, 1.5


def a_tilted_body(tilt_deg=15.0, grid=None, trabecular_hu=TRABECULAR_HU):
    """A cylindrical 'vertebral body' (cortical shell, trabecular core) tilted about the R axis."""
    grid = oblique_matrix(spacing=(0.8, 0.8, 1.0), angles_deg=(5, 0, 10)) if grid is None else grid
    shape = (90, 90, 90)
    v = Volume(np.zeros(shape, np.int16), grid)
    world = v.voxel_centers_ras(np.argwhere(np.ones(shape, bool))).reshape(*shape, 3)
    center = v.voxel_centers_ras([45, 45, 45])[0]
    t = np.radians(tilt_deg)
    axis = np.array([0.0, np.sin(t), np.cos(t)])
    d = world - center
    along = d @ axis
    radial = np.linalg.norm(d - along[..., None] * axis, axis=-1)
    body = (radial <= RADIUS_MM) & (np.abs(along) <= HALF_HEIGHT_MM)
    core = (radial <= RADIUS_MM - SHELL_MM) & (np.abs(along) <= HALF_HEIGHT_MM - SHELL_MM)
    ct = np.full(shape, TISSUE_HU, np.float32)
    ct[:5] = -1000  # some air
    ct[body] = CORTEX_HU
    ct[core] = trabecular_hu
    labels = np.zeros(shape, np.uint8)
    labels[body] = 1
    return v.with_array(ct.astype(np.int16)), v.with_array(labels), axis, center


def test_the_central_image_is_perpendicular_to_the_body_axis():
    ct, labels, axis, center = a_tilted_body()
    f = body_features(ct, labels, "L1")
    assert abs(float(f.axis_ras @ axis)) > 0.995
    np.testing.assert_allclose(f.centroid_ras, center, atol=0.6)
    px_area = (IMAGE_FOV_MM / IMAGE_SIZE_PX) ** 2
    assert f.mask.sum() * px_area == pytest.approx(np.pi * RADIUS_MM**2, rel=0.05)  # a circle, not an ellipse


def test_the_trabecular_roi_stays_inside_the_core_and_reads_its_hu():
    ct, labels, _, _ = a_tilted_body()
    f = body_features(ct, labels, "L1")
    assert f.roi_hu == pytest.approx(TRABECULAR_HU, abs=1.0)
    # ROI is centred and away from the cortex
    step = IMAGE_FOV_MM / IMAGE_SIZE_PX
    jj, ii = np.nonzero(f.roi)
    r = np.hypot((jj - (IMAGE_SIZE_PX - 1) / 2) * step, (ii - (IMAGE_SIZE_PX - 1) / 2) * step)
    assert r.max() < RADIUS_MM - SHELL_MM - 2.0
    assert f.roi_area_mm2 > 300


def test_a_fatty_osteoporotic_body_is_still_bone():
    ct, labels, _, _ = a_tilted_body(trabecular_hu=-20.0)
    assert body_features(ct, labels, "L1").roi_hu == pytest.approx(-20.0, abs=1.0)


def test_features_do_not_depend_on_the_grid_orientation():
    a = body_features(*a_tilted_body()[:2], "L1")
    lps = np.diag([-0.8, -0.8, 1.0, 1.0])
    lps[:3, 3] = [40.0, 30.0, -50.0]
    b = body_features(*a_tilted_body(grid=lps)[:2], "L1")
    assert a.roi_hu == pytest.approx(b.roi_hu, abs=2.0)
    assert a.volume_ml == pytest.approx(b.volume_ml, rel=0.03)


def test_a_missing_tiny_or_soft_tissue_segment_is_an_error():
    ct, labels, _, _ = a_tilted_body()
    with pytest.raises(OsteoScreenError, match="L2 segment is empty"):
        body_features(ct, labels, "L2")
    few = np.zeros_like(labels.array)
    few[45, 45, 45:48] = 1
    with pytest.raises(OsteoScreenError, match="too small"):
        body_features(ct, labels.with_array(few), "L1")
    soft = np.zeros_like(labels.array)
    soft[60:85, 5:40, 5:40] = 1  # a block of soft tissue and air, 25 ml
    with pytest.raises(OsteoScreenError, match="soft tissue"):
        body_features(ct.with_array(np.where(soft > 0, -80, ct.array).astype(np.int16)), labels.with_array(soft), "L1")
