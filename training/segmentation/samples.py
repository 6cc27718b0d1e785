"""Training samples of both stages, built with the run-time preprocessing itself.

A phantom case gives one coarse sample (the whole CT on the coarse grid) and one
fine sample (a 1 mm box around L1-L2, hints from perturbed reference labels).
Samples are cached as .npz (arrays only, loaded with allow_pickle=False).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from OsteoScreenLib.resample import axis_aligned_grid, crop_to_grid, sample
from OsteoScreenLib.segmenter import coarse_input, fine_input
from OsteoScreenLib.volume import Volume

from .config import CENTER_JITTER_MM, HINT_SHIFT_MM, PREPROCESSING


def one_hot(labels: Volume, n: int = 3) -> Volume:
    return labels.with_array(np.stack([labels.array == c for c in range(n)], -1).astype(np.float32))


def labels_on(labels: Volume, grid: np.ndarray, shape) -> np.ndarray:
    """Reference labels on a network grid: linear interpolation of one-hot, then argmax."""
    p = sample(one_hot(crop_to_grid(labels, grid, shape)), grid, shape, order=1, fill=0.0, antialias=False)
    p[..., 0] += 1e-6  # ties and outside -> background
    return np.argmax(p, axis=-1).astype(np.uint8)


def coarse_sample(ct: Volume, labels: Volume) -> dict:
    x, grid = coarse_input(ct, PREPROCESSING["coarse"])
    y = labels_on(labels, grid, x.shape[1:])
    return {"x": x.astype(np.float16), "y": y}


def fine_sample(ct: Volume, labels: Volume, rng: np.random.Generator, coarse: Volume | None = None) -> dict:
    """One fine-stage sample. ``coarse``: the coarse stage's probabilities on this CT, used as
    the hints when its L1 and L2 lie near the truth (so the fine stage learns the hints it
    gets at run time); otherwise the hints are perturbed reference labels."""
    cfg = PREPROCESSING["fine"]
    kji = np.argwhere(labels.array > 0)
    center = labels.voxel_centers_ras(kji.mean(axis=0))[0] + rng.uniform(-1, 1, 3) * CENTER_JITTER_MM
    if coarse is not None and levels_agree(coarse, labels):
        hints = Volume(coarse.array, coarse.ijk_to_ras.copy())
        hints.ijk_to_ras[:3, 3] += rng.uniform(-1, 1, 3) * HINT_SHIFT_MM / 2
        x, grid = fine_input(ct, hints, center, cfg)
        return {"x": x.astype(np.float16), "y": labels_on(labels, grid, x.shape[1:])}
    # hints: reference labels blurred to the coarse spacing and shifted, like a coarse prediction
    coarse_cfg = PREPROCESSING["coarse"]
    lo, hi = labels.voxel_centers_ras(kji.min(axis=0)), labels.voxel_centers_ras(kji.max(axis=0))
    lo, hi = np.minimum(lo, hi)[0] - 30.0, np.maximum(lo, hi)[0] + 30.0
    hint_grid, hint_shape = axis_aligned_grid(lo, hi, coarse_cfg["spacing_mm"])
    hint_grid[:3, 3] += rng.uniform(-1, 1, 3) * HINT_SHIFT_MM
    near = one_hot(crop_to_grid(labels, hint_grid, hint_shape))
    hints = Volume(sample(near, hint_grid, hint_shape, order=1, fill=0.0, antialias=False), hint_grid)
    hints.array[..., 0] = np.where(hints.array.sum(-1) == 0, 1.0, hints.array[..., 0])
    x, grid = fine_input(ct, hints, center, cfg)
    y = labels_on(labels, grid, x.shape[1:])
    return {"x": x.astype(np.float16), "y": y}


def levels_agree(coarse: Volume, labels: Volume, tolerance_mm: float = 10.0) -> bool:
    """True when the coarse L1 and L2 centroids lie within ``tolerance_mm`` of the reference ones."""
    pred = np.argmax(coarse.array, axis=-1)
    for value in (1, 2):
        p, r = np.argwhere(pred == value), np.argwhere(labels.array == value)
        if len(p) == 0 or len(r) == 0:
            return False
        d = coarse.voxel_centers_ras(p.mean(axis=0))[0] - labels.voxel_centers_ras(r.mean(axis=0))[0]
        if np.linalg.norm(d) > tolerance_mm:
            return False
    return True


def save(path: Path, sample_: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **sample_)
    tmp.replace(path)


def load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
