"""DICOM studies as an archive holds them, made from a phantom's DICOM series.

A phantom written with ``fmt="dicom"`` is one series in ``ct/``. A hospital's study has more: the
same acquisition reconstructed with a lung kernel and as thick slices, a scout, a dose report.
:func:`new_series` copies a series as a new one with rewritten headers, :func:`dose_report` writes
a dose SR of the same study, and :func:`write_study` builds a whole study of that kind. Used by the
study-selection tests and the archive benchmark (``training/studies/archive_benchmark.py``).
"""

from __future__ import annotations

from pathlib import Path

SR_DOSE_REPORT = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
ORIGINAL = ["ORIGINAL", "PRIMARY", "AXIAL"]
LOCALIZER = ["ORIGINAL", "PRIMARY", "LOCALIZER"]


def new_series(src: Path, dst: Path, tag: str, files=None, **fields) -> list[Path]:
    """A copy of the series in ``src`` (or of ``files``) as a new series in ``dst``: its own
    SeriesInstanceUID and SOPInstanceUIDs (derived from the paths and ``tag``), ``fields`` set."""
    import pydicom
    from pydicom.uid import generate_uid

    dst.mkdir(parents=True)
    series_uid = generate_uid(entropy_srcs=[str(src), tag])
    out = []
    for n, p in enumerate(sorted(Path(src).glob("*.dcm")) if files is None else files):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(p), tag])
        for k, v in fields.items():
            setattr(ds, k, v)
        q = dst / f"{tag}{n:04d}.dcm"
        ds.save_as(q)
        out.append(q)
    return out


def dose_report(like: Path, path: Path) -> None:
    """A radiation dose SR of the study of the file ``like`` (no image, no geometry)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = pydicom.dcmread(like, stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SR_DOSE_REPORT
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path), "dose"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SR_DOSE_REPORT, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "SR", "Dose Report", 999
    ds.StudyInstanceUID = src.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "dose-series"])
    ds.PatientID = src.PatientID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_study(ct: Path, study: Path, patient_id: str, thick_mm: float = 3.0) -> dict[str, str]:
    """Build in ``study`` (a new folder) a study of five series from the phantom series in ``ct``.

    ``s1`` a scout (2 slices, ImageType LOCALIZER), ``s2`` the soft-tissue series (B30f; the one
    the rules choose), ``s3`` a lung-kernel copy (B60f), ``s4`` a thick-slice copy (every k-th
    slice, k the nearest whole multiple of the spacing to ``thick_mm``, at least 2; B30f), ``s9``
    a dose SR. Returns the SeriesInstanceUID of each (keys scout, soft, lung, thick, dose) and the
    StudyInstanceUID (key study).
    """
    import pydicom

    files = sorted(Path(ct).glob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    spacing = float(getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 0) or 1.0)
    step = max(2, round(thick_mm / spacing))
    soft = new_series(ct, study / "s2", "soft", ConvolutionKernel="B30f", ImageType=ORIGINAL, PatientID=patient_id,
                      SeriesDescription=f"Abdomen {spacing:g} B30f", SeriesNumber=2)
    lung = new_series(ct, study / "s3", "lung", ConvolutionKernel="B60f", ImageType=ORIGINAL, PatientID=patient_id,
                      SeriesDescription=f"Lung {spacing:g} B60f", SeriesNumber=3)
    thick = new_series(ct, study / "s4", "thick", files=files[::step], ConvolutionKernel="B30f", ImageType=ORIGINAL,
                       PatientID=patient_id, SeriesDescription=f"Abdomen {step * spacing:g} B30f", SeriesNumber=4,
                       SliceThickness=step * spacing, SpacingBetweenSlices=step * spacing)
    middle = soft[len(soft) // 2: len(soft) // 2 + 2]
    scout = new_series(ct, study / "s1", "scout", files=middle, SeriesDescription="Topogram 0.6 T20f",
                       ImageType=LOCALIZER, PatientID=patient_id, SeriesNumber=1)
    dose_report(soft[0], study / "s9" / "dose.dcm")

    def uid(path: Path, key: str = "SeriesInstanceUID") -> str:
        return str(getattr(pydicom.dcmread(path, stop_before_pixels=True), key))

    return {"study": uid(soft[0], "StudyInstanceUID"), "soft": uid(soft[0]), "lung": uid(lung[0]),
            "thick": uid(thick[0]), "scout": uid(scout[0]), "dose": uid(study / "s9" / "dose.dcm")}
