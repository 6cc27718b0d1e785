"""The synthetic chest-CT phantom generator: determinism, labels, density, export, presets."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from OsteoScreenLib import registry
from OsteoScreenLib.ct_io import check_hounsfield, read_ct, read_volume
from OsteoScreenLib.phantom import PRESETS, generate_case, render_case, sample_parameters, write_case
from OsteoScreenLib.phantom.spine import RIB_BEARING_MIN_MM

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


def test_lower_ribs_run_down_beside_the_next_vertebrae_and_the_lowest_two_pairs_are_thin(training_parameters):
    from OsteoScreenLib.phantom.render import build_anatomy

    p = _with(training_parameters, lower_ribs__descent_scale=1.0, lower_ribs__last_rib_extent=1.0,
              lower_ribs__lower_thickness_scale=0.7, lower_ribs__lower_density_scale=0.5,
              lower_ribs__costal_margin_drop_mm=0.0,  # the costal margin of 1.1.0-2.0.0 (next test)
              spine__rib_variant="normal", spine__thoracolumbar_count=17, spine__lumbar_rib_length_mm=0.0)
    level = copy.deepcopy(p)
    del level["lower_ribs"]  # the ribs of generator 1.0.0
    new, old = build_anatomy(p), build_anatomy(level)
    l1 = next(v for v in new.vertebrae if v.name == "L1")
    l1_top = l1.center[2] + l1.half_height

    def height_beside_spine(anatomy, number, lateral_mm=80.0):
        """Where the rib runs 80 mm lateral of the body centre, as a coronal view of real CT shows it."""
        rib = next(r for r in anatomy.ribs if r.number == number and r.side == "R")
        x = np.abs(rib.points[1:, 0] - l1.center[0])
        return float(np.interp(lateral_mm, x, rib.points[1:, 2]))

    # 80 mm beside the spine the 12th rib runs beside L1 (on the real abdominal CT at hand: at L1's
    # centre); in 1.0.0 it ran level, above L1
    assert l1.center[2] - 10.0 < height_beside_spine(new, 12) < l1_top < height_beside_spine(old, 12)
    assert height_beside_spine(new, 11) < height_beside_spine(old, 11) - 10.0
    for number in range(1, 9):  # the ribs above are as before
        assert all(np.array_equal(a.points, b.points) for a, b in zip(new.ribs, old.ribs) if a.number == number)
    looks = {(r.number, r.thickness_scale, r.density_scale) for r in new.ribs}
    assert looks == {(n, 0.7, 0.5) for n in (11, 12)} | {(n, 1.0, 1.0) for n in range(1, 11)}
    assert all(r.thickness_scale == 1.0 for r in old.ribs)


def test_the_costal_margin_reaches_down_beside_l2_and_the_ribs_above_the_8th_stay(training_parameters):
    """Generator 2.1.0: the 9th costal cartilage ends near L1 (transpyloric plane) and the 10th, the
    lowest point of the costal margin, beside L2 (subcostal plane, L2-L3), where 2.0.0 ended both
    above L1; ribs 1-7 do not move."""
    from OsteoScreenLib.phantom.render import build_anatomy

    p = _with(training_parameters, lower_ribs__descent_scale=1.0, lower_ribs__costal_margin_drop_mm=50.0,
              spine__rib_variant="normal", spine__thoracolumbar_count=17, spine__lumbar_rib_length_mm=0.0)
    new, old = build_anatomy(p), build_anatomy(_with(p, lower_ribs__costal_margin_drop_mm=0.0))
    centre = {v.name: v.center[2] for v in new.vertebrae}

    def lowest(anatomy, number):
        rib = next(r for r in anatomy.ribs if r.number == number and r.side == "L")
        return float(np.vstack([rib.points] + ([rib.cartilage] if rib.cartilage is not None else []))[:, 2].min())

    assert lowest(old, 10) > centre["L1"] and lowest(old, 9) > centre["L1"] + 20.0  # 2.0.0: all above L1
    assert centre["L2"] - 15.0 < lowest(new, 10) < (centre["L1"] + centre["L2"]) / 2  # beside L2
    assert abs(lowest(new, 9) - centre["L1"]) < 20.0  # about L1
    assert lowest(new, 11) < lowest(old, 11) - 20.0 and lowest(new, 8) < lowest(old, 8)
    for number in range(1, 8):
        assert all(np.array_equal(a.points, b.points) for a, b in zip(new.ribs, old.ribs) if a.number == number)


def test_the_organs_move_against_the_spine_by_the_viscera_shift(training_parameters):
    """Generator 2.1.0: the diaphragm, kidneys and heart move together along the body axis by
    ``params['viscera']['shift_mm']``, so that no organ marks L1; the spine and ribs stay."""
    from OsteoScreenLib.phantom.render import build_anatomy

    base = _with(training_parameters, viscera__shift_mm=0.0)
    moved = _with(training_parameters, viscera__shift_mm=-30.0)
    a, b = build_anatomy(base), build_anatomy(moved)
    kidneys = lambda an: sorted(o.center[2] for o in an.organs["organs"] if o.name == "kidney")  # noqa: E731
    assert np.allclose(np.array(kidneys(b)) - kidneys(a), -30.0)
    assert b.organs["dome_r"] - a.organs["dome_r"] == pytest.approx(-30.0)
    assert b.organs["heart"].center[2] - a.organs["heart"].center[2] == pytest.approx(-30.0)
    assert all(np.array_equal(x.center, y.center) for x, y in zip(a.vertebrae, b.vertebrae))
    assert all(np.array_equal(x.points, y.points) for x, y in zip(a.ribs, b.ribs))
    shifts = [sample_parameters(s, "chest")["viscera"]["shift_mm"] for s in range(40)]
    assert 10.0 < np.std(shifts) < 30.0 and max(map(abs, shifts)) <= 45.0


def test_a_seed_draws_its_lower_ribs_from_a_stream_of_its_own(training_parameters):
    chest = sample_parameters(SEED, "chest")
    assert chest["lower_ribs"] == training_parameters["lower_ribs"]  # same subject, whatever the scan
    assert sample_parameters(SEED + 1, "training")["lower_ribs"] != training_parameters["lower_ribs"]
    assert 0.6 <= training_parameters["lower_ribs"]["descent_scale"] <= 1.4


@pytest.mark.parametrize("seed, swap", [(100000, "drop_one"), (100007, "drop_two"), (100002, "add_l1")])
def test_the_rib_swap_preset_moves_only_ribs_between_vertebrae(seed, swap):
    """For training the rib check: the chest-coarse case with the ribs of the lowest rib-bearing
    vertebrae taken away or a full pair given to L1; every vertebra keeps its place, name and shape."""
    from OsteoScreenLib.phantom.render import build_anatomy

    params, swapped = sample_parameters(seed, "chest-coarse"), sample_parameters(seed, "chest-coarse-ribswap")
    assert {k: v for k, v in swapped.items() if k not in ("rib_swap", "preset")} == \
        {k: v for k, v in params.items() if k != "preset"}
    before, after = build_anatomy(params), build_anatomy(swapped)
    bearing = [v.name for v in before.vertebrae if v.rib_length_mm >= RIB_BEARING_MIN_MM]
    now = [v.name for v in after.vertebrae if v.rib_length_mm >= RIB_BEARING_MIN_MM]
    expected = {"drop_one": bearing[:-1], "drop_two": bearing[:-2], "add_l1": bearing + ["L1"]}[swap]
    assert now == expected
    for a, b in zip(before.vertebrae, after.vertebrae):
        assert a.name == b.name and np.allclose(a.center, b.center) and a.lumbarness == b.lumbarness
    if swap == "add_l1":  # a full rib, not a stub: it runs out and down from the L1 transverse process
        rib = next(r for r in after.ribs if r.vertebra == "L1" and r.side == "R")
        assert rib.length_mm > 60.0 and rib.points[-1][2] < rib.points[1][2]
    case = render_case(swapped)
    assert case.meta["rib_pairs"] == len(expected)
    assert np.array_equal(case.labels.array, render_case(params).labels.array)  # the labels keep the names


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
    for key, cls in (("qct_bmd_mg_cm3", "qct_class"), ("bmd_mg_cm3", "bmd_class")):
        bmd = meta[key]
        assert bmd["mean"] == pytest.approx(0.5 * (bmd["L1"] + bmd["L2"]), abs=1e-3)
        assert meta[cls] == registry.qct_class(bmd["mean"])


@pytest.mark.parametrize("fat", [0.2, 0.75])
def test_the_qct_label_is_what_a_calibrated_roi_reads_on_the_image(training_parameters, fat):
    """The label is the QCT reading: the trabecular ROI's HU through the scanner's calibration line
    gives it, marrow fat included; the true density differs from it by the fat error."""
    from OsteoScreenLib.features import body_features

    params = _with(training_parameters, subject__marrow_fat_fraction=fat, scanner__contrast_phase="none")
    # generator 2.2.0: without the QCT measurement's own errors and beam hardening, and with the
    # subject's fat in both bodies (test_phantom_density covers those)
    params["density"].update(water_diameter_cm=30.0, marrow_fat_delta={"L1": 0.0, "L2": 0.0}, focal_lesions=[],
                             qct={"roi_z": {"L1": 0.0, "L2": 0.0}, "rod_z": [0.0] * 5})
    case = render_case(params)
    cal = case.meta["calibration"]
    for v in ("L1", "L2"):
        roi_hu = body_features(case.ct, case.labels, v).roi_hu
        read = (roi_hu - cal["offset_hu"]) / cal["slope_hu_per_mg_cm3"]
        qct, true = case.meta["qct_bmd_mg_cm3"][v], case.meta["bmd_mg_cm3"][v]
        assert read == pytest.approx(qct, abs=6.0), (v, read, qct)
        assert abs(qct - true) > 18.0 and np.sign(qct - true) == (1 if fat < 0.45 else -1)


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
    if preset in ("chest", "chest-box") and extreme == "thin_dense_young":
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
    if not PRESETS[preset].get("rib_swap"):  # there the ribs no longer count the levels, by design
        _assert_labels_follow_rib_counting(case)
    expected = registry.qct_class(0.5 * (params["subject"]["bmd_mg_cm3"]["L1"] + params["subject"]["bmd_mg_cm3"]["L2"]))
    assert case.meta["bmd_class"] == case.meta["qct_class"] == expected  # far from the thresholds: fat cannot move it
    if preset in ("chest", "chest-box"):
        assert preset == "chest-box" or case.ct.array.shape[1:] == (512, 512)
        assert 0.6 - 1e-9 <= case.ct.spacing_mm[0] <= 0.98 + 1e-9


# --------------------------------------------------------------------------- chest-box: a box of the chest case

BOX_SEEDS = (0, 2)  # 0: 5 mm slices every 2.5 mm (interpolated noise); 2: streaks, FOV ending in the lower L2


@pytest.fixture(scope="module")
def chest_and_box_cases():
    """The chest case and the chest-box case of each of BOX_SEEDS (a chest case costs a few seconds)."""
    return {seed: (generate_case(seed, "chest"), generate_case(seed, "chest-box")) for seed in BOX_SEEDS}


def _box_in_chest(box, chest) -> tuple[slice, slice, slice]:
    """Index slices (k, j, i) of ``box``'s voxels in ``chest``, checking that the box is a sub-lattice of it."""
    a, b = chest.ct.ijk_to_ras, box.ct.ijk_to_ras
    assert np.array_equal(a[:3, :3], b[:3, :3])  # same spacing and directions
    ijk = np.linalg.solve(a, b[:, 3])[:3]  # the box's voxel (0, 0, 0) in chest indices
    assert np.allclose(ijk, np.round(ijk), atol=1e-6), ijk  # ... on a chest voxel centre, so all of them are
    i0, j0, k0 = (int(v) for v in np.round(ijk))
    nk, nj, ni = box.ct.array.shape
    assert 0 <= k0 and k0 + nk <= chest.ct.array.shape[0]
    assert 0 <= j0 and j0 + nj <= chest.ct.array.shape[1] and 0 <= i0 and i0 + ni <= chest.ct.array.shape[2]
    assert box.meta["grid"]["box_of"]["offset_kji"] == [k0, j0, i0]
    return slice(k0, k0 + nk), slice(j0, j0 + nj), slice(i0, i0 + ni)


