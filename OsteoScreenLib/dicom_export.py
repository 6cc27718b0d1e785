"""DICOM output for PACS: a Segmentation (SEG) of L1 and L2 and a TID 1500 Measurement Report (SR).

Both are written with highdicom from the headers of the source CT series (read with
pydicom, without pixels) and reference it: every SEG frame derives from one CT slice
(its SOP Instance UID) and lies in that slice's plane; the SR's measurement groups
reference the SEG's segments and the CT series. See docs/dicom_output.md.

Geometry: OsteoScreen's label maps are :class:`Volume` on the CT grid (k, j, i array
order, RAS voxel-to-world); DICOM is LPS. Each SEG frame is sampled from the label map
at the world position of the CT slice's own pixels (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing), so the frame order and orientation do not
depend on how the reader ordered the slices or axes.

Codes without a standard one use the private coding scheme ``99OSTEO`` (listed in
:data:`PRIVATE_CODES` and docs/dicom_output.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import __version__, registry
from .atomic import atomic_path
from .errors import OsteoScreenError
from .volume import RAS_FROM_LPS, Volume

SEG_NAME, SR_NAME = "seg.dcm", "sr.dcm"
MANUFACTURER = "OsteoScreen"
PRIVATE_SCHEME = "99OSTEO"
SEGMENTATION_MODEL_NAME = "OsteoScreen L1/L2 segmentation"
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902
GRID_TOLERANCE = 0.01  # in voxels: a CT slice's pixels must fall on the label map's voxel centres

# Patient and study attributes (type 2: present, maybe empty) that the SEG and SR copy from the
# CT; some exports (e.g. anonymised ones, OsteoScreen's phantoms) leave them out.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")

# (code value, meaning) of the 99OSTEO coding scheme: what has no standard code.
PRIVATE_CODES: dict[str, tuple[str, str]] = {
    "roi_method": ("TRAB-ROI", "Trabecular ROI in the central vertebral body"),
    "bmd": ("EST-VBMD", "Estimated volumetric BMD (QCT equivalent)"),
    "class": ("QCT-CLASS", "QCT bone density class"),
    "normal": ("NORMAL", "Normal bone density (QCT BMD > 120 mg/cm3)"),
    "osteopenia": ("OSTEOPENIA", "Osteopenia (QCT BMD 80-120 mg/cm3)"),
    "osteoporosis": ("OSTEOPOROSIS", "Osteoporosis (QCT BMD < 80 mg/cm3)"),
    "p_normal": ("P-NORMAL", "Probability of normal bone density"),
    "p_osteopenia": ("P-OSTEOPENIA", "Probability of osteopenia"),
    "p_osteoporosis": ("P-OSTEOPOROSIS", "Probability of osteoporosis"),
    "kvp_source": ("KVP-SOURCE", "Source of the tube voltage"),
    "kvp_header": ("KVP-HEADER", "DICOM header"),
    "kvp_user": ("KVP-USER", "Given by the user"),
    "kvp_unknown": ("KVP-UNKNOWN", "Unknown"),
    "contrast_none": ("CONTRAST-NONE", "None (unenhanced)"),
    "contrast_arterial": ("CONTRAST-ARTERIAL", "Arterial phase"),
    "contrast_portal": ("CONTRAST-PORTAL", "Portal venous phase"),
    "contrast_unknown": ("CONTRAST-UNKNOWN", "Unknown"),
    "patient_group": ("BONE-DENSITY", "Bone density assessment"),
    # vertebral fracture assessment (fracture.py): Genant HK et al., J Bone Miner Res 1993
    "height_method": ("BODY-HEIGHT", "Body height along the endplate normal, mid-sagittal slab"),
    "height_loss": ("HEIGHT-LOSS", "Vertebral body height loss (largest of wedge, biconcave, crush)"),
    "genant_grade": ("GENANT-GRADE", "Genant semiquantitative vertebral fracture grade"),
    "genant_0": ("GENANT-0", "Genant grade 0 (normal)"),
    "genant_1": ("GENANT-1", "Genant grade 1 (mild, 20-25 % height loss)"),
    "genant_2": ("GENANT-2", "Genant grade 2 (moderate, 25-40 % height loss)"),
    "genant_3": ("GENANT-3", "Genant grade 3 (severe, over 40 % height loss)"),
    "fracture_type": ("VFX-TYPE", "Vertebral fracture type"),
    "wedge": ("WEDGE", "Wedge (anterior height lost)"),
    "biconcave": ("BICONCAVE", "Biconcave (middle height lost)"),
    "crush": ("CRUSH", "Crush (whole body lower than its neighbour)"),
    "fracture_L1": ("VFX-L1", "L1 vertebral fracture (Genant)"),
    "fracture_L2": ("VFX-L2", "L2 vertebral fracture (Genant)"),
}

# Where each height of fracture.py was measured: SCT topographical modifiers of CID 2 (Anatomic Modifier).
HEIGHT_SITES = {"anterior": ("255549009", "Anterior"), "middle": ("26216008", "Central"),
                "posterior": ("255551008", "Posterior")}
HEIGHT_CODE = ("121207", "DCM", "Height")  # CID 7470 Linear Measurement


def private_code(key: str):
    from highdicom.sr import CodedConcept

    value, meaning = PRIVATE_CODES[key]
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


# --------------------------------------------------------------------------- the source series


def source_headers(folder: str | os.PathLike, series_files: list | None = None) -> list:
    """Headers (no pixels) of the CT series that OsteoScreen reads from ``folder`` (of only
    ``series_files`` where a study's selection chose them)."""
    import pydicom

    from .dicom_io import select_ct_series

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in select_ct_series(Path(folder), series_files)]
    for ds in headers:  # in memory only: what the SEG and SR copy must be present, if empty
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return headers


