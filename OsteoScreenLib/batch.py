"""Screening many scans: segment, classify, report; resumable, one failure never stops the batch.

Per input a folder ``DIR/<case>/`` with ``segmentation.seg.nrrd``, ``result.json``
and ``report.png`` (and, for a DICOM series, ``seg.dcm`` and ``sr.dcm``); ``result.json`` is written last (atomically), so a case is
finished exactly when it exists. A rerun skips finished cases; a killed run
loses none. ``DIR/results.csv`` is rebuilt from the case folders after each case, and
``DIR/results.parquet`` (one row per case, typed columns) at the end of a run when pyarrow is
installed (``pip install osteoscreen[parquet]``).

A folder that is not a single series is screened by study (:mod:`study`, docs/archive.md): its
DICOM files are grouped by StudyInstanceUID and one series per study is chosen; the case folder
and the table record the series read and every other one with why it was skipped.
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
from .result import CSV_FIELDS, CaseResult, selection_row
from .study import (StudyInput, StudySelection, dicom_files_under, read_manifest, select_studies, study_case_suffix,
                    study_inputs)

RESULT_NAME, ERROR_NAME = "result.json", "error.json"
PARQUET_NAME = "results.parquet"
MANIFEST_EXTENSIONS = (".csv",)
# Typed columns of results.parquet (the others are text).
PARQUET_INT_FIELDS = {"tube_voltage_kvp", "L1_fracture_grade", "L2_fracture_grade"}
PARQUET_TEXT_FIELDS = {"case", "input", "status", "model", "class", "contrast_phase", "fracture_finding", "warnings",
                       "error", "osteoscreen_version", "model_version", "L1_fracture_type", "L2_fracture_type",
                       "patient_id", "study_uid", "study_date", "accession_number", "series_uid",
                       "series_description", "series_kernel", "series_reason", "skipped_series"}


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    csv_path: Path | None = None
    parquet_path: Path | None = None  # None: not written (see parquet_note)
    parquet_note: str = ""
    workers: dict = field(default_factory=dict)  # engine ray: worker pid -> [(case, id of its models)]


def expand_inputs(paths: list[str | os.PathLike], dicom_root: str | os.PathLike | None = None) -> list:
    """Each argument is a CT file, a manifest (.csv, see :func:`study.read_manifest`), a DICOM
    series folder, a folder of CT files (one level), or a DICOM tree of any depth.

    A CT file, and a folder that holds one DICOM series (and nothing else DICOM below it), is
    read as before: a Path. Other DICOM is grouped by study, one :class:`study.StudyInput` each.
    """
    out: list = []
    for p in map(Path, paths):
        if not p.exists():
            raise OsteoScreenError(f"{p}: no such file or folder; check the path")
        if p.is_file() and p.suffix.lower() in MANIFEST_EXTENSIONS:
            listed, selections = read_manifest(p, Path(dicom_root) if dicom_root else None)
            out.extend(expand_inputs(listed) if listed else [])
            out.extend(_name_studies(study_inputs(selections), dicom_root))
            continue
        if p.is_file():
            out.append(p)
            continue
        volumes = sorted(c for c in p.iterdir() if not c.name.startswith(".") and c.is_file() and volume_extension(c))
        dicom = dicom_files_under(p)
        selections = select_studies(dicom) if dicom else []
        if not volumes and not selections:
            raise OsteoScreenError(f"{p}: no CT files or DICOM series in this folder")
        out.extend(volumes)
        out.extend(_series_folders_or_studies(selections, dicom))
    return out


def _series_folders_or_studies(selections: list[StudySelection], dicom: list[Path]) -> list:
    """A study of one series alone in its folder stays that folder (read as before); others are studies."""
    parents: dict[Path, int] = {}
    for f in dicom:
        for q in f.parents:
            parents[q] = parents.get(q, 0) + 1
    out: list = []
    studies = []
    for sel in selections:
        if len(sel.series) == 1:
            files = sel.series[0].files
            folder = files[0].parent
            if all(f.parent == folder for f in files) and parents.get(folder, 0) == len(files):
                out.append(folder)
                continue
        studies.append(sel)
    return out + _name_studies(study_inputs(studies))


def _name_studies(items: list[StudyInput], root=None) -> list[StudyInput]:
    """Studies that share a folder (or were not found) are told apart by a tag of their UID."""
    for item in items:
        if item.selection.series == []:  # listed in a manifest, not found
            item.path = Path(root or ".") / item.selection.study_uid
    folders = [item.path for item in items]
    for item in items:
        if folders.count(item.path) > 1:
            item.name_hint = f"{item.path.name}_{study_case_suffix(item.selection.study_uid)}"
    return items


def case_names(inputs: list[Path]) -> list[str]:
    """Readable, unique, stable names: the file stem, with parent folders added where needed."""
    def stem(p) -> str:
        if getattr(p, "name_hint", None):
            return p.name_hint
        p = Path(getattr(p, "path", p))
        name = p.name
        ext = volume_extension(p)
        return name[: -len(ext)] if ext else name

    def parents(p) -> list[str]:
        return [q.name for q in Path(getattr(p, "path", p)).absolute().parents if q.name]

    parts = [[stem(p)] + parents(p) for p in inputs]
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


def csv_row(case: str, folder: Path, source) -> dict:
    """The case's row of results.csv, from its folder (done, failed or pending)."""
    row = {"case": case, "input": str(source)}
    if isinstance(source, StudyInput):
        row.update(selection_row(source.selection.to_json()))
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


