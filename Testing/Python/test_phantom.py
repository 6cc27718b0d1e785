"""The synthetic chest-CT phantom generator: determinism, labels, density, export, presets."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from OsteoScreenLib import registry
from OsteoScreenLib.ct_io import check_hounsfield, read_ct, read_volume
from OsteoScreenLib.phantom import PRESETS, generate_case, render_case, sample_parameters, write_case

SEED = 11


@pytest.fixture(scope="module")
def a_training_case():
    return generate_case(SEED, "training")


@pytest.fixture(scope="module")
def training_parameters():
    return sample_parameters(SEED, "training")


def _with(params: dict, **changes) -> dict:
    """A deep copy of ``params`` with 'section.key' = value changes."""
    p = copy.deepcopy(params)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        p[section][key] = value
    return p


def _l1_l2_ids_by_rib_counting(meta: dict) -> tuple[int, int]:
    vertebrae = meta["vertebrae"]
    last_rib = max(i for i, v in enumerate(vertebrae) if v["rib_bearing"])
    return vertebrae[last_rib + 1]["verse_id"], vertebrae[last_rib + 2]["verse_id"]


def _assert_labels_follow_rib_counting(case) -> None:
    labels, levels = case.labels.array, case.levels.array
    l1_id, l2_id = _l1_l2_ids_by_rib_counting(case.meta)
    assert l1_id == registry.VERSE_LEVEL_IDS["L1"] and l2_id == registry.VERSE_LEVEL_IDS["L2"]
    for label, level_id in ((1, l1_id), (2, l2_id)):
        body = labels == label
        assert body.sum() > 100
        inside = np.mean(levels[body] == level_id)
        assert inside == 1.0, f"label {label}: only {inside:.3f} of the body lies in level {level_id}"


def test_same_seed_gives_same_bytes(a_training_case, tmp_path):
    again = generate_case(SEED, "training")
    assert np.array_equal(a_training_case.ct.array, again.ct.array)
    first = write_case(a_training_case, tmp_path / "a")
    second = write_case(again, tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == ["ct.nii.gz", "labels.nii.gz", "levels.nii.gz", "meta.json"]
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seeds_give_different_anatomy(training_parameters):
    other = sample_parameters(SEED + 1, "training")
    assert other["spine"]["level_jitter"] != training_parameters["spine"]["level_jitter"]
    assert other["subject"] != training_parameters["subject"]
    a = generate_case(SEED + 1, "training").meta["vertebrae"]
    b = generate_case(SEED, "training").meta["vertebrae"]
    assert [v["body_width_mm"] for v in a] != [v["body_width_mm"] for v in b]


def test_the_case_holds_int16_hu_on_a_ras_grid_with_labels_on_the_same_grid(a_training_case):
    ct = a_training_case.ct
    assert ct.array.dtype == np.int16
    assert ct.array.shape[1:] == (160, 160)
    assert np.allclose(ct.spacing_mm, 1.5)
    check_hounsfield(ct, "phantom")
    assert a_training_case.labels.same_grid(ct) and a_training_case.levels.same_grid(ct)
    assert set(np.unique(a_training_case.labels.array)) == {0, 1, 2}
    json.dumps(a_training_case.meta)


def test_l1_body_lies_in_the_first_rib_free_vertebra_below_the_last_rib_bearing_one(a_training_case):
    _assert_labels_follow_rib_counting(a_training_case)


@pytest.mark.parametrize("variant", ["11_ribs", "13_ribs", "lumbar_rib"])
def test_rib_variants_keep_labels_on_the_counted_levels(training_parameters, variant):
    p = copy.deepcopy(training_parameters)
    p["spine"]["rib_variant"] = variant
    p["spine"]["thoracolumbar_count"] = 18 if variant == "13_ribs" else 17
    p["spine"]["lumbar_rib_length_mm"] = 30.0 if variant == "lumbar_rib" else 0.0
    p["spine"]["level_jitter"] = [[1.0, 1.0, 1.0]] * 21
    case = render_case(p)
    _assert_labels_follow_rib_counting(case)
    expected_pairs = {"11_ribs": 11, "13_ribs": 13, "lumbar_rib": 12}[variant]
    assert case.meta["rib_pairs"] == expected_pairs
    if variant == "lumbar_rib":
        l1 = next(v for v in case.meta["vertebrae"] if v["name"] == "L1")
        assert 0 < l1["rib_length_mm"] < 40.0
    if variant == "13_ribs":
        assert "T13" in {v["name"] for v in case.meta["vertebrae"]}


def test_body_masks_lie_inside_the_levels_vertebra_of_the_same_level(a_training_case):
    labels, levels = a_training_case.labels.array, a_training_case.levels.array
    for label, name in ((1, "L1"), (2, "L2")):
        assert np.all(levels[labels == label] == registry.VERSE_LEVEL_IDS[name])
    # the L1 body sits above the L2 body (k runs towards superior)
    k1 = np.nonzero(labels == 1)[0].mean()
    k2 = np.nonzero(labels == 2)[0].mean()
    assert a_training_case.ct.ijk_to_ras[2, 2] > 0 and k1 > k2


def test_bmd_class_follows_the_registry_thresholds(a_training_case):
    meta = a_training_case.meta
    bmd = meta["bmd_mg_cm3"]
    assert bmd["mean"] == pytest.approx(0.5 * (bmd["L1"] + bmd["L2"]), abs=1e-3)
    assert meta["qct_class"] == registry.qct_class(bmd["mean"])


def test_all_three_classes_occur_and_l1_l2_are_correlated_but_not_equal():
    classes, l1, l2 = [], [], []
    for seed in range(300):
        b = sample_parameters(seed, "training")["subject"]["bmd_mg_cm3"]
        classes.append(registry.qct_class(0.5 * (b["L1"] + b["L2"])))
        l1.append(b["L1"])
        l2.append(b["L2"])
    counts = {c: classes.count(c) for c in registry.CLASSES}
    assert min(counts.values()) >= 60, counts
    assert 0.8 < np.corrcoef(l1, l2)[0, 1] < 0.999
    assert not np.allclose(l1, l2)


def test_trabecular_hu_rises_with_bmd(a_training_case):
    vol = a_training_case.ct.array.astype(float)
    labels = a_training_case.labels.array
    meta = a_training_case.meta
    # the mean HU of the body core follows the calibration within noise and texture
    for label, name in ((1, "L1"), (2, "L2")):
        core = labels == label
        assert abs(np.median(vol[core]) - meta["trabecular_hu"][name]) < 60.0


def test_dicom_export_reads_back_with_the_same_geometry_and_values(a_training_case, tmp_path):
    folder = write_case(a_training_case, tmp_path / "case", fmt="dicom")
    assert (folder / "ct").is_dir() and (folder / "labels.nii.gz").exists()
    back = read_ct(folder / "ct")
    assert back.array.shape == a_training_case.ct.array.shape
    assert np.allclose(back.ijk_to_ras, a_training_case.ct.ijk_to_ras, atol=1e-4)
    assert np.array_equal(back.array, a_training_case.ct.array)
    labels = read_volume(folder / "labels.nii.gz")
    assert labels.same_grid(back)


def test_a_case_folder_is_not_overwritten_without_permission(a_training_case, tmp_path):
    from OsteoScreenLib.errors import OsteoScreenError

    write_case(a_training_case, tmp_path / "c", fmt="nrrd")
    assert (tmp_path / "c" / "ct.nrrd").exists()
    with pytest.raises(OsteoScreenError):
        write_case(a_training_case, tmp_path / "c", fmt="nrrd")
    write_case(a_training_case, tmp_path / "c", fmt="nrrd", overwrite=True)


EXTREMES = {
    "thin_dense_young": {"scanner__slice_thickness_mm": 0.625, "scanner__slice_spacing_mm": 0.625,
                         "scanner__kvp": 80, "scanner__contrast_phase": "arterial",
                         "pose__pitch_deg": 9.0, "pose__roll_deg": -6.0, "pose__yaw_deg": 6.0,
                         "pose__offset_lr_mm": 45.0, "pose__offset_ap_mm": -45.0},
    "thick_porotic_fractured": {"scanner__slice_thickness_mm": 5.0, "scanner__slice_spacing_mm": 5.0,
                                "scanner__kvp": 140, "scanner__noise_sd_hu_at_2.5mm": 60.0,
                                "pose__pitch_deg": -9.0, "pose__offset_lr_mm": -45.0},
}


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("extreme", list(EXTREMES))
def test_every_preset_makes_a_valid_case_for_extreme_parameters(preset, extreme):
    params = _with(sample_parameters(5, preset), **EXTREMES[extreme])
    if preset == "chest" and extreme == "thin_dense_young":
        params["scanner"]["slice_thickness_mm"] = params["scanner"]["slice_spacing_mm"] = 5.0  # keep the test fast
    if extreme == "thick_porotic_fractured":
        params["subject"]["bmd_mg_cm3"].update(L1=20.0, L2=25.0, subject_mg_cm3=22.0)
        params["spine"]["fractures"] = [{"level": "L1", "type": "crush", "height_loss": 0.45},
                                        {"level": "L2", "type": "wedge", "height_loss": 0.45}]
        params["torso"].update(fat_subcut_mm=70.0, width_scale=1.45, depth_scale=1.5)
    else:
        params["subject"]["bmd_mg_cm3"].update(L1=280.0, L2=270.0, subject_mg_cm3=260.0)
        params["torso"].update(fat_subcut_mm=2.0, width_scale=0.78, depth_scale=0.75)
    case = render_case(params)
    check_hounsfield(case.ct, preset)
    assert case.ct.array.dtype == np.int16
    labels = case.labels.array
    voxel_ml = float(np.prod(case.ct.spacing_mm)) / 1000.0
    for label in (1, 2):
        ml = (labels == label).sum() * voxel_ml
        assert 5.0 < ml < 80.0, (label, ml)
    _assert_labels_follow_rib_counting(case)
    expected = registry.qct_class(0.5 * (params["subject"]["bmd_mg_cm3"]["L1"] + params["subject"]["bmd_mg_cm3"]["L2"]))
    assert case.meta["qct_class"] == expected
    if preset == "chest":
        assert case.ct.array.shape[1:] == (512, 512)
        assert 0.6 - 1e-9 <= case.ct.spacing_mm[0] <= 0.98 + 1e-9
