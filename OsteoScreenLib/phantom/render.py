"""Deterministic rendering of one phantom case from its parameters.

The renderer walks the output slices. Each output slice is the weighted mean
of thin sub-slices (the slice profile); each sub-slice is painted layer by
layer (torso, organs, lungs, mediastinum, muscles, spine, ribs) with soft
edges, only on the patch of the slice each structure can touch. Body
coordinates of the pixels of a patch are affine in (i, j), so every shape
gets its own coordinates with two additions per pixel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .. import registry
from . import chest_wall, density, scanner
from .geometry import Grid, Pose, make_grid, make_pose
from .presets import PRESETS
from .reference import reference_standard
from .ribs import RIB_HALF_HEIGHT_MM, RIB_HALF_THICKNESS_MM, build_ribs
from .shapes import F32, coverage, coverage_reach, ellipse_distance, ellipsoid_distance, paint, segment_distance
from .spine import RIB_BEARING_MIN_MM, Vertebra, build_spine
from .torso import Ellipsoid, TorsoProfile, Tube, build_organs

HU_MIN, HU_MAX = -1024, 3071
LABEL_BODY = {name: registry.LABEL_OF[name] for name in registry.VERTEBRA_NAMES}  # L1 -> 1, L2 -> 2
SUPPORT_MARGIN_MM = 0.25  # added to the exact reach of a capsule's paint; float32 rounding is far smaller


@dataclass
class Anatomy:
    vertebrae: list[Vertebra]
    profile: TorsoProfile
    ribs: list
    organs: dict
    chest_wall: chest_wall.ChestWall | None = None  # generator 2.0 (absent from older parameters)


def build_anatomy(params: dict) -> Anatomy:
    subject, torso = params["subject"], params["torso"]
    # first pass: torso outline needs the spine, the spine needs the L1 depth -> iterate once
    v_l1 = 0.0
    vertebrae = build_spine(params["spine"], subject, v_l1)
    profile = TorsoProfile(vertebrae, torso, torso["fat_subcut_mm"])
    l1 = next(v for v in vertebrae if v.name == "L1")
    p = profile.at(l1.center[2])
    v_l1 = p["v_spine"] - p["vc"]  # spine relative to the torso centre at L1
    vertebrae = build_spine(params["spine"], subject, v_l1)
    profile = TorsoProfile(vertebrae, torso, torso["fat_subcut_mm"])
    swap = params.get("rib_swap")  # the rib-swap preset only
    if swap:
        bearing = [vb for vb in vertebrae if vb.name.startswith("T") and vb.rib_length_mm > 0]
        for vb in bearing[len(bearing) - swap["drop_lowest"]:]:
            vb.rib_length_mm = 0.0
        for vb in vertebrae:
            if vb.name in swap["full_ribs_on"]:
                vb.rib_length_mm = 1.0  # full rib; length computed by the rib builder
    ribs = build_ribs(vertebrae, profile, lower=params.get("lower_ribs"),  # absent: as generator 1.0.0
                      full_ribs_on=tuple(swap["full_ribs_on"]) if swap else ())
    for vb in vertebrae:
        mine = [r for r in ribs if r.vertebra == vb.name]
        if mine:
            vb.rib_length_mm = float(min(r.length_mm for r in mine))
    organs = build_organs(vertebrae, torso, profile, params["scanner"]["contrast_phase"],
                          params.get("viscera", {}).get("shift_mm", 0.0))  # absent: as 2.0.0
    wall = chest_wall.build(vertebrae, profile, params, torso["arms"], organs) if "chest_wall" in params else None
    return Anatomy(vertebrae, profile, ribs, organs, wall)


class _Item:
    """Something painted on the sub-slices: a layer, a kind and what to paint.

    Where it can paint lives in the renderer's arrays (one row per item): a world
    box (xmin, xmax, ymin, ymax, zmin, zmax) and, for capsules, a tighter support.
    """

    __slots__ = ("layer", "kind", "data")

    def __init__(self, layer, kind, data):
        self.layer, self.kind, self.data = layer, kind, data


_CORNER_PICK = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], bool)
_FAR_MM = 1e9  # half-extent of "no support": the world box alone bounds the item


def _world_boxes(pose: Pose, lo, hi, margin) -> np.ndarray:
    """World boxes (n, 6: xmin, xmax, ymin, ymax, zmin, zmax) of body boxes lo-hi grown by ``margin``."""
    lo, hi = np.atleast_2d(np.asarray(lo, float)), np.atleast_2d(np.asarray(hi, float))
    margin = np.broadcast_to(np.asarray(margin, float), (len(lo),))[:, None]
    corners = np.where(_CORNER_PICK[None], (hi + margin)[:, None, :], (lo - margin)[:, None, :])
    wc = corners @ pose.rotation.T + pose.translation
    mn, mx = wc.min(axis=1), wc.max(axis=1)
    return np.stack([mn[:, 0], mx[:, 0], mn[:, 1], mx[:, 1], mn[:, 2], mx[:, 2]], axis=1)


def _world_box(pose: Pose, lo, hi, margin: float):
    return tuple(float(v) for v in _world_boxes(pose, lo, hi, margin)[0])


def _segment_supports(pose: Pose, a_mat, c, q0, q1, reach) -> np.ndarray:
    """Where capsules painted in the coordinates ``q = a_mat @ (body - c)`` can paint anything.

    A capsule paints only within ``reach`` (in q units) of its segment q0-q1
    (``reach`` covers the radius and the blurred edge, see
    :func:`shapes.coverage_reach`); that region lies within world ellipsoids
    of half-extents ``h`` centred on the world segment w0-w1. Returns rows
    (w0, w1, h), shape (n, 9).
    """
    inv = np.linalg.inv(np.asarray(a_mat, float))
    c = np.asarray(c, float)
    w0 = (c + np.atleast_2d(q0) @ inv.T) @ pose.rotation.T + pose.translation
    w1 = (c + np.atleast_2d(q1) @ inv.T) @ pose.rotation.T + pose.translation
    lin = pose.rotation @ inv  # q -> world
    h = np.asarray(reach, float).reshape(-1, 1) * np.sqrt((lin * lin).sum(axis=1))[None, :]
    return np.concatenate([w0, w1, np.broadcast_to(h, w0.shape)], axis=1)


def _no_supports(n: int) -> np.ndarray:
    seg = np.zeros((n, 9))
    seg[:, 6:] = _FAR_MM
    return seg


def _support_z(box: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """World z range (n, 2) of each item: its box, narrowed to the slices its support reaches."""
    lo = np.minimum(seg[:, 2], seg[:, 5]) - seg[:, 8]
    hi = np.maximum(seg[:, 2], seg[:, 5]) + seg[:, 8]
    return np.stack([np.maximum(box[:, 4], lo), np.minimum(box[:, 5], hi)], axis=1)


class Renderer:
    def __init__(self, params: dict, anatomy: Anatomy, pose: Pose, grid: Grid):
        self.params, self.an, self.pose, self.grid = params, anatomy, pose, grid
        sc = params["scanner"]
        self.tissue = density.tissue_table(sc["kvp"], sc["contrast_phase"], sc["fat_offset_hu"], sc["muscle_offset_hu"])
        self.tissue["feces"] = -60.0
        self.tissue["liver"] += params["torso"]["liver_fat_hu"]
        self.tissue["muscle_fatty"] = self.tissue["muscle"] - 25.0 * params["torso"]["muscle_quality"] * params["subject"]["age_years"] / 90
        if "chest_wall" in params and sc["contrast_phase"] == "arterial":  # undiluted, from the arm vein
            self.tissue["svc"] = self.tissue["blood"] + params["chest_wall"]["svc_arterial_hu"] * density.kv_iodine_factor(sc["kvp"])
        self.sigma = grid.in_plane_sigma_mm
        nk, nj, ni = grid.shape
        self.sub = grid.supersample_i
        self.ni_r = ni * self.sub
        self.si_r = grid.spacing[0] / self.sub
        self.sj = grid.spacing[1]
        # Pixel coordinates count from the root grid's voxel (0, 0), so a box of a grid gets
        # the very same coordinates (and values) as the root grid at the voxels they share.
        root = grid.root
        _, off_j, off_i = np.array(grid.offset_kji) - np.array(root.offset_kji)
        self.I = np.arange(off_i * self.sub, off_i * self.sub + self.ni_r, dtype=np.float32)
        self.J = np.arange(off_j, off_j + nj, dtype=np.float32)
        self.x0 = grid.origin[0] + (self.sub - 1) / 2 * self.si_r  # world x of render column 0
        self.y0 = grid.origin[1]
        self.root_x0 = root.origin[0] + (self.sub - 1) / 2 * self.si_r  # world x of root render column 0
        self.root_y0 = root.origin[1]
        rt = pose.rotation.T
        self.bi = rt @ np.array([-self.si_r, 0.0, 0.0])
        self.bj = rt @ np.array([0.0, -self.sj, 0.0])
        self.eye = np.eye(3)
        self.eye_steps = self._steps(self.eye)
        self.rib_scale = np.diag([1.0, 1.0, RIB_HALF_THICKNESS_MM / RIB_HALF_HEIGHT_MM])
        self.rib_steps = self._steps(self.rib_scale)
        self.reach = coverage_reach(self.sigma) + SUPPORT_MARGIN_MM
        conf = params.get("density")  # generator 2.2.0's density confounders (absent: as 2.1.0)
        # the scanner's water offset moves the whole image: added to each output slice (render_volume),
        # so painted values leave it out
        self.water_offset = conf["water_offset_hu"] if conf is not None else 0.0
        self.lesions = conf["focal_lesions"] if conf is not None else []
        if conf is not None:  # compact bone is mineral too: the scanner's slope for mineral applies
            self.tissue["cortical_bone"] *= conf["bone_slope_factor"]
        self.trab_hu = {}
        for vb in anatomy.vertebrae:
            self.trab_hu[vb.name] = density.trabecular_hu_in_image(params, vb.name, vb.bmd_mg_cm3) - self.water_offset
        self._texture_waves()
        self.margin = 3.0 * self.sigma + 2.0  # world boxes: beyond it a soft edge paints nothing
        self.parts = {}  # per vertebra, made when first painted
        self._collect_items()
        self.table = self._table()

    def _table(self):
        """The table's paint on every sub-slice (it does not change along z): (rows, alphas, HU) per layer."""
        if self.an.chest_wall is None:
            return []
        prof = self.an.profile
        ws = np.linspace(prof.w[0] - 60.0, prof.w[-1], 40)
        back = [self.pose.to_world([0.0, prof.at(w)["vc"] - prof.at(w)["b"] / chest_wall.BACK_FLATTENING, w])[1]
                for w in ws]
        x = self.x0 - np.arange(self.ni_r) * self.si_r
        y = self.y0 - np.arange(len(self.J)) * self.sj
        out = []
        for alpha, hu in chest_wall.table_rows(self.params["chest_wall"], float(min(back)), x, y, self.sigma):
            rows = np.nonzero(alpha.max(axis=1) > 0)[0]
            if len(rows):
                out.append((slice(rows[0], rows[-1] + 1), alpha[rows[0]:rows[-1] + 1], F32(hu)))
        return out

    # ------------------------------------------------------------------ set-up
    def _texture_waves(self):
        sp = self.params["spine"]
        rng = np.random.Generator(np.random.PCG64(sp["texture_seed"]))
        n = 12
        period = sp["texture_period_mm"] * rng.uniform(0.75, 1.3, n)
        az = rng.uniform(0, 2 * np.pi, n)
        el = rng.normal(0, 0.35, n)  # mostly horizontal wave vectors: trabeculae run vertically
        k = (2 * np.pi / period)[:, None] * np.c_[np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)]
        mtf = np.exp(-0.5 * (self.sigma**2) * (k[:, 0] ** 2 + k[:, 1] ** 2))
        self.tex_k = k.astype(np.float32)
        self.tex_amp = (mtf * np.sqrt(2.0 / n)).astype(np.float32)
        self.tex_phase = rng.uniform(0, 2 * np.pi, (64, n)).astype(np.float32)
        kl = (2 * np.pi / rng.uniform(9.0, 16.0, 4))[:, None] * rng.normal(0, 1, (4, 3))
        self.tex_low_k = kl.astype(np.float32)
        self.tex_low_phase = rng.uniform(0, 2 * np.pi, (64, 4)).astype(np.float32)

    def _collect_items(self) -> None:
        """Everything to paint on this grid, in painting order (by layer), with world boxes and supports.

        Sets ``items`` and, one row per item, ``item_box``, ``item_seg``, ``z0s`` and
        ``z1s``; items that no sub-slice of the grid reaches are left out (the
        painting order of the others is kept).
        """
        pose, m = self.pose, self.margin
        blocks = []  # (layer, kind, data of row a, world boxes, supports)

        def add(layer, kind, data, box, seg=None):
            blocks.append((layer, kind, data, box, _no_supports(len(box)) if seg is None else seg))

        def add_ellipsoid(layer, o):
            add(layer, "ellipsoid", lambda a, o=o: o, _world_boxes(pose, o.center - o.semi_axes, o.center + o.semi_axes, m))

        zero = np.zeros(3)

        def add_tube(layer, tube):  # one row per capsule of the chain
            p0, p1 = tube.points[:-1], tube.points[1:]
            r = np.maximum(tube.radii[:-1], tube.radii[1:]) + tube.wall_mm
            add(layer, "tube", lambda a, tube=tube: (tube, a),
                _world_boxes(pose, np.minimum(p0, p1), np.maximum(p0, p1), r + m),
                _segment_supports(pose, self.eye, zero, p0, p1, r + self.reach))

        for o in self.an.organs["organs"] + self.an.organs["bowel"] + [self.an.organs["heart"]]:
            add_ellipsoid(3 if o is self.an.organs["heart"] else 1, o)
        for tube in self.an.organs["tubes"]:
            add_tube(4 if tube.tissue == "lung_vessel" else 3, tube)
        for vb in self.an.vertebrae:
            ext = np.array([vb.half_width + 45.0, vb.half_depth + 75.0, vb.half_height + 40.0])
            add(6, "vertebra", lambda a, vb=vb: vb, _world_boxes(pose, vb.center - ext, vb.center + ext, m))
        for rib in self.an.ribs:
            for part, pts in (("rib", rib.points), ("cartilage", rib.cartilage)):
                if pts is None:
                    continue
                # body axis shrunk: ribs are taller than thick
                q = np.stack([self.rib_scale @ pt for pt in pts])
                add(7, part, lambda a, q=q, rib=rib: (q[a], q[a + 1], rib.thickness_scale, rib.density_scale),
                    _world_boxes(pose, np.minimum(pts[:-1], pts[1:]), np.maximum(pts[:-1], pts[1:]),
                                 RIB_HALF_HEIGHT_MM + m),
                    _segment_supports(pose, self.rib_scale, zero, q[:-1], q[1:], RIB_HALF_THICKNESS_MM + self.reach))
        wall = self.an.chest_wall
        if wall is not None:
            # arms before the lungs (outside the chest), extra vessels with the others, bones over the ribs
            for layer, tubes in ((2, wall.arms), (3, wall.vessels), (8, [b for b in wall.bones if isinstance(b, Tube)])):
                for tube in tubes:
                    add_tube(layer, tube)
            for o in (b for b in wall.bones if isinstance(b, Ellipsoid)):
                add_ellipsoid(8, o)
        layer = np.concatenate([np.full(len(b[3]), b[0]) for b in blocks])
        block = np.concatenate([np.full(len(b[3]), n) for n, b in enumerate(blocks)])
        row = np.concatenate([np.arange(len(b[3])) for b in blocks])
        box = np.concatenate([b[3] for b in blocks])
        seg = np.concatenate([b[4] for b in blocks])
        z = _support_z(box, seg)
        g = self.grid
        pad = 0.5 * g.slice_thickness_mm + g.z_blur_extra_mm + 2.0 * g.spacing[2] + 2.0  # > half a slice profile
        z_lo = g.origin[2] - pad
        z_hi = g.origin[2] + (g.shape[0] - 1) * g.spacing[2] + pad
        _, on_grid = self._patches(box, _no_supports(len(box)), 0.0)
        keep = (z[:, 1] >= z_lo) & (z[:, 0] <= z_hi) & np.array(on_grid, bool)
        order = np.lexsort((np.arange(len(layer)), layer))  # by layer, then in the order added
        order = order[keep[order]]
        self.items = [_Item(int(layer[n]), blocks[block[n]][1], blocks[block[n]][2](int(row[n]))) for n in order]
        self.item_box, self.item_seg = box[order], seg[order]
        self.z0s, self.z1s = z[order, 0].copy(), z[order, 1].copy()

    def _vertebra_parts(self, vb: Vertebra, m: float):
        """The canal, disc, capsules and body of a vertebra (painting order) with world boxes and supports."""
        a, b, h = vb.half_width, vb.half_depth, vb.half_height
        yc, ca, cb = vb.canal
        hd = h + 0.5 * vb.disc_below + 1.5
        parts, lo, hi = [("canal", None)], [[-ca, yc - cb, -hd]], [[ca, yc + cb, hd]]
        if vb.disc_below > 0 and vb.index + 1 < len(self.an.vertebrae):
            lower = self.an.vertebrae[vb.index + 1]
            ad, bd = 0.5 * (a + lower.half_width) * 1.04, 0.5 * (b + lower.half_depth) * 1.04
            parts.append(("disc", None))
            lo.append([-ad, -bd, -h - vb.disc_below - 2.5])
            hi.append([ad, bd, -h + 2.5])
        segs = [_no_supports(len(parts))]
        for cap in vb.elements:
            r = cap.radius / cap.scale
            a_mat = vb.frame.T * cap.scale[:, None]
            parts.append(("capsule", (cap, a_mat, self._steps(a_mat))))
            lo.append(np.minimum(cap.p0, cap.p1) - r)
            hi.append(np.maximum(cap.p0, cap.p1) + r)
            segs.append(_segment_supports(self.pose, a_mat, vb.center, cap.p0 * cap.scale, cap.p1 * cap.scale,
                                          cap.radius + self.reach))
        widen = 1.3
        parts.append(("body", None))
        lo.append([-a * widen, -b * widen, -h - 1.0])
        hi.append([a * widen, b * widen, h + 1.0])
        segs.append(_no_supports(1))
        # body boxes around the local boxes (all 8 corners in the vertebra frame)
        lo, hi = np.array(lo, float), np.array(hi, float)
        corners = np.where(_CORNER_PICK[None], hi[:, None, :], lo[:, None, :]) @ vb.frame.T + vb.center
        boxes = _world_boxes(self.pose, corners.min(axis=1), corners.max(axis=1), m)
        segs = np.concatenate(segs)
        z = _support_z(boxes, segs)
        return parts, boxes, segs, z[:, 0].copy(), z[:, 1].copy()

    # ------------------------------------------------------------------ geometry helpers
    def _b0(self, z: float) -> np.ndarray:
        return self.pose.rotation.T @ (np.array([self.root_x0, self.root_y0, z]) - self.pose.translation)

    def _box_ij(self, box):
        """Pixel index range (i0, i1, j0, j1) of a world xy box, clipped to the slice."""
        xmin, xmax, ymin, ymax = box[:4]
        i0 = math.floor((self.x0 - xmax) / self.si_r)
        i1 = math.ceil((self.x0 - xmin) / self.si_r) + 1
        j0 = math.floor((self.y0 - ymax) / self.sj)
        j1 = math.ceil((self.y0 - ymin) / self.sj) + 1
        return max(i0, 0), min(i1, self.ni_r), max(j0, 0), min(j1, len(self.J))

    def _patches(self, box: np.ndarray, seg: np.ndarray, z: float):
        """Pixel ranges (i0, i1, j0, j1) that items with world boxes ``box`` and supports ``seg`` may paint
        on the sub-slice at world ``z`` (clipped to the slice), and whether each has any pixel."""
        w0, w1, h = seg[:, 0:3], seg[:, 3:6], seg[:, 6:9]
        dz = w1[:, 2] - w0[:, 2]
        tilted = np.abs(dz) > 1e-9
        inv = 1.0 / np.where(tilted, dz, 1.0)
        ta = np.where(tilted, (z - h[:, 2] - w0[:, 2]) * inv, 0.0)
        tb = np.where(tilted, (z + h[:, 2] - w0[:, 2]) * inv, 1.0)
        # only the stretch of a segment within h_z of the plane can reach it
        t0, t1 = np.maximum(np.minimum(ta, tb), 0.0), np.minimum(np.maximum(ta, tb), 1.0)
        d = w1[:, :2] - w0[:, :2]
        pa, pb = w0[:, :2] + t0[:, None] * d, w0[:, :2] + t1[:, None] * d
        lo = np.maximum(box[:, 0:4:2], np.minimum(pa, pb) - h[:, :2])
        hi = np.minimum(box[:, 1:4:2], np.maximum(pa, pb) + h[:, :2])
        i0 = np.maximum(np.floor((self.x0 - hi[:, 0]) / self.si_r), 0)
        i1 = np.minimum(np.ceil((self.x0 - lo[:, 0]) / self.si_r) + 1, self.ni_r)
        j0 = np.maximum(np.floor((self.y0 - hi[:, 1]) / self.sj), 0)
        j1 = np.minimum(np.ceil((self.y0 - lo[:, 1]) / self.sj) + 1, len(self.J))
        ok = (t0 <= t1) & (i0 < i1) & (j0 < j1)
        ij = np.stack([i0, i1, j0, j1], axis=1).astype(np.int64)
        return ij.tolist(), ok.tolist()

    def _steps(self, a_mat):
        """Per-pixel steps of the coordinates ``a_mat @ body`` along i and j (float32, shaped for :meth:`_coords`)."""
        li, lj = a_mat @ self.bi, a_mat @ self.bj
        return li.astype(np.float32)[:, None, None], lj.astype(np.float32)[:, None]

    def _coords(self, b0, a_mat, c, ij, steps=None):
        """Coordinates ``a_mat @ (body - c)`` of the pixels of patch ``ij`` (three 2D float32 arrays)."""
        i0, i1, j0, j1 = ij
        l0 = a_mat @ (b0 - c)
        li, lj = self._steps(a_mat) if steps is None else steps
        col = l0.astype(np.float32)[:, None] + lj * self.J[None, j0:j1]
        out = col[:, :, None] + li * self.I[None, None, i0:i1]
        return out[0], out[1], out[2]

    # ------------------------------------------------------------------ one sub-slice
    def render(self, z: float, want_labels: bool):
        nj = len(self.J)
        img = np.full((nj, self.ni_r), F32(self.tissue["air"]), np.float32)
        labels = np.zeros((nj, self.ni_r), np.uint8) if want_labels else None
        levels = np.zeros((nj, self.ni_r), np.uint8) if want_labels else None
        b0 = self._b0(z)
        rt = self.pose.rotation.T
        w_c = float((z - self.pose.translation[2]) / self.pose.rotation[2, 2])
        for rows, alpha, hu in self.table:
            paint(img[rows], alpha, hu)
        ctx = self._torso(img, b0, w_c)
        active = np.nonzero((self.z0s <= z) & (self.z1s >= z))[0]
        patches, has_pixels = self._patches(self.item_box[active], self.item_seg[active], z)
        lungs_done = False
        for n, ij, ok in zip(active.tolist(), patches, has_pixels):
            it = self.items[n]
            if it.layer >= 3 and not lungs_done:
                self._lungs(img, b0, ctx)
                self._muscles(img, b0, ctx)
                lungs_done = True
            if not ok:
                continue
            if it.kind == "ellipsoid":
                self._ellipsoid(img, b0, it.data, ij, ctx)
            elif it.kind == "tube":
                self._tube(img, b0, it.data, ij, ctx)
            elif it.kind == "vertebra":
                self._vertebra(img, b0, it.data, ij, labels, levels, z)
            else:
                self._rib(img, b0, it.data, ij, it.kind)
        if not lungs_done:
            self._lungs(img, b0, ctx)
            self._muscles(img, b0, ctx)
        del rt
        return img, labels, levels

    def _torso(self, img, b0, w_c):
        p = self.an.profile.at(w_c)
        t = self.tissue
        s = self.sigma
        m = 3 * s + 2
        a, b, vc = p["a"], p["b"], p["vc"]
        box = _world_box(self.pose, [-a, vc - b, w_c - 1], [a, vc + b, w_c + 1], m)
        ij = self._box_ij(box)
        ctx = {"p": p, "w_c": w_c, "ij": ij, "cavity": None}
        if ij[0] >= ij[1] or ij[2] >= ij[3]:
            return ctx
        u, v, w = self._coords(b0, self.eye, np.array([0.0, vc, 0.0]), ij, self.eye_steps)
        i0, i1, j0, j1 = ij
        view = img[j0:j1, i0:i1]
        # outline: a rounded box (mix of an ellipse and a super-ellipse), flatter at the back
        d_skin = _torso_distance(u, v, a, b, flat_back=chest_wall.BACK_FLATTENING - 1.0)
        paint(view, coverage(d_skin, s), t["skin"])
        d_fat = d_skin + F32(2.0)
        paint(view, coverage(d_fat, s), t["fat"])
        fa, fp, fl = p["fat_ant"], p["fat_post"], p["fat_lat"]
        a_m, b_m = a - fl, b - 0.5 * (fa + fp)
        vshift = F32(0.5 * (fa - fp))
        d_mus = _torso_distance(u, v + vshift, max(a_m, 20.0), max(b_m, 20.0), flat_back=0.25)
        paint(view, coverage(d_mus, s), t["muscle_fatty"])
        mu = p["muscle"]
        d_cav = _torso_distance(u, v + vshift, max(a_m - mu, 10.0), max(b_m - mu, 10.0), flat_back=0.1)
        # the paraspinal block behind the spine stays muscle
        vs = p["v_spine"] - vc
        para_scale = self.params["torso"]["paraspinal_scale"]
        lum = p["lumbar"]
        d_para = ellipse_distance(u, v - F32(vs - 38.0 - 6.0 * lum), (48.0 + 12.0 * lum) * para_scale, 34.0 * para_scale)
        np.maximum(d_cav, -d_para, out=d_cav)
        cav = coverage(d_cav, s)
        paint(view, cav, t["fat"])
        ctx.update(cavity=cav, u=u, v=v, w=w, vs=vs)
        # intermuscular fat line between paraspinal muscles and the wall
        return ctx

    def _lungs(self, img, b0, ctx):
        cav = ctx.get("cavity")
        if cav is None:
            return
        org = self.an.organs
        w_c = ctx["w_c"]
        if w_c > org["lung_apex"] + 30 or w_c < org["dome_l"] - 110:
            return
        u, v, w = ctx["u"], ctx["v"], ctx["w"]
        p = ctx["p"]
        i0, i1, j0, j1 = ctx["ij"]
        view = img[j0:j1, i0:i1]
        s = self.sigma
        # diaphragm domes: right and left paraboloids, deepest at the back (costophrenic recesses)
        apex_u = F32(0.38 * p["a"])
        k = F32(1.0 / (0.55 * p["a"]) ** 2 * 70.0)
        dv = v - F32(8.0)
        dv *= dv
        dv *= F32(0.8)
        right = u > 0
        du = np.where(right, u - apex_u, u + apex_u)
        du *= du
        du += dv
        du *= k
        dome = np.where(right, F32(org["dome_r"]), F32(org["dome_l"])) - du
        d = dome - w  # > 0 below the dome
        d += F32(3.0)
        d *= F32(0.7)
        alpha = coverage(d, s)
        # apex: lungs narrow to the top
        top = org["lung_apex"]
        if w_c > top - 60:
            d_ap = ellipse_distance(u, v - F32(ctx["vs"] + 20.0), max(p["a"] * 0.55 * np.sqrt(max(top - w_c, 0.0) / 60.0), 1.0) + 1.0,
                                    max(p["b"] * 0.7 * np.sqrt(max(top - w_c, 0.0) / 60.0), 1.0) + 1.0)
            alpha *= coverage(d_ap, s)
        alpha *= cav
        # mediastinum: a central band from the spine to the sternum
        vm0 = ctx["vs"] + 5.0
        vm1 = p["b"] - p["fat_ant"] - p["muscle"]
        d_med = ellipse_distance(u + F32(4.0), v - F32(0.5 * (vm0 + vm1)), 24.0, max(0.5 * (vm1 - vm0), 5.0))
        alpha *= F32(1.0) - coverage(d_med, s)
        lung = F32(self.tissue["lung"] + self.params["torso"]["lung_hu_offset"]) - F32(0.5) * (v - F32(ctx["vs"]))
        paint(view, alpha, lung)
        ctx["lung"] = alpha

    def _muscles(self, img, b0, ctx):
        """Psoas and quadratus lumborum beside the lumbar spine."""
        if ctx.get("cavity") is None:
            return
        top = self.an.organs["psoas_top"]
        w_c = ctx["w_c"]
        if w_c > top:
            return
        u, v = ctx["u"], ctx["v"]
        i0, i1, j0, j1 = ctx["ij"]
        view = img[j0:j1, i0:i1]
        l1 = next(vb for vb in self.an.vertebrae if vb.name == "L1")
        grow = float(np.clip((top - w_c) / 110.0, 0.0, 1.0))
        ps = self.params["torso"]["psoas_scale"]
        r = (5.0 + 18.0 * grow) * ps
        vs = ctx["vs"]
        for sgn in (1.0, -1.0):
            cu = sgn * (l1.half_width + r * 0.75)
            d = ellipse_distance(u - F32(cu), v - F32(vs - 2.0 + 0.3 * r), r, r * 0.85)
            paint(view, coverage(d, self.sigma), self.tissue["muscle"])
            cq = sgn * (l1.half_width + 45.0 + 10 * grow)
            d = ellipse_distance(u - F32(cq), v - F32(vs - 22.0), 10.0 + 6 * grow, 7.0 + 3 * grow)
            paint(view, coverage(d, self.sigma), self.tissue["muscle_fatty"])

    def _ellipsoid(self, img, b0, o: Ellipsoid, ij, ctx):
        x, y, z = self._coords(b0, self.eye, o.center, ij, self.eye_steps)
        d = ellipsoid_distance(x, y, z, *o.semi_axes)
        alpha = coverage(d, self.sigma)
        if o.inside_cavity and ctx.get("cavity") is not None:
            alpha *= _patch(ctx["cavity"], ctx["ij"], ij)
        view = img[ij[2]:ij[3], ij[0]:ij[1]]
        t = self.tissue
        if o.wall_mm > 0:
            paint(view, alpha, t[o.wall_tissue])
            alpha = coverage(d + F32(o.wall_mm), self.sigma) * (alpha > 0)
        if o.name == "stomach":
            gas = self.an.organs["stomach_gas"]
            level = o.semi_axes[1] * (1 - 2 * gas)
            value = np.where(y > F32(level), F32(t["air"]), F32(t["bowel_fluid"]))
        elif o.tissue == "feces":
            # mottled stool: quasi-random mix of soft tissue and small gas bubbles
            q = (np.cos(x * F32(0.93) + y * F32(0.41)) + np.cos(y * F32(0.87) - x * F32(0.29) + z * F32(0.53))
                 + np.cos(x * F32(0.61) - y * F32(0.72) + z * F32(0.83)))
            value = np.where(q > F32(1.6), F32(-750.0), F32(-10.0) + F32(25.0) * q)
        elif o.name == "heart":
            # right heart chambers (patient right, anterior) and left ones
            value = np.where(x > F32(5.0), F32(t["heart_right"]), F32(t["heart_left"]))
        else:
            value = t[o.tissue]
        paint(view, alpha, value)

    def _tube(self, img, b0, data, ij, ctx):
        tube, a = data
        p0, p1 = tube.points[a], tube.points[a + 1]
        r = float(0.5 * (tube.radii[a] + tube.radii[a + 1]))
        x, y, z = self._coords(b0, self.eye, np.zeros(3), ij, self.eye_steps)
        dist = segment_distance(x, y, z, p0, p1)
        view = img[ij[2]:ij[3], ij[0]:ij[1]]
        t = self.tissue
        if tube.wall_mm > 0:
            paint(view, coverage(dist - F32(r + tube.wall_mm), self.sigma), t[tube.wall_tissue])
        alpha = coverage(dist - F32(r), self.sigma)
        if tube.tissue == "lung_vessel" and ctx.get("lung") is not None:
            alpha *= np.maximum(_patch(ctx["lung"], ctx["ij"], ij), F32(0.0))
        paint(view, alpha, t[tube.tissue])

    def _rib(self, img, b0, data, ij, kind):
        q0, q1, size, bone = data  # segment ends (body axis shrunk: ribs are taller than thick), look
        x, y, z = self._coords(b0, self.rib_scale, np.zeros(3), ij, self.rib_steps)
        dist = segment_distance(x, y, z, q0, q1) - F32(RIB_HALF_THICKNESS_MM * size)
        view = img[ij[2]:ij[3], ij[0]:ij[1]]
        t = self.tissue
        alpha = coverage(dist, self.sigma)
        if kind == "cartilage":
            calc = self.params["torso"]["costal_cartilage_calcification"]
            paint(view, alpha, F32(t["cartilage"] + 250.0 * calc))
            return
        inner = coverage(dist + F32(1.0), self.sigma)
        value = F32(t["cortical_bone"] * 0.75) + (F32(t["posterior_marrow"] + 40.0 - t["cortical_bone"] * 0.75)) * inner
        if bone != 1.0:  # fainter: part of the way from bone to the muscle around it
            value = F32(t["muscle"]) + (value - F32(t["muscle"])) * F32(bone)
        paint(view, alpha, value)

    def _vertebra(self, img, b0, vb: Vertebra, ij_unused, labels, levels, z_world):
        t = self.tissue
        s = self.sigma
        a, b, h = vb.half_width, vb.half_depth, vb.half_height
        sp = self.params["spine"]
        frame_t = vb.frame.T
        shells, marrows = [], []
        cort = 0.9 * sp["cortex_mm"] + 0.3
        if vb.name not in self.parts:
            self.parts[vb.name] = self._vertebra_parts(vb, self.margin)
        parts, boxes, segs, z0s, z1s = self.parts[vb.name]
        active = np.nonzero((z0s <= z_world) & (z1s >= z_world))[0]
        patches, has_pixels = self._patches(boxes[active], segs[active], z_world)
        for n, ij, ok in zip(active.tolist(), patches, has_pixels):
            if not ok:
                continue
            kind, cap = parts[n]
            view = img[ij[2]:ij[3], ij[0]:ij[1]]
            if kind == "capsule":
                cap, a_mat, steps = cap
                sc = cap.scale
                x, y, z = self._coords(b0, a_mat, vb.center, ij, steps)
                dist = segment_distance(x, y, z, cap.p0 * sc, cap.p1 * sc) - F32(cap.radius)
                shells.append((view, coverage(dist, s)))
                marrows.append((view, coverage(dist + F32(cort), s)))
                if levels is not None:
                    levels[ij[2]:ij[3], ij[0]:ij[1]][dist <= 0] = vb.level_id
                continue
            x, y, z = self._coords(b0, frame_t, vb.center, ij)
            if kind == "canal":
                # spinal canal: fat around a CSF-filled sac, along the vertebra and its disc
                yc, ca, cb = vb.canal
                d_can = ellipse_distance(x, y - F32(yc), ca, cb)
                paint(view, coverage(d_can, s), t["fat"])
                paint(view, coverage(d_can + F32(1.5 + 0.5 * vb.lumbarness), s), t["csf"])
            elif kind == "disc":
                lower = self.an.vertebrae[vb.index + 1]
                zd = -h - 0.5 * vb.disc_below
                ad = 0.5 * (a + lower.half_width) * 1.03
                bd = 0.5 * (b + lower.half_depth) * 1.03
                rho = x * x * F32(1 / ad**2) + (y * y) * F32(1 / bd**2)
                d_r = ellipse_distance(x, y, ad, bd)
                d_z = np.abs(z - F32(zd)) - F32(0.5 * vb.disc_below + vb.concavity + 0.5)
                d_disc = np.maximum(d_r, d_z)
                paint(view, coverage(d_disc, s), F32(t["disc"] - 15.0) + F32(25.0) * np.minimum(rho, F32(1.0)))
            else:  # body, painted after the posterior elements
                # posterior elements: shells of all capsules first, then all marrow (a union)
                marrow = F32(t["posterior_marrow"] + 0.35 * (self.trab_hu[vb.name] - 150.0))
                for v, al in shells:
                    paint(v, al, t["cortical_bone"])
                for v, al in marrows:
                    paint(v, al, marrow)
                shells, marrows = [], []
                d_body, d_trab, trab_z = self._body_distance(vb, x, y, z)
                alpha = coverage(d_body, s)
                inner = coverage(d_trab, s)
                trab = self._trabecular(vb, x, y, z, trab_z)
                paint(view, alpha, F32(t["cortical_bone"]) + (trab - F32(t["cortical_bone"])) * inner)
                if labels is not None:
                    body = d_body <= 0
                    levels[ij[2]:ij[3], ij[0]:ij[1]][body] = vb.level_id
                    if vb.name in LABEL_BODY:
                        labels[ij[2]:ij[3], ij[0]:ij[1]][body] = LABEL_BODY[vb.name]
        marrow = F32(t["posterior_marrow"] + 0.35 * (self.trab_hu[vb.name] - 150.0))
        for v, al in shells:
            paint(v, al, t["cortical_bone"])
        for v, al in marrows:
            paint(v, al, marrow)

    def _body_distance(self, vb: Vertebra, x, y, z):
        return body_distance(self.params["spine"], vb, x, y, z)

    def _trabecular(self, vb: Vertebra, x, y, z, trab_z):
        """Trabecular HU with texture, basivertebral vein, pathology."""
        sp = self.params["spine"]
        mean = self.trab_hu[vb.name]
        k, amp = self.tex_k, self.tex_amp
        ph = self.tex_phase[vb.index % 64]
        tex = np.zeros(x.shape, np.float32)
        for n in range(len(amp)):
            arg = x * k[n, 0] + y * k[n, 1] + z * k[n, 2] + ph[n]
            tex += amp[n] * np.cos(arg)
        # rods and plates: a soft rectifier keeps the mean and adds bright trabeculae
        tex = tex + F32(0.35) * (tex * tex - F32(np.mean(amp**2) * len(amp) / 2))
        sd = sp["texture_contrast"] * (0.6 * max(mean, 40.0) + 60.0)
        low = np.zeros(x.shape, np.float32)
        for n in range(4):
            low += np.cos(x * self.tex_low_k[n, 0] + y * self.tex_low_k[n, 1] + z * self.tex_low_k[n, 2]
                          + self.tex_low_phase[vb.index % 64, n])
        value = F32(mean) + F32(sd) * tex + F32(0.08 * sd) * low
        a, b, h = vb.half_width, vb.half_depth, vb.half_height
        if sp["basivertebral_vein"]:
            d = segment_distance(x, y, z * F32(2.5), (0.0, -b, 0.0), (0.0, -0.35 * b, 0.0)) - F32(2.0)
            value += coverage(d, self.sigma) * F32(-0.5 * max(mean - 30, 0.0))
        d_top, d_bot = trab_z
        frac = vb.fracture
        if frac is not None:  # compacted trabeculae near the fractured endplate
            band = coverage(np.minimum(-d_top, -d_bot) - F32(4.0), self.sigma * 2)
            value += band * F32(60.0 * frac["height_loss"] + 20.0)
        for e in sp["endplate_sclerosis"]:
            if e["level"] == vb.name:
                dd = -(d_top if e["side"] == "upper" else d_bot) - F32(e["thickness_mm"])
                value += coverage(dd, self.sigma) * F32(e["extra_hu"])
        # spheres of their own HU: the spine's bone islands, then (generator 2.2.0) L1 and L2's islands
        # and focal fat, whose HU is the image's (painted values leave the water offset out)
        spheres = [(s, s["hu"]) for s in sp["bone_islands"]] + [(s, s["hu"] - self.water_offset) for s in self.lesions]
        for sphere, hu in spheres:
            if sphere["level"] == vb.name:
                c = np.array(sphere["position"]) * np.array([a, b, h])
                d = np.sqrt((x - F32(c[0])) ** 2 + (y - F32(c[1])) ** 2 + (z - F32(c[2])) ** 2) - F32(sphere["radius_mm"])
                value += coverage(d, self.sigma) * (F32(hu) - value)
        for sn in sp["schmorl_nodes"]:
            if sn["level"] == vb.name:
                zc = h if sn["side"] == "upper" else -h
                c = np.array(sn["position"]) * np.array([a, b])
                d = np.sqrt((x - F32(c[0])) ** 2 + (y - F32(c[1])) ** 2 + ((z - F32(zc)) * F32(sn["radius_mm"] / sn["depth_mm"])) ** 2) - F32(sn["radius_mm"])
                rim = coverage(d - F32(1.5), self.sigma) - coverage(d, self.sigma)
                value += rim * F32(300.0)
                value += coverage(d, self.sigma) * (F32(self.tissue["disc"]) - value)
        return value


