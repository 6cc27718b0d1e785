"""L1/L2 segmentations in real MRML: terminology, .seg.nrrd round trip, other grids, imports."""

import numpy as np
import pytest
from conftest import a_ct_array, oblique_matrix

from OsteoScreenLib import registry
from OsteoScreenLib.cli import main
from OsteoScreenLib.ct_io import write_volume
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.mrml_convert import volume_to_node
from OsteoScreenLib.segmentation_nodes import (
    labelmap_on_grid,
    load_segmentation,
    load_segmentation_file,
    parse_label_mapping,
    save_segmentation,
    segment_id_of,
    segmentation_from_labelmap,
)
from OsteoScreenLib.volume import Volume


@pytest.fixture
def a_ct():
    return Volume(a_ct_array((16, 20, 24)), oblique_matrix(spacing=(0.9, 0.9, 2.0)))


@pytest.fixture
def two_bodies(a_ct):
    labels = np.zeros(a_ct.array.shape, np.uint8)
    labels[9:13, 6:12, 8:16] = 1  # L1 (k grows superior here? it does not matter for the grid)
    labels[3:7, 6:12, 8:16] = 2
    return a_ct.with_array(labels)


def test_segments_carry_names_colours_terminology_and_reference_geometry(a_scene, a_ct, two_bodies):
    ct_node = volume_to_node(a_scene, a_ct)
    node, missing = segmentation_from_labelmap(a_scene, two_bodies, ct_node)
    assert missing == []
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(n).GetName() for n in range(2)] == ["L1", "L2"]
    for name in ("L1", "L2"):
        segment = segmentation.GetSegment(segment_id_of(node, name))
        assert segment.GetColor() == pytest.approx(registry.VERTEBRA_BY_NAME[name].color_rgb)
        assert segment.GetTerminology() == registry.terminology_entry(name)
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is ct_node


def test_seg_nrrd_round_trip_keeps_everything(tmp_path, a_scene, a_ct, two_bodies):
    import slicer

    ct_node = volume_to_node(a_scene, a_ct)
    node, _ = segmentation_from_labelmap(a_scene, two_bodies, ct_node)
    path = save_segmentation(node, tmp_path / "s.seg.nrrd")
    scene2 = slicer.vtkMRMLScene()
    ct2 = volume_to_node(scene2, a_ct)
    back = load_segmentation(scene2, path, ct2)
    for name in ("L1", "L2"):
        seg = back.GetSegmentation().GetSegment(segment_id_of(back, name))
        assert seg.GetName() == name
        assert seg.GetColor() == pytest.approx(registry.VERTEBRA_BY_NAME[name].color_rgb, abs=1e-4)
        assert seg.GetTerminology() == registry.terminology_entry(name)
    np.testing.assert_array_equal(labelmap_on_grid(back, ct2), two_bodies.array)
    # the file holds the segments' box only (small and fast on a full-size CT), in place
    header = path.read_bytes().split(b"\n\n", 1)[0].decode("latin-1")
    sizes = next(line for line in header.splitlines() if line.startswith("sizes:")).split()[1:]
    assert [int(s) for s in sizes][-3:] == [8, 6, 10]  # i, j, k extent of the two bodies


def test_saving_never_overwrites_without_permission(tmp_path, a_scene, a_ct, two_bodies):
    node, _ = segmentation_from_labelmap(a_scene, two_bodies, volume_to_node(a_scene, a_ct))
    path = tmp_path / "s.seg.nrrd"
    path.write_bytes(b"user edits")
    with pytest.raises(OsteoScreenError, match="--overwrite"):
        save_segmentation(node, path)
    assert path.read_bytes() == b"user edits"
    save_segmentation(node, path, overwrite=True)
    assert path.read_bytes() != b"user edits"


def test_an_edited_segmentation_on_another_grid_is_resampled_to_the_ct(a_scene, tmp_path):
    import slicer

    ct = Volume(a_ct_array((10, 16, 16)), np.diag([2.0, 2.0, 3.0, 1.0]))
    fine = np.zeros((30, 32, 32), np.uint8)  # 1 mm voxels covering the same box, shifted origin
    fine[9:18, 8:20, 8:20] = 1
    fine_grid = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_grid[:3, 3] = [-0.5, -0.5, -1.0]  # voxel corners coincide with the CT's
    ct_node = volume_to_node(a_scene, ct)
    node, _ = segmentation_from_labelmap(a_scene, Volume(fine, fine_grid), None)
    path = save_segmentation(node, tmp_path / "edited.seg.nrrd")
    scene2 = slicer.vtkMRMLScene()
    ct2 = volume_to_node(scene2, ct)
    labels = labelmap_on_grid(load_segmentation(scene2, path, ct2), ct2)
    assert labels.shape == ct.array.shape
    expected = np.zeros(ct.array.shape, np.uint8)
    expected[3:6, 4:10, 4:10] = 1  # same box in 2x2x3 mm voxels
    np.testing.assert_array_equal(labels, expected)
    assert ct_node is not None


@pytest.mark.parametrize("mapping_name, l1, l2", [("verse", 20, 21), ("totalsegmentator", 31, 30)])
def test_label_maps_of_other_tools_import_with_their_mapping(tmp_path, a_scene, a_ct, mapping_name, l1, l2):
    raw = np.zeros(a_ct.array.shape, np.int16)
    raw[9:13, 6:12, 8:16] = l1
    raw[3:7, 6:12, 8:16] = l2
    raw[0:2, 6:12, 8:16] = 19  # T12 / other structures are ignored
    path = write_volume(a_ct.with_array(raw), tmp_path / "labels.nii.gz")
    ct_node = volume_to_node(a_scene, a_ct)
    node = load_segmentation_file(a_scene, path, ct_node, parse_label_mapping(mapping_name))
    labels = labelmap_on_grid(node, ct_node)
    np.testing.assert_array_equal(labels == 1, raw == l1)
    np.testing.assert_array_equal(labels == 2, raw == l2)


def test_a_label_map_without_l1_or_l2_is_an_error(tmp_path, a_scene, a_ct):
    path = write_volume(a_ct.with_array(np.ones(a_ct.array.shape, np.uint8) * 7), tmp_path / "labels.nii.gz")
    with pytest.raises(OsteoScreenError, match="no L1 or L2"):
        load_segmentation_file(a_scene, path, volume_to_node(a_scene, a_ct), parse_label_mapping("verse"))


def test_explicit_label_mappings_parse_and_bad_ones_fail():
    assert parse_label_mapping("L1=5, L2=6") == {"L1": 5, "L2": 6}
    with pytest.raises(OsteoScreenError):
        parse_label_mapping("L7=3")


def test_a_segment_renamed_by_the_user_is_still_found_by_its_code(a_scene, a_ct, two_bodies):
    node, _ = segmentation_from_labelmap(a_scene, two_bodies, volume_to_node(a_scene, a_ct))
    segment_id = segment_id_of(node, "L1")
    node.GetSegmentation().GetSegment(segment_id).SetName("first lumbar")
    assert segment_id_of(node, "L1") == segment_id


def test_demo_writes_segmentation_and_result(tmp_path, real_data, capsys):
    import json

    assert main(["demo", "--case", str(real_data / "totalsegmentator-example"), "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["schema"] == "osteoscreen.result/1"
    assert set(result["vertebrae"]) == {"L1", "L2"}
    assert (tmp_path / "segmentation.seg.nrrd").stat().st_size > 0
    assert main(["demo", "--case", str(real_data / "totalsegmentator-example"), "--output-dir", str(tmp_path)]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_info_lists_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "slicer-core" in out and "osteoscreen" in out
