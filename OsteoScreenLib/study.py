"""Screening an archive: group a DICOM tree by study and choose one CT series per study.

A hospital's folders hold several series per study (soft-tissue and lung kernels, thin and
thick slices, scouts, dose reports). :func:`scan_dicom_tree` reads every file's header (no
pixels) once; :func:`select_series` applies the rules of docs/archive.md, whose constants live
in :mod:`registry`, and records why each other series was skipped. :func:`read_manifest` reads a
CSV of paths, or of StudyInstanceUIDs found under a DICOM root.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import registry
from .errors import OsteoScreenError

# What the selection needs of each file's header: read these only (pixels never).
HEADER_TAGS = ["SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "StudyDate",
               "AccessionNumber", "SeriesNumber", "SeriesDescription", "ImageType", "ConvolutionKernel",
               "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness"]
MANIFEST_PATH_COLUMNS = ("path",)
MANIFEST_UID_COLUMNS = ("study_instance_uid", "studyinstanceuid", "study_uid")


@dataclass
class SeriesInfo:
    """One series as its headers describe it."""

    series_uid: str
    study_uid: str
    modality: str = ""
    sop_class_uid: str = ""
    description: str = ""
    kernel: str = ""
    image_type: list[str] = field(default_factory=list)
    series_number: str = ""
    patient_id: str = ""
    study_date: str = ""
    accession_number: str = ""
    files: list[Path] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)  # along the slice normal, one per file with geometry
    normal_z: float | None = None  # |cosine| of the slice normal with the body axis; None: no geometry
    slice_thickness: float | None = None

    @property
    def slices(self) -> int:
        return len(self.files)

    @property
    def extent_mm(self) -> float:
        return float(max(self.positions) - min(self.positions)) if len(self.positions) > 1 else 0.0

    @property
    def spacing_mm(self) -> float | None:
        """Median distance between neighbouring slice positions (SliceThickness with a single slice)."""
        p = np.unique(np.round(np.asarray(self.positions, float), 3))
        if len(p) > 1:
            return float(np.median(np.diff(p)))
        return self.slice_thickness

    @property
    def kernel_class(self) -> str:
        return kernel_class(self.kernel, self.description)

    def label(self) -> str:
        """How the series is named in tables: number, description, kernel."""
        words = [f"#{self.series_number}" if self.series_number else "", self.description,
                 f"kernel {self.kernel}" if self.kernel else ""]
        return " ".join(w for w in words if w) or self.series_uid

    def to_json(self) -> dict:
        spacing = self.spacing_mm
        return {"series_uid": self.series_uid, "series_number": self.series_number, "description": self.description,
                "kernel": self.kernel, "kernel_class": self.kernel_class, "image_type": list(self.image_type),
                "modality": self.modality, "slices": self.slices, "extent_mm": round(self.extent_mm, 1),
                "spacing_mm": None if spacing is None else round(spacing, 3)}


@dataclass
class StudySelection:
    """A study's chosen series (None: no usable one) and every other series with its reason."""

    study_uid: str
    series: list[SeriesInfo]
    chosen: SeriesInfo | None = None
    skipped: list[tuple[SeriesInfo, str]] = field(default_factory=list)
    reason: str = ""  # why the chosen one (or why none)

    @property
    def patient_id(self) -> str:
        return next((s.patient_id for s in self.series if s.patient_id), "")

    @property
    def study_date(self) -> str:
        return next((s.study_date for s in self.series if s.study_date), "")

    @property
    def accession_number(self) -> str:
        return next((s.accession_number for s in self.series if s.accession_number), "")

    def folder(self) -> Path:
        """The folder holding the whole study (its case is named after it)."""
        files = [f for s in self.series for f in s.files]
        if not files:
            return Path(".")
        return Path(os.path.commonpath([str(p.parent) for p in files]))

    def skipped_text(self) -> str:
        return " | ".join(f"{s.label()}: {why}" for s, why in self.skipped)

    def to_json(self) -> dict:
        return {"study_uid": self.study_uid, "patient_id": self.patient_id, "study_date": self.study_date,
                "accession_number": self.accession_number,
                "chosen": None if self.chosen is None else {**self.chosen.to_json(), "reason": self.reason},
                "skipped": [{**s.to_json(), "reason": why} for s, why in self.skipped],
                **({} if self.chosen is not None else {"error": self.reason})}