def body_distance(sp: dict, vb: Vertebra, x, y, z):
    """Signed distance-like field of a vertebral body in its local frame (x lateral, y anterior, z superior):
    <= 0 inside; also the trabecular core's and the endplates' (d_top, d_bot). ``sp``: the spine parameters."""
    a, b, h = vb.half_width, vb.half_depth, vb.half_height
    frac = vb.fracture
    widen = 1.0
    conc = vb.concavity
    if frac is not None and frac["type"] == "crush":
        widen = 1.0 + 0.25 * frac["height_loss"]
    b_post = b * (1.0 - vb.posterior_flattening)
    yy = np.where(y < 0, y * F32(b / b_post), y)
    d_r = ellipse_distance(x, yy, a * widen, b * widen)
    rho2 = np.minimum(x * x * F32(1 / (a * a)) + yy * yy * F32(1 / (b * b)), F32(1.0))
    cup = (F32(1.0) - rho2) * F32(conc)
    top = F32(h) - cup
    bot = F32(-h) + cup
    if frac is not None:
        loss = frac["height_loss"]
        if frac["type"] == "wedge":  # anterior height lost
            drop = np.clip((y / F32(b) + F32(1.0)) * F32(0.5), 0.0, 1.0) * F32(loss * h)
            top = top - drop
            bot = bot + drop * F32(0.3)
        elif frac["type"] == "biconcave":
            dent = (F32(1.0) - rho2) * F32(loss * h * 0.9)
            top = top - dent
            bot = bot + dent
    d_top = z - top
    d_bot = bot - z
    d_z = np.maximum(d_top, d_bot)
    d_body = np.maximum(d_r, d_z)
    cort = F32(sp["cortex_mm"])
    endp = F32(sp["endplate_mm"])
    d_trab = np.maximum(d_r + cort, np.maximum(d_top, d_bot) + endp)
    return d_body, d_trab, (d_top, d_bot)


