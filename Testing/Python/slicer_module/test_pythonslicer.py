"""The worker and the command line as Slicer runs them: under ``PythonSlicer``.

``Testing/PythonSlicer/launcher.py`` behaves like Slicer's launcher: it starts the
interpreter as a child process, with a ``slicer`` package that holds only
Slicer's base kits (no ``vtkSlicerSegmentationsModuleLogic``), all of them
slicer-core's real classes. The module's job runner starts the worker through it,
as the panel does.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from OsteoScreenLib.jobs import WorkerProcess
from OsteoScreenLib.registry import CLASSES

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "Testing" / "PythonSlicer" / "launcher.py"
PYTHON_SLICER = [sys.executable, str(LAUNCHER)]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def python_slicer(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(PYTHON_SLICER + list(args), capture_output=True, text=True, cwd=REPO, timeout=600, **kwargs)


def run_job(task, inputs, tmp_path, timeout_s=600) -> WorkerProcess:
    work = tmp_path / f"job-{task}"
    work.mkdir()
    job = WorkerProcess(task, inputs, workDir=str(work), python=PYTHON_SLICER)
    job.wait(timeoutS=timeout_s)
    assert job.error is None and not job.cancelled, "\n".join(job.log + [str(job.error)])
    return job


@pytest.fixture(scope="module")
def a_small_phantom(tmp_path_factory):
    """A chest phantom cut to a box around L1-L2 (the chest grid's voxels, a small file)."""
    out = tmp_path_factory.mktemp("phantom")
    done = python_slicer("-m", "OsteoScreenLib.cli", "phantom", str(out), "--seed", "300000", "--preset", "chest-box")
    assert done.returncode == 0, done.stderr
    return out / "phantom-300000"


def test_the_launcher_gives_slicer_only_the_base_kits_in_a_child_process():
    code = ("import os, slicer; print(json.dumps([os.getppid(), hasattr(slicer, 'vtkMRMLScene'), "
            "hasattr(slicer, 'vtkSegment'), hasattr(slicer, 'vtkSlicerSegmentationsModuleLogic')]))")
    launcher = subprocess.Popen(PYTHON_SLICER + ["-c", "import json; " + code], stdout=subprocess.PIPE, text=True)
    out, _ = launcher.communicate(timeout=120)
    parent, mrml, segmentation_core, module_logic = json.loads(out)
    assert parent == launcher.pid  # the interpreter is the launcher's child
    assert mrml and segmentation_core and not module_logic


def test_killing_only_the_launcher_leaves_its_child_running():
    """Why Cancel must end the tree: the launcher's death does not reach the interpreter."""
    launcher = subprocess.Popen(PYTHON_SLICER + ["-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        for _ in range(100):
            if children(launcher.pid):
                break
            time.sleep(0.1)
        (child,) = children(launcher.pid)
        launcher.kill()
        launcher.wait()
        time.sleep(0.3)
        assert alive(child)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)


def test_cancel_ends_a_worker_that_ignores_it_with_its_whole_tree_within_3_s(tmp_path, monkeypatch):
    """A worker stuck in one long call (an ONNX inference) never reads the cancel flag."""
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("STUCK_PID_FILE", str(pid_file))
    stuck = ["-c", "import os, time; open(os.environ['STUCK_PID_FILE'], 'w').write(str(os.getpid())); time.sleep(120)"]
    (tmp_path / "job").mkdir()
    job = WorkerProcess("segment", {"ct": "unused"}, workDir=str(tmp_path / "job"), python=PYTHON_SLICER + stuck)
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    start = time.monotonic()
    job.cancel()
    job.wait(timeoutS=30, interval=0.2)  # the panel polls every 200 ms
    assert time.monotonic() - start < 3.0
    assert job.cancelled and job.result is None
    time.sleep(0.3)
    assert not alive(child) and not alive(job.process.pid)


def test_the_worker_segments_classifies_and_compares_a_small_phantom(a_small_phantom, bundled_models, tmp_path):
    from OsteoScreenLib.ct_io import read_ct
    from OsteoScreenLib.pipeline import labels_from_file

    ct_path = a_small_phantom / "ct.nii.gz"
    segmented = run_job("segment", {"ct": str(ct_path)}, tmp_path)
    seg_path = segmented.result["segmentation"]
    assert segmented.result["source"].startswith("model ") and segmented.progress > 0.02
    ct = read_ct(ct_path)
    labels = labels_from_file(seg_path, ct).array
    truth = labels_from_file(a_small_phantom / "labels.nii.gz", ct).array
    for value in (1, 2):
        dice = 2 * np.sum((labels == value) & (truth == value)) / (np.sum(labels == value) + np.sum(truth == value))
        assert dice > 0.9, (value, dice)

    classified = run_job("classify", {"ct": str(ct_path), "segmentation": seg_path, "model": "l1l2", "kvp": 120,
                                      "kvp_source": "user", "contrast": "none", "source_path": "phantom.nii.gz",
                                      "segmentation_source": segmented.result["source"]}, tmp_path)
    result = json.loads(Path(classified.result["result"]).read_text())
    assert result["schema"] == "osteoscreen.result/1" and result["prediction"]["class"] in CLASSES
    assert result["input"]["path"] == "phantom.nii.gz" and result["input"]["tube_voltage_kvp"] == 120
    assert result["segmentation"]["source"] == segmented.result["source"]
    assert set(result["vertebrae"]) == {"L1", "L2"}

    compared = run_job("compare", {"ct": str(ct_path), "reference": seg_path, "compared": seg_path}, tmp_path)
    assert [(r["segment"], r["dsc"]) for r in compared.result["rows"]] == [("L1", 1.0), ("L2", 1.0)]


def test_the_worker_segments_classifies_and_compares_the_sample_phantom(bundled_models, tmp_path):
    """The Sample Data phantom (OsteoScreenChestPhantom), made by the same command the module starts at
    Slicer's start-up, then Segment, Classify and Compare as the panel runs them."""
    import re

    from OsteoScreenLib.ct_io import read_ct
    from OsteoScreenLib.pipeline import labels_from_file

    module = (REPO / "OsteoScreen" / "OsteoScreen.py").read_text()
    seed = int(re.search(r"^SAMPLE_SEED = (\d+)$", module, re.M).group(1))
    assert '"OsteoScreenLib.cli", "phantom"' in module and '"--format", "nrrd"' in module
    made = python_slicer("-m", "OsteoScreenLib.cli", "phantom", str(tmp_path), "--seed", str(seed), "--format", "nrrd")
    assert made.returncode == 0, made.stderr
    case = tmp_path / f"phantom-{seed:05d}"
    ct_path = case / "ct.nrrd"
    segmented = run_job("segment", {"ct": str(ct_path)}, tmp_path)
    ct = read_ct(ct_path)
    labels = labels_from_file(segmented.result["segmentation"], ct).array
    truth = labels_from_file(case / "labels.nrrd", ct).array
    for value in (1, 2):
        dice = 2 * np.sum((labels == value) & (truth == value)) / (np.sum(labels == value) + np.sum(truth == value))
        assert dice > 0.9, (value, dice)
    classified = run_job("classify", {"ct": str(ct_path), "segmentation": segmented.result["segmentation"],
                                      "model": "l1l2", "warnings": segmented.result["warnings"]}, tmp_path)
    result = json.loads(Path(classified.result["result"]).read_text())
    assert result["prediction"]["class"] in CLASSES and set(result["vertebrae"]) == {"L1", "L2"}
    compared = run_job("compare", {"ct": str(ct_path), "reference": str(case / "labels.nrrd"),
                                   "compared": segmented.result["segmentation"]}, tmp_path)
    assert [r["segment"] for r in compared.result["rows"]] == ["L1", "L2"]
    assert all(r["dsc"] > 0.9 for r in compared.result["rows"]), compared.result["rows"]


def test_the_worker_segments_classifies_and_compares_the_real_abdominal_case(real_data, bundled_models, tmp_path):
    from OsteoScreenLib.ct_io import read_ct
    from OsteoScreenLib.pipeline import labels_from_file, save_segmentation
    from OsteoScreenLib.registry import LABEL_MAPPINGS

    case = real_data / "totalsegmentator-example"
    ct_path = case / "ct.nii.gz"
    segmented = run_job("segment", {"ct": str(ct_path)}, tmp_path)
    # the reference's whole vertebrae, as a reader's .seg.nrrd: the model's bodies lie inside them
    reference = labels_from_file(case / "labels.nii.gz", read_ct(ct_path), LABEL_MAPPINGS["totalsegmentator"])
    reference_path = save_segmentation(reference, tmp_path / "reference.seg.nrrd")
    compared = run_job("compare", {"ct": str(ct_path), "reference": str(reference_path),
                                   "compared": segmented.result["segmentation"]}, tmp_path)
    rows = {r["segment"]: r for r in compared.result["rows"]}
    assert set(rows) == {"L1", "L2"}
    for row in rows.values():
        assert 0.3 < row["dsc"] < 1 and row["prediction_ml"] < row["reference_ml"], row
    classified = run_job("classify", {"ct": str(ct_path), "segmentation": segmented.result["segmentation"],
                                      "model": "l1", "warnings": segmented.result["warnings"]}, tmp_path)
    result = json.loads(Path(classified.result["result"]).read_text())
    assert result["prediction"]["class"] in CLASSES and result["model"]["name"] == "l1"
    assert result["vertebrae"]["L1"]["trabecular_roi_hu"] is not None
    assert all(w in result["warnings"] for w in segmented.result["warnings"])


def test_cancel_through_the_launcher_stops_a_segmentation_and_leaves_no_process(a_small_phantom, bundled_models,
                                                                              tmp_path):
    (tmp_path / "job").mkdir()
    job = WorkerProcess("segment", {"ct": str(a_small_phantom / "ct.nii.gz")}, workDir=str(tmp_path / "job"),
                        python=PYTHON_SLICER)
    tree = set()
    while job.running and job.progress <= 0.02:  # until the segmenter itself reports
        job.poll()
        tree |= {job.process.pid, *children(job.process.pid)}
        time.sleep(0.02)
    job.cancel()
    job.wait(timeoutS=30, interval=0.2)
    assert job.cancelled and job.result is None, "\n".join(job.log)
    assert not (tmp_path / "job" / "segmentation.seg.nrrd").exists()
    time.sleep(0.3)
    assert len(tree) == 2 and not any(alive(pid) for pid in tree)


def test_the_documented_screen_command_runs_under_pythonslicer(a_small_phantom, bundled_models, tmp_path):
    out = tmp_path / "screen"
    done = python_slicer("-m", "OsteoScreenLib.cli", "screen", str(a_small_phantom / "ct.nii.gz"), "--output-dir",
                         str(out), "--model", "l1", "--kvp", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["status"] == "ok" and row["class"] in CLASSES and row["tube_voltage_kvp"] == "120"
    case = out / row["case"]
    assert {p.name for p in case.iterdir()} >= {"segmentation.seg.nrrd", "result.json", "report.png"}


def test_no_worker_outlives_the_application_that_started_it():
    """Slicer exits (here: a Python process) while a job runs: its whole tree is ended."""
    app = ("import subprocess, sys; from OsteoScreenLib.jobs import start; "
           f"job = start({PYTHON_SLICER!r} + ['-c', 'import os, time; print(os.getpid(), flush=True); time.sleep(60)'], "
           "stdout=subprocess.PIPE, text=True); print(job.stdout.readline().strip(), flush=True)")
    done = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split()[-1])
    time.sleep(0.3)
    assert not alive(child)
