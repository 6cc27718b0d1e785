"""Evaluate the vertebral fracture assessment (OsteoScreenLib.fracture) on phantoms and on a real spine CT.

Phantoms: each case gets one fracture at L1 or L2 (or none) of a random type and
generator ``height_loss``; the truth is the Genant grade of the body's true heights
(``phantom.heights``: the renderer's own shape, not the generator's parameter). The
assessment reads the reference labels and, with ``--model N``, the bundled
segmentation model's labels of the first N cases. Real: the VerSe case verse012
(whole-vertebra reference masks; L1 has a compression fracture), graded as it is.

    python -m training.fracture_eval            # writes training/results/fracture_eval.{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib import registry
from OsteoScreenLib.ct_io import checked_ct
from OsteoScreenLib.fracture import body_heights, genant_grade, measure_fractures
from OsteoScreenLib.phantom import render_case, sample_parameters
from OsteoScreenLib.phantom.heights import true_heights, true_losses
from OsteoScreenLib.phantom.render import build_anatomy

RESULTS = Path(__file__).resolve().parent / "results"
REAL_CASE = Path("/work/shared/data/real/verse012")
SEED0 = 910000  # seeds of this evaluation: apart from training's
# generator height_loss ranges that span Genant grades 0-3 for each type (a wedge drops only its front)
LOSS_RANGE = {"wedge": (0.1, 1.0), "biconcave": (0.05, 0.6), "crush": (0.05, 0.6)}
POSITIONS = ("anterior", "middle", "posterior")


def phantom_case(seed: int, preset: str):
    """One case with its own fracture (or none): parameters, the fracture, the true heights and grades."""
    rng = np.random.default_rng(seed)
    params = sample_parameters(seed, preset)
    fracture = None
    if rng.uniform() < 0.8:
        kind = ("wedge", "biconcave", "crush")[int(rng.integers(3))]
        fracture = {"level": ("L1", "L2")[int(rng.integers(2))], "type": kind,
                    "height_loss": round(float(rng.uniform(*LOSS_RANGE[kind])), 3)}
    params["spine"]["fractures"] = [fracture] if fracture else []
    bodies = {vb.name: vb for vb in build_anatomy(params).vertebrae}
    truth = {n: true_heights(params, bodies[n]) for n in ("L1", "L2")}
    graded = {}
    for n, other in (("L1", "L2"), ("L2", "L1")):
        losses = true_losses(truth[n], truth[other])
        worst = max(losses, key=losses.get)
        grade = genant_grade(losses[worst])
        graded[n] = {"grade": grade, "type": worst if grade else None, "loss": round(losses[worst], 3)}
    return params, fracture, truth, graded


def assess(labels, truth) -> dict:
    heights, results = measure_fractures(labels)
    out = {}
    for n in ("L1", "L2"):
        r = results.get(n)
        out[n] = {"grade": r.grade if r else None, "type": r.type if r else None, "losses": r.losses if r else {},
                  "loss": r.height_loss if r else None, "note": r.note if r else "not segmented",
                  "height_error_mm": {p: round(heights[n].heights[p] - truth[n][p], 2) for p in POSITIONS}
                  if n in heights else None}
    return out


def summarise(rows: list[dict], source: str) -> dict:
    """Sensitivity by true grade (found as grade >= 1), specificity (grade 0 found as 0), exact grade, type, errors."""
    pairs = [(r["truth"][n], r[source][n]) for r in rows if source in r for n in ("L1", "L2")]
    skipped = [(t, m) for t, m in pairs if m["grade"] is None]
    pairs = [(t, m) for t, m in pairs if m["grade"] is not None]
    out = {"bodies": len(pairs), "not_assessed": len(skipped),
           "not_assessed_true_fractures": sum(1 for t, _ in skipped if t["grade"] >= 1),
           "not_assessed_notes": sorted({m["note"] for _, m in skipped}), "by_true_grade": {}}
    for g in range(4):
        sel = [(t, m) for t, m in pairs if t["grade"] == g]
        if not sel:
            continue
        hit = [m["grade"] >= 1 for _, m in sel] if g else [m["grade"] == 0 for _, m in sel]
        out["by_true_grade"][g] = {
            "n": len(sel), "sensitivity" if g else "specificity": round(float(np.mean(hit)), 3),
            "exact_grade": round(float(np.mean([m["grade"] == g for _, m in sel])), 3),
            "within_one_grade": round(float(np.mean([abs(m["grade"] - g) <= 1 for _, m in sel])), 3)}
    frac = [(t, m) for t, m in pairs if t["grade"] >= 1]
    found = [(t, m) for t, m in frac if m["grade"] >= 1]
    # misses of a crush where the neighbour was not assessed: a crush is seen only against a neighbour
    out["missed_crush_without_neighbour"] = sum(1 for t, m in frac if m["grade"] == 0 and t["type"] == "crush"
                                                and "crush" not in m.get("losses", {"crush": 0}))
    out["sensitivity_any"] = round(len(found) / len(frac), 3) if frac else None
    normal = [(t, m) for t, m in pairs if t["grade"] == 0]
    out["specificity"] = round(float(np.mean([m["grade"] == 0 for _, m in normal])), 3) if normal else None
    out["type_agreement_when_found"] = round(float(np.mean([t["type"] == m["type"] for t, m in found])), 3) if found else None
    out["confusion_true_rows_measured_cols"] = [[sum(1 for t, m in pairs if t["grade"] == a and m["grade"] == b)
                                                 for b in range(4)] for a in range(4)]
    errors = np.array([[m["height_error_mm"][p] for p in POSITIONS] for _, m in pairs if m["height_error_mm"]])
    if len(errors):
        out["height_error_mm"] = {p: {"mean": round(float(errors[:, i].mean()), 2), "sd": round(float(errors[:, i].std()), 2),
                                      "mean_abs": round(float(np.abs(errors[:, i]).mean()), 2),
                                      "max_abs": round(float(np.abs(errors[:, i]).max()), 2)}
                                  for i, p in enumerate(POSITIONS)}
    out["loss_error"] = round(float(np.mean([abs(m["loss"] - max(t["loss"], 0.0)) for t, m in pairs])), 3)
    return out


def real_case(folder: Path) -> dict:
    """verse012 from its reference masks: T12 (19), L1 (20), L2 (21) as whole vertebrae, cut to their bodies."""
    from OsteoScreenLib.ct_io import read_volume

    labels = read_volume(folder / "labels.nii.gz")
    a = np.asarray(labels.array)
    ours = np.zeros(a.shape, np.uint8)
    ours[a == registry.VERSE_LEVEL_IDS["L1"]] = registry.LABEL_OF["L1"]
    ours[a == registry.VERSE_LEVEL_IDS["L2"]] = registry.LABEL_OF["L2"]
    _, results = measure_fractures(labels.with_array(ours))
    heights = {}
    for name in ("T12", "L1", "L2"):
        h = body_heights(labels.with_array((a == registry.VERSE_LEVEL_IDS[name]).astype(np.uint8)), 1)
        heights[name] = None if h is None else {**{p: round(v, 1) for p, v in h.heights.items()},
                                                "depth_mm": round(h.depth_mm, 1)}
    out = {"case": folder.name, "grid": {"shape_ijk": list(labels.shape_ijk),
                                         "spacing_mm": [round(float(s), 3) for s in labels.spacing_mm],
                                         "axes": labels.axis_codes()},
           "fractures": {n: vars(r) for n, r in results.items()}, "heights_own_axis_mm": heights}
    if heights["L1"] and heights["T12"] and heights["L2"]:
        out["L1_over_neighbours"] = {p: round(heights["L1"][p] / (0.5 * (heights["T12"][p] + heights["L2"][p])), 3)
                                     for p in POSITIONS}
    out["model"] = model_on_real_case(folder, a)
    return out


def model_on_real_case(folder: Path, reference: np.ndarray) -> dict:
    """The bundled segmentation model on the real case, then the fracture assessment of its segments:
    each segment's grade, and which reference vertebra it lies on (the model's levels may be wrong)."""
    from OsteoScreenLib.ct_io import read_ct
    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib.segmenter import L1L2Segmenter

    seg = L1L2Segmenter()
    try:
        out = seg.segment(read_ct(folder / "ct.nii.gz"))
    except OsteoScreenError as exc:
        return {"model": seg.card["version"], "error": str(exc)}
    _, results = measure_fractures(out.labels)
    lies_on = {}
    for name, value in registry.LABEL_OF.items():
        under = reference[out.labels.array == value]  # the label map is on the CT grid, as the reference
        ids, counts = np.unique(under[under > 0], return_counts=True)
        lies_on[name] = registry.VERSE_LEVEL_NAMES.get(int(ids[np.argmax(counts)]), "?") if len(ids) else "none"
    return {"model": seg.card["version"], "level_warnings": bool(out.level_warnings), "lies_on": lies_on,
            "fractures": {n: vars(r) for n, r in results.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40, help="phantoms per preset")
    ap.add_argument("--presets", nargs="+", default=["chest-box", "training"])
    ap.add_argument("--model", type=int, default=0, help="also segment the first N chest-box cases with the model")
    ap.add_argument("--out", type=Path, default=RESULTS / "fracture_eval")
    args = ap.parse_args(argv)
    t0 = time.time()
    segmenter = None
    if args.model:
        from OsteoScreenLib.segmenter import L1L2Segmenter

        segmenter = L1L2Segmenter()
    rows = []
    for preset in args.presets:
        for i in range(args.cases):
            seed = SEED0 + i
            params, fracture, truth, graded = phantom_case(seed, preset)
            case = render_case(params)
            row = {"preset": preset, "seed": seed, "fracture": fracture, "truth": graded,
                   "spacing_mm": [round(float(s), 3) for s in case.ct.spacing_mm],
                   "true_heights_mm": {n: {p: round(v, 2) for p, v in t.items()} for n, t in truth.items()},
                   "reference": assess(case.labels, truth)}
            if segmenter is not None and preset == "chest-box" and i < args.model:
                row["model"] = assess(segmenter.segment(checked_ct(case.ct, f"phantom {seed}")[0]).labels, truth)
            rows.append(row)
            print(preset, seed, fracture, {n: (graded[n]["grade"], row["reference"][n]["grade"]) for n in graded},
                  flush=True)
    summary = {f"{p} reference labels": summarise([r for r in rows if r["preset"] == p], "reference")
               for p in args.presets}
    if segmenter is not None:
        summary["chest-box model labels"] = summarise([r for r in rows if "model" in r], "model")
        summary["chest-box reference labels, same cases as the model"] = summarise(
            [r for r in rows if "model" in r], "reference")
    real = real_case(REAL_CASE) if REAL_CASE.exists() else None
    report = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores",
        "seconds": round(time.time() - t0, 1),
        "thresholds": {"grade_min_loss": registry.FRACTURE_GRADE_MIN_LOSS, "bands": registry.FRACTURE_HEIGHT_BANDS,
                       "slab_width_fraction": registry.FRACTURE_SLAB_WIDTH_FRACTION},
        "summary": summary, "real_case": real, "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report, args) + "\n")
    print(markdown(report, args))


def markdown(r: dict, args) -> str:
    lines = ["# Vertebral fracture assessment: evaluation", "",
             f"{r['date_utc']} UTC; {r['machine']}; {r['seconds']:.0f} s. `python -m training.fracture_eval "
             f"--cases {args.cases} --presets {' '.join(args.presets)} --model {args.model}`.", "",
             "Phantoms: seeds from 910000, one fracture at L1 or L2 in 80 % of cases (type at random, generator "
             "`height_loss` in " + ", ".join(f"{k} {v[0]}-{v[1]}" for k, v in LOSS_RANGE.items()) + "). Truth: the "
             "Genant grade of the true heights (the renderer's body shape read on a 0.1 mm grid, "
             "`OsteoScreenLib.phantom.heights`); both bodies of every case counted. Sensitivity: a true grade g >= 1 "
             "found as any fracture (grade >= 1); specificity: a true grade 0 found as grade 0. Height error: "
             "measured minus true (mm).", ""]
    lines += ["| labels | bodies assessed (not: all, true fractures) | specificity | sensitivity (any) | sens. grade 1 / 2 / 3 | exact grade 0 / 1 / 2 / 3 "
              "| type agreement | height error A / M / P: mean (SD) mm | max abs error mm | confusion (rows true 0-3) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in r["summary"].items():
        g = s["by_true_grade"]

        def cell(k, key):
            return f"{g[k][key]:.2f} (n={g[k]['n']})" if k in g else "-"
        sens = " / ".join(cell(k, "sensitivity") for k in (1, 2, 3))
        exact = " / ".join(f"{g[k]['exact_grade']:.2f}" if k in g else "-" for k in range(4))
        e = s.get("height_error_mm", {})
        err = " / ".join(f"{e[p]['mean']:+.2f} ({e[p]['sd']:.2f})" for p in POSITIONS) if e else "-"
        mx = " / ".join(f"{e[p]['max_abs']:.1f}" for p in POSITIONS) if e else "-"
        lines.append(f"| {name} | {s['bodies']} ({s['not_assessed']}, {s['not_assessed_true_fractures']}) | {s['specificity']} | {s['sensitivity_any']} | {sens} | {exact} | "
                     f"{s['type_agreement_when_found']} | {err} | {mx} | {s['confusion_true_rows_measured_cols']} |")
    lines += ["", "Not assessed: " + "; ".join(f"{n}: {', '.join(s['not_assessed_notes']) or 'none'}"
                                            for n, s in r["summary"].items()) + ". Misses of a crush that had no "
              "assessed neighbour (a crush is seen only against one): " + ", ".join(
                  f"{n} {s['missed_crush_without_neighbour']}" for n, s in r["summary"].items()) + "."]
    real = r.get("real_case")
    if real:
        lines += ["", f"## Real case {real['case']} (VerSe reference masks, whole vertebrae cut to their bodies at the canal)",
                  "", f"Grid {real['grid']['shape_ijk']} voxels of {real['grid']['spacing_mm']} mm, axes "
                  f"{real['grid']['axes']}. Reported fracture: L1 compression, about two thirds of the height of T12 and L2.",
                  "", "| body | grade | type | height loss | A / M / P (mm) | losses | note |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for n, f in real["fractures"].items():
            hm = f"{f['anterior_mm']} / {f['middle_mm']} / {f['posterior_mm']}" if f["grade"] is not None else "-"
            lines.append(f"| {n} | {f['grade']} | {f['type']} | {f['height_loss']} | {hm} | {f['losses']} | {f['note']} |")
        lines += ["", "Each body alone (its own axis): " + "; ".join(
            f"{n} A/M/P {h['anterior']}/{h['middle']}/{h['posterior']} mm" for n, h in real["heights_own_axis_mm"].items() if h)
            + (f". L1 over the mean of T12 and L2: {real['L1_over_neighbours']}." if "L1_over_neighbours" in real else ".")]
        m = real.get("model")
        if m and "error" in m:
            lines += ["", f"The bundled segmentation model {m['model']} on the CT: {m['error']}."]
        elif m:
            lines += ["", f"The bundled segmentation model {m['model']} on the CT, its segments graded (the levels "
                      f"{'carry a level warning' if m['level_warnings'] else 'carry no level warning'}):", "",
                      "| segment | lies on (reference) | grade | type | height loss | A / M / P (mm) | note |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for n, f in m["fractures"].items():
                hm = (f"{f['anterior_mm']} / {f['middle_mm']} / {f['posterior_mm']}" if f["anterior_mm"] is not None
                      else "-")
                lines.append(f"| {n} | {m['lies_on'].get(n)} | {f['grade']} | {f['type']} | {f['height_loss']} | {hm} "
                             f"| {f['note']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
