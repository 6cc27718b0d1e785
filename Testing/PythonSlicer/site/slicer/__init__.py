"""``slicer`` as PythonSlicer provides it, built on the slicer-core wheel's real classes.

Slicer's ``Base/Python/slicer/__init__.py`` loads its ``kits`` (MRML, vtkAddon,
vtkSegmentationCore, vtkITK, vtkTeem, base logic) and nothing else outside the
application: module classes such as ``vtkSlicerSegmentationsModuleLogic`` are
added to ``slicer`` only by the running application. The same kits, no more.
"""

from slicer_core.vtkAddonPython import *  # noqa: F401,F403
from slicer_core.vtkSegmentationCore import *  # noqa: F401,F403
from slicer_core.vtkITK import *  # noqa: F401,F403
from slicer_core.vtkTeem import *  # noqa: F401,F403
from slicer_core.vtkRemoteIO import *  # noqa: F401,F403
from slicer_core.MRMLCore import *  # noqa: F401,F403
from slicer_core.MRMLCLI import *  # noqa: F401,F403
from slicer_core.MRMLLogic import *  # noqa: F401,F403
from slicer_core.MRMLDisplayableManager import *  # noqa: F401,F403
from slicer_core.vtkSlicerBaseLogic import *  # noqa: F401,F403
