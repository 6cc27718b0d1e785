"""DICOM SEG and SR output (dicom_export.py): geometry, codes and values read back with
highdicom/pydicom everywhere, and dciodvfy (dicom3tools) where it is installed."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from OsteoScreenLib import registry
from OsteoScreenLib.ct_io import read_ct
from OsteoScreenLib.dicom_export import (PRIVATE_SCHEME, build_seg, label_frames, source_headers,
                                         write_dicom_outputs)
from OsteoScreenLib.dicom_io import write_dicom_series
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.result import CaseResult, InputInfo, ModelInfo, Prediction, VertebraResult
from OsteoScreenLib.volume import RAS_FROM_LPS, Volume

hd = pytest.importorskip("highdicom")
import pydicom  # noqa: E402

LIDC = Path("/work/shared/data/real/lidc-idri-0001")


def a_result(segmentation_source="model 0.8.0", kvp=120, kvp_source="DICOM header", contrast="portal"):
    return CaseResult(
        input=InputInfo("ct", None, [1, 1, 1], [1.0, 1.0, 1.0], kvp, kvp_source, contrast),
        segmentation_source=segmentation_source,
        vertebrae={"L1": VertebraResult(31.4, [0, 0, 0], 151.2, 90.0), "L2": VertebraResult(35.9, [0, 0, 0], 139.8, 88.0)},
        model=ModelInfo("l1l2", "0.3.1", "0" * 64),
        prediction=Prediction("osteopenia", {"normal": 0.21, "osteopenia": 0.7, "osteoporosis": 0.09}, 101.5))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small DICOM phantom (training preset) and its label map on the grid it was written from."""
    from OsteoScreenLib.phantom import generate_case, write_case

    case = generate_case(11, "training")
    folder = write_case(case, tmp_path_factory.mktemp("dicom") / "case", fmt="dicom")
    return case, folder / "ct"


@pytest.fixture(scope="module")
def exported(phantom, tmp_path_factory):
    case, ct_folder = phantom
    out = tmp_path_factory.mktemp("out")
    written = write_dicom_outputs(ct_folder, case.labels, a_result(), out)
    assert written == {"seg": "seg.dcm", "sr": "sr.dcm"}
    return case, ct_folder, out


def ct_files_by_uid(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[ds.SOPInstanceUID] = (p, ds)
    return out


def frames_by_slice(seg_path: Path) -> dict:
    """{(referenced CT SOP UID, segment number): (frame pixels, ImagePositionPatient)} of a SEG file."""
    ds = pydicom.dcmread(seg_path)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    out = {}
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        out[(uid, segment)] = (pixels[n], ipp)
    return out


# --------------------------------------------------------------------------- SEG


def test_each_seg_frame_lies_on_its_ct_slice_and_holds_that_slices_labels(exported):
    case, ct_folder, out = exported
    cts = ct_files_by_uid(ct_folder)
    frames = frames_by_slice(out / "seg.dcm")
    seg = pydicom.dcmread(out / "seg.dcm", stop_before_pixels=True)
    shared = seg.SharedFunctionalGroupsSequence[0]
    first = next(iter(cts.values()))[1]
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in first.ImageOrientationPatient], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in first.PixelSpacing], atol=1e-6)
    expected = set()
    for uid, (path, ds) in cts.items():
        k = int(path.stem[2:]) - 1  # write_dicom_series writes array[k] as CT{k+1:05d}.dcm
        for v in registry.VERTEBRAE:
            mask = case.labels.array[k] == v.label
            if mask.any():
                expected.add((uid, v.label))
                pixels, ipp = frames[(uid, v.label)]
                np.testing.assert_allclose(ipp, [float(x) for x in ds.ImagePositionPatient], atol=1e-4)
                np.testing.assert_array_equal(pixels.astype(bool), mask)
    assert set(frames) == expected  # empty frames are left out, none is missing


def test_seg_segments_carry_names_codes_and_the_algorithm(exported):
    _, ct_folder, out = exported
    seg = hd.seg.segread(out / "seg.dcm")
    ct = pydicom.dcmread(next(ct_folder.iterdir()), stop_before_pixels=True)
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == ct.StudyInstanceUID and seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == len(list(ct_folder.iterdir()))
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2]
    # what Slicer's DICOMSegmentationPlugin reads before handing the file to dcmqi
    assert seg.Modality == "SEG" and seg.SeriesDescription and seg.SOPInstanceUID
    for s, v in zip(seg.SegmentSequence, registry.VERTEBRAE):
        assert s.SegmentLabel == v.name
        prop = s.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodingSchemeDesignator, prop.CodeValue) == ("SCT", v.sct_code)
        cat = s.SegmentedPropertyCategoryCodeSequence[0]
        assert (cat.CodingSchemeDesignator, cat.CodeValue) == registry.CATEGORY_CODE[:2]
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "OsteoScreen L1/L2 segmentation" and algo.AlgorithmVersion == "0.8.0"
        assert s.TrackingID == f"{v.name} vertebral body"
        assert len(s.RecommendedDisplayCIELabValue) == 3  # dcmqi turns it into the segment colour
    # highdicom's own reading of the pixels agrees: segment n is where the label map is n
    assert set(np.unique(seg.get_segment_numbers())) == {1, 2}