def label_frames(labels: Volume, sources: list) -> np.ndarray:
    """The label map on each source slice's own pixel grid: (slices, rows, columns), uint8.

    Raises OsteoScreenError when a slice's pixels are not voxel centres of the label map
    (the label map is not on this series' grid).
    """
    lps_to_ijk = labels.ras_to_ijk @ RAS_FROM_LPS
    shape_kji = np.array(labels.array.shape[:3])
    frames = []
    for ds in sources:
        iop = np.asarray(ds.ImageOrientationPatient, float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        rows, cols = int(ds.Rows), int(ds.Columns)
        origin = lps_to_ijk @ np.r_[np.asarray(ds.ImagePositionPatient, float), 1.0]
        d_col = lps_to_ijk[:3, :3] @ (iop[:3] * col_spacing)  # one column to the right
        d_row = lps_to_ijk[:3, :3] @ (iop[3:] * row_spacing)  # one row down
        r, c = np.mgrid[0:rows, 0:cols]
        ijk = origin[:3, None, None] + d_col[:, None, None] * c + d_row[:, None, None] * r
        index = np.round(ijk)
        if np.abs(ijk - index).max() > GRID_TOLERANCE:
            raise OsteoScreenError(f"slice {ds.SOPInstanceUID} does not lie on the segmentation's grid; "
                                   "cannot write a DICOM SEG for this series")
        i, j, k = index.astype(np.int64)
        if min(i.min(), j.min(), k.min()) < 0 or (np.array([k.max(), j.max(), i.max()]) >= shape_kji).any():
            raise OsteoScreenError(f"slice {ds.SOPInstanceUID} lies outside the segmentation's grid; "
                                   "cannot write a DICOM SEG for this series")
        frames.append(np.asarray(labels.array[k, j, i]))
    return np.stack(frames).astype(np.uint8)


# --------------------------------------------------------------------------- SEG


def _algorithm(source: str | None):
    """(algorithm type, identification) of the segments from the result's segmentation source."""
    import highdicom as hd
    from highdicom.sr import CodedConcept

    if source and source.startswith("model "):
        family = CodedConcept("123110", "DCM", "Artificial Intelligence")
        ident = hd.AlgorithmIdentificationSequence(name=SEGMENTATION_MODEL_NAME, family=family,
                                                   version=source.split(" ", 1)[1], source=MANUFACTURER)
        return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, ident
    return hd.seg.SegmentAlgorithmTypeValues.MANUAL, None  # a reader's segmentation


def build_seg(labels: Volume, sources: list, segmentation_source: str | None, uid_seed: str | None = None):
    """A binary DICOM SEG of the label map: segment n = VERTEBRAE label n (L1 = 1, L2 = 2)."""
    import highdicom as hd
    from highdicom.sr import CodedConcept

    frames = label_frames(labels, sources)
    present = [v for v in registry.VERTEBRAE if (frames == v.label).any()]
    if not present:
        raise OsteoScreenError("the segmentation holds no L1 or L2 voxels; no DICOM SEG written")
    algorithm_type, algorithm = _algorithm(segmentation_source)
    category = CodedConcept(registry.CATEGORY_CODE[1], registry.CATEGORY_CODE[0], registry.CATEGORY_CODE[2])
    descriptions = []
    for v in present:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=v.label, segment_label=v.name, segmented_property_category=category,
            segmented_property_type=CodedConcept(v.sct_code, "SCT", v.sct_meaning),
            algorithm_type=algorithm_type, algorithm_identification=algorithm, tracking_uid=_uid(uid_seed, "track", v.name),
            tracking_id=f"{v.name} vertebral body",
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * x) for x in v.color_rgb))))
    # Only the labels described: a label value without a segment would be refused.
    pixels = np.where(np.isin(frames, [v.label for v in present]), frames, 0).astype(np.uint8)
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=_uid(uid_seed, "seg-series"),
        series_number=SEG_SERIES_NUMBER, sop_instance_uid=_uid(uid_seed, "seg"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=SEGMENTATION_MODEL_NAME,
        software_versions=f"OsteoScreen {__version__}", device_serial_number="none",
        series_description="OsteoScreen L1-L2", content_label="L1L2", content_description="OsteoScreen L1 and L2",
        content_creator_name="OsteoScreen^", omit_empty_frames=True)