def _patch(full, full_ij, ij):
    """The part of a context array (on patch ``full_ij``) covering ``ij``; zeros outside."""
    fi0, fi1, fj0, fj1 = full_ij
    i0, i1, j0, j1 = ij
    out = np.zeros((j1 - j0, i1 - i0), np.float32)
    a0, a1 = max(i0, fi0), min(i1, fi1)
    b0, b1 = max(j0, fj0), min(j1, fj1)
    if a0 < a1 and b0 < b1:
        out[b0 - j0:b1 - j0, a0 - i0:a1 - i0] = full[b0 - fj0:b1 - fj0, a0 - fi0:a1 - fi0]
    return out


def _torso_distance(u, v, a, b, flat_back=0.2):
    """Signed distance (mm) to a rounded-box torso outline, flatter on the back (v < 0)."""
    vv = np.where(v < 0, v * F32(1.0 + flat_back), v)
    # mix an ellipse with a 4-norm super-ellipse for squarer flanks
    x2 = u * u * F32(1.0 / (a * a))
    y2 = vv * vv * F32(1.0 / (b * b))
    q = x2 + y2
    q4 = x2 * x2 + y2 * y2
    np.sqrt(q4, out=q4)
    q *= F32(0.5)
    q4 *= F32(0.5)
    q += q4
    np.sqrt(q, out=q)
    q -= F32(1.0)
    q *= F32(min(a, b) * 0.9)
    return q


