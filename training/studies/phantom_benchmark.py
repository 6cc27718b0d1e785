"""Time the phantom generator on one core and report class balance.

Run: OMP_NUM_THREADS=1 python training/studies/phantom_benchmark.py [--seeds 5]
Writes training/results/phantom_benchmark.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from OsteoScreenLib import registry  # noqa: E402
from OsteoScreenLib.phantom import GENERATOR_VERSION, generate_case, render_case, sample_parameters  # noqa: E402

RESULTS = ROOT / "training" / "results"
LIMIT_S = {"chest": 10.0, "chest_1.25mm": 10.0, "training": 1.0, "chest-box": None, "spine": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--balance-seeds", type=int, default=1000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    rows = []
    for preset in ("chest", "chest_1.25mm", "training", "chest-box", "spine"):
        times, shapes = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            if preset == "chest_1.25mm":  # the typical ~300-slice chest CT: 1.25 mm slices
                params = sample_parameters(seed, "chest")
                params["scanner"]["slice_thickness_mm"] = params["scanner"]["slice_spacing_mm"] = 1.25
                t0 = time.perf_counter()
                case = render_case(params)
            else:
                case = generate_case(seed, preset)
            times.append(time.perf_counter() - t0)
            shapes.append(list(case.ct.array.shape))
        rows.append({"preset": preset, "median_s": float(np.median(times)), "max_s": float(np.max(times)),
                     "times_s": [round(t, 3) for t in times], "shapes_kji": shapes,
                     "limit_s": LIMIT_S[preset]})
        print(preset, rows[-1]["median_s"], shapes, flush=True)
    classes = []
    for seed in range(args.balance_seeds):
        b = sample_parameters(seed, "training")["subject"]["bmd_mg_cm3"]
        classes.append(registry.qct_class(0.5 * (b["L1"] + b["L2"])))
    balance = {c: classes.count(c) / len(classes) for c in registry.CLASSES}
    out = {"generator_version": GENERATOR_VERSION, "cpu": cpu_model(), "logical_cores": os.cpu_count(),
           "threads": 1, "python": platform.python_version(), "numpy": np.__version__, "seeds": args.seeds,
           "presets": rows, "class_balance": balance, "class_balance_seeds": args.balance_seeds}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phantom_benchmark.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Phantom generator benchmark",
        "",
        f"Generator {GENERATOR_VERSION}; {out['cpu']}, {out['logical_cores']} logical cores (run pinned to 1 core, "
        f"1 thread); Python {out['python']}, numpy {out['numpy']}. Time of `generate_case` (rendering in memory, "
        f"no file writing), seeds 0-{args.seeds - 1}.",
        "",
        "| preset | median s | max s | grids (k, j, i) | limit |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        grids = ", ".join("x".join(map(str, s)) for s in r["shapes_kji"])
        limit = "-" if r["limit_s"] is None else f"<= {r['limit_s']:g} s"
        lines.append(f"| {r['preset']} | {r['median_s']:.2f} | {r['max_s']:.2f} | {grids} | {limit} |")
    lines += ["", "`chest` draws its slice thickness (0.625-5 mm, so 40-600 slices); `chest_1.25mm` fixes 1.25 mm "
              "slices, the typical full-size chest CT of about 300 slices. Thick slices cost more per slice "
              "(each is the mean of thin sub-slices), so time per slice is not comparable across thicknesses.",
              "", f"QCT class balance over {args.balance_seeds} sampled subjects (mean of L1 and L2 BMD): "
              + ", ".join(f"{c} {100 * v:.1f} %" for c, v in balance.items()), ""]
    (RESULTS / "phantom_benchmark.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
