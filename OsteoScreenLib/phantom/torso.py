"""Soft-tissue anatomy around the spine: body outline, fat, muscles, lungs and organs.

All positions are in body coordinates (see :mod:`spine`); sizes in mm. The
torso outline is described slice by slice along the body axis (``w``) by a
profile whose knots sit at the vertebral levels, so the organs always keep
their place relative to the spine whatever the size of the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Outer half-width and half-depth (mm) of a lean average torso at each level, arms raised.
_OUTLINE = {
    "C6": (62.0, 58.0), "C7": (100.0, 72.0), "T1": (140.0, 90.0), "T2": (150.0, 96.0), "T3": (153.0, 100.0),
    "T4": (155.0, 103.0), "T6": (157.0, 108.0), "T8": (157.0, 112.0), "T10": (154.0, 113.0),
    "T12": (149.0, 108.0), "L2": (146.0, 100.0), "L4": (150.0, 98.0), "L5": (153.0, 98.0),
}


@dataclass
class Ellipsoid:
    name: str
    tissue: str  # key of the tissue table
    center: np.ndarray  # body mm
    semi_axes: np.ndarray  # mm along u, v, w
    inside_cavity: bool = True
    wall_mm: float = 0.0
    wall_tissue: str = ""


@dataclass
class Tube:
    """A chain of capsules through body points with radii (vessels, airways, bowel)."""

    name: str
    tissue: str
    points: np.ndarray  # (n, 3) body mm
    radii: np.ndarray  # (n,)
    wall_mm: float = 0.0
    wall_tissue: str = ""


class TorsoProfile:
    """Outline and layer thicknesses of the torso as functions of the body axis ``w``."""

    def __init__(self, vertebrae, torso: dict, adiposity_fat_mm: float):
        by_name = {vb.name: vb for vb in vertebrae}
        knots = []
        for name, (a, b) in _OUTLINE.items():
            vb = by_name.get(name)
            if vb is None and name == "T12":
                vb = next(v for v in reversed(vertebrae) if v.name.startswith("T"))
            if vb is None:
                continue
            knots.append((vb.center[2], a, b, vb))
        knots.sort(key=lambda k: k[0])
        self.w = np.array([k[0] for k in knots])
        fat = torso["fat_subcut_mm"]
        ab = np.array([k[0] for k in knots])
        self.lumbar = np.array([1.0 if k[3].name.startswith("L") else 0.0 for k in knots])
        a = np.array([k[1] for k in knots]) * torso["width_scale"] + fat * (0.6 + 0.3 * self.lumbar)
        b = np.array([k[2] for k in knots]) * torso["depth_scale"] + fat * (0.55 + 0.45 * self.lumbar)
        self.a, self.b = a, b
        # spine body centre and posterior depth from body centre to the back skin
        self.v_spine = np.array([k[3].center[1] for k in knots])
        # body centre to back skin: posterior elements plus the paraspinal muscles over them
        self.depth_back = np.array([k[3].half_depth + 66.0 + 16.0 * self.lumbar[i]
                                    for i, k in enumerate(knots)]) * torso["paraspinal_scale"] ** 0.3 + fat * 0.5
        self.fat = fat
        self.fat_front_extra = torso["fat_anterior_extra"]
        self.muscle = torso["muscle_mm"]
        del ab

    def at(self, w: float) -> dict:
        """Outline at level ``w``: centre v, half axes, fat and muscle thickness (mm)."""
        a = float(np.interp(w, self.w, self.a))
        b = float(np.interp(w, self.w, self.b))
        lumbar = float(np.interp(w, self.w, self.lumbar))
        v_sp = float(np.interp(w, self.w, self.v_spine))
        back = float(np.interp(w, self.w, self.depth_back))
        vc = v_sp - back + b
        fat_post = self.fat * 0.5
        fat_ant = self.fat * (0.8 + (self.fat_front_extra - 0.8) * lumbar)
        fat_lat = self.fat * (0.8 + 0.4 * lumbar)
        return {"vc": vc, "a": a, "b": b, "fat_post": fat_post, "fat_ant": fat_ant, "fat_lat": fat_lat,
                "muscle": self.muscle * (1.0 - 0.25 * lumbar), "lumbar": lumbar, "v_spine": v_sp}

    def top(self) -> float:
        return float(self.w[-1])


def landmarks(vertebrae) -> dict:
    by = {vb.name: vb for vb in vertebrae}
    thor = [vb for vb in vertebrae if vb.name.startswith("T")]
    lum = [vb for vb in vertebrae if vb.name.startswith("L")]
    return {"by_name": by, "last_thoracic": thor[-1], "thoracic": thor, "lumbar": lum}


def build_organs(vertebrae, torso: dict, profile: TorsoProfile, phase: str, shift_mm: float = 0.0) -> dict:
    """Organs, vessels and bowel of one subject in body coordinates; ``shift_mm`` moves the diaphragm
    and the organs hung from it, the kidneys and the heart along the body axis against the spine
    (``params['viscera']``, generator 2.1.0)."""
    lm = landmarks(vertebrae)
    by = lm["by_name"]
    thor = lm["thoracic"]
    lum = lm["lumbar"]
    t = lambda i: thor[min(i, len(thor)) - 1]  # noqa: E731  T(i) by rib count from the top
    w_t = lambda i: float(t(i).center[2])  # noqa: E731
    last_t = lm["last_thoracic"]
    l1 = lum[0]
    dome_r = float(w_t(10) + 0.5 * (w_t(9) - w_t(10))) + torso["diaphragm_offset_mm"] + shift_mm
    dome_l = dome_r - 18.0
    p_l1 = profile.at(l1.center[2])
    organs: list[Ellipsoid] = []
    s = torso["liver_scale"]
    organs.append(Ellipsoid("liver", "liver", np.array([p_l1["a"] * 0.42, p_l1["vc"] + 5.0, dome_r - 70.0 * s]),
                            np.array([88.0, 85.0, 85.0]) * s))
    s = torso["spleen_scale"]
    organs.append(Ellipsoid("spleen", "spleen", np.array([-(p_l1["a"] - 55.0), p_l1["v_spine"] + 5.0, dome_l - 55.0]),
                            np.array([30.0, 50.0, 50.0]) * s))
    ko = torso["kidney_offset_mm"]
    for sgn, drop in ((1.0, 15.0), (-1.0, 0.0)):
        c = np.array([sgn * (l1.half_width + 42.0), l1.center[1] - 8.0,
                      0.5 * (l1.center[2] + by["L2"].center[2]) - drop + ko + shift_mm])
        organs.append(Ellipsoid("kidney", "kidney", c, np.array([27.0, 28.0, 52.0]), wall_mm=0.0))
        organs.append(Ellipsoid("renal_sinus", "fat", c + np.array([-sgn * 12.0, 6.0, 0.0]), np.array([10.0, 12.0, 25.0])))
    gas = torso["stomach_gas"]
    organs.append(Ellipsoid("stomach", "bowel_fluid", np.array([-55.0, p_l1["vc"] + 35.0, dome_l - 55.0]),
                            np.array([45.0, 38.0, 50.0]), wall_mm=4.0, wall_tissue="bowel_wall"))
    hs = torso["heart_scale"]
    heart_c = np.array([-22.0, by["T8"].center[1] + by["T8"].half_depth + 62.0 * hs,
                        0.5 * (w_t(8) + w_t(9)) + 10.0 + shift_mm])
    heart = Ellipsoid("heart", "heart_left", heart_c, np.array([62.0, 50.0, 55.0]) * hs, inside_cavity=False,
                      wall_mm=9.0, wall_tissue="myocardium")
    # vessels
    r = torso["aorta_radius_mm"]
    sp = lambda vb, du, dv, dw=0.0: np.array([vb.center[0] + du, vb.center[1] + vb.half_depth + dv, vb.center[2] + dw])  # noqa: E731
    t4 = t(4)
    asc_top = np.array([12.0, heart_c[1] - 10.0, w_t(4) + 12.0])
    aorta_pts = [heart_c + np.array([15.0, 5.0, 25.0 * hs]), asc_top,
                 np.array([-8.0, 0.5 * (asc_top[1] + t4.center[1] + t4.half_depth), w_t(4) + 22.0]),
                 sp(t4, -18.0, 8.0, 8.0), sp(t(6), -20.0, 6.0), sp(t(9), -17.0, 6.0), sp(last_t, -8.0, 10.0)]
    aorta_r = [r * 1.15, r * 1.15, r * 1.05, r, r, r * 0.95, r * 0.9]
    for vb in lum[:4]:
        aorta_pts.append(sp(vb, -10.0, 7.0 + 0.0, 0.0))
        aorta_r.append(r * 0.8)
    tubes = [Tube("aorta", "aorta", np.array(aorta_pts), np.array(aorta_r))]
    ivc_pts = [sp(vb, 24.0, 4.0) for vb in lum[:4][::-1]] + [sp(last_t, 28.0, 25.0), heart_c + np.array([35.0, -20.0, -25.0])]
    tubes.append(Tube("ivc", "vein", np.array(ivc_pts), np.full(len(ivc_pts), 11.0)))
    carina = sp(t(5), 2.0, 18.0)
    tr_top = sp(by.get("C6", t(1)), 0.0, 12.0, 40.0)
    tubes.append(Tube("trachea", "air", np.array([tr_top, sp(t(2), 0.0, 16.0), carina]), np.array([9.0, 9.0, 9.0]),
                      wall_mm=2.0, wall_tissue="muscle"))
    for sgn in (1.0, -1.0):
        tubes.append(Tube("bronchus", "air", np.array([carina, carina + np.array([sgn * 30.0, -5.0, -22.0])]),
                          np.array([6.5, 5.5]), wall_mm=1.5, wall_tissue="muscle"))
    eso = [sp(t(1), -6.0, 3.0), sp(t(5), -8.0, 2.0), sp(t(9), -10.0, 8.0), sp(last_t, -25.0, 25.0)]
    tubes.append(Tube("esophagus", "muscle", np.array(eso), np.array([7.0, 7.0, 7.0, 8.0])))

    rng = np.random.Generator(np.random.PCG64(torso["vessel_seed"]))
    tubes += _lung_vessels(rng, carina, heart_c, phase)
    rng = np.random.Generator(np.random.PCG64(torso["bowel_seed"]))
    bowel = _bowel(rng, torso, profile, l1, lum, dome_l)
    return {"organs": organs, "heart": heart, "tubes": tubes, "bowel": bowel, "dome_r": dome_r, "dome_l": dome_l,
            "stomach_gas": gas, "psoas_top": float(l1.center[2] + l1.half_height),
            "lung_apex": float(w_t(1) + 25.0)}


def _lung_vessels(rng, carina, heart_c, phase) -> list[Tube]:
    tubes = []
    for sgn in (1.0, -1.0):
        hilum = carina + np.array([sgn * 45.0, -5.0, -25.0])
        stack = [(hilum, np.array([sgn, 0.1, 0.0]), 8.0, 0)]
        while stack:
            p, d, r, depth = stack.pop()
            length = 18.0 + 10.0 * rng.uniform() + 4.0 * r
            d = d + 0.35 * rng.standard_normal(3)
            d /= np.linalg.norm(d)
            q = p + d * length
            tubes.append(Tube("lung_vessel", "lung_vessel", np.array([p, q]), np.array([r, r * 0.85])))
            if depth < 5 and r > 1.2:
                for _ in range(2 if depth > 0 else 6):
                    nd = d + 0.8 * rng.standard_normal(3)
                    if depth == 0:
                        nd = np.array([sgn * 0.6, rng.uniform(-1, 1), rng.uniform(-1.2, 1.0)])
                    stack.append((q, nd / np.linalg.norm(nd), r * 0.72, depth + 1))
    return tubes


def _bowel(rng, torso, profile, l1, lum, dome_l) -> list[Ellipsoid]:
    out = []
    w_lo = float(lum[-1].center[2]) - 30.0
    w_hi = float(l1.center[2]) + 25.0
    for _ in range(torso["bowel_count"]):
        w = rng.uniform(w_lo, w_hi)
        p = profile.at(w)
        ang = rng.uniform(-np.pi * 0.95, np.pi * 0.95)
        rad = np.sqrt(rng.uniform(0.15, 1.0))
        u = np.sin(ang) * rad * (p["a"] - p["fat_lat"] - 35.0)
        v = p["vc"] + 15.0 + np.cos(ang) * rad * (p["b"] - p["fat_ant"] - 30.0) * 0.8
        if v < p["v_spine"] + 15.0 and abs(u) < 80.0:
            v = p["v_spine"] + 30.0 + rng.uniform(0, 30)
        size = rng.uniform(9.0, 24.0)
        semi = size * np.array([rng.uniform(0.7, 1.5), rng.uniform(0.7, 1.3), rng.uniform(0.8, 2.2)])
        content = "air" if rng.uniform() < torso["bowel_gas_fraction"] else ("bowel_fluid" if rng.uniform() < 0.6 else "feces")
        out.append(Ellipsoid("bowel", content, np.array([u, v, w]), semi, wall_mm=2.5, wall_tissue="bowel_wall"))
    return out
