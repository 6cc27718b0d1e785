"""Classification of the real cases beside the published HU thresholds (issue #26, item 4).

    python -m training.studies.real_classification

On every shared real CT that shows L1 and L2 (``lidc-idri-0001``, ``totalsegmentator-example``,
``verse012`` in ``../shared/data/real``), OsteoScreen's class, BMD estimate and trabecular ROI HU
(both models, through the run-time ``pipeline.classify``), beside the class that L1's trabecular
attenuation gives by Pickhardt et al. 2013 (Ann Intern Med 158:588-595; DXA reference, mostly
120 kV): L1 <= 110 HU highly specific for osteoporosis, <= 160 HU highly sensitive (so > 160 HU:
osteoporosis unlikely; 110-160 HU: indeterminate).

The bodies: the automatic segmentation runs first, and its levels are checked against the
reference vertebra labels (``real_eval.level_outcome``); where both levels are right its
segments are used, otherwise the reference vertebrae (whole vertebrae) cut to their bodies at
the spinal canal, as the fracture assessment cuts them. The table says which was used; the
classification on the reference bodies is given for every case.

Scan settings as a user would give them: the tube voltage from the DICOM header (NIfTI files:
unknown), the contrast phase unknown; other settings follow as a sensitivity table. The
calibrated ROI HU baseline's lines (fitted on the training phantoms; coefficients from the
committed classification_eval.json) convert the same ROI HU to BMD beside the models.

These cases carry no BMD, DXA or QCT truth: the table compares readings, not accuracy. Nothing
is tuned on them. Writes training/results/real_classification.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib import registry
from OsteoScreenLib.ct_io import read_volume
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.fracture import vertebral_body
from OsteoScreenLib.pipeline import Models, ScanSettings, classify, read_case
from OsteoScreenLib.resample import crop_to_mask
from OsteoScreenLib.volume import Volume

from training.classification.baseline import CalibratedHU
from training.real_data import REAL_DATA
from training.segmentation.real_eval import level_outcome, real_cases, reference_on

RESULTS = Path(__file__).resolve().parents[1] / "results"
PICKHARDT_SPECIFIC_HU = 110.0  # L1 <= 110 HU: > 90 % specific for osteoporosis (Pickhardt 2013)
PICKHARDT_SENSITIVE_HU = 160.0  # L1 <= 160 HU: > 90 % sensitive for osteoporosis
AORTA_ID, PORTAL_ID = 52, 64  # TotalSegmentator 'total' ids (the contrast in the vessels, where labelled)


def pickhardt_class(l1_hu: float) -> str:
    if l1_hu <= PICKHARDT_SPECIFIC_HU:
        return "osteoporosis (<= 110 HU)"
    if l1_hu <= PICKHARDT_SENSITIVE_HU:
        return "indeterminate (110-160 HU)"
    return "osteoporosis unlikely (> 160 HU)"


def agreement(osteoscreen_class: str, l1_hu: float) -> str:
    """Whether OsteoScreen's class and the HU thresholds agree (the thresholds separate osteoporosis
    from the rest only; between them they say nothing)."""
    porosis = osteoscreen_class == "osteoporosis"
    if l1_hu <= PICKHARDT_SPECIFIC_HU:
        return "agree" if porosis else "DISAGREE"
    if l1_hu > PICKHARDT_SENSITIVE_HU:
        return "DISAGREE" if porosis else "agree"
    return "thresholds indeterminate"


def body_of(ct: Volume, whole: np.ndarray) -> np.ndarray:
    """A whole-vertebra mask (on the CT grid) cut to its vertebral body at the spinal canal: the
    anterior-most run along the body's AP axis in a narrow mid-sagittal slab
    (fracture.vertebral_body, one cut: what fracture.body_heights measures)."""
    box = crop_to_mask(ct.with_array(whole.astype(np.uint8)), whole, margin=1)
    mask = np.asarray(box.array) > 0
    kji = np.argwhere(mask)
    cut = vertebral_body(box, mask, box.voxel_centers_ras(kji), passes=1)
    if cut is None:
        raise OsteoScreenError("no vertebral body found in the reference vertebra")
    # back to the CT grid: the box's voxels that were kept
    ras_to_ijk = ct.ras_to_ijk
    ijk = np.rint(cut[0] @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]).astype(int)
    body = np.zeros(whole.shape, bool)
    body[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = True
    return body & whole


def vessel_hu(ct: Volume, ref: np.ndarray, label: int) -> float | None:
    """Median HU in a labelled vessel (TotalSegmentator labels), for the contrast phase."""
    inside = ref == label
    return round(float(np.median(np.asarray(ct.array)[inside])), 0) if inside.sum() > 20 else None


def run_case(models: Models, name: str, path: Path, names: dict[int, str]) -> dict:
    case = read_case(path)
    ct = case.ct
    ref = reference_on(read_volume(path.parent / "labels.nii.gz"), ct)
    ids = {v: k for k, v in names.items()}
    out = {"kvp_header": case.scan.kvp, "kvp_source": case.scan.kvp_source,
           "grid": {"shape_ijk": list(ct.shape_ijk), "spacing_mm": [round(float(s), 3) for s in ct.spacing_mm]},
           "aorta_hu": vessel_hu(ct, ref, AORTA_ID) if name != "verse012" else None,
           "portal_vein_hu": vessel_hu(ct, ref, PORTAL_ID) if name != "verse012" else None}
    # automatic segmentation, its levels checked against the reference
    seg = models.segmenter.segment(ct)
    auto = {lv: level_outcome(seg.labels.array == v, ref, ids[lv], names, bool(seg.level_warnings))
            if (seg.labels.array == v).any() else {"outcome": "missing"} for lv, v in registry.LABEL_OF.items()}
    out["automatic_levels"] = {lv: {k: a.get(k) for k in ("outcome", "centroid_in", "fraction_inside")} for lv, a in auto.items()}
    auto_right = all(a["outcome"].startswith("right") for a in auto.values())
    # the reference vertebrae cut to their bodies
    labels = np.zeros(ct.array.shape, np.uint8)
    for lv, v in registry.LABEL_OF.items():
        labels[body_of(ct, ref == ids[lv])] = v
    reference_labels = ct.with_array(labels)
    sources = {"reference bodies": reference_labels}
    if auto_right:
        sources["automatic segments"] = seg.labels
    out["used"] = "automatic segments" if auto_right else "reference bodies"
    settings = {"as given": (case.scan.kvp, None)}
    if case.scan.kvp is None:
        settings["120 kV assumed"] = (120, None)
    for phase in ("none", "arterial", "portal"):
        settings[f"{case.scan.kvp or 120} kV, {phase}"] = (case.scan.kvp or 120, phase)
    out["results"] = {}
    for source, lab in sources.items():
        for setting, (kvp, phase) in settings.items():
            if source != "reference bodies" and setting != "as given":
                continue
            case.scan = ScanSettings(kvp, "study", phase)
            row = {"kvp": kvp, "contrast": phase}
            for model in ("l1l2", "l1"):
                try:
                    r = classify(models, case, lab, model, source).result
                except OsteoScreenError as exc:
                    row[model] = {"error": str(exc)}
                    continue
                row[model] = {"class": r.prediction.class_name, "bmd_mg_cm3": r.prediction.bmd_mg_cm3,
                              "bmd_class": registry.qct_class(r.prediction.bmd_mg_cm3),
                              "probabilities": r.prediction.probabilities}
                row["roi_hu"] = {n: v.trabecular_roi_hu for n, v in r.vertebrae.items() if v.trabecular_roi_hu is not None}
                row["body_volume_ml"] = {n: v.volume_ml for n, v in r.vertebrae.items()}
            out["results"][f"{source}; {setting}"] = row
    return out


def calibrated(cal_coefs: dict, row: dict, bodies: tuple[str, ...], suffix: str) -> float | None:
    """BMD from the calibrated ROI HU baseline's line (kVp and phase as the row has them)."""
    key = f"cal_hu_{'l1l2' if len(bodies) == 2 else 'l1'}{suffix}"
    if key not in cal_coefs or not all(b in row.get("roi_hu", {}) for b in bodies):
        return None
    c = cal_coefs[key]
    cal = CalibratedHU(c["information"], np.array(c["coefficients"]), c["residual_sd_train_mg_cm3"])
    hu = float(np.mean([row["roi_hu"][b] for b in bodies]))
    return round(float(cal.bmd([hu], [row["kvp"] or 120], [row["contrast"] or "none"])[0]), 1)


