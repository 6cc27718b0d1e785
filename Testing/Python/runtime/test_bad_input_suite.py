"""The bad-input suite: every command given inputs a new user might give it.

Each case builds its bad input (small generated files, or the real cases read as
they are), runs the command in this process with the process's stderr captured
(so a library line printed by ITK, GDCM or OpenJPEG would show), and checks: the
exit status, one line on stderr naming what is wrong, no traceback, the inputs
unchanged and nothing written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import REAL_DATA, a_ct_array

from OsteoScreenLib.cli import main
from OsteoScreenLib.ct_io import write_volume
from OsteoScreenLib.dicom_io import write_dicom_series
from OsteoScreenLib.volume import Volume

REPO = Path(__file__).resolve().parents[3]
SHAPE = (12, 20, 24)  # k, j, i: small, so that every case runs in well under a second
TS_CT = REAL_DATA / "totalsegmentator-example" / "ct.nii.gz"
TS_LABELS = REAL_DATA / "totalsegmentator-example" / "labels.nii.gz"
VERSE_LABELS = REAL_DATA / "verse012" / "labels.nii.gz"


# --------------------------------------------------------------------------- input makers


def a_file(path: Path, content: bytes = b"") -> Path:
    path.write_bytes(content)
    return path


def a_ct(tmp: Path, name="ct.nrrd", spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), array=None) -> Path:
    array = a_ct_array(SHAPE) if array is None else array
    return write_volume(Volume.from_geometry(array, spacing, origin), tmp / name)


def a_labelmap(tmp: Path, name="seg.nii.gz", values=(1, 2), origin=(0.0, 0.0, 0.0)) -> Path:
    labels = np.zeros(SHAPE, np.uint8)
    for n, v in enumerate(values):
        labels[2 + 4 * n : 5 + 4 * n, 6:14, 6:18] = v
    return write_volume(Volume.from_geometry(labels, (1.0, 1.0, 2.0), origin), tmp / name)


def a_nifti(tmp: Path, name="ct.nii", pixdim=None, codes=None, srow=None) -> Path:
    """An uncompressed NIfTI with header fields overwritten: pixdim[1:4], (qform_code, sform_code),
    and the sform rows (3x4)."""
    path = a_ct(tmp, name)
    data = bytearray(path.read_bytes())
    if pixdim is not None:
        data[80:92] = struct.pack("<3f", *pixdim)
    if codes is not None:
        data[252:256] = struct.pack("<2h", *codes)
    if srow is not None:
        data[280:328] = struct.pack("<12f", *np.asarray(srow, float).ravel())
    path.write_bytes(bytes(data))
    return path


def an_nhdr(tmp: Path, name="ct.nhdr", directions="(1,0,0) (0,1,0) (0,0,2)", sizes=None, data_file="ct.raw",
            write_data=True) -> Path:
    k, j, i = SHAPE if sizes is None else sizes[::-1]
    if write_data:
        a_ct_array((k, j, i)).tofile(tmp / data_file)
    (tmp / name).write_text(
        f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {i} {j} {k}\n"
        f"space directions: {directions}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
        f"space origin: (0,0,0)\ndata file: {data_file}\n\n")
    return tmp / name


def an_mhd(tmp: Path, name="ct.mhd", spacing="1 1 2", matrix="1 0 0 0 1 0 0 0 1", sizes=None,
           data_file="ct.raw", write_data=True) -> Path:
    k, j, i = SHAPE if sizes is None else sizes[::-1]
    if write_data:
        a_ct_array(SHAPE).tofile(tmp / data_file)
    (tmp / name).write_text(
        f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"TransformMatrix = {matrix}\nOffset = 0 0 0\nElementSpacing = {spacing}\nDimSize = {i} {j} {k}\n"
        f"ElementType = MET_SHORT\nElementDataFile = {data_file}\n")
    return tmp / name


def a_dicom(tmp: Path, name="dicom", edit: Callable | None = None, slice_mm=2.0) -> Path:
    """A small CT series; ``edit(dataset, index)`` changes each slice's header."""
    import pydicom

    folder = write_dicom_series(Volume.from_geometry(a_ct_array((6, 20, 24)), (1.0, 1.0, slice_mm), (0, 0, 0)),
                                tmp / name)
    if edit is not None:
        for n, f in enumerate(sorted(folder.iterdir())):
            ds = pydicom.dcmread(f)
            edit(ds, n)
            ds.save_as(f)
    return folder


