"""Patient pose and the image grid of each preset (world = RAS mm).

The patient lies off-centre and slightly tilted: ``world = R @ body + t``.
The grid is axis-aligned like a reconstructed axial CT (i towards the
patient's left, j towards posterior, k towards superior: an LPS image), so
the tilt lives in the anatomy, not in the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def ijk_to_ras(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = GRID_DIRECTIONS * self.spacing[None, :]
        m[:3, 3] = self.origin
        return m

    def as_dict(self) -> dict:
        return {"shape_kji": list(self.shape), "spacing_ijk_mm": [float(s) for s in self.spacing],
                "origin_ras_mm": [float(o) for o in self.origin], "slice_thickness_mm": self.slice_thickness_mm,
                "z_resampling_half_width_mm": self.z_blur_extra_mm, "in_plane_sigma_mm": self.in_plane_sigma_mm,
                "orientation": "LPS"}


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
    if preset in ("chest", "chest-coarse"):
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
