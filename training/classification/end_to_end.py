"""End to end on the test phantoms: automatic segmentation, then each model and the calibrated baseline.

    python -m training.classification.end_to_end prepare [--count N] [--workers 1]
    python -m training.classification.end_to_end evaluate [--count N]

``prepare`` renders each test phantom whole (preset ``chest``, the run-time input), segments it with
the bundled segmenter (the run-time path: checked_ct, then L1L2Segmenter.segment), and caches the
features of the segmented bodies (OsteoScreenLib.features, as at run time), whether each level lies
in its true vertebra, and the Dice against the reference bodies; a case the segmenter refuses is
cached as a failure with its message. Resumable: a cached case is not redone. The cache is keyed by
the generator version and the segmentation model's weights.

``evaluate`` runs each model (bundled ONNX, as evaluate.py) with kVp and phase, kVp only, and
neither, on those features, beside the calibrated ROI HU baseline (baseline.py) fitted on the
training phantoms' reference segments (training.classification.prepare's cache) and read on the
automatically segmented ROIs, with DeLong of each model against the baseline of the same bodies and
information. Cases whose segmentation failed, or which lack a body the model reads, count as
misclassified in the accuracy and are left out of the AUCs (their number is reported). Writes
training/results/classification_end_to_end.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from OsteoScreenLib.registry import CLASSES

from .config import MODELS, PRESET, SPLITS
from .prepare import CACHE, labels_of, seeds_of

RESULTS = Path(__file__).resolve().parents[1] / "results"
E2E_PRESET = "chest"  # what the run time gets: the whole chest CT


def segmenter_key() -> str:
    """The bundled segmentation model's version and a short hash of its weights (the cache is theirs)."""
    import hashlib

    from OsteoScreenLib.model_store import model_folder, read_card
    from OsteoScreenLib.segmenter import MODEL_NAME

    card = read_card(model_folder(MODEL_NAME))
    digest = hashlib.sha256("".join(sorted(f["sha256"] for f in card["files"].values())).encode()).hexdigest()
    return f"{card['version']}-{digest[:8]}"


def cache_dir(key: str | None = None) -> Path:
    from OsteoScreenLib.phantom import GENERATOR_VERSION

    return CACHE / f"end-to-end-{E2E_PRESET}-v{GENERATOR_VERSION}-seg{key or segmenter_key()}"


_MODELS = None


