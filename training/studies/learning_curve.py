"""Learning curve of the fine stage: test DSC against the number of training scans.

    python -m training.studies.learning_curve [--sizes 50,100,200,300,548] [--iterations 300]

Like the paper's experiment (DSC for 50 ... 548 training images), at the scale this
machine allows: for each size the fine stage is fine-tuned from the same pre-trained
weights (the 1.5 mm `training`-preset run) for the same number of iterations on that
many chest phantoms, then scored on 1 mm boxes of test phantoms (hints from the trained
coarse stage, as at run time). The chest cases are rendered only on a box around L1-L2
(preset chest-box: the same voxels as the whole chest there, a fraction of its rendering
time), the hints coming from the coarse stage on the same case rendered whole on its
coarse grid (prepare.HINTS_FROM); `--preset chest` renders them whole. The level-finding
stage is the same for all sizes, so this measures how outlining improves with data. Each
size is resumable (its own checkpoint folder); writes
training/results/segmentation_learning_curve.* (or under --results).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from OsteoScreenLib.phantom import GENERATOR_VERSION

from training.segmentation.prepare import DEFAULT_CACHE, HINTS_FROM, cache_folder, sample_paths, seeds_of
from training.segmentation.samples import load
from training.segmentation.network import build_network
from training.segmentation.train import dice_per_class, fine_patch, fit_patch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
CHECKPOINTS = ROOT / "checkpoints"


def test_scores(run: Path, preset: str, count: int, cache: Path) -> list[list[float]]:
    """Per test case [DSC L1, DSC L2] of a run's final weights on the cached test boxes."""
    net = build_network("fine")
    net.load_state_dict(torch.load(run / "final.pt", map_location="cpu", weights_only=True)["model"])
    net.eval()
    rng = np.random.default_rng(0)
    scores = []
    with torch.no_grad():
        for seed in seeds_of("test", count):
            path = sample_paths(cache, preset, seed)[1]
            if not path.exists():
                raise SystemExit(f"{path} missing: run training.segmentation.prepare --split test --preset {preset} --stages fine")
            s = load(path)
            x, y = fit_patch(s["x"].astype(np.float32), s["y"].astype(np.int64), fine_patch(), rng, 0.0)
            scores.append(dice_per_class(net(torch.from_numpy(x[None])), torch.from_numpy(y[None])))
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="50,100,200,300,548")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--test-count", type=int, default=100)
    p.add_argument("--preset", default="chest-box")
    p.add_argument("--init", type=Path, default=CHECKPOINTS / "segmentation-fine-pretrain")
    p.add_argument("--reference", type=Path, default=CHECKPOINTS / "segmentation-fine",
                   help="a run scored on the same boxes beside the curve (default: the bundled fine stage)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="where each size's run is kept")
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    for n in sizes:
        run = a.checkpoints / f"learning-curve-{a.preset}-{n}"
        if not (run / "final.pt").exists():
            cmd = [sys.executable, "-m", "training.segmentation.train", "--stage", "fine", "--preset", a.preset,
                   "--train-count", str(n), "--iterations", str(a.iterations), "--lr", "1e-3",
                   "--init", str(a.init), "--out", str(run), "--threads", str(a.threads),
                   "--eval-every", str(10 * a.iterations), "--cache", str(a.cache)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT.parent)
        config = json.loads((run / "config.json").read_text())
        d = np.array(test_scores(run, a.preset, a.test_count, a.cache))
        rows.append({"train_scans": n, "train_samples": config["train_samples"],
                     "dsc_L1_mean": round(float(d[:, 0].mean()), 4), "dsc_L1_sd": round(float(d[:, 0].std()), 4),
                     "dsc_L2_mean": round(float(d[:, 1].mean()), 4), "dsc_L2_sd": round(float(d[:, 1].std()), 4)})
        print(json.dumps(rows[-1]), flush=True)
    reference = None
    if (a.reference / "final.pt").exists():  # the bundled fine stage, scored on the same boxes
        d = np.array(test_scores(a.reference, a.preset, a.test_count, a.cache))
        config = json.loads((a.reference / "config.json").read_text())
        reference = {"run": a.reference.name, "train_samples": config.get("train_samples"),
                     "init": (config.get("init") or {}).get("run"),
                     "iterations": config.get("iterations"), "preset": config.get("preset"),
                     "dsc_L1_mean": round(float(d[:, 0].mean()), 4), "dsc_L1_sd": round(float(d[:, 0].std()), 4),
                     "dsc_L2_mean": round(float(d[:, 1].mean()), 4), "dsc_L2_sd": round(float(d[:, 1].std()), 4)}
    hints = cache_folder(a.cache, a.preset) / "fine" / "hints.json"
    result = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "generator_version": GENERATOR_VERSION,
              "iterations": a.iterations, "preset": a.preset, "hints_from_preset": HINTS_FROM.get(a.preset, a.preset),
              "hint_source": json.loads(hints.read_text()) if hints.exists() else None,
              "test_cases": a.test_count, "init": a.init.name, "rows": rows, "bundled": reference}
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "segmentation_learning_curve.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# Learning curve of the fine segmentation stage", "",
          f"{result['machine']}; {result['date']}; phantom generator {GENERATOR_VERSION}. Each size: fine-tuned "
          f"from `{a.init.name}` for {a.iterations} iterations (batch 2) on that many `{a.preset}` phantoms; DSC on "
          f"1 mm boxes around L1-L2 of {a.test_count} test phantoms (seeds 300000+), hints from the trained coarse "
          f"stage on the `{result['hints_from_preset']}` rendering of each case (its checkpoint's SHA-256 in the JSON).", "",
          "| training scans | DSC L1 (mean ± SD) | DSC L2 (mean ± SD) |", "| --- | --- | --- |"]
    md += [f"| {r['train_scans']} | {r['dsc_L1_mean']} ± {r['dsc_L1_sd']} | {r['dsc_L2_mean']} ± {r['dsc_L2_sd']} |"
           for r in rows]
    if reference:
        md += ["", f"The bundled fine stage (`{reference['run']}`: {reference['iterations']} iterations on "
               f"{reference['train_samples']} samples of presets `{reference['preset']}`, started from `{reference['init']}`, "
               "the end of a chain of runs that began with a pre-training of the same recipe) on the "
               f"same boxes: L1 {reference['dsc_L1_mean']} ± {reference['dsc_L1_sd']}, "
               f"L2 {reference['dsc_L2_mean']} ± {reference['dsc_L2_sd']}."]
    md += ["", "![learning curve](segmentation_learning_curve.png)", ""]
    (a.results / "segmentation_learning_curve.md").write_text("\n".join(md))
    plot(rows, a.results / "segmentation_learning_curve.png", reference)
    print("\n".join(md))


def plot(rows: list[dict], path: Path, reference: dict | None = None) -> None:
    """The curve with its SD bars; the bundled fine stage on the same boxes as dashed lines."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    n = [r["train_scans"] for r in rows]
    for name, colour in (("L1", "tab:orange"), ("L2", "tab:blue")):
        ax.errorbar(n, [r[f"dsc_{name}_mean"] for r in rows], yerr=[r[f"dsc_{name}_sd"] for r in rows],
                    marker="o", capsize=3, label=name, color=colour)
        if reference:
            ax.axhline(reference[f"dsc_{name}_mean"], ls="--", lw=1, color=colour, label=f"{name}, bundled fine stage")
    ax.set_xlabel("training scans")
    ax.set_ylabel("test DSC (1 mm box)")
    ax.set_xscale("log")
    ax.set_xticks(n, [str(v) for v in n])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
