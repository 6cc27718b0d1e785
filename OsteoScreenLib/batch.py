"""Screening many scans: segment, classify, report; resumable, one failure never stops the batch.

Per input a folder ``DIR/<case>/`` with ``segmentation.seg.nrrd``, ``result.json``
and ``report.png`` (and, for a DICOM series, ``seg.dcm`` and ``sr.dcm``); ``result.json`` is written last (atomically), so a case is
finished exactly when it exists. A rerun skips finished cases; a killed run
loses none. ``DIR/results.csv`` is rebuilt from the case folders after each case.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .atomic import ensure_folder, write_json, write_text
from .ct_io import volume_extension
from .errors import OsteoScreenError
from .result import CSV_FIELDS, CaseResult

RESULT_NAME, ERROR_NAME = "result.json", "error.json"


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    csv_path: Path | None = None


def expand_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """Each argument is a CT file, a DICOM series folder, or a folder of those (one level)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise OsteoScreenError(f"{p}: no such file or folder; check the path")
        if p.is_file() or _is_dicom_folder(p):
            out.append(p)
            continue
        children = sorted(c for c in p.iterdir() if not c.name.startswith("."))
        found = [c for c in children if (c.is_file() and volume_extension(c)) or (c.is_dir() and _is_dicom_folder(c))]
        if not found:
            raise OsteoScreenError(f"{p}: no CT files or DICOM series in this folder")
        out.extend(found)
    return out


def _is_dicom_folder(p: Path) -> bool:
    if not p.is_dir():
        return False
    for c in p.iterdir():
        if c.is_file():
            with open(c, "rb") as f:
                head = f.read(132)
            if head[128:132] == b"DICM":
                return True
    return False


def case_names(inputs: list[Path]) -> list[str]:
    """Readable, unique, stable names: the file stem, with parent folders added where needed."""
    def stem(p: Path) -> str:
        name = p.name
        ext = volume_extension(p)
        return name[: -len(ext)] if ext else name

    parts = [[stem(p)] + [q.name for q in p.absolute().parents if q.name] for p in inputs]
    depth = [1] * len(inputs)
    while True:
        names = ["_".join(reversed(parts[n][: depth[n]])) for n in range(len(inputs))]
        dupes = {x for x in names if names.count(x) > 1}
        if not dupes:
            return names
        grew = False
        for n, x in enumerate(names):
            if x in dupes and depth[n] < len(parts[n]):
                depth[n] += 1
                grew = True
        if not grew:  # identical paths given twice: number them
            return [f"{x}_{n}" if x in dupes else x for n, x in enumerate(names)]


def csv_row(case: str, folder: Path, source: Path) -> dict:
    """The case's row of results.csv, from its folder (done, failed or pending)."""
    row = {"case": case, "input": str(source)}
    if (folder / RESULT_NAME).exists():
        row.update(CaseResult.from_json(json.loads((folder / RESULT_NAME).read_text())).csv_row())
    elif (folder / ERROR_NAME).exists():
        row.update({"status": "failed", "error": json.loads((folder / ERROR_NAME).read_text())["error"]})
    else:
        row["status"] = "pending"
    return row


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue(), overwrite=True)


def run_batch(
    inputs: list[Path],
    output_dir: Path,
    process_case: Callable[[Path, Path], None],
    overwrite: bool = False,
    progress: Callable[[int, int, str, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> BatchSummary:
    """Run ``process_case(input, case_folder)`` for each input not finished yet."""
    output_dir = ensure_folder(output_dir)
    names = case_names(inputs)
    summary = BatchSummary(csv_path=output_dir / "results.csv")
    for n, (source, case) in enumerate(zip(inputs, names)):
        if cancel is not None and cancel():
            break
        folder = output_dir / case
        if (folder / RESULT_NAME).exists() and not overwrite:
            summary.skipped.append(case)
            status = "skipped (done)"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ERROR_NAME).unlink(missing_ok=True)
            t = time.perf_counter()
            try:
                process_case(source, folder)
                summary.done.append(case)
                status = f"ok ({time.perf_counter() - t:.1f} s)"
            except OsteoScreenError as exc:
                write_json(folder / ERROR_NAME, {"input": str(source), "error": str(exc)}, overwrite=True)
                summary.failed[case] = str(exc)
                status = f"failed: {exc}"
            except Exception as exc:  # an unexpected failure of one scan must not stop the batch
                msg = f"internal error {exc.__class__.__name__}: {exc}"
                write_json(folder / ERROR_NAME, {"input": str(source), "error": msg}, overwrite=True)
                summary.failed[case] = msg
                status = f"failed: {msg}"
        write_csv(summary.csv_path, [csv_row(c, output_dir / c, s) for s, c in zip(inputs, names)])
        if progress is not None:
            progress(n + 1, len(inputs), case, status)
    return summary
