"""What a real chest CT shows around the thorax that generator 1.x left out (generator 2.0).

Shoulder girdle and arms (scapulae, clavicles, sternum, humeri in arms of soft tissue, raised
or down by the side), the great veins and the portal vein whose contrast follows the phase, the
patient table with its pad, and the reconstruction circle with the vendor's padding value
outside it. On a real chest CT these are the bright or large structures beside and in front of
the spine that a level finder trained without them mistakes for vertebrae (a humeral head,
a contrast-filled superior vena cava, the sternum) or that a reader refuses (-3024 padding).

Bones and soft tissue are placed in body coordinates (u: patient right, v: anterior, w:
superior; see :mod:`spine`) relative to the spine and the torso outline, so they keep their
place whatever the size of the subject. The table and the circle belong to the scanner and are
placed in world coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shapes import coverage
from .torso import Ellipsoid, TorsoProfile, Tube

# Vendor padding values written outside the reconstruction circle (DICOM PixelPaddingValue, in HU)
# and how often each is drawn; -1024 is air, indistinguishable from the room around the patient.
PADDING_VALUES_HU = (-1024, -2000, -2048, -3024)
PADDING_P = (0.3, 0.15, 0.25, 0.3)
BACK_FLATTENING = 1.25  # the torso outline reaches b / 1.25 behind its centre (render._torso_distance, flat_back)


@dataclass
class ChestWall:
    bones: list  # Ellipsoid (sternum, scapulae) and Tube (clavicles, humeri), painted over the ribs
    arms: list  # Tube: the soft tissue of the arms, painted before the bones
    vessels: list  # Tube: superior vena cava, portal vein, renal veins


def sample(rng: np.random.Generator, subject: dict) -> dict:
    """Every random choice of the generator-2.0 anatomy (from a stream of its own)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    n = lambda m, sd, lo, hi: float(np.clip(m + sd * rng.standard_normal(), lo, hi))  # noqa: E731
    adip = subject["adiposity"]
    return {
        "arm_radius_mm": n(40.0 + 18.0 * adip, 5.0, 28.0, 75.0),
        "arm_gap_mm": u(0.0, 45.0),  # between the arm and the flank (arms down)
        "arm_up_angle_deg": u(5.0, 40.0),  # raised arms: from vertical, outwards
        "arm_forward_mm": u(-30.0, 40.0),
        "humerus_radius_mm": n(11.0, 1.2, 8.5, 14.0),
        "humeral_head_mm": n(22.0, 2.0, 17.0, 27.0),
        "shoulder_drop_mm": u(-10.0, 25.0),
        "scapula_scale": n(1.0, 0.1, 0.8, 1.25),
        "scapula_out_mm": u(60.0, 95.0),
        "clavicle_radius_mm": n(6.5, 0.8, 4.5, 9.0),
        "sternum_scale": n(1.0, 0.08, 0.8, 1.2),
        "svc_arterial_hu": u(150.0, 900.0),  # undiluted contrast arriving from the arm vein
        "table": {
            "present": bool(rng.uniform() < 0.92),
            "pad_mm": u(0.0, 45.0),
            "pad_hu": u(-900.0, -500.0),
            "thickness_mm": u(8.0, 40.0),
            "shell_mm": u(1.5, 4.0),
            "shell_hu": u(100.0, 600.0),
            "core_hu": u(-950.0, -500.0),
            "half_width_mm": u(200.0, 260.0),
            "curve_mm": u(0.0, 45.0),  # the top rises this much at its edges (a cradle)
        },
        "circle": {
            "present": bool(rng.uniform() < 0.75),
            "diameter_factor": u(0.98, 1.3),  # times the display field of view
            "padding_hu": int(PADDING_VALUES_HU[int(rng.choice(len(PADDING_VALUES_HU), p=PADDING_P))]),
        },
    }


