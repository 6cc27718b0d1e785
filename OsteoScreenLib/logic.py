"""MRML logic: what the Slicer module, Slicer's Python console and the CLI call.

The scene is passed in (``slicer.mrmlScene`` inside Slicer, a
``slicer.vtkMRMLScene()`` headless); no dialogs, no ``slicer.app``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import registry, segmentation_nodes
from .ct_io import read_ct
from .errors import OsteoScreenError
from .hashing import sha256_path
from .measurements import vertebra_stats
from .mrml_convert import volume_from_node, volume_to_node
from .volume import Volume

KVP_ATTRIBUTE = "OsteoScreen.TubeVoltageKVP"  # as the header or the user gives it
KVP_SOURCE_ATTRIBUTE = "OsteoScreen.TubeVoltageSource"
DICOM_KVP_TAG = "0018,0060"
CONTRAST_ATTRIBUTE = "OsteoScreen.ContrastPhase"  # as the reader gives it (DICOM does not record the phase)


class OsteoScreenLogic:
    def __init__(self, scene):
        self.scene = scene
        self._segmenter = None
        self._classifiers: dict = {}

    @property
    def segmenter(self):
        """The bundled segmentation model, loaded (and verified) on first use."""
        if self._segmenter is None:
            from .segmenter import L1L2Segmenter

            self._segmenter = L1L2Segmenter()
        return self._segmenter

    # --- volumes

    def load_ct(self, path: str | os.PathLike, name: str | None = None, display: bool = True):
        """Read a CT file or DICOM folder into a new scalar volume node (``display``: with
        display nodes, as a viewer needs; a batch without views skips their histogram work)."""
        path = Path(path)
        header: dict = {}
        volume = read_ct(path, header)
        node = volume_to_node(self.scene, volume, name or _display_name(path))
        node.SetAttribute("OsteoScreen.SourcePath", str(path))
        node.SetAttribute("OsteoScreen.SourceSHA256", sha256_path(path))
        if header.get("kvp") is not None:
            node.SetAttribute(KVP_ATTRIBUTE, f"{header['kvp']:g}")
            node.SetAttribute(KVP_SOURCE_ATTRIBUTE, "DICOM header")
        if display:
            node.CreateDefaultDisplayNodes()
        return node

    # --- tube voltage (the classifiers calibrate HU to BMD per voltage)

    def set_tube_voltage(self, ct_node, kvp, source: str = "user") -> None:
        """Record the tube voltage of a CT whose file does not (NIfTI, NRRD); None forgets it."""
        if kvp is None:
            ct_node.RemoveAttribute(KVP_ATTRIBUTE)
            ct_node.RemoveAttribute(KVP_SOURCE_ATTRIBUTE)
            return
        if registry.tube_voltage(kvp) is None:
            known = ", ".join(str(v) for v in registry.TUBE_VOLTAGES_KVP)
            raise OsteoScreenError(f"tube voltage {kvp} kVp is not one the classifiers know ({known}); "
                                   "choose one of them or leave it unknown")
        ct_node.SetAttribute(KVP_ATTRIBUTE, f"{float(kvp):g}")
        ct_node.SetAttribute(KVP_SOURCE_ATTRIBUTE, source)

    def default_tube_voltage(self, ct_node, kvp) -> list[str]:
        """Use ``kvp`` (e.g. --kvp) where the scan records none; the header wins. Returns warnings."""
        recorded, source = self.tube_voltage(ct_node)
        if kvp is None or recorded == kvp:
            return []
        if recorded is not None and source == "DICOM header":
            return [f"the DICOM header gives the tube voltage ({recorded} kVp); {kvp} kVp not used"]
        self.set_tube_voltage(ct_node, kvp)
        return []

    def set_contrast_phase(self, ct_node, phase) -> None:
        """Record the contrast phase of a CT (none, arterial, portal); None forgets it."""
        if phase is None:
            ct_node.RemoveAttribute(CONTRAST_ATTRIBUTE)
            return
        known = registry.contrast_phase(phase)
        if known is None:
            raise OsteoScreenError(f"contrast phase {phase!r} unknown; choose one of "
                                   f"{', '.join(registry.CONTRAST_PHASES)} or leave it unknown")
        ct_node.SetAttribute(CONTRAST_ATTRIBUTE, known)

    def contrast_phase(self, ct_node) -> str | None:
        return registry.contrast_phase(ct_node.GetAttribute(CONTRAST_ATTRIBUTE))

    def tube_voltage(self, ct_node) -> tuple[int | None, str]:
        """(kVp the classifiers use or None, where it comes from)."""
        raw, source = ct_node.GetAttribute(KVP_ATTRIBUTE), ct_node.GetAttribute(KVP_SOURCE_ATTRIBUTE) or "user"
        if not raw:
            raw, source = _slicer_dicom_kvp(ct_node), "DICOM header"
        if not raw:
            return None, "unknown"
        kvp = registry.tube_voltage(raw)
        if kvp is None:
            return None, f"{source} ({raw} kVp, not one the classifiers know: treated as unknown)"
        return kvp, source

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

    # --- classification

    def classifier(self, model: str = "l1l2"):
        """A bundled classifier, loaded (and verified) once per model."""
        from .classifier import OsteoporosisClassifier

        if model not in self._classifiers:
            self._classifiers[model] = OsteoporosisClassifier(model)
        return self._classifiers[model]

    def classify(self, ct_node, segmentation_node, model: str = "l1l2", warnings=None, timing_s=None) -> dict:
        """Classify from the CURRENT segments (automatic or corrected); returns the result.json dict."""
        import time

        from .classifier import check_model_name

        check_model_name(model)
        t0 = time.perf_counter()
        ct = volume_from_node(ct_node)
        labels = ct.with_array(segmentation_nodes.labelmap_on_grid(segmentation_node, ct_node))
        return self._classify_arrays(ct_node, ct, labels, segmentation_node, model, warnings, timing_s, t0)

    def _classify_arrays(self, ct_node, ct, labels, segmentation_node, model, warnings, timing_s, t0) -> dict:
        """Classification of a CT and its label map already on the CT grid (batch: no re-export)."""
        import time

        from .result import build_result, input_info

        kvp, kvp_source = self.tube_voltage(ct_node)
        contrast = self.contrast_phase(ct_node)
        classification = self.classifier(model).classify(ct, labels, kvp, contrast)
        timing = dict(timing_s or {})
        timing["classify"] = round(time.perf_counter() - t0, 3)
        source = segmentation_node.GetAttribute("OsteoScreen.Source") or "user segmentation"
        path = ct_node.GetAttribute("OsteoScreen.SourcePath")
        sha = ct_node.GetAttribute("OsteoScreen.SourceSHA256")
        info = input_info(path, ct, sha, kvp, kvp_source, contrast)
        return build_result(classification, labels, info, source, warnings, timing)

    def result_to_table(self, result: dict, table_node=None):
        """Put a result into a table node (one row per measure), creating the node if needed."""
        import vtk

        table_node = table_node or self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName("OsteoScreen result"))
        table = table_node.GetTable()
        table.Initialize()
        cols = [vtk.vtkStringArray(), vtk.vtkStringArray()]
        cols[0].SetName("Measure")
        cols[1].SetName("Value")
        pred = result["prediction"]
        rows = [("Model", f"{result['model']['name']} v{result['model']['version']}"),
                ("Class", pred["class"])]
        rows += [(f"P({c})", f"{p:.3f}") for c, p in pred["probabilities"].items()]
        rows.append(("Estimated BMD (mg/cm3)", f"{pred['bmd_mg_cm3']:.1f}"))
        kvp = result["input"].get("tube_voltage_kvp")
        rows.append(("Tube voltage (kVp)", f"{kvp} ({result['input'].get('tube_voltage_source')})" if kvp else "unknown"))
        rows.append(("Contrast phase", result["input"].get("contrast_phase") or "unknown"))
        for name, v in result["vertebrae"].items():
            if v.get("trabecular_roi_hu") is not None:
                rows.append((f"{name} trabecular ROI (HU)", f"{v['trabecular_roi_hu']:.1f}"))
            rows.append((f"{name} volume (ml)", f"{v['volume_ml']:.1f}"))
        rows += [("Warning", w) for w in result.get("warnings", [])]
        for a, b in rows:
            cols[0].InsertNextValue(a)
            cols[1].InsertNextValue(b)
        table.AddColumn(cols[0])
        table.AddColumn(cols[1])
        table_node.Modified()
        return table_node

    def save_report(self, result: dict, ct_node, segmentation_node, folder, overwrite: bool = False) -> Path:
        """Write result.json and report.png (the same report as the batch command) into ``folder``."""
        ct = volume_from_node(ct_node)
        labels = ct.with_array(segmentation_nodes.labelmap_on_grid(segmentation_node, ct_node))
        return write_case_report(ct, labels, result, Path(folder), overwrite)

    # --- annotators

    def compare_segmentations(self, reference_node, prediction_node, ct_node) -> list[dict]:
        """Dice and 95 % Hausdorff (mm) per segment, both resampled onto the CT grid."""
        from .metrics import compare_labelmaps

        ct = volume_from_node(ct_node)
        ref = ct.with_array(segmentation_nodes.labelmap_on_grid(reference_node, ct_node))
        pred = segmentation_nodes.labelmap_on_grid(prediction_node, ct_node)
        from .registry import LABEL_OF

        return compare_labelmaps(ref, pred, LABEL_OF)

    # --- batch

    def screen(self, inputs, output_dir, model: str = "l1l2", overwrite: bool = False, progress=None, cancel=None,
               kvp: int | None = None, contrast: str | None = None):
        """Segment, classify and report each input into ``output_dir`` (see :mod:`batch`).

        Each case runs in a private scene, so the user's scene is left alone. ``kvp``: the tube
        voltage of inputs that do not record it (DICOM headers win); ``contrast``: the contrast
        phase of every input (none, arterial, portal), None if unknown.
        """
        import time

        import slicer

        from .batch import expand_inputs, run_batch
        from .classifier import check_model_name

        check_model_name(model)
        paths = expand_inputs(inputs)

        def process(source: Path, folder: Path) -> None:
            case_logic = OsteoScreenLogic(slicer.vtkMRMLScene())
            case_logic._segmenter, case_logic._classifiers = self.segmenter, self._classifiers
            ct_node = case_logic.load_ct(source, display=False)
            seg_node, out = case_logic.segment(ct_node, cancel=cancel)
            out.warnings.extend(case_logic.default_tube_voltage(ct_node, kvp))
            case_logic.set_contrast_phase(ct_node, contrast)
            case_logic.save_segmentation(seg_node, folder / "segmentation.seg.nrrd", overwrite=True)
            ct = volume_from_node(ct_node)
            result = case_logic._classify_arrays(ct_node, ct, out.labels, seg_node, model, out.warnings,
                                                 out.timing_s, time.perf_counter())
            result["segmentation"]["path"] = "segmentation.seg.nrrd"
            write_case_report(ct, out.labels, result, folder, overwrite=True)

        return run_batch(paths, Path(output_dir), process, overwrite, progress, cancel)


def write_case_report(ct: Volume, labels: Volume, result: dict, folder: Path, overwrite: bool) -> Path:
    """report.png, then result.json (written last: in a batch it marks the case done)."""
    from .atomic import write_json
    from .features import body_features
    from .report import render_report, write_png

    folder.mkdir(parents=True, exist_ok=True)
    features = {n: body_features(ct, labels, n) for n, v in result["vertebrae"].items()
                if v.get("trabecular_roi_hu") is not None}
    write_png(render_report(ct, labels, result, features), folder / "report.png", overwrite)
    write_json(folder / "result.json", result, overwrite)
    return folder


def _slicer_dicom_kvp(ct_node) -> str | None:
    """The KVP of a volume loaded by Slicer's DICOM module (its instances are in the database)."""
    uids = (ct_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids:
        return None
    try:
        import slicer

        return slicer.dicomDatabase.instanceValue(uids[0], DICOM_KVP_TAG) or None
    except (ImportError, AttributeError):  # headless: no DICOM database
        return None


def _display_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
