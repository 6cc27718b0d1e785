"""The result of one case, as written to result.json (schema ``osteoscreen.result/1``)."""

from __future__ import annotations

import platform

from . import __version__
from .classifier import Classification
from .measurements import vertebra_stats
from .volume import Volume

RESULT_SCHEMA = "osteoscreen.result/1"


def build_result(
    classification: Classification,
    labels: Volume,
    input_info: dict,
    segmentation_source: str,
    warnings: list[str] | None = None,
    timing_s: dict | None = None,
) -> dict:
    stats = vertebra_stats(labels)
    vertebrae = {}
    for name, s in stats.items():
        f = classification.features.get(name)
        vertebrae[name] = {
            "volume_ml": s["volume_ml"],
            "centroid_mm": s["centroid_mm"],
            "trabecular_roi_hu": round(f.roi_hu, 1) if f else None,
            "roi_area_mm2": round(f.roi_area_mm2, 1) if f else None,
        }
    return {
        "schema": RESULT_SCHEMA,
        "osteoscreen_version": __version__,
        "input": input_info,
        "segmentation": {"source": segmentation_source},
        "model": {"name": classification.model, "version": classification.model_version,
                  "sha256": classification.model_sha256},
        "prediction": {
            "class": classification.predicted_class,
            "probabilities": classification.probabilities,
            "bmd_mg_cm3": classification.bmd_mg_cm3,
        },
        "vertebrae": vertebrae,
        "warnings": list(warnings or []) + classification.warnings,
        "timing_s": timing_s or {},
        "machine": platform.platform(),
    }


def input_info(path, ct: Volume, sha256: str | None, kvp: int | None = None, kvp_source: str = "unknown",
               contrast: str | None = None) -> dict:
    return {
        "path": str(path) if path is not None else None,
        "sha256": sha256,
        "shape": list(ct.shape_ijk),
        "spacing_mm": [round(float(s), 4) for s in ct.spacing_mm],
        "tube_voltage_kvp": kvp,
        "tube_voltage_source": kvp_source,
        "contrast_phase": contrast,  # as the reader gave it; None: unknown
    }