@dataclass
class StudyInput:
    """One item of a batch: a study (``path``: the folder holding all its files) and the series chosen to read."""

    path: Path
    selection: StudySelection
    name_hint: str | None = None  # the case name's last part, where the folder alone is not unique

    @property
    def files(self) -> list[Path] | None:
        return self.selection.chosen.files if self.selection.chosen else None

    def __str__(self) -> str:
        return str(self.path)


# --------------------------------------------------------------------------- kernels


_SIEMENS_KERNEL = re.compile(r"^(?:B|BR|BV|BL|BF|I|IR|Q|QR|H|HR|D|T)(\d{2})")


def kernel_class(kernel: str, description: str = "") -> str:
    """'soft' (soft tissue, standard), 'sharp' (lung, bone) or 'unknown', from the kernel, else the description."""
    for text in (kernel, description):
        t = str(text or "").upper()
        if not t:
            continue
        if any(h in t for h in registry.SERIES_SHARP_KERNEL_HINTS):
            return "sharp"
        if any(h in t for h in registry.SERIES_SOFT_KERNEL_HINTS):
            return "soft"
        m = _SIEMENS_KERNEL.match(t.strip())
        if m:
            return "sharp" if int(m.group(1)) >= registry.SERIES_SHARP_KERNEL_NUMBER else "soft"
        for word in re.findall(r"\b[A-Z]{1,2}\d{2}[A-Z]?\b", t):  # a kernel named in a description
            m = _SIEMENS_KERNEL.match(word)
            if m:
                return "sharp" if int(m.group(1)) >= registry.SERIES_SHARP_KERNEL_NUMBER else "soft"
    return "unknown"


# --------------------------------------------------------------------------- reading the tree


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def dicom_files_under(root: Path, skip_volume_files: bool = True) -> list[Path]:
    """Every file under ``root`` (sorted), but hidden ones and NIfTI/NRRD/MetaImage volumes."""
    from .ct_io import volume_extension

    out = []
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            p = Path(dirpath, name)
            if skip_volume_files and volume_extension(p):
                continue
            out.append(p)
    return out


def scan_dicom_files(files: list[Path]) -> dict[str, dict[str, SeriesInfo]]:
    """{StudyInstanceUID: {SeriesInstanceUID: SeriesInfo}} from the headers of ``files``
    (no pixels; files that are not DICOM are ignored)."""
    import pydicom

    studies: dict[str, dict[str, SeriesInfo]] = {}
    for p in files:
        try:
            with open(p, "rb") as f:
                if f.read(132)[128:132] != b"DICM":
                    continue
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except Exception:  # unreadable or not DICOM: ignored, as Slicer's DICOM browser does
            continue
        study_uid = _text(ds.get("StudyInstanceUID"))
        series_uid = _text(ds.get("SeriesInstanceUID"))
        if not study_uid or not series_uid:
            continue
        series = studies.setdefault(study_uid, {}).get(series_uid)
        if series is None:
            series = SeriesInfo(series_uid, study_uid, modality=_text(ds.get("Modality")).upper(),
                                sop_class_uid=_text(ds.get("SOPClassUID")),
                                description=_text(ds.get("SeriesDescription")),
                                kernel=_text(ds.get("ConvolutionKernel")),
                                image_type=[v.upper() for v in _text(ds.get("ImageType")).split("\\") if v],
                                series_number=_text(ds.get("SeriesNumber")), patient_id=_text(ds.get("PatientID")),
                                study_date=_text(ds.get("StudyDate")),
                                accession_number=_text(ds.get("AccessionNumber")))
            try:
                series.slice_thickness = float(ds.get("SliceThickness"))
            except (TypeError, ValueError):
                pass
            studies[study_uid][series_uid] = series
        series.files.append(p)
        try:
            iop = np.asarray(ds.ImageOrientationPatient, float)
            normal = np.cross(iop[:3], iop[3:])
            position = float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float)))
        except (AttributeError, TypeError, ValueError):
            continue
        if series.normal_z is None:
            series.normal_z = abs(float(normal[2]))
        series.positions.append(position)
    return studies


