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
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, *batches: np.ndarray) -> np.ndarray:
        return self.run_all(*batches)[0]

    def run_all(self, *batches: np.ndarray) -> list[np.ndarray]:
        """All outputs for float32 inputs given in the network's input order."""
        if len(batches) != len(self.input_names):
            raise OsteoScreenError(f"the model takes {len(self.input_names)} inputs, not {len(batches)}; "
                                   "reinstall OsteoScreen (model and code do not match)")
        return self.session.run(None, {n: np.ascontiguousarray(b, np.float32) for n, b in zip(self.input_names, batches)})