def _outside_circle(params: dict, grid: Grid) -> np.ndarray | None:
    """Pixels beyond the reconstruction circle of a whole-chest scan (generator 2.0), or None."""
    if "chest_wall" not in params or PRESETS[params["preset"]].get("field_of_view") != "chest":
        return None
    return chest_wall.outside_circle(grid, params["chest_wall"])


def _padding_written(params: dict, grid: Grid) -> int | None:
    """The padding value the scan holds beyond its circle, where one lies below air, else None."""
    if _outside_circle(params, grid) is None:
        return None
    value = params["chest_wall"]["circle"]["padding_hu"]
    return value if value < HU_MIN else None


def render_volume(params: dict):
    """Render CT (int16 HU), body labels and vertebra levels on the preset's grid."""
    anatomy = build_anatomy(params)
    pose = make_pose(params["pose"])
    grid = make_grid(params, anatomy.vertebrae, pose, anatomy.profile)
    r = Renderer(params, anatomy, pose, grid)
    sc = params["scanner"]
    nk, nj, ni = grid.shape
    step, m, offsets, weights = scanner.subslice_plan(grid.spacing[2], grid.slice_thickness_mm, grid.z_blur_extra_mm)
    ct = np.empty((nk, nj, ni), np.int16)
    labels = np.zeros((nk, nj, ni), np.uint8)
    levels = np.zeros((nk, nj, ni), np.uint8)
    rng = np.random.Generator(np.random.PCG64(sc["noise_seed"]))
    training = params["preset"] == "training"
    noise_pixel = (grid.spacing[0], grid.spacing[1])
    conf = params.get("density")
    sharp = conf is not None and conf["kernel"] == "sharp"  # generator 2.2.0: a sharp-kernel series
    noise_sigma = sc["kernel_sigma_mm"] * (density.SHARP_KERNEL_GRAIN_SCALE if sharp else 1.0)
    bank = scanner.noise_bank(rng, (nj, ni), noise_pixel, noise_sigma, sc["noise_grain_mm"], white=training)
    noise_sd = sc["noise_sd_hu_at_2.5mm"] * np.sqrt(2.5 / max(grid.slice_thickness_mm, 0.5))
    if training:
        noise_sd = sc["noise_sd_hu_at_2.5mm"] * np.sqrt(2.5 / sc["slice_thickness_mm"]) * scanner.TRAINING_IN_PLANE_NOISE_FACTOR
    if conf is not None:
        noise_sd *= conf["kernel_noise_factor"]
    # independent noise fields at the clinical slice positions, interpolated onto the grid
    clin_dz = max(sc["slice_thickness_mm"], sc["slice_spacing_mm"]) if training else max(grid.slice_thickness_mm, grid.spacing[2])
    # slice and sub-slice positions count from the root grid (a box of it shares them)
    root = grid.root
    k_off = grid.offset_kji[0] - root.offset_kji[0]
    z_root = root.origin[2] + np.arange(root.shape[0]) * grid.spacing[2]
    z_out = z_root[k_off:k_off + nk]

    clin_fields: dict[int, np.ndarray] = {}

    def clin(n):
        if n not in clin_fields:
            clin_fields[n] = scanner.noise_slice(rng, bank)
            clin_fields.pop(n - 3, None)
        return clin_fields[n]

    streak_z = []
    for st in sc["streaks"]:
        zc = z_root[0] + st["z_center"] * (z_root[-1] - z_root[0])
        streak_z.append((zc, st))
    cache: dict[int, tuple] = {}
    scale = r.sub
    outside = _outside_circle(params, grid)
    for k in range(nk):
        acc = np.zeros((nj, r.ni_r), np.float32)
        base = (k + k_off) * m
        for off, wgt in zip(offsets, weights):
            key = base + int(off)
            if key not in cache:
                zz = z_root[0] + key * step
                cache[key] = r.render(zz, want_labels=(key % m == 0))
            img, lab, lev = cache[key]
            acc += img * F32(wgt)
            if int(off) == 0:
                if scale > 1:
                    mid = scale // 2
                    labels[k] = lab[:, mid::scale]
                    levels[k] = lev[:, mid::scale]
                else:
                    labels[k] = lab
                    levels[k] = lev
        for key in [c for c in cache if c < base + int(offsets[0]) + m]:
            del cache[key]
        if scale > 1:
            acc = acc.reshape(nj, ni, scale).mean(axis=2)
        # noise from the clinical slices around this one
        pos = (z_out[k] - z_root[0]) / clin_dz
        n0 = int(np.floor(pos))
        f = pos - n0
        if f < 1e-6:
            noise = clin(n0).copy()
        else:
            wa, wb = 1.0 - f, f
            if not training:
                norm = 1.0 / np.sqrt(wa * wa + wb * wb)
                wa, wb = wa * norm, wb * norm
            noise = clin(n0) * F32(wa) + clin(n0 + 1) * F32(wb)
        size = r.an.profile.at(float((z_out[k] - r.pose.translation[2]) / r.pose.rotation[2, 2]))
        sd = noise_sd * ((size["a"] + size["b"]) / 260.0) ** 0.8
        noise *= F32(sd)
        acc += noise
        if r.water_offset:
            acc += F32(r.water_offset)
        for zc, st in streak_z:
            if abs(z_out[k] - zc) < 0.5 * st["z_extent_mm"]:
                spine_c = r.pose.to_world([0.0, size["v_spine"], 0.0])
                cj = (r.y0 - spine_c[1]) / grid.spacing[1]
                ci = (grid.origin[0] - spine_c[0]) / grid.spacing[0]
                acc += scanner.streak_field((nj, ni), noise_pixel, (cj, ci), st["angle_deg"], st["width_mm"],
                                            st["amplitude_hu"])
        np.clip(acc, HU_MIN, HU_MAX, out=acc)
        np.rint(acc, out=acc)
        if outside is not None:  # the vendor's padding value beyond the reconstruction circle
            acc[outside] = params["chest_wall"]["circle"]["padding_hu"]
        ct[k] = acc
    return ct, labels, levels, grid, anatomy, r


