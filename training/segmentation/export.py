"""Export both trained stages to ONNX and write the self-describing model folder.

    python -m training.segmentation.export [--metrics training/results/segmentation_eval.json] [--rib-check-only [RUN]]

Writes ``Resources/Models/segmentation/``: coarse.onnx, fine.onnx, rib_check.onnx,
model_card.json (read by OsteoScreenLib) and model_card.md (for people).
Checks that ONNX Runtime reproduces PyTorch within ONNX_TOLERANCE first.
With --rib-check-only [RUN] only the rib check (checkpoint folder RUN, default rib-check) is exported anew into the existing folder: the coarse
and fine files and their card entries stay (byte for byte), and evaluate.py then replaces the
card's metrics. With --coarse-only RUN the same for the coarse stage of checkpoint folder RUN, and
with --count-only RUN for the vertebra counter (added to a folder that has none).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

from OsteoScreenLib import __version__
from OsteoScreenLib.atomic import atomic_path, write_text
from OsteoScreenLib.hashing import sha256_file
from OsteoScreenLib.paths import models_dir
from OsteoScreenLib.registry import LABEL_OF

from .config import NETWORKS, ONNX_OPSET, ONNX_TOLERANCE, PREPROCESSING, RIB_CHECK_NETWORK, SPLITS
from ..model_card import (UNRECORDED_GENERATOR_VERSION, WEIGHTS, card_markdown, generator_versions,  # noqa: F401
                          save_state, source_commit)
from .network import build_network

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
STAGE_RUNS = {"coarse": "segmentation-coarse", "fine": "segmentation-fine", "count": "vertebra-count"}
# the input (k, j, i) each stage is exported and checked on (the spatial axes stay dynamic)
EXPORT_SHAPES = {"coarse": (48, 64, 64), "fine": (112, 80, 80), "count": (96, 64, 64)}
TASK = ("L1 and L2 vertebral-body segmentation on chest CT (coarse level finding checked by a rib check and by "
        "counting the vertebrae, fine outline)")
MODEL_VERSION = "0.12.0"


def load_state(net: torch.nn.Module, name: str) -> torch.nn.Module:
    with np.load(WEIGHTS / f"{name}.npz", allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k].copy()) for k in z.files})
    return net.eval()


def load_stage(stage: str, folder: Path) -> torch.nn.Module:
    net = build_network(stage)
    path = folder / "final.pt" if (folder / "final.pt").exists() else folder / "last.pt"
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return net.eval()


def export_onnx(net: torch.nn.Module, in_channels: int, shape, path: Path) -> float:
    """Export with dynamic spatial axes; return max |softmax difference| ONNX vs PyTorch."""
    import onnxruntime as ort

    x = torch.randn(1, in_channels, *shape)
    torch.onnx.export(
        net, (x,), str(path), opset_version=ONNX_OPSET, input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "n", 2: "k", 3: "j", 4: "i"}, "logits": {0: "n", 2: "k", 3: "j", 4: "i"}},
        dynamo=False,
    )
    with torch.no_grad():
        ref = torch.softmax(net(x), 1).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": x.numpy()})[0]
    e = np.exp(out - out.max(1, keepdims=True))
    return float(np.abs(e / e.sum(1, keepdims=True) - ref).max())


LIMITS = [
    "Trained on synthetic phantoms only; accuracy on real scans is not established (see the real cases "
    "under metrics: too few to measure it).",
    "Not a medical device; not for diagnosis.",
    "Needs L1 and L2 in the field of view; transitional anatomy may shift the levels.",
    "The rib check is skipped where the field of view does not show the rib heads and necks (closer than "
    "30 mm beside, 10 mm in front of or 50 mm behind a vertebra's centre). It learnt the ribs themselves from "
    "phantoms whose ribs were moved between vertebrae (0.7.0's check read the vertebra's shape instead). On "
    "the real abdominal scan it reads T11 and T12 as rib-bearing and L1, L2 as not; on the real spine slab "
    "verse012 it reads no ribs on T11 and T12, from their rib heads and transverse processes, which look unlike "
    "the phantoms' to it (training/results/rib_check_probe.md), and moves the levels one vertebra up (flagged).",
    "Model 0.8.0 (coarse stage on generator 2.0.0): asked from its coarse L1 on the abdominal scan, the check "
    "reads 0.22 on T12, so the levels, though right, come with a warning that the ribs do not confirm them. "
    "On the real chest CT lidc-idri-0001 its levels were wrong in every version evaluated, always flagged "
    "(training/results/real_case_eval_0.8.0.md).",
    "Model 0.9.0 adds the vertebra counter (count.onnx): it reads L1 below the last rib pair on the whole scan "
    "(right on 89 of 89 chest test phantoms where it read it) but seldom counts from T1 (4 of 100: it rarely marks "
    "C7), so it has moved no level on the test phantoms; on the real chest CT it finds a single body and reads "
    "no L1.",
    "Model 0.11.0 trains the coarse stage anew, from scratch, on generator 2.2.0 (548 chest and 200 spine-cropped "
    "phantoms; fine stage, rib check and counter as in 0.9.0). On the real chest CT lidc-idri-0001 as given it "
    "finds L1 and L2 on the right vertebrae, L2 with 84.5 % of its voxels inside (short of 90 %); cut to its "
    "lowest 150 mm it puts L1 on L2; every level there comes with a warning (training/results/real_case_eval_0.11.0.md).",
    "Model 0.12.0 trains the fine stage anew, from scratch, on generator 2.2.0 with domain randomisation and hints "
    "stretched past their vertebra (coarse stage as in 0.11.0; rib check and counter as in 0.9.0). On the real chest "
    "CT lidc-idri-0001 as given L1 and L2 lie on the right vertebrae (96.5 % and 96.3 % inside); cut to its lowest "
    "150 mm L1 is right and L2 lies on L2 with 89.9 % inside; cut at the L1-L2 disc L1 is right and the lower part "
    "of L1 is outlined as L2, where L2 should be reported missing. The ribs confirm none of these levels, so every "
    "one comes with a warning (training/results/real_case_eval.md).",
]


def write_model_folder(out: Path, metrics: dict | None, train_configs: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    diffs = {}
    for stage, shape in EXPORT_SHAPES.items():
        net = load_stage(stage, CHECKPOINTS / STAGE_RUNS[stage])
        save_state(net, f"segmentation-{stage}")
        with atomic_path(out / f"{stage}.onnx", overwrite=True) as path:
            diffs[stage] = export_onnx(net, NETWORKS[stage]["in_channels"], shape, path)
            if diffs[stage] > ONNX_TOLERANCE:
                raise SystemExit(f"{stage}: ONNX differs from PyTorch by {diffs[stage]:.2e} > {ONNX_TOLERANCE}")
    diffs["rib_check"] = export_rib_check(out / "rib_check.onnx")
    card = {
        "schema": "osteoscreen.model_card/1",
        "name": "segmentation",
        "version": MODEL_VERSION,
        "task": TASK,
        "created": datetime.date.today().isoformat(),
        "osteoscreen_version": __version__,
        "files": {s: {"path": f"{s}.onnx", "sha256": sha256_file(out / f"{s}.onnx"), "format": f"ONNX opset {ONNX_OPSET}"}
                  for s in ("coarse", "fine", "rib_check", "count")},
        "architecture": {**{s: {"type": "MONAI UNet", "spatial_dims": 3, "out_channels": 3, **NETWORKS[s]}
                            for s in NETWORKS},
                         "rib_check": {"type": "3D CNN (two 3x3x3 convolutions per block, max pooling, global average "
                                       "pooling), one logit: the vertebra at the box centre bears a rib pair",
                                       **RIB_CHECK_NETWORK}},
        "preprocessing": PREPROCESSING,
        "labels": {"0": "background", **{str(v): k for k, v in LABEL_OF.items()}},
        "training_data": {
            "source": "synthetic chest-CT phantoms of OsteoScreenLib.phantom (no real patient data)",
            "generator_version": generator_versions(train_configs),
            "source_commit": source_commit(),
            "splits_first_seed_and_count": SPLITS,
            "stages": train_configs,
        },
        "onnx_vs_pytorch_max_abs_softmax_diff": diffs,
        "metrics": metrics or {},
        "intended_use": "Research: opportunistic screening of L1/L2 on adult chest or abdominal CT, "
        "as a first outline that a reader checks and corrects in 3D Slicer.",
        "limits": LIMITS,
        "exported_on": platform.platform(),
    }
    write_text(out / "model_card.json", json.dumps(card, indent=2) + "\n", overwrite=True)
    write_text(out / "model_card.md", card_markdown(card), overwrite=True)
    return out


def replace_rib_check(out: Path, rib_config: dict, run: Path | None = None) -> Path:
    """Only the rib check anew (checkpoint folder ``run``, default rib-check) in an existing model
    folder; the coarse and fine stages, their files and their card entries stay as they are."""
    diff = export_rib_check(out / "rib_check.onnx", run)
    return _replace_stage_in_card(out, "rib_check", rib_config, diff)


def _replace_stage_in_card(out: Path, stage: str, config: dict, diff: float) -> Path:
    """The card of ``out`` after one stage's file was exported anew: its hash, its training run, the
    ONNX check; the other stages' entries stay."""
    card = json.loads((out / "model_card.json").read_text())
    stages = {**card["training_data"]["stages"], stage: config}
    card.update(version=MODEL_VERSION, created=datetime.date.today().isoformat(), osteoscreen_version=__version__,
                limits=LIMITS, exported_on=platform.platform(), task=TASK)
    card["files"][stage] = {"path": f"{stage}.onnx", "sha256": sha256_file(out / f"{stage}.onnx"),
                            "format": f"ONNX opset {ONNX_OPSET}"}
    card["preprocessing"][stage] = PREPROCESSING[stage]
    if stage in NETWORKS:
        card["architecture"][stage] = {"type": "MONAI UNet", "spatial_dims": 3, "out_channels": 3, **NETWORKS[stage]}
    card["onnx_vs_pytorch_max_abs_softmax_diff"][stage] = diff
    card["training_data"].update(stages=stages, generator_version=generator_versions(stages),
                                 source_commit=source_commit())
    write_text(out / "model_card.json", json.dumps(card, indent=2) + "\n", overwrite=True)
    write_text(out / "model_card.md", card_markdown(card), overwrite=True)
    return out


