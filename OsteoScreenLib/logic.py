"""MRML logic: what the Slicer module, Slicer's Python console and the CLI call.

The scene is passed in (``slicer.mrmlScene`` inside Slicer, a
``slicer.vtkMRMLScene()`` headless); no dialogs, no ``slicer.app``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import segmentation_nodes
from .ct_io import read_ct
from .measurements import vertebra_stats
from .mrml_convert import volume_from_node, volume_to_node
from .volume import Volume


class OsteoScreenLogic:
    def __init__(self, scene):
        self.scene = scene
        self._segmenter = None

    @property
    def segmenter(self):
        """The bundled segmentation model, loaded (and verified) on first use."""
        if self._segmenter is None:
            from .segmenter import L1L2Segmenter

            self._segmenter = L1L2Segmenter()
        return self._segmenter

    # --- volumes

    def load_ct(self, path: str | os.PathLike, name: str | None = None):
        """Read a CT file or DICOM folder into a new scalar volume node."""
        path = Path(path)
        volume = read_ct(path)
        node = volume_to_node(self.scene, volume, name or _display_name(path))
        node.SetAttribute("OsteoScreen.SourcePath", str(path))
        node.CreateDefaultDisplayNodes()
        return node

    # --- segmentations

    def load_segmentation(self, path: str | os.PathLike, ct_node, mapping: dict[str, int] | None = None):
        """A new segmentation node from a .seg.nrrd or a label map (with a label mapping)."""
        return segmentation_nodes.load_segmentation_file(self.scene, path, ct_node, mapping)

    def labelmap(self, segmentation_node, ct_node) -> Volume:
        """The L1/L2 label map of a segmentation on the CT grid (resampled if needed)."""
        ct = volume_from_node(ct_node)
        return ct.with_array(segmentation_nodes.labelmap_on_grid(segmentation_node, ct_node))

    def vertebra_stats(self, segmentation_node, ct_node) -> dict[str, dict]:
        return vertebra_stats(self.labelmap(segmentation_node, ct_node))

    def segment(self, ct_node, progress=None, cancel=None, name: str | None = None):
        """Segment L1/L2 of a volume node into a NEW segmentation node (never replaces one).

        Returns ``(segmentation_node, output)`` where ``output`` holds the label map on the
        CT grid, warnings and timings. ``cancel()`` returning True stops the work.
        """
        ct = volume_from_node(ct_node)
        output = self.segmenter.segment(ct, progress=progress, cancel=cancel)
        node, _ = segmentation_nodes.segmentation_from_labelmap(
            self.scene, output.labels, ct_node, name=name or f"{ct_node.GetName()} L1-L2"
        )
        node.SetAttribute("OsteoScreen.Source", "model " + self.segmenter.card["version"])
        return node, output

    def save_segmentation(self, segmentation_node, path, overwrite: bool = False) -> Path:
        return segmentation_nodes.save_segmentation(segmentation_node, path, overwrite)


def _display_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
