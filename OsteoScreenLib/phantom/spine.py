"""Geometry of the spine: which vertebrae a subject has, where they sit and their parts.

Everything here is in *body* coordinates (mm): ``u`` towards the patient's
right, ``v`` anterior, ``w`` superior; the centre of the L1 body is at
``w = 0``. Each vertebra has a local frame (x lateral, y anterior, z along the
spine towards the head) that follows kyphosis, lordosis, scoliosis and axial
rotation.

Level names follow the counting a radiologist uses on a chest CT: the last
vertebra that bears a rib of at least ``RIB_BEARING_MIN_MM`` is the last
thoracic one (T12; T11 with 11 rib pairs; T13 with 13), and the next vertebra
is L1. A rudimentary lumbar rib shorter than that does not count, so the
vertebra carrying it is still L1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import registry

RIB_BEARING_MIN_MM = 40.0

# Position-wise base dimensions (mm): body height, width, depth, disc below; T1..L5 (17 positions).
_TL_BASE = np.array([
    (15.0, 26.0, 17.0, 4.0), (16.0, 27.0, 18.0, 4.0), (16.5, 27.0, 19.0, 4.0), (17.0, 27.5, 20.5, 4.0),
    (17.5, 28.0, 22.0, 4.5), (18.0, 29.0, 23.5, 4.5), (18.5, 30.5, 25.0, 5.0), (19.0, 32.0, 26.0, 5.0),
    (19.5, 33.5, 27.0, 5.5), (20.5, 35.5, 28.0, 6.0), (21.5, 38.0, 29.0, 7.0), (23.0, 40.5, 30.0, 8.0),
    (25.0, 42.5, 31.0, 9.0), (26.0, 44.5, 32.0, 10.0), (27.0, 46.5, 33.0, 11.0), (27.0, 48.5, 34.0, 11.0),
    (26.5, 50.0, 34.5, 10.0),
])
_CERVICAL_BASE = np.array([(13.5, 22.0, 16.0, 4.5), (14.0, 24.0, 16.5, 4.5)])  # C6, C7
_TP_LENGTH_LUMBAR = {0: 17.0, 1: 22.0, 2: 27.0, 3: 24.0, 4: 21.0, 5: 19.0}  # by lumbar index


def level_names(variant: str) -> list[str]:
    """Names from C6 down to the last lumbar vertebra for a rib variant."""
    names = ["C6", "C7"]
    if variant == "13_ribs":
        names += [f"T{i}" for i in range(1, 14)] + [f"L{i}" for i in range(1, 6)]
    elif variant == "11_ribs":
        names += [f"T{i}" for i in range(1, 12)] + [f"L{i}" for i in range(1, 7)]
    else:
        names += [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    return names


@dataclass
class Capsule:
    """A rounded rod from p0 to p1 (local mm of its vertebra) of radius r, after scaling local axes by ``scale``."""

    p0: np.ndarray
    p1: np.ndarray
    radius: float
    scale: np.ndarray  # per local axis (x, y, z) of the owning frame


@dataclass
class Vertebra:
    name: str
    level_id: int
    index: int  # 0 = C6
    center: np.ndarray  # body mm
    frame: np.ndarray  # 3x3, columns = local x, y, z in body coordinates
    half_width: float
    half_depth: float
    half_height: float
    disc_below: float
    lumbarness: float  # 0 thoracic/cervical shape, 1 lumbar shape
    concavity: float
    posterior_flattening: float
    fracture: dict | None = None
    bmd_mg_cm3: float = 0.0
    rib_length_mm: float = 0.0  # 0: no rib
    elements: list[Capsule] = field(default_factory=list)
    canal: tuple[float, float, float] = (0.0, 0.0, 0.0)  # centre y, half width, half depth (local)
    extras: dict = field(default_factory=dict)

    def to_body(self, local: np.ndarray) -> np.ndarray:
        return self.center + self.frame @ np.asarray(local, float)

    @property
    def is_lumbar(self) -> bool:
        return self.name.startswith("L")


def _profile(s, s0, s1):
    """Half-sine bump on [s0, s1], zero outside."""
    t = np.clip((s - s0) / max(s1 - s0, 1e-6), 0.0, 1.0)
    return np.sin(np.pi * t)


def build_spine(sp: dict, subject: dict, v_l1: float) -> list[Vertebra]:
    """Place every vertebra in body coordinates from the spine parameters.

    ``v_l1`` is the anterior position of the L1 body centre (set by the torso).
    """
    names = level_names(sp["rib_variant"])
    n_tl = len(names) - 2
    pos = np.linspace(0, 16, n_tl)  # position in the 17-row table
    tl = np.array([[np.interp(p, np.arange(17), _TL_BASE[:, c]) for c in range(4)] for p in pos])
    dims = np.vstack([_CERVICAL_BASE, tl]) * sp["size_scale"]
    jit = np.asarray(sp["level_jitter"], float)[: len(names)]
    dims[:, 0] *= jit[:, 0]
    dims[:, 1] *= jit[:, 1]
    dims[:, 2] *= jit[:, 2]
    dims[:, 3] *= sp["disc_scale"]
    dims[:, 3] = np.maximum(dims[:, 3], 1.0)
    fractures = {f["level"]: f for f in sp["fractures"]}
    heights = dims[:, 0].copy()
    for i, n in enumerate(names):
        f = fractures.get(n)
        if f is not None and f["type"] == "crush":
            heights[i] *= 1.0 - f["height_loss"]

    # arc length positions (top of C6 = 0, increasing downwards)
    tops = np.concatenate([[0.0], np.cumsum(heights + dims[:, 3])[:-1]])
    centers_s = tops + heights / 2
    idx = {n: i for i, n in enumerate(names)}
    first_t = idx["T1"]
    last_t = max(i for i, n in enumerate(names) if n.startswith("T"))
    first_l = last_t + 1
    s_t0, s_t1 = tops[first_t], tops[last_t] + heights[last_t]
    s_l0 = tops[first_l]
    s_l1 = tops[-1] + heights[-1] + dims[-1, 3]
    L_t, L_l = s_t1 - s_t0, s_l1 - s_l0
    amp_k = np.tan(np.radians(sp["kyphosis_deg"] / 2)) * L_t / np.pi
    amp_l = np.tan(np.radians(sp["lordosis_deg"] / 2)) * L_l / np.pi
    s_end = s_l1 + 60.0
    s = np.linspace(-20.0, s_end, 800)
    v = -amp_k * _profile(s, s_t0, s_t1) + amp_l * _profile(s, s_l0, s_l1)
    v += sp["cervical_lordosis_mm"] * np.clip((s_t0 - s) / max(s_t0, 1.0), 0, None)
    sc0 = s_t0 + sp["scoliosis_center"] * (s_l1 - s_t0) - 0.5 * sp["scoliosis_length"] * (s_l1 - s_t0)
    sc1 = sc0 + sp["scoliosis_length"] * (s_l1 - s_t0)
    u = sp["scoliosis_mm"] * _profile(s, sc0, sc1)
    du, dv = np.gradient(u, s), np.gradient(v, s)
    dw = -np.sqrt(np.clip(1.0 - du**2 - dv**2, 0.5, 1.0))
    w = np.concatenate([[0.0], np.cumsum(0.5 * (dw[1:] + dw[:-1]) * np.diff(s))])
    rot = sp["rotation_deg"] * _profile(s, s_t0 + 0.3 * L_t, s_l1) + sp["rotation_per_scoliosis_mm"] * u

    i_l1 = idx["L1"]
    s_ref = centers_s[i_l1]
    u_ref, v_ref, w_ref = (np.interp(s_ref, s, a) for a in (u, v, w))

    rng = np.random.Generator(np.random.PCG64(sp["level_bmd_seed"]))
    bmd_l1 = subject["bmd_mg_cm3"]["L1"]
    bmd_l2 = subject["bmd_mg_cm3"]["L2"]
    subj = subject["bmd_mg_cm3"]["subject_mg_cm3"]
    out: list[Vertebra] = []
    for i, name in enumerate(names):
        sc = centers_s[i]
        c = np.array([np.interp(sc, s, u) - u_ref, np.interp(sc, s, v) - v_ref + v_l1, np.interp(sc, s, w) - w_ref])
        t = np.array([np.interp(sc, s, du), np.interp(sc, s, dv), np.interp(sc, s, dw)])
        z = -t / np.linalg.norm(t)
        y = np.array([0.0, 1.0, 0.0]) - z[1] * z
        y /= np.linalg.norm(y)
        x = np.cross(y, z)
        a = np.radians(np.interp(sc, s, rot))
        x, y = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
        frame = np.column_stack([x, y, z])
        lumbarness = float(np.clip((i - last_t) / 1.0 + 0.0, 0.0, 1.0)) if i >= last_t else 0.0
        if i == last_t:
            lumbarness = 0.35
        if name == "L1":
            bmd = bmd_l1
        elif name == "L2":
            bmd = bmd_l2
        else:
            trend = 1.0 + 0.004 * (i_l1 - i)  # thoracic bodies slightly denser
            bmd = subj * trend * (1.0 + sp["level_bmd_sd"] * rng.standard_normal())
        rib = 0.0
        if name.startswith("T"):
            rib = 1.0  # full rib; length computed by the rib builder
        elif name == "L1" and sp["rib_variant"] == "lumbar_rib":
            rib = sp["lumbar_rib_length_mm"]
        vb = Vertebra(
            name=name, level_id=registry.VERSE_LEVEL_IDS[name], index=i, center=c, frame=frame,
            half_width=dims[i, 1] / 2, half_depth=dims[i, 2] / 2, half_height=heights[i] / 2,
            disc_below=dims[i, 3], lumbarness=lumbarness,
            concavity=sp["endplate_concavity_mm"] * (0.6 + 0.4 * lumbarness) * dims[i, 0] / 25.0,
            posterior_flattening=sp["posterior_concavity"] * (0.5 + lumbarness),
            fracture=fractures.get(name), bmd_mg_cm3=float(max(bmd, 10.0)), rib_length_mm=rib,
        )
        _add_posterior_elements(vb, lumbar_index=(i - first_l) if i >= first_l else -1)
        out.append(vb)
    return out


def _add_posterior_elements(vb: Vertebra, lumbar_index: int) -> None:
    b, h, t = vb.half_depth, vb.half_height, vb.lumbarness
    cervical = vb.name.startswith("C")
    canal_a = (7.5 + 4.0 * t) * (0.95 if cervical else 1.0)
    canal_b = 7.0 + 0.8 * t
    yc = -b - canal_b - 0.5
    vb.canal = (yc, canal_a, canal_b)
    r_p = 3.2 + 1.6 * t
    xp = canal_a + r_p * 0.7
    one = np.ones(3)
    el = []
    ped_scale = np.array([1.0, 1.0, r_p / (5.5 + 2.0 * t)])
    for sgn in (-1.0, 1.0):
        el.append(Capsule(np.array([sgn * xp * 0.95, -b * 0.75, h * 0.3]), np.array([sgn * xp, yc - 0.2 * canal_b, h * 0.3]),
                          r_p, ped_scale))
        lam_scale = np.array([1.0, 1.0, 3.2 / (0.55 * h + 1.0)])
        el.append(Capsule(np.array([sgn * xp, yc - 0.3 * canal_b, 0.1 * h]), np.array([sgn * 2.0, yc - canal_b - 3.0, -0.15 * h]),
                          3.2, lam_scale))
        # articular processes
        el.append(Capsule(np.array([sgn * xp * 1.02, yc - 0.4 * canal_b, 0.2 * h]),
                          np.array([sgn * xp * 1.08, yc - 0.65 * canal_b, h + 0.6 * vb.disc_below + 2.0]), 3.8, one))
        el.append(Capsule(np.array([sgn * xp * 0.8, yc - 0.95 * canal_b, -0.3 * h]),
                          np.array([sgn * xp * 0.85, yc - 1.25 * canal_b, -h - 0.5 * vb.disc_below]), 3.8, one))
        # transverse processes
        if t >= 0.5:
            ltp = _TP_LENGTH_LUMBAR.get(lumbar_index, 20.0)
            tip = np.array([sgn * (xp + ltp), yc + 3.0, 0.05 * h])
            el.append(Capsule(np.array([sgn * xp, yc - 0.1 * canal_b + 2.0, 0.15 * h]), tip, 4.5, np.array([1.0, 2.0, 0.9])))
            vb.extras[f"tp_tip_{'R' if sgn > 0 else 'L'}"] = tip  # where a full rib would meet it (rib swap)
        else:
            ltp = 16.0 if cervical else 21.0
            tip = np.array([sgn * (xp + ltp * 0.9), yc - canal_b - 6.0, 0.3 * h])
            if cervical:
                tip = np.array([sgn * (xp + ltp), yc + 6.0, 0.2 * h])
            base = np.array([sgn * xp, yc - 0.5 * canal_b, 0.3 * h])
            el.append(Capsule(base, tip, 5.0, one))
            vb.extras[f"tp_tip_{'R' if sgn > 0 else 'L'}"] = tip
    # spinous process: long and steep in the thorax, short and horizontal in the lumbar spine
    L_sp = 33.0 - 5.0 * t if not cervical else 22.0
    ang = np.radians(55.0 - 45.0 * t if not cervical else 25.0)
    p0 = np.array([0.0, yc - canal_b - 1.5, 0.0])
    p1 = p0 + L_sp * np.array([0.0, -np.cos(ang), -np.sin(ang)])
    r_sp = 6.0 + 2.0 * t
    el.append(Capsule(p0, p1, r_sp, np.array([r_sp / 2.8, 1.0, 1.0])))
    vb.elements = el  # capsule end points stay in the local frame (scaled per capsule)
    vb.extras["spinous_tip"] = vb.to_body(p1)
