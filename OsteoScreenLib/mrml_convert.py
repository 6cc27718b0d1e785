"""Thin adapters between :class:`Volume` and MRML volume nodes."""

from __future__ import annotations

import numpy as np
from vtkmodules.util import numpy_support

from . import vtk_classes as vtk
from .volume import Volume


def matrix_to_numpy(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpy_to_matrix(a: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def volume_from_node(node, copy: bool = True) -> Volume:
    """Copy the voxels and IJK-to-RAS matrix of a scalar volume node.

    A parent transform is not applied: the volume is in the node's own frame.
    ``copy=False`` shares the node's voxel buffer instead (the array keeps it alive): only for a
    node that nothing else uses or changes afterwards, e.g. one read into a private scene.
    """
    image = node.GetImageData()
    i, j, k = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    comps = scalars.GetNumberOfComponents()
    array = numpy_support.vtk_to_numpy(scalars)
    if copy:
        array = array.copy()
    array = array.reshape((k, j, i) if comps == 1 else (k, j, i, comps))
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return Volume(array, matrix_to_numpy(m))


def image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    array = np.ascontiguousarray(array)
    k, j, i = array.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=1)
    image.GetPointData().SetScalars(vtk_array)
    return image


def volume_to_node(scene, volume: Volume, name: str = "CT", class_name: str = "vtkMRMLScalarVolumeNode"):
    """Add a new volume node (scalar or label map) holding ``volume`` to ``scene``."""
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(numpy_to_matrix(volume.ijk_to_ras))
    node.SetAndObserveImageData(image_data_from_array(volume.array))
    return node
