"""Ribs and costal cartilages as chains of capsules in body coordinates.

A rib starts at the head beside the upper end of its vertebral body, passes
the tip of the transverse process, turns at the rib angle lateral to the
paraspinal muscles and runs inside the chest wall towards the front while it
descends. Ribs 1-7 reach the sternum through their cartilage, 8-10 end at the
costal margin, 11 and 12 float. A rudimentary lumbar rib is a short stub at
the tip of the L1 transverse process.

From generator 1.1.0 the lower ribs run down and out from the tubercle, steeper the lower
the rib (``LOWER_RIB_DESCENT_DEG``), as on real CT, where the 11th and 12th ribs lie beside
the next one or two vertebrae; the lowest two pairs are also thinner and fainter, and the
last one shorter, by the case's ``params['lower_ribs']``.

From generator 2.1.0 the front of the lower ribs and the costal margin lie as low as in real
adults: the transpyloric plane (L1) crosses the tips of the 9th costal cartilages and the subcostal
plane, through the lowest point of the costal margin (the 10th costal cartilage), lies at L2-L3
(standard surface anatomy; on the real chest CT at hand the 10th rib and the cartilages end 25-27 mm
below L1's centre). Up to 2.0.0 the 10th cartilage ended beside T12-L1 and the 9th beside T12, so
few ribs crossed the axial slices of L1 and L2 (``training/results/realism_chest.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .torso import TorsoProfile

RIB_HALF_THICKNESS_MM = 3.3
RIB_HALF_HEIGHT_MM = 6.0
# (end angle of the bony rib as a fraction of pi from the back, drop at the front in mm)
_RIB_SHAPE = {1: (0.78, 18.0), 2: (0.82, 42.0), 3: (0.84, 58.0), 4: (0.84, 66.0), 5: (0.84, 72.0), 6: (0.83, 76.0),
              7: (0.82, 78.0), 8: (0.78, 76.0), 9: (0.74, 72.0), 10: (0.7, 66.0), 11: (0.56, 48.0), 12: (0.42, 30.0),
              13: (0.3, 18.0)}
# Slope below the horizontal on a coronal view, from the tubercle outwards (degrees, by rib shape
# number; measured on the real abdominal CT at hand: its 12th rib lies at L1's centre 75-85 mm
# beside the spine), and the share of the 1.0.0 drop at the front that a rib keeps beside it:
# ribs 1-8 run as before.
LOWER_RIB_DESCENT_DEG = {8: 0.0, 9: 6.0, 10: 12.0, 11: 22.0, 12: 33.0, 13: 37.0}
LEVEL_BEYOND_TUBERCLE_MM = 20.0  # the rib bends down from level over twice this distance out of the tubercle
_FRONT_DROP_KEPT = {8: 1.0, 9: 0.7, 10: 0.5, 11: 0.0, 12: 0.0, 13: 0.0}
MAX_DESCENT_DEG = 60.0
# The share of params['lower_ribs']['costal_margin_drop_mm'] by which the front of each lower rib
# runs lower than in 2.0.0 (by rib shape number; none above the 8th): the costal margin slopes down
# to the 10th costal cartilage, and the floating 11th and 12th ribs' tips follow it part of the way.
COSTAL_MARGIN_SHARE = {7: 0.0, 8: 0.4, 9: 0.75, 10: 1.0, 11: 0.6, 12: 0.3, 13: 0.2}


@dataclass
class Rib:
    vertebra: str
    side: str  # "R" or "L"
    number: int
    points: np.ndarray  # (n, 3) body mm, bony part
    cartilage: np.ndarray | None  # (m, 3) body mm or None
    thickness_scale: float = 1.0  # times RIB_HALF_THICKNESS_MM
    density_scale: float = 1.0  # 1: bone as the other ribs; less: part of the way to the muscle around it

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


def _interp(table: dict, x: float) -> float:
    return float(np.interp(x, list(table), list(table.values())))


def _lateral(out_mm):
    """How much of a rib's course ``out_mm`` out of the tubercle counts towards its descent: the rib
    bends down from level over twice LEVEL_BEYOND_TUBERCLE_MM, smoothly (no kink)."""
    bend = LEVEL_BEYOND_TUBERCLE_MM
    return np.where(out_mm < 2 * bend, np.asarray(out_mm, float) ** 2 / (4 * bend), np.asarray(out_mm, float) - bend)


def build_ribs(vertebrae, profile: TorsoProfile, ribs_scale: float = 1.0, lower: dict | None = None,
               full_ribs_on: tuple[str, ...] = ()) -> list[Rib]:
    """The ribs of a spine; ``lower`` is ``params['lower_ribs']`` (None: the level ribs of 1.0.0);
    ``full_ribs_on``: lumbar vertebrae given a full rib pair, numbered on from the last thoracic
    one (the rib-swap preset), instead of a rudimentary stub."""
    out = []
    n_thoracic = sum(1 for vb in vertebrae if vb.name.startswith("T"))
    for vb in vertebrae:
        if vb.rib_length_mm <= 0:
            continue
        number = int(vb.name[1:]) if vb.name.startswith("T") else 0
        if vb.name in full_ribs_on:
            number = n_thoracic + 1 + full_ribs_on.index(vb.name)
        for sgn, side in ((1.0, "R"), (-1.0, "L")):
            head = vb.to_body([sgn * (vb.half_width + 1.5), -vb.half_depth * 0.55, vb.half_height * 0.55])
            tip_local = vb.extras.get(f"tp_tip_{side}")
            if number == 0:  # lumbar rib stub at the transverse process tip
                base = vb.to_body([sgn * (vb.half_width + 14.0), -vb.half_depth - 6.0, 0.0])
                end = base + vb.frame @ np.array([sgn * vb.rib_length_mm, -0.3 * vb.rib_length_mm, -0.2 * vb.rib_length_mm])
                out.append(Rib(vb.name, side, 0, np.array([base, end]), None))
                continue
            tubercle = vb.to_body(tip_local + np.array([0.0, 5.0, 0.0]))
            # scale the rib number so 11 or 13 pairs still end with floating ribs
            shape_n = number if n_thoracic == 12 else (number * 12.0 / n_thoracic)
            if n_thoracic == 13 and number == 13:
                shape_n = 13
            end_frac = float(np.interp(shape_n, list(_RIB_SHAPE), [v[0] for v in _RIB_SHAPE.values()]))
            drop = float(np.interp(shape_n, list(_RIB_SHAPE), [v[1] for v in _RIB_SHAPE.values()])) * ribs_scale
            w0 = tubercle[2]
            p = profile.at(w0)
            a_in = p["a"] - p["fat_lat"] - p["muscle"] * 0.6 - RIB_HALF_THICKNESS_MM
            b_in = p["b"] - 0.5 * (p["fat_post"] + p["fat_ant"]) - p["muscle"] * 0.6 - RIB_HALF_THICKNESS_MM
            if number == 1:
                a_in *= 0.62
                b_in *= 0.72
            elif number == 2:
                a_in *= 0.85
                b_in *= 0.88
            slope, keep, margin = 0.0, 1.0, 0.0
            if lower is not None:
                margin = lower.get("costal_margin_drop_mm", 0.0) * _interp(COSTAL_MARGIN_SHARE, max(shape_n, 7))
                deg = min(_interp(LOWER_RIB_DESCENT_DEG, shape_n) * lower["descent_scale"], MAX_DESCENT_DEG)
                slope, keep = float(np.tan(np.radians(deg))), _interp(_FRONT_DROP_KEPT, shape_n)
            # the course in the chest wall starts beyond the tubercle
            start_x = abs(tubercle[0]) + 22.0
            th_angle = float(np.arcsin(np.clip(start_x / a_in, 0.05, 0.9)))
            th_end = end_frac * np.pi
            if lower is not None and number == n_thoracic:
                th_end = th_angle + (th_end - th_angle) * lower["last_rib_extent"]
            th = np.linspace(th_angle, th_end, 28)
            frac = (th - th_angle) / max(th_end - th_angle, 1e-6)
            # how far out of the tubercle the rib has come (the slope is its course on a coronal view)
            out_mm = np.maximum.accumulate(np.maximum(a_in * np.sin(th) - abs(tubercle[0]), 0.0))
            lateral = _lateral(out_mm)
            pts = [head, tubercle]
            for f, ang, s in zip(frac, th, lateral):
                w = w0 + keep * (4.0 * np.sin(np.pi * min(f * 3, 1.0)) - drop * f ** 1.4) - slope * s - margin * f ** 1.4
                q = profile.at(w)
                vc = q["vc"] + 0.5 * (q["fat_post"] - q["fat_ant"])
                pts.append(np.array([sgn * a_in * np.sin(ang), vc - b_in * np.cos(ang), w]))
            pts = np.array(pts)
            cart = None
            if shape_n <= 10.5:
                last = pts[-1]
                if shape_n <= 7.5:  # to the sternum
                    ang = np.linspace(end_frac * np.pi, np.pi * 0.95, 6)
                    wc = last[2] + np.linspace(0, 1, 6) * (8.0 if shape_n > 3 else 2.0)
                else:  # to the costal margin, rising
                    ang = np.linspace(end_frac * np.pi, np.pi * 0.88, 6)
                    wc = last[2] + np.linspace(0, 1, 6) * 25.0
                q = profile.at(last[2])
                vc = q["vc"] + 0.5 * (q["fat_post"] - q["fat_ant"])
                cart = np.array([[sgn * a_in * np.sin(a), vc - b_in * np.cos(a), z] for a, z in zip(ang, wc)])
            thin = lower is not None and number >= n_thoracic - 1  # the lowest two pairs
            out.append(Rib(vb.name, side, number, pts, cart,
                           lower["lower_thickness_scale"] if thin else 1.0, lower["lower_density_scale"] if thin else 1.0))
    return out
