"""Real-case evaluation of level finding: every shared real CT that shows L1 and L2, as given and cut.

    python -m training.segmentation.real_eval [--model FOLDER] [--out NAME]

Runs the run-time segmenter (ONNX Runtime) on each real case of ``../shared/data/real`` whose
reference labels hold L1 and L2 (the chest CT ``lidc-idri-0001``, the abdominal
``totalsegmentator-example``, the spine slab ``verse012``), on the scan as given and on versions
cut along the body axis as a shorter scan would be:

- ``lowest 150 mm``: only the last 150 mm of the scan (an abdominal series);
- ``from T10``: everything above the upper endplate of T10 removed;
- chest CT only, model 2's use case: ``below L1`` (cut halfway between the centres of L1 and L2, at
  their disc: L1's body whole, L2's body out of view) and
  ``above T12`` (cut at the top of T12, L1 out of view).

Each level's outcome: ``right`` (centroid in the reference vertebra of that level, at least 90 %
of its voxels inside it), ``right, flagged`` (the same with a level warning), ``wrong, flagged``
(a level warning said to check the levels), ``WRONG, NOT FLAGGED`` (a confident wrong level: the worst
outcome), ``missing`` (reported not in view) and, where the level is not in the scan,
``not in view: reported`` or ``not in view: NOT REPORTED`` (a level the scan's edge cuts, with less
than half the other level in view, counts as not in view: ``reference_in_view``). The reference masks are whole
vertebrae (TotalSegmentator output or VerSe's manual masks), compared in physical space.

Writes ``training/results/<out>.{json,md}`` (default ``real_case_eval``). These cases are test
cases: no rule or model may be chosen by them (README, "Choices made on real cases").
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import read_ct, read_volume
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.registry import LABEL_OF
from OsteoScreenLib.resample import bounds_ras, sample, subvolume
from OsteoScreenLib.segmenter import MIN_SHARE_IN_VIEW, L1L2Segmenter
from OsteoScreenLib.volume import Volume

from training.real_data import REAL_DATA
from training.segmentation.evaluate import REAL_CASE_LEVEL_NAMES

RESULTS = Path(__file__).resolve().parents[1] / "results"
MIN_INSIDE = 0.9  # the goal: at least 90 % of a level's voxels inside its reference vertebra
LOWEST_MM = 150.0


def totalsegmentator_structures(csv_path: Path) -> dict[int, str]:
    """Every structure's name by label id from a case's labels.csv (TotalSegmentator 'total' ids)."""
    with open(csv_path, newline="") as f:
        return {int(row["id"]): row["structure"] for row in csv.DictReader(f)}


def totalsegmentator_names(csv_path: Path) -> dict[int, str]:
    """Vertebra names by label id from a case's labels.csv (TotalSegmentator 'total' ids)."""
    return {label: name.removeprefix("vertebrae_") for label, name in totalsegmentator_structures(csv_path).items()
            if name.startswith("vertebrae_")}


def real_cases(root: Path) -> dict[str, tuple[Path, dict[int, str]]]:
    """case -> (CT path, vertebra names by reference label id; ids from ../shared/data/real/README.md)."""
    cases = {}
    if (root / "lidc-idri-0001").is_dir():
        cases["lidc-idri-0001"] = (root / "lidc-idri-0001" / "ct", totalsegmentator_names(root / "lidc-idri-0001" / "labels.csv"))
    cases["totalsegmentator-example"] = (root / "totalsegmentator-example" / "ct.nii.gz",
                                        dict(REAL_CASE_LEVEL_NAMES["totalsegmentator-example"]))
    cases["verse012"] = (root / "verse012" / "ct.nii.gz", dict(REAL_CASE_LEVEL_NAMES["verse012"]))
    return cases


def reference_on(ref: Volume, grid: Volume) -> np.ndarray:
    """Reference labels on the CT's grid (nearest neighbour, physical space)."""
    return sample(ref.with_array(ref.array.astype(np.float32)), grid.ijk_to_ras, grid.array.shape, order=0,
                  fill=0.0, antialias=False).astype(int)


