"""ONNX Runtime in Slicer's Python: how to install it, and what to tell the reader after.

The panel (``OsteoScreen/OsteoScreen.py``) asks and shows; the decisions are here,
pure and tested headless. Standard library only (no Qt, no MRML). What Slicer
does, read in its sources:

- **Slicer 5.12** (and 5.11 previews from April 2026) has
  ``slicer.packaging.pip_ensure``: it asks in its own dialog, installs behind its
  own progress dialog, raises ``RuntimeError("User declined package
  installation")`` when the reader declines, ``subprocess.CalledProcessError``
  when pip fails, and returns without installing in testing mode.
- **Slicer 5.10** has only ``slicer.util.pip_install``, which runs pip on the GUI
  thread and repaints only when pip prints a line: the panel looks frozen. There
  the panel asks itself and runs ``PythonSlicer -m pip install onnxruntime`` as a
  background process (:class:`PipInstall`) behind a busy dialog that shows pip's
  last line and has a Cancel button.
"""

from __future__ import annotations

import subprocess
import threading

from .jobs import kill_tree, python_slicer_executable, start

REQUIREMENT = "onnxruntime"
DOWNLOAD_SIZE = "about 20 MB"
PIP_ENSURE_VERSION = (5, 12)  # the first release with slicer.packaging.pip_ensure

PIP_ENSURE = "pip_ensure"  # Slicer's own dialogs (5.12+)
BACKGROUND = "background"  # the panel's confirmation and busy dialog, pip in a PythonSlicer process (5.10, 5.11)

INSTALLED, DECLINED, CANCELLED, FAILED, NOT_INSTALLED = "installed", "declined", "cancelled", "failed", "not installed"

CONFIRM_TEXT = (f"OsteoScreen needs ONNX Runtime ({DOWNLOAD_SIZE}) to run its models. Install it now into "
                "Slicer's Python?")
LATER_COMMAND = {PIP_ENSURE: f'slicer.packaging.pip_install("{REQUIREMENT}")',
                 BACKGROUND: f'slicer.util.pip_install("{REQUIREMENT}")'}


def install_route(slicer_version: tuple[int, int], has_pip_ensure: bool | None = None) -> str:
    """How to install on this Slicer: :data:`PIP_ENSURE` or :data:`BACKGROUND`.

    ``has_pip_ensure`` (whether ``slicer.packaging.pip_ensure`` imports) decides when
    known, since 5.11 previews differ; otherwise the version does.
    """
    if has_pip_ensure is None:
        has_pip_ensure = tuple(slicer_version[:2]) >= PIP_ENSURE_VERSION
    return PIP_ENSURE if has_pip_ensure else BACKGROUND


def is_declined(error: BaseException | None) -> bool:
    """Whether ``pip_ensure`` raised because the reader declined in its dialog (Slicer 5.12)."""
    return isinstance(error, RuntimeError) and "declined" in str(error).lower()


def outcome(importable: bool, error: BaseException | None = None, declined: bool = False,
            cancelled: bool = False, returncode: int | None = None) -> str:
    """What came of an attempt: one of INSTALLED, DECLINED, CANCELLED, FAILED, NOT_INSTALLED.

    ``importable``: ONNX Runtime imports now; ``error``: what the install raised;
    ``declined``: the reader said no in the panel's dialog; ``cancelled``: in the busy
    dialog; ``returncode``: pip's exit status (background route).
    """
    if declined or is_declined(error):
        return DECLINED
    if cancelled:
        return CANCELLED
    if error is not None or (returncode not in (None, 0)):
        return FAILED
    return INSTALLED if importable else NOT_INSTALLED


def failure_detail(error: BaseException | None = None, returncode: int | None = None) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        return f"pip exit status {error.returncode}"
    if error is not None:
        return f"{type(error).__name__}: {error}".splitlines()[0][:120]
    return f"pip exit status {returncode}"


def message(result: str, route: str, detail: str = "") -> tuple[str, bool]:
    """The panel's one line for an outcome, and whether it is an error."""
    later = f"Segment or Classify asks again; or run {LATER_COMMAND[route]} in the Python console."
    if result == INSTALLED:
        return "ONNX Runtime installed.", False
    if result == DECLINED:
        return f"ONNX Runtime was not installed: you declined. Nothing was run. {later}", True
    if result == CANCELLED:
        return f"ONNX Runtime installation cancelled; nothing was run. {later}", True
    if result == FAILED:
        return (f"ONNX Runtime could not be installed ({detail}; no network or no write access?); "
                "nothing was run. See the log."), True
    return "ONNX Runtime is not installed (Slicer skipped the installation); nothing was run.", True


def progress_text(last_line: str = "", width: int = 70) -> str:
    """The busy dialog's label: what runs, how long it may take, pip's latest line."""
    line = " ".join(last_line.split())
    if len(line) > width:
        line = line[: width - 3] + "..."
    return (f"Installing ONNX Runtime ({DOWNLOAD_SIZE}); this can take a few minutes.\n"
            + (line or "Starting pip..."))


class PipInstall:
    """``PythonSlicer -m pip install REQUIREMENT`` in its own process group, read without blocking.

    ``running``, ``last_line`` and ``lines`` for the busy dialog; ``cancel()`` ends
    the whole tree (PythonSlicer is a launcher), as Cancel does for the worker.
    ``python``: the command that runs Python (default: PythonSlicer), a path or a list.
    """

    def __init__(self, requirement: str = REQUIREMENT, python=None, extra_args: tuple[str, ...] = ()):
        python = python or python_slicer_executable()
        command = (list(python) if isinstance(python, (list, tuple)) else [python])
        command += ["-m", "pip", "install", "--disable-pip-version-check", *extra_args, requirement]
        self.lines: list[str] = []
        self.last_line = ""
        self.cancelled = False
        self.process = start(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             encoding="utf-8", errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)  # I/O only
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            line = line.rstrip("\r\n")
            self.lines.append(line)
            if line.strip():
                self.last_line = line

    @property
    def running(self) -> bool:
        return self.process.poll() is None or self._reader.is_alive()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def cancel(self) -> None:
        self.cancelled = True
        kill_tree(self.process)

    def wait(self, timeout_s: float | None = None) -> int:
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.cancel()
            self.process.wait()
        self._reader.join(5)
        return self.process.returncode
