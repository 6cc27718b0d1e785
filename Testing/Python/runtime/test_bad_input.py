"""Bad input: one line naming the file and what to do, exit status 1, no traceback."""

import gzip
import subprocess
import sys

import numpy as np
import pytest
from conftest import a_ct_array

from OsteoScreenLib.cli import main
from OsteoScreenLib.ct_io import write_ct, write_volume
from OsteoScreenLib.volume import Volume

nib = pytest.importorskip("nibabel")


def run_convert(tmp_path, capsys, source, *extra):
    code = main(["convert", str(source), str(tmp_path / "out.nii.gz"), *extra])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *words):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("osteoscreen: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0]


def a_nifti(tmp_path, array, name="ct.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_a_missing_path(tmp_path, capsys):
    code, err = run_convert(tmp_path, capsys, tmp_path / "nope.nii.gz")
    assert_one_line_error(code, err, "nope.nii.gz", "no such file")


def test_a_truncated_file(tmp_path, capsys):
    good = write_volume(Volume(a_ct_array((30, 40, 40))), tmp_path / "good.nii.gz")
    data = gzip.decompress(good.read_bytes())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(data[: len(data) // 2]))
    code, err = run_convert(tmp_path, capsys, bad)
    assert_one_line_error(code, err, "bad.nii.gz")


def test_a_file_that_is_not_an_image(tmp_path, capsys):
    bad = tmp_path / "notes.nrrd"
    bad.write_text("hello, this is not a NRRD file\n")
    code, err = run_convert(tmp_path, capsys, bad)
    assert_one_line_error(code, err, "notes.nrrd")


def test_an_unsupported_file_type(tmp_path, capsys):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG")
    code, err = run_convert(tmp_path, capsys, bad)
    assert_one_line_error(code, err, "scan.png", "unsupported")


def test_a_2d_image(tmp_path, capsys):
    code, err = run_convert(tmp_path, capsys, a_nifti(tmp_path, a_ct_array()[0]))
    assert_one_line_error(code, err, "ct.nii.gz", "2D")


def test_a_single_slice_3d_image_is_2d(tmp_path, capsys):
    code, err = run_convert(tmp_path, capsys, a_nifti(tmp_path, a_ct_array()[:1].transpose(2, 1, 0).copy()))
    assert_one_line_error(code, err, "2D")


def test_a_4d_image(tmp_path, capsys):
    four_d = np.stack([a_ct_array().transpose(2, 1, 0)] * 3, axis=-1)
    code, err = run_convert(tmp_path, capsys, a_nifti(tmp_path, four_d))
    assert_one_line_error(code, err, "ct.nii.gz", "4D")


def test_an_empty_dicom_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    code, err = run_convert(tmp_path, capsys, tmp_path / "empty")
    assert_one_line_error(code, err, "empty", "no DICOM")


def test_a_dicom_series_that_is_not_ct(tmp_path, capsys):
    import pydicom

    folder = write_ct(Volume(a_ct_array()), tmp_path / "mr")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    code, err = run_convert(tmp_path, capsys, folder)
    assert_one_line_error(code, err, "MR", "not CT")


def test_nan_voxels(tmp_path, capsys):
    a = a_ct_array().astype(np.float32).transpose(2, 1, 0).copy()
    a[3, 4, 5] = np.nan
    code, err = run_convert(tmp_path, capsys, a_nifti(tmp_path, a))
    assert_one_line_error(code, err, "NaN")


def test_infinite_voxels(tmp_path, capsys):
    a = a_ct_array().astype(np.float32).transpose(2, 1, 0).copy()
    a[3, 4, 5] = np.inf
    code, err = run_convert(tmp_path, capsys, a_nifti(tmp_path, a))
    assert_one_line_error(code, err, "infinite")


@pytest.mark.parametrize(
    "array",
    [
        np.linspace(0, 1, 24 * 20 * 12, dtype=np.float32).reshape(24, 20, 12),  # normalised image
        (a_ct_array().transpose(2, 1, 0) + 1024).astype(np.uint16),  # stored values, no intercept
        (a_ct_array().transpose(2, 1, 0).astype(np.float32) * 100),  # far outside any HU range
    ],
    ids=["normalised", "no_intercept", "out_of_range"],
)
def test_values_that_cannot_be_hounsfield_units(tmp_path, capsys, array):
    code, err = run_convert(tmp_path, capsys, a_nifti(tmp_path, array))
    assert_one_line_error(code, err, "Hounsfield")


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    source = write_volume(Volume(a_ct_array()), tmp_path / "in.nrrd")
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    code, err = run_convert(tmp_path, capsys, source)
    assert_one_line_error(code, err, "out.nii.gz", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert main(["convert", str(source), str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "out.nii.gz"]  # no temporary left


def test_the_installed_command_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "OsteoScreenLib.cli", "convert", str(tmp_path / "missing"), str(tmp_path / "o.nrrd")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_a_file_cut_short(tmp_path, capsys):
    good = write_volume(Volume(a_ct_array((30, 40, 40))), tmp_path / "good.nii.gz")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, err = run_convert(tmp_path, capsys, cut)
    assert_one_line_error(code, err, "cut.nii.gz")


def test_an_uncompressed_file_cut_short(tmp_path, capsys):
    good = write_volume(Volume(a_ct_array((30, 40, 40))), tmp_path / "good.nii")
    cut = tmp_path / "cut.nii"
    cut.write_bytes(good.read_bytes()[:-1000])
    code, err = run_convert(tmp_path, capsys, cut)
    assert_one_line_error(code, err, "cut.nii", "truncated")
