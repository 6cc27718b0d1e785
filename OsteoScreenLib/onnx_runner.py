"""ONNX Runtime sessions for bundled models (no torch, no MONAI at run time)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import OsteoScreenError


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise OsteoScreenError(
            "ONNX Runtime is not installed; run `pip install onnxruntime` (in Slicer the module offers to install it)"
        ) from None
    return onnxruntime


class OnnxNetwork:
    """One ONNX network on the CPU; ``run`` maps a float32 batch to its first output."""

    def __init__(self, path: Path, threads: int | None = None):
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, min(os.cpu_count() or 1, 8))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OsteoScreenError(f"{path}: not a valid ONNX model ({exc.__class__.__name__}); reinstall OsteoScreen") from None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