def build(vertebrae, profile: TorsoProfile, params: dict, arms: str, organs: dict) -> ChestWall:
    """Shoulder girdle, arms and extra vessels of one subject in body coordinates."""
    cw = params["chest_wall"]
    by = {vb.name: vb for vb in vertebrae}
    thor = [vb for vb in vertebrae if vb.name.startswith("T")]
    t = lambda i: thor[min(i, len(thor)) - 1]  # noqa: E731
    w = lambda vb: float(vb.center[2])  # noqa: E731
    bones, soft, vessels = [], [], []

    # sternum: manubrium at T2-T3, body down to T9, just under the skin and fat in front
    s = cw["sternum_scale"]
    for name, w_c, semi in (("manubrium", 0.5 * (w(t(2)) + w(t(3))), (26.0, 7.0, 24.0)),
                            ("sternum", 0.5 * (w(t(4)) + w(t(8))) + 5.0, (16.0, 6.0, 0.5 * (w(t(4)) - w(t(8))) + 10.0))):
        p = profile.at(w_c)
        front = p["vc"] + p["b"] - p["fat_ant"] - 16.0 * s
        bones.append(Ellipsoid(name, "posterior_marrow", np.array([0.0, front, w_c]), np.array(semi) * s,
                               inside_cavity=False, wall_mm=1.8, wall_tissue="cortical_bone"))

    w_sh = w(t(2)) - cw["shoulder_drop_mm"]
    p_sh = profile.at(w_sh)
    v_sh = p_sh["v_spine"] + 30.0
    for sgn in (1.0, -1.0):
        # scapula: a plate behind the upper ribs, from T2 to T7
        sc = cw["scapula_scale"]
        w_sc = 0.5 * (w(t(2)) + w(t(7)))
        p = profile.at(w_sc)
        back = p["vc"] - p["b"] / BACK_FLATTENING + p["fat_post"] + 0.5 * p["muscle"] + 12.0
        bones.append(Ellipsoid("scapula", "posterior_marrow",
                               np.array([sgn * cw["scapula_out_mm"] * sc, back, w_sc]),
                               np.array([42.0, 5.5, 0.5 * (w(t(2)) - w(t(7))) + 10.0]) * sc,
                               inside_cavity=False, wall_mm=1.6, wall_tissue="cortical_bone"))
        # humeral head at the lateral edge of the upper chest; clavicle from the manubrium to it
        head = np.array([sgn * (p_sh["a"] - 0.5 * p_sh["fat_lat"] - 18.0), v_sh, w_sh])
        r_head = cw["humeral_head_mm"]
        manubrium_top = np.array([sgn * 22.0, bones[0].center[1] + 4.0, bones[0].center[2] + 20.0])
        mid = np.array([0.45 * head[0], manubrium_top[1] + 6.0, manubrium_top[2] + 10.0])
        acromion = head + np.array([-sgn * 5.0, -10.0, r_head + 6.0])
        bones.append(Tube("clavicle", "posterior_marrow", np.array([manubrium_top, mid, acromion]),
                          np.full(3, cw["clavicle_radius_mm"]), wall_mm=2.0, wall_tissue="cortical_bone"))
        # the arm: soft tissue around the humerus
        if arms == "up":
            a = np.radians(cw["arm_up_angle_deg"])
            direction = np.array([sgn * np.sin(a), 0.0, np.cos(a)])
        else:
            w_el = w_sh - 300.0
            p_el = profile.at(w_el)
            elbow_u = sgn * (p_el["a"] + cw["arm_radius_mm"] + cw["arm_gap_mm"])
            direction = np.array([elbow_u - head[0], cw["arm_forward_mm"] / 3.0, w_el - w_sh])
            direction /= np.linalg.norm(direction)
        elbow = head + direction * 300.0
        shaft_top = head + direction * (r_head * 0.8)
        arm_pts = np.array([head + direction * 30.0 + np.array([sgn * 6.0, 0.0, 0.0]), elbow])
        soft.append(Tube("arm", "muscle_fatty", arm_pts, np.full(2, cw["arm_radius_mm"] * 0.75),
                         wall_mm=cw["arm_radius_mm"] * 0.25, wall_tissue="fat"))
        bones.append(Tube("humerus", "fat", np.array([shaft_top, elbow]),
                          np.array([cw["humerus_radius_mm"], cw["humerus_radius_mm"] * 0.9]),
                          wall_mm=3.0, wall_tissue="cortical_bone"))
        bones.append(Ellipsoid("humeral_head", "posterior_marrow", head, np.full(3, r_head),
                               inside_cavity=False, wall_mm=1.5, wall_tissue="cortical_bone"))
        if arms == "down":
            # forearm resting on the flank or the belly, forward from the elbow
            p_el = profile.at(float(elbow[2]))
            hand = np.array([sgn * 0.55 * p_el["a"], p_el["vc"] + p_el["b"] + 20.0, elbow[2] - 60.0])
            soft.append(Tube("forearm", "muscle_fatty", np.array([elbow, hand]), np.array([32.0, 24.0]),
                             wall_mm=6.0, wall_tissue="fat"))
            bones.append(Tube("forearm_bones", "fat", np.array([elbow, hand]), np.array([8.0, 7.0]),
                              wall_mm=2.5, wall_tissue="cortical_bone"))

    # superior vena cava: right of the ascending aorta, from the thoracic inlet into the right atrium
    heart = organs["heart"]
    ra = heart.center + np.array([0.55 * heart.semi_axes[0], -0.2 * heart.semi_axes[1], 0.6 * heart.semi_axes[2]])
    inlet = np.array([28.0, t(2).center[1] + t(2).half_depth + 35.0, w(t(2))])
    vessels.append(Tube("svc", "svc", np.array([inlet, 0.5 * (inlet + ra) + np.array([4.0, 0.0, 0.0]), ra]),
                        np.array([8.0, 9.5, 10.0])))
    # portal vein: from the spleno-mesenteric confluence in front of L1 into the liver hilum
    l1 = by["L1"]
    liver = next(o for o in organs["organs"] if o.name == "liver")
    confluence = np.array([-5.0, l1.center[1] + l1.half_depth + 40.0, w(l1) + 15.0])
    hilum = liver.center + np.array([-0.35 * liver.semi_axes[0], -0.1 * liver.semi_axes[1], -0.1 * liver.semi_axes[2]])
    vessels.append(Tube("portal_vein", "portal_vein", np.array([confluence, hilum]), np.array([7.0, 7.5])))
    # renal veins into the inferior vena cava
    ivc = next(tb for tb in organs["tubes"] if tb.name == "ivc")
    for kidney in (o for o in organs["organs"] if o.name == "kidney"):
        k_ivc = ivc.points[np.argmin(np.abs(ivc.points[:, 2] - kidney.center[2]))]
        sgn = np.sign(kidney.center[0])
        start = kidney.center + np.array([-sgn * 0.6 * kidney.semi_axes[0], 8.0, 0.0])
        vessels.append(Tube("renal_vein", "vein", np.array([start, k_ivc]), np.array([5.0, 6.0])))
    return ChestWall(bones, soft, vessels)


