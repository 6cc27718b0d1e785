"""The four real cases of ../shared/data/real load with their geometry and labels."""

import numpy as np
import pytest

from OsteoScreenLib import registry
from OsteoScreenLib.ct_io import read_ct
from OsteoScreenLib.dicom_io import dicom_geometry, select_ct_series
from OsteoScreenLib.logic import OsteoScreenLogic

CASES = {  # folder: (orientation, shape k j i, label mapping or None)
    "totalsegmentator-example": ("RAS", (30, 101, 122), "totalsegmentator"),
    "verse012": ("LPS", (252, 194, 35), "verse"),
    "tptbox-l2-l4": ("PIR", (73, 47, 73), "verse"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_real_case_loads_with_its_orientation(real_data, case):
    orientation, shape, _ = CASES[case]
    ct = read_ct(real_data / case / "ct.nii.gz")
    assert ct.axis_codes() == orientation
    assert ct.array.shape == shape
    assert ct.array.min() < -900  # air in HU


@pytest.mark.parametrize("case", list(CASES))
def test_reference_labels_land_on_the_right_voxels(real_data, a_scene, case):
    nib = pytest.importorskip("nibabel")
    _, _, mapping_name = CASES[case]
    mapping = registry.LABEL_MAPPINGS[mapping_name]
    logic = OsteoScreenLogic(a_scene)
    ct_node = logic.load_ct(real_data / case / "ct.nii.gz")
    seg_node = logic.load_segmentation(real_data / case / "labels.nii.gz", ct_node, mapping)
    labels = logic.labelmap(seg_node, ct_node).array
    reference = np.asarray(nib.load(real_data / case / "labels.nii.gz").dataobj).transpose(2, 1, 0)
    for name, value in mapping.items():
        expected = reference == value
        np.testing.assert_array_equal(labels == registry.LABEL_OF[name], expected)


def test_l1_lies_above_l2_in_the_world(real_data, a_scene):
    logic = OsteoScreenLogic(a_scene)
    for case in ("totalsegmentator-example", "verse012"):
        ct_node = logic.load_ct(real_data / case / "ct.nii.gz")
        mapping = registry.LABEL_MAPPINGS[CASES[case][2]]
        stats = logic.vertebra_stats(logic.load_segmentation(real_data / case / "labels.nii.gz", ct_node, mapping), ct_node)
        assert stats["L1"]["centroid_mm"][2] > stats["L2"]["centroid_mm"][2] + 15  # S axis
        assert 20 < stats["L1"]["volume_ml"] < 120  # whole vertebra


def test_tptbox_case_has_no_l1(real_data, a_scene):
    logic = OsteoScreenLogic(a_scene)
    ct_node = logic.load_ct(real_data / "tptbox-l2-l4" / "ct.nii.gz")
    seg = logic.load_segmentation(real_data / "tptbox-l2-l4" / "labels.nii.gz", ct_node, registry.LABEL_MAPPINGS["verse"])
    assert set(logic.vertebra_stats(seg, ct_node)) == {"L2"}


def test_dicom_series_loads_with_the_geometry_of_its_headers(real_data):
    folder = real_data / "totalsegmentator-dicom"
    ct = read_ct(folder)
    files = select_ct_series(folder)
    assert ct.array.shape == (20, 512, 512)
    np.testing.assert_allclose(ct.ijk_to_ras, dicom_geometry(files), atol=1e-4)
    np.testing.assert_allclose(ct.spacing_mm, [0.9765625, 0.9765625, 2.0], atol=1e-6)
    assert ct.axis_codes() == "LPS"


def test_dicom_pixels_match_an_independent_decoder_with_rescale(real_data):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("openjpeg")  # JPEG 2000 decoder for pydicom (test dependency)
    folder = real_data / "totalsegmentator-dicom"
    ct = read_ct(folder)
    files = select_ct_series(folder)
    for k in (0, 7, 19):
        ds = pydicom.dcmread(files[k])
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(ct.array[k], hu)
