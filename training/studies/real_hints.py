"""Real cases with the levels given: the fine stage alone, its hints made from the reference masks.

    python -m training.studies.real_hints [--model FOLDER] [--out STEM]

Separates the two halves of the model on real scans: where ``evaluate`` finds a level wrong,
this says whether outlining would have been right had the levels been found (the coarse
stage's job). The hints are the reference vertebrae of L1 and L2 on the coarse grid with
probability 0.9, where the coarse stage would put its own. Every shared real case with L1 and
L2 (``real_eval.real_cases``: the chest CT ``lidc-idri-0001`` where present). Writes
training/results/segmentation_real_hints.{json,md}.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import read_ct, read_volume
from OsteoScreenLib.registry import LABEL_OF
from OsteoScreenLib.resample import sample
from OsteoScreenLib.segmenter import L1L2Segmenter, coarse_input, find_levels, level_hints
from OsteoScreenLib.volume import Volume

from training.segmentation.evaluate import levels_in_reference
from training.segmentation.real_eval import real_case_arguments, real_cases, reference_on

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


def run_case(seg: L1L2Segmenter, path: Path, names: dict[int, str]) -> dict:
    """The fine stage on one real case (``path``: its CT file or DICOM folder, ``labels.nii.gz``
    beside it; ``names``: vertebra name by reference label), hints from its reference L1 and L2."""
    ct = read_ct(path)
    ref = ct.with_array(reference_on(read_volume(path.parent / "labels.nii.gz"), ct))
    mapping = {name: next(i for i, n in names.items() if n == name) for name in LABEL_OF}
    hints = reference_hints(ct, ref, mapping, seg.coarse_cfg)
    levels = find_levels(hints)
    center = (levels["L1"]["centroid_ras"] + levels["L2"]["centroid_ras"]) / 2
    fine = seg.fine_probabilities(ct, level_hints(hints, levels), center)
    labels, _ = seg.to_ct_grid(ct, fine)
    return levels_in_reference(labels.array, ref.array, mapping, names)


def main() -> None:
    a = real_case_arguments(__doc__.split("\n")[0], "segmentation_real_hints")
    seg = L1L2Segmenter(a.model)
    cases = {case: run_case(seg, path, names) for case, (path, names) in real_cases(a.real_data).items()}
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model": seg.card["version"], "hint_probability": HINT_PROBABILITY, "cases": cases}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(result, indent=1) + "\n")
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
    (RESULTS / f"{a.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
