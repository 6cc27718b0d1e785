"""``make demo``: the main job end to end on a CT at hand.

Reads the CT, segments L1/L2 with the bundled model,
classifies with model 1 (L1 + L2) and writes what a user gets: the
segmentation, result.json and the report image. Where the case folder also
holds reference labels, the demo says how well the segments agree with them.
Without bundled models (a fresh checkout before training) the segments come
from the reference labels and there is no prediction.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .atomic import ensure_folder, write_json
from .errors import OsteoScreenError
from .ct_io import read_volume
from .measurements import vertebra_stats
from .model_store import list_models
from .pipeline import RESULT_NAME, SEGMENTATION_NAME, Models, labels_from_file, read_case, run_case, save_segmentation, write_case
from .registry import LABEL_OF
from .result import CaseResult, InputInfo, VertebraResult
from .resample import sample
from .volume import Volume


def models_available() -> bool:
    names = {m["name"] for m in list_models() if m["status"] == "ok"}
    return {"segmentation", "classifier-l1l2"} <= names


def run_demo(ct_path: Path, labels_path: Path | None, mapping: dict[str, int], output_dir: Path,
             overwrite: bool, model: str = "l1l2") -> CaseResult:
    t0 = time.perf_counter()
    for name in (SEGMENTATION_NAME, RESULT_NAME, "report.png"):
        if (output_dir / name).exists() and not overwrite:
            raise OsteoScreenError(f"{output_dir / name}: already exists; pass --overwrite to replace it")
    case = read_case(ct_path)
    ensure_folder(output_dir)  # after the CT is read: a missing case leaves no empty folder
    models = Models()
    timing = {"load": round(time.perf_counter() - t0, 3)}
    labels = model_labels = source = None
    if models_available():
        try:
            out = run_case(models, case, model=None).segmentation
            case.warnings += out.warnings
            timing.update({f"segment_{k}": v for k, v in out.timing_s.items()})
            labels = model_labels = out.labels
            source = models.segmentation_source
            if labels_path is not None and out.level_warnings:
                # A reader would check and correct questioned levels before classifying: the
                # reference labels play that part here (the model's own segments are scored below).
                case.warnings.append("segmentation model: levels questioned (see the warnings above) -> classified "
                                     "from the reference labels")
                labels = None
        except OsteoScreenError as exc:
            if labels_path is None:
                raise
            # The phantom-trained model may not find the levels in a real scan: say so, and
            # go on with the reference segments, as a reader would after correcting them.
            case.warnings.append(f"segmentation model: {exc} -> segments taken from the reference labels")
    elif labels_path is not None:
        case.warnings.append("no bundled models: segments taken from the reference labels, no prediction")
    else:
        raise OsteoScreenError("no bundled models and no reference labels: train the models first (see README)")
    if labels is None:
        labels, source = labels_from_file(labels_path, case.ct, mapping), f"reference labels {labels_path.name}"
    # how the model's own segments agree with the reference (when the model ran)
    scored = model_labels if model_labels is not None else labels
    agreement = reference_agreement(scored, labels_path, mapping) if labels_path is not None else None
    if models_available():
        outcome = run_case(models, case, model, labels, source)
        outcome.result.timing_s = {**timing, **outcome.result.timing_s}
        outcome.result.reference_agreement = agreement
        write_case(case, outcome, output_dir, overwrite)
        result = outcome.result
    else:
        save_segmentation(labels, output_dir / SEGMENTATION_NAME, overwrite)
        result = CaseResult(InputInfo.of(ct_path, case.ct, case.sha256), "reference labels",
                            {n: VertebraResult(v["volume_ml"], v["centroid_mm"]) for n, v in vertebra_stats(labels).items()},
                            warnings=case.warnings, timing_s=timing, segmentation_path=SEGMENTATION_NAME,
                            reference_agreement=agreement)
        write_json(output_dir / RESULT_NAME, result.to_json(), overwrite)
    result.timing_s["total"] = round(time.perf_counter() - t0, 3)
    return result


def reference_agreement(labels: Volume, labels_path: Path, mapping: dict[str, int]) -> dict:
    """Per level: is the segment's centroid inside the reference mask of the same level, and
    what fraction of its voxels is (reference masks may be whole vertebrae)."""
    ref = read_volume(labels_path)
    ref_on_ct = sample(ref, labels.ijk_to_ras, labels.array.shape, order=0, fill=0)
    out = {}
    for name, value in LABEL_OF.items():
        kji = np.argwhere(labels.array == value)
        ref_mask = ref_on_ct == mapping[name]
        if len(kji) == 0 or not ref_mask.any():
            out[name] = {"found": bool(len(kji)), "in_reference": bool(ref_mask.any())}
            continue
        centroid = tuple(np.round(kji.mean(axis=0)).astype(int))
        out[name] = {"found": True, "centroid_in_reference": bool(ref_mask[centroid]),
                     "fraction_inside_reference": round(float(ref_mask[tuple(kji.T)].mean()), 4)}
    return out