# --------------------------------------------------------------------------- the rules


def exclusion_reason(s: SeriesInfo) -> str | None:
    """Why a series cannot be read at all (None: eligible); in the order of docs/archive.md."""
    for prefix, what in registry.SERIES_NON_IMAGE_SOP_PREFIXES.items():
        root = prefix.rstrip(".")  # the UID itself, or one under it (…1.1.7 and …1.1.7.2, not …1.1.77)
        if s.sop_class_uid == root or s.sop_class_uid.startswith(root + "."):
            return f"{what}, not a series OsteoScreen reads"
    if s.modality != registry.SERIES_MODALITY:
        return f"modality {s.modality or 'unknown'}, not {registry.SERIES_MODALITY}"
    localizer = [t for t in s.image_type if t in registry.SERIES_LOCALIZER_IMAGE_TYPES]
    if localizer:
        return f"scout/localizer (ImageType {localizer[0]})"
    if s.slices < registry.SERIES_MIN_SLICES:
        return f"{s.slices} slice(s), fewer than {registry.SERIES_MIN_SLICES}: a scout or key images"
    if s.normal_z is None or len(s.positions) < s.slices:
        return "no slice geometry (ImagePositionPatient/ImageOrientationPatient) in some files"
    if s.normal_z < registry.SERIES_AXIAL_MIN_COSINE:
        return "not axial (a sagittal, coronal or oblique reformat)"
    spacing = s.spacing_mm
    if spacing is None or spacing < registry.SERIES_MIN_SPACING_MM:
        return f"slices {spacing or 0:.2g} mm apart, thinner than {registry.SERIES_MIN_SPACING_MM:g} mm"
    if spacing > registry.SERIES_MAX_SPACING_MM:
        return f"slices {spacing:.2g} mm apart, thicker than {registry.SERIES_MAX_SPACING_MM:g} mm"
    return None


def _is_preferred_type(s: SeriesInfo) -> bool:
    return all(t in s.image_type for t in registry.SERIES_PREFERRED_IMAGE_TYPE)


def rank_key(s: SeriesInfo, longest_mm: float) -> tuple:
    """Smaller is better: covers the upper abdomen (or is the longest), original, soft kernel, thin, many slices."""
    covers = s.extent_mm >= registry.SERIES_MIN_EXTENT_MM or s.extent_mm >= longest_mm - 1e-3
    return (not covers, not _is_preferred_type(s), registry.KERNEL_RANK[s.kernel_class], round(s.spacing_mm, 3),
            -s.slices, s.series_uid)


def _why_not(s: SeriesInfo, chosen: SeriesInfo, longest_mm: float) -> str:
    """Why an eligible series lost to the chosen one: the first rule on which they differ."""
    a, b = rank_key(s, longest_mm), rank_key(chosen, longest_mm)
    if a[0] != b[0]:
        return f"covers {s.extent_mm:.0f} mm, less than {registry.SERIES_MIN_EXTENT_MM:g} mm and than the chosen series"
    if a[1] != b[1]:
        return f"image type {'/'.join(s.image_type[:2]) or 'unknown'}, not ORIGINAL/PRIMARY"
    if a[2] != b[2]:
        return f"{s.kernel_class} kernel ({s.kernel or s.description or 'unnamed'}); a soft-tissue kernel was preferred"
    if a[3] != b[3]:
        return f"slices {s.spacing_mm:.2g} mm apart; a thinner series was chosen"
    return "an equivalent series with more slices (or first by UID) was chosen"


