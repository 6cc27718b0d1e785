"""Generator 2.2.0's density confounders: own random stream, sizes over many seeds, what the image and
the QCT reading make of them. Statistics run on the parameters (about 1 ms a seed); only a few small
'training' phantoms (about 1 s each) are rendered."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest

from OsteoScreenLib.features import body_features
from OsteoScreenLib.phantom import GENERATOR_VERSION, generate_case, reference_standard, render_case, sample_parameters
from OsteoScreenLib.phantom import density

SEEDS = range(3000)

# sha256 of the JSON (sorted keys) of generator 2.1.0's parameters of these cases, and of the label
# and level arrays of 2.1.0's 'training' case 11, recorded before the 2.2.0 change.
PARAMS_2_1_0 = {
    ("chest-box", 11): "25b2b190ddcddc86361f9a39c332f26fb16266c259a635845621755f6c10abed",
    ("chest-box", 400000): "f4f92cf8bd66cebad7eda58be8984fe8ae604ed56a82d570ae4ef7d45ae4a96d",
    ("chest-box", 600000): "f3f048f694004e93f40a97d72696eae1f63f721db17c312c812e2d2cd7fc678f",
    ("chest-box", 600001): "f9133744c53dd0f70f3df6b59d812136f1421e5712cca6b5d9ad1d56cfb827f5",
    ("training", 11): "d93221df8bb371d9245e6fcc1ee1e20bc65ed531299540f942c7240aebcc5d51",
}
LABELS_2_1_0_TRAINING_11 = "925aabc09b2f8a07abc7a7299ffdcd57febe889eb5b907e7c3c6bee43ba3369c"
LEVELS_2_1_0_TRAINING_11 = "2957f1077777e19ca98124f5a2e9e5734e4550fda6ac5478c179f28d0d132f65"
CT_2_1_0_TRAINING_11 = "ec44aae10393d177bde0cc4cfa26b393ca13623bc926f8fdf0e32959ef8c46a6"


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def many():
    return [sample_parameters(s, "chest-box") for s in SEEDS]


@pytest.fixture(scope="module")
def quiet_params():
    """'training' case 11 without noise or streaks, the confounders set to neutral values."""
    p = sample_parameters(11, "training")
    p["scanner"]["noise_sd_hu_at_2.5mm"] = 0.0
    p["scanner"]["streaks"] = []
    p["scanner"]["contrast_phase"] = "none"
    c = p["density"]
    c.update(water_offset_hu=0.0, bone_slope_factor=1.0, water_diameter_cm=density.REFERENCE_WATER_DIAMETER_CM,
             kernel="smooth", kernel_noise_factor=1.0, focal_lesions=[], marrow_fat_delta={"L1": 0.0, "L2": 0.0})
    return p


def _roi(case, level):
    return body_features(case.ct, case.labels, level).roi_hu


def test_the_version_is_2_2_0_and_a_seed_keeps_every_2_1_0_parameter_and_its_labels():
    assert GENERATOR_VERSION == "2.2.0"
    for (preset, seed), digest in PARAMS_2_1_0.items():
        p = sample_parameters(seed, preset)
        assert p["generator_version"] == "2.2.0" and "density" in p
        old = {k: v for k, v in p.items() if k != "density"} | {"generator_version": "2.1.0"}
        assert hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest() == digest, (preset, seed)
    case = generate_case(11, "training")
    assert _sha(case.labels.array) == LABELS_2_1_0_TRAINING_11
    assert _sha(case.levels.array) == LEVELS_2_1_0_TRAINING_11
    assert _sha(case.ct.array) != CT_2_1_0_TRAINING_11  # the voxel values are 2.2.0's
    assert case.meta["bmd_mg_cm3"] == {"L1": 181.117, "L2": 179.753, "mean": 180.435}  # the true density too


def test_the_confounders_come_from_their_own_stream_deterministically(many):
    again = sample_parameters(7, "chest-box")
    assert json.dumps(again, sort_keys=True) == json.dumps(sample_parameters(7, "chest-box"), sort_keys=True)
    # the same subject scanned in another preset: the same confounders
    assert sample_parameters(7, "chest")["density"] == again["density"]
    offsets = [p["density"]["water_offset_hu"] for p in many[:50]]
    assert len(set(offsets)) == 50


def test_inter_scanner_offset_and_slope_have_the_stated_spread(many):
    off = np.array([p["density"]["water_offset_hu"] for p in many])
    slope = np.array([p["density"]["bone_slope_factor"] for p in many])
    assert abs(off.mean()) < 0.4 and 4.5 < off.std() < 5.3 and np.abs(off).max() <= density.SCANNER_WATER_OFFSET_MAX_HU
    assert abs(slope.mean() - 1.0) < 0.005 and 0.055 < slope.std() < 0.063
    # the whole scanner spread of trabecular HU at a fixed BMD (120 mg/cm3, reference marrow, no
    # contrast, reference body) is now about twice 2.1.0's 6 HU offset SD
    hu = []
    for p in many:
        q = copy.deepcopy(p)
        q["density"]["water_diameter_cm"] = density.REFERENCE_WATER_DIAMETER_CM
        q["density"]["marrow_fat_delta"] = {"L1": 0.0, "L2": 0.0}
        q["subject"]["marrow_fat_fraction"] = density.REFERENCE_MARROW_FAT_FRACTION
        q["scanner"].update(kvp=120, contrast_phase="none")
        hu.append(density.trabecular_hu_in_image(q, "L1", 120.0))
    assert 11.0 < np.std(hu) < 15.0


def test_beam_hardening_lowers_spine_hu_with_the_body_the_generator_made(many):
    d = np.array([p["density"]["water_diameter_cm"] for p in many])
    assert 22.0 < d.min() and d.max() < 45.0 and 28.0 < np.median(d) < 34.0
    adip = np.array([p["subject"]["adiposity"] for p in many])
    assert np.corrcoef(adip, d)[0, 1] > 0.5  # fatter subjects are bigger
    p = copy.deepcopy(many[0])
    p["scanner"]["contrast_phase"] = "none"
    small, large = copy.deepcopy(p), copy.deepcopy(p)
    small["density"]["water_diameter_cm"], large["density"]["water_diameter_cm"] = 25.0, 40.0
    drop = density.trabecular_hu_in_image(small, "L1", 150.0) - density.trabecular_hu_in_image(large, "L1", 150.0)
    expected = density.scanner_mineral_slope(p) * 150.0 * density.BEAM_HARDENING_PER_CM * 15.0
    assert drop == pytest.approx(expected, rel=1e-9) and drop > 10.0
    # the calibration phantom under the patient sees part of it: QCT reads the large body lower, less so
    assert reference_standard(large)["qct_bmd_mg_cm3"]["L1"] < reference_standard(small)["qct_bmd_mg_cm3"]["L1"]
    assert (reference_standard(small)["qct_bmd_mg_cm3"]["L1"] - reference_standard(large)["qct_bmd_mg_cm3"]["L1"]
            < drop / density.scanner_mineral_slope(p))


def test_sharp_kernels_marrow_fat_by_level_and_focal_lesions_occur_at_their_stated_rates(many):
    sharp = np.array([p["density"]["kernel"] == "sharp" for p in many])
    assert abs(sharp.mean() - density.SHARP_KERNEL_P) < 0.03
    factors = np.array([p["density"]["kernel_noise_factor"] for p in many])
    lo, hi = density.SHARP_KERNEL_NOISE_FACTOR
    assert np.all(factors[~sharp] == 1.0) and lo <= factors[sharp].min() and factors[sharp].max() <= hi
    step = np.array([p["density"]["marrow_fat_delta"]["L2"] - p["density"]["marrow_fat_delta"]["L1"] for p in many])
    assert abs(step.mean() - density.MARROW_FAT_L2_MINUS_L1) < 0.002
    level = np.array([p["density"]["marrow_fat_delta"]["L1"] for p in many])
    assert abs(level.std() - density.MARROW_FAT_LEVEL_SD) < 0.003
    lesions = [les for p in many for les in p["density"]["focal_lesions"]]
    islands = [les for les in lesions if les["kind"] == "island"]
    assert abs(len(islands) / (2 * len(many)) - density.ISLAND_P_PER_LEVEL) < 0.01
    assert all(density.ISLAND_HU[0] <= les["hu"] <= density.ISLAND_HU[1] for les in islands)
    old = [p for p in many if p["subject"]["age_years"] > 80]
    young = [p for p in many if p["subject"]["age_years"] < 35]
    rate = {name: np.mean([sum(les["kind"] == "focal_fat" for les in p["density"]["focal_lesions"]) / 2 for p in ps])
            for name, ps in (("old", old), ("young", young))}
    assert rate["old"] > 2.5 * rate["young"] and abs(rate["young"] - density.FOCAL_FAT_P_PER_LEVEL[0]) < 0.02


def test_the_qct_reading_is_a_measurement_not_the_inverse_of_the_painting_formula(many):
    diffs, scanner_cancels = [], []
    for p in many[:800]:
        ref = reference_standard(p)["qct_bmd_mg_cm3"]
        sc, true = p["scanner"], p["subject"]["bmd_mg_cm3"]
        for v in ("L1", "L2"):
            analytic = density.qct_reading(true[v], sc["kvp"], sc["slope_jitter"], density.level_marrow_fat(p, v))
            diffs.append((ref[v] - analytic) / true[v])
    diffs = np.array(diffs)
    # measurement error of the size QCT has (precision about 2 %, accuracy within a few %)
    assert 0.015 < diffs.std() < 0.04 and abs(np.mean(diffs)) < 0.01
    assert np.mean(np.abs(diffs) > 1e-4) > 0.99
    # the calibration rods on the same scan remove the scanner's offset and its mineral slope
    p = copy.deepcopy(many[1])
    p["subject"]["marrow_fat_fraction"] = density.REFERENCE_MARROW_FAT_FRACTION
    p["density"]["marrow_fat_delta"] = {"L1": 0.0, "L2": 0.0}
    base = reference_standard(p)["qct_bmd_mg_cm3"]
    for key, value in (("water_offset_hu", 14.0), ("bone_slope_factor", 1.12)):
        q = copy.deepcopy(p)
        q["density"][key] = value
        scanner_cancels.append(reference_standard(q)["qct_bmd_mg_cm3"]["L1"] - base["L1"])
    assert np.allclose(scanner_cancels, 0.0, atol=0.05)  # the rods' noise in HU weighs a little less on a steeper line
    # without errors, beam hardening or fat, the measurement reads the true density
    q = copy.deepcopy(p)
    q["density"]["water_diameter_cm"] = density.REFERENCE_WATER_DIAMETER_CM
    q["density"]["qct"] = {"roi_z": {"L1": 0.0, "L2": 0.0}, "rod_z": [0.0] * len(density.QCT_ROD_MG_CM3)}
    assert reference_standard(q)["qct_bmd_mg_cm3"]["L1"] == pytest.approx(q["subject"]["bmd_mg_cm3"]["L1"], abs=1e-3)


def test_the_image_shows_what_the_qct_reading_corrects_or_avoids(quiet_params):
    """Rendered: the scanner's water offset moves every tissue (QCT unchanged); a bone island in L1
    raises its ROI mean (the QCT operator's ROI avoids it); a sharp kernel raises the noise."""
    base = render_case(quiet_params)
    shifted = copy.deepcopy(quiet_params)
    shifted["density"]["water_offset_hu"] = 12.0
    moved = render_case(shifted)
    body = base.labels.array > 0
    soft = (base.ct.array > -150) & (base.ct.array < 100) & ~body
    diff = moved.ct.array.astype(float) - base.ct.array.astype(float)
    assert np.median(diff[body]) == pytest.approx(12.0, abs=1.0) and np.median(diff[soft]) == pytest.approx(12.0, abs=1.0)
    assert moved.meta["qct_bmd_mg_cm3"] == base.meta["qct_bmd_mg_cm3"]
    assert moved.meta["trabecular_hu"]["L1"] == pytest.approx(base.meta["trabecular_hu"]["L1"] + 12.0, abs=0.01)

    island = copy.deepcopy(quiet_params)
    island["density"]["focal_lesions"] = [{"level": "L1", "kind": "island", "position": [0.0, 0.1, 0.0],
                                           "radius_mm": 5.0, "hu": 1200.0}]
    with_island = render_case(island)
    assert _roi(with_island, "L1") > _roi(base, "L1") + 10.0
    assert _roi(with_island, "L2") == pytest.approx(_roi(base, "L2"), abs=0.5)
    assert with_island.meta["qct_bmd_mg_cm3"] == base.meta["qct_bmd_mg_cm3"]

    noisy = copy.deepcopy(quiet_params)
    noisy["scanner"]["noise_sd_hu_at_2.5mm"] = 15.0
    sharp = copy.deepcopy(noisy)
    sharp["density"].update(kernel="sharp", kernel_noise_factor=2.0)
    sd = {}
    for name, p in (("smooth", noisy), ("sharp", sharp)):
        resid = render_case(p).ct.array.astype(float) - base.ct.array.astype(float)
        sd[name] = resid[soft].std()
    assert 1.8 < sd["sharp"] / sd["smooth"] < 2.2
