"""Targets of the vertebra counter: every vertebral body on the coarse grid, short of its
endplates, marked by whether the vertebra bears ribs.

    python -m training.segmentation.count_targets --preset chest-coarse --split train

The counter (``OsteoScreenLib.vertebra_count``) reads the whole chest: it marks each vertebral
body, class 1 where the vertebra bears a rib pair (T1 to the last thoracic), class 2 where it does
not (C6, C7, the lumbar vertebrae), and the levels follow by counting. (A first try marked only a
small core at each body's centre, one slice high on the 5 mm grid: after 1500 iterations the
network marked the whole column with no dip between bodies; the bodies, a local image feature
bounded by the discs, are learnt faster.)

The coarse samples are cached without their grid: the anatomy (cheap, no rendering) gives each
body's centre in world mm, the phantom's CT grid gives the coarse grid before its crop to the
body, and the crop's whole-voxel offset is found where the cached L1 and L2 labels lie.
Targets are saved beside the coarse samples, ``{preset}-v{generator}/count/{seed}.npz`` (``y`` only).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from OsteoScreenLib import registry
from OsteoScreenLib.resample import axis_aligned_grid, bounds_ras
from OsteoScreenLib.volume import Volume

from .config import PREPROCESSING
from .prepare import DEFAULT_CACHE, cache_folder, sample_paths, seeds_of
from .samples import load, save

RIB_BEARING, NO_RIBS = registry.COUNT_CLASSES["rib-bearing body"], registry.COUNT_CLASSES["body without ribs"]
# Each body is marked as an elliptic cylinder in its own frame: its width and depth times
# BODY_IN_PLANE, its height less BODY_END_TRIM_MM at each endplate, so that the disc between two
# bodies (4-12 mm) becomes a gap of at least 8 mm: a background slice on the 5 mm grid, where the
# mass per slice dips and the counter splits one body from the next (vertebra_count.split_along_s).
BODY_IN_PLANE = 0.9
BODY_END_TRIM_MM = 2.0
MIN_HALF_HEIGHT_MM = 3.0
MAX_REGISTRATION_ERROR_MM = 6.0


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


def coarse_grid(bodies: Bodies, y: np.ndarray) -> np.ndarray:
    """The cached coarse sample's grid: the uncropped coarse grid moved by the crop's whole-voxel
    offset, found by putting the L1 and L2 labels where the anatomy has those bodies."""
    lo, hi = bounds_ras(bodies.ct)
    spacing = PREPROCESSING["coarse"]["spacing_mm"]
    grid, _ = axis_aligned_grid(lo, hi, spacing)
    names, centres = bodies.names, bodies.centres
    offsets = []
    for name in registry.VERTEBRA_NAMES:
        kji = np.argwhere(y == registry.LABEL_OF[name])
        if len(kji) == 0:
            continue
        uncropped = np.linalg.solve(grid, np.append(centres[names.index(name)], 1.0))[:3][::-1]
        offsets.append(uncropped - kji.mean(axis=0))
    if not offsets:
        raise ValueError("no L1 or L2 label in the sample: its grid cannot be placed")
    start = np.round(np.mean(offsets, axis=0))
    error = max(float(np.abs(o - start).max()) for o in offsets) * spacing
    if error > MAX_REGISTRATION_ERROR_MM:
        raise ValueError(f"L1/L2 labels lie {error:.1f} mm from the anatomy's bodies")
    out = grid.copy()
    out[:3, 3] = grid[:3, :3] @ start[::-1] + grid[:3, 3]
    return out


def count_target(params: dict, y: np.ndarray) -> np.ndarray:
    """Class per coarse voxel: 0 background, RIB_BEARING or NO_RIBS within each body's core."""
    bodies = bodies_of(params)
    grid = coarse_grid(bodies, y)
    target = np.zeros(y.shape, np.uint8)
    spacing = PREPROCESSING["coarse"]["spacing_mm"]
    for centre, rib, frame, (a, b, h) in zip(bodies.centres, bodies.ribs, bodies.frames, bodies.half_axes):
        a, b, h = a * BODY_IN_PLANE, b * BODY_IN_PLANE, max(h - BODY_END_TRIM_MM, MIN_HALF_HEIGHT_MM)
        reach = int(np.ceil(max(a, b, h) / spacing)) + 1
        c = np.round(np.linalg.solve(grid, np.append(centre, 1.0))[:3][::-1]).astype(int)  # (k, j, i)
        lo, hi = np.maximum(c - reach, 0), np.minimum(c + reach + 1, y.shape)
        if np.any(hi <= lo):
            continue  # the body lies outside the sample
        kji = np.indices(hi - lo).reshape(3, -1).T + lo
        ras = (grid[:3, :3] @ kji[:, ::-1].T).T + grid[:3, 3]
        local = (ras - centre) @ frame  # vertebra frame: x = R, y = A, z = S of the body
        inside = kji[((local[:, 0] / a) ** 2 + (local[:, 1] / b) ** 2 <= 1.0) & (np.abs(local[:, 2]) <= h)]
        target[tuple(inside.T)] = RIB_BEARING if rib else NO_RIBS
    return target


def count_path(cache: Path, preset: str, seed: int) -> Path:
    return cache_folder(cache, preset) / "count" / f"{seed}.npz"


def make_one(args: tuple[Path, str, int]) -> tuple[int, str]:
    from OsteoScreenLib.phantom import sample_parameters

    cache, preset, seed = args
    out = count_path(cache, preset, seed)
    coarse = sample_paths(cache, preset, seed)[0]
    if out.exists() or not coarse.exists():
        return seed, "skipped"
    try:
        y = count_target(sample_parameters(seed, preset), load(coarse)["y"])
    except ValueError as e:
        return seed, f"not placed: {e}"
    save(out, {"y": y})
    return seed, "made"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="chest-coarse")
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [(a.cache, a.preset, s) for s in seeds_of(a.split, a.count)]
    t0, outcomes = time.perf_counter(), {}
    with Pool(a.workers) as pool:
        for seed, outcome in pool.imap_unordered(make_one, jobs):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome.startswith("not placed"):
                print(f"seed {seed}: {outcome}", flush=True)
    print(f"{a.preset} {a.split}: {outcomes} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
