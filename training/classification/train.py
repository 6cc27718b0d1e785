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

from OsteoScreenLib.features import elliptical_roi, erode, network_image, scan_vector, scan_vector_size

from .config import BMD_LOSS_BETA_MG_CM3, BMD_LOSS_WEIGHT, BMD_SCALE_MG_CM3, MODELS, NETWORK, PRESET, REFERENCE_STANDARD, UNKNOWN_CONTRAST_FRACTION, UNKNOWN_KVP_FRACTION
from .network import IMAGE_CHANNELS, FusionClassifier
from .prepare import load_split

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def inputs(data: dict, model: str, rng=None, kvp_known: bool = True,
           contrast_known: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs: images (N, V, C, H, W) and scan vectors (N, S).

    With ``rng``, augmented as a reader's segment and another scanner would vary, and the
    tube voltage and the contrast phase each hidden in a share of cases (files without a
    DICOM header, readers who do not give the phase). The ROI HU is measured on the
    (augmented) image and mask, as at run time.
    """
    idx = [("L1", "L2").index(v) for v in MODELS[model]]
    n_cases = len(data["label"])
    images = np.empty((n_cases, len(idx), IMAGE_CHANNELS, *data["image_hu"].shape[2:]), np.float32)
    scans = np.empty((n_cases, scan_vector_size(len(idx))), np.float32)
    for n in range(n_cases):
        roi_hu = []
        for c, v in enumerate(idx):
            image = data["image_hu"][n, v].astype(np.float32)
            mask = data["mask"][n, v]
            if rng is not None:
                r = rng.integers(-2, 3)  # segment boundary one or two pixels in or out
                mask = erode(mask, r) if r > 0 else ~erode(~mask, -r) if r < 0 else mask
                image = image + rng.normal(0, rng.uniform(0, 15), image.shape).astype(np.float32)
                if rng.uniform() < 0.5:
                    image, mask = image[:, ::-1], mask[:, ::-1]  # left-right mirror
            roi = elliptical_roi(mask)
            roi_hu.append(float(image[roi].mean()) if roi.any() else float(data["roi_hu"][n, v]))
            images[n, c] = network_image(image, mask)
        known = kvp_known if rng is None else rng.uniform() >= UNKNOWN_KVP_FRACTION
        phase_known = contrast_known if rng is None else rng.uniform() >= UNKNOWN_CONTRAST_FRACTION
        scans[n] = scan_vector(int(data["kvp"][n]) if known else None, roi_hu,
                               str(data["contrast"][n]) if phase_known else None)
    return images, scans


def init_calibration(net: FusionClassifier, data: dict, model: str) -> dict:
    """Start the BMD output at the least-squares calibration line of the scan vector (one HU-to-BMD
    line per tube voltage, and one for unknown), with the image branch's BMD weights at zero:
    the images then learn only what the ROI mean misses. Without it the network ended above the
    error of that linear fit on its own input (tune MAE 12-20 against 8.7 mg/cm3)."""
    cases = [(k, c) for k in (True, False) for c in (True, False)]
    scans = np.concatenate([inputs_scan(data, model, k, c) for k, c in cases])
    target = np.tile(data["bmd"][:, 2] / BMD_SCALE_MG_CM3, len(cases))
    design = np.concatenate([scans, np.ones((len(scans), 1), np.float32)], 1).astype(np.float64)
    ridge = 1e-3 * np.eye(design.shape[1])
    w = np.linalg.solve(design.T @ design + ridge, design.T @ target)
    with torch.no_grad():
        net.bmd_skip.weight.copy_(torch.from_numpy(w[:-1][None]).float())
        net.bmd_skip.bias.fill_(float(w[-1]))
        net.bmd.weight.zero_()
        net.bmd.bias.zero_()
    fit_mae = float(np.abs(design @ w - target).mean() * BMD_SCALE_MG_CM3)
    return {"train_mae_mg_cm3": round(fit_mae, 2)}


def inputs_scan(data: dict, model: str, kvp_known: bool, contrast_known: bool) -> np.ndarray:
    """Scan vectors of cached cases (reference masks, no augmentation)."""
    idx = [("L1", "L2").index(v) for v in MODELS[model]]
    return np.stack([scan_vector(int(k) if kvp_known else None, [float(h[i]) for i in idx],
                                 str(c) if contrast_known else None)
                     for k, h, c in zip(data["kvp"], data["roi_hu"], data["contrast"])])


def train(model: str, epochs: int, preset: str, seed: int, out: Path, train_count: int | None, threads: int = 2) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    train_data, tune_data = load_split("train", preset, train_count), load_split("tune", preset)
    net = FusionClassifier(len(MODELS[model]), **NETWORK)
    calibration = init_calibration(net, train_data, model)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    ce, l1 = nn.CrossEntropyLoss(), nn.SmoothL1Loss(beta=BMD_LOSS_BETA_MG_CM3 / BMD_SCALE_MG_CM3)
    # Tune loss over both cases of use: tube voltage and contrast phase given, and neither.
    tune = [tuple(torch.from_numpy(a) for a in inputs(tune_data, model, kvp_known=k, contrast_known=k))
            for k in (True, False)]
    y_tune = torch.from_numpy(tune_data["label"].astype(np.int64))
    b_tune = torch.from_numpy(tune_data["bmd"][:, 2] / BMD_SCALE_MG_CM3)[:, None]
    best, log = None, []
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        x_all, s_all = inputs(train_data, model, rng)
        order = rng.permutation(len(x_all))
        losses = []
        for s in range(0, len(order), 16):
            b = order[s : s + 16]
            x = torch.from_numpy(x_all[b])
            y = torch.from_numpy(train_data["label"][b].astype(np.int64))
            bmd = torch.from_numpy(train_data["bmd"][b, 2] / BMD_SCALE_MG_CM3)[:, None]
            logits, pred_bmd = net(x, torch.from_numpy(s_all[b]))
            loss = ce(logits, y) + BMD_LOSS_WEIGHT * l1(pred_bmd, bmd)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        net.eval()
        with torch.no_grad():
            scores = []
            for x_tune, s_tune in tune:
                logits, pred_bmd = net(x_tune, s_tune)
                scores.append(((ce(logits, y_tune) + BMD_LOSS_WEIGHT * l1(pred_bmd, b_tune)).item(),
                               (logits.argmax(1) == y_tune).float().mean().item(),
                               (pred_bmd - b_tune).abs().mean().item() * BMD_SCALE_MG_CM3))
        (loss_k, acc_k, mae_k), (loss_u, acc_u, mae_u) = scores
        tune_loss = 0.5 * (loss_k + loss_u)
        entry = {"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4), "tune_loss": round(tune_loss, 4),
                 "tune_accuracy": round(acc_k, 4), "tune_bmd_mae": round(mae_k, 2),
                 "tune_accuracy_unknown": round(acc_u, 4), "tune_bmd_mae_unknown": round(mae_u, 2),
                 "elapsed_s": round(time.perf_counter() - t0, 1)}
        log.append(entry)
        print(json.dumps(entry), flush=True)
        if best is None or tune_loss < best["tune_loss"]:
            best = entry
            torch.save({"model": net.state_dict()}, out / "best.pt")
    config = {"model": model, "vertebrae": MODELS[model], "reference_standard": REFERENCE_STANDARD,
              "network": NETWORK, "epochs": epochs,
              "unknown_kvp_fraction": UNKNOWN_KVP_FRACTION,
              "unknown_contrast_fraction": UNKNOWN_CONTRAST_FRACTION,
              "calibration_init": calibration,
              "bmd_loss": {"smooth_l1_beta_mg_cm3": BMD_LOSS_BETA_MG_CM3, "weight": BMD_LOSS_WEIGHT}, "preset": preset,
              "seed": seed, "train_cases": int(len(train_data["label"])), "tune_cases": int(len(tune_data["label"])),
              "best": best}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "log.json").write_text(json.dumps(log, indent=1))
    return config


def run_folder(model: str, seed: int) -> Path:
    """Checkpoint folder of one member of the ensemble (config.ENSEMBLE_SEEDS)."""
    return CHECKPOINTS / (f"classifier-{model}" if seed == 0 else f"classifier-{model}-seed{seed}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=list(MODELS), required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--preset", default=PRESET)
    p.add_argument("--train-count", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    train(a.model, a.epochs, a.preset, a.seed, run_folder(a.model, a.seed), a.train_count, a.threads)


if __name__ == "__main__":
    main()
