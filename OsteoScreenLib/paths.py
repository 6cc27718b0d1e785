"""Where the extension's resources are, in the source tree and in an installed extension.

Both layouts keep ``OsteoScreenLib/`` and ``Resources/`` side by side (the
CMake build installs them next to the module file), so one rule serves both.
``OSTEOSCREEN_RESOURCES`` overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path


def resources_dir() -> Path:
    override = os.environ.get("OSTEOSCREEN_RESOURCES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "Resources"


def models_dir() -> Path:
    return resources_dir() / "Models"
