"""Random sampling of every phantom parameter from a seed (nothing is rendered here).

``sample_parameters(seed, preset)`` returns a plain, JSON-serialisable dict; the
deterministic renderer turns it into images. Keeping the two apart lets tests
and users set any parameter to an extreme value and render that.
"""

from __future__ import annotations

import numpy as np

from .. import registry
from . import chest_wall
from . import density
from .density import sample_bmd
from .presets import PRESETS

GENERATOR_VERSION = "2.2.0"

KVP_CHOICES = registry.TUBE_VOLTAGES_KVP
KVP_P = (0.07, 0.25, 0.58, 0.10)
THICKNESS_CHOICES_MM = (0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
THICKNESS_P = (0.08, 0.14, 0.26, 0.07, 0.1, 0.1, 0.1, 0.15)
CONTRAST_CHOICES = ("none", "portal", "arterial")
CONTRAST_P = (0.5, 0.35, 0.15)
RIB_VARIANTS = ("normal", "13_ribs", "11_ribs", "lumbar_rib")
RIB_VARIANT_P = (0.91, 0.03, 0.03, 0.03)
FRACTURE_TYPES = ("wedge", "biconcave", "crush")
# Fractures cluster at the mid-thoracic and the thoracolumbar junction.
FRACTURE_SITES = ("T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4")
FRACTURE_SITE_W = (0.5, 0.9, 0.9, 0.6, 0.6, 0.9, 1.4, 1.4, 0.9, 0.6, 0.4)
# Chance that a subject has at least one fracture, by QCT class of L1-L2.
FRACTURE_RISK = {"normal": 0.04, "osteopenia": 0.12, "osteoporosis": 0.35}
BOX_STREAM = 0x626F78  # second seed word of the random stream of a box preset's offset ("box")
RIB_STREAM = 0x726962  # second seed word of the stream of the lower ribs' look ("rib"; added in 1.1.0)
SWAP_STREAM = 0x737770  # second seed word of the stream of a rib-swap preset's change ("swp")
CHEST_WALL_STREAM = 0x636877  # second seed word of the stream of the 2.0 chest wall, arms, table, circle ("chw")
VISCERA_STREAM = 0x766973  # second seed word of the stream of the 2.1 organs' height against the spine ("vis")
DENSITY_STREAM = 0x646E73  # second seed word of the stream of the 2.2 density confounders ("dns")


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _n(rng, mean, sd, lo, hi) -> float:
    return float(np.clip(mean + sd * rng.standard_normal(), lo, hi))


def _choice(rng, options, p=None):
    p = None if p is None else np.asarray(p, float) / np.sum(p)
    return options[int(rng.choice(len(options), p=p))]


def sample_subject(rng: np.random.Generator) -> dict:
    """Age, sex, adiposity and L1/L2 BMD; a target class first keeps the classes balanced."""
    target = _choice(rng, registry.CLASSES)
    for _ in range(400):
        sex = _choice(rng, ("F", "M"))
        age = _u(rng, 22.0, 92.0)
        bmd = sample_bmd(rng, age, sex)
        mean = 0.5 * (bmd["L1"] + bmd["L2"])
        if registry.qct_class(mean) == target:
            break
    marrow_fat = _n(rng, 0.25 + 0.45 * (age - 20.0) / 70.0 - 0.0008 * (bmd["subject_mg_cm3"] - 120.0),
                    0.07, 0.1, 0.85)
    return {
        "target_class": target,
        "sex": sex,
        "age_years": round(age, 2),
        "adiposity": _u(rng, 0.0, 1.0),
        "bmd_mg_cm3": bmd,
        "marrow_fat_fraction": marrow_fat,
    }


def sample_spine(rng: np.random.Generator, subject: dict) -> dict:
    variant = _choice(rng, RIB_VARIANTS, RIB_VARIANT_P)
    n_tl = 18 if variant == "13_ribs" else 17
    sex_scale = 1.04 if subject["sex"] == "M" else 0.96
    bmd = subject["bmd_mg_cm3"]["subject_mg_cm3"]
    cls = registry.qct_class(0.5 * (subject["bmd_mg_cm3"]["L1"] + subject["bmd_mg_cm3"]["L2"]))
    fractures = []
    if rng.uniform() < FRACTURE_RISK[cls]:
        for _ in range(1 + int(rng.uniform() < 0.35) + int(rng.uniform() < 0.1)):
            site = _choice(rng, FRACTURE_SITES, FRACTURE_SITE_W)
            if any(f["level"] == site for f in fractures):
                continue
            fractures.append({
                "level": site,
                "type": _choice(rng, FRACTURE_TYPES, (0.55, 0.3, 0.15)),
                "height_loss": _u(rng, 0.15, 0.45),  # Genant grade 1-3
            })

    def few(levels, rate, make):
        return [make(lv) for lv in levels if rng.uniform() < rate]

    lumbar = ["T10", "T11", "T12", "L1", "L2", "L3", "L4"]
    age_f = np.clip((subject["age_years"] - 35.0) / 50.0, 0.0, 1.0)
    return {
        "rib_variant": variant,
        "lumbar_rib_length_mm": _u(rng, 12.0, 35.0) if variant == "lumbar_rib" else 0.0,
        "thoracolumbar_count": n_tl,
        "size_scale": _n(rng, sex_scale, 0.045, 0.82, 1.2),
        "level_jitter": [[_n(rng, 1.0, 0.025, 0.93, 1.07) for _ in range(3)] for _ in range(n_tl + 3)],
        "disc_scale": _n(rng, 1.0 - 0.25 * age_f, 0.1, 0.45, 1.3),
        "kyphosis_deg": _n(rng, 38.0 + 12.0 * age_f, 9.0, 15.0, 75.0),
        "lordosis_deg": _n(rng, 48.0, 10.0, 20.0, 75.0),
        "cervical_lordosis_mm": _u(rng, 0.0, 15.0),
        "scoliosis_mm": _n(rng, 0.0, 5.0, -18.0, 18.0),
        "scoliosis_center": _u(rng, 0.3, 0.8),
        "scoliosis_length": _u(rng, 0.3, 0.7),
        "rotation_deg": _n(rng, 0.0, 2.5, -8.0, 8.0),
        "rotation_per_scoliosis_mm": _u(rng, 0.1, 0.4),
        "cortex_mm": _n(rng, 0.55 + 0.4 * np.clip(bmd / 200.0, 0, 1), 0.1, 0.35, 1.2),
        "endplate_mm": _n(rng, 0.6 + 0.3 * np.clip(bmd / 200.0, 0, 1), 0.1, 0.35, 1.2),
        "endplate_concavity_mm": _n(rng, 1.6, 0.5, 0.3, 3.5),
        "posterior_concavity": _u(rng, 0.05, 0.2),
        "texture_seed": int(rng.integers(0, 2**31 - 1)),
        "texture_period_mm": _n(rng, 2.6, 0.3, 1.8, 3.6),
        "texture_contrast": _n(rng, 0.35 + 0.25 * (1 - np.clip(bmd / 200, 0, 1)), 0.06, 0.15, 0.75),
        "level_bmd_sd": _u(rng, 0.02, 0.06),
        "level_bmd_seed": int(rng.integers(0, 2**31 - 1)),
        "basivertebral_vein": rng.uniform() < 0.7,
        "fractures": fractures,
        "endplate_sclerosis": few(lumbar, 0.04 + 0.2 * age_f, lambda lv: {
            "level": lv, "side": _choice(rng, ("upper", "lower")), "thickness_mm": _u(rng, 1.5, 4.0),
            "extra_hu": _u(rng, 150.0, 450.0)}),
        "osteophytes": few(lumbar + ["T6", "T7", "T8", "T9"], 0.05 + 0.35 * age_f, lambda lv: {
            "level": lv, "side": _choice(rng, ("upper", "lower")), "angle_deg": _u(rng, -110.0, 110.0),
            "length_mm": _u(rng, 2.0, 8.0), "width_deg": _u(rng, 20.0, 70.0)}),
        "bone_islands": few(["T11", "T12", "L1", "L2", "L3"], 0.03, lambda lv: {
            "level": lv, "position": [_u(rng, -0.5, 0.5), _u(rng, -0.4, 0.5), _u(rng, -0.5, 0.5)],
            "radius_mm": _u(rng, 1.5, 5.0), "hu": _u(rng, 700.0, 1300.0)}),
        "schmorl_nodes": few(lumbar, 0.05, lambda lv: {
            "level": lv, "side": _choice(rng, ("upper", "lower")),
            "position": [_u(rng, -0.4, 0.4), _u(rng, -0.4, 0.3)], "radius_mm": _u(rng, 2.5, 6.0),
            "depth_mm": _u(rng, 2.0, 6.0)}),
    }


def sample_torso(rng: np.random.Generator, subject: dict) -> dict:
    adip = subject["adiposity"]
    female = subject["sex"] == "F"
    return {
        "width_scale": _n(rng, (0.94 if female else 1.02) * (1 + 0.22 * adip), 0.05, 0.78, 1.45),
        "depth_scale": _n(rng, (0.95 if female else 1.0) * (1 + 0.28 * adip), 0.05, 0.75, 1.5),
        "fat_subcut_mm": _n(rng, 6.0 + 35.0 * adip ** 1.3 * (1.25 if female else 0.9), 3.0, 2.0, 70.0),
        "fat_anterior_extra": _u(rng, 1.0, 1.7),
        "visceral_fat": _n(rng, (0.25 if female else 0.4) + 0.5 * adip, 0.1, 0.05, 0.95),
        "muscle_mm": _n(rng, 13.0 if female else 16.0, 3.0, 6.0, 26.0),
        "muscle_quality": _u(rng, 0.0, 1.0),  # fatty infiltration of muscles with age
        "paraspinal_scale": _n(rng, 1.0, 0.12, 0.65, 1.4),
        "psoas_scale": _n(rng, 1.05 if not female else 0.9, 0.15, 0.55, 1.5),
        "diaphragm_offset_mm": _n(rng, 0.0, 12.0, -35.0, 35.0),
        "lung_hu_offset": _n(rng, 0.0, 35.0, -80.0, 120.0),
        "heart_scale": _n(rng, 1.0, 0.1, 0.75, 1.35),
        "aorta_radius_mm": _n(rng, 12.5 + 2.5 * (subject["age_years"] - 50) / 40, 1.5, 8.5, 19.0),
        "liver_scale": _n(rng, 1.0, 0.1, 0.7, 1.35),
        "liver_fat_hu": _n(rng, 0.0, 10.0, -45.0, 10.0),
        "spleen_scale": _n(rng, 1.0, 0.15, 0.6, 1.6),
        "kidney_offset_mm": _n(rng, 0.0, 10.0, -30.0, 30.0),
        "stomach_gas": _u(rng, 0.0, 0.8),
        "bowel_seed": int(rng.integers(0, 2**31 - 1)),
        "bowel_count": int(rng.integers(12, 34)),
        "bowel_gas_fraction": _u(rng, 0.1, 0.6),
        "vessel_seed": int(rng.integers(0, 2**31 - 1)),
        "arms": "down" if rng.uniform() < 0.12 else "up",
        "costal_cartilage_calcification": float(np.clip((subject["age_years"] - 30) / 60, 0, 1) * rng.uniform()),
        "table_height_mm": _u(rng, 0.0, 20.0),
    }


def sample_scanner(rng: np.random.Generator, preset: str) -> dict:
    kvp = int(_choice(rng, KVP_CHOICES, KVP_P))
    thickness = float(_choice(rng, THICKNESS_CHOICES_MM, THICKNESS_P))
    spacing = thickness
    if thickness >= 1.0 and rng.uniform() < 0.2:
        spacing = thickness * _choice(rng, (0.5, 0.8))
    low_dose = rng.uniform() < 0.25
    base = float(np.exp(rng.uniform(np.log(9.0), np.log(24.0))))
    if low_dose:
        base *= _u(rng, 1.5, 2.4)
    streaks = []
    if rng.uniform() < 0.25:
        for _ in range(int(rng.integers(1, 4))):
            streaks.append({"z_center": _u(rng, 0.0, 1.0), "z_extent_mm": _u(rng, 10.0, 60.0),
                            "angle_deg": _n(rng, 0.0, 25.0, -70.0, 70.0), "amplitude_hu": -_u(rng, 15.0, 70.0),
                            "width_mm": _u(rng, 3.0, 12.0)})
    return {
        "kvp": kvp,
        "scanner_offset_hu": _n(rng, 0.0, 6.0, -18.0, 18.0),
        "slope_jitter": _n(rng, 1.0, 0.04, 0.9, 1.1),
        "fat_offset_hu": _n(rng, 0.0, 5.0, -15.0, 15.0),
        "muscle_offset_hu": _n(rng, 0.0, 4.0, -12.0, 12.0),
        "contrast_phase": _choice(rng, CONTRAST_CHOICES, CONTRAST_P),
        "kernel_sigma_mm": _u(rng, 0.4, 0.8),
        "slice_thickness_mm": thickness,
        "slice_spacing_mm": float(spacing),
        "low_dose": bool(low_dose),
        "noise_sd_hu_at_2.5mm": base,
        "noise_grain_mm": _u(rng, 0.7, 1.3),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
        "streaks": streaks,
    }


def sample_pose(rng: np.random.Generator) -> dict:
    return {
        "offset_lr_mm": _n(rng, 0.0, 15.0, -45.0, 45.0),
        "offset_ap_mm": _n(rng, -5.0, 15.0, -45.0, 45.0),
        "pitch_deg": _n(rng, 0.0, 3.0, -9.0, 9.0),
        "roll_deg": _n(rng, 0.0, 2.0, -6.0, 6.0),
        "yaw_deg": _n(rng, 0.0, 2.0, -6.0, 6.0),
        "table_z_mm": _u(rng, -400.0, 0.0),
    }


def sample_fov(rng: np.random.Generator, preset: str) -> dict:
    spec = PRESETS[preset]
    top_names = list(spec["top_levels"])
    top = _choice(rng, top_names, [spec["top_levels"][n] for n in top_names])
    lv0, f0, lv1, f1 = spec["bottom"]
    fov = {
        "top": {"level": top, "fraction": _u(rng, 0.0, 1.0)},
        # bottom: a position between (lv0, f0) and (lv1, f1), as a fraction of that span
        "bottom_position": _u(rng, 0.0, 1.0),
        "center_jitter_mm": [_n(rng, 0.0, 12.0, -30.0, 30.0), _n(rng, 0.0, 12.0, -30.0, 30.0)],
    }
    if spec.get("field_of_view") == "chest":
        fov["dfov_margin_mm"] = _u(rng, *spec["dfov_margin_mm"])  # display FOV = body width + margin
    elif preset == "spine":
        fov["pixel_mm"] = _u(rng, *spec["pixel_mm"])
        fov["crop_width_mm"] = _u(rng, *spec["crop_width_mm"])
        fov["orientation"] = _choice(rng, ("axial", "sagittal_slab"), (0.6, 0.4))
        fov["slab_mm"] = _choice(rng, (1.0, 2.0, 3.0))
    return fov


def sample_lower_ribs(rng: np.random.Generator) -> dict:
    """How the lowest rib pairs run and look (generator 1.1.0). Real 11th and 12th ribs run steeply
    down and out from their heads, past the next vertebrae (a coronal view of a real abdominal CT
    shows them beside L1), are shorter and thinner than the ribs above and often faint; in 1.0.0
    they ran level and were as thick as the others."""
    return {
        "descent_scale": _n(rng, 1.0, 0.2, 0.6, 1.4),  # times the posterior slope of ribs.LOWER_RIB_DESCENT_DEG
        "last_rib_extent": _u(rng, 0.7, 1.05),  # the last rib's length, times that of 1.0.0
        "lower_thickness_scale": _u(rng, 0.6, 1.0),  # the lowest two pairs
        "lower_density_scale": _u(rng, 0.45, 1.0),  # from bone towards the muscle around them
        # generator 2.1.0 (drawn last: the draws above are 2.0.0's): how far the front of ribs 8-12
        # runs lower than 2.0.0's, at the 10th rib (ribs.COSTAL_MARGIN_SHARE for the others); see
        # ribs.py for the anatomy
        "costal_margin_drop_mm": _u(rng, 20.0, 75.0),
    }


def sample_viscera(rng: np.random.Generator) -> dict:
    """Where the organs lie along the body axis against the spine (generator 2.1.0). Up to 2.0.0 the
    diaphragm, liver, spleen, stomach, kidneys and heart were placed from the vertebrae counted by
    their ribs (dome at T9-T10 +- 12 mm, kidneys at the L1-L2 disc +- 10 mm), so a network could find
    L1 from the organs alone; on real CT they move against the spine by a vertebra or more between
    people and with breathing (the renal hila at L1-L2, the right dome from T8 to T11 in standard
    anatomy; the real chest CT at hand has its kidneys' centres beside L2). One shift moves them all,
    on top of each organ's own offset."""
    return {"shift_mm": _n(rng, 0.0, 20.0, -45.0, 45.0)}


def sample_rib_swap(rng: np.random.Generator) -> dict:
    """Ribs moved between vertebrae for the rib-swap preset: the ribs of the lowest one or two
    rib-bearing vertebrae removed, or a full rib pair (as a 13th pair: short, thin, steep) given to L1."""
    kind = _choice(rng, ("drop_one", "drop_two", "add_l1"), (0.35, 0.3, 0.35))
    return {"drop_lowest": {"drop_one": 1, "drop_two": 2}.get(kind, 0), "full_ribs_on": ["L1"] if kind == "add_l1" else []}


def sample_parameters(seed: int, preset: str = "chest") -> dict:
    """Every random choice of one case, drawn from ``seed`` (numpy PCG64)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    subject = sample_subject(rng)
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "preset": preset,
        "subject": subject,
        "spine": sample_spine(rng, subject),
        "torso": sample_torso(rng, subject),
        "scanner": sample_scanner(rng, preset),
        "pose": sample_pose(rng),
        "fov": sample_fov(rng, preset),
    }
    # from a stream of its own, so every other parameter of a seed is what 1.0.0 drew
    params["lower_ribs"] = sample_lower_ribs(np.random.Generator(np.random.PCG64([int(seed), RIB_STREAM])))
    # generator 2.1: the organs' height against the spine (own stream too)
    params["viscera"] = sample_viscera(np.random.Generator(np.random.PCG64([int(seed), VISCERA_STREAM])))
    # generator 2.0: shoulder girdle, arms, great veins, table and reconstruction circle (own stream too)
    params["chest_wall"] = chest_wall.sample(np.random.Generator(np.random.PCG64([int(seed), CHEST_WALL_STREAM])),
                                             subject)
    # generator 2.2: density confounders (own stream too: anatomy and true density stay 2.1.0's)
    params["density"] = density.sample_confounders(np.random.Generator(np.random.PCG64([int(seed), DENSITY_STREAM])),
                                                   subject, params["torso"])
    fixed_slice = PRESETS[preset].get("slice_mm")
    if fixed_slice:  # drawn like the others (same random stream), then fixed
        params["scanner"]["slice_thickness_mm"] = params["scanner"]["slice_spacing_mm"] = float(fixed_slice)
    if PRESETS[preset].get("rib_swap"):  # from a stream of its own: otherwise the parent preset's case
        params["rib_swap"] = sample_rib_swap(np.random.Generator(np.random.PCG64([int(seed), SWAP_STREAM])))
    jitter = PRESETS[preset].get("box_jitter_mm")
    if jitter is not None:  # from a stream of its own: the case stays the parent preset's case of this seed
        box_rng = np.random.Generator(np.random.PCG64([int(seed), BOX_STREAM]))
        params["fov"]["box_offset_mm"] = [_u(box_rng, -jitter, jitter) for _ in range(3)]
    return params
