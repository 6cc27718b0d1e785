"""Train the rib check: does the vertebra at the centre of a coarse-grid box bear a rib pair?

    python -m training.segmentation.rib_check [--epochs 12] [--augment] [--init RUN]

Boxes come from the cached coarse-stage samples of the chest phantoms (prepare.py, preset
chest-coarse): the L1 label gives the L1 body's centre on the sample's 5 mm RAS grid, and the
phantom's anatomy (parameters only, nothing is rendered) gives every other vertebra relative to
it, with whether it bears ribs (``OsteoScreenLib.phantom``: a rib of at least 40 mm). Boxes are
cut by ``OsteoScreenLib.rib_check.crop``, as at run time. With ``--augment`` each box is turned,
cut at the sides and in front like a spine-cropped scan and degraded (augment.py,
``config.RIB_CHECK_AUGMENT``).
Writes training/checkpoints/rib-check.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from OsteoScreenLib.phantom import GENERATOR_VERSION
from OsteoScreenLib.phantom.spine import RIB_BEARING_MIN_MM
from OsteoScreenLib.resample import centred_grid, sample
from OsteoScreenLib.rib_check import MIN_BACK_MM, MIN_FRONT_MM, MIN_SIDE_MM, crop
from OsteoScreenLib.volume import Volume

from .augment import AIR, cut_box, random_image_quality, random_side_crop
from .config import PREPROCESSING, RIB_CHECK_AUGMENT, RIB_CHECK_JITTER_MM, RIB_CHECK_LEVELS, RIB_CHECK_NETWORK
from .prepare import DEFAULT_CACHE, sample_paths, seeds_of
from .samples import load

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
PRESET = "chest-coarse"
# The same cases with ribs taken from the lowest rib-bearing vertebrae or given to L1 (--rib-swap):
# elsewhere a vertebra's shape alone tells whether it bears ribs.
SWAP_PRESET = "chest-coarse-ribswap"
# Presets tried for training the rib check and removed from the generator (body joints, costal ribs):
# docs/models.md, "Tried and not shipped".
PRESETS = (PRESET, SWAP_PRESET)


class RibCheckNet(nn.Module):
    """Three conv blocks, global average pooling, one logit."""

    def __init__(self, channels=(8, 16, 32), dropout: float = 0.2):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
                       nn.Conv3d(c, c, 3, padding=1), nn.BatchNorm3d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool3d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, 1))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def build_network() -> RibCheckNet:
    return RibCheckNet(tuple(RIB_CHECK_NETWORK["channels"]), RIB_CHECK_NETWORK["dropout"])


def vertebrae_from_l1(seed: int, preset: str = PRESET) -> dict[str, tuple[np.ndarray, bool]]:
    """Each vertebra's body centre relative to L1's (RAS mm) and whether it bears ribs."""
    from OsteoScreenLib.phantom import sample_parameters
    from OsteoScreenLib.phantom.geometry import make_pose
    from OsteoScreenLib.phantom.render import build_anatomy

    params = sample_parameters(seed, preset)
    anatomy = build_anatomy(params)
    rotation = make_pose(params["pose"]).rotation
    l1 = next(v for v in anatomy.vertebrae if v.name == "L1").center
    return {v.name: (rotation @ (np.asarray(v.center) - l1), v.rib_length_mm >= RIB_BEARING_MIN_MM)
            for v in anatomy.vertebrae if v.name in RIB_CHECK_LEVELS}


def case_items(seed: int, cache: Path = DEFAULT_CACHE, preset: str = PRESET) -> list[dict]:
    """The boxes of one cached case: its coarse input, and each vertebra's centre and label."""
    path = sample_paths(cache, preset, seed)[0]
    if not path.exists():
        return []
    s = load(path)
    spacing = PREPROCESSING["coarse"]["spacing_mm"]
    affine = np.diag([spacing, spacing, spacing, 1.0])  # the sample's RAS grid, origin at voxel 0
    image = Volume(s["x"][0].astype(np.float32), affine)
    l1_voxels = np.argwhere(s["y"] == 1)
    if len(l1_voxels) == 0:
        return []
    l1_ras = image.voxel_centers_ras(l1_voxels.mean(axis=0))[0]
    return [{"image": image, "center": l1_ras + offset, "label": float(ribs), "level": name, "seed": seed,
             "preset": preset} for name, (offset, ribs) in vertebrae_from_l1(seed, preset).items()]


