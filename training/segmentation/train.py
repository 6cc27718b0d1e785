"""Train one stage of the L1/L2 segmentation (PyTorch + MONAI, CPU, resumable).

    python -m training.segmentation.train --stage fine --train-count 300 --iterations 3000

Reads cached samples (see prepare.py); writes checkpoints with their config to
``--out`` every ``--save-every`` iterations and resumes from the last one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from OsteoScreenLib.phantom import GENERATOR_VERSION

from .augment import augment_coarse, augment_fine
from .config import (COARSE_AUGMENT, COARSE_RANDOMISATION, COUNT_RANDOMISATION, FINE_AUGMENT, FINE_RANDOMISATION,
                     NETWORKS, PREPROCESSING)
from .config import PRESETS as STAGE_PRESETS
from .network import build_network
from .prepare import DEFAULT_CACHE, count_sample_path, sample_paths, seeds_of
from .samples import load

COARSE_PATCH = (64, 64, 64)  # 320 mm cube at 5 mm: the training FOV fits, chest cases are cropped
COUNT_PATCH = (96, 64, 64)  # 240 mm along S at 2.5 mm, 320 mm across at 5 mm: 7-10 bodies at a time


def fine_patch() -> tuple[int, int, int]:
    cfg = PREPROCESSING["fine"]
    return tuple(int(round(s / cfg["spacing_mm"])) for s in cfg["size_mm"][::-1])


def fit_patch(x: np.ndarray, y: np.ndarray, patch, rng, pad_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Random crop / pad of (C, k, j, i) and (k, j, i) to ``patch``; crops prefer the labels."""
    for axis, size in enumerate(patch):
        n = x.shape[axis + 1]
        if n > size:
            fg = np.nonzero(np.any(y > 0, axis=tuple(a for a in range(3) if a != axis)))[0]
            lo_min = max(0, (fg.max() - size + 1) if len(fg) else 0)
            lo_max = min(n - size, fg.min() if len(fg) else n - size)
            start = int(rng.integers(min(lo_min, lo_max), max(lo_min, lo_max) + 1))
            x = np.take(x, range(start, start + size), axis=axis + 1)
            y = np.take(y, range(start, start + size), axis=axis)
        elif n < size:
            before = int(rng.integers(0, size - n + 1))
            pads = [(0, 0)] * 4
            pads[axis + 1] = (before, size - n - before)
            x = np.pad(x, pads, constant_values=pad_x)
            y = np.pad(y, pads[1:], constant_values=0)
    return x, y


def augment(x: np.ndarray, rng) -> np.ndarray:
    """Scanner-like intensity changes on the CT channel; left-right mirror is anatomy-safe."""
    x = x.copy()
    x[0] = x[0] * rng.uniform(0.93, 1.07) + rng.uniform(-0.04, 0.04)
    x[0] += rng.normal(0, rng.uniform(0, 0.02), x[0].shape).astype(np.float32)
    return x


