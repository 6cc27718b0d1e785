"""``make demo``: the main job end to end on a CT at hand.

Until the bundled models exist, the L1/L2 segmentation comes from the case's
reference labels; the outputs are those later steps extend (segmentation,
result.json).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from . import __version__
from .atomic import write_json
from .hashing import sha256_path
from .logic import OsteoScreenLogic

RESULT_SCHEMA = "osteoscreen.result/1"


def run_demo(ct_path: Path, labels_path: Path, mapping: dict[str, int], output_dir: Path, overwrite: bool) -> dict:
    import slicer

    t0 = time.perf_counter()
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct_node = logic.load_ct(ct_path)
    t_load = time.perf_counter()
    seg_node = logic.load_segmentation(labels_path, ct_node, mapping)
    stats = logic.vertebra_stats(seg_node, ct_node)
    output_dir.mkdir(parents=True, exist_ok=True)
    seg_path = logic.save_segmentation(seg_node, output_dir / "segmentation.seg.nrrd", overwrite)
    ct = logic.labelmap(seg_node, ct_node)
    result = {
        "schema": RESULT_SCHEMA,
        "osteoscreen_version": __version__,
        "input": {
            "path": str(ct_path),
            "sha256": sha256_path(ct_path),
            "shape": list(ct.shape_ijk),
            "spacing_mm": [round(float(s), 4) for s in ct.spacing_mm],
        },
        "segmentation": {"source": f"reference labels {labels_path.name}", "path": seg_path.name},
        "model": None,
        "prediction": None,
        "vertebrae": stats,
        "warnings": ["no classifier bundled yet: segmentation from reference labels, no prediction"],
        "timing_s": {"load": round(t_load - t0, 3), "total": round(time.perf_counter() - t0, 3)},
        "machine": platform.platform(),
    }
    write_json(output_dir / "result.json", result, overwrite)
    return result
