"""L1/L2 segmentations in Slicer's MRML data model.

Every function takes the scene (or a node of it) as an argument: inside Slicer
pass ``slicer.mrmlScene``; headless pass a ``slicer.vtkMRMLScene()`` of the
``slicer-core`` wheel. Nothing here opens dialogs or uses ``slicer.app``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import vtk_classes as vtk
from .atomic import atomic_path
from .ct_io import check_nrrd_complete, quiet_vtk, read_volume
from .errors import OsteoScreenError
from .mrml_convert import volume_from_node, volume_to_node
from .mrml_kits import segmentation_converter, segmentations_logic_class
from .resample import crop_to_mask
from .registry import LABEL_MAPPINGS, LABEL_OF, VERTEBRA_BY_NAME, VERTEBRA_NAMES, terminology_entry
from .volume import Volume


_LOGIC = None


def _logic():
    """One segmentations logic; creating it registers the representation converters."""
    global _LOGIC
    if _LOGIC is None:
        _LOGIC = segmentations_logic_class()()
    return _LOGIC


def new_segmentation_node(scene, reference_volume_node, name: str = "L1-L2 segmentation",
                          reference_geometry: Volume | None = None, display: bool = True):
    """An empty segmentation node with the CT as reference geometry (a node, or a Volume's grid).

    ``display``: with display nodes, as a viewer needs; a file written without views skips them.
    """
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    if display:
        node.CreateDefaultDisplayNodes()
    if reference_volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    elif reference_geometry is not None:
        set_reference_geometry(node, reference_geometry)
    return node


def set_reference_geometry(segmentation_node, grid: Volume) -> None:
    """The grid of a Volume as the segmentation's reference geometry, without a volume node
    (what SetReferenceImageGeometryParameterFromVolumeNode stores, from the geometry alone)."""
    from .mrml_convert import numpy_to_matrix

    image = vtk.vtkImageData()
    image.SetDimensions(*grid.shape_ijk)  # no voxels: only the extent is serialized
    converter = segmentation_converter()
    geometry = converter.SerializeImageGeometry(numpy_to_matrix(grid.ijk_to_ras), image)
    segmentation_node.GetSegmentation().SetConversionParameter(
        converter.GetReferenceImageGeometryParameterName(), geometry)


def set_vertebra_properties(segment, name: str) -> None:
    """Name, colour and Slicer terminology of a vertebra segment."""
    spec = VERTEBRA_BY_NAME[name]
    segment.SetName(name)
    segment.SetColor(*spec.color_rgb)
    if hasattr(segment, "SetTerminology"):  # Slicer 5.10+
        segment.SetTerminology(terminology_entry(name))
    else:  # Slicer before 5.10 keeps the terminology as a segment tag
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(name))


def add_vertebra_segment(segmentation_node, name: str, mask: Volume) -> str:
    """Add segment ``name`` from a binary mask with its own geometry; returns the segment ID."""
    scene = segmentation_node.GetScene()
    # a body fills a tiny part of a chest CT: import only its box (small segment, fast import)
    binary = mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))
    box = crop_to_mask(binary, binary.array)
    binary = binary if box is None else box
    label_node = volume_to_node(scene, binary, "__osteoscreen_temp__", "vtkMRMLLabelMapVolumeNode")
    segmentation = segmentation_node.GetSegmentation()
    before = set(segmentation.GetSegmentIDs())
    try:
        # Import without target IDs: Slicer creates the segment with a binary labelmap
        # representation (adding an empty segment first fails on slicer-core).
        if not _logic().ImportLabelmapToSegmentationNode(label_node, segmentation_node):
            raise OsteoScreenError(f"could not import segment {name}")
    finally:
        scene.RemoveNode(label_node)
    (segment_id,) = set(segmentation.GetSegmentIDs()) - before
    set_vertebra_properties(segmentation.GetSegment(segment_id), name)
    return segment_id


def segmentation_from_labelmap(
    scene,
    labelmap: Volume,
    reference_volume_node=None,
    mapping: dict[str, int] | None = None,
    name: str = "L1-L2 segmentation",
    reference_geometry: Volume | None = None,
) -> tuple[object, list[str]]:
    """A new segmentation node with one segment per vertebra present in ``labelmap``.

    ``mapping`` gives the label value of each vertebra (default: OsteoScreen's 1 = L1,
    2 = L2; see :data:`registry.LABEL_MAPPINGS` for VerSe and TotalSegmentator).
    The reference geometry is ``reference_volume_node`` or, without one, the grid of
    ``reference_geometry``. Returns the node and the names of vertebrae missing from the label map.
    """
    mapping = dict(LABEL_OF if mapping is None else mapping)
    node = new_segmentation_node(scene, reference_volume_node, name, reference_geometry,
                                 display=reference_volume_node is not None)
    labelled = crop_to_mask(labelmap, np.asarray(labelmap.array) > 0)  # one pass over the whole grid
    missing = []
    for vertebra in VERTEBRA_NAMES:
        value = mapping.get(vertebra)
        box = None if value is None or labelled is None else crop_to_mask(labelled, labelled.array == value)
        if box is None:
            missing.append(vertebra)
            continue
        add_vertebra_segment(node, vertebra, box.with_array(box.array == value))
    return node, missing


def _terminology(segment) -> str:
    if hasattr(segment, "GetTerminology"):  # Slicer 5.10+
        return segment.GetTerminology()
    value = vtk.reference("")  # before 5.10: a segment tag
    return value.get() if segment.GetTag(segment.GetTerminologyEntryTagName(), value) else ""


def segment_id_of(segmentation_node, vertebra: str) -> str | None:
    """The segment of a vertebra, found by name, else by its SNOMED CT terminology code."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(vertebra)
    if segment_id:
        return segment_id
    code = f"^{VERTEBRA_BY_NAME[vertebra].sct_code}^"
    for n in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(n)
        if code in (_terminology(segment) or ""):
            return segmentation.GetNthSegmentID(n)
    return None


def labelmap_on_grid(segmentation_node, reference_volume_node) -> np.ndarray:
    """Label map (0, 1 = L1, 2 = L2) of the segmentation resampled onto the CT grid.

    Works whatever the segmentation's own geometry (e.g. a user's edit saved with
    another extent or spacing): Slicer's export resamples to the reference volume.
    """
    scene = segmentation_node.GetScene()
    i, j, k = reference_volume_node.GetImageData().GetDimensions()  # the grid only: no copy of the CT
    out = np.zeros((k, j, i), np.uint8)
    for vertebra in VERTEBRA_NAMES:
        segment_id = segment_id_of(segmentation_node, vertebra)
        if segment_id is None:
            continue
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__osteoscreen_temp__")
        try:
            if not _logic().ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node, reference_volume_node):
                raise OsteoScreenError(f"could not export segment {vertebra} to the CT grid")
            mask = volume_from_node(label_node).array > 0
        finally:
            display = label_node.GetDisplayNode()
            scene.RemoveNode(label_node)
            if display is not None:
                scene.RemoveNode(display)
        out[mask & (out == 0)] = VERTEBRA_BY_NAME[vertebra].label
    return out


