"""Clean-up of label masks with VTK's connectivity filter (no scipy at run time)."""

from __future__ import annotations

import numpy as np
from vtkmodules.util import numpy_support

from . import vtk_classes as vtk
from .mrml_convert import image_data_from_array


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-connected components of a boolean mask: (labels, sizes), labels 1.. by decreasing size."""
    image = image_data_from_array(mask.astype(np.uint8))
    f = vtk.vtkImageConnectivityFilter()
    f.SetInputData(image)
    f.SetScalarRange(1, 1)
    f.SetExtractionModeToAllRegions()
    f.SetLabelModeToSizeRank()
    f.SetLabelScalarTypeToInt()
    f.Update()
    labels = numpy_support.vtk_to_numpy(f.GetOutput().GetPointData().GetScalars()).reshape(mask.shape)
    sizes = numpy_support.vtk_to_numpy(f.GetExtractedRegionSizes()) if f.GetNumberOfExtractedRegions() else np.zeros(0)
    return labels, np.asarray(sizes)


def largest_component(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask.astype(bool)
    labels, _ = _components(mask)
    return labels == 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not reach the array border."""
    if not mask.any():
        return mask.astype(bool)
    labels, _ = _components(~mask.astype(bool))
    border = np.unique(np.concatenate([
        labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()
    ]))
    enclosed = (labels > 0) & ~np.isin(labels, border)
    return mask.astype(bool) | enclosed


def components(mask: np.ndarray, min_size: int = 1) -> list[np.ndarray]:
    """Face-connected components of at least ``min_size`` voxels, largest first."""
    if not mask.any():
        return []
    labels, sizes = _components(mask)
    return [labels == i + 1 for i, n in enumerate(sizes) if n >= min_size]


def dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """3D binary dilation with the 6-neighbourhood, repeated (pure numpy)."""
    m = mask.astype(bool)
    for _ in range(iterations):
        p = np.pad(m, 1)
        m = (p[1:-1, 1:-1, 1:-1] | p[:-2, 1:-1, 1:-1] | p[2:, 1:-1, 1:-1] | p[1:-1, :-2, 1:-1] | p[1:-1, 2:, 1:-1]
             | p[1:-1, 1:-1, :-2] | p[1:-1, 1:-1, 2:])
    return m
