"""Agreement between two segmentations on one grid: Dice and 95 % Hausdorff distance (mm)."""

from __future__ import annotations

import numpy as np

from .volume import Volume

_CHUNK = 2048


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / denom) if denom else 1.0


def surface_points(mask: np.ndarray, grid: Volume) -> np.ndarray:
    """World positions (mm) of the mask's boundary voxels (face neighbours outside)."""
    m = mask.astype(bool)
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(p, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return grid.voxel_centers_ras(np.argwhere(m & ~inner))


def _nearest(from_pts: np.ndarray, to_pts: np.ndarray) -> np.ndarray:
    out = np.empty(len(from_pts))
    for s in range(0, len(from_pts), _CHUNK):
        d2 = ((from_pts[s : s + _CHUNK, None, :] - to_pts[None, :, :]) ** 2).sum(-1)
        out[s : s + _CHUNK] = np.sqrt(d2.min(axis=1))
    return out


def hausdorff95(a: np.ndarray, b: np.ndarray, grid: Volume) -> float:
    """95th percentile of the symmetric surface distances in mm (nan if a mask is empty)."""
    pa, pb = surface_points(a, grid), surface_points(b, grid)
    if len(pa) == 0 or len(pb) == 0:
        return float("nan")
    return float(np.percentile(np.concatenate([_nearest(pa, pb), _nearest(pb, pa)]), 95))


def compare_labelmaps(reference: Volume, prediction: np.ndarray, labels: dict[str, int]) -> list[dict]:
    """One row per segment: Dice, HD95 (mm) and volumes (ml); both maps on the grid of ``reference``."""
    voxel_ml = abs(np.linalg.det(reference.ijk_to_ras[:3, :3])) / 1000.0
    rows = []
    for name, value in labels.items():
        r, p = reference.array == value, prediction == value
        rows.append({
            "segment": name,
            "dsc": round(dice(r, p), 4),
            "hd95_mm": round(hausdorff95(r, p, reference), 2),
            "reference_ml": round(float(r.sum() * voxel_ml), 2),
            "prediction_ml": round(float(p.sum() * voxel_ml), 2),
        })
    return rows


COMPARISON_COLUMNS = (("segment", "Segment"), ("dsc", "DSC"), ("hd95_mm", "HD95 (mm)"),
                      ("reference_ml", "Reference (ml)"), ("prediction_ml", "Compared (ml)"))  # (key, title)


def comparison_csv(rows: list[dict]) -> str:
    """The rows of :func:`compare_labelmaps` as CSV text (``evaluate-segmentation --csv``, the module's export)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[key for key, _ in COMPARISON_COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