def corrupt_jpeg2000(ds, n) -> None:
    """Slice 3 claims JPEG 2000 and holds a broken code stream (OpenJPEG complains on stderr)."""
    if n != 3:
        return
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 100])
    ds["PixelData"].VR = "OB"


def cut_slice(folder: Path) -> Path:
    """The series with its fourth slice's last 100 bytes of pixels gone (a copy that stopped short)."""
    f = folder / "CT00004.dcm"
    f.write_bytes(f.read_bytes()[:-100])
    return folder


def broken_models(tmp: Path, monkeypatch, name: str, damage: Callable[[Path], None]) -> None:
    """A copy of the bundled models with model ``name`` damaged, used through OSTEOSCREEN_RESOURCES."""
    models = tmp / "resources" / "Models"
    shutil.copytree(REPO / "Resources" / "Models", models)
    damage(models / name)
    monkeypatch.setenv("OSTEOSCREEN_RESOURCES", str(tmp / "resources"))


def unwritable_folder(tmp: Path) -> Path:
    """A folder this process cannot write: read-only permissions, or sysfs where root bypasses them."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    id: str
    build: Callable  # (tmp, monkeypatch) -> (argv, words the error line must hold)
    exit_code: int = 1


def case(name, exit_code=1):
    """Register a case builder under ``name`` (its first word: the command)."""
    def register(build):
        CASES.append(Case(name, build, exit_code))
        return build
    return register


CASES: list[Case] = []


def _convert(tmp, source, *words):
    return ["convert", str(source), str(tmp / "out.nrrd")], [Path(source).name, *words]


# ---- convert: files

case("convert-missing-file")(lambda t, m: _convert(t, t / "nope.nii.gz", "no such file"))
case("convert-nhdr-data-file-missing")(
    lambda t, m: _convert(t, an_nhdr(t, data_file="gone.raw", write_data=False), "gone.raw", "missing"))
case("convert-nhdr-zero-direction")(lambda t, m: _convert(t, an_nhdr(t, directions="(1,0,0) (0,1,0) (0,0,0)"), "spacing"))
case("convert-nhdr-nan-direction")(lambda t, m: _convert(t, an_nhdr(t, directions="(1,0,0) (0,1,0) (0,0,nan)"), "not numbers"))
case("convert-nhdr-coplanar-axes")(lambda t, m: _convert(t, an_nhdr(t, directions="(1,0,0) (0,1,0) (1,1,0)"), "degenerate"))
case("convert-nhdr-50mm-voxels")(lambda t, m: _convert(t, an_nhdr(t, directions="(50,0,0) (0,50,0) (0,0,50)"), "50x50x50"))
case("convert-nhdr-0.01mm-voxels")(
    lambda t, m: _convert(t, an_nhdr(t, directions="(0.01,0,0) (0,0.01,0) (0,0,0.01)"), "0.01x0.01x0.01"))
case("convert-nhdr-billions-of-voxels")(
    lambda t, m: _convert(t, an_nhdr(t, sizes=(4000, 4000, 4000), write_data=False, data_file="x.raw"),
                          "4000x4000x4000", "voxels"))
case("convert-nhdr-field-of-view-3m")(
    lambda t, m: _convert(t, an_nhdr(t, directions="(15,0,0) (0,15,0) (0,0,15)", sizes=(200, 8, 8)),
                          "field of view"))
case("convert-nifti-qform-zero-slice-spacing")(
    lambda t, m: _convert(t, a_nifti(t, pixdim=(1, 1, 0), codes=(1, 0)), "1x1x0"))
case("convert-nifti-no-transform-zero-spacing")(
    lambda t, m: _convert(t, a_nifti(t, pixdim=(1, 1, 0), codes=(0, 0)), "1x1x0"))
case("convert-nifti-negative-pixdim")(lambda t, m: _convert(t, a_nifti(t, pixdim=(1, -1, 2), codes=(1, 0)), "1x-1x2"))
case("convert-nifti-nan-pixdim")(lambda t, m: _convert(t, a_nifti(t, pixdim=(1, np.nan, 2)), "spacing"))
case("convert-nifti-sform-coplanar")(
    lambda t, m: _convert(t, a_nifti(t, srow=[[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]), "degenerate"))
case("convert-nifti-sform-zero-column")(
    lambda t, m: _convert(t, a_nifti(t, srow=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]), "1x1x0"))
case("convert-nifti-sform-50mm")(
    lambda t, m: _convert(t, a_nifti(t, srow=[[50, 0, 0, 0], [0, 50, 0, 0], [0, 0, 50, 0]]), "50x50x50"))
case("convert-nifti-gz-50mm-voxels")(lambda t, m: _convert(t, a_ct(t, "ct.nii.gz", spacing=(50, 50, 50)), "outside"))
case("convert-nifti-gz-0.01mm-voxels")(
    lambda t, m: _convert(t, a_ct(t, "ct.nii.gz", spacing=(0.01, 0.01, 0.01)), "outside"))
case("convert-nrrd-25mm-slices")(lambda t, m: _convert(t, a_ct(t, "ct.nrrd", spacing=(1, 1, 25)), "1x1x25"))
case("convert-mha-0.05mm-pixels")(lambda t, m: _convert(t, a_ct(t, "ct.mha", spacing=(0.05, 0.05, 1)), "0.05"))
case("convert-mhd-zero-spacing")(lambda t, m: _convert(t, an_mhd(t, spacing="1 1 0"), "1x1x0"))
case("convert-mhd-negative-spacing")(lambda t, m: _convert(t, an_mhd(t, spacing="1 -1 2"), "1x-1x2"))
case("convert-mhd-degenerate-matrix")(lambda t, m: _convert(t, an_mhd(t, matrix="1 0 0 1 0 0 0 0 1"), "degenerate"))
case("convert-mhd-data-file-missing")(
    lambda t, m: _convert(t, an_mhd(t, data_file="gone.raw", write_data=False), "gone.raw", "missing"))
case("convert-mhd-billions-of-voxels")(lambda t, m: _convert(t, an_mhd(t, sizes=(5000, 5000, 900)), "voxels"))
case("convert-empty-file")(lambda t, m: _convert(t, a_file(t / "ct.nii.gz")))
case("convert-text-as-nrrd")(lambda t, m: _convert(t, a_file(t / "ct.nrrd", b"hello\n")))
case("convert-folder-named-nifti")(lambda t, m: _convert(t, (t / "ct.nii.gz").mkdir() or t / "ct.nii.gz"))
case("convert-png")(lambda t, m: _convert(t, a_file(t / "scan.png", b"\x89PNG"), "unsupported"))
case("convert-real-label-map-as-ct")(lambda t, m: _convert(t, VERSE_LABELS, "Hounsfield"))
case("convert-ct-without-intercept")(
    lambda t, m: _convert(t, a_ct(t, array=(a_ct_array(SHAPE) + 1024).astype(np.uint16)), "Hounsfield"))

# ---- convert: DICOM folders

case("convert-dicom-zero-pixel-spacing")(
    lambda t, m: _convert(t, a_dicom(t, edit=lambda ds, n: setattr(ds, "PixelSpacing", ["0", "0"])), "0x0"))
case("convert-dicom-no-pixel-spacing")(
    lambda t, m: _convert(t, a_dicom(t, edit=lambda ds, n: delattr(ds, "PixelSpacing")), "PixelSpacing"))
case("convert-dicom-50mm-slices")(lambda t, m: _convert(t, a_dicom(t, slice_mm=50.0), "1x1x50"))
case("convert-dicom-broken-jpeg2000-slice")(lambda t, m: _convert(t, a_dicom(t, edit=corrupt_jpeg2000), "cannot be read"))
case("convert-dicom-truncated-slice")(lambda t, m: _convert(t, cut_slice(a_dicom(t)), "CT00004.dcm", "truncated"))


@case("convert-folder-of-too-many-files")
def convert_folder_of_too_many_files(t, m):
    """A home folder given by mistake (the limit lowered from 20000, so that the case stays fast)."""
    from OsteoScreenLib import dicom_io

    m.setattr(dicom_io, "DICOM_FOLDER_FILES_MAX", 30)
    home = t / "home"
    for n in range(31):
        folder = home / f"doc{n % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        a_file(folder / f"{n}.txt", b"notes")
    return _convert(t, home, "more than 30 files")


case("convert-dicom-duplicate-slices")(
    lambda t, m: _convert(t, a_dicom(t, edit=lambda ds, n: setattr(ds, "ImagePositionPatient", [0, 0, 0])),
                          "same position"))
case("convert-dicom-single-slice")(
    lambda t, m: _convert(t, a_dicom(t, edit=lambda ds, n: n and setattr(ds, "Modality", "MR")), "single slice"))
case("convert-dicom-sagittal-only")(
    lambda t, m: _convert(t, a_dicom(t, edit=lambda ds, n: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1])),
                          "axial"))

# ---- convert: outputs


@case("convert-output-parent-is-a-file")
def convert_output_parent_is_a_file(t, m):
    (t / "afile").write_text("x")
    return ["convert", str(a_ct(t)), str(t / "afile" / "out.nrrd")], ["afile", "cannot write"]


@case("convert-output-unwritable-folder")
def convert_output_unwritable_folder(t, m):
    return ["convert", str(a_ct(t)), str(unwritable_folder(t) / "out.nrrd")], ["cannot write"]


case("convert-output-png")(lambda t, m: (["convert", str(a_ct(t)), str(t / "out.png")], ["out.png", "cannot write"]))


@case("convert-output-exists")
def convert_output_exists(t, m):
    (t / "out.nii.gz").write_bytes(b"precious")
    return ["convert", str(a_ct(t)), str(t / "out.nii.gz")], ["out.nii.gz", "--overwrite"]


case("convert-onto-itself")(lambda t, m: (["convert", str(a_ct(t)), str(t / "ct.nrrd")], ["ct.nrrd", "--overwrite"]))
case("convert-no-output", exit_code=2)(lambda t, m: (["convert", str(a_ct(t))], ["required"]))

# ---- phantom

case("phantom-count-zero")(lambda t, m: (["phantom", str(t / "ph"), "--count", "0"], ["--count"]))
case("phantom-negative-seed")(lambda t, m: (["phantom", str(t / "ph"), "--seed", "-1"], ["--seed"]))
case("phantom-unknown-preset")(lambda t, m: (["phantom", str(t / "ph"), "--preset", "knee"], ["knee"]))
case("phantom-unknown-format", exit_code=2)(lambda t, m: (["phantom", str(t / "ph"), "--format", "png"], ["png"]))
case("phantom-count-not-a-number", exit_code=2)(lambda t, m: (["phantom", str(t / "ph"), "--count", "x"], ["x"]))


@case("phantom-out-dir-is-a-file")
def phantom_out_dir_is_a_file(t, m):
    (t / "ph").write_text("x")
    return ["phantom", str(t / "ph"), "--preset", "spine"], ["ph", "cannot write"]


case("phantom-out-dir-unwritable")(
    lambda t, m: (["phantom", str(unwritable_folder(t) / "ph"), "--preset", "spine"], ["cannot write"]))

# ---- segment

case("segment-real-dicom-without-l1-l2")(
    lambda t, m: (["segment", str(REAL_DATA / "totalsegmentator-dicom"), "--output", str(t / "s.seg.nrrd")],
                  ["totalsegmentator-dicom", "L1 and L2 not found"]))
case("segment-small-ct-without-spine")(
    lambda t, m: (["segment", str(a_ct(t)), "--output", str(t / "s.seg.nrrd")], ["ct.nrrd", "not found"]))
case("segment-50mm-voxels")(
    lambda t, m: (["segment", str(a_ct(t, spacing=(50, 50, 50))), "--output", str(t / "s.seg.nrrd")], ["50x50x50"]))
case("segment-output-png")(
    lambda t, m: (["segment", str(a_ct(t)), "--output", str(t / "s.png")], ["s.png", ".seg.nrrd"]))


@case("segment-output-exists")
def segment_output_exists(t, m):
    (t / "s.seg.nrrd").write_text("mine")
    return ["segment", str(a_ct(t)), "--output", str(t / "s.seg.nrrd")], ["s.seg.nrrd", "--overwrite"]


case("segment-output-under-a-file")(
    lambda t, m: (["segment", str(TS_CT), "--output", str(a_file(t / "f", b"x") / "s.seg.nrrd")], ["cannot write"]))
case("segment-segmentation-as-ct")(
    lambda t, m: (["segment", str(a_labelmap(t)), "--output", str(t / "s.seg.nrrd")], ["seg.nii.gz", "Hounsfield"]))


@case("segment-model-weights-corrupt")
def segment_model_weights_corrupt(t, m):
    broken_models(t, m, "segmentation", lambda f: (f / "coarse.onnx").write_bytes(b"not a network"))
    return (["segment", str(REAL_DATA / "totalsegmentator-dicom"), "--output", str(t / "s.seg.nrrd")],
            ["coarse.onnx", "SHA-256"])


@case("segment-model-card-missing")
def segment_model_card_missing(t, m):
    broken_models(t, m, "segmentation", lambda f: (f / "model_card.json").unlink())
    return ["segment", str(a_ct(t)), "--output", str(t / "s.seg.nrrd")], ["segmentation", "not installed"]


# ---- classify


def _classify(t, ct, seg, *extra):
    return ["classify", str(ct), "--segmentation", str(seg), *extra]


case("classify-segmentation-missing")(
    lambda t, m: (_classify(t, TS_CT, t / "nope.seg.nrrd"), ["nope.seg.nrrd", "no such file"]))
case("classify-segmentation-of-another-scan")(
    lambda t, m: (_classify(t, TS_CT, VERSE_LABELS, "--labels", "verse"), ["labels.nii.gz", "does not share space"]))
case("classify-segmentation-shifted-1m")(
    lambda t, m: (_classify(t, a_ct(t), a_labelmap(t, origin=(0, 0, 1000))), ["seg.nii.gz", "does not share space"]))
case("classify-l2-missing-names-the-file")(
    lambda t, m: (_classify(t, a_ct(t), a_labelmap(t, values=(1,))), ["seg.nii.gz", "L2 not segmented"]))
case("classify-no-label-with-mapping")(
    lambda t, m: (_classify(t, TS_CT, TS_LABELS, "--labels", "L1=200,L2=201"), ["labels.nii.gz", "no L1 or L2"]))
case("classify-bad-label-mapping")(lambda t, m: (_classify(t, TS_CT, TS_LABELS, "--labels", "L1=x"), ["L1=x"]))
case("classify-segmentation-truncated")(
    lambda t, m: (_classify(t, TS_CT, a_file(t / "s.seg.nrrd", b"NRRD0004\n")),
                  ["s.seg.nrrd", "complete"]))


def a_seg_nrrd(tmp: Path, name: str, origin=(0.0, 0.0, 0.0)) -> Path:
    """A .seg.nrrd with L1 and L2, as Slicer saves one."""
    import slicer

    from OsteoScreenLib.ct_io import read_volume
    from OsteoScreenLib.segmentation_nodes import save_segmentation, segmentation_from_labelmap

    scene = slicer.vtkMRMLScene()
    node, _ = segmentation_from_labelmap(scene, read_volume(a_labelmap(tmp, origin=origin)))
    return save_segmentation(node, tmp / name)


case("classify-seg-nrrd-of-another-scan")(
    lambda t, m: (_classify(t, a_ct(t), a_seg_nrrd(t, "far.seg.nrrd", origin=(300, 0, 0))),
                  ["far.seg.nrrd", "does not share space"]))


@case("classify-seg-nrrd-cut-short")
def classify_seg_nrrd_cut_short(t, m):
    whole = a_seg_nrrd(t, "whole.seg.nrrd").read_bytes()
    cut = a_file(t / "cut.seg.nrrd", whole[: whole.index(b"\n\n") + 12])  # the header and a few data bytes
    return _classify(t, a_ct(t), cut), ["cut.seg.nrrd", "truncated"]
case("classify-segmentation-zero-spacing")(
    lambda t, m: (_classify(t, a_ct(t), an_nhdr(t, "seg.nhdr", directions="(1,0,0) (0,0,0) (0,0,2)")), ["seg.nhdr"]))


@case("classify-json-exists")
def classify_json_exists(t, m):
    (t / "r.json").write_text("{}")
    return _classify(t, TS_CT, TS_LABELS, "--labels", "totalsegmentator", "--json", str(t / "r.json")), ["--overwrite"]


case("classify-json-under-a-file")(
    lambda t, m: (_classify(t, TS_CT, TS_LABELS, "--labels", "totalsegmentator", "--json",
                            str(a_file(t / "f", b"x") / "r.json")), ["cannot write"]))
case("classify-unknown-kvp", exit_code=2)(lambda t, m: (_classify(t, TS_CT, TS_LABELS, "--kvp", "99"), ["99"]))
case("classify-unknown-model", exit_code=2)(lambda t, m: (_classify(t, TS_CT, TS_LABELS, "--model", "l3"), ["l3"]))


@case("classify-model-card-not-json")
def classify_model_card_not_json(t, m):
    broken_models(t, m, "classifier-l1", lambda f: (f / "model_card.json").write_text("{oops"))
    return _classify(t, TS_CT, TS_LABELS, "--labels", "totalsegmentator", "--model", "l1"), ["model_card.json", "JSON"]


@case("classify-model-weights-missing")
def classify_model_weights_missing(t, m):
    broken_models(t, m, "classifier-l1l2", lambda f: (f / "classifier.onnx").unlink())
    return _classify(t, TS_CT, TS_LABELS, "--labels", "totalsegmentator"), ["classifier.onnx", "missing"]


# ---- screen


@case("screen-output-dir-is-a-file")
def screen_output_dir_is_a_file(t, m):
    (t / "out").write_text("x")
    return ["screen", str(a_ct(t)), "--output-dir", str(t / "out")], ["out", "cannot write"]


case("screen-output-dir-unwritable")(
    lambda t, m: (["screen", str(a_ct(t)), "--output-dir", str(unwritable_folder(t))], ["cannot write"]))
case("screen-output-dir-under-a-file")(
    lambda t, m: (["screen", str(a_ct(t)), "--output-dir", str(a_ct(t, "x.nrrd") / "out")], ["cannot write"]))
case("screen-input-missing")(
    lambda t, m: (["screen", str(t / "nope.nii.gz"), "--output-dir", str(t / "out")], ["nope.nii.gz", "no such"]))
case("screen-folder-without-cts")(
    lambda t, m: (["screen", str(a_file(t / "a.txt", b"x").parent),
                   "--output-dir", str(t / "out")], ["no CT files"]))
case("screen-unknown-contrast", exit_code=2)(
    lambda t, m: (["screen", str(TS_CT), "--output-dir", str(t / "out"), "--contrast", "oral"], ["oral"]))

# ---- evaluate-segmentation


def _evaluate(ref, pred, *extra):
    return ["evaluate-segmentation", "--reference", str(ref), "--prediction", str(pred), *extra]


case("evaluate-prediction-of-another-scan")(
    lambda t, m: (_evaluate(TS_LABELS, VERSE_LABELS, "--reference-labels", "totalsegmentator",
                            "--prediction-labels", "verse"), ["verse012", "does not share space"]))
case("evaluate-prediction-shifted-1m")(
    lambda t, m: (_evaluate(a_labelmap(t, "ref.nii.gz"), a_labelmap(t, "pred.nii.gz", origin=(0, 1000, 0))),
                  ["pred.nii.gz", "does not share space"]))
case("evaluate-reference-off-the-ct")(
    lambda t, m: (_evaluate(a_labelmap(t, "ref.nii.gz", origin=(0, 0, 500)), a_labelmap(t, "pred.nii.gz"),
                            "--ct", str(a_ct(t))), ["ref.nii.gz", "does not share space"]))
case("evaluate-seg-nrrd-reference-without-ct")(
    lambda t, m: (_evaluate(a_file(t / "r.seg.nrrd", b"x"), TS_LABELS), ["--ct"]))
case("evaluate-reference-missing")(lambda t, m: (_evaluate(t / "nope.nii.gz", TS_LABELS), ["nope.nii.gz"]))
case("evaluate-reference-zero-spacing")(
    lambda t, m: (_evaluate(a_nifti(t, "ref.nii", pixdim=(1, 0, 2)), TS_LABELS), ["ref.nii", "1x0x2"]))
case("evaluate-bad-prediction-mapping")(
    lambda t, m: (_evaluate(TS_LABELS, TS_LABELS, "--prediction-labels", "L7=3"), ["L7=3"]))


@case("evaluate-csv-exists")
def evaluate_csv_exists(t, m):
    (t / "t.csv").write_text("mine")
    return _evaluate(a_labelmap(t, "ref.nii.gz"), a_labelmap(t, "pred.nii.gz"), "--csv", str(t / "t.csv")), ["t.csv"]


# ---- demo

case("demo-case-missing")(lambda t, m: (["demo", "--case", str(t / "nocase"), "--output-dir", str(t / "d")], ["nocase"]))


@case("demo-output-dir-is-a-file")
def demo_output_dir_is_a_file(t, m):
    return (["demo", "--case", str(TS_CT.parent), "--output-dir", str(a_file(t / "d", b"x"))],
            ["cannot write"])


# ---- info

case("info-unknown-option", exit_code=2)(lambda t, m: (["info", "--verbose"], ["--verbose"]))


# --------------------------------------------------------------------------- the checks


def snapshot(tmp: Path, argv: list[str]) -> dict:
    """Every file under ``tmp`` with its bytes' hash, and the real cases used, by size and time."""
    state = {}
    for p in sorted(tmp.rglob("*")):
        state[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
    for a in argv:
        p = Path(a)
        if p.is_relative_to(REAL_DATA) and p.exists():
            for f in [p, *p.rglob("*")] if p.is_dir() else [p]:
                st = f.stat()
                state[str(f)] = (st.st_size, st.st_mtime_ns)
    return state


def test_the_suite_covers_every_command_with_sixty_inputs():
    commands = {c.id.split("-")[0] for c in CASES}
    assert commands >= {"info", "convert", "phantom", "segment", "classify", "screen", "evaluate", "demo"}
    assert len({c.id for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_gives_one_line_and_writes_nothing(bad, tmp_path, monkeypatch, capfd):
    argv, words = bad.build(tmp_path, monkeypatch)
    before = snapshot(tmp_path, argv)
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # the argument parser's usage errors
        code = exc.code
    err = capfd.readouterr().err  # the process's stderr: library lines would show here
    assert code == bad.exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if bad.exit_code == 1:
        assert len(lines) == 1, err
        assert lines[0].startswith("osteoscreen: error: ")
    else:  # usage, then one error line
        assert "error:" in lines[-1]
    for w in words:
        assert w in lines[-1], lines[-1]
    assert snapshot(tmp_path, argv) == before


def test_the_segmenter_refuses_a_scene_volume_of_50mm_voxels(a_scene):
    """A volume node of the scene (Slicer's module) has passed no reader: the segmenter checks its grid."""
    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib.logic import OsteoScreenLogic
    from OsteoScreenLib.mrml_convert import volume_to_node

    node = volume_to_node(a_scene, Volume.from_geometry(a_ct_array(SHAPE), (50.0, 50.0, 50.0), (0, 0, 0)))
    with pytest.raises(OsteoScreenError, match="50x50x50"):
        OsteoScreenLogic(a_scene).segment(node)


@pytest.mark.parametrize("make", [lambda t: a_dicom(t, edit=corrupt_jpeg2000), lambda t: a_nifti(t, pixdim=(1, 1, 0))],
                         ids=["broken-jpeg2000-slice", "nifti-zero-slice-spacing"])
def test_the_command_prints_our_line_and_no_library_messages(tmp_path, make):
    """The installed command as a user runs it: OpenJPEG's "Invalid marker size" lines go to the log."""
    source = make(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "OsteoScreenLib.cli", "convert", str(source), str(tmp_path / "o.nrrd")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("osteoscreen: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o.nrrd").exists()


def test_a_segmentation_of_another_scan_is_refused_where_the_module_loads_it(a_scene):
    """The module and the Python API load through the logic: the same check, and no node left behind."""
    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib.logic import OsteoScreenLogic
    from OsteoScreenLib.segmentation_nodes import parse_label_mapping

    logic = OsteoScreenLogic(a_scene)
    ct = logic.load_ct(TS_CT)
    with pytest.raises(OsteoScreenError, match="verse012.*does not share space with .*totalsegmentator-example"):
        logic.load_segmentation(VERSE_LABELS, ct, parse_label_mapping("verse"))
    assert a_scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    assert logic.load_segmentation(TS_LABELS, ct, parse_label_mapping("totalsegmentator")) is not None
