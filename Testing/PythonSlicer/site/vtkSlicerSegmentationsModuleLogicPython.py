"""The segmentations module's own wrapping, importable under PythonSlicer by this name
(the real one is a compiled module on the launcher's qt-loadable-modules path)."""

from slicer_core.vtkSlicerSegmentationsModuleLogic import *  # noqa: F401,F403
