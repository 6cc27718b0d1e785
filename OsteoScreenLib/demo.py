"""``make demo``: the main job end to end on a CT at hand.

Loads the CT into an MRML scene, segments L1/L2 with the bundled model,
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
from .logic import OsteoScreenLogic, write_case_report
from .ct_io import read_volume
from .hashing import sha256_path
from .measurements import vertebra_stats
from .model_store import list_models
from .mrml_convert import volume_from_node
from .registry import LABEL_OF
from .result import RESULT_SCHEMA, input_info
from .resample import sample
from .volume import Volume


def models_available() -> bool:
    names = {m["name"] for m in list_models() if m["status"] == "ok"}
    return {"segmentation", "classifier-l1l2"} <= names


def run_demo(ct_path: Path, labels_path: Path | None, mapping: dict[str, int], output_dir: Path,
             overwrite: bool, model: str = "l1l2") -> dict:
    import slicer

    t0 = time.perf_counter()
    for name in ("segmentation.seg.nrrd", "result.json", "report.png"):
        if (output_dir / name).exists() and not overwrite:
            raise OsteoScreenError(f"{output_dir / name}: already exists; pass --overwrite to replace it")
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct_node = logic.load_ct(ct_path)
    ensure_folder(output_dir)  # after the CT is read: a missing case leaves no empty folder
    warnings: list[str] = []
    timing = {"load": round(time.perf_counter() - t0, 3)}
    seg_node = model_labels = None
    if models_available():
        try:
            seg_node, out = logic.segment(ct_node)
            warnings += out.warnings
            timing.update({f"segment_{k}": v for k, v in out.timing_s.items()})
            model_labels = out.labels
            if labels_path is not None and out.level_warnings:
                # A reader would check and correct questioned levels before classifying: the
                # reference labels play that part here (the model's own segments are scored below).
                warnings.append("segmentation model: levels questioned (see the warnings above) -> classified "
                                "from the reference labels")
                seg_node = None
        except OsteoScreenError as exc:
            if labels_path is None:
                raise
            # The phantom-trained model may not find the levels in a real scan: say so, and
            # go on with the reference segments, as a reader would after correcting them.
            warnings.append(f"segmentation model: {exc} -> segments taken from the reference labels")
    elif labels_path is not None:
        warnings.append("no bundled models: segments taken from the reference labels, no prediction")
    else:
        raise OsteoScreenError("no bundled models and no reference labels: train the models first (see README)")
    if seg_node is None:
        seg_node = logic.load_segmentation(labels_path, ct_node, mapping)
        seg_node.SetAttribute("OsteoScreen.Source", f"reference labels {labels_path.name}")
    logic.save_segmentation(seg_node, output_dir / "segmentation.seg.nrrd", overwrite)
    ct = volume_from_node(ct_node)
    labels = logic.labelmap(seg_node, ct_node)
    # how the model's own segments agree with the reference (when the model ran)
    scored = model_labels if model_labels is not None else labels
    agreement = reference_agreement(scored, labels_path, mapping) if labels_path is not None else None
    if models_available():
        result = logic.classify(ct_node, seg_node, model, warnings, timing)
        result["segmentation"]["path"] = "segmentation.seg.nrrd"
        if agreement is not None:
            result["reference_agreement"] = agreement
        write_case_report(ct, labels, result, output_dir, overwrite)
    else:
        result = {"schema": RESULT_SCHEMA, "input": input_info(ct_path, ct, sha256_path(ct_path)),
                  "segmentation": {"source": "reference labels", "path": "segmentation.seg.nrrd"},
                  "model": None, "prediction": None, "vertebrae": vertebra_stats(labels),
                  "warnings": warnings, "timing_s": timing}
        result["reference_agreement"] = agreement
        write_json(output_dir / "result.json", result, overwrite)
    result["timing_s"]["total"] = round(time.perf_counter() - t0, 3)
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