def _uid(seed: str | None, *parts: str) -> str:
    """A new UID, or (``seed`` given: tests) one that the same seed and parts always give."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[seed, *parts]) if seed is not None else generate_uid()


# --------------------------------------------------------------------------- SR


def build_sr(result, seg, sources: list, uid_seed: str | None = None):
    """A Comprehensive 3D SR holding a TID 1500 Measurement Report of ``result`` (a CaseResult).

    One measurement group for the patient, first (each vertebral fracture of Genant grade 1 or
    more at its top; class, the three probabilities, estimated BMD, model, tube voltage and its
    source, contrast phase), then one volumetric measurement group per vertebra (tracking UID
    and segment reference of its SEG segment; volume in ml, trabecular ROI mean in HU; where the
    result has a fracture assessment of it: anterior, middle and posterior heights in mm, height
    loss, Genant grade and, for grade 1 or more, the type).
    """
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    if result.prediction is None or result.model is None:
        raise OsteoScreenError("no classification to report; a DICOM SR needs a classified case")
    ucum = {"ml": CodedConcept("ml", "UCUM", "milliliter"), "mm": CodedConcept("mm", "UCUM", "millimeter"),
            "%": CodedConcept("%", "UCUM", "percent"), "hu": CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"),
            "mg/cm3": CodedConcept("mg/cm3", "UCUM", "mg/cm^3"), "1": CodedConcept("1", "UCUM", "no units"),
            "kV": CodedConcept("kV", "UCUM", "kilovolt")}
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(uid_seed, "device"), name="OsteoScreen", manufacturer_name=MANUFACTURER,
            model_name=f"{result.model.name} {result.model.version}"))
    context = hd.sr.ObservationContext(observer_person_context=None, observer_device_context=observer)
    classifier = hd.sr.AlgorithmIdentification(name=f"OsteoScreen classifier {result.model.name}",
                                               version=result.model.version)
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    groups = []
    for v in registry.VERTEBRAE:
        measured = result.vertebrae.get(v.name)
        if measured is None or v.label not in segments:
            continue
        segment = segments[v.label]
        site = hd.sr.FindingSite(CodedConcept(v.sct_code, "SCT", v.sct_meaning))
        measurements = []
        if measured.volume_ml is not None:
            measurements.append(hd.sr.Measurement(name=codes.SCT.Volume, value=float(measured.volume_ml),
                                                  unit=ucum["ml"]))
        if measured.trabecular_roi_hu is not None:
            measurements.append(hd.sr.Measurement(
                name=CodedConcept("112031", "DCM", "Attenuation Coefficient"), value=float(measured.trabecular_roi_hu),
                unit=ucum["hu"], derivation=codes.SCT.Mean, method=private_code("roi_method"), algorithm_id=classifier))
        fracture_measurements, evaluations = _fracture_items(v, result.fractures.get(v.name), ucum)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=segment.TrackingUID, identifier=segment.TrackingID),
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=v.label),
            finding_type=CodedConcept(v.sct_code, "SCT", v.sct_meaning), finding_sites=[site],
            finding_category=CodedConcept(registry.CATEGORY_CODE[1], registry.CATEGORY_CODE[0],
                                          registry.CATEGORY_CODE[2]),
            measurements=measurements + fracture_measurements, qualitative_evaluations=evaluations or None))
    # The patient group first: the summary, and the fractures (grade >= 1) at its top.
    groups.insert(0, _patient_group(result, classifier, ucum, uid_seed))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=CodedConcept("25045-6", "LN", "CT unspecified body region"),
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=report[0], series_instance_uid=_uid(uid_seed, "sr-series"),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=_uid(uid_seed, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=sr_series_description(result), institution_name=None)
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme():
    """The declaration of the 99OSTEO scheme (Coding Scheme Identification Sequence item)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "OsteoScreen private codes (docs/dicom_output.md)"
    item.CodingSchemeResponsibleOrganization = "OsteoScreen project"
    return item


