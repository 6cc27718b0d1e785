"""Bone density of a subject and the Hounsfield units of every tissue on a given scanner.

BMD model: trabecular BMD of L1-L2 falls with age, faster in women after the
menopause (shape of the QCT reference curves of Ebbing-type and Chinese QCT
cohorts: about 170-190 mg/cm3 at 30 years, about 80-100 mg/cm3 at 75 years),
with a between-subject SD of about 28 mg/cm3. Ages are drawn so that the three
QCT classes all occur often (see the class balance in the benchmark report).

Calibration: single-energy QCT relates trabecular HU linearly to BMD
(mg/cm3 hydroxyapatite), with a slope that grows as the tube voltage falls
(harder beams attenuate calcium less) and an offset that differs by scanner.
Marrow fat lowers HU at a fixed BMD (the known fat error of single-energy QCT,
about -11 HU per 10 % fat fraction), and intravenous contrast raises it.
"""

from __future__ import annotations

import numpy as np

# HU per mg/cm3 hydroxyapatite by tube voltage (kVp): typical phantom calibrations.
CALIBRATION_SLOPE_BY_KVP = {80: 1.62, 100: 1.34, 120: 1.17, 140: 1.04}
MARROW_HU_AT_ZERO_BMD = 15.0  # mixed red/yellow marrow at the reference fat fraction
REFERENCE_MARROW_FAT_FRACTION = 0.45
MARROW_FAT_HU_PER_FRACTION = -110.0

# Tissue HU without contrast at 120 kVp, and their change per kVp step from 120.
TISSUE_HU_120 = {
    "air": -1000.0,
    "lung": -845.0,
    "fat": -98.0,
    "muscle": 48.0,
    "skin": 35.0,
    "blood": 42.0,
    "liver": 58.0,
    "spleen": 48.0,
    "kidney": 33.0,
    "bowel_wall": 38.0,
    "bowel_fluid": 12.0,
    "csf": 12.0,
    "disc": 88.0,
    "cartilage": 140.0,
    "cortical_bone": 1250.0,  # compact bone; thin shells look much lower after blur
    "posterior_marrow": 190.0,
}
FAT_HU_PER_KVP = 0.15  # fat is ~ -110 HU at 80 kVp and ~ -95 HU at 140 kVp

# Contrast enhancement (HU added) at 120 kVp by phase.
CONTRAST_HU = {
    "none": {},
    "arterial": {"aorta": 260.0, "heart_left": 240.0, "heart_right": 120.0, "vein": 40.0, "liver": 15.0,
                 "spleen": 60.0, "kidney": 120.0, "muscle": 5.0, "bowel_wall": 25.0, "marrow": 8.0,
                 "lung_vessel": 150.0, "portal_vein": 40.0},
    "portal": {"aorta": 120.0, "heart_left": 110.0, "heart_right": 110.0, "vein": 110.0, "liver": 55.0,
               "spleen": 70.0, "kidney": 140.0, "muscle": 10.0, "bowel_wall": 40.0, "marrow": 18.0,
               "lung_vessel": 100.0, "svc": 120.0, "portal_vein": 160.0},
}


def age_sex_mean_bmd(age_years: float, sex: str) -> float:
    """Population mean trabecular L1-L2 BMD (mg/cm3) at an age, for 'F' or 'M'."""
    peak = 185.0 if sex == "F" else 178.0
    if sex == "F":
        # slow loss before ~50, faster after the menopause
        loss = 0.9 * max(age_years - 30.0, 0.0) + 1.5 * max(age_years - 50.0, 0.0)
    else:
        loss = 1.45 * max(age_years - 30.0, 0.0)
    return max(peak - loss, 35.0)


def calibration(kvp: int, scanner_offset_hu: float, slope_jitter: float) -> tuple[float, float]:
    """Slope (HU per mg/cm3) and offset (HU) of trabecular HU against BMD for one scanner."""
    slope = CALIBRATION_SLOPE_BY_KVP[int(kvp)] * slope_jitter
    return slope, MARROW_HU_AT_ZERO_BMD + scanner_offset_hu


def marrow_fat_hu(marrow_fat_fraction: float) -> float:
    """HU that marrow fat adds to trabecular bone against the calibration's reference fraction."""
    return MARROW_FAT_HU_PER_FRACTION * (marrow_fat_fraction - REFERENCE_MARROW_FAT_FRACTION)