@pytest.mark.parametrize("seed", BOX_SEEDS)
def test_chest_box_is_the_chest_case_on_a_box_of_its_grid(chest_and_box_cases, seed):
    chest, box = chest_and_box_cases[seed]
    assert box.meta["parameters"]["subject"] == chest.meta["parameters"]["subject"]
    assert box.meta["parameters"]["scanner"] == chest.meta["parameters"]["scanner"]
    assert box.meta["parameters"]["pose"] == chest.meta["parameters"]["pose"]
    assert box.meta["vertebrae"] == chest.meta["vertebrae"]
    crop = _box_in_chest(box, chest)
    assert box.labels.same_grid(box.ct) and box.levels.same_grid(box.ct)
    assert np.array_equal(box.labels.array, chest.labels.array[crop])
    assert np.array_equal(box.levels.array, chest.levels.array[crop])
    # L1 and L2 lie whole in the box (as far as the chest field of view holds them)
    for label in (1, 2):
        assert (chest.labels.array == label).sum() > 100
        assert (box.labels.array == label).sum() == (chest.labels.array == label).sum()
    # about 176 mm in-plane around L1-L2, and much smaller than the chest scan
    extent = np.array(box.ct.array.shape[1:]) * box.ct.spacing_mm[:2]
    assert np.all((extent > 170.0) & (extent < 200.0)), extent
    assert box.ct.array.size < 0.25 * chest.ct.array.size
    # The noise-free image of the box equals the chest's exactly (test below); only the noise
    # differs: another realisation with the same statistics. So the difference has zero mean
    # (inside the bodies, where the BMD is read, within 3 HU: noise SD <= ~60 HU averaged over
    # >= 5000 voxels with a correlation length of ~1-2 voxels), and the anatomy, which spans
    # ~1000 HU (air, lung, fat, soft tissue, bone), dominates the voxelwise correlation.
    ct_box = box.ct.array.astype(np.float64)
    ct_chest = chest.ct.array[crop].astype(np.float64)
    bodies = box.labels.array > 0
    assert bodies.sum() > 5000
    assert abs(np.mean(ct_box[bodies] - ct_chest[bodies])) < 3.0
    assert abs(np.median(ct_box[bodies]) - np.median(ct_chest[bodies])) < 5.0
    assert np.corrcoef(ct_box.ravel(), ct_chest.ravel())[0, 1] > 0.95
    # the same noise level: the spread of the difference is that of two independent noises
    sd_box = np.std(ct_box[bodies] - np.mean(ct_box[bodies]))
    sd_chest = np.std(ct_chest[bodies] - np.mean(ct_chest[bodies]))
    assert 0.8 < sd_box / sd_chest < 1.25