def superior_axis(volume: Volume) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) closest to the body axis."""
    return 2 - int(np.argmax(np.abs(volume.ijk_to_ras[2, :3])))


def cut(volume: Volume, ref: np.ndarray, z_lo: float, z_hi: float) -> tuple[Volume, np.ndarray] | None:
    """The slices of ``volume`` (and its reference) whose centres lie between z_lo and z_hi (mm, S)."""
    axis = superior_axis(volume)
    n = volume.array.shape[axis]
    z = volume.ijk_to_ras[2, 3] + volume.ijk_to_ras[2, 2 - axis] * np.arange(n)  # the scans are axis-aligned
    keep = np.nonzero((z >= z_lo) & (z <= z_hi))[0]
    if len(keep) < 2:
        return None
    lo_kji, hi_kji = np.zeros(3, int), np.array(volume.array.shape[:3])
    lo_kji[axis], hi_kji[axis] = int(keep.min()), int(keep.max()) + 1
    scan = subvolume(volume, lo_kji[::-1], hi_kji[::-1])
    piece = subvolume(Volume(ref, volume.ijk_to_ras), lo_kji[::-1], hi_kji[::-1])
    return scan.with_array(np.ascontiguousarray(scan.array)), np.ascontiguousarray(piece.array)


def z_extent(volume: Volume, mask: np.ndarray) -> tuple[float, float]:
    """World S range of the voxel centres of ``mask``."""
    kji = np.argwhere(mask)
    z = (volume.ijk_to_ras @ np.c_[kji[:, ::-1], np.ones(len(kji))].T)[2]
    return float(z.min()), float(z.max())


def z_centre(volume: Volume, mask: np.ndarray) -> float:
    kji = np.argwhere(mask)
    return float((volume.ijk_to_ras @ np.r_[kji.mean(axis=0)[::-1], 1.0])[2])


def versions(ct: Volume, ref: np.ndarray, names: dict[int, str], chest: bool) -> dict[str, tuple[Volume, np.ndarray]]:
    ids = {v: k for k, v in names.items()}
    z_all = tuple(float(b[2]) for b in bounds_ras(ct))
    out = {"as given": (ct, ref)}
    plans = {"lowest 150 mm": (z_all[0] - 1.0, z_all[0] + LOWEST_MM)}
    if "T10" in ids and (ref == ids["T10"]).any():
        plans["from T10"] = (z_all[0] - 1.0, z_extent(ct, ref == ids["T10"])[1])
    if chest:
        disc = 0.5 * (z_centre(ct, ref == ids["L1"]) + z_centre(ct, ref == ids["L2"]))
        plans["below L1"] = (disc, z_all[1] + 1.0)
        plans["above T12"] = (z_extent(ct, ref == ids["T12"])[1], z_all[1] + 1.0)
    for name, (lo, hi) in plans.items():
        piece = cut(ct, ref, lo, hi)
        if piece is not None:
            out[name] = piece
    return out


def level_outcome(mask: np.ndarray, ref: np.ndarray, ref_id: int, names: dict[int, str], flagged: bool,
                  structures: dict[int, str] | None = None) -> dict:
    """Where one level's segment lies in the reference; ``structures`` (every reference id's name,
    where the case labels more than vertebrae) breaks its voxels outside every vertebra down by
    structure: what the outline leaks into."""
    kji = np.argwhere(mask)
    under = ref[tuple(kji.T)]
    c = tuple(np.round(kji.mean(axis=0)).astype(int))
    inside = float((under == ref_id).mean())
    right = bool(ref[c] == ref_id) and inside >= MIN_INSIDE
    ids, counts = np.unique(under, return_counts=True)
    by_vertebra: dict[str, int] = {}
    for v, n in zip(ids, counts):  # every id that is no vertebra counts as "none"
        name = names.get(int(v), "none")
        by_vertebra[name] = by_vertebra.get(name, 0) + int(n)
    out = {"voxels": int(len(kji)), "centroid_in": names.get(int(ref[c]), "none"),
           "fraction_inside": round(inside, 4), "flagged": flagged,
           "outcome": ("right, flagged" if flagged else "right") if right else
                      ("wrong, flagged" if flagged else "WRONG, NOT FLAGGED"),
           "voxels_by_vertebra": by_vertebra}
    if structures is not None:
        outside = [(int(v), int(n)) for v, n in zip(ids, counts) if int(v) not in names]
        out["outside_vertebrae_by_structure"] = {structures.get(v, "unlabelled"): n for v, n in
                                                 sorted(outside, key=lambda vn: -vn[1])}
    return out


def reference_in_view(ref: np.ndarray, ids: dict[str, int]) -> dict[str, bool]:
    """Whether each reference level is in view: in the scan, and not cut by its first or last slice
    to less than MIN_SHARE_IN_VIEW of the other level (the segmenter reports such a level not in view,
    ``segmenter.cut_levels``). Measured in voxels, not height as the segmenter does on its bodies: the
    reference masks are whole vertebrae, whose processes reach along the slice axis past the next body
    (so the other level may touch the edge too)."""
    voxels = {lv: int((ref == ids[lv]).sum()) for lv in LABEL_OF}
    def at_edge(lv):
        return bool((ref[0] == ids[lv]).any() or (ref[-1] == ids[lv]).any())
    (a, b) = LABEL_OF
    cut = {lv for lv, other in ((a, b), (b, a)) if at_edge(lv) and voxels[lv] < MIN_SHARE_IN_VIEW * voxels[other]}
    return {lv: voxels[lv] > 0 and lv not in cut for lv in LABEL_OF}


def evaluate_version(seg: L1L2Segmenter, ct: Volume, ref: np.ndarray, names: dict[int, str],
                     structures: dict[int, str] | None = None) -> dict:
    ids = {v: k for k, v in names.items()}
    in_view = reference_in_view(ref, ids)
    t0 = time.perf_counter()
    try:
        res = seg.segment(ct)
    except OsteoScreenError as exc:
        return {"error": str(exc), "levels": {lv: ("missing" if in_view[lv] else "not in view: reported")
                                              for lv in LABEL_OF}}
    entry = {"warnings": res.warnings, "seconds": round(time.perf_counter() - t0, 2), "levels": {}}
    if res.count:
        entry["count"] = counted_levels(res.count, ct, ref, names)
    for lv, value in LABEL_OF.items():
        mask = res.labels.array == value
        flagged = bool(res.level_warnings)  # the reader is told to check the levels (as evaluate.py counts)
        if not mask.any():
            entry["levels"][lv] = "missing" if in_view[lv] else "not in view: reported"
        elif not in_view[lv]:
            entry["levels"][lv] = {**level_outcome(mask, ref, -1, names, flagged, structures),
                                   "outcome": "not in view: NOT REPORTED" if not flagged else "not in view: flagged"}
        else:
            entry["levels"][lv] = level_outcome(mask, ref, ids[lv], names, flagged, structures)
    if not (res.labels.array == LABEL_OF["L2"]).any() and (res.labels.array == LABEL_OF["L1"]).any():
        entry["classify_l1"] = classify_l1(ct, res.labels)  # model 2's use case: a scan that ends below L1
    return entry


def counted_levels(report: dict, ct: Volume, ref: np.ndarray, names: dict[int, str]) -> dict:
    """Where the vertebra counter's readings of L1 lie in the reference vertebrae."""
    def where(index):
        if index is None:
            return None
        kji = np.round(np.linalg.solve(ct.ijk_to_ras, [*report["centres_ras"][index], 1.0])[:3][::-1]).astype(int)
        inside = all(0 <= v < n for v, n in zip(kji, ref.shape))
        return names.get(int(ref[tuple(kji)]), "none") if inside else "outside"
    return {"ribs": report["ribs"], "bodies_in": [where(n) for n in range(report["bodies"])],
            **{k: where(report.get(k)) for k in ("l1_from_top", "l1_from_ribs", "l1_from_levels")},
            "moved": bool(report.get("moved")), "confirmed": bool(report.get("confirmed"))}


