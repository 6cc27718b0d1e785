"""Definition of both classifiers and their data (saved in checkpoints and model cards)."""

from __future__ import annotations

# Phantom splits mirroring the paper's classification cohort (530 train / 100 tune / 418 test).
SPLITS = {"train": (400000, 530), "tune": (500000, 100), "test": (600000, 418)}

MODELS = {"l1l2": ("L1", "L2"), "l1": ("L1",)}

# Phantoms of the features: the full-size chest cases (0.6-0.98 mm pixels, 0.625-5 mm slices,
# the run-time input) rendered only around L1-L2, which is all the feature images need.
PRESET = "chest-box"

# What the classifiers learn and are scored on: the BMD that single-energy QCT reads on each phantom
# (true density plus the marrow-fat error, as in the paper's QCT labels), not the density drawn.
REFERENCE_STANDARD = ("QCT reading: trabecular BMD that phantom-calibrated single-energy QCT measures on the "
                      "unenhanced scan (OsteoScreenLib.phantom.density.qct_reading), mean of L1 and L2")

NETWORK = {"width": 24, "features": 96, "dropout": 0.2}
BMD_SCALE_MG_CM3 = 100.0  # the BMD head predicts BMD / 100
# BMD loss: smooth L1 on BMD / 100, quadratic only within 5 mg/cm3, so the BMD head keeps learning
# at errors of 10 mg/cm3 (a plain smooth L1 on BMD / 100 was quadratic up to 100 mg/cm3 and its
# gradient vanished there); weighted to weigh about as much as the class loss.
BMD_LOSS_BETA_MG_CM3 = 5.0
BMD_LOSS_WEIGHT = 2.0
# Share of training cases shown with the tube voltage unknown (NIfTI/NRRD inputs have no kVp).
UNKNOWN_KVP_FRACTION = 0.3
# Share shown with the contrast phase unknown (the reader does not give it), drawn independently.
UNKNOWN_CONTRAST_FRACTION = 0.3
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4

# The bundled model averages networks trained with these seeds (same data, other initialisation
# and augmentation draws): an ensemble ranks cases more steadily than any one of them.
ENSEMBLE_SEEDS = (0, 1)
