"""The Slicer module's side of a background task: start the worker, read it, stop it.

The worker (:mod:`OsteoScreenLib.worker`) runs under ``PythonSlicer``, a launcher
that starts the real interpreter as a child. Killing the launcher alone would
leave the child computing, so each job runs in its own process group (its own
console group on Windows) and Cancel ends the whole tree. Every job still
running when Python exits is ended too. Standard library only (no Qt, no MRML).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from .worker import PREFIX

CANCEL_GRACE_S = 2.0  # after Cancel the worker gets this long to stop by itself, then its tree is killed
LIBRARY_PARENT = str(Path(__file__).resolve().parents[1])  # the folder that holds OsteoScreenLib
_STARTED: "weakref.WeakSet[subprocess.Popen]" = weakref.WeakSet()  # ended when Python exits


def python_slicer_executable() -> str:
    """Slicer's own ``PythonSlicer`` launcher, which sees the same packages as the application."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = os.path.join(os.path.dirname(sys.executable), "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    if os.path.isfile(candidate):
        return candidate
    raise RuntimeError("PythonSlicer was not found next to Slicer; reinstall Slicer")


def start(command: list[str], **popen) -> subprocess.Popen:
    """Run ``command`` (e.g. PythonSlicer and its arguments) in its own process group, with
    OsteoScreenLib importable; :func:`kill_tree` ends it with its children, and so does Python's exit."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join([LIBRARY_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    group = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW} if os.name == "nt"
             else {"start_new_session": True})
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env, **group, **popen)
    _STARTED.add(process)
    return process


def kill_tree(process: subprocess.Popen) -> None:
    """End a job's process and everything it started (the launcher's child included)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the job leads its own group: see start_new_session
    except (ProcessLookupError, PermissionError):
        pass


class WorkerProcess:
    """One task of the worker in a separate process, polled without blocking.

    ``poll()`` (from a GUI timer) returns the new messages; once ``running`` is False exactly
    one of ``result`` / ``error`` / ``cancelled`` is set. ``cancel()`` asks the worker to stop
    and ends its process tree ``CANCEL_GRACE_S`` later if it has not; ``kill()`` ends it now.
    ``python``: the command that runs Python (default: PythonSlicer), as a path or a list.
    """

    def __init__(self, task: str, inputs: dict, workDir: str | None = None, python=None):
        self.workDir = workDir or tempfile.mkdtemp(prefix="OsteoScreen-")
        self.cancelFile = os.path.join(self.workDir, "cancel")
        job = dict(inputs, task=task, cancel_file=self.cancelFile, out_dir=self.workDir)
        jobPath = os.path.join(self.workDir, "job.json")
        with open(jobPath, "w") as f:
            json.dump(job, f)
        self.task = task
        self.log: list[str] = []  # the worker's other output lines (warnings, tracebacks)
        self.progress, self.message = 0.0, ""
        self.result = self.error = None
        self.cancelled = False
        self._cancelRequestedAt = None
        self._eof = False
        self._lines: queue.Queue = queue.Queue()
        python = python or python_slicer_executable()
        command = (list(python) if isinstance(python, (list, tuple)) else [python]) + ["-m", "OsteoScreenLib.worker", jobPath]
        self.process = start(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                             errors="replace", cwd=self.workDir)
        self._reader = threading.Thread(target=self._readOutput, daemon=True)  # I/O only, no MRML
        self._reader.start()

    def _readOutput(self):
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)

    @property
    def running(self) -> bool:
        return not (self._eof and self.process.poll() is not None)

    def poll(self) -> list[dict]:
        """New messages from the worker; never blocks."""
        messages = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                continue
            message = _message(line)
            if message is None:
                self.log.append(line)
                continue
            messages.append(message)
            if "progress" in message:
                self.progress, self.message = message["progress"], message.get("message", "")
            if message.get("done"):
                self.result = message
            elif "error" in message:
                self.error = message["error"]
            elif message.get("cancelled"):
                self.cancelled = True
        if self._cancelRequestedAt is not None and time.monotonic() - self._cancelRequestedAt > CANCEL_GRACE_S:
            self.kill()
        if not self.running and self.result is None and self.error is None and not self.cancelled:
            if self._cancelRequestedAt is not None:
                self.cancelled = True
            else:
                self.error = (f"the background process stopped unexpectedly (exit code {self.process.returncode}); "
                              "details are in the log")
        return messages

    def cancel(self) -> None:
        if self.process.poll() is None and self._cancelRequestedAt is None:
            Path(self.cancelFile).write_text("cancel\n")
            self._cancelRequestedAt = time.monotonic()

    def kill(self) -> None:
        """End the worker and its children now (the launcher's child included)."""
        kill_tree(self.process)
        self._cancelRequestedAt = self._cancelRequestedAt or time.monotonic()

    def wait(self, timeoutS: float | None = None, interval: float = 0.05) -> None:
        """Poll until the worker has finished (scripts and tests; the GUI uses a timer)."""
        start = time.monotonic()
        while True:
            self.poll()
            if not self.running:
                self.poll()
                return
            if timeoutS is not None and time.monotonic() - start > timeoutS:
                self.kill()
            time.sleep(interval)

    def cleanup(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)


def _message(line: str) -> dict | None:
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX):])
    except ValueError:
        return None


@atexit.register
def _end_started_processes() -> None:
    """No worker outlives the application."""
    for process in list(_STARTED):
        if process.poll() is None:
            kill_tree(process)