def qct_reading(bmd_mg_cm3: float, kvp: int, slope_jitter: float, marrow_fat_fraction: float) -> float:
    """BMD that single-energy QCT reads on this body (mg/cm3): the paper's reference standard.

    QCT converts the trabecular HU of an unenhanced scan to BMD through a calibration phantom
    scanned with the patient, which removes the scanner's offset and slope but not the marrow fat:
    fat above the calibration's reference fraction reads as missing mineral (the fat error of
    single-energy QCT, larger in the elderly). The ACR thresholds apply to this reading.
    """
    slope, _ = calibration(kvp, 0.0, slope_jitter)
    return bmd_mg_cm3 + marrow_fat_hu(marrow_fat_fraction) / slope


def kv_iodine_factor(kvp: int) -> float:
    """Iodine contrast in HU grows at low kVp (relative to 120 kVp)."""
    return {80: 1.65, 100: 1.3, 120: 1.0, 140: 0.85}[int(kvp)]


def tissue_table(kvp: int, contrast_phase: str, fat_offset_hu: float = 0.0,
                 muscle_offset_hu: float = 0.0) -> dict[str, float]:
    """HU of every soft tissue on this scanner and contrast phase."""
    dk = int(kvp) - 120
    t = dict(TISSUE_HU_120)
    t["fat"] += FAT_HU_PER_KVP * dk + fat_offset_hu
    t["muscle"] += muscle_offset_hu
    t["cortical_bone"] *= 1.0 - 0.006 * dk  # compact bone is brighter at low kVp
    t["posterior_marrow"] *= 1.0 - 0.004 * dk
    f = kv_iodine_factor(kvp)
    enh = CONTRAST_HU[contrast_phase]
    t["aorta"] = t["blood"] + enh.get("aorta", 0.0) * f
    t["heart_left"] = t["blood"] + enh.get("heart_left", 0.0) * f
    t["heart_right"] = t["blood"] + enh.get("heart_right", 0.0) * f
    t["vein"] = t["blood"] + enh.get("vein", 0.0) * f
    t["lung_vessel"] = t["blood"] + enh.get("lung_vessel", 0.0) * f
    t["svc"] = t["blood"] + enh.get("svc", 0.0) * f  # arterial phase: set per subject (renderer)
    t["portal_vein"] = t["blood"] + enh.get("portal_vein", 0.0) * f
    t["myocardium"] = t["muscle"] + 0.5 * enh.get("heart_left", 0.0) * f * 0.4
    for organ in ("liver", "spleen", "kidney", "muscle", "bowel_wall"):
        t[organ] += enh.get(organ, 0.0) * f
    return t


def sample_bmd(rng: np.random.Generator, age: float, sex: str) -> dict:
    """Subject BMD (mg/cm3) of L1 and L2: correlated, not equal (r about 0.9)."""
    mean = age_sex_mean_bmd(age, sex)
    subject = mean + 28.0 * rng.standard_normal()
    subject = float(np.clip(subject, 25.0, 260.0))
    common = rng.standard_normal()
    l1 = subject * (1.0 + 0.045 * rng.standard_normal()) + 2.0 * common
    l2 = subject * (1.0 + 0.045 * rng.standard_normal()) - 2.0 * common - 1.5
    return {"subject_mg_cm3": subject, "L1": float(np.clip(l1, 15.0, 280.0)), "L2": float(np.clip(l2, 15.0, 280.0))}


# ---------------------------------------------------------------------------------------------
# Generator 2.2.0: density confounders. Drawn from a random stream of their own
# (parameters.DENSITY_STREAM), so that a seed keeps the anatomy, the true density and every other
# parameter of 2.1.0; only voxel values and the QCT reading change. Sizes and sources: docs/phantoms.md
# ("Generator 2.2.0"); where a size is our estimate the comment says so.
# ---------------------------------------------------------------------------------------------

