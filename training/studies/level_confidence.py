"""How well the coarse stage's certainty separates right from wrong levels.

    python -m training.studies.level_confidence [--count 100] [--workers 2]

On tune phantoms (never the test split) and the real cases: for each level the
mean coarse probability over its region and its spread (see
OsteoScreenLib.segmenter.level_certainty), whether the level is right (its
region's centroid lies in the reference vertebra of that level), and whether
the run-time thresholds flag it. Writes training/results/level_confidence.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import read_ct, read_volume
from OsteoScreenLib.phantom import GENERATOR_VERSION
from OsteoScreenLib.registry import LABEL_MAPPINGS, LABEL_OF, VERSE_LEVEL_IDS
from OsteoScreenLib.segmenter import (
    LEVEL_CONFIDENCE_MIN, LEVEL_SPREAD_MAX, L1L2Segmenter, level_warning, rib_check_warnings,
)

from training.segmentation.config import SPLITS
from training.segmentation.evaluate import REAL_CASES, RESULTS

_SEG: dict = {}


def levels_of(ct, levels, ids: dict[str, int]) -> dict:
    if "seg" not in _SEG:
        _SEG["seg"] = L1L2Segmenter(threads=1)
    seg = _SEG["seg"]
    _, found, rib = seg.checked_levels(ct, *seg.coarse_stage(ct))  # the levels segment() uses
    out = {"rib_check_shift": rib.get("shift", 0), "rib_check_leaning": rib.get("leaning", 0)}
    for name in LABEL_OF:
        if name not in found:
            out[name] = {"found": False}
            continue
        ijk = np.round(levels.ras_to_ijk @ np.r_[found[name]["centroid_ras"], 1.0])[:3].astype(int)
        inside = bool(np.all(ijk >= 0) and np.all(ijk < levels.shape_ijk))
        right = inside and int(levels.array[ijk[2], ijk[1], ijk[0]]) == ids[name]
        certainty = found[name]["certainty"]
        # segment() also warns when the rib check moved the levels or leaned towards a move
        flagged = level_warning(name, certainty) is not None or bool(rib_check_warnings(rib))
        out[name] = {"found": True, "right": right, **certainty, "flagged": flagged}
    return out


def tune_case(seed: int) -> dict:
    from OsteoScreenLib.phantom import generate_case

    case = generate_case(seed, "chest")
    return {"seed": seed, **levels_of(case.ct, case.levels, VERSE_LEVEL_IDS)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--real-data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "real")
    a = p.parse_args()
    first, n = SPLITS["tune"]
    with Pool(a.workers) as pool:
        rows = pool.map(tune_case, range(first, first + min(a.count, n)))
    real = {}
    for case, mapping in REAL_CASES.items():
        folder = a.real_data / case
        if folder.is_dir():
            real[case] = levels_of(read_ct(folder / "ct.nii.gz"), read_volume(folder / "labels.nii.gz"),
                                   LABEL_MAPPINGS[mapping])
    found = [r[name] for r in rows for name in LABEL_OF if r[name]["found"]]
    right = [f for f in found if f["right"]]
    wrong = [f for f in found if not f["right"]]
    summary = {"levels_found": len(found), "right": len(right), "wrong": len(wrong),
               "flagged_right": sum(f["flagged"] for f in right), "flagged_wrong": sum(f["flagged"] for f in wrong)}
    result = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "generator_version": GENERATOR_VERSION, "thresholds": {"mean_probability_min": LEVEL_CONFIDENCE_MIN,
                                                                 "spread_max": LEVEL_SPREAD_MAX},
              "tune_phantoms": len(rows), "summary": summary, "rows": rows, "real": real}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "level_confidence.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# Level certainty of the coarse stage", "",
          f"{result['machine']}; {result['date']}. {len(rows)} tune phantoms (preset `chest`, seeds {first}+, "
          f"generator {GENERATOR_VERSION}) and "
          f"the real cases; a level is flagged when its mean probability < {LEVEL_CONFIDENCE_MIN} or its spread "
          f"> {LEVEL_SPREAD_MAX}, or when the rib check moved it or leaned towards moving it (levels after the "
          f"rib check, as `segment` returns them; {sum(bool(r['rib_check_shift']) for r in rows)} of {len(rows)} "
          f"scans moved, {sum(bool(r['rib_check_leaning']) for r in rows)} leaned).", "",
          "| levels (L1 and L2 of each scan) | count | flagged |", "| --- | --- | --- |",
          f"| right | {summary['right']} | {summary['flagged_right']} |",
          f"| wrong | {summary['wrong']} | {summary['flagged_wrong']} |", "",
          "Real cases (reference masks are whole vertebrae):", "",
          "| case | level | right | mean probability | spread | flagged |", "| --- | --- | --- | --- | --- | --- |"]
    for case, levels in real.items():
        for name in LABEL_OF:
            f = levels[name]
            if f["found"]:
                md.append(f"| {case} | {name} | {f['right']} | {f['mean_probability']} | {f['spread']} | {f['flagged']} |")
            else:
                md.append(f"| {case} | {name} | not found | | | |")
    md += ["", "Wrong levels with high certainty are the hard part: the flag catches a model that is unsure, "
           "not one that is sure and wrong (e.g. a rib-count variant read as the usual anatomy).", ""]
    (RESULTS / "level_confidence.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
