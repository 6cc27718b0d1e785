"""DICOM series: choose the CT series of a folder, and write one (phantom export).

Headers are read with pydicom (bundled with Slicer); pixel decoding is left to
Slicer's ITK/GDCM reader in :mod:`ct_io`.
"""

from __future__ import annotations

import datetime
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import OsteoScreenError
from .guards import check_spacing_values, check_voxel_count
from .volume import RAS_FROM_LPS, Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFER_PIXELS_BYTES = 1024  # values longer than this are located, not read
# A study of several series holds a few thousand files; a folder of more is a disk or a home
# folder given by mistake, whose every file would be opened as DICOM for minutes.
DICOM_FOLDER_FILES_MAX = 20000
from .registry import SERIES_AXIAL_MIN_COSINE as AXIAL_MIN_COSINE  # noqa: E402  (one source of truth)


def _slice_normal(ds) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, float)
    return np.cross(iop[:3], iop[3:])


def select_ct_series(folder: Path, files: list[Path] | None = None) -> list[Path]:
    """Files of the axial CT series with the most slices, sorted by position along the normal.

    ``files``: read only these (one series a study's selection chose, :mod:`study`), not the
    whole folder; ``folder`` names the input in messages.
    """
    import pydicom

    if files is None:
        _check_folder_size(folder)
        candidates = (Path(root, name) for root, _, names in os.walk(folder) for name in names)
    else:
        candidates = (Path(p) for p in files)
    series: dict[str, list] = defaultdict(list)
    modalities: set[str] = set()
    for p in candidates:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # not a DICOM file: ignore, as Slicer's DICOM browser does
            continue
        modality = str(getattr(ds, "Modality", ""))
        modalities.add(modality or "unknown")
        if modality != "CT" or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        series[str(getattr(ds, "SeriesInstanceUID", ""))].append((p, ds))
    if not modalities:
        raise OsteoScreenError(f"{folder}: no DICOM files in this folder; choose the folder of a CT series")
    if not series:
        found = ", ".join(sorted(modalities))
        raise OsteoScreenError(f"{folder}: the DICOM series is {found}, not CT; OsteoScreen reads CT only")
    axial = {uid: items for uid, items in series.items() if abs(_slice_normal(items[0][1])[2]) >= AXIAL_MIN_COSINE}
    if not axial:
        raise OsteoScreenError(f"{folder}: no axial CT series; reconstruct axial slices first")
    uid, items = max(axial.items(), key=lambda kv: len(kv[1]))
    if len(items) < 2:
        raise OsteoScreenError(f"{folder}: the CT series has a single slice; OsteoScreen needs a 3D volume")
    _check_series_size(folder, items)
    normal = _slice_normal(items[0][1])
    items.sort(key=lambda it: float(np.dot(normal, np.asarray(it[1].ImagePositionPatient, float))))
    positions = np.array([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for _, ds in items])
    gaps = np.diff(positions)
    if np.any(gaps < 1e-3):
        raise OsteoScreenError(f"{folder}: the CT series has slices at the same position; remove duplicates")
    if gaps.max() - gaps.min() > 0.01 * max(gaps.min(), 1.0) + 1e-3:
        raise OsteoScreenError(f"{folder}: the CT series has uneven slice spacing (missing slices?)")
    files = [p for p, _ in items]
    _check_slices_complete(folder, files)
    return files


def _check_folder_size(folder: Path) -> None:
    """Refuse a folder of more files than a CT study holds, counting no further than the limit."""
    count = 0
    for _, _, names in os.walk(folder):
        count += len(names)
        if count > DICOM_FOLDER_FILES_MAX:
            raise OsteoScreenError(f"{folder}: more than {DICOM_FOLDER_FILES_MAX} files, more than a CT study "
                                   "holds; choose the folder of one CT series")


def _check_series_size(folder: Path, items: list) -> None:
    """Pixel spacing and voxel count from the headers, before the pixels are read
    (the reader takes a missing or zero PixelSpacing as 1 mm)."""
    ds = items[0][1]
    try:
        spacing = [float(v) for v in ds.PixelSpacing]
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise OsteoScreenError(f"{folder}: the CT series records no valid PixelSpacing, Rows or Columns; "
                               "export it again") from None
    check_spacing_values(spacing, folder)
    check_voxel_count((columns, rows, len(items)), folder)


