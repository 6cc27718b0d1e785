"""OsteoScreen logic: runs inside 3D Slicer and headless on the ``slicer-core`` wheel.

Layers (imports go one way): ``cli`` -> ``mrml_logic`` -> pure core
(``registry``, ``volume``, ``ct_io``, ``phantom`` ...). Nothing here imports
torch, MONAI or Qt.
"""

__version__ = "0.1.0"