def classify_l1(ct: Volume, labels: Volume) -> str:
    """Model 2 on the L1 segment: its class, or why it gave none."""
    from OsteoScreenLib.classifier import OsteoporosisClassifier

    try:
        c = OsteoporosisClassifier("l1").classify(ct, labels)
    except OsteoScreenError as exc:
        return f"no result: {exc}"
    return f"{c.predicted_class} (BMD {c.bmd_mg_cm3:.0f} mg/cm3)"


def outcome_of(level) -> str:
    return level if isinstance(level, str) else level["outcome"]


def markdown(result: dict) -> str:
    lines = [f"# Real cases: level finding as given and cut ({result['model']})", "",
             f"{result['machine']}; {result['date']}. `python -m training.segmentation.real_eval`.", "",
             "Outcome per level: right = centroid in the reference vertebra of that level and >= 90 % of the "
             "voxels inside it; flagged = the scan has a level warning (the reader is told to check the levels). These cases are test cases: nothing was "
             "chosen by them.", "",
             "Vertebra counter: each body's ribs top to bottom (R rib-bearing, - none, ? unclear), and the "
             "reference vertebra under its L1 counted from T1 and read below the last rib pair.", "",
             "| case | version | L1 | L2 | vertebra counter | warnings |", "| --- | --- | --- | --- | --- | --- |"]
    for case, vs in result["cases"].items():
        for name, e in vs.items():
            cells = []
            for lv in LABEL_OF:
                lvl = e["levels"][lv]
                if isinstance(lvl, str):
                    cells.append(lvl)
                else:
                    cells.append(f"{lvl['outcome']}: on {lvl['centroid_in']}, {100 * lvl['fraction_inside']:.1f} % inside")
            warn = e.get("error") or "; ".join(e.get("warnings", [])) or "none"
            c = e.get("count")
            counter = (f"ribs `{c['ribs']}`; from T1: {c['l1_from_top']}; last rib: {c['l1_from_ribs']}"
                       + ("; levels moved" if c["moved"] else "") if c else "-")
            model2 = f"; model 2: {e['classify_l1']}" if "classify_l1" in e else ""
            lines.append(f"| {case} | {name} | {cells[0]} | {cells[1]} | {counter} | {warn[:300]}{model2} |")
    counts = result["summary"]
    lines += ["", "Summary over all versions: " + ", ".join(f"{k}: {v}" for k, v in counts.items()), ""]
    leaks = [(case, name, lv, lvl) for case, vs in result["cases"].items() for name, e in vs.items()
             for lv, lvl in e["levels"].items() if isinstance(lvl, dict) and "outside_vertebrae_by_structure" in lvl]
    if leaks:
        lines += ["Where each segment's voxels outside every reference vertebra lie (cases labelled beyond "
                  "their vertebrae; the reference's structure names):", "",
                  "| case | version | level | voxels | outside every vertebra |", "| --- | --- | --- | --- | --- |"]
        for case, name, lv, lvl in leaks:
            where = ", ".join(f"{k} {v}" for k, v in list(lvl["outside_vertebrae_by_structure"].items())[:4]) or "-"
            lines.append(f"| {case} | {name} | {lv} | {lvl['voxels']} | {where} |")
        lines.append("")
    return "\n".join(lines)