def test_chest_box_without_noise_equals_the_chest_image_on_the_box_and_keeps_a_cut_field_of_view():
    chest_p, box_p = sample_parameters(7, "chest"), sample_parameters(7, "chest-box")
    for p in (chest_p, box_p):  # a short, thick-sliced chest scan keeps this fast
        p["scanner"].update(slice_thickness_mm=5.0, slice_spacing_mm=5.0, **{"noise_sd_hu_at_2.5mm": 0.0})
        p["scanner"]["streaks"] = [{"z_center": 0.9, "z_extent_mm": 40.0, "angle_deg": 20.0, "amplitude_hu": -50.0,
                                    "width_mm": 8.0}]
        p["fov"]["top"] = {"level": "T12", "fraction": 0.0}
        p["fov"]["bottom_position"] = 0.0  # the chest FOV ends in the middle of L2
    chest, box = render_case(chest_p), render_case(box_p)
    crop = _box_in_chest(box, chest)
    assert np.array_equal(box.ct.array, chest.ct.array[crop])
    assert np.array_equal(box.labels.array, chest.labels.array[crop])
    assert crop[0].start == 0  # the box stops where the chest scan stops, in L2
    assert 0 < (box.labels.array == 2).sum() == (chest.labels.array == 2).sum()


def test_chest_box_same_seed_gives_same_bytes_and_its_own_jitter(chest_and_box_cases):
    seed = BOX_SEEDS[0]
    box = chest_and_box_cases[seed][1]
    again = generate_case(seed, "chest-box")
    for name in ("ct", "labels", "levels"):
        assert np.array_equal(getattr(box, name).array, getattr(again, name).array), name
        assert np.array_equal(getattr(box, name).ijk_to_ras, getattr(again, name).ijk_to_ras), name
    assert json.dumps(box.meta) == json.dumps(again.meta)
    # the box offset comes from a stream of its own: the chest parameters of the seed are unchanged
    p_chest, p_box = sample_parameters(seed, "chest"), sample_parameters(seed, "chest-box")
    offset = p_box["fov"].pop("box_offset_mm")
    assert all(-15.0 <= o <= 15.0 for o in offset)
    assert offset != sample_parameters(seed + 1, "chest-box")["fov"]["box_offset_mm"]
    p_box["preset"] = "chest"
    assert p_box == p_chest
