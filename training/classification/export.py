"""Export a trained classifier to ONNX and write its model folder with the card.

    python -m training.classification.export --model l1l2

Writes Resources/Models/classifier-<model>/: classifier.onnx, model_card.json,
model_card.md. Checks ONNX Runtime against PyTorch first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from OsteoScreenLib import __version__
from OsteoScreenLib.classifier import MODELS as RUNTIME_MODELS
from OsteoScreenLib.features import DEFAULT_PREPROCESSING, scan_vector
from OsteoScreenLib.hashing import sha256_file
from OsteoScreenLib.paths import models_dir
from OsteoScreenLib.registry import (CLASSES, CONTRAST_PHASES, NORMAL_MIN_BMD_MG_CM3, OSTEOPOROSIS_MAX_BMD_MG_CM3,
                                    TUBE_VOLTAGES_KVP)

from ..model_card import card_markdown, save_state, source_commit
from .config import BMD_SCALE_MG_CM3, ENSEMBLE_SEEDS, MODELS, NETWORK, ONNX_OPSET, ONNX_TOLERANCE, REFERENCE_STANDARD, SPLITS
from .network import IMAGE_CHANNELS, FusionClassifier
from .train import run_folder

MODEL_VERSION = "0.6.0"


class _Exported(torch.nn.Module):
    """What the runtime sees: logits and BMD in mg/cm^3 of the ensemble's members averaged
    (the logits are the log of the mean class probabilities, so a softmax gives that mean)."""

    def __init__(self, nets: list[FusionClassifier]):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, x, scan):
        outs = [net(x, scan) for net in self.nets]
        probs = torch.stack([torch.softmax(logits, 1) for logits, _ in outs]).mean(0)
        bmd = torch.stack([b for _, b in outs]).mean(0)
        return torch.log(probs.clamp_min(1e-12)), bmd * BMD_SCALE_MG_CM3


def build_exported(model: str, seeds=ENSEMBLE_SEEDS) -> _Exported:
    return _Exported([FusionClassifier(len(MODELS[model]), **NETWORK) for _ in seeds]).eval()


def export(model: str, metrics: dict | None = None) -> Path:
    wrapped = build_exported(model)
    configs = []
    for net, seed in zip(wrapped.nets, ENSEMBLE_SEEDS):
        folder = run_folder(model, seed)
        if not (folder / "best.pt").exists():
            raise SystemExit(f"{folder}: no checkpoint; run training.classification.train --model {model} --seed {seed}")
        net.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True)["model"])
        configs.append(json.loads((folder / "config.json").read_text()))
    save_state(wrapped, f"classifier-{model}")
    out = models_dir() / RUNTIME_MODELS[model]["folder"]
    out.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, len(MODELS[model]), IMAGE_CHANNELS, DEFAULT_PREPROCESSING.image_size_px, DEFAULT_PREPROCESSING.image_size_px)
    v = len(MODELS[model])
    scan = torch.from_numpy(np.stack([scan_vector(120, [1.5] * v, "portal"), scan_vector(None, [0.5] * v)]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classifier.onnx"
        torch.onnx.export(wrapped, (x, scan), str(path), opset_version=ONNX_OPSET, input_names=["images", "scan"],
                          output_names=["logits", "bmd_mg_cm3"], dynamic_axes={"images": {0: "n"}, "scan": {0: "n"},
                          "logits": {0: "n"}, "bmd_mg_cm3": {0: "n"}}, dynamo=False)
        import onnxruntime as ort

        ref = [t.detach().numpy() for t in wrapped(x, scan)]
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"images": x.numpy(), "scan": scan.numpy()})
        diff = max(float(np.abs(a - b).max() / (1 if i == 0 else BMD_SCALE_MG_CM3)) for i, (a, b) in enumerate(zip(got, ref)))
        if diff > ONNX_TOLERANCE:
            raise SystemExit(f"ONNX differs from PyTorch by {diff:.2e} > {ONNX_TOLERANCE}")
        path.replace(out / "classifier.onnx")
    from OsteoScreenLib.phantom import GENERATOR_VERSION

    card = {
        "schema": "osteoscreen.model_card/1",
        "name": f"classifier-{model}",
        "version": MODEL_VERSION,
        "task": f"{RUNTIME_MODELS[model]['title']}: QCT class (normal > {NORMAL_MIN_BMD_MG_CM3:g}, osteopenia "
        f"{OSTEOPOROSIS_MAX_BMD_MG_CM3:g}-{NORMAL_MIN_BMD_MG_CM3:g}, osteoporosis < {OSTEOPOROSIS_MAX_BMD_MG_CM3:g} "
        "mg/cm3 on the mean BMD of L1 and L2) and that mean BMD, from central axial images of "
        + " and ".join(MODELS[model]) + ", their trabecular ROI HU, and the tube voltage and contrast phase when known",
        "created": datetime.date.today().isoformat(),
        "osteoscreen_version": __version__,
        "files": {"classifier": {"path": "classifier.onnx", "sha256": sha256_file(out / "classifier.onnx"),
                                 "format": f"ONNX opset {ONNX_OPSET}"}},
        "architecture": {"type": "shared 2D CNN encoder per vertebra, late fusion by concatenation with the scan vector, "
                         "which also reaches both outputs through linear skips; an ensemble of "
                         f"{len(ENSEMBLE_SEEDS)} such networks (mean probabilities and BMD)", **NETWORK,
                         "inputs": list(MODELS[model]),
                         "onnx_inputs": {"images": "(N, V, 2, H, W): features.network_image of each vertebra",
                                         "scan": "(N, S): features.scan_vector: tube voltage one-hot "
                                         f"{list(TUBE_VOLTAGES_KVP)} + unknown, ROI HU / 100 of each vertebra, "
                                         f"their products, contrast phase one-hot {list(CONTRAST_PHASES)} + unknown"},
                         "outputs": {"logits": list(CLASSES), "bmd_mg_cm3": "mean of L1 and L2"}},
        "preprocessing": DEFAULT_PREPROCESSING.to_card(),  # the run time reads it back (Preprocessing.from_card)
        "labels": {str(i): c for i, c in enumerate(CLASSES)},
        "training_data": {"source": "synthetic chest-CT phantoms of OsteoScreenLib.phantom (no real patient data)",
                          "generator_version": GENERATOR_VERSION, "source_commit": source_commit(),
                          "reference_standard": REFERENCE_STANDARD,
                          "splits_first_seed_and_count": SPLITS,
                          "training": configs[0], "ensemble": [
                              {"seed": c["seed"], "best": c["best"]} for c in configs]},
        "onnx_vs_pytorch_max_abs_diff": diff,
        "metrics": metrics or {},
        "intended_use": "Research: opportunistic screening for low bone density on chest CT, with L1/L2 segments "
        "checked by a reader.",
        "limits": ["Trained on synthetic phantoms only; accuracy on real scans is not established.",
                   "Not a medical device; not for diagnosis.",
                   "Phantom density calibration is a model of QCT, not a measured cohort."],
        "exported_on": platform.platform(),
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "model_card.md").write_text(card_markdown(card))
    print(f"wrote {out} (ONNX vs PyTorch max diff {diff:.1e})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=list(MODELS), required=True)
    a = p.parse_args()
    export(a.model)


if __name__ == "__main__":
    main()