def replace_stage(out: Path, stage: str, run: Path) -> Path:
    """Only one network (coarse, fine or count) anew, from checkpoint folder ``run``, in an existing
    model folder; the other stages, their files and their card entries stay as they are."""
    net = load_stage(stage, run)
    if out.resolve() == (models_dir() / "segmentation").resolve():  # a candidate elsewhere leaves the bundled weights
        save_state(net, f"segmentation-{stage}")
    with atomic_path(out / f"{stage}.onnx", overwrite=True) as path:
        diff = export_onnx(net, NETWORKS[stage]["in_channels"], EXPORT_SHAPES[stage], path)
        if diff > ONNX_TOLERANCE:
            raise SystemExit(f"{stage}: ONNX differs from PyTorch by {diff:.2e} > {ONNX_TOLERANCE}")
    return _replace_stage_in_card(out, stage, json.loads((run / "config.json").read_text()), diff)


def export_rib_check(path: Path, run: Path | None = None) -> float:
    """Export the rib check of checkpoint folder ``run`` (default rib-check; dynamic batch) to ``path``,
    replaced only once ONNX Runtime reproduces PyTorch; return max |sigmoid difference| ONNX vs PyTorch."""
    import onnxruntime as ort

    from .rib_check import build_network as build_rib_check

    net = build_rib_check()
    run = CHECKPOINTS / "rib-check" if run is None else Path(run)
    net.load_state_dict(torch.load(run / "final.pt", map_location="cpu", weights_only=True)["model"])
    net.eval()
    if path.parent.resolve() == (models_dir() / "segmentation").resolve():  # a candidate elsewhere leaves the bundled weights
        save_state(net, "segmentation-rib_check")
    size = [int(round(s / PREPROCESSING["rib_check"]["spacing_mm"])) for s in PREPROCESSING["rib_check"]["size_mm"][::-1]]
    x = torch.randn(3, 1, *size)
    with atomic_path(path, overwrite=True) as tmp:
        torch.onnx.export(net, (x,), str(tmp), opset_version=ONNX_OPSET, input_names=["image"], output_names=["logit"],
                          dynamic_axes={"image": {0: "n"}, "logit": {0: "n"}}, dynamo=False)
        with torch.no_grad():
            ref = torch.sigmoid(net(x)).numpy()
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
        diff = float(np.abs(1 / (1 + np.exp(-got)) - ref).max())
        if diff > ONNX_TOLERANCE:
            raise SystemExit(f"rib check: ONNX differs from PyTorch by {diff:.2e} > {ONNX_TOLERANCE}")
    return diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics", type=Path, default=None, help="JSON of evaluation metrics to put in the card")
    p.add_argument("--out", type=Path, default=models_dir() / "segmentation")
    p.add_argument("--rib-check-only", type=Path, nargs="?", const=CHECKPOINTS / "rib-check", default=None, metavar="RUN",
                   help="export only the rib check of checkpoint folder RUN (default rib-check) into the existing "
                   "folder (coarse and fine stay)")
    p.add_argument("--coarse-only", type=Path, default=None, metavar="RUN",
                   help="export only the coarse stage of checkpoint folder RUN into the existing folder "
                   "(fine stage and rib check stay)")
    p.add_argument("--fine-only", type=Path, default=None, metavar="RUN",
                   help="export only the fine stage of checkpoint folder RUN into the existing folder")
    p.add_argument("--count-only", type=Path, default=None, metavar="RUN",
                   help="export only the vertebra counter of checkpoint folder RUN into the existing folder")
    a = p.parse_args()
    for stage, run in (("coarse", a.coarse_only), ("fine", a.fine_only), ("count", a.count_only)):
        if run is not None:
            print(f"wrote {replace_stage(a.out, stage, run)}")
            return
    metrics = json.loads(a.metrics.read_text()) if a.metrics and a.metrics.exists() else None
    cfg = (a.rib_check_only or CHECKPOINTS / "rib-check") / "config.json"
    rib = json.loads(cfg.read_text()) if cfg.exists() else {}
    init = rib.get("init")
    if isinstance(init, str):  # the run it started from, as the stages record theirs
        rib["init"] = {"run": init, "config": json.loads((CHECKPOINTS / init / "config.json").read_text())}
    if a.rib_check_only is not None:
        print(f"wrote {replace_rib_check(a.out, rib, a.rib_check_only)}")
        return
    configs = {}
    for s in ("coarse", "fine", "count"):
        cfg = CHECKPOINTS / STAGE_RUNS[s] / "config.json"
        configs[s] = json.loads(cfg.read_text()) if cfg.exists() else {}
    configs["rib_check"] = rib
    out = write_model_folder(a.out, metrics, configs)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
