"""Evaluate both classifiers on the test phantoms, laid out like the paper's table.

    python -m training.classification.evaluate

Per class (one vs rest): AUC with 95 % DeLong CI for model 1 (L1+L2), model 2
(L1), the calibrated ROI HU baseline (baseline.py: mean trabecular ROI HU of the
same bodies converted to BMD by a calibration line fitted on the training split,
with the same tube voltage and contrast phase the model gets, or without them)
and the older L1 ROI HU baseline (logistic regression on L1 HU alone); DeLong's
paired tests model 1 vs model 2 and each model against the baselines; accuracy
and confusion matrices; BMD mean absolute error. Runs the exported ONNX
files with ONNX Runtime (the run-time path). Writes training/results/
classification_eval.{json,md}, classification_roc.png and the metrics into the cards.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.classifier import MODELS as RUNTIME_MODELS
from OsteoScreenLib.model_store import model_folder, verified_files
from OsteoScreenLib.onnx_runner import OnnxNetwork
from OsteoScreenLib.registry import CLASSES
from OsteoScreenLib.segmenter import softmax

from OsteoScreenLib.phantom import GENERATOR_VERSION

from ..model_card import UNRECORDED_GENERATOR_VERSION, update_card
from .baseline import CalibratedHU, mean_roi_hu
from .delong import auc_ci, paired_test
from .config import PRESET, REFERENCE_STANDARD
from .prepare import load_split
from .train import inputs

RESULTS = Path(__file__).resolve().parents[1] / "results"


def predict(model: str, data: dict, kvp_known: bool = True, contrast_known: bool = True,
            folder: Path | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Model ``model`` (bundled, or the model folder ``folder``) on cached cases, with the tube
    voltage as a DICOM header gives it (``kvp_known``) or unknown as for a NIfTI file, and the
    contrast phase given by the reader (``contrast_known``) or not. Older versions are fed what
    they take: 0.1-0.2 the images only, 0.3 the scan vector without its last part (the phase)."""
    folder = model_folder(RUNTIME_MODELS[model]["folder"]) if folder is None else folder
    files, card = verified_files(folder)
    net = OnnxNetwork(files["classifier"])
    x, scan = inputs(data, model, kvp_known=kvp_known, contrast_known=contrast_known)
    takes = net.session.get_inputs()
    scan = scan[:, : takes[1].shape[1]] if len(takes) == 2 else None
    logits, bmd = [], []
    for s in range(0, len(x), 32):
        out = net.run_all(*((x[s : s + 32],) if scan is None else (x[s : s + 32], scan[s : s + 32])))
        logits.append(out[0])
        bmd.append(out[1][:, 0])
    return softmax(np.concatenate(logits), axis=1), np.concatenate(bmd), card


