"""How the bundled model finds the levels of the real cases, step by step, and how firmly.

    python -m training.studies.level_diagnosis

For each real case with L1 and L2 (``evaluate.REAL_CASES``), through the run-time code:

1. the coarse stage's regions of each label (those of at least MIN_FAINT_COARSE_VOXELS voxels):
   size, probability mass, height and the reference vertebrae under them;
2. the levels before and after the rib check, on the scan as given and on small changes that
   leave its content as it is: one or a few slices (about half a coarse voxel) taken off one side
   of each axis, which moves the 5 mm coarse grid against the anatomy, and the coarse input
   mirrored left to right. A level finder that reads the anatomy names the same vertebrae under
   all of them;
3. the rib check's rib-bearing probability along the spine: boxes at the coarse L1's R and A,
   every PROFILE_STEP_MM in S, each named by the nearest reference vertebra (whole-vertebra
   centroid) and its distance from it.

Writes training/results/level_diagnosis.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import read_ct, read_volume
from OsteoScreenLib.registry import LABEL_OF, VERTEBRA_NAMES
from OsteoScreenLib.resample import bounds_ras, sample, subvolume
from OsteoScreenLib.rib_check import crop, covers, in_scan
from OsteoScreenLib.segmenter import MIN_FAINT_COARSE_VOXELS, L1L2Segmenter, find_levels, regions
from OsteoScreenLib.volume import Volume

from training.segmentation.evaluate import REAL_CASE_LEVEL_NAMES, REAL_CASES, RESULTS
from .rib_check_eval import REAL_DATA
from .rib_check_probe import probabilities

PROFILE_STEP_MM = 6.0
SHIFT_MM = 2.5  # half a coarse voxel


def reference_on(ref: Volume, grid: Volume) -> np.ndarray:
    """The reference vertebra labels on a coarse grid (nearest neighbour)."""
    return sample(ref.with_array(ref.array.astype(np.float32)), grid.ijk_to_ras, grid.array.shape[:3], order=0,
                  fill=0.0, antialias=False).astype(int)


def under(region: np.ndarray, ref_on_grid: np.ndarray, names: dict[int, str]) -> dict[str, int]:
    """Voxels of a coarse region by reference vertebra ("none": outside every vertebra)."""
    values, counts = np.unique(ref_on_grid[region], return_counts=True)
    return {names.get(int(v), "none"): int(n) for v, n in sorted(zip(values, counts), key=lambda t: -t[1])}


def main_vertebra(region: np.ndarray, ref_on_grid: np.ndarray, names: dict[int, str]) -> str:
    """The reference vertebra holding most of a region's voxels inside any vertebra."""
    inside = {k: n for k, n in under(region, ref_on_grid, names).items() if k != "none"}
    return max(inside, key=inside.get) if inside else "none"


def coarse_regions(coarse: Volume, ref_on_grid: np.ndarray, names: dict[int, str]) -> list[dict]:
    labels = np.argmax(coarse.array, axis=-1)
    out = []
    for name in VERTEBRA_NAMES:
        for r in regions(labels == LABEL_OF[name], coarse, LABEL_OF[name], MIN_FAINT_COARSE_VOXELS):
            out.append({"label": name, "voxels": int(r["region"].sum()), "mass": round(r["mass"], 1),
                        "s_mm": round(float(r["centroid_ras"][2]), 1),
                        "under": under(r["region"], ref_on_grid, names)})
    return out


def slices_off(ct: Volume) -> dict[str, Volume]:
    """The scan with one or a few slices (about SHIFT_MM) taken off one side of each axis: the
    same content, the coarse grid moved against it."""
    out = {}
    codes = ct.axis_codes()
    for axis in range(3):
        n = max(1, int(round(SHIFT_MM / ct.spacing_mm[axis])))
        for side in ("first", "last"):
            lo, hi = np.zeros(3, int), np.array(ct.shape_ijk)
            if side == "first":
                lo[axis] = n
            else:
                hi[axis] -= n
            name = f"{side} {n} slice{'s' if n > 1 else ''} of axis {'ijk'[axis]} ({codes[axis]}) off"
            out[f"{name} ({n * ct.spacing_mm[axis]:.1f} mm)"] = subvolume(ct, lo, hi)
    return out


def mirrored(seg: L1L2Segmenter, coarse: Volume, coarse_x: Volume) -> Volume:
    """The coarse stage's answer on its input flipped left to right (R is the grid's i axis),
    flipped back."""
    p = seg.probabilities(seg.coarse_net, np.ascontiguousarray(coarse_x.array[None, ..., ::-1]), seg.coarse_cfg, -1.0)
    return Volume(np.ascontiguousarray(np.moveaxis(p[..., ::-1], 0, -1)), coarse.ijk_to_ras)


