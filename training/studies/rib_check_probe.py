"""Where does the bundled rib check look, and what changes its answer on the real scans?

    python -m training.studies.rib_check_probe [--count 20]

The bundled rib check (ONNX, as at run time) is asked about the same boxes as in
rib_check_eval.py (the real cases' reference vertebrae; the cached tune phantoms, ordinary, with
ribs moved and, where cached, with the lowest ribs joined to their body only), each also changed
in one way:

- mirrored left to right (ribs come in pairs; the check learnt mirrored boxes);
- cut to the narrowest field of view the run-time check accepts (``narrowest_crop``);
- bone more than BESIDE_MM to each side of the centre turned to soft tissue (25 mm: the ribs
  beyond their heads gone; 15 mm: the rib heads and the transverse processes gone too);
- a column of CENTRE_HALF_MM each side of the centre turned to soft tissue (the vertebral body,
  canal and spinous process gone; the rib heads 20-25 mm out kept);
- no lung: air inside the body (LUNG, above the -1000 HU of the air around it) turned to soft
  tissue, as where the lungs end above the box;
- noisier (NOISE_SD, seeded) and blurred (BLUR_SD_VOXELS): another scanner.

A check that reads the ribs keeps its answers under the first two and under noise and blur, and
changes them where the ribs are taken away. Writes training/results/rib_check_probe.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from scipy import ndimage

from OsteoScreenLib.segmenter import L1L2Segmenter

from training.segmentation.augment import AIR, SOFT_TISSUE, inside_scan
from training.segmentation.config import PREPROCESSING
from training.segmentation.evaluate import RESULTS
from training.segmentation.rib_check import PRESET, PRESETS, accuracy_by_level, boxes, narrowest_crop, cached_tune_items
from .rib_check_eval import REAL_DATA, REAL_VERTEBRAE, real_boxes

BESIDE_MM = (15.0, 25.0)  # a lower thoracic body is 15-20 mm wide each side; its rib heads lie 20-25 mm out
CENTRE_HALF_MM = 15.0
BONE = 0.0  # 250 HU in the [-1000, 1500] HU window: cortical bone and dense cancellous bone
LUNG = -0.6  # -500 HU
NOISE_SD = 0.04  # 50 HU on the 5 mm grid
BLUR_SD_VOXELS = 0.8


def _sideways_mm(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    return np.abs(np.arange(n) - (n - 1) / 2) * PREPROCESSING["rib_check"]["spacing_mm"]


def to_soft_tissue(x: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Boxes (..., i) with the voxels ``where`` (inside the scan) set to soft tissue."""
    x = x.copy()
    x[where & inside_scan(x)] = SOFT_TISSUE
    return x


def without_bone_beside(x: np.ndarray, mm: float) -> np.ndarray:
    return to_soft_tissue(x, (x > BONE) & (_sideways_mm(x) > mm))


def without_centre(x: np.ndarray) -> np.ndarray:
    return to_soft_tissue(x, np.broadcast_to(_sideways_mm(x) <= CENTRE_HALF_MM, x.shape))


def without_lung(x: np.ndarray) -> np.ndarray:
    return to_soft_tissue(x, x < LUNG)


def noisier(x: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, NOISE_SD, x.shape)
    return np.where(inside_scan(x), np.clip(x + noise, -1.0, 1.0), AIR)


def blurred(x: np.ndarray) -> np.ndarray:
    out = np.stack([ndimage.gaussian_filter(b, (0, BLUR_SD_VOXELS, BLUR_SD_VOXELS, BLUR_SD_VOXELS)) for b in x])
    return np.where(inside_scan(x), out, AIR)


CHANGES = {
    "as at run time": lambda x: x,
    "mirrored": lambda x: x[..., ::-1],
    "narrowest field of view": narrowest_crop,
    **{f"no bone beyond {mm:g} mm beside": (lambda x, mm=mm: without_bone_beside(x, mm)) for mm in BESIDE_MM[::-1]},
    f"no centre ({CENTRE_HALF_MM:g} mm each side)": without_centre,
    "no lung": without_lung,
    f"noisier ({NOISE_SD * 1250:g} HU)": noisier,
    f"blurred ({BLUR_SD_VOXELS:g} voxel)": blurred,
}


def probabilities(run, x: np.ndarray, batch: int = 64) -> np.ndarray:
    logits = [np.asarray(run(np.ascontiguousarray(x[s : s + batch], np.float32)), float).reshape(-1)
              for s in range(0, len(x), batch)]
    return 1.0 / (1.0 + np.exp(-np.concatenate(logits)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=20, help="tune cases (those cached)")
    a = p.parse_args()
    t0 = time.perf_counter()
    seg = L1L2Segmenter(threads=2)
    run = seg.rib_net.run
    items = cached_tune_items(a.count)
    if PRESET not in items:
        raise SystemExit("no cached chest-coarse tune samples; run training.segmentation.prepare --split tune "
                         "--count 20 --preset chest-coarse --stages coarse (and --preset chest-coarse-ribswap)")
    phantom_x = {preset: boxes(its, None) for preset, its in items.items()}
    real = {case: real_boxes(case, REAL_DATA) for case in REAL_VERTEBRAE}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model_version": seg.card["version"], "generator_version": seg.card["training_data"]["generator_version"],
              "tune_cases": a.count, "changes": {}}
    for name, change in CHANGES.items():
        entry = {}
        for preset, x in phantom_x.items():
            probs = probabilities(run, change(x))
            y = np.array([it["label"] for it in items[preset]])
            entry[preset] = {"accuracy": round(float(np.mean((probs > 0.5) == (y > 0.5))), 4),
                             "by_level": accuracy_by_level(items[preset], probs)}
        entry["real"] = {case: dict(zip(names, np.round(probabilities(run, change(x)), 3).tolist()))
                         for case, (names, x) in real.items()}
        result["changes"][name] = entry
        print(name, json.dumps(entry["real"]), flush=True)
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rib_check_probe.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "rib_check_probe.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'rib_check_probe.md'}")


def markdown(result: dict) -> str:
    changes = result["changes"]
    presets = [p for p in PRESETS if p in next(iter(changes.values()))]
    md = ["# Rib check probe: what changes its answer", "",
          f"{result['machine']}; {result['date']}. Bundled segmentation model {result['model_version']} (its rib check, "
          f"ONNX Runtime); phantoms of generator {result['generator_version']}: {result['tune_cases']} tune cases, "
          "boxes centred on each vertebra as in `rib_check_eval.md`. Each box as at run time and changed in one way "
          "(`training/studies/rib_check_probe.py`). "
          f"{result['elapsed_s']} s.", "",
          "## Tune phantoms: accuracy", "",
          "| change | " + " | ".join(f"`{p}`" for p in presets) + " |", "| --- |" + " --- |" * len(presets)]
    for name, e in changes.items():
        md.append(f"| {name} | " + " | ".join(str(e[p]["accuracy"]) for p in presets) + " |")
    for case in REAL_VERTEBRAE:
        levels = list(next(iter(changes.values()))["real"][case])
        md += ["", f"## `{case}`: rib-bearing probability at the reference vertebrae", "",
               "| change | " + " | ".join(levels) + " |", "| --- |" + " --- |" * len(levels)]
        for name, e in changes.items():
            md.append(f"| {name} | " + " | ".join(str(e["real"][case][lv]) for lv in levels) + " |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