# Least share of a segmentation's extent, along each axis, that lies on the grid it is measured on.
IN_GRID_MIN_FRACTION = 0.5


def check_in_grid(segmentation_node, path, grid_node, grid_name) -> None:
    """A segmentation must lie on the grid it is measured on: one of another scan lies elsewhere
    in world space and would measure as empty (DSC 0, HD95 nan, "not segmented") without a word."""
    seg, grid = [0.0] * 6, [0.0] * 6
    segmentation_node.GetRASBounds(seg)
    grid_node.GetRASBounds(grid)
    lo, hi = np.array(seg[0::2]), np.array(seg[1::2])
    if np.any(lo > hi):  # no segments: the caller says which level is missing
        return
    overlap = np.minimum(hi, grid[1::2]) - np.maximum(lo, grid[0::2])
    fraction = float(np.min(np.clip(overlap, 0, None) / np.maximum(hi - lo, 1e-6)))
    if fraction < IN_GRID_MIN_FRACTION:
        raise OsteoScreenError(f"{path}: does not share space with {grid_name} ({fraction:.0%} of its extent lies "
                               "on that grid): a segmentation of another scan? use one made on this scan")


def save_segmentation(segmentation_node, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a ``.seg.nrrd`` atomically (names, colours and terminology in its header)."""
    path = Path(path)
    if not str(path).lower().endswith(".seg.nrrd"):
        raise OsteoScreenError(f"{path}: a segmentation is saved as .seg.nrrd")
    scene = segmentation_node.GetScene()
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    # store the segments' box, not the whole CT extent (Slicer keeps the reference geometry
    # in the header and reads it back in place): a small file, written fast
    storage.SetCropToMinimumExtent(True)
    try:
        with atomic_path(path, overwrite) as tmp:
            storage.SetFileName(str(tmp))
            with quiet_vtk():
                ok = storage.WriteData(segmentation_node)
            if not ok:
                raise OsteoScreenError(f"{path}: could not be written; check the folder and free space")
    finally:
        scene.RemoveNode(storage)
    return path


def load_segmentation(scene, path: str | os.PathLike, reference_volume_node=None):
    """Read a ``.seg.nrrd`` (e.g. saved by Slicer after editing) into a new node."""
    path = Path(path)
    if not path.exists():
        raise OsteoScreenError(f"{path}: no such file; check the path")
    check_nrrd_complete(path)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(path.name.split(".")[0]))
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    with quiet_vtk():
        ok = storage.ReadData(node)
    if not ok:
        scene.RemoveNode(node)
        raise OsteoScreenError(f"{path}: cannot be read as a segmentation (truncated or not .seg.nrrd?)")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    if reference_volume_node is not None:
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), reference_volume_node.GetID())
    return node


def parse_label_mapping(text: str) -> dict[str, int]:
    """``verse``, ``totalsegmentator``, ``osteoscreen`` or explicit ``L1=20,L2=21``."""
    key = text.strip().lower()
    if key in LABEL_MAPPINGS:
        return dict(LABEL_MAPPINGS[key])
    mapping = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().upper()
        if not sep or name not in VERTEBRA_BY_NAME or not value.strip().isdigit():
            raise OsteoScreenError(
                f"label mapping {text!r}: use {', '.join(LABEL_MAPPINGS)} or a list like L1=20,L2=21"
            )
        mapping[name] = int(value)
    return mapping


def load_segmentation_file(scene, path: str | os.PathLike, reference_volume_node=None, mapping=None):
    """A segmentation node from a ``.seg.nrrd`` or from a label map file with a label mapping;
    one that does not lie on ``reference_volume_node`` (another scan's) is an error."""
    path = Path(path)
    node = _segmentation_file_node(scene, path, reference_volume_node, mapping)
    if reference_volume_node is not None:
        grid_name = reference_volume_node.GetAttribute("OsteoScreen.SourcePath") or reference_volume_node.GetName()
        try:
            check_in_grid(node, path, reference_volume_node, grid_name)
        except OsteoScreenError:
            scene.RemoveNode(node)
            raise
    return node


def _segmentation_file_node(scene, path: Path, reference_volume_node, mapping):
    if str(path).lower().endswith(".seg.nrrd"):
        return load_segmentation(scene, path, reference_volume_node)
    labelmap = read_volume(path)
    if np.issubdtype(labelmap.array.dtype, np.floating):
        labelmap = labelmap.with_array(np.round(labelmap.array).astype(np.int32))
    node, missing = segmentation_from_labelmap(scene, labelmap, reference_volume_node, mapping)
    if len(missing) == len(VERTEBRA_NAMES):
        scene.RemoveNode(node)
        raise OsteoScreenError(
            f"{path}: no L1 or L2 label with mapping {mapping or LABEL_OF}; pass the right label mapping"
        )
    return node