def turned_crop(image: Volume, center, cfg: dict, angles_deg) -> np.ndarray:
    """``crop`` on a grid turned about the box centre (angles about R, A, S): a tilted spine."""
    grid, shape = centred_grid(center, cfg["size_mm"], cfg["spacing_mm"])
    turn = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    grid[:3, :3] = turn @ grid[:3, :3]
    grid[:3, 3] = np.asarray(center, float) + turn @ (grid[:3, 3] - np.asarray(center, float))
    return sample(image, grid, shape, order=1, fill=AIR, antialias=False)[None].astype(np.float32)


def boxes(items: list[dict], rng: np.random.Generator | None, augment: dict | None = None) -> np.ndarray:
    """The network's batch; with ``rng`` the centres jitter and boxes are mirrored, with ``augment``
    (``RIB_CHECK_AUGMENT``) they are also turned, cut at the sides and degraded."""
    cfg = PREPROCESSING["rib_check"]
    out = []
    for it in items:
        c = it["center"] + (rng.uniform(-1, 1, 3) * RIB_CHECK_JITTER_MM if rng is not None else 0.0)
        if augment and rng.uniform() < augment["p_pose"]:
            x = turned_crop(it["image"], c, cfg, [rng.uniform(-r, r) for r in augment["rotate_deg"]])
        else:
            x = crop(it["image"], c, cfg)
        if augment:
            x = random_image_quality(random_side_crop(x, rng, augment, cfg["spacing_mm"]), rng, augment)
        if rng is not None and rng.uniform() < 0.5:
            x = x[..., ::-1]  # left-right mirror: ribs come in pairs
        out.append(x)
    return np.ascontiguousarray(np.stack(out), np.float32)


def accuracy_by_level(items, probs) -> dict[str, float]:
    """Tune accuracy per level; on rib-swap cases per level and label (e.g. ``T12 swap, no ribs``)."""
    out = {}
    keys = sorted({_level_key(it) for it in items}, key=level_order)
    for key in keys:
        idx = [i for i, it in enumerate(items) if _level_key(it) == key]
        out[key] = round(float(np.mean([(probs[i] > 0.5) == (items[i]["label"] > 0.5) for i in idx])), 4)
    return out


def level_order(key: str) -> tuple[int, str]:
    """Sort key of ``accuracy_by_level``'s keys: by level down the spine, then ordinary before swapped."""
    return RIB_CHECK_LEVELS.index(key.split()[0]), key


# The word a preset's tune boxes are reported under, after the level (``accuracy_by_level``);
# rib-swap boxes also say whether they bear ribs.
PRESET_TAGS = {SWAP_PRESET: "swap"}


def _level_key(item: dict) -> str:
    preset = item.get("preset", PRESET)
    if preset == SWAP_PRESET:
        return f"{item['level']} swap, {'ribs' if item['label'] > 0.5 else 'no ribs'}"
    return f"{item['level']} {PRESET_TAGS[preset]}" if preset in PRESET_TAGS else item["level"]


def cached_tune_items(count: int | None, cache: Path = DEFAULT_CACHE) -> dict[str, list[dict]]:
    """The tune boxes of each preset (PRESETS) whose samples are cached; a preset with none is left out."""
    items = {preset: [it for s in seeds_of("tune", count) for it in case_items(s, cache, preset)] for preset in PRESETS}
    return {preset: its for preset, its in items.items() if its}


def narrowest_crop(x: np.ndarray) -> np.ndarray:
    """Boxes (n, 1, k, j, i) cut to the narrowest field of view the run-time check accepts
    (MIN_SIDE_MM each side, MIN_FRONT_MM in front, MIN_BACK_MM behind the centre); air beyond."""
    return cut_box(x, PREPROCESSING["rib_check"]["spacing_mm"], MIN_SIDE_MM, MIN_FRONT_MM, MIN_BACK_MM)


def predict(net: nn.Module, items: list[dict], narrowest: bool = False) -> np.ndarray:
    """Rib-bearing probabilities of the boxes as cut at run time (or cut to the narrowest field of view)."""
    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(items), 64):
            x = boxes(items[s : s + 64], None)
            if narrowest:
                x = narrowest_crop(x)
            out.append(torch.sigmoid(net(torch.from_numpy(x))).numpy()[:, 0])
    return np.concatenate(out)


