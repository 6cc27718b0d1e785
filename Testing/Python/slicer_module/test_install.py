"""Installing ONNX Runtime from the panel: which way on which Slicer, and the one line it shows after.

The decisions (``OsteoScreenLib.dependencies``) are pure; the panel only asks and
shows. Slicer's behaviour they rely on was read in its sources: 5.10.0's
``slicer.util.pip_install`` (blocks the GUI thread), 5.12.0's
``slicer.packaging.pip_ensure`` (its own dialogs; ``RuntimeError("User declined
package installation")`` on No, ``CalledProcessError`` when pip fails, nothing
done in testing mode). The background install of Slicer 5.10 runs here for real
through the PythonSlicer-like launcher, with pip offline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from OsteoScreenLib import dependencies as deps

REPO = Path(__file__).resolve().parents[3]
PYTHON_SLICER = [sys.executable, str(REPO / "Testing" / "PythonSlicer" / "launcher.py")]
DECLINED_IN_5_12 = RuntimeError("User declined package installation")  # Base/Python/slicer/packaging.py, v5.12.0


@pytest.mark.parametrize("version, has_pip_ensure, route", [
    ((5, 10), None, deps.BACKGROUND),
    ((5, 10), False, deps.BACKGROUND),
    ((5, 11), False, deps.BACKGROUND),  # a 5.11 preview from before slicer.packaging
    ((5, 11), True, deps.PIP_ENSURE),  # a 5.11 preview from April 2026 on
    ((5, 12), None, deps.PIP_ENSURE),
    ((5, 12), True, deps.PIP_ENSURE),
    ((6, 0), None, deps.PIP_ENSURE),
])
def test_slicer_5_12_installs_with_its_own_dialogs_and_older_ones_in_the_background(version, has_pip_ensure, route):
    assert deps.install_route(version, has_pip_ensure) == route


def test_declining_in_slicer_5_12s_dialog_says_declined_and_how_to_install_later():
    result = deps.outcome(importable=False, error=DECLINED_IN_5_12)
    text, is_error = deps.message(result, deps.PIP_ENSURE, deps.failure_detail(DECLINED_IN_5_12))
    assert result == deps.DECLINED and is_error
    assert "you declined" in text and "could not be installed" not in text
    assert 'slicer.packaging.pip_install("onnxruntime")' in text and "\n" not in text


def test_declining_the_panels_question_before_5_12_says_declined_with_the_older_command():
    text, _ = deps.message(deps.outcome(importable=False, declined=True), deps.BACKGROUND)
    assert "you declined" in text and 'slicer.util.pip_install("onnxruntime")' in text


def test_a_failed_pip_says_could_not_be_installed_with_its_exit_status():
    failed = subprocess.CalledProcessError(1, "pip install")  # what both Slicers raise
    result = deps.outcome(importable=False, error=failed)
    text, is_error = deps.message(result, deps.PIP_ENSURE, deps.failure_detail(failed))
    assert result == deps.FAILED and is_error and "could not be installed (pip exit status 1;" in text
    assert deps.outcome(importable=False, returncode=2) == deps.FAILED
    assert "pip exit status 2" in deps.message(deps.FAILED, deps.BACKGROUND, deps.failure_detail(returncode=2))[0]


def test_success_cancel_and_a_skipped_install_each_have_their_line():
    assert deps.message(deps.outcome(importable=True, returncode=0), deps.BACKGROUND) == ("ONNX Runtime installed.",
                                                                                         False)
    assert deps.outcome(importable=True) == deps.INSTALLED  # pip_ensure returned
    cancelled = deps.outcome(importable=False, cancelled=True, returncode=-9)
    assert cancelled == deps.CANCELLED and "cancelled" in deps.message(cancelled, deps.BACKGROUND)[0]
    skipped = deps.outcome(importable=False)  # pip_ensure in testing mode returns without installing
    assert skipped == deps.NOT_INSTALLED and deps.message(skipped, deps.PIP_ENSURE)[1]
    for result in (deps.INSTALLED, deps.DECLINED, deps.CANCELLED, deps.FAILED, deps.NOT_INSTALLED):
        for route in (deps.PIP_ENSURE, deps.BACKGROUND):
            assert "\n" not in deps.message(result, route, "pip exit status 1")[0]


def test_the_busy_dialog_says_what_runs_and_pips_latest_line_shortened():
    assert deps.progress_text().startswith("Installing ONNX Runtime (about 20 MB)")
    text = deps.progress_text("  Downloading onnxruntime-1.20.1-cp312-cp312-manylinux_2_27_x86_64.whl (13.3 MB) " + "x" * 50)
    first, second = text.split("\n")
    assert "few minutes" in first and second.startswith("Downloading onnxruntime") and len(second) == 70


def test_the_background_install_runs_pip_under_the_launcher_and_reports_its_failure(tmp_path):
    missing = tmp_path / "onnxruntime-0-py3-none-any.whl"  # no network needed: pip fails on the missing file
    install = deps.PipInstall(str(missing), python=PYTHON_SLICER, extra_args=("--no-index",))
    returncode = install.wait(timeout_s=120)
    assert returncode != 0 and not install.running and not install.cancelled
    assert any("does not exist" in line or "not exist" in line for line in install.lines), install.lines
    result = deps.outcome(importable=False, returncode=returncode)
    assert result == deps.FAILED


def test_the_background_install_succeeds_when_pip_does():
    install = deps.PipInstall("pip", python=PYTHON_SLICER, extra_args=("--no-index",))  # already satisfied
    assert install.wait(timeout_s=120) == 0, install.lines
    assert "already satisfied" in install.last_line.lower()
    assert deps.outcome(importable=True, returncode=install.returncode) == deps.INSTALLED


def test_cancel_ends_the_install_with_the_launchers_child_within_3_s(tmp_path):
    pid_file = tmp_path / "child.pid"
    stuck = ["-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                   "print('Collecting onnxruntime', flush=True); time.sleep(120)"]
    install = deps.PipInstall(python=PYTHON_SLICER + stuck)  # pip's arguments become the script's argv
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text() and install.last_line:
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert install.running and install.last_line == "Collecting onnxruntime"
    start = time.monotonic()
    install.cancel()
    install.wait(timeout_s=30)
    assert time.monotonic() - start < 3 and not install.running and install.cancelled
    time.sleep(0.3)
    for pid in (child, install.process.pid):
        assert not _alive(pid)
    assert deps.outcome(importable=False, cancelled=True, returncode=install.returncode) == deps.CANCELLED


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