def levels(seg: L1L2Segmenter, scan: Volume, coarse: Volume, coarse_x: Volume, ref: Volume,
           names: dict[int, str]) -> dict:
    """The levels before and after the rib check, each named by its main reference vertebra,
    with the coarse stage's certainty and the check's move."""
    on_grid = reference_on(ref, coarse)
    before = find_levels(coarse)
    _, after, report = seg.checked_levels(scan, coarse, coarse_x)
    return {
        "before": {n: main_vertebra(lv["region"], on_grid, names) for n, lv in before.items()},
        "certainty": {n: lv["certainty"]["mean_probability"] for n, lv in before.items()},
        "shift": report.get("shift", 0),
        "after": {n: main_vertebra(lv["region"], on_grid, names) for n, lv in after.items()},
    }


def rib_profile(seg: L1L2Segmenter, ct: Volume, coarse: Volume, coarse_x: Volume, ref: Volume,
                names: dict[int, str]) -> list[dict]:
    found = find_levels(coarse)
    anchor = found["L1"]["centroid_ras"] if "L1" in found else found["L2"]["centroid_ras"]
    centroids = {names[v]: float(ref.voxel_centers_ras(np.argwhere(ref.array == v))[:, 2].mean())
                 for v in np.unique(ref.array) if int(v) in names}
    lo, hi = bounds_ras(ct)
    centres = [c for c in (np.array([anchor[0], anchor[1], s]) for s in
                           np.arange(np.ceil(lo[2] / PROFILE_STEP_MM) * PROFILE_STEP_MM, hi[2], PROFILE_STEP_MM))
               if in_scan(ct, c) and covers(ct, c)]
    probs = probabilities(seg.rib_net.run, np.stack([crop(coarse_x, c, seg.rib_cfg) for c in centres]))
    rows = []
    for c, prob in zip(centres, probs):
        s = float(c[2])
        nearest = min(centroids, key=lambda n: abs(centroids[n] - s))
        rows.append({"s_mm": s, "rib_probability": round(float(prob), 3),
                     "nearest": nearest, "from_its_centroid_mm": round(s - centroids[nearest], 1)})
    return rows


def diagnose(seg: L1L2Segmenter, case_dir: Path, names: dict[int, str]) -> dict:
    ct = read_ct(case_dir / "ct.nii.gz")
    ref = read_volume(case_dir / "labels.nii.gz")
    coarse, coarse_x = seg.coarse_stage(ct)
    runs = {"as given": (ct, coarse, coarse_x)}
    runs.update({name: (scan, *seg.coarse_stage(scan)) for name, scan in slices_off(ct).items()})
    runs["mirrored left to right"] = (ct, mirrored(seg, coarse, coarse_x), coarse_x)
    return {"coarse_regions": coarse_regions(coarse, reference_on(ref, coarse), names),
            "levels": {name: levels(seg, *run, ref, names) for name, run in runs.items()},
            "rib_profile": rib_profile(seg, ct, coarse, coarse_x, ref, names)}


def markdown(result: dict) -> str:
    md = ["# How the real cases' levels are found", "",
          f"Machine: {result['machine']}; model {result['model']}; {result['date']}; {result['elapsed_s']} s "
          "(`training/studies/level_diagnosis.py`, run-time code, ONNX Runtime). Reference masks are whole "
          "vertebrae; a coarse region or level is named by the reference vertebra holding most of its voxels."]
    for case, r in result["cases"].items():
        md += ["", f"## `{case}`", "", "Coarse stage's regions (5 mm voxels):", "",
               "| label | voxels | mass | S (mm) | voxels by reference vertebra |", "| --- | --- | --- | --- | --- |"]
        md += [f"| {g['label']} | {g['voxels']} | {g['mass']} | {g['s_mm']} | {g['under']} |" for g in r["coarse_regions"]]
        md += ["", "Levels under changes that keep the scan's content (rib check: vertebrae moved, + = down):", "",
               "| scan | L1, L2 from the coarse stage | certainty | rib check | L1, L2 after it |",
               "| --- | --- | --- | --- | --- |"]
        for name, e in r["levels"].items():
            md.append(f"| {name} | {e['before'].get('L1', '-')}, {e['before'].get('L2', '-')} | "
                      f"{e['certainty'].get('L1', '-')}, {e['certainty'].get('L2', '-')} | {e['shift']:+d} | "
                      f"{e['after'].get('L1', '-')}, {e['after'].get('L2', '-')} |")
        md += ["", "Rib check along the spine (boxes at the coarse L1's R and A):", "",
               "| S (mm) | rib-bearing | nearest reference vertebra (mm from its centroid) |", "| --- | --- | --- |"]
        md += [f"| {p['s_mm']:g} | {p['rib_probability']} | {p['nearest']} ({p['from_its_centroid_mm']:+g}) |"
               for p in r["rib_profile"]]
    return "\n".join(md) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--real-data", type=Path, default=REAL_DATA)
    a = p.parse_args()
    t0 = time.perf_counter()
    seg = L1L2Segmenter()
    cases = {case: diagnose(seg, a.real_data / case, REAL_CASE_LEVEL_NAMES[case]) for case in REAL_CASES}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model": seg.card["version"], "elapsed_s": round(time.perf_counter() - t0, 1), "cases": cases}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "level_diagnosis.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "level_diagnosis.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