def table_rows(cw: dict, y_back_world: float, x_world: np.ndarray, y_world: np.ndarray, sigma: float):
    """What the table paints on a sub-slice: a list of (alpha, HU) for pad, shell, core and shell.

    ``x_world`` (columns) and ``y_world`` (rows) are the pixel centres (RAS mm); the table is
    centred on the scanner's axis (x = 0) and its pad touches the lowest point of the back.
    """
    tb = cw["table"]
    if not tb["present"]:
        return []
    half = tb["half_width_mm"]
    xx = x_world[None, :]
    rise = tb["curve_mm"] * np.clip(xx / half, -1.0, 1.0) ** 2  # the cradle rises to the edges
    top = y_back_world - tb["pad_mm"] + rise  # y grows anterior: the table lies below (posterior)
    yy = y_world[:, None]
    side = np.abs(xx) - half  # > 0 beyond the table's edge

    def slab(hi, lo):
        d = np.maximum(np.maximum(yy - hi, lo - yy), side)
        return coverage(d.astype(np.float32), sigma)

    bottom = top - tb["thickness_mm"]
    out = []
    if tb["pad_mm"] > 1.0:
        out.append((slab(top + tb["pad_mm"], top), tb["pad_hu"]))
    out.append((slab(top, bottom), tb["shell_hu"]))
    out.append((slab(top - tb["shell_mm"], bottom + tb["shell_mm"]), tb["core_hu"]))
    return out


def outside_circle(grid, cw: dict) -> np.ndarray | None:
    """Pixels (j, i) of ``grid`` outside the reconstruction circle of its root grid, or None."""
    c = cw["circle"]
    if not c["present"]:
        return None
    root = grid.root
    nk, nj, ni = root.shape
    si, sj = grid.spacing[0], grid.spacing[1]
    radius = 0.5 * c["diameter_factor"] * ni * si
    cx = root.origin[0] - 0.5 * (ni - 1) * si  # world x of the root grid's centre (i runs towards L)
    cy = root.origin[1] - 0.5 * (nj - 1) * sj
    x = grid.origin[0] - np.arange(grid.shape[2]) * si - cx
    y = grid.origin[1] - np.arange(grid.shape[1]) * sj - cy
    mask = y[:, None] ** 2 + x[None, :] ** 2 > radius**2
    return mask if mask.any() else None