def run_one(process_case: Callable, source, folder: Path) -> tuple[str, str | None]:
    """One case into ``folder``: (status text, error or None); a failure is recorded in error.json.
    Both engines (this process, or a Ray worker) run each case through here."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_NAME).unlink(missing_ok=True)
    t = time.perf_counter()
    try:
        process_case(source, folder)
        return f"ok ({time.perf_counter() - t:.1f} s)", None
    except OsteoScreenError as exc:
        msg = str(exc)
    except Exception as exc:  # an unexpected failure of one scan must not stop the batch
        msg = f"internal error {exc.__class__.__name__}: {exc}"
    write_json(folder / ERROR_NAME, error_record(source, msg), overwrite=True)
    return f"failed: {msg}", msg


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
            status, error = run_one(process_case, source, folder)
            if error is None:
                summary.done.append(case)
            else:
                summary.failed[case] = error
        write_csv(summary.csv_path, [csv_row(c, output_dir / c, s) for s, c in zip(inputs, names)])
        if progress is not None:
            progress(n + 1, len(inputs), case, status)
    finish_tables(summary, output_dir, inputs, names)
    return summary


def finish_tables(summary: BatchSummary, output_dir: Path, inputs: list, names: list[str]) -> None:
    rows = [csv_row(c, output_dir / c, s) for s, c in zip(inputs, names)]
    write_csv(summary.csv_path, rows)
    summary.parquet_path, summary.parquet_note = write_parquet(output_dir / PARQUET_NAME, rows)


def error_record(source, error: str) -> dict:
    record = {"input": str(source), "error": error}
    if isinstance(source, StudyInput):
        record["series_selection"] = source.selection.to_json()
    return record


def write_parquet(path: Path, rows: list[dict]) -> tuple[Path | None, str]:
    """results.parquet: the rows of results.csv with typed columns (numbers as numbers).

    Returns (path, "") or (None, why not): pyarrow is an optional extra.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None, "results.parquet not written: pyarrow is not installed (pip install osteoscreen[parquet])"

    def typed(name: str, value):
        if value in (None, ""):
            return None
        if name in PARQUET_TEXT_FIELDS:
            return str(value)
        try:
            return int(float(value)) if name in PARQUET_INT_FIELDS else float(value)
        except (TypeError, ValueError):
            return None

    columns = {}
    for name in CSV_FIELDS:
        kind = pa.string() if name in PARQUET_TEXT_FIELDS else pa.int64() if name in PARQUET_INT_FIELDS else pa.float64()
        columns[name] = pa.array([typed(name, r.get(name)) for r in rows], type=kind)
    table = pa.table(columns)
    from .atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        pq.write_table(table, tmp)
    return path, ""
