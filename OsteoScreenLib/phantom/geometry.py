"""Patient pose and the image grid of each preset (world = RAS mm).

The patient lies off-centre and slightly tilted: ``world = R @ body + t``.
The grid is axis-aligned like a reconstructed axial CT (i towards the
patient's left, j towards posterior, k towards superior: an LPS image), so
the tilt lives in the anatomy, not in the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .presets import PRESETS

GRID_DIRECTIONS = np.diag([-1.0, -1.0, 1.0])  # RAS directions of the i, j, k axes (LPS image)


@dataclass
class Pose:
    rotation: np.ndarray  # 3x3 body -> world
    translation: np.ndarray  # world position of the body origin

    def to_world(self, p) -> np.ndarray:
        return self.rotation @ np.asarray(p, float) + self.translation

    def to_body(self, p) -> np.ndarray:
        return self.rotation.T @ (np.asarray(p, float) - self.translation)


def _rot(axis: int, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def make_pose(pose: dict) -> Pose:
    r = _rot(2, pose["yaw_deg"]) @ _rot(1, pose["roll_deg"]) @ _rot(0, pose["pitch_deg"])
    t = np.array([pose["offset_lr_mm"], pose["offset_ap_mm"], pose["table_z_mm"]])
    return Pose(r, t)


@dataclass
class Grid:
    shape: tuple[int, int, int]  # (nk, nj, ni)
    spacing: np.ndarray  # (si, sj, sk) mm
    origin: np.ndarray  # RAS of voxel (0, 0, 0)
    slice_thickness_mm: float  # width of the slice profile along k
    z_blur_extra_mm: float  # half width of an extra triangular profile (resampling), 0 if none
    in_plane_sigma_mm: float  # Gaussian sigma of the in-plane blur
    supersample_i: int  # odd number of sub-columns averaged per output column
    parent: "Grid | None" = None  # the grid this one is a box of (same lattice), or None
    offset_kji: tuple[int, int, int] = (0, 0, 0)  # index of voxel (0, 0, 0) in the parent grid
    extra: dict = field(default_factory=dict)  # more metadata for as_dict

    @property
    def root(self) -> "Grid":
        """The full grid whose lattice (and sub-slice and noise positions) this grid shares."""
        return self if self.parent is None else self.parent.root

    @property
    def ijk_to_ras(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = GRID_DIRECTIONS * self.spacing[None, :]
        m[:3, 3] = self.origin
        return m

    def as_dict(self) -> dict:
        d = {"shape_kji": list(self.shape), "spacing_ijk_mm": [float(s) for s in self.spacing],
             "origin_ras_mm": [float(o) for o in self.origin], "slice_thickness_mm": self.slice_thickness_mm,
             "z_resampling_half_width_mm": self.z_blur_extra_mm, "in_plane_sigma_mm": self.in_plane_sigma_mm,
             "orientation": "LPS"}
        if self.parent is not None:
            d["box_of"] = {"offset_kji": [int(o) for o in self.offset_kji],
                           "shape_kji": list(self.parent.shape),
                           "origin_ras_mm": [float(o) for o in self.parent.origin], **self.extra}
        return d


def spine_point(vertebrae, name: str, fraction: float) -> np.ndarray:
    """Body point on the spine axis: ``fraction`` 0 = upper endplate of ``name``, 1 = lower."""
    vb = next((v for v in vertebrae if v.name == name), None)
    if vb is None:  # e.g. T12 in a spine with 11 rib pairs: use the last vertebra above
        vb = vertebrae[-1] if name.startswith("L") else [v for v in vertebrae if v.name[0] == name[0]][-1]
    return vb.to_body([0.0, 0.0, vb.half_height * (1.0 - 2.0 * fraction)])


def _continuous_index(vertebrae, name, fraction):
    names = [v.name for v in vertebrae]
    if name not in names:
        name = names[-1] if name.startswith("L") else [n for n in names if n[0] == name[0]][-1]
    return names.index(name) + fraction


def _point_at_index(vertebrae, c):
    i = int(np.clip(np.floor(c), 0, len(vertebrae) - 1))
    return spine_point(vertebrae, vertebrae[i].name, float(np.clip(c - i, 0.0, 1.0)))


def make_grid(params: dict, vertebrae, pose: Pose, profile) -> Grid:
    preset = params["preset"]
    spec = PRESETS[preset]
    if "parent" in spec:  # a box of the parent preset's grid
        parent = make_grid({**params, "preset": spec["parent"]}, vertebrae, pose, profile)
        return box_grid(parent, spec, params["fov"]["box_offset_mm"], vertebrae, pose)
    fov, sc = params["fov"], params["scanner"]
    top = spine_point(vertebrae, fov["top"]["level"], fov["top"]["fraction"])
    lv0, f0, lv1, f1 = spec["bottom"]
    c0 = _continuous_index(vertebrae, lv0, f0)
    c1 = _continuous_index(vertebrae, lv1, f1)
    bottom = _point_at_index(vertebrae, c0 + fov["bottom_position"] * (c1 - c0))
    z_top, z_bot = pose.to_world(top)[2], pose.to_world(bottom)[2]
    mid_body = 0.5 * (top + bottom)
    thickness = float(sc["slice_thickness_mm"])
    sigma = float(sc["kernel_sigma_mm"])
    extra = 0.0
    sub_i = 1
    if spec.get("field_of_view") == "chest":
        n = spec["matrix"]
        chest = [vb.center[2] for vb in vertebrae if vb.name in ("T3", "T6", "T9", "L1")]
        widest = 2.0 * max(profile.at(w)["a"] for w in chest) + fov["dfov_margin_mm"]
        p = float(np.clip(widest / n, *spec["pixel_mm"]))
        spacing = np.array([p, p, float(sc["slice_spacing_mm"])])
        center = np.array([fov["center_jitter_mm"][0], fov["center_jitter_mm"][1] - 10.0])
        ni = nj = n
    elif preset == "spine":
        p = float(fov["pixel_mm"])
        b = next(v for v in vertebrae if v.name == "L1")
        span_ap = b.half_depth * 2 + 60.0 + 45.0
        c = pose.to_world(mid_body + np.array([0.0, -0.5 * span_ap + b.half_depth + 22.0, 0.0]))
        center = c[:2] + 0.3 * np.asarray(fov["center_jitter_mm"])
        if fov["orientation"] == "sagittal_slab":
            si = float(fov["slab_mm"])
            sub_i = max(1, int(np.ceil(si / p)) | 1)
            spacing = np.array([si, p, p])
            thickness = p
        else:
            spacing = np.array([p, p, float(min(sc["slice_spacing_mm"], 3.0))])
            thickness = float(min(thickness, 3.0))
        ni = max(8, int(round(fov["crop_width_mm"] / spacing[0])))
        nj = max(8, int(round(span_ap / spacing[1])))
    else:  # training
        v = spec["voxel_mm"]
        spacing = np.array([v, v, v])
        c = pose.to_world(mid_body)
        center = c[:2] + np.asarray(fov["center_jitter_mm"]) + np.array([0.0, 15.0])
        ni = nj = spec["matrix"]
        extra = v  # linear interpolation from the clinical slices onto 1.5 mm
        sigma = float(np.sqrt(sigma**2 + 0.25 * 0.75**2))
    nk = max(2, int(np.floor((z_top - z_bot) / spacing[2])) + 1)
    origin = np.array([center[0] + 0.5 * (ni - 1) * spacing[0], center[1] + 0.5 * (nj - 1) * spacing[1], z_bot])
    return Grid((nk, nj, ni), spacing, origin, thickness, extra, sigma, sub_i)


def _body_world_extent(vb, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (lo, hi) of a vertebral body (its local box, widened for crush fractures)."""
    ext = np.array([vb.half_width, vb.half_depth, vb.half_height]) * 1.15
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * ext
    world = (corners @ vb.frame.T + vb.center) @ pose.rotation.T + pose.translation
    return world.min(axis=0), world.max(axis=0)


