"""What the level finder reads on the real chest CT: its answer with one group of structures taken away.

    python -m training.studies.structure_occlusion [--model FOLDER] [--out STEM]

On `lidc-idri-0001` (the real chest CT, whose levels the bundled model gets wrong), the voxels of one
group of TotalSegmentator structures at a time (kidneys; liver, spleen and stomach; heart and great
vessels; ribs; costal cartilages and sternum) are set to 40 HU, soft tissue, and the scan is segmented
as usual. For each: the coarse stage's L1 and L2 before the rib check (the reference vertebra whose
centre lies nearest the region's centre along the body axis, and the distance), the outcome of each
level after every stage (as in ``real_eval``) and what the vertebra counter read. A level finder that
reads the spine and its ribs moves when the ribs go and stays when an organ goes.

Writes training/results/structure_occlusion[_STEM].{md,json}. The case is a test case: nothing is
chosen by this study; it says where the failure comes from.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import checked_ct, read_ct, read_volume
from OsteoScreenLib.segmenter import L1L2Segmenter, find_levels

from ..segmentation.real_eval import (evaluate_version, real_case_arguments, reference_on, totalsegmentator_names,
                                      totalsegmentator_structures, z_centre)

RESULTS = Path(__file__).resolve().parents[1] / "results"
CASE = "lidc-idri-0001"
SOFT_TISSUE_HU = 40.0
GROUPS = {
    "nothing (as given)": [],
    "kidneys": ["kidney_left", "kidney_right"],
    "liver, spleen, stomach": ["liver", "spleen", "stomach"],
    "heart and great vessels": ["heart", "aorta", "pulmonary_vein", "inferior_vena_cava", "superior_vena_cava",
                                "portal_vein_and_splenic_vein", "brachiocephalic_trunk", "atrial_appendage_left"],
    "ribs 1-12": [f"rib_{side}_{n}" for side in ("left", "right") for n in range(1, 13)],
    "ribs 9-12": [f"rib_{side}_{n}" for side in ("left", "right") for n in range(9, 13)],
    "costal cartilages, sternum": ["costal_cartilages", "sternum"],
}


def nearest_vertebra(s: float, centres: dict[str, float]) -> str:
    name = min(centres, key=lambda n: abs(centres[n] - s))
    return f"{name} ({s - centres[name]:+.0f} mm)"


def run(seg: L1L2Segmenter, root: Path) -> dict:
    folder = root / CASE
    ct = read_ct(folder / "ct")
    ref = reference_on(read_volume(folder / "labels.nii.gz"), ct)
    names = totalsegmentator_names(folder / "labels.csv")
    ids = {name: label for label, name in totalsegmentator_structures(folder / "labels.csv").items()}
    centres = {n: z_centre(ct, ref == v) for v, n in names.items() if (ref == v).any()}
    out = {}
    for group, members in GROUPS.items():
        a = ct.array.copy()
        a[np.isin(ref, [ids[m] for m in members if m in ids])] = SOFT_TISSUE_HU
        scan = checked_ct(ct.with_array(a), CASE)[0]
        coarse, _ = seg.coarse_stage(scan)
        levels = find_levels(coarse)
        entry = {"coarse": {n: nearest_vertebra(float(lv["centroid_ras"][2]), centres) for n, lv in levels.items()}}
        entry.update(evaluate_version(seg, scan, ref, names))
        out[group] = entry
        print(group, entry["coarse"], entry.get("levels"), flush=True)
    return out


def markdown(result: dict) -> str:
    lines = [f"# What the level finder reads on the real chest CT (segmentation {result['model_version']})", "",
             f"{result['machine']}; {result['date']}. `python -m training.studies.structure_occlusion`. Case "
             f"`{CASE}`; each row sets one group of its TotalSegmentator structures to {SOFT_TISSUE_HU:.0f} HU.", "",
             "| taken away | coarse L1 (nearest vertebra centre) | coarse L2 | L1 after every stage | L2 after every stage "
             "| counter ribs |", "| --- | --- | --- | --- | --- | --- |"]
    for group, e in result["groups"].items():
        def level(name):
            lv = e["levels"][name]
            if not isinstance(lv, dict):
                return lv
            return f"{lv['outcome']}: on {lv['centroid_in']}, {lv['fraction_inside']:.0%} inside"
        lines.append(f"| {group} | {e['coarse'].get('L1', '-')} | {e['coarse'].get('L2', '-')} | {level('L1')} "
                     f"| {level('L2')} | `{(e.get('count') or {}).get('ribs', '-')}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    a = real_case_arguments(__doc__.split("\n")[0], "structure_occlusion")
    seg = L1L2Segmenter(a.model)
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "model_version": seg.card["version"], "groups": run(seg, a.real_data)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (RESULTS / f"{a.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