def fractured(result) -> dict:
    """The vertebrae of ``result`` with a Genant grade of 1 or more: name -> FractureResult."""
    return {n: f for n, f in (result.fractures or {}).items() if f.grade}


def sr_series_description(result) -> str:
    """The SR's series description, which PACS lists show: a fracture first (at most 64 characters)."""
    found = fractured(result)
    if not found:
        return "OsteoScreen bone density"
    return ("FRACTURE " + ", ".join(f"{n} Genant {f.grade}" for n, f in found.items()) + " - OsteoScreen")[:64]


def _fracture_items(vertebra, fracture, ucum: dict) -> tuple[list, list]:
    """(measurements, qualitative evaluations) of a vertebra's fracture assessment; none where it
    was not assessed (no ``fracture``, or grade None: a body cut by the scan's edge or not found)."""
    import highdicom as hd
    from highdicom.sr import CodedConcept

    if fracture is None or fracture.grade is None:
        return [], []
    measurements = []
    for position, (code, meaning) in HEIGHT_SITES.items():
        value = getattr(fracture, f"{position}_mm")
        if value is None:
            continue
        site = hd.sr.FindingSite(CodedConcept(vertebra.sct_code, "SCT", vertebra.sct_meaning),
                                 topographical_modifier=CodedConcept(code, "SCT", meaning))
        measurements.append(hd.sr.Measurement(name=CodedConcept(*HEIGHT_CODE), value=float(value), unit=ucum["mm"],
                                              finding_sites=[site], method=private_code("height_method")))
    if fracture.height_loss is not None:
        measurements.append(hd.sr.Measurement(name=private_code("height_loss"),
                                              value=round(100 * fracture.height_loss, 1), unit=ucum["%"]))
    evaluations = [hd.sr.QualitativeEvaluation(private_code("genant_grade"), private_code(f"genant_{fracture.grade}"))]
    if fracture.grade and fracture.type in registry.FRACTURE_TYPES:
        evaluations.append(hd.sr.QualitativeEvaluation(private_code("fracture_type"), private_code(fracture.type)))
    return measurements, evaluations


