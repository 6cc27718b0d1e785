"""Reading and writing CT volumes with exact geometry.

Files go through Slicer's own storage nodes (ITK readers and writers), so a
scan reads the same headless on ``slicer-core`` as inside Slicer: NIfTI
(.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), and a folder of
DICOM files (series chosen and sorted here with pydicom headers, pixels
decoded by ITK/GDCM, which also handles compressed transfer syntaxes).
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import OsteoScreenError
from .registry import HU_MAX_PLAUSIBLE, HU_MIN_PLAUSIBLE
from .volume import Volume

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


def volume_extension(path: str | os.PathLike) -> str | None:
    name = str(path).lower()
    return next((e for e in VOLUME_EXTENSIONS if name.endswith(e)), None)


# --------------------------------------------------------------------------- reading


def read_ct(path: str | os.PathLike) -> Volume:
    """Read a CT scan (file or DICOM folder) in Hounsfield units, checked for plausibility."""
    path = Path(path)
    volume = read_volume(path)
    check_hounsfield(volume, path)
    return volume


def read_volume(path: str | os.PathLike) -> Volume:
    """Read any supported 3D volume (CT or label map) without HU checks."""
    path = Path(path)
    if not path.exists():
        raise OsteoScreenError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        from .dicom_io import select_ct_series

        files = select_ct_series(path)
        return _read_with_storage_node(path, files)
    ext = volume_extension(path)
    if ext is None:
        raise OsteoScreenError(
            f"{path}: unsupported file type; use NIfTI, NRRD, MetaImage or a folder of DICOM files"
        )
    _check_header_is_3d(path, ext)
    return _read_with_storage_node(path, [path])


def check_hounsfield(volume: Volume, path: Path | str) -> None:
    a = volume.array
    if a.size == 0:
        raise OsteoScreenError(f"{path}: the image holds no voxels")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise OsteoScreenError(f"{path}: contains NaN or infinite voxels; export the CT again")
    lo, hi = float(a.min()), float(a.max())
    if lo < HU_MIN_PLAUSIBLE or hi > HU_MAX_PLAUSIBLE:
        raise OsteoScreenError(
            f"{path}: values {lo:g}..{hi:g} cannot be Hounsfield units; provide a CT in HU"
        )
    if lo >= 0 or hi - lo < 200:
        # Every body CT has fat or air below 0 HU; a range of a few units is a mask or a
        # normalised image, and stored values without the rescale intercept start at 0.
        raise OsteoScreenError(
            f"{path}: values {lo:g}..{hi:g} are not Hounsfield units of a CT "
            "(missing rescale intercept, a mask, or a normalised image?); provide a CT in HU"
        )


@contextmanager
def _quiet_vtk():
    import vtk

    previous = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(previous)


def _read_with_storage_node(path: Path, files: list[Path]) -> Volume:
    import slicer

    from .mrml_convert import volume_from_node

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(files[0]))
    if len(files) > 1:
        storage.ResetFileNameList()
        for f in files:
            storage.AddFileName(str(f))
        storage.SetSingleFile(0)
    else:
        storage.SetSingleFile(1)
    with _quiet_vtk():
        ok = storage.ReadData(node)
    if not ok or node.GetImageData() is None:
        raise OsteoScreenError(f"{path}: cannot be read (truncated or corrupt?); export the image again")
    volume = volume_from_node(node)
    dims = volume.array.shape
    if volume.array.ndim != 3:
        raise OsteoScreenError(f"{path}: a {volume.array.ndim}D image; OsteoScreen needs one 3D volume")
    if min(dims) < 2:
        raise OsteoScreenError(f"{path}: a 2D image ({dims[2]}x{dims[1]}); OsteoScreen needs a 3D volume")
    return volume


# Header sniffing: the ITK readers silently take the first frame of a 4D image or
# read a 2D image as one slice, so dimensionality is checked before reading.


def _check_header_is_3d(path: Path, ext: str) -> None:
    try:
        sizes = _header_sizes(path, ext)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise OsteoScreenError(f"{path}: cannot read its header ({exc}); check that the file is complete") from None
    if sizes is None:
        return
    real = [s for s in sizes if s > 1]
    if len(sizes) > 3 and any(s > 1 for s in sizes[3:]):
        raise OsteoScreenError(
            f"{path}: a {len(sizes)}D image (sizes {sizes}); OsteoScreen needs one 3D volume: extract one frame"
        )
    if len(real) < 3:
        raise OsteoScreenError(f"{path}: a 2D image (sizes {sizes}); OsteoScreen needs a 3D volume")


def _header_sizes(path: Path, ext: str) -> list[int] | None:
    if ext in (".nii", ".nii.gz"):
        opener = gzip.open if ext == ".nii.gz" else open
        with opener(path, "rb") as f:
            hdr = f.read(348)
        if len(hdr) < 348:
            raise ValueError("header shorter than 348 bytes")
        endian = "<" if struct.unpack("<i", hdr[:4])[0] == 348 else ">"
        dim = struct.unpack(endian + "8h", hdr[40:56])
        if not 1 <= dim[0] <= 7:
            raise ValueError("not a NIfTI-1 header")
        return list(dim[1 : dim[0] + 1])
    text = _text_header(path)
    if ext in (".nrrd", ".nhdr"):
        m = re.search(r"^sizes:\s*(.+)$", text, re.M)
        kinds = re.search(r"^kinds:\s*(.+)$", text, re.M)
        if not m:
            raise ValueError("no 'sizes' field")
        sizes = [int(s) for s in m.group(1).split()]
        if kinds:  # drop non-spatial axes (e.g. a vector or list axis)
            k = kinds.group(1).split()
            spatial = [s for s, kind in zip(sizes, k) if kind in ("domain", "space")]
            extra = [s for s, kind in zip(sizes, k) if kind not in ("domain", "space")]
            return spatial + extra
        return sizes
    m = re.search(r"^DimSize\s*=\s*(.+)$", text, re.M)  # MetaImage
    if not m:
        raise ValueError("no 'DimSize' field")
    sizes = [int(s) for s in m.group(1).split()]
    ch = re.search(r"^ElementNumberOfChannels\s*=\s*(\d+)", text, re.M)
    return sizes + ([int(ch.group(1))] if ch else [])


def _text_header(path: Path, limit: int = 65536) -> str:
    with open(path, "rb") as f:
        head = f.read(limit)
    end = head.find(b"\n\n")  # NRRD: header ends at the first blank line
    if end >= 0:
        head = head[:end]
    return head.decode("latin-1")


# --------------------------------------------------------------------------- writing


def write_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a volume to NIfTI, NRRD or MetaImage, atomically, keeping its geometry."""
    import slicer

    from .mrml_convert import volume_to_node

    path = Path(path)
    ext = volume_extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise OsteoScreenError(f"{path}: cannot write this type; use .nii.gz, .nii, .nrrd or .mha")
    scene = slicer.vtkMRMLScene()
    node = volume_to_node(scene, volume, name=path.name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetUseCompression(1)
    with atomic_path(path, overwrite) as tmp:
        storage.SetFileName(str(tmp))
        with _quiet_vtk():
            ok = storage.WriteData(node)
        if not ok:
            raise OsteoScreenError(f"{path}: could not be written; check the folder and free space")
    return path


def write_ct(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a CT to a volume file, or to a DICOM series when ``path`` has no volume extension."""
    if volume_extension(path) is None:
        from .dicom_io import write_dicom_series

        return write_dicom_series(volume, path, overwrite=overwrite)
    return write_volume(volume, path, overwrite)