def prepare_one(job: tuple[int, str]) -> int:
    """Render, segment and measure one test phantom; write its .npz (nothing if it exists)."""
    global _MODELS
    seed, folder = job
    path = Path(folder) / f"{seed}.npz"
    if path.exists():
        return seed
    from OsteoScreenLib.ct_io import checked_ct
    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib import metrics
    from OsteoScreenLib.features import body_features
    from OsteoScreenLib.phantom import generate_case
    from OsteoScreenLib.pipeline import Models
    from OsteoScreenLib.registry import LABEL_OF, VERSE_LEVEL_IDS

    if _MODELS is None:
        _MODELS = Models()
    case = generate_case(seed, E2E_PRESET)
    ct, _ = checked_ct(case.ct, "phantom")
    t0 = time.perf_counter()
    out: dict = {"kvp": np.array(case.meta["parameters"]["scanner"]["kvp"])}
    try:
        seg = _MODELS.segmenter.segment(ct)
    except OsteoScreenError as e:
        out |= {"failed": np.array(str(e)), "segment_s": np.array(time.perf_counter() - t0)}
    else:
        out["segment_s"] = np.array(time.perf_counter() - t0)
        found, right, dice, feats, reference_roi = [], [], [], [], []
        for name in ("L1", "L2"):
            # the same CT's ROI on the reference bodies: what the automatic segments change
            reference_roi.append(body_features(ct, case.labels, name).roi_hu)
            pred = seg.labels.array == LABEL_OF[name]
            ref = case.labels.array == LABEL_OF[name]
            ok = int(pred.sum()) > 0
            found.append(ok)
            right.append(bool(ok and np.mean(case.levels.array[pred] == VERSE_LEVEL_IDS[name]) > 0.5))
            dice.append(metrics.dice(pred, ref))  # the reference body is never empty on a test phantom
            try:
                feats.append(body_features(ct, seg.labels, name) if ok else None)
            except OsteoScreenError:
                feats.append(None)
        good = [f for f in feats if f is not None]
        if not good:
            out["failed"] = np.array("no body measurable")
        else:
            shape, dtype = good[0].image_hu.shape, good[0].mask.dtype
            out |= {
                "image_hu": np.stack([f.image_hu if f else np.zeros(shape, np.float32) for f in feats]).astype(np.float16),
                "mask": np.stack([f.mask if f else np.zeros(shape, dtype) for f in feats]),
                "roi_hu": np.array([f.roi_hu if f else np.nan for f in feats], np.float32),
                "measured": np.array([f is not None for f in feats]),
            }
        out |= {"roi_hu_reference": np.array(reference_roi, np.float32), "found": np.array(found), "right_level": np.array(right), "dice": np.array(dice, np.float32),
                "warnings": np.array(seg.warnings if seg.warnings else [""])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return seed


def prepare(count: int | None, workers: int, folder: Path | None = None, seeds: list[int] | None = None) -> Path:
    folder = folder or cache_dir()
    jobs = [(s, str(folder)) for s in (seeds if seeds is not None else seeds_of("test", count))]
    t0 = time.perf_counter()
    if workers <= 1:
        done = map(prepare_one, jobs)
    else:
        pool = Pool(workers)
        done = pool.imap_unordered(prepare_one, jobs)
    for n, _ in enumerate(done, 1):
        if n % 10 == 0 or n == len(jobs):
            print(f"[end to end] {n}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if workers > 1:
        pool.close()
        pool.join()
    return folder


def load(folder: Path, seeds: list[int]) -> dict:
    """The cached end-to-end cases of ``seeds`` (missing ones skipped) with their reference standard."""
    rows = []
    for seed in seeds:
        p = folder / f"{seed}.npz"
        if p.exists():
            with np.load(p, allow_pickle=False) as z:
                rows.append({k: z[k] for k in z.files} | {"seed": seed})
    if not rows:
        raise SystemExit(f"no end-to-end cases under {folder}; run `python -m training.classification.end_to_end prepare`")
    ref = labels_of([r["seed"] for r in rows], E2E_PRESET)
    ok = np.array(["failed" not in r for r in rows])
    template = next(r for r in rows if "failed" not in r) if ok.any() else None
    data = {"seed": np.array([r["seed"] for r in rows]), "segmented": ok, "kvp": np.array([int(r["kvp"]) for r in rows]),
            "failure": [str(r.get("failed", "")) for r in rows]} | ref
    if template is not None:
        for key in ("image_hu", "mask", "roi_hu", "measured", "found", "right_level", "dice", "roi_hu_reference"):
            data[key] = np.stack([r[key] if "failed" not in r else np.zeros_like(template[key]) for r in rows])
    return data


def _subset(data: dict, keep: np.ndarray) -> dict:
    return {k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v) for k, v in data.items()}


def evaluate(folder: Path, seeds: list[int], preset: str = PRESET, train: dict | None = None) -> dict:
    """Scores of every row on the cached cases of ``seeds``; ``train``: the cached training phantoms
    (reference segments) the baseline's line is fitted on (default: the whole training split)."""
    from .baseline import CalibratedHU, mean_roi_hu
    from .delong import auc_ci, paired_test
    from .evaluate import BASELINE_INFORMATION, predict, scores
    from .prepare import load_split

    data = load(folder, seeds)
    n_all = len(data["seed"])
    if train is None:  # the baseline's line: reference segments of the training phantoms
        train = load_split("train", preset)
    out = {"cases": n_all, "segmentation_failed": int((~data["segmented"]).sum()),
           "failures": sorted({f for f in data["failure"] if f}), "rows": {}, "delong_vs_calibrated_hu": {}}
    if "dice" in data:
        seg = data["segmented"]
        out["segmentation"] = {
            "dice_mean": {v: float(data["dice"][seg, i].mean()) for i, v in enumerate(("L1", "L2"))} if seg.any() else {},
            "right_level_share": {v: float(data["right_level"][:, i].mean()) for i, v in enumerate(("L1", "L2"))},
            # ROI HU on the automatic segments minus that on the reference bodies, same CT
            "roi_hu_auto_minus_reference": {v: float(np.nanmedian((data["roi_hu"] - data["roi_hu_reference"])[seg, i]))
                                            for i, v in enumerate(("L1", "L2"))} if seg.any() else {}}
    for model, bodies in MODELS.items():
        idx = [("L1", "L2").index(b) for b in bodies]
        usable = data["segmented"] & (data["measured"][:, idx].all(1) if "measured" in data else False)
        sub = _subset(data, usable)
        y = sub["label"]
        for suffix, information in BASELINE_INFORMATION.items():
            name = model + suffix
            kvp_known, contrast_known = information in ("kvp+phase", "kvp"), information == "kvp+phase"
            cal = CalibratedHU.fit(mean_roi_hu(train, bodies), train["kvp"], train["contrast"], train["bmd"][:, 2], information)
            rows = {}
            if usable.any():
                p, b, _ = predict(model, sub, kvp_known=kvp_known, contrast_known=contrast_known)
                rows[name] = (p, b)
                rows["cal_hu_" + name] = cal.probabilities(mean_roi_hu(sub, bodies), sub["kvp"], sub["contrast"])
            for row, (p, b) in rows.items():
                s = scores(p, b, y, sub["bmd"][:, 2]) if len(set(y.tolist())) == len(CLASSES) else {
                    "auc": {c: auc_ci(y == k, p[:, k]) if 0 < (y == k).sum() < len(y) else None for k, c in enumerate(CLASSES)},
                    "accuracy": float((p.argmax(1) == y).mean()), "bmd_mae_mg_cm3": float(np.abs(b - sub["bmd"][:, 2]).mean())}
                s["cases_scored"] = int(usable.sum())
                s["accuracy_all_cases"] = float((p.argmax(1) == y).sum() / n_all)  # failures count as wrong
                out["rows"][row] = s
            if usable.any() and all(0 < (y == k).sum() < len(y) for k in range(len(CLASSES))):
                pm, pb = rows[name][0], rows["cal_hu_" + name][0]
                out["delong_vs_calibrated_hu"][name] = {c: paired_test(y == k, pm[:, k], pb[:, k])
                                                       for k, c in enumerate(CLASSES)}
    return out


def markdown(r: dict) -> str:
    lines = ["# Classification end to end (automatic segmentation, then each model)", "",
             f"{r['cases']} test phantoms of generator {r['generator_version']} (preset `{E2E_PRESET}`, the whole "
             f"chest CT), segmented by the bundled segmenter ({r['segmenter']}); {r['segmentation_failed']} refused "
             f"by it. {r['machine']}; {r['date']}. Baselines: the calibrated ROI HU line (baseline.py) fitted on the "
             "reference segments of the training phantoms, read on the automatic segments. "
             "`python -m training.classification.end_to_end evaluate`.", ""]
    if r.get("segmentation"):
        s = r["segmentation"]
        lines += [f"Segmentation: mean Dice L1 {s['dice_mean'].get('L1', float('nan')):.3f}, "
                  f"L2 {s['dice_mean'].get('L2', float('nan')):.3f}; right level L1 "
                  f"{100 * s['right_level_share']['L1']:.1f} %, L2 {100 * s['right_level_share']['L2']:.1f} %.", ""]
    lines += ["| row | cases scored | AUC normal | AUC osteopenia | AUC osteoporosis | accuracy (all cases) | BMD MAE | DeLong p vs baseline |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, t in r["rows"].items():
        aucs = " | ".join(f"{t['auc'][c]['auc']:.3f} ({t['auc'][c]['ci_low']:.3f}-{t['auc'][c]['ci_high']:.3f})"
                          if t["auc"].get(c) else "-" for c in CLASSES)
        d = r["delong_vs_calibrated_hu"].get(name)
        cell = " / ".join(f"{d[c]['p']:.3g} ({'+' if d[c]['z'] > 0 else '-'})" for c in CLASSES) if d else ""
        lines.append(f"| {name} | {t['cases_scored']} | {aucs} | {t['accuracy_all_cases']:.3f} | "
                     f"{t['bmd_mae_mg_cm3']:.1f} | {cell} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import platform

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("step", choices=("prepare", "evaluate"))
    ap.add_argument("--count", type=int, default=None, help="first N test phantoms (default: all 418)")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if a.step == "prepare":
        prepare(a.count, a.workers)
        return
    from OsteoScreenLib.phantom import GENERATOR_VERSION

    seeds = seeds_of("test", a.count)
    r = evaluate(cache_dir(), seeds) | {
        "generator_version": GENERATOR_VERSION, "segmenter": segmenter_key(), "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "splits": SPLITS}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "classification_end_to_end" + ("" if a.count is None else f"_first{a.count}")
    (RESULTS / f"{name}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