def _check_slices_complete(folder: Path, files: list[Path]) -> None:
    """Every slice holds all its pixel data: the reader fills a cut slice with zeros without a word."""
    import pydicom

    for p in files:
        ds = pydicom.dcmread(p, defer_size=DEFER_PIXELS_BYTES)  # the pixels' place and length, not the pixels
        raw = ds._dict.get(PIXEL_DATA_TAG)
        length = getattr(raw, "length", None)
        if length is None or length == UNDEFINED_LENGTH:  # encapsulated (compressed): the decoder checks it
            continue
        if raw.value_tell + length > p.stat().st_size:
            raise OsteoScreenError(f"{folder}: slice {p.name} is truncated; copy or export the series again")


def series_kvp(files: list[Path]) -> float | None:
    """The tube voltage (KVP, 0018,0060) the series records, or None."""
    import pydicom

    try:
        value = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["KVP"]).get("KVP")
        return float(value) if value not in (None, "") else None
    except (ValueError, TypeError, OSError):
        return None


def series_padding_hu(files: list[Path]) -> tuple[float, float] | None:
    """The padding range in HU that the series declares outside its reconstruction circle, or None."""
    import pydicom

    from .padding import declared_padding_hu

    try:
        return declared_padding_hu(pydicom.dcmread(files[0], stop_before_pixels=True))
    except (ValueError, TypeError, OSError):
        return None


def dicom_geometry(files: list[Path]) -> np.ndarray:
    """IJK-to-RAS matrix of a sorted series from its headers (the DICOM standard's definition)."""
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    last = pydicom.dcmread(files[-1], stop_before_pixels=True)
    iop = np.asarray(first.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    p0 = np.asarray(first.ImagePositionPatient, float)
    p1 = np.asarray(last.ImagePositionPatient, float)
    m = np.eye(4)
    m[:3, 0] = iop[:3] * col_spacing  # i runs along a row
    m[:3, 1] = iop[3:] * row_spacing  # j runs down a column
    m[:3, 2] = (p1 - p0) / (len(files) - 1)
    m[:3, 3] = p0
    return RAS_FROM_LPS @ m


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    overwrite: bool = False,
    patient_id: str = "OSTEOSCREEN-PHANTOM",
    description: str = "OsteoScreen synthetic chest CT",
    uid_seed: int = 0,
    kvp: float | None = None,
    padding_hu: int | None = None,
) -> Path:
    """Write an int16 HU volume as an uncompressed CT Image Storage series (one file per k),
    with the tube voltage ``kvp`` and the value written outside the reconstruction circle
    (``padding_hu``, PixelPaddingValue) in its header when given."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    lps = RAS_FROM_LPS @ volume.ijk_to_ras
    spacing = volume.spacing_mm
    dirs = lps[:3, :3] / spacing[None, :]
    normal = np.cross(dirs[:, 0], dirs[:, 1])
    if abs(float(np.dot(normal, dirs[:, 2]))) < 0.999:
        raise OsteoScreenError("cannot write a sheared volume as a DICOM series")
    hu = np.asarray(volume.array)
    if hu.min() < -32768 or hu.max() > 32767:
        raise OsteoScreenError("CT values out of int16 range; cannot write DICOM")
    pixels = np.round(hu).astype(np.int16)
    prefix = f"{uid_seed}"
    study_uid = generate_uid(entropy_srcs=[prefix, "study"])
    series_uid = generate_uid(entropy_srcs=[prefix, "series"])
    frame_uid = generate_uid(entropy_srcs=[prefix, "frame"])
    date = datetime.date(2026, 1, 1).strftime("%Y%m%d")  # fixed: same seed, same bytes
    with atomic_path(folder, overwrite) as tmp:
        tmp.mkdir(parents=True)
        for k in range(pixels.shape[0]):
            sop_uid = generate_uid(entropy_srcs=[prefix, "sop", str(k)])
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
            ds.Modality = "CT"
            ds.PatientName, ds.PatientID = "Phantom^OsteoScreen", patient_id
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.StudyDate = ds.SeriesDate = date
            ds.SeriesDescription = description
            ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + lps[:3, 2] * k]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*dirs[:, 0], *dirs[:, 1])]
            ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
            ds.SliceThickness = f"{spacing[2]:.6f}"
            if kvp is not None:
                ds.KVP = f"{kvp:g}"
            ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "HU"
            if padding_hu is not None:
                ds.PixelPaddingValue = int(padding_hu)  # VR SS: pixels are signed
            ds.PixelData = pixels[k].tobytes()
            ds.save_as(tmp / f"CT{k + 1:05d}.dcm", enforce_file_format=True)
    return folder
