"""Generator 2.0: shoulder girdle, arms, great veins, table and reconstruction circle.

Real chest CTs show these around the thorax, and readers meet the padding that scanners write
outside the reconstruction circle. Cases are rendered on the coarse chest grid (about 1 s each).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from OsteoScreenLib.ct_io import read_ct
from OsteoScreenLib.phantom import generate_case, render_case, sample_parameters, write_case
from OsteoScreenLib.phantom.chest_wall import PADDING_VALUES_HU
from OsteoScreenLib.registry import HU_AIR

PRESET = "chest-coarse"
CIRCLE_SEED = 10  # draws a reconstruction circle inside the display field of view, padded with -3024 HU


@pytest.fixture(scope="module")
def circle_parameters():
    params = sample_parameters(CIRCLE_SEED, PRESET)
    assert params["chest_wall"]["circle"] == {**params["chest_wall"]["circle"], "present": True, "padding_hu": -3024}
    return params


@pytest.fixture(scope="module")
def a_padded_chest(circle_parameters):
    return render_case(circle_parameters)


def _world_xy(volume):
    """RAS x and y of the voxel columns and rows of an axis-aligned LPS grid."""
    m = volume.ijk_to_ras
    nk, nj, ni = volume.array.shape
    return m[0, 3] + m[0, 0] * np.arange(ni), m[1, 3] + m[1, 1] * np.arange(nj)


def test_the_padding_value_fills_what_lies_outside_the_reconstruction_circle(a_padded_chest):
    ct = a_padded_chest.ct.array
    padded = ct == -3024
    assert a_padded_chest.meta["padding_hu"] == -3024
    assert padded.any() and (ct[~padded] >= -1024).all()
    # the same pixels on every slice, in the corners and never at the centre
    assert (padded == padded[:1]).all()
    nk, nj, ni = ct.shape
    assert padded[0, 0, 0] and padded[0, -1, -1] and not padded[0, nj // 2, ni // 2]


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_a_padded_scan_is_read_with_air_outside_the_circle_and_unchanged_inside(a_padded_chest, tmp_path, fmt):
    folder = write_case(a_padded_chest, tmp_path / "case", fmt=fmt)
    header = {}
    ct = read_ct(folder / ("ct" if fmt == "dicom" else "ct.nii.gz"), header)
    original = a_padded_chest.ct.array
    padded = original == -3024
    assert (ct.array[padded] == HU_AIR).all()
    assert np.array_equal(ct.array[~padded], original[~padded])
    assert header["padding_voxels"] == int(padded.sum())
    assert header["padding_hu"] == ((-3024.0, -3024.0) if fmt == "dicom" else None)


def test_every_vendor_padding_value_is_drawn():
    drawn = {sample_parameters(seed, PRESET)["chest_wall"]["circle"]["padding_hu"] for seed in range(60)}
    assert drawn == set(PADDING_VALUES_HU)


def test_the_chest_wall_leaves_the_vertebra_labels_as_they_were(circle_parameters, a_padded_chest):
    without = copy.deepcopy(circle_parameters)
    del without["chest_wall"]
    plain = render_case(without)
    assert np.array_equal(plain.labels.array, a_padded_chest.labels.array)
    assert np.array_equal(plain.levels.array, a_padded_chest.levels.array)
    assert not np.array_equal(plain.ct.array, a_padded_chest.ct.array)


def test_the_table_lies_under_the_back_of_the_patient(circle_parameters, a_padded_chest):
    no_table = copy.deepcopy(circle_parameters)
    no_table["chest_wall"]["table"]["present"] = False
    plain = render_case(no_table).ct.array
    with_table = a_padded_chest.ct.array
    _, y = _world_xy(a_padded_chest.ct)
    changed = np.abs(with_table.astype(int) - plain) > 60  # more than noise
    assert changed.any()
    body_rows = np.nonzero((plain > -500).any(axis=(0, 2)))[0]
    lowest_back_y = y[body_rows].min()  # y grows anterior: the back is the lowest y
    changed_rows = np.nonzero(changed.any(axis=(0, 2)))[0]
    assert y[changed_rows].max() <= lowest_back_y + 10.0  # the pad touches the back, the rest lies below


@pytest.mark.parametrize("seed", [100013])  # arms drawn down by this seed
def test_arms_down_put_bone_beside_the_torso_at_the_level_of_l1(seed):
    down = sample_parameters(seed, PRESET)
    assert down["torso"]["arms"] == "down"
    up = copy.deepcopy(down)
    up["torso"]["arms"] = "up"
    case_down, case_up = render_case(down), render_case(up)
    l1_slices = np.nonzero((case_down.labels.array == 1).any(axis=(1, 2)))[0]
    x, _ = _world_xy(case_down.ct)
    l1_x = next(v["center_ras_mm"][0] for v in case_down.meta["vertebrae"] if v["name"] == "L1")
    lateral = np.abs(x - l1_x) > 150.0  # beyond the ribs of any torso at L1
    new_bone = (case_down.ct.array[l1_slices] > 500) & (case_up.ct.array[l1_slices] <= 500)
    assert new_bone[:, :, lateral].sum() > 20 and new_bone[:, :, ~lateral].sum() == 0


def test_the_superior_vena_cava_carries_the_arterial_contrast_drawn_for_the_subject():
    params = sample_parameters(CIRCLE_SEED, PRESET)
    params["scanner"].update({"contrast_phase": "arterial", "noise_sd_hu_at_2.5mm": 0.0, "streaks": []})
    images = {}
    for hu in (150.0, 900.0):
        p = copy.deepcopy(params)
        p["chest_wall"]["svc_arterial_hu"] = hu
        images[hu] = render_case(p)
    diff = images[900.0].ct.array.astype(int) - images[150.0].ct.array
    assert diff.min() >= 0 and diff.max() > 300  # brighter where the vein is, nowhere darker
    k, j, i = np.nonzero(diff > 300)
    ras = images[900.0].ct.ijk_to_ras @ np.array([i.mean(), j.mean(), k.mean(), 1.0])
    by_name = {v["name"]: v["center_ras_mm"] for v in images[900.0].meta["vertebrae"]}
    assert by_name["T8"][2] < ras[2] < by_name["T1"][2] + 20.0  # in the upper mediastinum
    assert ras[0] > by_name["T4"][0]  # on the patient's right


def test_same_seed_same_bytes_with_the_chest_wall():
    a, b = generate_case(3, PRESET), generate_case(3, PRESET)
    assert np.array_equal(a.ct.array, b.ct.array) and a.meta == b.meta
