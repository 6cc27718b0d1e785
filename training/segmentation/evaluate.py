"""Evaluate the bundled segmentation model through the run-time path (ONNX Runtime).

    python -m training.segmentation.evaluate --count 400 [--workers 2] [--preset spine]

On test phantoms (full-size chest preset, seeds of the test split): DSC of L1
and L2 on the CT grid (mean ± SD) and level identification (the predicted
body's centroid lies in the reference vertebra of the same level). On the real
cases with L1 and L2: each level found, centroid inside the reference
whole-vertebra mask, fraction of predicted voxels inside it. Writes
training/results/segmentation_eval.{json,md} and the metrics into the model card. With
``--preset spine``: spine-cropped test phantoms (the VerSe-like fields of view: T9-T11 down to
L2-L4, 90-160 mm wide), written to segmentation_eval_spine.{json,md}, no real cases.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import checked_ct, read_ct, read_volume
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.metrics import dice
from OsteoScreenLib.paths import models_dir
from OsteoScreenLib.phantom import GENERATOR_VERSION
from OsteoScreenLib.registry import LABEL_MAPPINGS, LABEL_OF, VERSE_LEVEL_IDS, VERSE_LEVEL_NAMES
from OsteoScreenLib.segmenter import OUTLINE_OFFSET_MAX_MM, L1L2Segmenter, cut_levels

from .config import SPLITS
from ..model_card import UNRECORDED_GENERATOR_VERSION, update_card

RESULTS = Path(__file__).resolve().parents[1] / "results"
PARTIAL_DIR = Path(__file__).resolve().parents[1] / "cache" / "segmentation-eval"
REAL_CASES = {"totalsegmentator-example": "totalsegmentator", "verse012": "verse"}
# Every vertebra label of the real cases (../shared/data/real/README.md), to say where a level lies.
REAL_CASE_LEVEL_NAMES = {"totalsegmentator-example": {33: "T11", 32: "T12", 31: "L1", 30: "L2"},
                         "verse012": VERSE_LEVEL_NAMES}


def evaluate_case(seg: L1L2Segmenter, seed: int, preset: str) -> dict:
    from OsteoScreenLib.phantom import generate_case

    case = generate_case(seed, preset)
    row = {"seed": seed}
    try:
        out = seg.segment(checked_ct(case.ct, f"phantom {seed}")[0])  # its padding read as air, as a reader does
    except OsteoScreenError as exc:
        row["error"] = str(exc)
        return row
    cut = cut_levels(case.labels)  # mostly out of view: to be reported not in view, as the segmenter does
    for name, value in LABEL_OF.items():
        pred, ref = out.labels.array == value, case.labels.array == value
        if name in cut and not pred.any():
            row[f"dsc_{name}"], row[f"level_ok_{name}"] = None, True  # rightly not outlined: no DSC
            continue
        row[f"dsc_{name}"] = dice(pred, ref)
        kji = np.argwhere(pred)
        if len(kji):
            c = np.round(kji.mean(axis=0)).astype(int)
            row[f"level_ok_{name}"] = bool(case.levels.array[tuple(c)] == VERSE_LEVEL_IDS[name])
        else:
            row[f"level_ok_{name}"] = False
    row["time_s"] = out.timing_s["total"]
    # a warning about the levels: uncertain, moved by the rib check or leaning towards a move, L2 not
    # directly below L1, swapped
    row["flagged"] = bool(out.level_warnings)
    row["rib_check_shift"] = out.rib_check.get("shift", 0)
    row["rib_check_leaning"] = out.rib_check.get("leaning", 0)
    if out.count:
        row["count"] = count_row(out.count, case.labels)
    return row


def count_row(report: dict, labels) -> dict:
    """The vertebra counter's readings of L1 against the truth: ``truth`` is the counted body nearest
    the reference L1 (within 15 mm; None where the counter marked no body there)."""
    ref = labels.voxel_centers_ras(np.argwhere(labels.array == LABEL_OF["L1"]).mean(axis=0))[0]
    centres = np.array(report["centres_ras"]).reshape(-1, 3)
    d = np.linalg.norm(centres - ref, axis=1) if len(centres) else np.zeros(0)
    truth = int(np.argmin(d)) if len(d) and d.min() <= 15.0 else None
    return {"truth": truth, "ribs": report["ribs"], **{k: report.get(k) for k in
            ("l1_from_top", "l1_from_ribs", "l1_from_levels", "rib_pairs", "moved", "confirmed",
             "outline_offset_mm")}}


_WORKER: dict = {}


def _worker_case(args: tuple[str, int, str]) -> dict:
    folder, seed, preset = args
    if "seg" not in _WORKER:
        _WORKER["seg"] = L1L2Segmenter(Path(folder), threads=1)
    return evaluate_case(_WORKER["seg"], seed, preset)


def runtime_code_key() -> str:
    """Checksum of the run-time modules that turn network outputs into levels and labels."""
    import hashlib

    import OsteoScreenLib

    lib = Path(OsteoScreenLib.__file__).parent
    data = b"".join((lib / name).read_bytes() for name in ("segmenter.py", "postprocess.py", "resample.py", "rib_check.py",
                                                                "vertebra_count.py"))
    return hashlib.sha256(data).hexdigest()[:8]


def evaluate_phantoms(seg: L1L2Segmenter, count: int, preset: str, workers: int = 1, split: str = "test") -> dict:
    """Rows are appended to a cache file as they come (keyed by the generator version, the model's
    checksums and the run-time code that decodes its output), so a killed evaluation resumes; ``workers``
    processes share the cases (one thread each)."""
    from multiprocessing import Pool

    first, n = SPLITS[split]  # the tune split for choosing among candidates, the test split for reporting
    seeds = list(range(first, first + min(count, n)))
    key = "-".join([f["sha256"][:12] for f in seg.card["files"].values()] + [runtime_code_key()])
    partial = PARTIAL_DIR / f"eval-{preset}-v{GENERATOR_VERSION}-{key}.jsonl"  # other phantoms: other rows
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["seed"]] = row
    todo = [(str(seg.folder), s, preset) for s in seeds if s not in done]
    # the pool is held by a name while its results are read: an unreferenced pool can be collected
    # mid-iteration and hang (as it did when a resumed run had nothing left to do)
    pool = Pool(workers) if workers > 1 and todo else None
    try:
        with open(partial, "a") as log:
            results = pool.imap_unordered(_worker_case, todo) if pool else (evaluate_case(seg, s, p) for _, s, p in todo)
            for row in results:
                done[row["seed"]] = row
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
    finally:
        if pool:
            pool.close()
            pool.join()
    rows = [done[s] for s in seeds]
    return {"preset": preset, "split": split, "cases": len(rows), "rows": rows, "summary": summarise(rows)}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    out = {"cases": len(rows), "failed": len(rows) - len(ok)}
    for name in LABEL_OF:
        d = np.array([r[f"dsc_{name}"] for r in ok if r[f"dsc_{name}"] is not None])
        out[f"dsc_{name}_mean"] = round(float(d.mean()), 4) if len(d) else None
        out[f"dsc_{name}_sd"] = round(float(d.std()), 4) if len(d) else None
        out[f"dsc_{name}_median"] = round(float(np.median(d)), 4) if len(d) else None
        # outline quality apart from level finding: cases whose level is right
        right = np.array([r[f"dsc_{name}"] for r in ok if r[f"level_ok_{name}"] and r[f"dsc_{name}"] is not None])
        out[f"dsc_{name}_mean_right_level"] = round(float(right.mean()), 4) if len(right) else None
    levels = [r[f"level_ok_{n}"] for r in ok for n in LABEL_OF]
    out["level_identification"] = round(float(np.mean(levels)), 4) if levels else None
    # a failed case counts as a wrong level
    out["level_identification_incl_failures"] = round(sum(levels) / (2 * len(rows)), 4) if rows else None
    if rows:  # counting failed cases as wrong levels
        out["level_identification_ci95"] = [round(v, 4) for v in wilson_interval(sum(levels), 2 * len(rows))]
    out["median_time_s"] = round(float(np.median([r["time_s"] for r in ok])), 3) if ok else None
    # does the reader get a level warning on the scans whose levels are wrong, and how often on the right ones?
    right = [r for r in ok if all(r[f"level_ok_{n}"] for n in LABEL_OF)]
    wrong = [r for r in ok if r not in right]
    out["warned_right_scans"] = f"{sum(r.get('flagged', False) for r in right)} of {len(right)}"
    out["warned_wrong_scans"] = f"{sum(r.get('flagged', False) for r in wrong)} of {len(wrong)}"
    out["rib_check_moved_scans"] = sum(bool(r.get("rib_check_shift")) for r in ok)
    counted = [r["count"] for r in ok if "count" in r]
    if counted:
        for reading in ("l1_from_top", "l1_from_ribs"):
            read = [c for c in counted if c[reading] is not None]
            out[f"count_{reading}"] = f"{sum(c[reading] == c['truth'] for c in read)} right of {len(read)} read"
        both = [c for c in counted if c["l1_from_top"] is not None and c["l1_from_top"] == c["l1_from_ribs"]]
        out["count_both_agree"] = f"{sum(c['l1_from_top'] == c['truth'] for c in both)} right of {len(both)}"
        moved = [r for r in ok if r.get("count", {}).get("moved")]
        out["count_moved_scans"] = (f"{len(moved)}, after the move both levels right in "
                                    f"{sum(all(r[f'level_ok_{n}'] for n in LABEL_OF) for r in moved)}")
    offsets = [(r["count"]["outline_offset_mm"][n], r[f"level_ok_{n}"]) for r in ok
               for n in r.get("count", {}).get("outline_offset_mm") or {}]
    if offsets:  # the outline's distance from the counted bodies (segmenter.outline_offsets)
        right_mm = [mm for mm, right_level in offsets if right_level]
        out["outline_offset_right_max_mm"] = max(right_mm) if right_mm else None
        out["outline_offset_beyond_limit"] = (
            f"{sum(mm > OUTLINE_OFFSET_MAX_MM for mm, r in offsets if r)} of {len(right_mm)} outlines on the right "
            f"level, {sum(mm > OUTLINE_OFFSET_MAX_MM for mm, r in offsets if not r)} of "
            f"{len(offsets) - len(right_mm)} on a wrong one")
    out["rib_check_leaning_scans"] = f"{sum(bool(r.get('rib_check_leaning')) for r in wrong)} wrong, " \
                                     f"{sum(bool(r.get('rib_check_leaning')) for r in right)} right"
    return out


def levels_in_reference(labels: np.ndarray, ref: np.ndarray, mapping: dict[str, int], names: dict[int, str]) -> dict:
    """Where each level of a label map (values of LABEL_OF) lies in a real case's reference
    vertebrae (``mapping``: level -> reference label; ``names``: every reference label's level)."""
    out = {}
    for name, value in LABEL_OF.items():
        kji = np.argwhere(labels == value)
        if len(kji) == 0:
            out[name] = {"found": False}
            continue
        under = ref[tuple(kji.T)]
        values, counts = np.unique(under, return_counts=True)
        c = tuple(np.round(kji.mean(axis=0)).astype(int))
        out[name] = {
            "found": True,
            "voxels": int(len(kji)),
            "centroid_in_reference": bool(ref[c] == mapping[name]),
            "fraction_inside_reference": round(float((under == mapping[name]).mean()), 4),
            "voxels_by_reference_level": {names.get(int(v), "none"): int(n) for v, n in zip(values, counts)},
        }
    return out


def evaluate_real(seg: L1L2Segmenter, root: Path) -> dict:
    out = {}
    for case, mapping_name in REAL_CASES.items():
        ct = read_ct(root / case / "ct.nii.gz")
        ref = read_volume(root / case / "labels.nii.gz").array
        entry = {}
        try:
            res = seg.segment(ct)
            entry["warnings"] = res.warnings
            entry["rib_check"] = res.rib_check  # rib-bearing probability by vertebra from the coarse L1
            entry.update(levels_in_reference(res.labels.array, ref, LABEL_MAPPINGS[mapping_name],
                                             REAL_CASE_LEVEL_NAMES[case]))
        except OsteoScreenError as exc:
            entry["error"] = str(exc)
        out[case] = entry
        print(case, json.dumps(entry), flush=True)
    return out


def results_name(preset: str) -> str:
    """segmentation_eval for the chest preset (the goals of the model), else one file per preset."""
    return "segmentation_eval" if preset == "chest" else f"segmentation_eval_{preset}"


def write_results(result: dict, stem: str | None = None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = stem or results_name(result["phantoms"]["preset"])
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    s = result["phantoms"]["summary"]
    lines = [
        "# Segmentation evaluation", "",
        f"Machine: {result['machine']}; model {result['model_version']}; phantom generator "
        f"{result.get('generator_version', UNRECORDED_GENERATOR_VERSION)}; {result['date']}.", "",
        f"## {result['phantoms'].get('split', 'test').capitalize()} phantoms (preset `{result['phantoms']['preset']}`, "
        f"{s['cases']} cases, {s['failed']} failed)", "",
        "| level | DSC mean ± SD | median | mean where the level is right |", "| --- | --- | --- | --- |",
    ]
    for name in LABEL_OF:
        lines.append(f"| {name} | {s[f'dsc_{name}_mean']} ± {s[f'dsc_{name}_sd']} | {s[f'dsc_{name}_median']} "
                     f"| {s[f'dsc_{name}_mean_right_level']} |")
    ci = s.get("level_identification_ci95")
    lines += ["", f"Level identification: {s['level_identification']} (failed cases counted wrong: "
              f"{s['level_identification_incl_failures']}"
              + (f", 95 % Wilson interval {ci[0]}-{ci[1]}" if ci else "")
              + f"); median time per case {s['median_time_s']} s.", "",
              f"Scans with a level warning for the reader: {s['warned_wrong_scans']} with a wrong level, "
              f"{s['warned_right_scans']} with both levels right. The rib check moved the levels of "
              f"{s['rib_check_moved_scans']} scans and leaned towards a move it did not make on "
              f"{s.get('rib_check_leaning_scans', 'unrecorded')} scans.", ""]
    if "count_l1_from_top" in s:
        lines += [f"Vertebra counter, L1 counted from T1: {s['count_l1_from_top']}; below the last rib pair: "
                  f"{s['count_l1_from_ribs']}; both readings agreeing: {s['count_both_agree']}; levels moved to "
                  f"the counted ones on {s['count_moved_scans']}.", ""]
    if s.get("outline_offset_beyond_limit"):
        lines += [f"Outline centroid to the nearest counted body centre: at most {s['outline_offset_right_max_mm']} mm "
                  f"for an outline on the right level; beyond the warning limit ({OUTLINE_OFFSET_MAX_MM:g} mm): "
                  f"{s['outline_offset_beyond_limit']}.", ""]
    if result["real"]:
        lines += ["## Real cases (reference masks are whole vertebrae)", "", "```",
                  json.dumps(result["real"], indent=1), "```", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--preset", default="chest")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--real-data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "real")
    p.add_argument("--no-card", action="store_true", help="do not write the metrics into the model card")
    p.add_argument("--model", type=Path, default=None,
                   help="a model folder to evaluate instead of the bundled one (a candidate; implies --no-card)")
    p.add_argument("--out", default=None, help="results file stem (default: segmentation_eval[_PRESET])")
    p.add_argument("--split", choices=("test", "tune"), default="test",
                   help="phantom seeds: tune to choose among candidates, test to report (default)")
    a = p.parse_args()
    folder = a.model or models_dir() / "segmentation"
    a.no_card = a.no_card or a.model is not None
    seg = L1L2Segmenter(folder)
    t = time.perf_counter()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "model_version": seg.card["version"],
        "generator_version": GENERATOR_VERSION,
        "phantoms": evaluate_phantoms(seg, a.count, a.preset, a.workers, a.split),
        # the real cases once, with the chest preset (they do not depend on it)
        "real": evaluate_real(seg, a.real_data) if a.real_data.is_dir() and a.preset == "chest" else {},
    }
    result["elapsed_s"] = round(time.perf_counter() - t, 1)
    write_results(result, a.out)
    if not a.no_card:
        summary = {**result["phantoms"]["summary"], "generator_version": GENERATOR_VERSION}
        update_card(folder, {"test_phantoms": summary, "real_cases": result["real"]}
                    if a.preset == "chest" else {f"test_phantoms_{a.preset}": summary})
    print(json.dumps(result["phantoms"]["summary"], indent=1))


if __name__ == "__main__":
    main()