# Inter-scanner calibration. The same patient's soft-tissue HU differ between scanners of two vendors
# at every site measured (Lamba R et al., AJR 2014;203:1013-1020), five MDCT scanners read an
# anthropomorphic phantom's tissues differently (Birnbaum BA et al., Radiology 2007;242:109-119), and
# CT numbers differ between scanners, even of one model (Levi C et al., AJR 1982;139:443-447). Residual
# inter-scanner vBMD differences remain even after cross-calibration (Carpenter RD et al., Med Eng Phys
# 2014;36:1225-1232). The SDs are our estimates within those reports (ACR accreditation allows water
# 0 +- 7 HU); on top of 2.1.0's 6 HU offset and 4 % slope SD of the marrow calibration.
SCANNER_WATER_OFFSET_SD_HU = 5.0  # the whole image (every tissue) moves by it
SCANNER_WATER_OFFSET_MAX_HU = 15.0
SCANNER_BONE_SLOPE_SD = 0.06  # HU per mg/cm3 of mineral (and compact bone) at one nominal kVp
SCANNER_BONE_SLOPE_RANGE = (0.85, 1.15)

# Beam hardening with body size: spine HU of a fixed mineral density fall as the patient grows
# (vBMD fell with phantom size on three of four scanners: Bonaretti S et al., Phys Med Biol
# 2014;59:7819-7834; body size changes inter-scanner BMD differences: Carpenter 2014). The loss per cm
# is our estimate: 6 % of the mineral signal per 10 cm of water-equivalent diameter above 30 cm.
BEAM_HARDENING_PER_CM = 0.006
REFERENCE_WATER_DIAMETER_CM = 30.0  # a typical adult abdomen (AAPM Report 204's water-equivalent diameter)
# A calibration phantom under the patient sees part of the hardening that the spine sees (it lies in
# the beam under the same patient, but off-centre): our estimate of the share it sees (Bonaretti 2014:
# size errors remain after phantom calibration).
QCT_PHANTOM_BEAM_HARDENING_SHARE = 0.5

# Marrow fat by level. The subject's fraction (2.1.0: age- and BMD-dependent mean, SD 7 points) is
# already the size of the between-subject spread that chemical-shift MRI finds within an age decade
# (PDFF of L1-L4 32.0 +- 8.0 % in men and 27.2 +- 6.0 % in women in their twenties, rising with age:
# Baum T et al., Front Endocrinol 2018;9:141). 2.2.0 adds the rise from L1 to L2 (fat increases from
# the upper to the lower lumbar levels: Baum 2018) and a level's own deviation; step and SD are our
# estimates (points of fat fraction).
MARROW_FAT_L2_MINUS_L1 = 0.01
MARROW_FAT_LEVEL_SD = 0.025

# Reconstruction kernel. Slice thickness (partial volume: the slice profile of up to 5 mm averages the
# endplates into the body) and the smooth kernel's blur (0.4-0.8 mm) and noise texture exist since 1.0;
# 2.2.0 adds series reconstructed with a sharp (bone/lung) kernel: more noise, finer grain. Kernels
# change tissue HU inconsistently between scanners (Birnbaum 2007), so the mean is left alone. The
# share and the noise factor are our estimates.
SHARP_KERNEL_P = 0.3
SHARP_KERNEL_NOISE_FACTOR = (1.4, 2.2)
SHARP_KERNEL_GRAIN_SCALE = 0.6  # the noise grain (kernel sigma of the noise spectrum) shrinks by it

# Heterogeneous trabecular bone of L1 and L2 (besides 2.1.0's endplate sclerosis, bone islands of
# T11-L3 and fractures). Enostoses (bone islands) measure 885 HU or more (mean about 1,190 HU: Ulano A
# et al., AJR 2016;207:362-368) and are mostly 2-20 mm across (Greenspan A, Skeletal Radiol
# 1995;24:111-115). Focal fatty marrow (hypodense, common in the elderly) is modelled as fat-rich marrow
# of -40 to +20 HU. Prevalence per vertebra and sizes are our estimates. A QCT operator places the ROI
# away from both, so they change the image's ROI mean but not the QCT reading.
ISLAND_P_PER_LEVEL = 0.04
ISLAND_RADIUS_MM = (1.0, 5.0)
ISLAND_HU = (885.0, 1500.0)
FOCAL_FAT_P_PER_LEVEL = (0.02, 0.10)  # at 35 years and at 85 years and older
FOCAL_FAT_RADIUS_MM = (2.0, 6.0)
FOCAL_FAT_HU = (-40.0, 20.0)

