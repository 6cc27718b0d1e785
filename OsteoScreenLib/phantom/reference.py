"""Reference standard of a phantom: its QCT reading and class, and its true mineral density.

The paper's labels are QCT measurements, so the classifiers learn and are scored on the QCT
reading (``density.qct_measurement``: from generator 2.2.0 a measurement against calibration rods
with its own errors; before, the analytic inverse ``density.qct_reading``). The true density the generator drew is kept beside it: the
difference is the marrow-fat error that QCT itself makes. Computed from the parameters alone,
so training can label cached images without rendering them again.
"""

from __future__ import annotations

from .. import registry
from . import density


def reference_standard(params: dict) -> dict:
    """QCT and true BMD (mg/cm3) of L1, L2 and their mean, and the QCT class of each mean."""
    subject = params["subject"]
    true = {v: float(subject["bmd_mg_cm3"][v]) for v in ("L1", "L2")}
    qct = {v: density.qct_measurement(params, v, b) for v, b in true.items()}
    for d in (true, qct):
        d["mean"] = 0.5 * (d["L1"] + d["L2"])
    return {
        "qct_bmd_mg_cm3": {k: round(v, 3) for k, v in qct.items()},
        "qct_class": registry.qct_class(qct["mean"]),
        "bmd_mg_cm3": {k: round(v, 3) for k, v in true.items()},
        "bmd_class": registry.qct_class(true["mean"]),
    }