def box_grid(parent: Grid, spec: dict, offset_mm, vertebrae, pose: Pose) -> Grid:
    """A box of ``parent`` around the L1-L2 bodies: a sub-lattice of it (same spacing and voxel centres).

    The box is ``spec['box_mm']`` wide in-plane and reaches ``spec['box_z_mm']``
    (above, below) from the midpoint of the L1 and L2 centres, all shifted by
    ``offset_mm`` (RAS); it always holds both bodies with ``box_body_margin_mm``
    and is clipped to the parent grid (a field of view that ends in L2 stays cut).
    """
    l1, l2 = (next(v for v in vertebrae if v.name == n) for n in ("L1", "L2"))
    mid = 0.5 * (pose.to_world(l1.center) + pose.to_world(l2.center)) + np.asarray(offset_mm, float)
    half = np.array([0.5 * spec["box_mm"][0], 0.5 * spec["box_mm"][1]])
    above, below = spec["box_z_mm"]
    lo = np.array([mid[0] - half[0], mid[1] - half[1], mid[2] - below])
    hi = np.array([mid[0] + half[0], mid[1] + half[1], mid[2] + above])
    margin = spec["box_body_margin_mm"]
    for vb in (l1, l2):
        b_lo, b_hi = _body_world_extent(vb, pose)
        lo, hi = np.minimum(lo, b_lo - margin), np.maximum(hi, b_hi + margin)
    # index ranges of the parent voxels whose centres lie in [lo, hi] (world = origin + direction * spacing * index)
    nk, nj, ni = parent.shape
    first, last = [], []
    for axis, n in zip(range(3), (ni, nj, nk)):
        d = GRID_DIRECTIONS[axis, axis] * parent.spacing[axis]
        a, b = sorted(((lo[axis] - parent.origin[axis]) / d, (hi[axis] - parent.origin[axis]) / d))
        first.append(int(np.clip(np.ceil(a - 1e-9), 0, n - 1)))
        last.append(int(np.clip(np.floor(b + 1e-9), first[-1], n - 1)))
    (i0, j0, k0), (i1, j1, k1) = first, last
    if k1 == k0:  # at least two slices, like every grid
        k0, k1 = (k0 - 1, k1) if k1 == nk - 1 else (k0, k1 + 1)
    offset = np.array([i0, j0, k0])
    origin = parent.origin + GRID_DIRECTIONS.diagonal() * parent.spacing * offset
    return Grid((k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1), parent.spacing.copy(), origin, parent.slice_thickness_mm,
                parent.z_blur_extra_mm, parent.in_plane_sigma_mm, parent.supersample_i, parent=parent,
                offset_kji=(k0, j0, i0), extra={"center_ras_mm": [float(c) for c in mid],
                                                  "offset_mm": [float(o) for o in offset_mm]})
