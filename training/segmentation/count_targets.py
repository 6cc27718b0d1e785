"""Targets of the vertebra counter: every vertebral body on the coarse grid, short of its
endplates, marked by whether the vertebra bears ribs.

    python -m training.segmentation.prepare --stages count --preset chest-count --split train

The counter (``OsteoScreenLib.vertebra_count``) reads the whole chest: it marks each vertebral
body, class 1 where the vertebra bears a rib pair (T1 to the last thoracic), class 2 where it does
not (C6, C7, the lumbar vertebrae), and the levels follow by counting. (A first try marked only a
small core at each body's centre, one slice high on the 5 mm grid: after 1500 iterations the
network marked the whole column with no dip between bodies; the bodies, a local image feature
bounded by the discs, are learnt faster.)

The counter reads the CT on a grid of 5 mm in-plane and 2.5 mm along the body axis
(``config.PREPROCESSING["count"]``): at 5 mm slices the discs blur into the bodies (a first try on
the coarse stage's 5 mm samples marked the whole column as one). The anatomy (no rendering) gives
each body's centre, axes and ribs in world mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from OsteoScreenLib import registry
from OsteoScreenLib.volume import Volume

from .config import PREPROCESSING

RIB_BEARING, NO_RIBS = registry.COUNT_CLASSES["rib-bearing body"], registry.COUNT_CLASSES["body without ribs"]
DISC = registry.COUNT_CLASSES["disc"]
# Each body is marked as an elliptic cylinder in its own frame: its width and depth times
# BODY_IN_PLANE, its height less BODY_END_TRIM_MM at each endplate, so that the disc between two
# bodies (4-12 mm) becomes a gap of at least 8 mm: a background slice on the 5 mm grid, where the
# mass per slice dips and the counter splits one body from the next (vertebra_count.split_along_s).
BODY_IN_PLANE = 0.9
BODY_END_TRIM_MM = 2.0
MIN_HALF_HEIGHT_MM = 3.0


@dataclass
class Bodies:
    """Every vertebral body of a phantom (world mm), and the phantom CT's grid (an empty array
    of its shape): from the anatomy alone, without rendering."""
    names: list[str]
    centres: np.ndarray  # (n, 3)
    half_axes: np.ndarray  # (n, 3): half width, half depth, half height (mm)
    ribs: np.ndarray  # (n,) the vertebra bears a rib pair
    frames: list[np.ndarray]  # the body's axes in world coordinates
    ct: Volume


def bodies_of(params: dict) -> Bodies:
    from OsteoScreenLib.phantom.geometry import make_grid, make_pose
    from OsteoScreenLib.phantom.render import build_anatomy

    anatomy = build_anatomy(params)
    pose = make_pose(params["pose"])
    grid = make_grid(params, anatomy.vertebrae, pose, anatomy.profile)
    return Bodies([vb.name for vb in anatomy.vertebrae],
                  np.array([pose.to_world(vb.center) for vb in anatomy.vertebrae]),
                  np.array([(vb.half_width, vb.half_depth, vb.half_height) for vb in anatomy.vertebrae]),
                  np.array([vb.rib_length_mm > 0 for vb in anatomy.vertebrae]),
                  [pose.rotation @ vb.frame for vb in anatomy.vertebrae],
                  Volume(np.broadcast_to(np.zeros((), np.uint8), grid.shape), grid.ijk_to_ras))


def count_target(bodies: Bodies, grid: np.ndarray, shape) -> np.ndarray:
    """Class per voxel of the counter's grid (``grid``: voxel -> RAS, ``shape``: k, j, i):
    0 background, RIB_BEARING or NO_RIBS within each body (short of its endplates)."""
    target = np.zeros(shape, np.uint8)
    spacing = np.abs(np.diag(grid)[:3])[::-1]  # k, j, i
    n = len(bodies.names)
    ends = []  # each body's trimmed upper and lower end centres (world), for the discs between them
    for v, (centre, rib, frame, (a, b, h)) in enumerate(zip(bodies.centres, bodies.ribs, bodies.frames, bodies.half_axes)):
        a, b, h = a * BODY_IN_PLANE, b * BODY_IN_PLANE, max(h - BODY_END_TRIM_MM, MIN_HALF_HEIGHT_MM)
        ends.append((centre + frame[:, 2] * h, centre - frame[:, 2] * h, a, b))
        _paint(target, grid, spacing, centre, frame, a, b, h, RIB_BEARING if rib else NO_RIBS)
    for v in range(n - 1):  # the disc (with the trimmed endplates) from one body's lower end to the next's upper end
        lower_end, (upper_end, _, a2, b2) = ends[v][1], ends[v + 1]
        axis = lower_end - upper_end
        length = float(np.linalg.norm(axis))
        if length < 1e-3:
            continue
        frame = np.array(bodies.frames[v], float).copy()
        frame[:, 2] = axis / length  # along the spine from the lower body's top to the upper body's bottom
        a, b = (ends[v][2] + a2) / 2, (ends[v][3] + b2) / 2
        _paint(target, grid, spacing, (lower_end + upper_end) / 2, frame, a, b, length / 2, DISC, only_background=True)
    return target


def _paint(target: np.ndarray, grid: np.ndarray, spacing: np.ndarray, centre, frame, a: float, b: float, h: float,
           value: int, only_background: bool = False) -> None:
    """Mark the elliptic cylinder (half axes a, b; half height h along the frame's third column)."""
    reach = np.ceil(max(a, b, h) / spacing).astype(int) + 1
    c = np.round(np.linalg.solve(grid, np.append(centre, 1.0))[:3][::-1]).astype(int)  # (k, j, i)
    lo, hi = np.maximum(c - reach, 0), np.minimum(c + reach + 1, target.shape)
    if np.any(hi <= lo):
        return  # outside the scan
    kji = np.indices(hi - lo).reshape(3, -1).T + lo
    ras = (grid[:3, :3] @ kji[:, ::-1].T).T + grid[:3, 3]
    local = (ras - np.asarray(centre, float)) @ frame  # x = R, y = A, z = along the axis
    inside = kji[((local[:, 0] / a) ** 2 + (local[:, 1] / b) ** 2 <= 1.0) & (np.abs(local[:, 2]) <= h)]
    if only_background:
        inside = inside[target[tuple(inside.T)] == 0]
    target[tuple(inside.T)] = value


def count_sample(params: dict, ct: Volume) -> dict:
    """One training sample of the counter: the CT on its grid (the run-time preprocessing) and the
    bodies' classes on the same grid."""
    from OsteoScreenLib.segmenter import coarse_input

    x, grid = coarse_input(ct, PREPROCESSING["count"])
    return {"x": x.astype(np.float16), "y": count_target(bodies_of(params), grid, x.shape[1:])}
