"""Screening an archive: DICOM phantom studies of several series, local engine and Ray side by side.

    python -m training.studies.archive_benchmark [--count 40] [--engines local ray] [--workers N]

Builds ``--count`` studies from full-size chest phantoms (seeds 300100+), each with five series
(OsteoScreenLib/phantom/study_tree.py: a scout, the soft-tissue series the rules choose, a lung-kernel
copy, a thick-slice copy, a dose SR), in training/cache/archive_benchmark/ (ignored by git; built
once, so a rerun only screens). Then, per engine, one ``osteoscreen screen TREE`` process over the
whole tree (fresh output folder), timed from start to exit, while the RSS of its process tree (the
driver, and with Ray its raylet, GCS server and workers) is summed every 0.25 s, and so is its CPU
time (user + system: what the arithmetic for a large archive uses, as other jobs barely change it).
Records the series
chosen per study, whether both engines wrote the same results.csv, the load average before and
after each run (other jobs share the machine), and writes training/results/archive_benchmark.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from OsteoScreenLib.phantom import generate_case, write_case
from OsteoScreenLib.phantom.study_tree import write_study
from training.studies.screen_benchmark import RESULTS, command, machine, write_outputs

CACHE = Path(__file__).resolve().parents[1] / "cache" / "archive_benchmark"
STUDIES = 100_000
NODES = (1, 4, 16)
CORES_PER_NODE = 32  # an assumption for the arithmetic, not measured
DEFAULT_COUNT = 40


def build_tree(first_seed: int, count: int) -> tuple[Path, dict[int, dict]]:
    """The tree of ``count`` studies (patient<seed>/study1/s1..s9) and per seed its UIDs and the phantom's truth."""
    tree = CACHE / f"tree-{first_seed}-{count}"
    built = {}
    for n, seed in enumerate(range(first_seed, first_seed + count)):
        marker = CACHE / "built" / f"{tree.name}-{seed}.json"
        study = tree / f"patient{seed}" / "study1"
        if marker.exists() and study.exists():
            built[seed] = json.loads(marker.read_text())
            continue
        other = next((m for m in sorted(CACHE.glob(f"built/tree-{first_seed}-*-{seed}.json"))
                      if (CACHE / m.name.rsplit("-", 1)[0] / f"patient{seed}" / "study1").exists()), None)
        if other is not None:  # built for a tree of another count: hard links, no copy
            shutil.rmtree(study, ignore_errors=True)
            shutil.copytree(CACHE / other.name.rsplit("-", 1)[0] / f"patient{seed}" / "study1", study,
                            copy_function=os.link)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(other.read_text())
            built[seed] = json.loads(marker.read_text())
            continue
        t = time.perf_counter()
        work = CACHE / "work" / f"case{seed}"
        case = write_case(generate_case(seed, "chest"), work, fmt="dicom", overwrite=True)
        shutil.rmtree(study, ignore_errors=True)  # a half-built study of an interrupted run
        uids = write_study(case / "ct", study, f"BENCH-{seed}")
        meta = json.loads((case / "meta.json").read_text())
        built[seed] = {"uids": uids, "qct_class": meta["qct_class"], "qct_bmd": meta["qct_bmd_mg_cm3"]["mean"]}
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(built[seed]) + "\n")
        shutil.rmtree(work)
        print(f"built study {n + 1}/{count} (seed {seed}) in {time.perf_counter() - t:.1f} s", flush=True)
    return tree, built


def scan_headers(tree: Path) -> dict:
    """Header scan and series choice of the whole tree in this process (what `screen` does first)."""
    from OsteoScreenLib.batch import expand_inputs
    from OsteoScreenLib.study import dicom_files_under

    soft = sum(f.stat().st_size for f in tree.glob("*/*/s2/*.dcm"))
    everything = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
    t, c = time.perf_counter(), time.process_time()
    files = dicom_files_under(tree)
    items = expand_inputs([tree])
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    return {"files": len(files), "studies": len(items), "seconds": round(seconds, 2),
            "ms_per_file": round(1000 * seconds / len(files), 3),
            "cpu_s": round(cpu, 2), "cpu_ms_per_file": round(1000 * cpu / len(files), 3),
            "tree_gb": round(everything / 1e9, 2), "chosen_series_mb_per_study": round(soft / 1e6 / len(items)),
            "files_per_study": round(len(files) / len(items)), "items": items}


