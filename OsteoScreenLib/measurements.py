"""Per-vertebra measurements on a label map with its geometry (pure numpy)."""

from __future__ import annotations

import numpy as np

from .registry import VERTEBRAE
from .resample import crop_to_mask
from .volume import Volume


def _vertebra_voxels(labels: Volume):
    """(spec, its box, its voxels' indices in that box) of each vertebra present in the label map."""
    labelled = crop_to_mask(labels, labels.array > 0, margin=0)  # one pass over the whole grid
    for spec in VERTEBRAE:
        box = None if labelled is None else crop_to_mask(labelled, labelled.array == spec.label, margin=0)
        if box is not None:
            yield spec, box, np.argwhere(box.array == spec.label)


def vertebra_centroids(labels: Volume) -> dict[str, np.ndarray]:
    """Centroid (RAS mm, unrounded) of each vertebra present in an OsteoScreen label map."""
    return {spec.name: box.voxel_centers_ras(kji.mean(axis=0))[0] for spec, box, kji in _vertebra_voxels(labels)}


def vertebra_stats(labels: Volume) -> dict[str, dict]:
    """Volume (ml) and centroid (RAS mm) of each vertebra present in an OsteoScreen label map."""
    voxel_ml = float(abs(np.linalg.det(labels.ijk_to_ras[:3, :3]))) / 1000.0
    out = {}
    for spec, box, kji in _vertebra_voxels(labels):
        centroid = box.voxel_centers_ras(kji.mean(axis=0))[0]
        out[spec.name] = {
            "volume_ml": round(len(kji) * voxel_ml, 3),
            "voxels": int(len(kji)),
            "centroid_mm": [round(float(c), 2) for c in centroid],
        }
    return out
