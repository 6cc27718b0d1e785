"""Compare bundled classifier versions on the same test phantoms (ONNX Runtime only).

    python -m training.studies.compare_versions --rev 31833d2 --rev 843edec --rev WORKTREE

Each ``--rev`` is a git revision whose Resources/Models/classifier-*/ is taken (its card's
SHA-256 checked), or WORKTREE for the files on disk. Models whose preprocessing differs from
the current features are skipped with a note. Writes training/results/classifier_versions.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.classifier import MODELS as RUNTIME_MODELS
from OsteoScreenLib.features import DEFAULT_PREPROCESSING, Preprocessing
from OsteoScreenLib.paths import models_dir
from OsteoScreenLib.registry import CLASSES

from training.classification.config import PRESET
from training.classification.delong import auc_ci
from training.classification.evaluate import predict
from training.classification.prepare import load_split

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "training" / "results"


def model_files(rev: str, model: str, scratch: Path) -> Path:
    """The model folder of ``model`` at ``rev`` (copied out of git), or on disk for WORKTREE."""
    folder = RUNTIME_MODELS[model]["folder"]
    if rev == "WORKTREE":
        return models_dir() / folder
    out = scratch / rev / folder
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model_card.json", "classifier.onnx"):
        blob = subprocess.run(["git", "show", f"{rev}:Resources/Models/{folder}/{name}"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        (out / name).write_bytes(blob)
    return out


def same_preprocessing(card: dict) -> bool:
    pre = Preprocessing.from_card(card)  # the ROI too: the cached features were made with the defaults
    return pre == DEFAULT_PREPROCESSING


def score(folder: Path, model: str, data: dict, known: bool) -> list[dict]:
    """``known``: tube voltage and contrast phase given (to models that take them). One row per
    reference standard: the QCT reading (what 0.5.0 learns) and the true density (what 0.1.0-0.4.0 learnt)."""
    p, bmd, card = predict(model, data, kvp_known=known, contrast_known=known, folder=folder)
    rows = []
    for reference, prefix in (("QCT", ""), ("true", "true_")):
        y = data[prefix + "label"]
        rows.append({"version": card["version"], "uses_kvp": "onnx_inputs" in card["architecture"],
                     "reference": reference,
                     "auc": {c: round(auc_ci(y == k, p[:, k])["auc"], 4) for k, c in enumerate(CLASSES)},
                     "accuracy": round(float((p.argmax(1) == y).mean()), 4),
                     "bmd_mae_mg_cm3": round(float(np.abs(bmd - data[prefix + "bmd"][:, 2]).mean()), 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rev", action="append", required=True, help="git revision, or WORKTREE")
    p.add_argument("--preset", default=PRESET)
    a = p.parse_args()
    test = load_split("test", a.preset)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rev in a.rev:
            for model in RUNTIME_MODELS:
                folder = model_files(rev, model, Path(tmp))
                card = json.loads((folder / "model_card.json").read_text())
                if not same_preprocessing(card):
                    notes.append(f"{rev} {model} {card['version']}: other preprocessing, skipped")
                    continue
                for known in (True, False):
                    for r in score(folder, model, test, known):
                        if not r["uses_kvp"] and not known:
                            continue  # the same numbers as with the tube voltage: the model never reads it
                        rows.append({"rev": rev, "model": model, "kvp": "given" if known and r["uses_kvp"] else
                                     ("unknown" if r["uses_kvp"] else "not used"), **r})
    report = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "preset": a.preset, "test_cases": int(len(test["label"])), "rows": rows, "notes": notes}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier_versions.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Classifier versions on the same test phantoms", "",
             f"{report['test_cases']} test phantoms (preset `{a.preset}`); {report['machine']}; {report['date']}. "
             "`python -m training.studies.compare_versions " + " ".join(f"--rev {r}" for r in a.rev) + "`. "
             "Tube voltage and contrast phase `given`: each model gets what it takes of them (0.3.0 the voltage "
             "only; 0.1.0 and 0.2.0 neither). Reference `QCT`: the QCT reading of each phantom (the labels of "
             "0.5.0 on); `true`: the density the generator drew (the labels of 0.1.0 to 0.4.0).", "",
             "| revision | model | version | kVp, contrast | reference | AUC normal | AUC osteopenia | AUC osteoporosis | "
             "accuracy | BMD MAE (mg/cm³) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        auc = r["auc"]
        lines.append(f"| {r['rev']} | {r['model']} | {r['version']} | {r['kvp']} | {r['reference']} | {auc['normal']:.3f} | "
                     f"{auc['osteopenia']:.3f} | {auc['osteoporosis']:.3f} | {r['accuracy']:.3f} | {r['bmd_mae_mg_cm3']:.1f} |")
    lines += [""] + [f"- {n}" for n in notes] + [""]
    (RESULTS / "classifier_versions.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
