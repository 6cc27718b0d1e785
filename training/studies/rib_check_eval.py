"""Does the rib check read the ribs, or the shape of the vertebra?

    python -m training.studies.rib_check_eval [--runs rib-check-g11 rib-check] [--count 20] [--out NAME]

In every ordinary phantom a vertebra's shape (thoracic or lumbar) tells whether it bears ribs, so
a network can answer from the shape alone. This script asks trained rib checks (checkpoint runs
under training/checkpoints) about:

- tune phantoms (preset ``chest-coarse``, the cached samples the training tunes on), by level;
- the same phantoms with ribs moved (preset ``chest-coarse-ribswap``: the ribs of the lowest one
  or two rib-bearing vertebrae removed, or a full pair given to L1), by level and swap: a check
  that reads shapes calls a thoracic vertebra without ribs rib-bearing, and L1 with ribs not;
- the real cases, at each reference vertebra: its S from the reference mask's centroid, R and A
  from the coarse stage's L1 (the body centre; the reference masks are whole vertebrae).

Writes training/results/NAME.{md,json} (default rib_check_eval).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from OsteoScreenLib.ct_io import read_ct, read_volume
from OsteoScreenLib.phantom import GENERATOR_VERSION
from OsteoScreenLib.rib_check import crop
from OsteoScreenLib.segmenter import L1L2Segmenter, find_levels

from training.real_data import REAL_DATA
from training.segmentation.config import PREPROCESSING
from training.segmentation.evaluate import REAL_CASE_LEVEL_NAMES, RESULTS
from training.segmentation.prepare import DEFAULT_CACHE
from training.segmentation.rib_check import (CHECKPOINTS, PRESET, SWAP_PRESET, accuracy_by_level, build_network,
                        level_order, predict, cached_tune_items)

# The real cases' vertebrae the check is asked about (reference label -> level).
REAL_VERTEBRAE = {"totalsegmentator-example": REAL_CASE_LEVEL_NAMES["totalsegmentator-example"],
                  "verse012": {17: "T10", 18: "T11", 19: "T12", 20: "L1", 21: "L2"}}


def load_run(run: str) -> torch.nn.Module:
    net = build_network()
    net.load_state_dict(torch.load(CHECKPOINTS / run / "final.pt", map_location="cpu", weights_only=True)["model"])
    return net.eval()


def real_boxes(case: str, root: Path) -> tuple[list[str], np.ndarray]:
    """The levels asked about and their boxes (n, 1, k, j, i) on the coarse stage's input."""
    ct, ref = read_ct(root / case / "ct.nii.gz"), read_volume(root / case / "labels.nii.gz")
    seg = L1L2Segmenter(threads=1)
    coarse, coarse_x = seg.coarse_stage(ct)
    body_l1 = find_levels(coarse)["L1"]["centroid_ras"]
    centres = {}
    for label, name in REAL_VERTEBRAE[case].items():
        kji = np.argwhere(ref.array == label)
        centres[name] = (ref.ijk_to_ras @ np.c_[kji[:, ::-1], np.ones(len(kji))].T).T[:, :3].mean(0)
    shift = body_l1 - centres["L1"]
    shift[2] = 0.0  # R and A of the body, S of the reference vertebra
    names = list(centres)
    return names, np.stack([crop(coarse_x, centres[n] + shift, PREPROCESSING["rib_check"]) for n in names])


def score_run(net: torch.nn.Module, items: dict[str, list[dict]], real: dict) -> dict:
    """Accuracy by preset and level on the phantom boxes, probabilities on the real vertebrae."""
    entry = {}
    for preset, its in items.items():
        probs = predict(net, its)
        y = np.array([it["label"] for it in its])
        entry[preset] = {"accuracy": round(float(np.mean((probs > 0.5) == (y > 0.5))), 4),
                         "by_level": accuracy_by_level(its, probs)}
    with torch.no_grad():
        entry["real"] = {case: {n: round(float(v), 3) for n, v in zip(names, torch.sigmoid(
            net(torch.from_numpy(np.ascontiguousarray(x, np.float32)))).numpy()[:, 0])}
            for case, (names, x) in real.items()}
    return entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", nargs="+", default=["rib-check"])
    p.add_argument("--count", type=int, default=20, help="tune cases (those cached)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--real-data", type=Path, default=REAL_DATA)
    p.add_argument("--out", default="rib_check_eval", help="name of the results files")
    a = p.parse_args()
    torch.set_num_threads(2)
    items = cached_tune_items(a.count, a.cache)
    if SWAP_PRESET not in items:
        raise SystemExit(f"no cached {SWAP_PRESET} tune samples; run training.segmentation.prepare --split tune "
                         f"--count {a.count} --preset {SWAP_PRESET} --stages coarse")
    real = {case: real_boxes(case, a.real_data) for case in REAL_VERTEBRAE if (a.real_data / case).is_dir()}
    result = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "generator_version": GENERATOR_VERSION,
              "tune_cases": len({it["seed"] for it in items[PRESET]}), "runs": {}}
    for run in a.runs:
        entry = score_run(load_run(run), items, real)
        entry["config"] = {k: json.loads((CHECKPOINTS / run / "config.json").read_text()).get(k)
                           for k in ("init", "epochs", "augment", "rib_swap_preset", "body_joint_preset", "costal_preset")}
        result["runs"][run] = entry
        print(run, json.dumps(entry), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# What the rib check reads", "",
          f"{result['machine']}; {result['date']}; generator {GENERATOR_VERSION}; {result['tune_cases']} tune "
          f"phantoms (`{PRESET}`), the same with ribs moved between vertebrae (`{SWAP_PRESET}`)"
          + ", and the real cases. Accuracy: the rib-bearing probability on the right side of 0.5.", ""]
    keys = sorted({k for e in result["runs"].values() for preset in items for k in e[preset]["by_level"]},
                  key=level_order)
    md += ["| run | " + " | ".join(a.runs) + " |", "| --- |" + " --- |" * len(a.runs)]
    for preset in items:
        md.append(f"| **{preset}** accuracy | " + " | ".join(str(result["runs"][r][preset]["accuracy"]) for r in a.runs) + " |")
    for k in keys:
        preset = next(p for p in items if any(k in e[p]["by_level"] for e in result["runs"].values()))
        md.append(f"| {k} | " + " | ".join(str(result["runs"][r][preset]["by_level"].get(k, "")) for r in a.runs) + " |")
    md += ["", "Real cases: rib-bearing probability at each reference vertebra (T10-T12 bear ribs, L1 and L2 none).", "",
           "| case | level | " + " | ".join(a.runs) + " |", "| --- | --- |" + " --- |" * len(a.runs)]
    for case, (names, _) in real.items():
        for n in names:
            md.append(f"| {case} | {n} | " + " | ".join(str(result["runs"][r]["real"][case][n]) for r in a.runs) + " |")
    (RESULTS / f"{a.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
