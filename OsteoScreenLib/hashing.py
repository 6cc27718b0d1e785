"""SHA-256 of files and folders (DICOM series), streamed in blocks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(files, root: str | os.PathLike) -> str:
    """Hash of some files of a folder (one series of a study): names relative to ``root`` and contents."""
    digest = hashlib.sha256()
    for p in sorted(Path(f) for f in files):
        digest.update(os.path.relpath(p, root).encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(p)))
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """Hash of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(str(p.relative_to(path)).encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(p)))
    return digest.hexdigest()