def test_a_readers_segmentation_is_marked_manual(phantom):
    case, ct_folder = phantom
    seg = build_seg(case.labels, source_headers(ct_folder), "file labels.nii.gz")
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"MANUAL"}
    assert all("SegmentationAlgorithmIdentificationSequence" not in s for s in seg.SegmentSequence)


def labels_on(grid: Volume, labels: Volume) -> Volume:
    """``labels`` resampled (nearest) onto ``grid`` through world space: an independent check
    of the geometry that dicom_export computes."""
    k, j, i = np.indices(grid.array.shape)
    ijk = np.c_[i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)]
    src = np.round((labels.ras_to_ijk @ grid.ijk_to_ras @ ijk.T).T[:, :3]).astype(int)
    inside = (src >= 0).all(1) & (src < np.array(labels.shape_ijk)).all(1)  # elsewhere 0
    out = np.zeros(len(src), labels.array.dtype)
    out[inside] = labels.array[src[inside, 2], src[inside, 1], src[inside, 0]]
    return grid.with_array(out.reshape(grid.array.shape))


@pytest.mark.parametrize("flips", [(1, 1, 1), (1, 1, -1), (-1, -1, 1), (-1, 1, -1)])
def test_frames_follow_the_dicom_slices_whatever_order_the_reader_chose(tmp_path, flips):
    """A series written head-first or feet-first, rows and columns either way: the label map on the
    grid that read_ct makes of it (its own k order) still lands on the right slice and pixel."""
    shape = (7, 12, 16)
    m = np.diag([*(np.array([0.8, 0.9, 2.5]) * flips), 1.0])
    m[:3, 3] = [-10.0, 20.0, -300.0]
    hu = np.full(shape, -1000, np.int16)
    hu[:, 2:10, 3:13] = 300
    written = Volume(hu, m)
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 3:6, 4:9] = 1  # asymmetric in every axis
    labels[4:6, 5:7, 8:11] = 2
    labels[5, 6, 10] = 0
    folder = write_dicom_series(written, tmp_path / "ct", uid_seed=3)
    ct = read_ct(folder)
    on_read_grid = labels_on(ct, Volume(labels, m))
    frames = label_frames(on_read_grid, sorted(source_headers(folder), key=lambda ds: int(ds.InstanceNumber)))
    np.testing.assert_array_equal(frames, labels)  # file k (InstanceNumber k + 1) was array[k]


def test_a_label_map_off_the_series_grid_is_refused_in_one_line(phantom):
    case, ct_folder = phantom
    shifted = Volume(case.labels.array, case.labels.ijk_to_ras.copy())
    shifted.ijk_to_ras[0, 3] += 0.4 * shifted.spacing_mm[0]
    with pytest.raises(OsteoScreenError, match="does not lie on the segmentation's grid"):
        build_seg(shifted, source_headers(ct_folder), "model 0.8.0")
    empty = case.labels.with_array(np.zeros_like(case.labels.array))
    with pytest.raises(OsteoScreenError, match="no L1 or L2 voxels"):
        build_seg(empty, source_headers(ct_folder), "model 0.8.0")


def test_existing_files_are_not_overwritten_unless_asked(exported, phantom):
    case, ct_folder, out = exported
    before = (out / "seg.dcm").read_bytes()
    with pytest.raises(OsteoScreenError, match="already exists; pass --overwrite"):
        write_dicom_outputs(ct_folder, case.labels, a_result(), out)
    assert (out / "seg.dcm").read_bytes() == before
    copy = out.parent / "copy"
    shutil.copytree(out, copy)
    write_dicom_outputs(ct_folder, case.labels, a_result(), copy, overwrite=True)
    assert pydicom.dcmread(copy / "seg.dcm").SOPInstanceUID != pydicom.dcmread(out / "seg.dcm").SOPInstanceUID
    assert not [p for p in copy.iterdir() if p.name.startswith(".tmp")]