def select_series(study_uid: str, series: dict[str, SeriesInfo] | list[SeriesInfo]) -> StudySelection:
    """The study's series to read, by the rules of docs/archive.md, and each other with its reason."""
    items = sorted(series.values() if isinstance(series, dict) else series, key=lambda s: s.series_uid)
    sel = StudySelection(study_uid, items)
    eligible = []
    for s in items:
        why = exclusion_reason(s)
        if why is None:
            eligible.append(s)
        else:
            sel.skipped.append((s, why))
    if not eligible:
        sel.reason = "no usable CT series: " + (sel.skipped_text() or "no series")
        return sel
    longest = max(s.extent_mm for s in eligible)
    eligible.sort(key=lambda s: rank_key(s, longest))
    sel.chosen = eligible[0]
    c = sel.chosen
    sel.reason = (f"axial CT, {c.slices} slices {c.spacing_mm:.2g} mm apart over {c.extent_mm:.0f} mm, "
                  f"{c.kernel_class} kernel" + (", ORIGINAL/PRIMARY" if _is_preferred_type(c) else ""))
    sel.skipped += [(s, _why_not(s, c, longest)) for s in eligible[1:]]
    order = {s.series_uid: n for n, s in enumerate(items)}
    sel.skipped.sort(key=lambda sw: order[sw[0].series_uid])
    return sel


def select_studies(files: list[Path]) -> list[StudySelection]:
    """One selection per study found in ``files``, sorted by StudyInstanceUID."""
    studies = scan_dicom_files(files)
    return [select_series(uid, studies[uid]) for uid in sorted(studies)]


def study_inputs(selections: list[StudySelection]) -> list[StudyInput]:
    return [StudyInput(sel.folder(), sel) for sel in selections]


def study_case_suffix(study_uid: str) -> str:
    """A short, stable tag of a study (for case names that would otherwise collide)."""
    return hashlib.sha1(study_uid.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- manifests


def read_manifest(path: Path, dicom_root: Path | None = None) -> tuple[list[Path], list[StudySelection]]:
    """A CSV with a ``path`` column (files or folders, relative to the CSV's folder or absolute),
    or a ``study_instance_uid`` column (studies searched under ``dicom_root``).

    Returns the paths (for the usual inputs) and the selections of the listed studies; a study
    not found under the root is a selection with no series (it fails in the batch, the others go on).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = {c.strip().lower(): c for c in (rows[0].keys() if rows else [])}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OsteoScreenError(f"{path}: cannot read the manifest ({exc}); give a UTF-8 CSV file") from None
    if not rows:
        raise OsteoScreenError(f"{path}: the manifest lists nothing; give a CSV with a header and one row per input")
    path_col = next((columns[c] for c in MANIFEST_PATH_COLUMNS if c in columns), None)
    uid_col = next((columns[c] for c in MANIFEST_UID_COLUMNS if c in columns), None)
    if path_col is not None:
        paths = []
        for n, row in enumerate(rows, start=2):
            value = (row.get(path_col) or "").strip()
            if not value:
                raise OsteoScreenError(f"{path}: line {n} has an empty path; fill it in or remove the line")
            p = Path(value)
            paths.append(p if p.is_absolute() else Path(path).parent / p)
        return paths, []
    if uid_col is None:
        raise OsteoScreenError(f"{path}: the manifest needs a 'path' or a 'study_instance_uid' column")
    if dicom_root is None:
        raise OsteoScreenError(f"{path}: a manifest of StudyInstanceUIDs needs --dicom-root, the folder to find them in")
    if not Path(dicom_root).is_dir():
        raise OsteoScreenError(f"{dicom_root}: no such folder; check --dicom-root")
    wanted = list(dict.fromkeys((row.get(uid_col) or "").strip() for row in rows if (row.get(uid_col) or "").strip()))
    studies = scan_dicom_files(dicom_files_under(Path(dicom_root)))
    selections = []
    for uid in wanted:
        if uid in studies:
            selections.append(select_series(uid, studies[uid]))
        else:
            sel = StudySelection(uid, [])
            sel.reason = f"study {uid} not found under {dicom_root}"
            selections.append(sel)
    return [], selections