# The QCT reading as a measurement: trabecular HU of a mid-body ROI on the unenhanced scan, converted
# through a calibration phantom's rods scanned with the patient. Asynchronous and phantom-calibrated
# spine QCT: accuracy on the European Spine Phantom 1.4-6.7 %, precision 0.5-0.9 mg/cm3 intra-scanner,
# intra-observer precision error < 3 % (Wang L et al., Sci Rep 2017;7:6284). We take a 2 % CV of the
# ROI reading (operator and ROI noise) with a 1 mg/cm3 floor, and 1 HU noise on each rod's mean
# (a rod ROI of a few hundred voxels at 15-25 HU noise); rods from 0 to 200 mg/cm3 (our estimate of a
# solid calibration phantom's range).
QCT_ROI_CV = 0.02
QCT_ROI_FLOOR_MG_CM3 = 1.0
QCT_ROD_NOISE_HU = 1.0
QCT_ROD_MG_CM3 = (0.0, 50.0, 100.0, 150.0, 200.0)
BODY_LEVELS = ("L1", "L2")


def water_diameter_cm(torso: dict) -> float:
    """Water-equivalent diameter (cm) of the torso at L1 from the torso parameters alone: the outline's
    half axes there (torso._OUTLINE between T12 and L2, scaled, plus the subcutaneous fat)."""
    fat = torso["fat_subcut_mm"]
    a = 147.5 * torso["width_scale"] + 0.85 * fat
    b = 104.0 * torso["depth_scale"] + 0.85 * fat
    return float(2.0 * np.sqrt(a * b) / 10.0)


def beam_hardening_factor(diameter_cm: float) -> float:
    """Share of the mineral signal left at the spine's centre in a body of this diameter."""
    return float(np.clip(1.0 - BEAM_HARDENING_PER_CM * (diameter_cm - REFERENCE_WATER_DIAMETER_CM), 0.8, 1.1))


def sample_confounders(rng: np.random.Generator, subject: dict, torso: dict) -> dict:
    """Every density confounder of a case (generator 2.2.0), drawn in a fixed order from ``rng``."""
    def clipped(sd, lo, hi, mean=0.0):
        return float(np.clip(mean + sd * rng.standard_normal(), lo, hi))

    age_f = float(np.clip((subject["age_years"] - 35.0) / 50.0, 0.0, 1.0))
    out = {
        "water_offset_hu": clipped(SCANNER_WATER_OFFSET_SD_HU, -SCANNER_WATER_OFFSET_MAX_HU, SCANNER_WATER_OFFSET_MAX_HU),
        "bone_slope_factor": clipped(SCANNER_BONE_SLOPE_SD, *SCANNER_BONE_SLOPE_RANGE, mean=1.0),
        "water_diameter_cm": round(water_diameter_cm(torso), 3),  # not drawn: the body the generator made
    }
    common = MARROW_FAT_LEVEL_SD * rng.standard_normal()
    out["marrow_fat_delta"] = {
        "L1": float(-0.5 * MARROW_FAT_L2_MINUS_L1 + common / np.sqrt(2) + MARROW_FAT_LEVEL_SD / np.sqrt(2) * rng.standard_normal()),
        "L2": float(0.5 * MARROW_FAT_L2_MINUS_L1 + common / np.sqrt(2) + MARROW_FAT_LEVEL_SD / np.sqrt(2) * rng.standard_normal()),
    }
    sharp = bool(rng.uniform() < SHARP_KERNEL_P)
    factor = float(rng.uniform(*SHARP_KERNEL_NOISE_FACTOR))
    out["kernel"] = "sharp" if sharp else "smooth"
    out["kernel_noise_factor"] = factor if sharp else 1.0
    lesions = []
    focal_p = FOCAL_FAT_P_PER_LEVEL[0] + (FOCAL_FAT_P_PER_LEVEL[1] - FOCAL_FAT_P_PER_LEVEL[0]) * age_f
    for level in BODY_LEVELS:
        for kind, p, radius, hu in (("island", ISLAND_P_PER_LEVEL, ISLAND_RADIUS_MM, ISLAND_HU),
                                    ("focal_fat", focal_p, FOCAL_FAT_RADIUS_MM, FOCAL_FAT_HU)):
            present = rng.uniform() < p
            draw = {"level": level, "kind": kind,
                    "position": [float(rng.uniform(-0.45, 0.45)), float(rng.uniform(-0.35, 0.45)),
                                 float(rng.uniform(-0.4, 0.4))],
                    "radius_mm": float(rng.uniform(*radius)), "hu": float(rng.uniform(*hu))}
            if present:
                lesions.append(draw)
    out["focal_lesions"] = lesions
    out["qct"] = {"roi_z": {v: float(rng.standard_normal()) for v in BODY_LEVELS},
                  "rod_z": [float(z) for z in rng.standard_normal(len(QCT_ROD_MG_CM3))]}
    return out