# --------------------------------------------------------------------------- SR


def content_items(ds):
    """Every content item of an SR, depth first."""
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from content_items(item)


def code_of(item, attr="ConceptNameCodeSequence"):
    c = getattr(item, attr)[0]
    return (c.CodingSchemeDesignator, c.CodeValue)


def numeric(group, scheme_value):
    values = [float(i.MeasuredValueSequence[0].NumericValue) for i in group.ContentSequence
              if i.ValueType == "NUM" and code_of(i) == scheme_value]
    assert len(values) == 1, scheme_value
    return values[0]


def coded(group, scheme_value):
    values = [code_of(i, "ConceptCodeSequence") for i in group.ContentSequence
              if i.ValueType == "CODE" and code_of(i) == scheme_value]
    assert len(values) == 1, scheme_value
    return values[0]


def measurement_groups(sr) -> list:
    return [i for i in content_items(sr) if i.ValueType == "CONTAINER" and code_of(i) == ("DCM", "125007")]


def group_of(sr, tracking_id: str):
    (group,) = [g for g in measurement_groups(sr) if any(i.ValueType == "TEXT" and i.TextValue == tracking_id
                                                          for i in g.ContentSequence)]
    return group


def patient_group(sr):
    return group_of(sr, "Bone density (L1-L2)")