def baseline_suffix(row: dict) -> str:
    if row["kvp"] is None:
        return " unknown"
    return " kVp only" if row["contrast"] is None else ""


def readings(row: dict, cal_coefs: dict) -> None:
    """The calibrated line's BMD and the HU thresholds' reading of one result row (in place)."""
    for m in ("l1l2", "l1"):
        if "bmd_mg_cm3" in row.get(m, {}):
            row[m]["bmd_class"] = registry.qct_class(row[m]["bmd_mg_cm3"])
    row["calibrated_hu_bmd"] = {m: calibrated(cal_coefs, row, b, baseline_suffix(row))
                                for m, b in (("l1l2", ("L1", "L2")), ("l1", ("L1",)))}
    if "L1" in row.get("roi_hu", {}):
        hu = row["roi_hu"]["L1"]
        row["pickhardt"] = pickhardt_class(hu)
        row["agreement"] = {m: agreement(row[m]["class"], hu) for m in ("l1l2", "l1") if "class" in row.get(m, {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-only", action="store_true",
                    help="recompute only the calibrated line's BMD (and the tables) of the committed "
                         "real_classification.json, from the lines in classification_eval.json")
    a = ap.parse_args()
    cal_coefs = {}
    eval_json = RESULTS / "classification_eval.json"
    if eval_json.exists():
        cal_coefs = json.loads(eval_json.read_text()).get("calibrated_hu", {})
    if a.baseline_only:
        r = json.loads((RESULTS / "real_classification.json").read_text())
        for c in r["cases"].values():
            for row in c["results"].values():
                readings(row, cal_coefs)
        r["calibrated_hu_from"] = f"classification_eval.json of {json.loads(eval_json.read_text())['date']}"
        write(r)
        return
    models = Models()
    cases = {}
    for name, (path, names) in real_cases(REAL_DATA).items():
        t0 = time.perf_counter()
        cases[name] = run_case(models, name, path, names)
        for row in cases[name]["results"].values():
            readings(row, cal_coefs)
        cases[name]["seconds"] = round(time.perf_counter() - t0, 1)
    r = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
         "segmentation_model": models.segmenter.card["version"],
         "classifier_versions": {m: models.classifier(m).card["version"] for m in ("l1l2", "l1")},
         "thresholds": {"pickhardt_specific_hu": PICKHARDT_SPECIFIC_HU, "pickhardt_sensitive_hu": PICKHARDT_SENSITIVE_HU},
         "cases": cases}
    write(r)


def write(r: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "real_classification.json").write_text(json.dumps(r, indent=1) + "\n")
    (RESULTS / "real_classification.md").write_text(markdown(r))
    print(markdown(r))


# What is known of each case beyond its image (README of ../shared/data/real, DICOM header, fracture_eval.md)
CASE_NOTES = {
    "lidc-idri-0001": "chest CT with IV contrast (DICOM ContrastBolusAgent `IV`; the aorta far brighter than the "
                      "portal vein: an arterial-type phase), 120 kV, GE LightSpeed Plus, STANDARD kernel, 2.5 mm "
                      "slices; age and sex blank in the anonymised header. Contrast raises L1's HU: +11.2 ± 19.2 HU "
                      "on average in portal venous scans against unenhanced ones of the same patients (Pickhardt "
                      "et al., Osteoporos Int 2016;27:147-52) - a caveat for the thresholds, not applied here.",
    "totalsegmentator-example": "abdominal CT resampled to 3 mm voxels, unenhanced (aorta about 40 HU), kVp not "
                                "recorded (NIfTI). At 3 mm the cortex and endplates blur into the ROI. The automatic "
                                "segments lie on the right levels but cover only part of each body (see the body "
                                "volumes in the JSON), so their ROI differs from the reference body's.",
    "verse012": "spine CT slab (3 mm sagittal slices), kVp and contrast unknown. L1 has a moderate compression "
                "fracture (fracture_eval.md: grade 2, about two thirds of the height of T12 and L2): compacted "
                "trabeculae raise its HU, so L1's attenuation overstates its density and the L1 thresholds do "
                "not apply to it (opportunistic readings then take a neighbouring level: L2 here).",
}


def markdown(r: dict) -> str:
    lines = ["# Real cases: OsteoScreen's class beside the published HU thresholds", "",
             f"{r['machine']}; {r['date']}. `python -m training.studies.real_classification`. Segmentation "
             f"{r['segmentation_model']}, classifiers l1l2 {r['classifier_versions']['l1l2']}, l1 "
             f"{r['classifier_versions']['l1']}.", "",
             "**These cases carry no BMD, DXA or QCT truth**: the table compares two readings of the same "
             "vertebrae, not either against the truth. Nothing was tuned on them.", "",
             "Pickhardt et al. 2013 (Ann Intern Med; DXA reference, mostly 120 kV): L1 trabecular attenuation "
             "<= 110 HU is highly specific for osteoporosis, <= 160 HU highly sensitive; so <= 110 HU reads "
             "osteoporosis, > 160 HU osteoporosis unlikely, 110-160 HU indeterminate. Agreement: OsteoScreen says "
             "osteoporosis at <= 110 HU, or not osteoporosis at > 160 HU. OsteoScreen's classes are the paper's "
             "QCT classes (normal > 120, osteopenia 80-120, osteoporosis < 80 mg/cm³), a different reference "
             "standard than DXA. ROI HU: OsteoScreen's elliptical trabecular ROI on the central slab of each body.",
             "",
             "Bodies: `automatic` = OsteoScreen's own segments (used only where both levels lie in the right "
             "reference vertebra), `reference` = the reference vertebra labels cut to their bodies at the "
             "spinal canal. Settings as given: kVp from the DICOM header (NIfTI: unknown), contrast phase "
             "unknown. `cal. line`: the calibrated ROI HU baseline (training phantoms) on the same ROI HU, "
             "with the same kVp and phase.", "",
             "| case | bodies | kVp | phase | L1 / L2 ROI HU | model 1 (l1l2): class (probability), BMD | model 2 (l1): class (probability), BMD | cal. line BMD L1+L2 / L1 | Pickhardt (L1 HU) | agreement l1l2 / l1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def cell(row, m):
        x = row.get(m, {})
        if "class" not in x:
            return x.get("error", "-")
        heads = "" if x["bmd_class"] == x["class"] else f" (BMD in the {x['bmd_class']} range)"
        return f"{x['class']} ({100 * x['probabilities'][x['class']]:.0f} %), {x['bmd_mg_cm3']:.0f}{heads}"

    def fmt(v):
        return "-" if v is None else f"{v:.0f}"

    for name, c in r["cases"].items():
        for key, row in c["results"].items():
            source, setting = key.split("; ")
            if setting != "as given":
                continue
            hu = row.get("roi_hu", {})
            lines.append(f"| {name} | {source.split()[0]} | {row['kvp'] or 'unknown'} | {row['contrast'] or 'unknown'} | "
                         f"{fmt(hu.get('L1'))} / {fmt(hu.get('L2'))} | {cell(row, 'l1l2')} | {cell(row, 'l1')} | "
                         f"{fmt(row['calibrated_hu_bmd']['l1l2'])} / {fmt(row['calibrated_hu_bmd']['l1'])} | "
                         f"{row.get('pickhardt', '-')} | {' / '.join(row.get('agreement', {}).values()) or '-'} |")
    lines += ["", "## The scans and the automatic levels", "",
              "| case | grid (mm) | kVp source | aorta / portal vein HU (reference labels) | automatic L1 | automatic L2 | bodies used |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in r["cases"].items():
        a = c["automatic_levels"]

        def lv(x):
            return f"{x['outcome']} (on {x.get('centroid_in')}, {100 * (x.get('fraction_inside') or 0):.0f} % inside)" if x.get("centroid_in") else x["outcome"]
        lines.append(f"| {name} | {'x'.join(f'{s:g}' for s in c['grid']['spacing_mm'])} | {c['kvp_source']} | "
                     f"{fmt(c['aorta_hu'])} / {fmt(c['portal_vein_hu'])} | {lv(a['L1'])} | {lv(a['L2'])} | {c['used']} |")
    lines += ["", "## What is known of the cases", ""]
    lines += [f"- `{name}`: {CASE_NOTES[name]}" for name in r["cases"] if name in CASE_NOTES]
    lines += ["", "## Sensitivity to the scan settings (reference bodies)", "",
              "| case | kVp | phase | model 1: class, BMD | model 2: class, BMD | cal. line BMD L1+L2 / L1 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, c in r["cases"].items():
        for key, row in c["results"].items():
            if key.startswith("reference"):
                lines.append(f"| {name} | {row['kvp'] or 'unknown'} | {row['contrast'] or 'unknown'} | {cell(row, 'l1l2')} | "
                             f"{cell(row, 'l1')} | {fmt(row['calibrated_hu_bmd']['l1l2'])} / {fmt(row['calibrated_hu_bmd']['l1'])} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
