"""The calibrated ROI HU baseline (issue #26): its calibration line recovers a known line, per tube voltage."""

import numpy as np
import pytest

pytest.importorskip("scipy")
from training.classification.baseline import CalibratedHU, class_probabilities  # noqa: E402

# BMD = (HU - offset - enhancement(kVp, phase)) / slope(kVp): the form of phantom.density, exact here
SLOPE = {80: 1.6, 100: 1.3, 120: 1.2, 140: 1.0}
ENHANCEMENT = {"none": 0.0, "arterial": 10.0, "portal": 20.0}


def table(n_per_cell: int = 3, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [(k, p, b) for k in SLOPE for p in ENHANCEMENT for b in rng.uniform(40, 200, n_per_cell)]
    kvp = np.array([r[0] for r in rows])
    phase = np.array([r[1] for r in rows])
    bmd = np.array([r[2] for r in rows])
    hu = np.array([15.0 + SLOPE[k] * b + ENHANCEMENT[p] * (120 / k) for k, p, b in rows]) + rng.normal(0, noise, len(rows))
    return hu, kvp, phase, bmd


def test_one_line_is_recovered():
    hu = np.array([0.0, 50.0, 100.0, 150.0])
    cal = CalibratedHU.fit(hu, [120] * 4, ["none"] * 4, 10.0 + 0.8 * hu, "none")
    assert cal.line() == pytest.approx((10.0, 0.8))
    assert cal.residual_sd == pytest.approx(0.0, abs=1e-9)
    assert cal.bmd([200.0], [80], ["portal"]) == pytest.approx([170.0])  # no kVp or phase: ignores both


def test_per_kvp_variant_recovers_each_voltages_line_and_the_phase_offsets():
    hu, kvp, phase, bmd = table()
    cal = CalibratedHU.fit(hu, kvp, phase, bmd, "kvp+phase")
    assert cal.residual_sd == pytest.approx(0.0, abs=1e-6)
    for k, s in SLOPE.items():
        assert cal.line(k) == pytest.approx((-15.0 / s, 1.0 / s))
        assert cal.bmd([200.0], [k], ["portal"])[0] == pytest.approx((200.0 - 15.0 - 20.0 * 120 / k) / s)
    # the same HU reads as more mineral at 140 than at 80 kVp: the per-kVp variant uses the voltage
    assert cal.bmd([150.0, 150.0], [140, 80], ["none", "none"]) == pytest.approx([135.0, 135.0 / 1.6])


def test_variants_without_the_information_fit_worse_and_unknown_voltages_are_refused():
    hu, kvp, phase, bmd = table(n_per_cell=20, noise=1.0)
    sd = {i: CalibratedHU.fit(hu, kvp, phase, bmd, i).residual_sd for i in ("kvp+phase", "kvp", "none")}
    assert sd["kvp+phase"] < 1.5 < sd["kvp"] < sd["none"]
    with pytest.raises(ValueError):
        CalibratedHU.fit(hu, kvp, phase, bmd, "kvp").bmd([100.0], [110], ["none"])


def test_class_probabilities_follow_the_thresholds():
    p = class_probabilities(np.array([200.0, 100.0, 40.0, 121.0, 79.0, 300.0, -50.0]), 8.0)
    assert p.shape == (7, 3) and np.allclose(p.sum(1), 1.0)
    assert list(p.argmax(1)) == [0, 1, 2, 0, 2, 0, 2]
    # the osteopenia score keeps ranking far from 80-120 (no ties at zero): farther is lower
    assert 0 < p[5, 1] < p[0, 1] and 0 < p[6, 1] < p[2, 1]