class Samples:
    """Cached samples of one stage; ``presets`` is a comma-separated list, each preset adds its
    cached cases of these seeds (a preset of the same seed is a different scan of the same body)."""

    def __init__(self, stage: str, seeds: list[int], presets: str, cache: Path, stage_augment: dict | None = None):
        paths = [(preset, count_sample_path(cache, preset, s) if stage == "count" else
                  sample_paths(cache, preset, s)[0 if stage == "coarse" else 1])
                 for preset in presets.split(",") for s in seeds]
        paths = [(preset, p) for preset, p in paths if p.exists()]
        self.paths = [p for _, p in paths]
        self.presets = [preset for preset, _ in paths]
        preset = presets
        if not self.paths:
            raise SystemExit(f"no cached {stage} samples for preset {preset} under {cache}; run training.segmentation.prepare")
        self.stage = stage
        self.cache: dict[int, dict] = {}
        self.weights = np.ones(len(self.paths))
        self.stage_augment = stage_augment  # COARSE_AUGMENT or FINE_AUGMENT (train --augment)

    def weight_variants(self, factor: float) -> None:
        """Draw scans with rare rib variants (11 or 13 rib pairs, a lumbar rib) ``factor`` times
        as often: there L1 must be found by counting ribs, not from where organs usually are."""
        from OsteoScreenLib.phantom import sample_parameters

        variant = np.array([sample_parameters(int(p.stem), "chest")["spine"]["rib_variant"] != "normal"
                            for p in self.paths])
        self.weights = np.where(variant, factor, 1.0)

    def weight_presets(self, factors: dict[str, float]) -> None:
        """Draw the scans of a preset ``factors[preset]`` times as often (on top of
        ``weight_variants``): e.g. spine-cropped scans, fewer than the chest ones but where
        the levels are hardest to find (no organs, few ribs in view)."""
        self.weights = self.weights * np.array([factors.get(preset, 1.0) for preset in self.presets])

    def draw(self, rng) -> int:
        return int(rng.choice(len(self.paths), p=self.weights / self.weights.sum()))

    def get(self, n: int, rng, train: bool = True):
        if n not in self.cache:
            self.cache[n] = load(self.paths[n])
        s = self.cache[n]
        x, y = s["x"].astype(np.float32), s["y"].astype(np.int64)
        if self.stage in ("coarse", "count"):
            x, y = fit_patch(x, y, COARSE_PATCH if self.stage == "coarse" else COUNT_PATCH, rng, -1.0)
            if train and self.stage_augment:
                x, y = augment_coarse(x, y, rng, self.stage_augment)
        else:  # samples cached before a rounding fix may be one voxel larger
            x, y = fit_patch(x, y, fine_patch(), rng, 0.0)
            if train and self.stage_augment:
                x = augment_fine(x, rng, self.stage_augment)
        if train:
            x = augment(x, rng)
            if rng.uniform() < 0.5:
                x, y = x[..., ::-1], y[..., ::-1]
        return np.ascontiguousarray(x), np.ascontiguousarray(y)