LABEL_CONVENTION = (
    "L1 is the first vertebra below the last rib-bearing vertebra, where a vertebra bears a rib when "
    f"its rib is at least {RIB_BEARING_MIN_MM:g} mm long (a rudimentary lumbar rib does not count); "
    "levels are whole vertebrae (body and posterior elements, no ribs) with VerSe ids; "
    "labels are vertebral bodies with their cortical shell (1 = L1, 2 = L2)."
)


def render_case(params: dict):
    """Render one case from its parameters (see :func:`parameters.sample_parameters`)."""
    from ..volume import Volume
    from .case import PhantomCase

    ct, labels, levels, grid, anatomy, r = render_volume(params)
    m = grid.ijk_to_ras
    slope, offset = density.image_calibration(params)
    present = [int(v) for v in np.unique(levels[levels != 0])]  # mostly background: unique of the rest is faster
    meta = {
        "schema": "osteoscreen.phantom/2",
        "seed": params["seed"],
        "generator_version": params["generator_version"],
        "preset": params["preset"],
        **reference_standard(params),  # QCT reading and class (the labels), and the true density
        "trabecular_hu": {v: round(r.trab_hu[v] + r.water_offset, 2) for v in ("L1", "L2")},
        # the image's line of trabecular HU against BMD (2.2.0: with the scanner's water offset and
        # mineral slope and this body's beam hardening) and each body's marrow fat
        "calibration": {"slope_hu_per_mg_cm3": round(slope, 4), "offset_hu": round(offset, 3),
                        "marrow_fat_fraction": round(params["subject"]["marrow_fat_fraction"], 4),
                        "marrow_fat_fraction_by_level": {v: round(density.level_marrow_fat(params, v), 4)
                                                         for v in ("L1", "L2")}},
        "label_values": {"L1": registry.LABEL_OF["L1"], "L2": registry.LABEL_OF["L2"]},
        "label_convention": LABEL_CONVENTION,
        "levels_present": {registry.VERSE_LEVEL_NAMES[v]: v for v in present},
        "vertebrae": [
            {"name": vb.name, "verse_id": vb.level_id, "bmd_mg_cm3": round(vb.bmd_mg_cm3, 2),
             "rib_length_mm": round(vb.rib_length_mm, 1), "rib_bearing": vb.rib_length_mm >= RIB_BEARING_MIN_MM,
             "body_width_mm": round(2 * vb.half_width, 2), "body_depth_mm": round(2 * vb.half_depth, 2),
             "body_height_mm": round(2 * vb.half_height, 2),
             "center_ras_mm": [round(float(c), 2) for c in r.pose.to_world(vb.center)],
             "fracture": vb.fracture}
            for vb in anatomy.vertebrae
        ],
        "rib_pairs": sum(1 for vb in anatomy.vertebrae if vb.rib_length_mm >= RIB_BEARING_MIN_MM),
        # the value beyond the reconstruction circle, where the scan has one (DICOM PixelPaddingValue)
        "padding_hu": _padding_written(params, grid),
        "grid": grid.as_dict(),
        "parameters": params,
    }
    meta = json.loads(json.dumps(meta, default=_jsonable))
    return PhantomCase(Volume(ct, m), Volume(labels, m.copy()), Volume(levels, m.copy()), meta)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o)}")
