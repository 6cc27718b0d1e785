"""Batch speed: `osteoscreen screen` on 20 full-size chest phantoms, amortised per scan.

    python -m training.studies.screen_benchmark [--count 20] [--format nifti|dicom]

Phantoms are written first (not timed); then one `osteoscreen screen` process
segments, classifies and reports all of them. Writes
training/results/screen_benchmark.{md,json} (NIfTI: no tube voltage in the file) or
screen_benchmark_dicom.{md,json} (DICOM series: the header gives the kVp).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from OsteoScreenLib.phantom import generate_case, write_case

RESULTS = Path(__file__).resolve().parents[1] / "results"


def machine() -> str:
    """The machine in one line, as the benchmarks record it."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"


def command() -> str:
    """How this run was started, as ``python -m module args`` (recorded with the figures)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return " ".join(["python -m", spec.name] if spec else ["python", sys.argv[0]]) + " " + shlex.join(sys.argv[1:])


def write_outputs(name: str, result: dict, md: list[str]) -> None:
    """training/results/NAME.json and NAME.md (printed too)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=300100)
    p.add_argument("--model", default="l1l2")
    p.add_argument("--format", choices=("nifti", "dicom"), default="nifti")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = []
        for seed in range(a.first_seed, a.first_seed + a.count):
            folder = write_case(generate_case(seed, "chest"), Path(tmp) / "in" / f"case{seed}", fmt=a.format)
            inputs.append(str(folder / ("ct.nii.gz" if a.format == "nifti" else "ct")))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "OsteoScreenLib.cli", "screen", *inputs, "--output-dir",
                               str(Path(tmp) / "out"), "--model", a.model], capture_output=True, text=True)
        total = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows = list(csv.DictReader(open(Path(tmp) / "out" / "results.csv")))
        truth = {f"case{s}_ct": json.loads((Path(tmp) / "in" / f"case{s}" / "meta.json").read_text())
                 for s in range(a.first_seed, a.first_seed + a.count)}
    ok = sum(r["status"] == "ok" for r in rows)
    # end to end (automatic segmentation, then the classifier) against the phantoms' QCT reading
    done = [r for r in rows if r["status"] == "ok"]
    correct = sum(r["class"] == truth[r["case"]]["qct_class"] for r in done)
    errors = [abs(float(r["bmd_mg_cm3"]) - truth[r["case"]]["qct_bmd_mg_cm3"]["mean"]) for r in done]
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "scans": a.count, "model": a.model, "format": a.format, "ok": ok,
        "failed": a.count - ok, "exit_status": proc.returncode, "total_s": round(total, 1),
        "per_scan_s": round(total / a.count, 2), "peak_rss_mb": round(peak_mb, 1), "goal_per_scan_s": 3.0,
        "failures": [r["error"] for r in rows if r["status"] != "ok"],
        "end_to_end_accuracy": round(correct / len(done), 3) if done else None,
        "end_to_end_bmd_mae_mg_cm3": round(sum(errors) / len(errors), 1) if errors else None,
    }
    name = "screen_benchmark" + ("" if a.format == "nifti" else f"_{a.format}")
    md = ["# Batch screening speed", "", f"{result['machine']}; {result['date']}.", "",
          f"`osteoscreen screen` on {a.count} full-size chest phantoms (512x512; seeds {a.first_seed}+) written as "
          f"{'NIfTI (no tube voltage in the file)' if a.format == 'nifti' else 'DICOM series (the header gives the kVp)'}, "
          f"model {a.model}, one process: segmentation, classification, report image and results.csv per scan.", "",
          "| measure | value | goal |", "| --- | --- | --- |",
          f"| total | {result['total_s']} s | - |",
          f"| per scan, amortised | {result['per_scan_s']} s | <= 3 s |",
          f"| peak memory | {result['peak_rss_mb']:.0f} MB | - |",
          f"| scans ok / failed | {ok} / {a.count - ok} | - |", "",
          f"End to end on these scans (automatic segmentation, then model {a.model}; truth: the phantoms' QCT readings): "
          f"class accuracy {result['end_to_end_accuracy']}, BMD mean absolute error "
          f"{result['end_to_end_bmd_mae_mg_cm3']} mg/cm3 (a small sample: the classifier's own evaluation on "
          "418 test phantoms is in classification_eval.md).", ""]
    write_outputs(name, result, md)


if __name__ == "__main__":
    main()
