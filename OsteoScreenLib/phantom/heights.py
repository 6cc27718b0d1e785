"""The true anterior, middle and posterior heights of a phantom's vertebral body, from its shape.

The truth that fracture assessment is measured against: the renderer's own body shape
(``render.body_distance``) read in the body's local frame on a 0.1 mm grid, with the
bands and mid-sagittal slab of ``registry.FRACTURE_HEIGHT_BANDS`` (as ``fracture.py``
reads them on a label map). The parameter ``height_loss`` of a phantom fracture is not
a Genant height loss: a wedge drops the top at the anterior surface only, so the bands
see less of it; these heights are what Genant grades.
"""

from __future__ import annotations

import numpy as np

from .. import registry
from .render import body_distance
from .spine import Vertebra

STEP_MM = 0.1


def true_heights(params: dict, vb: Vertebra) -> dict[str, float]:
    """Heights (mm) of body ``vb`` of a case with parameters ``params``: position -> median column extent."""
    reach = 2.0 * max(vb.half_width, vb.half_depth, vb.half_height)
    y = np.arange(-reach, reach, STEP_MM, dtype=np.float32)
    z = np.arange(-reach, reach, STEP_MM, dtype=np.float32)
    xs = np.arange(-reach, reach, STEP_MM, dtype=np.float32)
    # width and depth of the body where it is widest: the mid-axial plane
    X, Y = np.meshgrid(xs, y, indexing="ij")
    inside = body_distance(params["spine"], vb, X, Y, np.zeros_like(X))[0] <= 0
    width = np.ptp(xs[inside.any(axis=1)]) + STEP_MM
    half = 0.5 * registry.FRACTURE_SLAB_WIDTH_FRACTION * width
    x = np.linspace(-half, half, 7, dtype=np.float32)
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    inside = body_distance(params["spine"], vb, X, Y, Z)[0] <= 0
    any_ = inside.any(axis=2)
    first = np.argmax(inside, axis=2)
    last = inside.shape[2] - 1 - np.argmax(inside[:, :, ::-1], axis=2)
    extent = np.where(any_, (last - first + 1) * STEP_MM, 0.0)
    rows = np.flatnonzero(any_.any(axis=0))
    anterior, posterior = y[rows[-1]] + STEP_MM / 2, y[rows[0]] - STEP_MM / 2
    depth = anterior - posterior
    out = {}
    for name, (f0, f1) in registry.FRACTURE_HEIGHT_BANDS.items():
        band = (y <= anterior - f0 * depth) & (y >= anterior - f1 * depth)
        cols = extent[:, band]
        out[name] = float(np.median(cols[cols > 0]))
    return out


def true_losses(heights: dict[str, float], neighbour: dict[str, float] | None) -> dict[str, float]:
    """The height losses that Genant grades, from true heights (as ``fracture.grade_body`` defines them)."""
    out = {"wedge": 1.0 - heights["anterior"] / heights["posterior"],
           "biconcave": 1.0 - heights["middle"] / max(heights["anterior"], heights["posterior"])}
    if neighbour is not None:
        out["crush"] = 1.0 - heights["posterior"] / neighbour["posterior"]
    return out