def test_sr_measurements_equal_the_result_and_point_at_the_seg_segments(exported):
    _, ct_folder, out = exported
    result = a_result()
    sr = pydicom.dcmread(out / "sr.dcm")
    seg = pydicom.dcmread(out / "seg.dcm", stop_before_pixels=True)
    ct = pydicom.dcmread(next(ct_folder.iterdir()), stop_before_pixels=True)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == ct.StudyInstanceUID and sr.PatientID == ct.PatientID
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    groups = measurement_groups(sr)
    assert len(groups) == 3 and groups[0] is patient_group(sr)  # the summary first
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    frames, cts = frames_by_slice(out / "seg.dcm"), set(ct_files_by_uid(ct_folder))
    for v in registry.VERTEBRAE:
        group = next(g for g in groups if any(i.ValueType == "TEXT" and i.TextValue == f"{v.name} vertebral body"
                                              for i in g.ContentSequence))
        uids = [i.UID for i in group.ContentSequence if i.ValueType == "UIDREF" and code_of(i) == ("DCM", "112040")]
        assert uids == [segments[v.label].TrackingUID]  # the measurement group's tracking UID is its segment's
        ref = [i for i in group.ContentSequence if i.ValueType == "IMAGE" and code_of(i) == ("DCM", "121191")][0]
        sop = ref.ReferencedSOPSequence[0]
        assert sop.ReferencedSOPInstanceUID == seg.SOPInstanceUID and int(sop.ReferencedSegmentNumber) == v.label
        sources = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in group.ContentSequence
                   if i.ValueType == "IMAGE" and code_of(i) == ("DCM", "121233")}  # source images for segmentation
        assert sources == {uid for uid, s in frames if s == v.label} and sources <= cts
        assert coded(group, ("DCM", "121071")) == ("SCT", v.sct_code)  # finding
        assert numeric(group, ("SCT", "118565006")) == pytest.approx(result.vertebrae[v.name].volume_ml)
        assert numeric(group, ("DCM", "112031")) == pytest.approx(result.vertebrae[v.name].trabecular_roi_hu)
    patient = patient_group(sr)
    p = result.prediction
    assert coded(patient, (PRIVATE_SCHEME, "QCT-CLASS")) == (PRIVATE_SCHEME, "OSTEOPENIA")
    assert numeric(patient, (PRIVATE_SCHEME, "EST-VBMD")) == pytest.approx(p.bmd_mg_cm3)
    for c in registry.CLASSES:
        assert numeric(patient, (PRIVATE_SCHEME, f"P-{c.upper()}")) == pytest.approx(p.probabilities[c])
    assert numeric(patient, ("DCM", "113733")) == 120.0  # KVP
    assert coded(patient, (PRIVATE_SCHEME, "KVP-SOURCE")) == (PRIVATE_SCHEME, "KVP-HEADER")
    assert coded(patient, ("DCM", "109058")) == (PRIVATE_SCHEME, "CONTRAST-PORTAL")
    algo = [i.TextValue for i in content_items(patient) if i.ValueType == "TEXT" and code_of(i) == ("DCM", "111001")]
    version = [i.TextValue for i in content_items(patient) if i.ValueType == "TEXT" and code_of(i) == ("DCM", "111003")]
    assert algo[0] == "OsteoScreen classifier l1l2" and version[0] == "0.3.1"
    # what Slicer's DICOMTID1500Plugin reads: Modality SR, TID 1500, the SEG in the evidence of this report
    assert sr.Modality == "SR"
    evidence = {(ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID)
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert ("1.2.840.10008.5.1.4.1.1.66.4", seg.SOPInstanceUID) in evidence
    assert cts <= {uid for _, uid in evidence}
    # highdicom parses it back as a TID 1500 report with the three groups
    report = hd.sr.srread(out / "sr.dcm")
    assert len(report.content.get_volumetric_roi_measurement_groups()) == 2


def test_an_unknown_tube_voltage_and_phase_are_reported_as_unknown(phantom, tmp_path):
    case, ct_folder = phantom
    write_dicom_outputs(ct_folder, case.labels, a_result(kvp=None, kvp_source="unknown", contrast=None), tmp_path)
    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    patient = patient_group(sr)
    assert not [i for i in patient.ContentSequence if i.ValueType == "NUM" and code_of(i) == ("DCM", "113733")]
    assert coded(patient, (PRIVATE_SCHEME, "KVP-SOURCE")) == (PRIVATE_SCHEME, "KVP-UNKNOWN")
    assert coded(patient, ("DCM", "109058")) == (PRIVATE_SCHEME, "CONTRAST-UNKNOWN")


# --------------------------------------------------------------------------- fractures in the SR

HEIGHT = ("DCM", "121207")
SITE_MODIFIER = {"255549009": "anterior", "26216008": "middle", "255551008": "posterior"}  # SCT, CID 2


@pytest.fixture(scope="module")
def fractured(tmp_path_factory):
    """A DICOM phantom whose L1 is crushed (Genant grade 3, as test_fracture shows), its SEG and SR,
    and the result they were written from (fractures measured on the phantom's labels)."""
    from OsteoScreenLib.fracture import assess_fractures
    from OsteoScreenLib.phantom import render_case, sample_parameters, write_case

    params = sample_parameters(3, "chest-box")
    params["spine"]["fractures"] = [{"level": "L1", "type": "crush", "height_loss": 0.5}]
    case = render_case(params)
    ct_folder = write_case(case, tmp_path_factory.mktemp("fractured") / "case", fmt="dicom") / "ct"
    result = a_result()
    result.fractures = assess_fractures(case.labels)
    assert (result.fractures["L1"].grade, result.fractures["L1"].type) == (3, "crush")
    assert result.fractures["L2"].grade == 0
    out = tmp_path_factory.mktemp("fractured-out")
    assert write_dicom_outputs(ct_folder, case.labels, result, out) == {"seg": "seg.dcm", "sr": "sr.dcm"}
    return result, out


def private(key: str):
    from highdicom.sr import CodedConcept

    from OsteoScreenLib.dicom_export import PRIVATE_CODES

    return CodedConcept(PRIVATE_CODES[key][0], PRIVATE_SCHEME, PRIVATE_CODES[key][1])


def test_sr_heights_grade_and_type_equal_the_result_read_back_with_highdicom(fractured):
    from highdicom.sr import CodedConcept

    result, out = fractured
    report = hd.sr.srread(out / "sr.dcm")
    seg = pydicom.dcmread(out / "seg.dcm", stop_before_pixels=True)
    segments = {s.TrackingID: s for s in seg.SegmentSequence}
    groups = {g.tracking_identifier: g for g in report.content.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {"L1 vertebral body", "L2 vertebral body"}
    for name, f in result.fractures.items():
        group = groups[f"{name} vertebral body"]
        segment = segments[f"{name} vertebral body"]
        assert group.tracking_uid == segment.TrackingUID  # the heights belong to this SEG segment
        heights = {}
        for m in group.get_measurements(name=CodedConcept(*HEIGHT[::-1], "Height")):
            (site,) = m.finding_sites
            assert site.value.value == segment.SegmentedPropertyTypeCodeSequence[0].CodeValue  # the vertebra
            assert m.unit.value == "mm" and m.method.value == "BODY-HEIGHT"
            heights[SITE_MODIFIER[site.topographical_modifier.value]] = m.value
        assert heights == pytest.approx({"anterior": f.anterior_mm, "middle": f.middle_mm, "posterior": f.posterior_mm})
        (loss,) = group.get_measurements(name=private("height_loss"))
        assert loss.value == pytest.approx(100 * f.height_loss) and loss.unit.value == "%"
        (grade,) = group.get_qualitative_evaluations(name=private("genant_grade"))
        assert grade.value == private(f"genant_{f.grade}")
        types = group.get_qualitative_evaluations(name=private("fracture_type"))
        assert [t.value for t in types] == ([private(f.type)] if f.grade else [])  # no type for grade 0
    # the values are the result's, not rounded away: L1 was crushed to about half of L2
    assert result.fractures["L1"].posterior_mm < 0.6 * result.fractures["L2"].posterior_mm


def test_a_fracture_is_what_the_sr_shows_first(fractured):
    """PACS list series by their description and render an SR's content tree in order: the fracture
    is in the series description, and the first item of the first group that is a finding."""
    result, out = fractured
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.SeriesDescription == "FRACTURE L1 Genant 3 - OsteoScreen"
    first = measurement_groups(sr)[0]
    assert first is patient_group(sr)
    evaluations = [i for i in first.ContentSequence if i.ValueType == "CODE" and i.RelationshipType == "CONTAINS"
                   and code_of(i) != ("DCM", "121071")]  # after the group's finding type
    assert code_of(evaluations[0]) == (PRIVATE_SCHEME, "VFX-L1")
    assert code_of(evaluations[0], "ConceptCodeSequence") == (PRIVATE_SCHEME, "GENANT-3")
    assert [code_of(i) for i in evaluations].count((PRIVATE_SCHEME, "VFX-L2")) == 0  # L2 is grade 0


def test_an_sr_without_fractures_says_none_and_an_unassessed_body_gets_no_grade(phantom, tmp_path):
    """A body cut by the scan's edge (or not found) has no heights to trust: no height, loss or grade
    items for it, rather than a grade 0 that would read as 'no fracture'."""
    from OsteoScreenLib.result import FractureResult

    case, ct_folder = phantom
    result = a_result()
    result.fractures = {
        "L1": FractureResult(grade=0, height_loss=0.05, anterior_mm=26.0, middle_mm=25.0, posterior_mm=26.5,
                             losses={"wedge": 0.02, "biconcave": 0.05}),
        "L2": FractureResult(note="the body reaches the edge of the scan"),
    }
    write_dicom_outputs(ct_folder, case.labels, result, tmp_path)
    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    assert sr.SeriesDescription == "OsteoScreen bone density"
    l1, l2 = group_of(sr, "L1 vertebral body"), group_of(sr, "L2 vertebral body")
    assert sorted(numeric_all(l1, HEIGHT)) == [25.0, 26.0, 26.5]
    assert coded(l1, (PRIVATE_SCHEME, "GENANT-GRADE")) == (PRIVATE_SCHEME, "GENANT-0")
    assert not [i for i in l1.ContentSequence if code_of(i) == (PRIVATE_SCHEME, "VFX-TYPE")]
    assert numeric_all(l2, HEIGHT) == []
    assert not [i for i in l2.ContentSequence if code_of(i)[0] == PRIVATE_SCHEME and i.ValueType in ("CODE", "NUM")
                and code_of(i)[1] in ("GENANT-GRADE", "HEIGHT-LOSS", "VFX-TYPE")]
    assert numeric(l2, ("DCM", "112031")) == pytest.approx(139.8)  # the rest of the group is still there
    patient = patient_group(sr)
    assert not [i for i in patient.ContentSequence if code_of(i)[1].startswith("VFX-")]


def numeric_all(group, scheme_value) -> list[float]:
    return [float(i.MeasuredValueSequence[0].NumericValue) for i in group.ContentSequence
            if i.ValueType == "NUM" and code_of(i) == scheme_value]


def test_dciodvfy_finds_no_error_in_the_seg_and_sr_of_a_phantom_with_a_fracture(fractured):
    _, out = fractured
    for name in ("seg.dcm", "sr.dcm"):
        warnings = dciodvfy(out / name)
        unexpected = [w for w in warnings if "99OSTEO" not in w and "DICOMDIR" not in w]
        assert not unexpected, "\n".join(unexpected)
        print(f"fractured {name}: {len(warnings)} dciodvfy warnings", *sorted(set(warnings)), sep="\n  ")


# --------------------------------------------------------------------------- dciodvfy (dicom3tools)


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's messages on ``path``: fails the test on any error, returns the warnings."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools); "
                    "the read-back tests above still check the files")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(errors)
    return [line for line in lines if line.startswith("Warning")]


def test_dciodvfy_finds_no_error_in_the_seg_and_sr_of_a_phantom(exported):
    _, _, out = exported
    for name in ("seg.dcm", "sr.dcm"):
        warnings = dciodvfy(out / name)
        print(f"{name}: {len(warnings)} dciodvfy warnings", *sorted(set(warnings)), sep="\n  ")


@pytest.mark.skipif(not (LIDC / "ct").is_dir(), reason="the real chest CT lidc-idri-0001 is not at hand")
def test_the_real_chest_ct_gives_a_seg_on_its_slices_that_dciodvfy_accepts(tmp_path):
    """The LIDC-IDRI-0001 series with its TotalSegmentator L1/L2 (a grid whose second axis runs
    against the DICOM's): every SEG frame matches the labels looked up independently with nibabel."""
    nib = pytest.importorskip("nibabel")
    from OsteoScreenLib.pipeline import labels_from_file

    ct = read_ct(LIDC / "ct")
    labels = labels_from_file(LIDC / "labels.nii.gz", ct, registry.LABEL_MAPPINGS["totalsegmentator"])
    written = write_dicom_outputs(LIDC / "ct", labels, None, tmp_path, segmentation_source="file labels.nii.gz",
                                  sr_name=None)
    assert written == {"seg": "seg.dcm"}
    ref = nib.load(str(LIDC / "labels.nii.gz"))
    ref_array, ras_to_vox = np.asarray(ref.dataobj), np.linalg.inv(ref.affine)
    cts = ct_files_by_uid(LIDC / "ct")
    frames = frames_by_slice(tmp_path / "seg.dcm")
    assert {s for _, s in frames} == {1, 2}
    for (uid, segment), (pixels, ipp) in list(frames.items())[::5]:
        ds = cts[uid][1]
        np.testing.assert_allclose(ipp, [float(x) for x in ds.ImagePositionPatient], atol=1e-4)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        r, c = np.mgrid[0:ds.Rows:4, 0:ds.Columns:4]
        lps = np.asarray(ipp)[:, None, None] + iop[:3, None, None] * dc * c + iop[3:, None, None] * dr * r
        ras = RAS_FROM_LPS[:3, :3] @ lps.reshape(3, -1)
        vox = np.round(ras_to_vox[:3, :3] @ ras + ras_to_vox[:3, 3:]).astype(int)
        want = ref_array[vox[0], vox[1], vox[2]] == registry.LABEL_MAPPINGS["totalsegmentator"][f"L{segment}"]
        np.testing.assert_array_equal(pixels[::4, ::4].ravel().astype(bool), want)
    warnings = dciodvfy(tmp_path / "seg.dcm")
    print(f"lidc seg.dcm: {len(warnings)} dciodvfy warnings", *sorted(set(warnings)), sep="\n  ")


# --------------------------------------------------------------------------- the pipeline and the command line


def test_classify_on_a_dicom_series_writes_seg_and_sr_beside_result_json(phantom, tmp_path, capsys, bundled_models):
    from OsteoScreenLib.cli import main
    from OsteoScreenLib.ct_io import write_volume

    case, ct_folder = phantom
    labels = write_volume(case.labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "out" / "result.json"
    args = ["classify", str(ct_folder), "--segmentation", str(labels), "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["dicom"] == {"seg": "seg.dcm", "sr": "sr.dcm"}
    seg = hd.seg.segread(out.parent / "seg.dcm")
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"MANUAL"}  # the reader's file
    sr = pydicom.dcmread(out.parent / "sr.dcm")
    patient = patient_group(sr)
    assert numeric(patient, (PRIVATE_SCHEME, "EST-VBMD")) == pytest.approx(result["prediction"]["bmd_mg_cm3"])
    assert coded(patient, (PRIVATE_SCHEME, "QCT-CLASS"))[1] == result["prediction"]["class"].upper()
    l1 = [g for g in content_items(sr) if g.ValueType == "CONTAINER" and any(
        i.ValueType == "TEXT" and i.TextValue == "L1 vertebral body" for i in g.ContentSequence)][0]
    assert numeric(l1, ("DCM", "112031")) == pytest.approx(result["vertebrae"]["L1"]["trabecular_roi_hu"])
    capsys.readouterr()
    (tmp_path / "out" / "result.json").unlink()  # seg.dcm and sr.dcm remain: refused before any work
    assert main(args) == 1
    assert "seg.dcm: already exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_write_case_of_a_dicom_case_lists_its_dicom_files_in_result_json(phantom, tmp_path, bundled_models):
    from OsteoScreenLib.pipeline import Models, read_case, run_case, write_case

    case, ct_folder = phantom
    inp = read_case(ct_folder)
    outcome = run_case(Models(), inp, "l1l2", labels=labels_on(inp.ct, case.labels), source="model 0.8.0")
    write_case(inp, outcome, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["dicom"] == {"seg": "seg.dcm", "sr": "sr.dcm"}
    assert CaseResult.from_json(result).dicom_files == {"seg": "seg.dcm", "sr": "sr.dcm"}
    assert hd.seg.segread(tmp_path / "seg.dcm").SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_segment_on_a_dicom_series_writes_a_dicom_seg_beside_its_output(phantom, tmp_path, capsys, bundled_models):
    from OsteoScreenLib.cli import main

    _, ct_folder = phantom
    out = tmp_path / "case.seg.nrrd"
    assert main(["segment", str(ct_folder), "--output", str(out)]) == 0
    assert "case.seg.dcm (DICOM SEG)" in capsys.readouterr().out
    seg = hd.seg.segread(tmp_path / "case.seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["L1", "L2"]
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmVersion == bundled_models["segmentation"]["version"]
    assert not (tmp_path / "sr.dcm").exists()  # nothing classified: no report
    out.unlink()
    assert main(["segment", str(ct_folder), "--output", str(out)]) == 1
    assert "case.seg.dcm: already exists" in capsys.readouterr().err


def test_screen_on_a_dicom_series_writes_seg_and_sr_into_the_case_folder(phantom, tmp_path, capsys, bundled_models):
    from OsteoScreenLib.cli import main

    _, ct_folder = phantom
    assert main(["screen", str(ct_folder), "--output-dir", str(tmp_path)]) == 0
    (result_path,) = tmp_path.glob("*/result.json")
    result = json.loads(result_path.read_text())
    assert result["dicom"] == {"seg": "seg.dcm", "sr": "sr.dcm"}
    sr = pydicom.dcmread(result_path.parent / "sr.dcm")
    seg = pydicom.dcmread(result_path.parent / "seg.dcm", stop_before_pixels=True)
    referenced = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in content_items(sr)
                  if i.ValueType == "IMAGE" and code_of(i) == ("DCM", "121191")}
    assert referenced == {seg.SOPInstanceUID}
    patient = patient_group(sr)
    assert numeric(patient, ("DCM", "113733")) == result["input"]["tube_voltage_kvp"]  # from the DICOM header
    assert coded(patient, (PRIVATE_SCHEME, "KVP-SOURCE")) == (PRIVATE_SCHEME, "KVP-HEADER")


def test_without_highdicom_a_screened_case_keeps_its_result_and_says_why_no_dicom(phantom, tmp_path, monkeypatch,
                                                                                  bundled_models):
    """Inside Slicer highdicom may be missing: the case is still written, with a warning."""
    import sys

    from OsteoScreenLib.pipeline import Models, read_case, run_case, write_case

    case, ct_folder = phantom
    inp = read_case(ct_folder)
    outcome = run_case(Models(), inp, "l1l2", labels=labels_on(inp.ct, case.labels), source="model 0.8.0")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom raises ImportError
    write_case(inp, outcome, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert "dicom" not in result and not (tmp_path / "seg.dcm").exists()
    assert any("highdicom is not installed" in w for w in result["warnings"])


@pytest.mark.skipif(not (LIDC / "ct").is_dir(), reason="the real chest CT lidc-idri-0001 is not at hand")
def test_screening_the_real_chest_ct_gives_seg_and_sr_that_dciodvfy_accepts(tmp_path, bundled_models):
    """The model's own segments (at wrong levels on this case: a format check, not an accuracy one)."""
    from OsteoScreenLib.cli import main

    assert main(["screen", str(LIDC / "ct"), "--output-dir", str(tmp_path)]) == 0
    (result_path,) = tmp_path.glob("*/result.json")
    result = json.loads(result_path.read_text())
    assert result["dicom"] == {"seg": "seg.dcm", "sr": "sr.dcm"}
    seg = hd.seg.segread(result_path.parent / "seg.dcm")
    ct = pydicom.dcmread(next((LIDC / "ct").iterdir()), stop_before_pixels=True)
    assert seg.StudyInstanceUID == ct.StudyInstanceUID and seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    for name in ("seg.dcm", "sr.dcm"):
        warnings = dciodvfy(result_path.parent / name)
        print(f"lidc screen {name}: {len(warnings)} dciodvfy warnings", *sorted(set(warnings)), sep="\n  ")


# --------------------------------------------------------------------------- dcmqi: what Slicer's DICOM plugins run


def dcmqi_tool(name: str) -> str:
    """A dcmqi converter (the `dcmqi` pip package's binaries, as Slicer's plugins use, or one on PATH)."""
    import importlib.util

    spec = importlib.util.find_spec("dcmqi")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"dcmqi's {name} not installed (pip install dcmqi, or put its bin folder on PATH); "
                    "the read-back tests above still check the files")
    return found


def test_dcmqi_converts_the_seg_back_to_the_label_map_and_reads_the_sr(exported, tmp_path):
    """Slicer's DICOMSegmentationPlugin runs `segimage2itkimage --mergeSegments`, its TID 1500 plugin
    `tid1500reader`: the label map dcmqi makes lies on the phantom's labels voxel for voxel in world
    space, with the segments' names and codes, and the report's values come through."""
    from OsteoScreenLib.ct_io import read_volume

    case, _, out = exported
    run = subprocess.run([dcmqi_tool("segimage2itkimage"), "--inputDICOM", str(out / "seg.dcm"), "--outputDirectory",
                          str(tmp_path), "--mergeSegments"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    merged = read_volume(tmp_path / "1.nrrd")
    assert set(np.unique(merged.array)) == {0, 1, 2}
    on_phantom = labels_on(case.labels, merged)  # dcmqi's labels looked up at each phantom voxel
    inside = labels_on(case.labels, merged.with_array(np.ones_like(merged.array)))
    np.testing.assert_array_equal(on_phantom.array[inside.array == 1], case.labels.array[inside.array == 1])
    assert (case.labels.array[inside.array == 0] == 0).all()  # nothing outside dcmqi's extent
    meta = json.loads((tmp_path / "meta.json").read_text())
    segments = meta["segmentAttributes"][0]
    assert [(s["labelID"], s["SegmentLabel"], s["SegmentedPropertyTypeCodeSequence"]["CodeValue"]) for s in segments] \
        == [(v.label, v.name, v.sct_code) for v in registry.VERTEBRAE]
    run = subprocess.run([dcmqi_tool("tid1500reader"), "--inputDICOM", str(out / "sr.dcm"), "--outputMetadata",
                          str(tmp_path / "sr.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    groups = {g["TrackingIdentifier"]: g for g in json.loads((tmp_path / "sr.json").read_text())["Measurements"]}
    result = a_result()
    for v in registry.VERTEBRAE:
        items = {m["quantity"]["CodeValue"]: float(m["value"]) for m in groups[f"{v.name} vertebral body"]["measurementItems"]}
        assert int(groups[f"{v.name} vertebral body"]["ReferencedSegment"]) == v.label
        assert items["118565006"] == pytest.approx(result.vertebrae[v.name].volume_ml)
        assert items["112031"] == pytest.approx(result.vertebrae[v.name].trabecular_roi_hu)
    items = {m["quantity"]["CodeValue"]: float(m["value"]) for m in groups["Bone density (L1-L2)"]["measurementItems"]}
    assert items["EST-VBMD"] == pytest.approx(result.prediction.bmd_mg_cm3)


def test_an_unclassified_result_gets_a_seg_and_no_sr(phantom, tmp_path):
    case, ct_folder = phantom
    result = a_result()
    result.prediction = None  # segmented only (no bundled classifier)
    assert write_dicom_outputs(ct_folder, case.labels, result, tmp_path) == {"seg": "seg.dcm"}
    assert (tmp_path / "seg.dcm").exists() and not (tmp_path / "sr.dcm").exists()


def test_a_nifti_made_from_a_dicom_series_gets_its_seg_and_sr_with_dicom_reference(phantom, tmp_path, capsys,
                                                                                   bundled_models):
    """A CT converted to NIfTI from a DICOM series: --dicom-reference names the series, and the SEG and
    SR refer to it; without the option no DICOM is written, and a reference that is no folder is refused."""
    from OsteoScreenLib.cli import main
    from OsteoScreenLib.ct_io import read_ct, write_volume

    case, ct_folder = phantom
    nifti = write_volume(read_ct(ct_folder), tmp_path / "ct.nii.gz")
    labels = write_volume(case.labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "out" / "result.json"
    assert main(["classify", str(nifti), "--segmentation", str(labels), "--json", str(out)]) == 0
    assert not (out.parent / "seg.dcm").exists()  # a NIfTI alone names no series
    out.unlink()
    args = ["classify", str(nifti), "--segmentation", str(labels), "--json", str(out), "--dicom-reference"]
    assert main(args + [str(ct_folder)]) == 0
    assert json.loads(out.read_text())["dicom"] == {"seg": "seg.dcm", "sr": "sr.dcm"}
    series = pydicom.dcmread(next(ct_folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    seg = pydicom.dcmread(out.parent / "seg.dcm", stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    capsys.readouterr()
    assert main(args + [str(labels), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "--dicom-reference must be the folder of the DICOM series" in err and err.count("\n") == 1
