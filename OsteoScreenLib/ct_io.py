"""Reading and writing CT volumes with exact geometry.

Files go through Slicer's own storage nodes (ITK readers and writers), so a
scan reads the same headless on ``slicer-core`` as inside Slicer: NIfTI
(.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), and a folder of
DICOM files (series chosen and sorted here with pydicom headers, pixels
decoded by ITK/GDCM, which also handles compressed transfer syntaxes).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import struct
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import atomic_path
from .errors import OsteoScreenError
from .guards import check_axes, check_grid, check_spacing_values, check_voxel_count
from .registry import HU_MAX_PLAUSIBLE, HU_MIN_PLAUSIBLE
from .volume import Volume

_LOG = logging.getLogger(__name__)
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


def volume_extension(path: str | os.PathLike) -> str | None:
    name = str(path).lower()
    return next((e for e in VOLUME_EXTENSIONS if name.endswith(e)), None)


# --------------------------------------------------------------------------- reading


def read_ct(path: str | os.PathLike, header: dict | None = None, series_files: list | None = None) -> Volume:
    """Read a CT scan (file or DICOM folder) in Hounsfield units, checked for plausibility.

    ``header``, if given, receives what the acquisition records: ``kvp`` (tube voltage of a
    DICOM series, None for files that do not record it), ``padding_hu`` (the padding range a
    DICOM series declares) and ``padding_voxels`` (how many voxels of padding or sub-air values
    were read as air, see :mod:`padding`). ``series_files``: of a DICOM folder, read only these
    files (the series a study's selection chose, :mod:`study`).
    """
    path = Path(path)
    header = {} if header is None else header
    volume = read_volume(path, header, series_files)
    volume, header["padding_voxels"] = checked_ct(volume, path, header.get("padding_hu"), in_place=True)  # ours alone
    return volume


def checked_ct(volume: Volume, name, padding_hu: tuple[float, float] | None = None,
               in_place: bool = False) -> tuple[Volume, int]:
    """A CT as every stage takes it, checked once where it enters: padding and sub-air values read
    as air (:mod:`padding`; ``padding_hu``: the range a DICOM series declares), values that must be
    Hounsfield units, a plausible grid. Returns the volume and how many voxels were set to air.
    The readers (:func:`read_ct`) and the Slicer module's nodes (``logic.case_input``) pass through
    here; a volume made elsewhere (a phantom, a crop) should too, before the segmenter.
    ``in_place``: padding set to air in the volume's own voxels (one no one else holds)."""
    from .padding import padding_to_air

    volume, count = padding_to_air(volume, padding_hu, in_place)
    check_hounsfield(volume, name)
    check_grid(volume, name)
    return volume, count


def read_volume(path: str | os.PathLike, header: dict | None = None, series_files: list | None = None) -> Volume:
    """Read any supported 3D volume (CT or label map) without HU checks (``header``: see read_ct)."""
    path = Path(path)
    header = {} if header is None else header
    header["kvp"] = header["padding_hu"] = None
    if not path.exists():
        raise OsteoScreenError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        from .dicom_io import series_kvp, series_padding_hu, select_ct_series

        files = select_ct_series(path, series_files)
        header["kvp"] = series_kvp(files)
        header["padding_hu"] = series_padding_hu(files)
        return _read_with_storage_node(path, files)
    ext = volume_extension(path)
    if ext is None:
        raise OsteoScreenError(
            f"{path}: unsupported file type; use NIfTI, NRRD, MetaImage or a folder of DICOM files"
        )
    completeness_check = _check_file(path, ext)
    if completeness_check is None:
        return _read_with_storage_node(path, [path])
    # Inflating a .gz to prove it complete takes as long as reading it: do both at once
    # (ITK reads without holding Python's lock), and report a cut file rather than ITK's failure.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(completeness_check)
        try:
            volume = _read_with_storage_node(path, [path])
        except OsteoScreenError:
            pending.result()
            raise
        pending.result()
    return volume


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
def quiet_vtk():
    """VTK warnings off, and what the C++ libraries print (ITK, GDCM, OpenJPEG) to the log:
    our one-line error says what went wrong; their lines before it would only confuse."""
    from . import vtk_classes as vtk

    previous = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        with _native_stderr_to_log():
            yield
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(previous)


@contextmanager
def _native_stderr_to_log():
    """Send the process's stderr (file descriptor 2, below Python's sys.stderr) to the log meanwhile."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                _LOG.info("library messages: %s", text)


def _read_with_storage_node(path: Path, files: list[Path]) -> Volume:
    from .mrml_convert import volume_from_node
    from .mrml_kits import new_scene

    scene = new_scene()
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
    with quiet_vtk():
        ok = storage.ReadData(node)
    if not ok or node.GetImageData() is None:
        raise OsteoScreenError(f"{path}: cannot be read (truncated or corrupt?); export the image again")
    volume = volume_from_node(node, copy=False)  # a private scene: its voxels are ours
    dims = volume.array.shape
    if volume.array.ndim != 3:
        raise OsteoScreenError(f"{path}: a {volume.array.ndim}D image; OsteoScreen needs one 3D volume")
    if min(dims) < 2:
        raise OsteoScreenError(f"{path}: a 2D image ({dims[2]}x{dims[1]}); OsteoScreen needs a 3D volume")
    check_grid(volume, path)  # what the reader made of the header (DICOM: of the slice positions)
    return volume


# Header checks. The ITK readers silently take the first frame of a 4D image, read
# a 2D image as one slice, fill a truncated file with zeros and turn NaN into 0, so
# dimensionality, completeness and finiteness are checked on the file itself.

_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_NRRD_DTYPES = {
    "uchar": "u1", "unsigned char": "u1", "uint8": "u1", "uint8_t": "u1", "signed char": "i1", "int8": "i1",
    "int8_t": "i1", "short": "i2", "short int": "i2", "signed short": "i2", "int16": "i2", "int16_t": "i2",
    "ushort": "u2", "unsigned short": "u2", "uint16": "u2", "uint16_t": "u2", "int": "i4", "signed int": "i4",
    "int32": "i4", "int32_t": "i4", "uint": "u4", "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4",
    "float": "f4", "double": "f8", "longlong": "i8", "int64": "i8", "ulonglong": "u8", "uint64": "u8",
}
_MET_DTYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
               "MET_UINT": "u4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8"}


class _Header:
    """What the checks need to know of a volume file (``spacing``: as stated, e.g. NIfTI pixdim;
    ``axes``: the voxel axes in mm as columns, when the header gives them)."""

    def __init__(self, sizes, dtype=None, data_file=None, offset=0, encoding="raw", endian="<"):
        self.sizes, self.dtype, self.data_file = sizes, dtype, data_file
        self.offset, self.encoding, self.endian = offset, encoding, endian
        self.spacing: list[float] | None = None
        self.axes: np.ndarray | None = None


def _check_file(path: Path, ext: str) -> Callable[[], None] | None:
    """Header checks now; returns the completeness check of a compressed file to run
    alongside the reading (None when everything is checked already)."""
    try:
        header = _read_header(path, ext)
    except (OSError, EOFError, ValueError, KeyError, struct.error) as exc:
        raise OsteoScreenError(f"{path}: cannot read its header ({exc}); check that the file is complete") from None
    sizes = header.sizes
    if len(sizes) > 3 and any(s > 1 for s in sizes[3:]):
        raise OsteoScreenError(
            f"{path}: a {len(sizes)}D image (sizes {sizes}); OsteoScreen needs one 3D volume: extract one frame"
        )
    if len([s for s in sizes if s > 1]) < 3:
        raise OsteoScreenError(f"{path}: a 2D image (sizes {sizes}); OsteoScreen needs a 3D volume")
    _check_header_geometry(header, path)
    if header.dtype is None or header.data_file is None:
        return None
    itemsize = np.dtype(header.dtype).itemsize
    expected = int(np.prod(sizes)) * itemsize
    floating = header.dtype.startswith("f")
    if header.encoding == "gzip" and not floating:
        if _gzip_trailer_size(header.data_file) == (header.offset + expected) % (1 << 32):
            return None  # the stream ends where a complete file ends (see _gzip_trailer_size)
        return lambda: _check_size(path, _gzip_size(header.data_file) - header.offset, expected)
    if header.encoding == "raw" and not floating:
        available = header.data_file.stat().st_size - header.offset
    else:
        payload = _payload(header, expected)
        available = len(payload)
        if floating and available >= expected:
            values = np.frombuffer(payload[:expected], dtype=header.endian + header.dtype)
            if not np.isfinite(values).all():
                raise OsteoScreenError(f"{path}: contains NaN or infinite voxels; export the CT again")
    _check_size(path, available, expected)
    return None


def _check_header_geometry(header: _Header, path: Path) -> None:
    """Size and geometry as the header states them, before the reader allocates or
    quietly repairs them (a zero NIfTI pixdim is read as 1 mm, a negative one flips an axis)."""
    check_voxel_count(header.sizes[:3], path)
    if header.spacing is not None:
        check_spacing_values(header.spacing[:3], path)
    if header.axes is not None:
        check_axes(header.axes, path)
    if header.data_file is not None and not header.data_file.is_file():
        raise OsteoScreenError(f"{path}: its data file {header.data_file.name} is missing; "
                               "keep the header and its data file together in one folder")


def check_nrrd_complete(path: Path) -> None:
    """A NRRD for a reader other than the CT's (a .seg.nrrd): its header must parse and its data
    be all there, for a cut one aborts Slicer's segmentation reader and the process with it."""
    try:
        header = _read_header(path, ".nrrd")
    except (OSError, EOFError, ValueError, KeyError, struct.error) as exc:
        raise OsteoScreenError(f"{path}: cannot read its header ({exc}); check that the file is complete") from None
    if header.dtype is None:
        return
    expected = int(np.prod(header.sizes)) * np.dtype(header.dtype).itemsize
    data_path = header.data_file or path
    if not data_path.is_file():
        raise OsteoScreenError(f"{path}: its data file {data_path.name} is missing; keep them together")
    if header.encoding == "gzip":
        attached = header.data_file is None
        available = _gzip_size(data_path, header.offset if attached else 0) - (0 if attached else header.offset)
    else:
        available = data_path.stat().st_size - header.offset
    _check_size(path, available, expected)


def _check_size(path: Path, available: int, expected: int) -> None:
    if available < expected:
        raise OsteoScreenError(
            f"{path}: truncated ({max(available, 0)} of {expected} data bytes); copy or export the file again"
        )


def _gzip_trailer_size(path: Path) -> int | None:
    """The uncompressed size (modulo 2**32) that a gzip file's last member records in its trailer.

    A file cut short ends in compressed data instead: its last four bytes match the size a
    complete file would have by chance once in 2**32. So where they match the file is taken as
    complete without inflating it a second time beside the reader; where they do not (cut, or
    several members, whose last records only its own size) :func:`_gzip_size` decides.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 18:  # header (10) and trailer (8) of the smallest gzip member
                return None
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]
    except OSError:
        return None


def _gzip_size(path: Path, offset: int = 0) -> int:
    """Uncompressed size of a gzip file, streamed; -1 if the stream is cut or corrupt.

    The size field of the gzip trailer cannot be trusted for a cut file, so the
    stream is inflated (without keeping it) to the end.
    """
    import zlib

    total, inflater = 0, zlib.decompressobj(wbits=31)  # raw zlib with large reads: fast
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while data := f.read(1 << 22):
                while data:
                    if inflater.eof:  # after a member: zero padding or the next member
                        data = data.lstrip(b"\0")
                        if not data:
                            break
                        inflater = zlib.decompressobj(wbits=31)
                    total += len(inflater.decompress(data, 1 << 26))  # bounded output per call
                    data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    except zlib.error:
        return -1
    return total if inflater.eof else -1  # no end-of-stream marker: the file is cut


def _payload(header: _Header, expected: int) -> bytes:
    with open(header.data_file, "rb") as f:
        if header.encoding == "gzip":
            try:
                data = gzip.GzipFile(fileobj=f).read()
            except (EOFError, OSError, gzip.BadGzipFile):
                return b""
            return data[header.offset :]
        if header.encoding == "zlib":
            import zlib

            f.seek(header.offset)
            try:
                return zlib.decompress(f.read())
            except zlib.error:
                return b""
        f.seek(header.offset)
        return f.read(expected)


def _read_header(path: Path, ext: str) -> _Header:
    if ext in (".nii", ".nii.gz"):
        opener = gzip.open if ext == ".nii.gz" else open
        with opener(path, "rb") as f:
            hdr = f.read(348)
        if len(hdr) < 348:
            raise ValueError("header shorter than 348 bytes")
        endian = "<" if struct.unpack("<i", hdr[:4])[0] == 348 else ">"
        if struct.unpack(endian + "i", hdr[:4])[0] != 348:
            raise ValueError("not a NIfTI-1 header")
        dim = struct.unpack(endian + "8h", hdr[40:56])
        if not 1 <= dim[0] <= 7:
            raise ValueError("not a NIfTI-1 header")
        datatype = struct.unpack(endian + "h", hdr[70:72])[0]
        offset = int(struct.unpack(endian + "f", hdr[108:112])[0])
        header = _Header(list(dim[1 : dim[0] + 1]), _NIFTI_DTYPES.get(datatype), path, offset,
                         "gzip" if ext == ".nii.gz" else "raw", endian)
        header.spacing = list(struct.unpack(endian + "3f", hdr[80:92]))  # pixdim[1:4]
        if struct.unpack(endian + "h", hdr[254:256])[0] > 0:  # sform_code: the sform gives the grid
            header.axes = np.array(struct.unpack(endian + "12f", hdr[280:328]), float).reshape(3, 4)[:, :3]
        return header
    text, header_bytes = _text_header(path)
    fields = dict(re.findall(r"^([^:=#\n]+?)\s*:=?\s*(.*)$", text, re.M)) if ext in (".nrrd", ".nhdr") else \
        dict(re.findall(r"^(\w+)\s*=\s*(.*)$", text, re.M))
    if ext in (".nrrd", ".nhdr"):
        if not text.startswith("NRRD"):
            raise ValueError("not a NRRD header")
        sizes = [int(s) for s in fields["sizes"].split()]
        kinds = fields.get("kinds", "").split()
        if kinds and len(kinds) == len(sizes):  # non-spatial axes (vector, list, time) go last
            spatial = [s for s, k in zip(sizes, kinds) if k in ("domain", "space")]
            sizes = spatial + [s for s, k in zip(sizes, kinds) if k not in ("domain", "space")]
        encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}.get(fields.get("encoding", "raw"))
        data_file = fields.get("data file") or fields.get("datafile")
        data_path = (path.parent / data_file) if data_file else path
        offset = 0 if data_file else header_bytes
        endian = ">" if fields.get("endian", "little") == "big" else "<"
        if encoding == "gzip" and not data_file:  # attached gzip: decompress from the header's end
            header = _Header(sizes, _NRRD_DTYPES.get(fields.get("type", "")), None, header_bytes, "gzip", endian)
            header.axes = _nrrd_axes(fields.get("space directions", ""))
            return header
        header = _Header(sizes, _NRRD_DTYPES.get(fields.get("type", "")), data_path if encoding else None, offset,
                         encoding or "raw", endian)
        header.axes = _nrrd_axes(fields.get("space directions", ""))
        return header
    if "DimSize" not in fields:
        raise ValueError("no 'DimSize' field")
    sizes = [int(s) for s in fields["DimSize"].split()]
    channels = int(fields.get("ElementNumberOfChannels", "1"))
    if channels > 1:
        sizes.append(channels)
    data_file = fields.get("ElementDataFile", "LOCAL").strip()
    data_path = path if data_file == "LOCAL" else path.parent / data_file
    offset = header_bytes if data_file == "LOCAL" else 0
    encoding = "zlib" if fields.get("CompressedData", "False").strip() == "True" else "raw"
    if data_file.startswith("LIST") or "%" in data_file:
        header = _Header(sizes, None, None)
    else:
        endian = ">" if fields.get("BinaryDataByteOrderMSB", "False").strip() == "True" else "<"
        header = _Header(sizes, _MET_DTYPES.get(fields.get("ElementType", "").strip()), data_path, offset, encoding,
                         endian)
    spacing = fields.get("ElementSpacing") or fields.get("ElementSize")
    if spacing:
        header.spacing = [float(v) for v in spacing.split()]
    matrix = fields.get("TransformMatrix", "").split()
    if spacing and len(matrix) == 9 and len(header.spacing) >= 3:
        header.axes = np.array(matrix, float).reshape(3, 3).T * np.abs(header.spacing[:3])
    return header


def _nrrd_axes(directions: str) -> np.ndarray | None:
    """The 3x3 voxel axes (mm, columns) of a NRRD's ``space directions``; None without three vectors."""
    vectors = re.findall(r"\(([^)]*)\)", directions)
    if len(vectors) != 3:
        return None
    return np.array([[float(v) for v in vec.split(",")] for vec in vectors]).T


def _text_header(path: Path, limit: int = 65536) -> tuple[str, int]:
    """Header text and its length in bytes (NRRD: up to the blank line; MetaImage: through ElementDataFile)."""
    with open(path, "rb") as f:
        head = f.read(limit)
    end = head.find(b"\n\n")
    if end >= 0:
        return head[:end].decode("latin-1"), end + 2
    m = re.search(rb"^ElementDataFile\s*=.*?\n", head, re.M)
    if m:
        return head[: m.end()].decode("latin-1"), m.end()
    return head.decode("latin-1"), len(head)


# --------------------------------------------------------------------------- writing


def write_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a volume to NIfTI, NRRD or MetaImage, atomically, keeping its geometry."""
    from .mrml_convert import volume_to_node
    from .mrml_kits import new_scene

    path = Path(path)
    ext = volume_extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise OsteoScreenError(f"{path}: cannot write this type; use .nii.gz, .nii, .nrrd or .mha")
    scene = new_scene()
    node = volume_to_node(scene, volume, name=path.name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetUseCompression(1)
    with atomic_path(path, overwrite) as tmp:
        storage.SetFileName(str(tmp))
        with quiet_vtk():
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
