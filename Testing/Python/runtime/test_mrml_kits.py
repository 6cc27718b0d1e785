"""The headless path loads only the MRML kits it uses, and ``import slicer`` still works in full after it."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys
from OsteoScreenLib.mrml_kits import new_scene, segmentation_converter, segmentations_logic_class

scene = new_scene()
node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
logic = segmentations_logic_class()()
name = segmentation_converter().GetReferenceImageGeometryParameterName()
assert node is not None and logic is not None and name, (node, logic, name)
assert "slicer" not in sys.modules and "slicer_core" not in sys.modules
unused = sorted(m for m in ("slicer_core.vtkSlicerVolumeRenderingModuleLogic", "slicer_core.vtkSlicerMarkupsModuleLogic",
                            "slicer_core.vtkSlicerCropVolumeModuleLogic") if m in sys.modules)
assert not unused, unused
import slicer  # the full package, afterwards: the same classes

assert slicer.vtkMRMLScene is type(scene) and slicer.vtkSlicerSegmentationsModuleLogic is type(logic)
assert slicer.vtkSlicerVolumeRenderingModuleLogic and slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
print("ok")
"""


def test_the_headless_path_loads_only_its_kits_and_slicer_still_imports_in_full():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
