"""Render phantoms and cache the classifiers' inputs (central images, masks, ROI HU, BMD).

    python -m training.classification.prepare --split train --workers 2

Features come from the reference L1/L2 body labels through OsteoScreenLib.features,
exactly as at run time. One .npz per case under training/cache/classification/.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from OsteoScreenLib.features import body_features
from OsteoScreenLib.registry import CLASSES

from .config import PRESET, SPLITS

CACHE = Path(__file__).resolve().parents[1] / "cache" / "classification"


def case_path(preset: str, seed: int) -> Path:
    from OsteoScreenLib.phantom import GENERATOR_VERSION

    return CACHE / f"{preset}-v{GENERATOR_VERSION}" / f"{seed}.npz"


def prepare_one(job: tuple[str, int]) -> int:
    preset, seed = job
    path = case_path(preset, seed)
    if path.exists():
        return seed
    from OsteoScreenLib.phantom import generate_case

    case = generate_case(seed, preset)
    feats = [body_features(case.ct, case.labels, n) for n in ("L1", "L2")]
    out = {  # image-derived only: the labels come from the parameters (labels_of), so they can change
        "image_hu": np.stack([f.image_hu for f in feats]).astype(np.float16),
        "mask": np.stack([f.mask for f in feats]),
        "roi_hu": np.array([f.roi_hu for f in feats], np.float32),
        "kvp": np.array(case.meta["parameters"]["scanner"]["kvp"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return seed


def seeds_of(split: str, count: int | None = None) -> list[int]:
    first, n = SPLITS[split]
    return list(range(first, first + (n if count is None else min(n, count))))


def load_split(split: str, preset: str, count: int | None = None) -> dict:
    rows = []
    for seed in seeds_of(split, count):
        p = case_path(preset, seed)
        if p.exists():
            with np.load(p, allow_pickle=False) as z:
                rows.append({k: z[k] for k in z.files} | {"seed": np.array(seed)})
    if not rows:
        raise SystemExit(f"no cached {split} cases for preset {preset}; run training.classification.prepare")
    data = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in ("bmd", "label")}  # older caches
    return data | labels_of([int(s) for s in data["seed"]], preset)


def labels_of(seeds: list[int], preset: str) -> dict:
    """Reference standard and contrast phase of phantoms, from their parameters (nothing is rendered).

    ``bmd`` / ``label``: the QCT reading (L1, L2, mean) and its class, what the classifiers learn
    (the paper's reference standard); ``true_bmd`` / ``true_label``: the density the generator drew.
    """
    from OsteoScreenLib.phantom import reference_standard
    from OsteoScreenLib.phantom.parameters import sample_parameters

    params = [sample_parameters(s, preset) for s in seeds]
    refs = [reference_standard(p) for p in params]

    def triple(key):
        return np.array([[r[key][v] for v in ("L1", "L2", "mean")] for r in refs], np.float32)

    return {"bmd": triple("qct_bmd_mg_cm3"), "label": np.array([CLASSES.index(r["qct_class"]) for r in refs]),
            "true_bmd": triple("bmd_mg_cm3"), "true_label": np.array([CLASSES.index(r["bmd_class"]) for r in refs]),
            "contrast": np.array([p["scanner"]["contrast_phase"] for p in params])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--split", choices=list(SPLITS), default="train")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--preset", default=PRESET)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [(a.preset, s) for s in seeds_of(a.split, a.count)]
    t0 = time.perf_counter()
    with Pool(a.workers) as pool:
        for n, _ in enumerate(pool.imap_unordered(prepare_one, jobs), 1):
            if n % 25 == 0 or n == len(jobs):
                print(f"[{a.split}] {n}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