def dice_per_class(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    pred = logits.argmax(1)
    out = []
    for c in range(1, logits.shape[1]):
        p, t = pred == c, y == c
        denom = p.sum().item() + t.sum().item()
        out.append(2 * (p & t).sum().item() / denom if denom else 1.0)
    return out


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    coarse_augment = COARSE_RANDOMISATION if args.randomise else COARSE_AUGMENT
    fine_augment = FINE_RANDOMISATION if args.randomise else FINE_AUGMENT
    stage_augment = ({"coarse": coarse_augment, "fine": fine_augment, "count": COUNT_RANDOMISATION}[args.stage]
                     if args.augment else None)
    train_set = Samples(args.stage, seeds_of("train", args.train_count), args.preset, args.cache, stage_augment)
    tune_set = Samples(args.stage, seeds_of("tune", args.tune_count), args.preset, args.cache)
    if args.variant_weight != 1.0:
        train_set.weight_variants(args.variant_weight)
    if args.preset_weight:
        train_set.weight_presets(args.preset_weight)
    net = build_network(args.stage)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iterations, pct_start=0.05)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    config = {"stage": args.stage, "network": NETWORKS[args.stage], "preprocessing": PREPROCESSING,
              "generator_version": GENERATOR_VERSION,
              "train_count": len(seeds_of("train", args.train_count)), "train_samples": len(train_set.paths),
              "preset": args.preset, "iterations": args.iterations, "lr": args.lr, "batch": args.batch,
              "seed": args.seed, "variant_weight": args.variant_weight, "preset_weight": args.preset_weight,
              "augment": stage_augment}
    start, log = 0, []
    ckpt = out / "last.pt"
    if args.init is not None:  # fine-tune: start from another run's weights (its config is kept)
        init_dir = Path(args.init)
        config["init"] = {"run": init_dir.name, "config": json.loads((init_dir / "config.json").read_text())}
        if not ckpt.exists():
            state = torch.load(init_dir / "final.pt", map_location="cpu", weights_only=True)["model"]
            # a run with more output classes keeps every layer but the last (started afresh)
            own = net.state_dict()
            fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            config["init"]["layers_not_taken"] = sorted(set(own) - set(fits))
            net.load_state_dict(fits, strict=False)
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # tensors only, never pickle objects
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        for _ in range(min(start, args.iterations)):  # fast-forward: --iterations may have changed
            sched.step()
        log = json.loads((out / "log.json").read_text()) if (out / "log.json").exists() else []
        rng = np.random.default_rng(args.seed + start)
        print(f"resumed at iteration {start}")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    t0 = time.perf_counter()
    net.train()
    running = []
    for it in range(start, args.iterations):
        batch = [train_set.get(train_set.draw(rng), rng) for _ in range(args.batch)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        done = it + 1
        if done % args.save_every == 0 or done == args.iterations:
            entry = {"iteration": done, "loss": float(np.mean(running)), "elapsed_s": round(time.perf_counter() - t0, 1)}
            running = []
            if done % args.eval_every == 0 or done == args.iterations:
                entry["tune_dice"] = evaluate(net, tune_set, rng)
                net.train()
            log.append(entry)
            print(json.dumps(entry), flush=True)
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": done}, out / "last.tmp.pt")
            (out / "last.tmp.pt").replace(ckpt)
            (out / "log.json").write_text(json.dumps(log, indent=1))
    torch.save({"model": net.state_dict()}, out / "final.pt")


@torch.no_grad()
def evaluate(net, samples: Samples, rng, limit: int = 12) -> list[float]:
    net.eval()
    scores = []
    for n in range(min(limit, len(samples.paths))):
        x, y = samples.get(n, rng, train=False)
        scores.append(dice_per_class(net(torch.from_numpy(x[None])), torch.from_numpy(y[None])))
    return [round(float(v), 4) for v in np.mean(scores, axis=0)]


def preset_weights(text: str) -> dict[str, float]:
    """``spine=2,chest-coarse=1`` -> {"spine": 2.0, "chest-coarse": 1.0} (argparse type)."""
    out = {}
    for item in filter(None, text.split(",")):
        preset, _, factor = item.partition("=")
        try:
            out[preset.strip()] = float(factor)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: write PRESET=FACTOR, e.g. spine=2") from None
        if out[preset.strip()] <= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: the factor must be above 0")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stage", choices=("coarse", "fine", "count"), required=True)
    p.add_argument("--train-count", type=int, default=300)
    p.add_argument("--tune-count", type=int, default=20)
    p.add_argument("--preset", default=None, help="phantom presets of the samples, comma-separated (default: config.PRESETS[stage])")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--variant-weight", type=float, default=1.0,
                   help="draw scans with rib variants this many times as often")
    p.add_argument("--preset-weight", type=preset_weights, default={}, metavar="PRESET=FACTOR,...",
                   help="draw the samples of these presets this many times as often, e.g. spine=2")
    p.add_argument("--augment", action="store_true",
                   help="coarse stage: turn, cut and degrade the samples; fine stage: move the hints "
                   "(config.COARSE_AUGMENT, FINE_AUGMENT; augment.py)")
    p.add_argument("--randomise", action="store_true",
                   help="with --augment, domain randomisation too: coarse stage tissue values, bias field, "
                   "bright blobs (config.COARSE_RANDOMISATION); fine stage tissue values and bias field on "
                   "the CT channel, one hint stretched into its neighbour (FINE_RANDOMISATION)")
    p.add_argument("--init", default=None, help="checkpoint folder whose final weights start this run")
    a = p.parse_args()
    a.preset = a.preset or STAGE_PRESETS[a.stage]
    a.out = a.out or str(Path(__file__).resolve().parents[1] / "checkpoints" / f"segmentation-{a.stage}")
    train(a)


if __name__ == "__main__":
    main()
