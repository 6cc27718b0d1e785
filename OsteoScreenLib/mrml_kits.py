"""Slicer's MRML classes for the headless path, loading only the kits it uses.

``import slicer`` on the ``slicer-core`` wheel loads every kit the wheel holds (markups, volume
rendering, displayable managers, CLI modules ... about 0.2 s of CPU more than the few a command
needs to read a CT and write a segmentation). Here a kit is loaded as a submodule of
``slicer_core`` without the package's ``__init__`` (which imports all kits): for the time of the
import, ``slicer_core`` is a bare package of the same folder; afterwards it is left unimported, so
a later ``import slicer`` (the Slicer module's logic, the tests) runs in full and finds the kits
already loaded, the same class objects.

Wherever ``slicer`` is imported already (inside the Slicer application, or after the logic) its
classes are used as they are. The classes are the same C++ classes either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

_LOCK = threading.Lock()  # one kit loaded at a time: the bare package must not vanish under another


def kit(name: str):
    """The Python module of one ``slicer_core`` kit (``MRMLCore``, ``vtkSegmentationCore``,
    ``vtkSlicerSegmentationsModuleLogic``), or ``slicer`` itself where it is loaded or the kits
    are not laid out as in the wheel."""
    if "slicer" in sys.modules:
        return sys.modules["slicer"]
    full = f"slicer_core.{name}"
    if full in sys.modules:
        return sys.modules[full]
    with _LOCK:
        if "slicer_core" in sys.modules:  # the package itself, already imported in full
            return importlib.import_module(full)
        spec = importlib.util.find_spec("slicer_core")
        if spec is None or not spec.submodule_search_locations:
            import slicer

            return slicer
        bare = types.ModuleType("slicer_core")
        bare.__path__ = list(spec.submodule_search_locations)
        bare.__spec__ = spec
        sys.modules["slicer_core"] = bare
        try:
            return importlib.import_module(full)  # its dependencies among the kits load the same way
        finally:
            if sys.modules.get("slicer_core") is bare:
                del sys.modules["slicer_core"]


def new_scene():
    """A new, private MRML scene."""
    return kit("MRMLCore").vtkMRMLScene()


def segmentation_converter():
    """Slicer's ``vtkSegmentationConverter`` class."""
    return kit("vtkSegmentationCore").vtkSegmentationConverter


def segmentations_logic_class():
    """Slicer's segmentations module logic class, wherever this Python finds it.

    Inside the application it is ``slicer.vtkSlicerSegmentationsModuleLogic``; under
    ``PythonSlicer`` the ``slicer`` package holds only the base kits, and the module's
    own wrapping ``vtkSlicerSegmentationsModuleLogicPython`` is on the path instead.
    """
    try:
        from vtkSlicerSegmentationsModuleLogicPython import vtkSlicerSegmentationsModuleLogic
    except ImportError:  # the slicer-core wheel (and the application) add it to ``slicer``
        return kit("vtkSlicerSegmentationsModuleLogic").vtkSlicerSegmentationsModuleLogic
    return vtkSlicerSegmentationsModuleLogic