def _process_tree(root: int) -> dict[int, tuple[str, float, float]]:
    """{pid: (name, RSS in MB, CPU seconds so far)} of ``root`` and all its descendants, from /proc
    (Linux; no psutil needed)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, info = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue  # gone meanwhile
        name, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        cpu = (int(rest[11]) + int(rest[12])) / tick  # utime + stime
        parent[int(entry.name)], info[int(entry.name)] = int(rest[1]), (name, rss / 1024, cpu)
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(frontier)
    return {pid: info[pid] for pid in tree if pid in info}


def run_measured(cmd: list[str], interval_s: float = 0.25) -> dict:
    """Run ``cmd``; wall time, the peak summed RSS of its process tree, and when each case finished
    (from the progress lines `screen` writes to stderr)."""
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    stdout_file = CACHE / "stdout.txt"
    stdout_file.parent.mkdir(parents=True, exist_ok=True)
    with open(stdout_file, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    finished: list[float] = []
    lines: list[str] = []

    def read_progress() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip())
            if line.startswith("[") and "/" in line:
                finished.append(time.perf_counter() - t0)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    peak = {"total_mb": 0.0, "processes": 0, "largest_process_mb": 0.0, "by_name_mb": {}}
    cpu: dict[int, float] = {}  # last CPU seconds seen per process of the tree
    while proc.poll() is None:
        sizes = _process_tree(proc.pid)
        cpu.update({pid: c for pid, (_, _, c) in sizes.items()})
        total = sum(mb for _, mb, _ in sizes.values())
        if total > peak["total_mb"]:
            by_name: dict[str, float] = {}
            for name, mb, _ in sizes.values():
                by_name[name] = by_name.get(name, 0.0) + mb
            peak = {"total_mb": total, "processes": len(sizes),
                    "largest_process_mb": max(mb for _, mb, _ in sizes.values()),
                    "by_name_mb": {k: round(v) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])}}
        time.sleep(interval_s)
    wall = time.perf_counter() - t0
    reader.join(timeout=5)
    stdout = stdout_file.read_text()
    return {"exit_status": proc.returncode, "wall_s": wall, "cpu_s": sum(cpu.values()), "finished_s": finished, "stdout": stdout.strip(),
            "stderr_tail": lines[-5:], "peak": peak, "load_before": load_before, "load_after": os.getloadavg()}


def screen(engine: str, tree: Path, model: str, workers: int | None) -> tuple[dict, list[dict]]:
    out = CACHE / f"out-{engine}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "OsteoScreenLib.cli", "screen", str(tree), "--output-dir", str(out), "--model", model]
    if engine == "ray":
        cmd += ["--engine", "ray"] + (["--workers", str(workers)] if workers else [])
    print(f"{engine}: {' '.join(cmd[3:])}", flush=True)
    run = run_measured(cmd)
    rows = list(csv.DictReader(open(out / "results.csv"))) if (out / "results.csv").exists() else []
    return run, rows


def summarise(engine: str, run: dict, rows: list[dict], count: int) -> dict:
    ok = sum(r["status"] == "ok" for r in rows)
    fin = run["finished_s"]
    steady = (len(fin) - 1) / (fin[-1] - fin[0]) if len(fin) > 1 and fin[-1] > fin[0] else None
    return {
        "engine": engine, "exit_status": run["exit_status"], "ok": ok, "failed": count - ok,
        "wall_s": round(run["wall_s"], 1), "scans_per_min": round(60 * count / run["wall_s"], 2),
        "per_scan_s": round(run["wall_s"] / count, 2),
        "cpu_s": round(run["cpu_s"], 1), "cpu_s_per_scan": round(run["cpu_s"] / count, 2),
        "first_result_s": round(fin[0], 1) if fin else None,
        "steady_per_scan_s": round(1 / steady, 2) if steady else None,
        "peak_tree_rss_mb": round(run["peak"]["total_mb"]), "peak_processes": run["peak"]["processes"],
        "peak_largest_process_mb": round(run["peak"]["largest_process_mb"]),
        "peak_rss_by_process_name_mb": run["peak"]["by_name_mb"],
        "load_avg_before": [round(x, 2) for x in run["load_before"]],
        "load_avg_after": [round(x, 2) for x in run["load_after"]],
        "summary_line": run["stdout"].splitlines()[-1] if run["stdout"] else "", "stderr_tail": run["stderr_tail"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=DEFAULT_COUNT)
    p.add_argument("--first-seed", type=int, default=300100)
    p.add_argument("--model", default="l1l2")
    p.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local", "ray"])
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: screen's, one per CPU)")
    p.add_argument("--build-only", action="store_true", help="build (or complete) the cached tree, measure nothing")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the committed .json")
    a = p.parse_args()
    if a.markdown_only:
        result = json.loads((RESULTS / "archive_benchmark.json").read_text())
        write_outputs("archive_benchmark", result, markdown(result))
        return
    t = time.perf_counter()
    tree, built = build_tree(a.first_seed, a.count)
    build_s = time.perf_counter() - t
    if a.build_only:
        return
    scan = scan_headers(tree)
    expected = {f"patient{s}/study1": b["uids"]["soft"] for s, b in built.items()}
    chosen_in_scan = {str(i.selection.folder().relative_to(tree)): i.selection.chosen.series_uid
                      for i in scan.pop("items")}
    load_start = os.getloadavg()
    runs, tables = {}, {}
    for engine in a.engines:
        run, rows = screen(engine, tree, a.model, a.workers)
        runs[engine], tables[engine] = summarise(engine, run, rows, a.count), rows
        print(json.dumps({k: v for k, v in runs[engine].items() if k != "stderr_tail"}), flush=True)
        if engine != a.engines[-1]:  # what is measured so far, in case a later engine does not finish
            report(a, built, build_s, scan, chosen_in_scan, expected, load_start, runs, tables)
    report(a, built, build_s, scan, chosen_in_scan, expected, load_start, runs, tables)


def report(a, built, build_s, scan, chosen_in_scan, expected, load_start, runs, tables) -> None:
    """Chosen series, agreement and accuracy from the results tables; the .json and .md."""
    load_end = os.getloadavg()
    by_uid = {b["uids"]["study"]: b for b in built.values()}
    for engine, rows in tables.items():
        done = [r for r in rows if r["status"] == "ok"]
        runs[engine]["chosen_soft_tissue_series"] = sum(r["series_uid"] == by_uid[r["study_uid"]]["uids"]["soft"]
                                                        for r in rows)
        runs[engine]["end_to_end_accuracy"] = (round(sum(r["class"] == by_uid[r["study_uid"]]["qct_class"]
                                                         for r in done) / len(done), 3) if done else None)
    agreement = None
    if len(tables) == 2:
        a_rows, b_rows = tables.values()
        same_rows = sum(x == y for x, y in zip(a_rows, b_rows))
        same_class_bmd = sum(x["class"] == y["class"] and x["bmd_mg_cm3"] == y["bmd_mg_cm3"]
                             for x, y in zip(a_rows, b_rows))
        same_series = sum(x["series_uid"] == y["series_uid"] for x, y in zip(a_rows, b_rows))
        agreement = {"rows": len(a_rows), "identical_rows": same_rows, "same_class_and_bmd": same_class_bmd,
                     "same_series": same_series,
                     "differing_cases": [x["case"] for x, y in zip(a_rows, b_rows) if x != y][:10]}
    result = {
        "machine": machine(), "cores": os.cpu_count(), "nice": os.nice(0), "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command(),
        "studies": a.count, "first_seed": a.first_seed, "model": a.model,
        "series_per_study": 5, "build_s_this_run": round(build_s, 1),
        "header_scan": scan, "chosen_matches_soft_tissue_series": sum(chosen_in_scan.get(k) == v
                                                                      for k, v in expected.items()),
        "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in load_end],
        "engines": runs, "agreement": agreement,
        "assumptions": {"studies": STUDIES, "cores_per_node": CORES_PER_NODE, "nodes": list(NODES)},
    }
    write_outputs("archive_benchmark", result, markdown(result))


def _hours(core_s_per_scan: float, nodes: int) -> float:
    return STUDIES * core_s_per_scan / (nodes * CORES_PER_NODE) / 3600


def markdown(r: dict) -> list[str]:
    cores = r["cores"]
    e = r["engines"]
    rows = [("wall time, `screen` start to exit", lambda x: f"{x['wall_s']} s"),
            ("scans per minute", lambda x: f"{x['scans_per_min']}"),
            ("seconds per scan, amortised (wall / studies)", lambda x: f"{x['per_scan_s']} s"),
            ("CPU time of the process tree (user + system, sampled)", lambda x: f"{x['cpu_s']} s"),
            ("CPU seconds per scan", lambda x: f"{x['cpu_s_per_scan']} s"),
            ("first study done after", lambda x: f"{x['first_result_s']} s"),
            ("seconds per scan between first and last result", lambda x: f"{x['steady_per_scan_s']} s"),
            ("peak memory, process tree (summed RSS)", lambda x: f"{x['peak_tree_rss_mb']} MB in "
                                                                  f"{x['peak_processes']} process(es)"),
            ("largest single process at that peak", lambda x: f"{x['peak_largest_process_mb']} MB"),
            ("studies ok / failed", lambda x: f"{x['ok']} / {x['failed']}"),
            ("soft-tissue series chosen", lambda x: f"{x['chosen_soft_tissue_series']} of {r['studies']}"),
            ("class accuracy vs the phantoms' QCT class", lambda x: f"{x['end_to_end_accuracy']}"),
            ("load average (1 min) before / after", lambda x: f"{x['load_avg_before'][0]} / {x['load_avg_after'][0]}")]
    names = list(e)
    md = ["# Screening an archive: local engine and Ray", "",
          f"{r['machine']}; {r['date']}. Command: `{r['command']}`.", "",
          f"{r['studies']} DICOM studies built from full-size chest phantoms (512x512, seeds {r['first_seed']}+), "
          "five series each: a scout (2 slices), the soft-tissue series (B30f), a lung-kernel copy (B60f), a "
          "thick-slice copy (B30f) and a dose SR (`OsteoScreenLib/phantom/study_tree.py`); "
          f"{r['header_scan']['files']} files in one tree. One `osteoscreen screen TREE --model {r['model']}` "
          "process per engine (fresh output folder): header scan, series choice, segmentation, classification, "
          "report image, SEG and SR per study. Ray: local Ray started by `screen`, one worker per CPU "
          f"({cores} here), each loading the models once. Memory: the RSS of every process in the command's tree "
          "(with Ray: driver, raylet, GCS server, workers), summed every 0.25 s; shared pages count once per "
          "process, so this is an upper bound.", "",
          "| measure | " + " | ".join(f"`--engine {n}`" for n in names) + " |",
          "| --- | " + " | ".join("---" for _ in names) + " |"]
    md += [f"| {label} | " + " | ".join(f(e[n]) for n in names) + " |" for label, f in rows]
    ag = r["agreement"]
    md += ["", f"Header scan and series choice alone (in the benchmark's process, before the runs): "
           f"{r['header_scan']['files']} files, {r['header_scan']['studies']} studies in "
           f"{r['header_scan']['seconds']} s wall, {r['header_scan']['cpu_s']} s CPU ({r['header_scan']['cpu_ms_per_file']} "
           "ms CPU a file, page cache warm); "
           f"the soft-tissue series was chosen in {r['chosen_matches_soft_tissue_series']} of {r['studies']} studies."]
    if ag:
        md += ["", f"Agreement: {ag['identical_rows']} of {ag['rows']} rows of results.csv identical between the "
               f"engines (every column), class and BMD identical in {ag['same_class_and_bmd']}, the same series "
               f"in {ag['same_series']}."
               + (f" Differing: {', '.join(ag['differing_cases'])}." if ag["differing_cases"] else "")]
    busy = max(r["load_avg_start"][0], r["load_avg_end"][0]) > cores + 1  # other jobs held the cores
    md += ["", f"Load average (1, 5, 15 min) at the start {r['load_avg_start']}, at the end {r['load_avg_end']}; "
           f"the benchmark ran at nice {r.get('nice', 0)}. "
           + ("The machine was shared with other jobs, so these figures are a floor on what an idle machine of this "
              "kind does, and the two engines did not run under the same load; Ray's shorter wall time comes from its "
              "worker processes getting a larger share of the contended CPU than the local engine's one process."
              if busy else
              "No other job held the cores (the load is the benchmark's own): Ray's shorter wall time comes from its "
              f"{cores} workers running {cores} cases at once, where the local engine runs one case at a time.")]
    if r["studies"] < DEFAULT_COUNT:
        md += ["", f"Only {r['studies']} studies, not {DEFAULT_COUNT}: with other jobs holding the cores, the "
               f"benchmark at nice 19 got a few per cent of a core, and a run of {DEFAULT_COUNT} studies per engine "
               "could not finish in the time there was. Its studies build once (about 10 s each) into "
               "training/cache/archive_benchmark/; "
               f"`python -m training.studies.archive_benchmark --count {DEFAULT_COUNT}` measures it on a quieter "
               "machine."]
    md += ["", f"## An archive of {STUDIES:,} studies", "",
           ("On this shared machine the wall times above say more about the other jobs than about `screen`, so the "
            if busy else "So that it carries to machines of other sizes, the ")
           + "arithmetic uses the CPU time each run took (its whole process tree: with Ray the driver, Ray's own "
           "processes and the workers), which the other jobs do not change much: a study costs that many seconds "
           "of a core when it has the core to itself.", ""]
    if "local" in e:
        x = e["local"]
        quiet = json.loads((RESULTS / "screen_benchmark_dicom.json").read_text())
        md.append(f"- Local engine (one case at a time in one process): {x['cpu_s_per_scan']} CPU seconds a study; "
                  f"{STUDIES:,} studies are {STUDIES * x['cpu_s_per_scan'] / 3600:,.0f} core-hours, but on one "
                  f"machine only: at the {quiet['per_scan_s']} s a scan that screen_benchmark_dicom.md measured on "
                  f"this machine on a quieter day ({quiet['date']}), {STUDIES:,} studies take "
                  f"{STUDIES * quiet['per_scan_s'] / 3600:.0f} h ({STUDIES * quiet['per_scan_s'] / 86400:.1f} "
                  "days); more machines need Ray.")
    if "ray" in e:
        x = e["ray"]
        cost = x["cpu_s_per_scan"]
        worker_mb = x["peak_rss_by_process_name_mb"].get("ray::_RayWorker", 0) / cores
        md += [f"- Ray: {cost} CPU seconds a study (Ray's start, its own processes and the model loading of "
               f"{cores} workers included, spread over {r['studies']} studies); {STUDIES:,} studies are "
               f"{STUDIES * cost / 3600:,.0f} core-hours. On N nodes of C = {CORES_PER_NODE} cores (an assumption), "
               f"one worker per core, each node needing about {worker_mb * CORES_PER_NODE / 1024:.0f} GB for its "
               f"workers ({worker_mb:.0f} MB a worker at the peak here):", "",
               "| nodes | workers | hours |", "| --- | --- | --- |"]
        md += [f"| {k} | {k * CORES_PER_NODE} | {_hours(cost, k):.1f} |" for k in NODES]
    h = r["header_scan"]
    read_tb = STUDIES * h["chosen_series_mb_per_study"] / 1e6
    scan_h = STUDIES * h["files_per_study"] * h["cpu_ms_per_file"] / 1000 / 3600
    quiet = json.loads((RESULTS / "screen_benchmark_dicom.json").read_text())
    md += ["", "Measured: the CPU time and memory of each run on this machine and the header scan's CPU time a "
           "file. Assumed: that a study costs the same CPU seconds with one worker per core on nodes of "
           f"{CORES_PER_NODE} cores, on cores as fast as these. CPU time under contention reads higher than on an "
           "idle machine (shared caches, and ONNX Runtime's threads spin while they wait for a core): the quieter "
           f"run of screen_benchmark_dicom.md bounds a scan at {quiet['per_scan_s']} s x {cores} cores = "
           f"{quiet['per_scan_s'] * cores:.1f} core-seconds, so the hours above are an upper estimate. Assumed too: "
           "that Ray's fixed cost stays "
           "small against many studies, and that the shared file system delivers the chosen series and the "
           f"headers of every file as fast as the local disk here: {STUDIES:,} studies with "
           f"{h['chosen_series_mb_per_study']} MB of chosen series each are {read_tb:.0f} TB to read, "
           f"{read_tb * 1e3 / 3600:.1f} h at 1 GB/s in all, so on many nodes storage rather than CPU may set the "
           "pace. Not measured: Ray across nodes (one machine only); the header scan of a real export, which runs "
           f"in the driver, on one core, before any case starts: at {h['cpu_ms_per_file']} ms CPU a file and "
           f"{h['files_per_study']} files a study (real studies often hold more), {STUDIES:,} studies take "
           f"{scan_h:.1f} h of one core before the first case starts (splitting the archive into manifests per "
           "batch keeps each scan short); and real scans, which are larger and vary more than phantoms.", ""]
    return md


if __name__ == "__main__":
    main()