def level_marrow_fat(params: dict, level: str) -> float:
    """Marrow fat fraction of one vertebra: the subject's, plus the level's own (2.2.0, L1 and L2)."""
    fat = params["subject"]["marrow_fat_fraction"]
    conf = params.get("density")
    if conf is not None and level in conf["marrow_fat_delta"]:
        fat = float(np.clip(fat + conf["marrow_fat_delta"][level], 0.05, 0.9))
    return fat


def scanner_mineral_slope(params: dict) -> float:
    """HU per mg/cm3 of mineral this scanner gives (without the patient's beam hardening)."""
    sc = params["scanner"]
    slope, _ = calibration(sc["kvp"], sc["scanner_offset_hu"], sc["slope_jitter"])
    conf = params.get("density")
    return slope * (conf["bone_slope_factor"] if conf is not None else 1.0)


def image_calibration(params: dict) -> tuple[float, float]:
    """Slope (HU per mg/cm3) and offset (HU) of trabecular HU against BMD in this image: the
    scanner's calibration, its water offset and the beam hardening of this body (2.2.0)."""
    sc = params["scanner"]
    _, offset = calibration(sc["kvp"], sc["scanner_offset_hu"], sc["slope_jitter"])
    slope = scanner_mineral_slope(params)
    conf = params.get("density")
    if conf is not None:
        slope *= beam_hardening_factor(conf["water_diameter_cm"])
        offset += conf["water_offset_hu"]
    return slope, offset


def trabecular_hu_in_image(params: dict, level: str, bmd_mg_cm3: float) -> float:
    """Mean trabecular HU of a vertebral body as this image holds it (focal lesions aside)."""
    sc = params["scanner"]
    slope, offset = image_calibration(params)
    enhancement = CONTRAST_HU[sc["contrast_phase"]].get("marrow", 0.0) * kv_iodine_factor(sc["kvp"])
    return offset + slope * bmd_mg_cm3 + marrow_fat_hu(level_marrow_fat(params, level)) + enhancement


def qct_measurement(params: dict, level: str, bmd_mg_cm3: float) -> float:
    """BMD (mg/cm3) that phantom-calibrated QCT measures on this body (generator 2.2.0).

    The unenhanced trabecular HU in a mid-body ROI (away from focal lesions), with the ROI's error,
    against a line fitted through the calibration rods' HU on the same scan (same scanner offset and
    slope, part of the patient's beam hardening, each rod with its noise). The scanner's offset and
    slope cancel; the marrow fat error, the rest of the beam hardening and the measurement errors stay.
    Older parameters (no confounders) read as :func:`qct_reading`.
    """
    sc = params["scanner"]
    conf = params.get("density")
    fat_fraction = level_marrow_fat(params, level)
    if conf is None:
        return qct_reading(bmd_mg_cm3, sc["kvp"], sc["slope_jitter"], fat_fraction)
    slope = scanner_mineral_slope(params)
    bh_spine = beam_hardening_factor(conf["water_diameter_cm"])
    bh_rods = 1.0 - QCT_PHANTOM_BEAM_HARDENING_SHARE * (1.0 - bh_spine)
    rods = np.asarray(QCT_ROD_MG_CM3)
    rod_hu = slope * bh_rods * rods + QCT_ROD_NOISE_HU * np.asarray(conf["qct"]["rod_z"])  # offsets cancel
    fit_slope, fit_intercept = np.polyfit(rods, rod_hu, 1)
    roi_sd_mg = float(np.hypot(QCT_ROI_CV * bmd_mg_cm3, QCT_ROI_FLOOR_MG_CM3))
    roi_hu = slope * bh_spine * bmd_mg_cm3 + marrow_fat_hu(fat_fraction) + slope * roi_sd_mg * conf["qct"]["roi_z"][level]
    return float((roi_hu - fit_intercept) / fit_slope)
