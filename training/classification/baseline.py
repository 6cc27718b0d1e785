"""The calibrated ROI HU baseline: a single-energy QCT-style line from trabecular HU to BMD.

The strongest simple rival of the classifiers (issue #26, item 1). The mean trabecular ROI HU
of the bodies a model reads (L1+L2 for model 1, L1 for model 2) is converted to BMD with a
calibration line fitted by least squares on the training phantoms only, then read against the
QCT thresholds (> 120 normal, 80-120 osteopenia, < 80 osteoporosis). It gets the same scan
information as the models, at three levels:

- ``kvp+phase``: one line per tube voltage, and an offset per voltage and contrast phase
  (iodine raises the marrow's HU by an amount that grows as the voltage falls);
- ``kvp``: one line per tube voltage, the phase unknown;
- ``none``: one line for all scans (a NIfTI file, no word from the reader).

Class probabilities, for the AUCs, treat the fitted BMD as the truth plus a normal error with
the residual SD of the fit on the training phantoms: P(normal) = P(BMD > 120), and so on. Their
argmax is the thresholded BMD (but within a small fraction of a mg/cm3 of each threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from OsteoScreenLib.registry import CONTRAST_PHASES, NORMAL_MIN_BMD_MG_CM3, OSTEOPOROSIS_MAX_BMD_MG_CM3, TUBE_VOLTAGES_KVP

INFORMATION = ("kvp+phase", "kvp", "none")


def design(hu: np.ndarray, kvp: np.ndarray, phase: np.ndarray, information: str) -> np.ndarray:
    """Least-squares design of the calibration: intercept and slope per voltage (or one of each),
    and for ``kvp+phase`` an offset per voltage for each enhanced phase (unenhanced: none)."""
    hu = np.asarray(hu, np.float64).ravel()
    if information not in INFORMATION:
        raise ValueError(f"information must be one of {INFORMATION}, not {information!r}")
    if information == "none":
        return np.stack([np.ones_like(hu), hu], 1)
    kv = np.asarray(kvp).astype(int).ravel()
    unknown = sorted(set(kv) - set(TUBE_VOLTAGES_KVP))
    if unknown:
        raise ValueError(f"tube voltages {unknown} have no calibration line (known: {TUBE_VOLTAGES_KVP})")
    onehot = np.stack([kv == v for v in TUBE_VOLTAGES_KVP], 1).astype(np.float64)
    cols = [onehot, onehot * hu[:, None]]
    if information == "kvp+phase":
        ph = np.asarray(phase).astype(str).ravel()
        bad = sorted(set(ph) - set(CONTRAST_PHASES))
        if bad:
            raise ValueError(f"contrast phases {bad} unknown (known: {CONTRAST_PHASES})")
        for p in CONTRAST_PHASES[1:]:
            cols.append(onehot * (ph == p)[:, None])
    return np.concatenate(cols, 1)


@dataclass
class CalibratedHU:
    """A fitted calibration: ``coef`` of ``design``, ``residual_sd`` of BMD on the fitting cases."""

    information: str
    coef: np.ndarray
    residual_sd: float

    @classmethod
    def fit(cls, hu, kvp, phase, bmd, information: str = "kvp+phase") -> "CalibratedHU":
        x = design(hu, kvp, phase, information)
        y = np.asarray(bmd, np.float64).ravel()
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ coef
        dof = max(len(y) - np.linalg.matrix_rank(x), 1)
        return cls(information, coef, float(np.sqrt(resid @ resid / dof)))

    def bmd(self, hu, kvp, phase) -> np.ndarray:
        """Calibrated BMD (mg/cm3) of each case."""
        return design(hu, kvp, phase, self.information) @ self.coef

    def line(self, kvp: int | None = None, phase: str = "none") -> tuple[float, float]:
        """Intercept (mg/cm3) and slope (mg/cm3 per HU) for one voltage and phase."""
        b0 = float(self.bmd([0.0], [kvp or TUBE_VOLTAGES_KVP[0]], [phase])[0])
        return b0, float(self.bmd([1.0], [kvp or TUBE_VOLTAGES_KVP[0]], [phase])[0]) - b0

    def probabilities(self, hu, kvp, phase) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, 3: normal, osteopenia, osteoporosis) and BMD of each case."""
        b = self.bmd(hu, kvp, phase)
        return class_probabilities(b, self.residual_sd), b


def class_probabilities(bmd: np.ndarray, sd: float) -> np.ndarray:
    """P(class) when the true BMD is normal around ``bmd`` with SD ``sd`` (order of registry.CLASSES)."""
    hi, lo = (NORMAL_MIN_BMD_MG_CM3 - bmd) / sd, (OSTEOPOROSIS_MAX_BMD_MG_CM3 - bmd) / sd
    # osteopenia as a difference of the tails nearer to it, so that it keeps ranking far from 80-120
    penia = np.where(bmd >= 100.0, stats.norm.cdf(hi) - stats.norm.cdf(lo), stats.norm.sf(lo) - stats.norm.sf(hi))
    return np.stack([stats.norm.sf(hi), penia, stats.norm.cdf(lo)], 1)


def mean_roi_hu(data: dict, bodies: tuple[str, ...]) -> np.ndarray:
    """Mean ROI HU over the bodies (``("L1", "L2")`` or ``("L1",)``) of cached cases."""
    idx = [("L1", "L2").index(b) for b in bodies]
    return np.asarray(data["roi_hu"], np.float64)[:, idx].mean(1)
