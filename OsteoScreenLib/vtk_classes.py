"""The VTK classes OsteoScreenLib's headless path uses, each from its own kit.

``import vtk`` loads every VTK kit (about 0.6 s at start-up); a command that reads a CT,
segments it and writes the result needs a handful of classes. Modules import this as
``from . import vtk_classes as vtk`` and keep writing ``vtk.vtkImageData``.
"""

from vtkmodules.vtkCommonCore import reference, vtkLogger, vtkObject, vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkImagingMorphological import vtkImageConnectivityFilter

__all__ = ["reference", "vtkImageConnectivityFilter", "vtkImageData", "vtkLogger", "vtkMatrix4x4", "vtkObject",
           "vtkStringArray"]
