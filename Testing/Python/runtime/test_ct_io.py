"""CT readers and writers: every format, exact geometry, round trips through the scene."""

import numpy as np
import pytest
from conftest import a_ct_array, assert_same_in_world, oblique_matrix

from OsteoScreenLib.ct_io import read_ct, read_volume, write_ct, write_volume
from OsteoScreenLib.mrml_convert import volume_from_node, volume_to_node
from OsteoScreenLib.volume import RAS_FROM_LPS, Volume

GEOMETRIES = {
    "ras": np.diag([0.8, 0.8, 2.0, 1.0]) + np.c_[np.zeros((4, 3)), [10.0, -20.0, 30.0, 0.0]],
    "lps": RAS_FROM_LPS @ np.diag([0.7, 0.7, 1.25, 1.0]),
    "flipped_k": oblique_matrix(angles_deg=(0, 0, 0), flips=(1, 1, -1)),
    "flipped_ij": oblique_matrix(angles_deg=(0, 0, 0), flips=(-1, -1, 1)),
    "oblique_anisotropic": oblique_matrix(),
    "permuted_pir": np.array([[0, 0, 1.5, -78.0], [-1.5, 0, 0, -135.0], [0, -1.5, 0, -34.2], [0, 0, 0, 1.0]]),
}
EXTENSIONS = [".nii.gz", ".nii", ".nrrd", ".mha"]


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_file_to_scene_to_file_keeps_voxel_to_world_within_1e4_mm(tmp_path, a_scene, ext, geometry):
    original = Volume(a_ct_array(), GEOMETRIES[geometry])
    first = write_volume(original, tmp_path / f"a{ext}")
    node = volume_to_node(a_scene, read_ct(first))
    second = write_volume(volume_from_node(node), tmp_path / f"b{ext}")
    back = read_ct(second)
    assert_same_in_world(back, original)
    if np.linalg.det(original.ijk_to_ras) > 0:  # right-handed grids come back voxel for voxel
        np.testing.assert_allclose(back.ijk_to_ras, original.ijk_to_ras, atol=1e-4)
        np.testing.assert_array_equal(back.array, original.array)


@pytest.mark.parametrize("geometry", ["ras", "lps", "oblique_anisotropic", "permuted_pir"])
def test_nifti_geometry_agrees_with_an_independent_reader(tmp_path, geometry):
    nib = pytest.importorskip("nibabel")
    original = Volume(a_ct_array(), GEOMETRIES[geometry])
    path = write_volume(original, tmp_path / "ct.nii.gz")
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, original.ijk_to_ras, atol=1e-4)  # NIfTI affine is RAS
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), original.array)


@pytest.mark.parametrize("geometry", ["lps", "flipped_k", "oblique_anisotropic"])
def test_dicom_series_round_trip_keeps_geometry_and_values(tmp_path, geometry):
    original = Volume(a_ct_array(), GEOMETRIES[geometry])
    write_ct(original, tmp_path / "series")
    back = read_ct(tmp_path / "series")
    # slices are sorted along the normal, so compare where each value sits in the world
    assert_same_in_world(back, original)


def test_dicom_files_are_sorted_by_position_not_by_name(tmp_path):
    original = Volume(a_ct_array(), GEOMETRIES["lps"])
    folder = write_ct(original, tmp_path / "series")
    files = sorted(folder.iterdir())
    # reverse the names: file order now runs against the anatomy
    for n, f in enumerate(files):
        f.rename(folder / f"tmp{n}")
    for n, f in enumerate(sorted(folder.iterdir(), key=lambda p: int(p.name[3:]))):
        f.rename(folder / f"IMG{len(files) - n:04d}")
    back = read_ct(folder)
    np.testing.assert_allclose(back.ijk_to_ras, original.ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(back.array, original.array)


def test_nhdr_and_mhd_detached_headers_are_read(tmp_path):
    original = Volume(a_ct_array(), GEOMETRIES["oblique_anisotropic"])
    raw = np.ascontiguousarray(original.array).astype("<i2")
    (tmp_path / "ct.raw").write_bytes(raw.tobytes())
    lps = RAS_FROM_LPS @ original.ijk_to_ras
    k, j, i = raw.shape
    dirs = " ".join("(" + ",".join(f"{v:.10f}" for v in lps[:3, c]) + ")" for c in range(3))
    (tmp_path / "ct.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {i} {j} {k}\nspace directions: {dirs}\nkinds: domain domain domain\n"
        "endian: little\nencoding: raw\n"
        f"space origin: ({lps[0, 3]:.10f},{lps[1, 3]:.10f},{lps[2, 3]:.10f})\ndata file: ct.raw\n"
    )
    spacing = original.spacing_mm
    tm = (lps[:3, :3] / spacing).T.ravel()  # MetaImage TransformMatrix is row-major direction columns
    (tmp_path / "ct.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"TransformMatrix = {' '.join(f'{v:.10f}' for v in tm)}\n"
        f"Offset = {lps[0, 3]:.10f} {lps[1, 3]:.10f} {lps[2, 3]:.10f}\n"
        f"ElementSpacing = {spacing[0]:.10f} {spacing[1]:.10f} {spacing[2]:.10f}\n"
        f"DimSize = {i} {j} {k}\nElementType = MET_SHORT\nElementDataFile = ct.raw\n"
    )
    for name in ("ct.nhdr", "ct.mhd"):
        assert_same_in_world(read_ct(tmp_path / name), original)


def test_label_maps_keep_their_integer_values(tmp_path):
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 2:4, 2:5] = 20
    labels[3:5, 2:4, 2:5] = 21
    path = write_volume(Volume(labels, GEOMETRIES["lps"]), tmp_path / "labels.nii.gz")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, labels)