def hu_baseline(train: dict, test: dict, truth: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and BMD from L1 ROI HU alone (logistic / linear regression on train)."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    clf = LogisticRegression(max_iter=1000).fit(train["roi_hu"][:, :1], train[truth + "label"])
    reg = LinearRegression().fit(train["roi_hu"][:, :1], train[truth + "bmd"][:, 2])
    return clf.predict_proba(test["roi_hu"][:, :1]), reg.predict(test["roi_hu"][:, :1])


# The calibrated baseline's rows, by the information they get, named after the model rows they match.
BASELINE_INFORMATION = {"": "kvp+phase", " kVp only": "kvp", " unknown": "none"}


def calibrated_baselines(train: dict, test: dict, truth: str = "") -> dict[str, tuple[np.ndarray, np.ndarray, CalibratedHU]]:
    """Class probabilities, BMD and fit of the calibrated ROI HU baseline (baseline.py) for each model's
    bodies and each level of scan information, fitted to ``train[truth + "bmd"]`` (mean of L1 and L2)."""
    from .config import MODELS

    out = {}
    for m, bodies in MODELS.items():
        for suffix, information in BASELINE_INFORMATION.items():
            cal = CalibratedHU.fit(mean_roi_hu(train, bodies), train["kvp"], train["contrast"],
                                   train[truth + "bmd"][:, 2], information)
            out[f"cal_hu_{m}{suffix}"] = (*cal.probabilities(mean_roi_hu(test, bodies), test["kvp"], test["contrast"]), cal)
    return out


def evaluate(preset: str) -> dict:
    train, test = load_split("train", preset), load_split("test", preset)
    y, bmd_true = test["label"], test["bmd"][:, 2]
    probs, bmds, cards = {}, {}, {}
    for m in ("l1l2", "l1"):
        probs[m], bmds[m], cards[m] = predict(m, test)
    for m in ("l1l2", "l1"):
        probs[f"{m} kVp only"], bmds[f"{m} kVp only"], _ = predict(m, test, contrast_known=False)
        probs[f"{m} unknown"], bmds[f"{m} unknown"], _ = predict(m, test, kvp_known=False, contrast_known=False)
    probs["l1_roi_hu"], bmds["l1_roi_hu"] = hu_baseline(train, test)
    calibrations = {}
    for name, (p, b, cal) in calibrated_baselines(train, test).items():
        probs[name], bmds[name] = p, b
        calibrations[name] = {"information": cal.information, "residual_sd_train_mg_cm3": round(cal.residual_sd, 2),
                              "coefficients": [round(float(c), 5) for c in cal.coef]}
    table = {name: scores(p, bmds[name], y, bmd_true) for name, p in probs.items()}
    # The same predictions against the density the generator drew (no fat error of QCT in the label),
    # and the ROI HU baseline refitted to it: how much of the figures the reference standard explains.
    true_y, true_bmd = test["true_label"], test["true_bmd"][:, 2]
    base_true = hu_baseline(train, test, truth="true_")
    cal_true = {n: v[:2] for n, v in calibrated_baselines(train, test, truth="true_").items() if n in ("cal_hu_l1l2", "cal_hu_l1")}
    against_true = {name: scores(p, b, true_y, true_bmd)
                    for name, (p, b) in {"l1l2": (probs["l1l2"], bmds["l1l2"]), "l1": (probs["l1"], bmds["l1"]),
                                         "l1_roi_hu": base_true, **cal_true}.items()}
    delong = {c: paired_test(y == k, probs["l1l2"][:, k], probs["l1"][:, k]) for k, c in enumerate(CLASSES)}
    model_rows = [m for m in probs if not m.startswith(("l1_roi_hu", "cal_hu_"))]
    vs_baseline = {m: {c: paired_test(y == k, probs[m][:, k], probs["l1_roi_hu"][:, k]) for k, c in enumerate(CLASSES)}
                   for m in model_rows}

    def against(m: str, base: str) -> dict:
        return {"baseline": base, **{c: paired_test(y == k, probs[m][:, k], probs[base][:, k]) for k, c in enumerate(CLASSES)}}

    # Each model row against the calibrated baseline of its bodies with the same information, and the
    # models given kVp and phase also against the baseline without them.
    vs_calibrated = {m: against(m, "cal_hu_" + m) for m in model_rows}
    vs_calibrated |= {f"{m} vs unknown": against(m, f"cal_hu_{m} unknown") for m in ("l1l2", "l1")}
    plot_roc(y, {m: probs[m] for m in ("l1l2", "l1", "cal_hu_l1l2", "cal_hu_l1", "l1_roi_hu")})
    return {
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"), "preset": preset, "generator_version": GENERATOR_VERSION,
        "test_cases": int(len(y)), "train_cases_for_baselines": int(len(train["label"])),
        "class_counts": {c: int((y == k).sum()) for k, c in enumerate(CLASSES)},
        "reference_standard": REFERENCE_STANDARD,
        "models": table, "delong_model1_vs_model2": delong, "delong_vs_l1_roi_hu": vs_baseline,
        "delong_vs_calibrated_hu": vs_calibrated, "calibrated_hu": calibrations,
        "model_versions": {m: cards[m]["version"] for m in cards},
        "paper_auc": {"l1l2": [0.990, 0.952, 0.980], "l1": [0.983, 0.940, 0.978]},
        "against_true_density": {"class_counts": {c: int((true_y == k).sum()) for k, c in enumerate(CLASSES)},
                                 "models": against_true},
    }


def scores(p: np.ndarray, bmd: np.ndarray, y: np.ndarray, bmd_ref: np.ndarray) -> dict:
    """AUC with DeLong CI per class, accuracy, confusion matrix and BMD error of one set of predictions."""
    pred = p.argmax(1)
    conf = np.zeros((3, 3), int)
    for t, q in zip(y, pred):
        conf[t, q] += 1
    return {
        "auc": {c: auc_ci(y == k, p[:, k]) for k, c in enumerate(CLASSES)},
        "accuracy": float((pred == y).mean()),
        "confusion_matrix_rows_true_cols_pred": conf.tolist(),
        "bmd_mae_mg_cm3": float(np.abs(bmd - bmd_ref).mean()),
    }


def plot_roc(y, probs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    for k, c in enumerate(CLASSES):
        ax = axes[k]
        for name, p in probs.items():
            fpr, tpr, _ = roc_curve(y == k, p[:, k])
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc_ci(y == k, p[:, k])['auc']:.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{c} vs rest")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "classification_roc.png", dpi=90)


def markdown(r: dict) -> str:
    lines = ["# Classification evaluation (test phantoms)", "",
             f"{r['test_cases']} test phantoms (preset `{r['preset']}`, phantom generator "
             f"{r.get('generator_version', UNRECORDED_GENERATOR_VERSION)}), QCT classes {r['class_counts']}; "
             f"reference standard: {r['reference_standard']}. "
             f"{r['machine']}; {r['date']}. Models `l1l2` and `l1` get the tube voltage, as a DICOM header gives it, "
             "and the contrast phase, as the reader gives it; the rows `kVp only` are the same models on the same "
             "cases without the phase, `unknown` without either (a NIfTI file and no word from the reader). "
             "`cal_hu_l1l2` / `cal_hu_l1`: the calibrated ROI HU baseline (training/classification/baseline.py): "
             "mean trabecular ROI HU of L1 and L2 / of L1 converted to BMD by a calibration line fitted on the "
             f"training phantoms only ({r.get('train_cases_for_baselines', 'all')} of them) (one line per tube voltage with an offset per voltage and contrast phase; "
             "`kVp only`: one line per voltage; `unknown`: one line for all), then read against the QCT "
             "thresholds; class probabilities from the fit's residual SD on the training phantoms. "
             "`l1_roi_hu`: mean HU of the L1 trabecular ROI, logistic and linear regression fitted on the "
             "training phantoms (no kVp or phase).", ""]
    lines += ["## Models against the calibrated ROI HU baseline", "",
              "Each model beside the baseline that reads the same bodies with the same scan information. "
              "DeLong p: paired test of the model against that baseline on the same cases (+: the model's AUC "
              "is higher, -: lower).", "",
              "| rows | AUC normal | AUC osteopenia | AUC osteoporosis | accuracy | BMD MAE (mg/cm³) | DeLong p vs baseline (normal / osteopenia / osteoporosis) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    vs = r.get("delong_vs_calibrated_hu", {})
    for m in (m for m in r["models"] if not m.startswith(("cal_hu_", "l1_roi_hu"))):
        for name in (m, "cal_hu_" + m):
            t = r["models"][name]
            cell = ("" if name != m or m not in vs else
                    " / ".join(f"{vs[m][c]['p']:.3g} ({'+' if vs[m][c]['z'] > 0 else '-'})" for c in CLASSES))
            lines.append(f"| {name} | " + " | ".join(
                f"{t['auc'][c]['auc']:.3f} ({t['auc'][c]['ci_low']:.3f}-{t['auc'][c]['ci_high']:.3f})" for c in CLASSES)
                + f" | {t['accuracy']:.3f} | {t['bmd_mae_mg_cm3']:.1f} | {cell} |")
    extra = [k for k in vs if k.endswith(" vs unknown")]
    if extra:
        lines += ["", "The models given kVp and phase against the baseline without them:", "",
                  "| model | baseline | DeLong p (normal / osteopenia / osteoporosis) |", "| --- | --- | --- |"]
        lines += [f"| {k.removesuffix(' vs unknown')} | {vs[k]['baseline']} | "
                  + " / ".join(f"{vs[k][c]['p']:.3g} ({'+' if vs[k][c]['z'] > 0 else '-'})" for c in CLASSES) + " |"
                  for k in extra]
    lines += ["", "## All rows", "",
             "| model | class | AUC (95 % DeLong CI) | paper AUC |", "| --- | --- | --- | --- |"]
    for name, t in r["models"].items():
        for k, c in enumerate(CLASSES):
            a = t["auc"][c]
            paper = r["paper_auc"].get(name, [None] * 3)[k]  # the paper read DICOM: kVp known
            lines.append(f"| {name} | {c} | {a['auc']:.3f} ({a['ci_low']:.3f}-{a['ci_high']:.3f}) | {paper or '-'} |")
    lines += ["", "| class | DeLong model 1 vs model 2: z | p |", "| --- | --- | --- |"]
    lines += [f"| {c} | {d['z']:.2f} | {d['p']:.3g} |" for c, d in r["delong_model1_vs_model2"].items()]
    lines += ["", "| model | DeLong against the L1 ROI HU baseline: p (normal / osteopenia / osteoporosis) |", "| --- | --- |"]
    lines += [f"| {m} | " + " / ".join(f"{d['p']:.3g} ({'+' if d['z'] > 0 else '-'})" for d in v.values()) + " |"
              for m, v in r["delong_vs_l1_roi_hu"].items()]
    lines += ["", "| model | accuracy | BMD MAE (mg/cm³) | confusion matrix (rows true, cols predicted) |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {t['accuracy']:.3f} | {t['bmd_mae_mg_cm3']:.1f} | {t['confusion_matrix_rows_true_cols_pred']} |"
              for n, t in r["models"].items()]
    t = r["against_true_density"]
    lines += ["", "## Against the true mineral density", "",
              "The labels above are the QCT reading of each phantom, as in the paper (QCT measures marrow fat as "
              "missing mineral). Here the same predictions are scored against the density the generator drew "
              f"(classes {t['class_counts']}); the ROI HU baseline is refitted to it.", "",
              "| model | AUC normal | AUC osteopenia | AUC osteoporosis | accuracy | BMD MAE (mg/cm³) |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | " + " | ".join(f"{m['auc'][c]['auc']:.3f}" for c in CLASSES)
              + f" | {m['accuracy']:.3f} | {m['bmd_mae_mg_cm3']:.1f} |" for n, m in t["models"].items()]
    lines += ["", "![ROC](classification_roc.png)", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default=PRESET)
    a = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    r = evaluate(a.preset)
    (RESULTS / "classification_eval.json").write_text(json.dumps(r, indent=1) + "\n")
    (RESULTS / "classification_eval.md").write_text(markdown(r))
    for m in ("l1l2", "l1"):
        t = r["models"][m]
        update_card(model_folder(RUNTIME_MODELS[m]["folder"]), {
            "test_phantoms": r["test_cases"], "generator_version": r["generator_version"], "accuracy": round(t["accuracy"], 4),
            "auc": {c: {k: round(v, 4) for k, v in t["auc"][c].items()} for c in CLASSES},
            "bmd_mae_mg_cm3": round(t["bmd_mae_mg_cm3"], 2)})
    print(markdown(r))


if __name__ == "__main__":
    main()
