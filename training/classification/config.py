"""Definition of both classifiers and their data (saved in checkpoints and model cards)."""

from __future__ import annotations

# Phantom splits mirroring the paper's classification cohort (530 train / 100 tune / 418 test).
SPLITS = {"train": (400000, 530), "tune": (500000, 100), "test": (600000, 418)}

MODELS = {"l1l2": ("L1", "L2"), "l1": ("L1",)}

# Phantoms of the features: the full-size chest cases (0.6-0.98 mm pixels, 0.625-5 mm slices,
# the run-time input) rendered only around L1-L2, which is all the feature images need.
PRESET = "chest-box"

NETWORK = {"width": 24, "features": 96, "dropout": 0.2}
BMD_SCALE_MG_CM3 = 100.0  # the BMD head predicts BMD / 100
BMD_LOSS_WEIGHT = 1.0
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