def real_case_arguments(description: str, out: str) -> argparse.Namespace:
    """The command line of a study on the real cases: --model, --real-data, --out (results stem)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled one)")
    p.add_argument("--real-data", type=Path, default=REAL_DATA)
    p.add_argument("--out", default=out, help=f"results file stem (default: {out})")
    return p.parse_args()


def main() -> None:
    a = real_case_arguments(__doc__.split("\n")[0], "real_case_eval")
    seg = L1L2Segmenter(a.model)
    result = {"model": f"segmentation {seg.card['version']}", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
              "cases": {}}
    for case, (path, names) in real_cases(a.real_data).items():
        ct = read_ct(path)
        ref = reference_on(read_volume(path.parent / "labels.nii.gz"), ct)
        result["cases"][case] = {}
        labels_csv = path.parent / "labels.csv"  # a case labelled beyond its vertebrae (the chest CT)
        structures = totalsegmentator_structures(labels_csv) if labels_csv.exists() else None
        for name, (scan, ref_cut) in versions(ct, ref, names, chest=case == "lidc-idri-0001").items():
            entry = evaluate_version(seg, scan, ref_cut, names, structures)
            result["cases"][case][name] = entry
            print(case, name, {lv: outcome_of(v) for lv, v in entry["levels"].items()}, flush=True)
    summary: dict[str, int] = {}
    for vs in result["cases"].values():
        for e in vs.values():
            for lvl in e["levels"].values():
                summary[outcome_of(lvl)] = summary.get(outcome_of(lvl), 0) + 1
    result["summary"] = dict(sorted(summary.items()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{a.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
