"""Real cases with the levels given: the fine stage alone, its hints made from the reference masks.

    python -m training.studies.real_hints

Separates the two halves of the model on real scans: where ``evaluate`` finds a level wrong,
this says whether outlining would have been right had the levels been found (the coarse
stage's job). The hints are the reference vertebrae of L1 and L2 on the coarse grid with
probability 0.9, where the coarse stage would put its own. Writes
training/results/segmentation_real_hints.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import read_ct, read_volume
from OsteoScreenLib.registry import LABEL_MAPPINGS, LABEL_OF
from OsteoScreenLib.resample import sample
from OsteoScreenLib.segmenter import L1L2Segmenter, coarse_input, find_levels, level_hints
from OsteoScreenLib.volume import Volume

from training.segmentation.evaluate import REAL_CASE_LEVEL_NAMES, REAL_CASES, levels_in_reference

RESULTS = Path(__file__).resolve().parents[1] / "results"
HINT_PROBABILITY = 0.9


def reference_hints(ct: Volume, ref: Volume, mapping: dict[str, int], cfg: dict) -> Volume:
    """Class probabilities on the coarse grid of ``ct``: the reference L1 and L2 vertebrae."""
    x, grid = coarse_input(ct, cfg)
    shape = x.shape[1:]
    on_grid = sample(ref, grid, shape, order=0, fill=0, antialias=False)
    p = np.zeros((*shape, 3), np.float32)
    for name, value in LABEL_OF.items():
        p[..., value] = HINT_PROBABILITY * (on_grid == mapping[name])
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    return Volume(p, grid)


def run_case(seg: L1L2Segmenter, case_dir: Path, mapping_name: str, names: dict[int, str]) -> dict:
    ct = read_ct(case_dir / "ct.nii.gz")
    ref = read_volume(case_dir / "labels.nii.gz")
    mapping = LABEL_MAPPINGS[mapping_name]
    hints = reference_hints(ct, ref, mapping, seg.coarse_cfg)
    levels = find_levels(hints)
    center = (levels["L1"]["centroid_ras"] + levels["L2"]["centroid_ras"]) / 2
    fine = seg.fine_probabilities(ct, level_hints(hints, levels), center)
    labels, _ = seg.to_ct_grid(ct, fine)
    return levels_in_reference(labels.array, ref.array, mapping, names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--real-data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "real")
    a = p.parse_args()
    seg = L1L2Segmenter()
    cases = {case: run_case(seg, a.real_data / case, mapping, REAL_CASE_LEVEL_NAMES[case])
             for case, mapping in REAL_CASES.items()}
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model": seg.card["version"], "hint_probability": HINT_PROBABILITY, "cases": cases}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "segmentation_real_hints.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# Real cases with the levels given (fine stage alone)", "",
          f"Machine: {result['machine']}; model {result['model']}; {result['date']}. Hints: the reference L1 and L2 "
          f"vertebrae on the coarse grid (probability {HINT_PROBABILITY}) instead of the coarse stage's levels; "
          "reference masks are whole vertebrae.", "",
          "| case | level | centroid in reference | voxels inside | voxels by reference level |", "| --- | --- | --- | --- | --- |"]
    for case, levels in cases.items():
        for name, r in levels.items():
            if r["found"]:
                md.append(f"| {case} | {name} | {'yes' if r['centroid_in_reference'] else 'no'} | "
                          f"{100 * r['fraction_inside_reference']:.1f} % | {r['voxels_by_reference_level']} |")
            else:
                md.append(f"| {case} | {name} | not found | | |")
    (RESULTS / "segmentation_real_hints.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