def bce(p: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))


def train(epochs: int, out: Path, seed: int = 0, threads: int = 2, cache: Path = DEFAULT_CACHE,
          train_count: int | None = None, augment: bool = False, init: str | None = None,
          rib_swap: bool = False) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    presets = (PRESET,) + ((SWAP_PRESET,) if rib_swap else ())
    train_items = [it for p in presets for s in seeds_of("train", train_count) for it in case_items(s, cache, p)]
    tune_items = [it for p in presets for s in seeds_of("tune") for it in case_items(s, cache, p)]
    if not train_items:
        raise SystemExit("no cached chest-coarse samples; run training.segmentation.prepare --preset chest-coarse")
    for preset in presets[1:]:
        if not any(it["preset"] == preset for it in train_items):
            raise SystemExit(f"no cached {preset} samples; run training.segmentation.prepare --preset {preset} "
                             "--stages coarse")
    net = build_network()
    if init:
        net.load_state_dict(torch.load(CHECKPOINTS / init / "final.pt", map_location="cpu", weights_only=True)["model"])
    aug = RIB_CHECK_AUGMENT if augment else None
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.BCEWithLogitsLoss()
    out.mkdir(parents=True, exist_ok=True)
    log, best, best_loss, t0 = [], None, np.inf, time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(train_items))
        losses = []
        for s in range(0, len(order), 32):
            batch = [train_items[i] for i in order[s : s + 32]]
            x = torch.from_numpy(boxes(batch, rng, aug))
            y = torch.tensor([[it["label"]] for it in batch])
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        p = predict(net, tune_items)
        y = np.array([it["label"] for it in tune_items])
        tune_loss = bce(p, y)
        entry = {"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4), "tune_loss": round(tune_loss, 4),
                 "tune_accuracy": round(float(np.mean((p > 0.5) == (y > 0.5))), 4),
                 "tune_accuracy_by_level": accuracy_by_level(tune_items, p)}
        if aug:  # the narrowest field of view the run-time check accepts; the checkpoint is chosen on both
            pc = predict(net, tune_items, narrowest=True)
            entry |= {"tune_loss_narrowest": round(bce(pc, y), 4),
                      "tune_accuracy_narrowest": round(float(np.mean((pc > 0.5) == (y > 0.5))), 4),
                      "tune_accuracy_narrowest_by_level": accuracy_by_level(tune_items, pc)}
            tune_loss = (tune_loss + bce(pc, y)) / 2
        entry["elapsed_s"] = round(time.perf_counter() - t0, 1)
        log.append(entry)
        print(json.dumps(entry), flush=True)
        if best is None or tune_loss <= best_loss:
            best, best_loss = entry, tune_loss
            torch.save({"model": net.state_dict()}, out / "final.pt")
    config = {"network": RIB_CHECK_NETWORK, "preprocessing": PREPROCESSING["rib_check"], "preset": PRESET,
              "rib_swap_preset": SWAP_PRESET if rib_swap else None,
              "generator_version": GENERATOR_VERSION,
              "levels": list(RIB_CHECK_LEVELS), "jitter_mm": RIB_CHECK_JITTER_MM,
              "augment": aug, "init": init, "epochs": epochs, "seed": seed,
              "train_cases": len({it["seed"] for it in train_items}), "train_boxes": len(train_items),
              "tune_cases": len({it["seed"] for it in tune_items}), "tune_boxes": len(tune_items), "best": best}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "log.json").write_text(json.dumps(log, indent=1))
    return config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--out", type=Path, default=CHECKPOINTS / "rib-check")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--train-count", type=int, default=None)
    p.add_argument("--augment", action="store_true", help="turn, side-crop and degrade the boxes (RIB_CHECK_AUGMENT)")
    p.add_argument("--init", default=None, help="start from this checkpoint run (under training/checkpoints)")
    p.add_argument("--rib-swap", action="store_true",
                   help=f"also train and tune on the {SWAP_PRESET} cases (ribs moved between vertebrae)")
    a = p.parse_args()
    train(a.epochs, a.out, threads=a.threads, cache=a.cache, train_count=a.train_count, augment=a.augment, init=a.init,
          rib_swap=a.rib_swap)


if __name__ == "__main__":
    main()
