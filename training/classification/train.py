"""Train classifier l1l2 (model 1) or l1 (model 2) on cached phantom features (CPU).

    python -m training.classification.train --model l1l2 --epochs 40

Selects the epoch with the best tune-set loss; saves it with its config.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from OsteoScreenLib.features import erode, network_image

from .config import BMD_LOSS_WEIGHT, BMD_SCALE_MG_CM3, MODELS, NETWORK, PRESET
from .network import IMAGE_CHANNELS, FusionClassifier
from .prepare import load_split

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def inputs(data: dict, model: str, rng=None) -> np.ndarray:
    """Network inputs (N, V, C, H, W); with ``rng``, augmented as a reader's segment would vary."""
    idx = [("L1", "L2").index(v) for v in MODELS[model]]
    out = np.empty((len(data["label"]), len(idx), IMAGE_CHANNELS, *data["image_hu"].shape[2:]), np.float32)
    for n in range(len(out)):
        for c, v in enumerate(idx):
            image = data["image_hu"][n, v].astype(np.float32)
            mask = data["mask"][n, v]
            if rng is not None:
                r = rng.integers(-2, 3)  # segment boundary one or two pixels in or out
                mask = erode(mask, r) if r > 0 else ~erode(~mask, -r) if r < 0 else mask
                image = image + rng.normal(0, rng.uniform(0, 15), image.shape).astype(np.float32)
                if rng.uniform() < 0.5:
                    image, mask = image[:, ::-1], mask[:, ::-1]  # left-right mirror
            out[n, c] = network_image(image, mask)
    return out


def train(model: str, epochs: int, preset: str, seed: int, out: Path, train_count: int | None, threads: int = 2) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    train_data, tune_data = load_split("train", preset, train_count), load_split("tune", preset)
    net = FusionClassifier(len(MODELS[model]), **NETWORK)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    ce, l1 = nn.CrossEntropyLoss(), nn.SmoothL1Loss()
    x_tune = torch.from_numpy(inputs(tune_data, model))
    y_tune = torch.from_numpy(tune_data["label"].astype(np.int64))
    b_tune = torch.from_numpy(tune_data["bmd"][:, 2] / BMD_SCALE_MG_CM3)[:, None]
    best, log = None, []
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        x_all = inputs(train_data, model, rng)
        order = rng.permutation(len(x_all))
        losses = []
        for s in range(0, len(order), 16):
            b = order[s : s + 16]
            x = torch.from_numpy(x_all[b])
            y = torch.from_numpy(train_data["label"][b].astype(np.int64))
            bmd = torch.from_numpy(train_data["bmd"][b, 2] / BMD_SCALE_MG_CM3)[:, None]
            logits, pred_bmd = net(x)
            loss = ce(logits, y) + BMD_LOSS_WEIGHT * l1(pred_bmd, bmd)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        net.eval()
        with torch.no_grad():
            logits, pred_bmd = net(x_tune)
            tune_loss = (ce(logits, y_tune) + BMD_LOSS_WEIGHT * l1(pred_bmd, b_tune)).item()
            acc = (logits.argmax(1) == y_tune).float().mean().item()
            mae = (pred_bmd - b_tune).abs().mean().item() * BMD_SCALE_MG_CM3
        entry = {"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4), "tune_loss": round(tune_loss, 4),
                 "tune_accuracy": round(acc, 4), "tune_bmd_mae": round(mae, 2), "elapsed_s": round(time.perf_counter() - t0, 1)}
        log.append(entry)
        print(json.dumps(entry), flush=True)
        if best is None or tune_loss < best["tune_loss"]:
            best = entry
            torch.save({"model": net.state_dict()}, out / "best.pt")
    config = {"model": model, "vertebrae": MODELS[model], "network": NETWORK, "epochs": epochs, "preset": preset,
              "seed": seed, "train_cases": int(len(train_data["label"])), "tune_cases": int(len(tune_data["label"])),
              "best": best}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "log.json").write_text(json.dumps(log, indent=1))
    return config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=list(MODELS), required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--preset", default=PRESET)
    p.add_argument("--train-count", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    train(a.model, a.epochs, a.preset, a.seed, CHECKPOINTS / f"classifier-{a.model}", a.train_count, a.threads)


if __name__ == "__main__":
    main()
