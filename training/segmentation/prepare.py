"""Render phantoms and cache the training samples of both stages (resumable, parallel).

    python -m training.segmentation.prepare --split train --count 300 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from .config import SPLITS
from .samples import coarse_sample, fine_sample, save

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "cache" / "segmentation"


def cache_folder(cache: Path, preset: str) -> Path:
    """One preset's samples, keyed by generator version: a changed generator never reuses old samples."""
    from OsteoScreenLib.phantom import GENERATOR_VERSION

    return cache / f"{preset}-v{GENERATOR_VERSION}"


def sample_paths(cache: Path, preset: str, seed: int) -> tuple[Path, Path]:
    base = cache_folder(cache, preset)
    return base / "coarse" / f"{seed}.npz", base / "fine" / f"{seed}.npz"


def count_sample_path(cache: Path, preset: str, seed: int) -> Path:
    """The vertebra counter's sample (count_targets.count_sample) of one case."""
    return cache_folder(cache, preset) / "count" / f"{seed}.npz"


# Presets rendered only on a box around L1-L2 (chest-box: a fraction of a whole chest's rendering
# time) hold the fine stage's crop but not the chest the coarse stage counts ribs on: its hints come
# from the same case rendered whole on the coarse stage's own grid (same anatomy, pose and world frame).
HINTS_FROM = {"chest-box": "chest-coarse"}

_COARSE: dict = {}  # checkpoint -> the coarse network loaded from it, once per process
COARSE_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "segmentation-coarse" / "final.pt"


def coarse_hints(ct, checkpoint: Path):
    """The trained coarse stage's probabilities on this CT, through the run-time preprocessing
    (None without a trained coarse stage, or when the CT holds no body)."""
    import torch

    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib.segmenter import coarse_input, pad_to_multiple, softmax
    from OsteoScreenLib.volume import Volume

    from .config import PREPROCESSING
    from .network import build_network

    key = Path(checkpoint).resolve()
    if key not in _COARSE:
        if not checkpoint.exists():
            return None
        torch.set_num_threads(1)
        network = build_network("coarse")
        network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
        network.eval()
        _COARSE[key] = network
    cfg = PREPROCESSING["coarse"]
    try:
        x, grid = coarse_input(ct, cfg)
    except OsteoScreenError:
        return None
    padded, valid = pad_to_multiple(x[None], cfg["pad_multiple"], -1.0)
    with torch.no_grad():
        logits = _COARSE[key](torch.from_numpy(np.ascontiguousarray(padded, np.float32))).numpy()[0]
    return Volume(np.moveaxis(softmax(logits[(slice(None), *valid)], 0), 0, -1), grid)


def prepare_one(args: tuple[Path, str, int, str, Path]) -> tuple[int, float]:
    cache, preset, seed, stages, coarse_checkpoint = args
    coarse_path, fine_path = sample_paths(cache, preset, seed)
    count_path = count_sample_path(cache, preset, seed)
    todo = [s for s, p in (("coarse", coarse_path), ("fine", fine_path), ("count", count_path))
            if s in stages and not p.exists()]
    if not todo:
        return seed, 0.0
    from OsteoScreenLib.phantom import generate_case, render_case, sample_parameters

    t = time.perf_counter()
    params = sample_parameters(seed, preset)
    case = render_case(params)
    rng = np.random.default_rng(seed + 7)
    if "count" in todo:
        from .count_targets import count_sample

        save(count_path, count_sample(params, case.ct))
    if "coarse" in todo:
        save(coarse_path, coarse_sample(case.ct, case.labels))
    if "fine" in todo:
        hint_ct = generate_case(seed, HINTS_FROM[preset]).ct if preset in HINTS_FROM else case.ct
        save(fine_path, fine_sample(case.ct, case.labels, rng, coarse_hints(hint_ct, coarse_checkpoint)))
    return seed, time.perf_counter() - t


def seeds_of(split: str, count: int | None = None) -> list[int]:
    first, n = SPLITS[split]
    return list(range(first, first + (n if count is None else min(count, n))))


def check_hint_source(cache: Path, preset: str, coarse_checkpoint: Path) -> None:
    """Fine samples carry the coarse stage's hints, so one cache folder holds the hints of one coarse
    stage: record its SHA-256 with the first samples, refuse to add samples from another one."""
    from OsteoScreenLib.hashing import sha256_file

    record = cache_folder(cache, preset) / "fine" / "hints.json"
    source = {"coarse_checkpoint_sha256": sha256_file(coarse_checkpoint) if coarse_checkpoint.exists() else None}
    if record.exists():
        if json.loads(record.read_text()) != source:
            raise SystemExit(f"error: the fine samples in {record.parent} carry hints of another coarse stage than "
                             f"{coarse_checkpoint}; move that folder away or pass another --cache")
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(source) + "\n")


def prepare(split: str, count: int | None, preset: str, cache: Path, workers: int, stages: str = "coarse,fine",
            coarse_checkpoint: Path = COARSE_CHECKPOINT) -> None:
    if "coarse" in stages and preset in HINTS_FROM:
        raise SystemExit(f"error: preset {preset} shows only a box around L1-L2, no scan the coarse stage learns "
                         "from; prepare it with --stages fine")
    if "fine" in stages:
        check_hint_source(cache, preset, coarse_checkpoint)
    jobs = [(cache, preset, s, stages, coarse_checkpoint) for s in seeds_of(split, count)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        for n, (seed, dt) in enumerate(pool.imap_unordered(prepare_one, jobs), 1):
            if n % 20 == 0 or n == len(jobs):
                print(f"[{split}] {n}/{len(jobs)} cases ({time.perf_counter() - t0:.0f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--split", choices=list(SPLITS), default="train")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--preset", default="training")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--stages", default="coarse,fine", help="which samples to cache: coarse, fine, count (comma-separated)")
    p.add_argument("--coarse-checkpoint", type=Path, default=COARSE_CHECKPOINT,
                   help="trained coarse stage whose output becomes the fine samples' hints")
    a = p.parse_args()
    prepare(a.split, a.count, a.preset, a.cache, a.workers, a.stages, a.coarse_checkpoint)


if __name__ == "__main__":
    main()
