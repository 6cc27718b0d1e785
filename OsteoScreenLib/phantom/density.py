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


def trabecular_hu(bmd_mg_cm3: float, kvp: int, scanner_offset_hu: float, slope_jitter: float,
                  marrow_fat_fraction: float, contrast_phase: str) -> float:
    """Mean trabecular HU of a vertebral body of known BMD on one scanner."""
    slope, offset = calibration(kvp, scanner_offset_hu, slope_jitter)
    fat = MARROW_FAT_HU_PER_FRACTION * (marrow_fat_fraction - REFERENCE_MARROW_FAT_FRACTION)
    enhancement = CONTRAST_HU[contrast_phase].get("marrow", 0.0) * kv_iodine_factor(kvp)
    return offset + slope * bmd_mg_cm3 + fat + enhancement


def qct_reading(bmd_mg_cm3: float, kvp: int, slope_jitter: float, marrow_fat_fraction: float) -> float:
    """BMD that single-energy QCT reads on this body (mg/cm3): the paper's reference standard.

    QCT converts the trabecular HU of an unenhanced scan to BMD through a calibration phantom
    scanned with the patient, which removes the scanner's offset and slope but not the marrow fat:
    fat above the calibration's reference fraction reads as missing mineral (the fat error of
    single-energy QCT, larger in the elderly). The ACR thresholds apply to this reading.
    """
    slope, _ = calibration(kvp, 0.0, slope_jitter)
    fat = MARROW_FAT_HU_PER_FRACTION * (marrow_fat_fraction - REFERENCE_MARROW_FAT_FRACTION)
    return bmd_mg_cm3 + fat / slope


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
