"""Atomic outputs: write to a hidden temporary sibling, then rename over the target.

A killed process leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OsteoScreenError


def check_can_write(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OsteoScreenError(f"{path}: already exists; pass --overwrite to replace it")


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it writable, or say why not in one line
    (a file of that name, no permission, a read-only disk) before any work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OsteoScreenError(f"{folder}: cannot write there ({exc.strerror}); choose a folder you can write "
                               "to (not an existing file)") from None
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the same extension; on success it replaces ``path``.

    Works for files and for folders (e.g. a DICOM series): the caller creates
    whatever it wants at the yielded path.
    """
    path = Path(path)
    check_can_write(path, overwrite)
    ensure_folder(path.parent)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise OsteoScreenError(f"{path}: nothing was written")
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be replaced by rename; move the old one aside first.
            old = path.with_name(f".old-{os.getpid()}-{path.name}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except OSError as exc:  # e.g. the disk filled up while writing
        raise OsteoScreenError(f"{path}: could not be written ({exc.strerror}); check the folder and free space") from None
    finally:
        _remove(tmp)


def write_json(path: str | os.PathLike, data, overwrite: bool = False) -> None:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> None:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
