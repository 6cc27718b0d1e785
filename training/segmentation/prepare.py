"""Render phantoms and cache the training samples of both stages (resumable, parallel).

    python -m training.segmentation.prepare --split train --count 300 --workers 2
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from .config import SPLITS
from .samples import coarse_sample, fine_sample, save

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "cache" / "segmentation"


def sample_paths(cache: Path, preset: str, seed: int) -> tuple[Path, Path]:
    """Cache paths, keyed by generator version: a changed generator never reuses old samples."""
    from OsteoScreenLib.phantom import GENERATOR_VERSION

    base = cache / f"{preset}-v{GENERATOR_VERSION}"
    return base / "coarse" / f"{seed}.npz", base / "fine" / f"{seed}.npz"


def prepare_one(args: tuple[Path, str, int, str]) -> tuple[int, float]:
    cache, preset, seed, stages = args
    coarse_path, fine_path = sample_paths(cache, preset, seed)
    todo = [s for s, p in (("coarse", coarse_path), ("fine", fine_path)) if s in stages and not p.exists()]
    if not todo:
        return seed, 0.0
    from OsteoScreenLib.phantom import generate_case

    t = time.perf_counter()
    case = generate_case(seed, preset)
    rng = np.random.default_rng(seed + 7)
    if "coarse" in todo:
        save(coarse_path, coarse_sample(case.ct, case.labels))
    if "fine" in todo:
        save(fine_path, fine_sample(case.ct, case.labels, rng))
    return seed, time.perf_counter() - t


def seeds_of(split: str, count: int | None = None) -> list[int]:
    first, n = SPLITS[split]
    return list(range(first, first + (n if count is None else min(count, n))))


def prepare(split: str, count: int | None, preset: str, cache: Path, workers: int, stages: str = "coarse,fine") -> None:
    jobs = [(cache, preset, s, stages) for s in seeds_of(split, count)]
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
    p.add_argument("--stages", default="coarse,fine", help="which samples to cache: coarse, fine or both")
    a = p.parse_args()
    prepare(a.split, a.count, a.preset, a.cache, a.workers, a.stages)


if __name__ == "__main__":
    main()