def _patient_group(result, classifier, ucum: dict, uid_seed: str | None):
    import highdicom as hd
    from highdicom.sr import CodedConcept

    p, i = result.prediction, result.input
    measurements = [hd.sr.Measurement(name=private_code("bmd"), value=float(p.bmd_mg_cm3), unit=ucum["mg/cm3"],
                                      algorithm_id=classifier)]
    measurements += [hd.sr.Measurement(name=private_code(f"p_{c}"), value=float(p.probabilities[c]), unit=ucum["1"],
                                       algorithm_id=classifier) for c in registry.CLASSES]
    if i.tube_voltage_kvp is not None:
        measurements.append(hd.sr.Measurement(name=CodedConcept("113733", "DCM", "KVP"),
                                              value=float(i.tube_voltage_kvp), unit=ucum["kV"]))
    source = str(i.tube_voltage_source or "unknown")
    kvp_source = "kvp_header" if source.startswith("DICOM header") else "kvp_user" if source == "user" else "kvp_unknown"
    evaluations = [  # a fracture first: a fragility fracture means osteoporosis whatever the BMD
        hd.sr.QualitativeEvaluation(private_code(f"fracture_{n}"), private_code(f"genant_{f.grade}"))
        for n, f in fractured(result).items() if f"fracture_{n}" in PRIVATE_CODES
    ] + [
        hd.sr.QualitativeEvaluation(private_code("class"), private_code(p.class_name)),
        hd.sr.QualitativeEvaluation(private_code("kvp_source"), private_code(kvp_source)),
        hd.sr.QualitativeEvaluation(CodedConcept("109058", "DCM", "Contrast Phase"),
                                    private_code(f"contrast_{i.contrast_phase or 'unknown'}")),
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(uid_seed, "track", "patient"),
                                                     identifier="Bone density (L1-L2)"),
        finding_type=private_code("patient_group"), algorithm_id=classifier, measurements=measurements,
        qualitative_evaluations=evaluations)


# --------------------------------------------------------------------------- files


def write_dataset(ds, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a DICOM dataset atomically (nothing replaced unless ``overwrite``)."""
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def is_dicom_input(path) -> bool:
    """A DICOM series folder (an empty attribute is no path: Path("") would be the working directory)."""
    return bool(path) and Path(path).is_dir()


def write_dicom_outputs(ct_folder, labels: Volume, result, folder, overwrite: bool = False,
                        segmentation_source: str | None = None, seg_name: str = SEG_NAME,
                        sr_name: str | None = SR_NAME, uid_seed: str | None = None,
                        series_files: list | None = None) -> dict[str, str]:
    """Write the SEG (and, for a classified ``result``, the SR) of a DICOM case into ``folder``
    (``sr_name`` None: no SR).

    Returns {"seg": name, "sr": name} of the files written. Both are built before either is
    written, so a failure leaves neither.
    """
    try:
        import highdicom  # noqa: F401  (a runtime dependency; inside Slicer it may not be installed yet)
    except ImportError:
        raise OsteoScreenError("highdicom is not installed, so no DICOM SEG/SR can be written; "
                               "install it (pip install highdicom) to have them") from None
    folder = Path(folder)
    classified = result is not None and result.prediction is not None and result.model is not None
    targets = [folder / seg_name] + ([folder / sr_name] if sr_name and classified else [])
    for t in targets:
        if t.exists() and not overwrite:
            raise OsteoScreenError(f"{t}: already exists; pass --overwrite to replace it")
    sources = source_headers(ct_folder, series_files)
    source = segmentation_source if segmentation_source is not None else getattr(result, "segmentation_source", None)
    seg = build_seg(labels, sources, source, uid_seed)
    sr = build_sr(result, seg, sources, uid_seed) if len(targets) > 1 else None
    written = {"seg": seg_name}
    write_dataset(seg, folder / seg_name, overwrite)
    if sr is not None:
        write_dataset(sr, folder / sr_name, overwrite)
        written["sr"] = sr_name
    return written
