"""Speed and memory of segmentation on a full-size chest phantom (512x512, ~300 slices).

    python -m training.studies.segmentation_benchmark [--repeats 5]

Measures, on this machine: (1) the coarse-to-fine segmentation after the model
is loaded (median of repeats); (2) the whole `osteoscreen segment` process
(start-up, reading, model loading, inference, writing) and its peak memory;
(3) beside it, a plain sliding-window run of the same fine network over the
whole CT resampled to its 1 mm grid, as a baseline, with the ratio.
Writes training/results/segmentation_benchmark.{md,json}, with the figures of the run it replaces
beside the new ones (compare them only when both ran on the same, idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from OsteoScreenLib.ct_io import checked_ct
from OsteoScreenLib.phantom import render_case, sample_parameters, write_case
from OsteoScreenLib.resample import axis_aligned_grid, bounds_ras, sample
from OsteoScreenLib.segmenter import L1L2Segmenter, normalise_hu, pad_to_multiple

RESULTS = Path(__file__).resolve().parents[1] / "results"


def full_size_case(seed: int):
    """A chest phantom with 1.25 mm slices: about 300 slices of 512x512."""
    params = sample_parameters(seed, "chest")
    params["scanner"]["slice_thickness_mm"] = 1.25
    params["scanner"]["slice_spacing_mm"] = 1.25
    return render_case(params)


def sliding_window_baseline(seg: L1L2Segmenter, ct) -> float:
    """The fine network over the whole CT at 1 mm, window by window (no coarse stage)."""
    cfg = seg.fine_cfg
    lo, hi = bounds_ras(ct)
    grid, shape = axis_aligned_grid(lo, hi, cfg["spacing_mm"])
    t = time.perf_counter()
    x = normalise_hu(sample(ct, grid, shape, order=1, fill=-1000.0), cfg["hu_window"])
    window = [int(s / cfg["spacing_mm"]) for s in cfg["size_mm"][::-1]]  # k, j, i
    x, _ = pad_to_multiple(x, 16, -1.0)
    hints = np.zeros((2, *window), np.float32) - 1.0
    for k in range(0, x.shape[0], window[0]):
        for j in range(0, x.shape[1], window[1]):
            for i in range(0, x.shape[2], window[2]):
                block = x[k : k + window[0], j : j + window[1], i : i + window[2]]
                pad = [(0, w - s) for w, s in zip(window, block.shape)]
                block = np.pad(block, pad, constant_values=-1.0)
                seg.fine_net.run(np.concatenate([block[None], hints], 0)[None])
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=300001)
    a = p.parse_args()
    case = full_size_case(a.seed)
    seg = L1L2Segmenter()
    ct = checked_ct(case.ct, "phantom")[0]  # as read_ct leaves it: checked once, where it enters
    seg.segment(ct)  # warm-up
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        seg.segment(ct)
        times.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_case(case, Path(tmp) / "case", fmt="nifti")
        cmd = [sys.executable, "-m", "OsteoScreenLib.cli", "segment", str(folder / "ct.nii.gz"),
               "--output", str(Path(tmp) / "out.seg.nrrd")]
        process_times = []
        for n in range(3):
            (Path(tmp) / "out.seg.nrrd").unlink(missing_ok=True)
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            process_times.append(time.perf_counter() - t)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    baseline = sliding_window_baseline(seg, case.ct)
    k, j, i = case.ct.array.shape
    out_json = RESULTS / "segmentation_benchmark.json"
    before = json.loads(out_json.read_text()) if out_json.exists() else {}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "ct_grid": f"{i}x{j}x{k}", "spacing_mm": [round(float(s), 3) for s in case.ct.spacing_mm],
        "segment_median_s": round(float(np.median(times)), 3), "segment_runs_s": [round(t, 3) for t in times],
        "process_median_s": round(float(np.median(process_times)), 3),
        "process_runs_s": [round(t, 3) for t in process_times],
        "process_peak_rss_mb": round(peak_mb, 1),
        "sliding_window_1mm_s": round(baseline, 3),
        "speedup_vs_sliding_window": round(baseline / float(np.median(times)), 1),
        "goals": {"segment_median_s": 3.0, "process_s": 3.0, "peak_memory_mb": 2560},
        "previous_run": {key: before.get(key) for key in ("date", "machine", "segment_median_s", "process_median_s",
                                                           "process_peak_rss_mb", "sliding_window_1mm_s")} if before else None,
    }
    prev = result["previous_run"] or {}

    def was(key, fmt="{} s"):
        return "-" if prev.get(key) is None else fmt.format(prev[key])

    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    md = ["# Segmentation speed and memory", "", f"{result['machine']}; {result['date']}.", "",
          f"Full-size chest phantom {result['ct_grid']} voxels, spacing {result['spacing_mm']} mm.", "",
          f"Previous run: {prev.get('date', '-')}, {prev.get('machine', '-')}.", "",
          "| measure | value | previous run | goal |", "| --- | --- | --- | --- |",
          f"| segmentation after model load, median of {a.repeats} | {result['segment_median_s']} s "
          f"| {was('segment_median_s')} | <= 3 s |",
          f"| whole `osteoscreen segment` process, median of 3 | {result['process_median_s']} s "
          f"| {was('process_median_s')} | <= 3 s |",
          f"| peak memory of that process | {result['process_peak_rss_mb']:.0f} MB | {was('process_peak_rss_mb', '{:.0f} MB')} "
          "| <= 2560 MB |",
          f"| plain sliding window of the fine network at 1 mm over the whole CT | {result['sliding_window_1mm_s']} s "
          f"| {was('sliding_window_1mm_s')} | - |",
          f"| coarse-to-fine speed-up over the sliding window | {result['speedup_vs_sliding_window']}x | - | - |", "",
          "The sliding window is the same work in every run: how much it moved between runs is how much this "
          "machine's speed moved, apart from any change in OsteoScreen.", ""]
    (RESULTS / "segmentation_benchmark.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
