"""MRML logic: what the Slicer module, Slicer's Python console and the CLI call.

The scene is passed in (``slicer.mrmlScene`` inside Slicer, a
``slicer.vtkMRMLScene()`` headless); no dialogs, no ``slicer.app``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import registry, segmentation_nodes
from .ct_io import checked_ct, read_ct
from .errors import OsteoScreenError
from .hashing import sha256_path
from .measurements import vertebra_stats
from .mrml_convert import volume_from_node, volume_to_node
from .pipeline import DICOM_HEADER, run_case, scan_settings
from .volume import Volume

DICOM_KVP_TAG = "0018,0060"


class OsteoScreenLogic:
    """Nodes in, nodes out; the work itself is :mod:`pipeline`'s, on Volumes."""

    def __init__(self, scene, models=None):
        from .pipeline import Models

        self.scene = scene
        self.models = models or Models()  # shared, e.g. by the cases of a batch

    @property
    def segmenter(self):
        """The bundled segmentation model, loaded (and verified) on first use."""
        return self.models.segmenter

    # --- volumes

    def load_ct(self, path: str | os.PathLike, name: str | None = None, display: bool = True):
        """Read a CT file or DICOM folder into a new scalar volume node (``display``: with
        display nodes, as a viewer needs)."""
        path = Path(path)
        header: dict = {}
        volume = read_ct(path, header)
        node = volume_to_node(self.scene, volume, name or display_name(path))
        node.SetAttribute(registry.SOURCE_PATH_ATTRIBUTE, str(path))
        node.SetAttribute(registry.SOURCE_SHA256_ATTRIBUTE, sha256_path(path))
        if header.get("kvp") is not None:
            node.SetAttribute(registry.KVP_ATTRIBUTE, f"{header['kvp']:g}")
            node.SetAttribute(registry.KVP_SOURCE_ATTRIBUTE, DICOM_HEADER)
        if display:
            node.CreateDefaultDisplayNodes()
        return node

    def case_input(self, ct_node):
        """The CT of a node as the pipeline's input, with its source and scan settings."""
        from .pipeline import CaseInput, ScanSettings

        kvp, source = self.tube_voltage(ct_node)
        # a node of the scene has passed no reader (Slicer's DICOM module, Add Data): check it here, once
        ct, _ = checked_ct(volume_from_node(ct_node), ct_node.GetName() or "CT volume")
        return CaseInput(ct, ct_node.GetAttribute(registry.SOURCE_PATH_ATTRIBUTE),
                         ct_node.GetAttribute(registry.SOURCE_SHA256_ATTRIBUTE),
                         ScanSettings(kvp, source, self.contrast_phase(ct_node)))

    # --- scan settings of a CT node (the classifiers calibrate HU to BMD per tube voltage)

    def set_tube_voltage(self, ct_node, kvp, source: str = "user") -> None:
        """Record the tube voltage of a CT whose file does not (NIfTI, NRRD); None forgets it."""
        if kvp is None:
            ct_node.RemoveAttribute(registry.KVP_ATTRIBUTE)
            ct_node.RemoveAttribute(registry.KVP_SOURCE_ATTRIBUTE)
            return
        settings, _ = scan_settings(kvp=kvp, kvp_source=source)
        ct_node.SetAttribute(registry.KVP_ATTRIBUTE, f"{settings.kvp:g}")
        ct_node.SetAttribute(registry.KVP_SOURCE_ATTRIBUTE, source)

    def default_tube_voltage(self, ct_node, kvp) -> list[str]:
        """Use ``kvp`` (e.g. --kvp) where the scan records none; the header wins. Returns warnings."""
        recorded, source = self.tube_voltage(ct_node)
        settings, warnings = scan_settings(recorded if source == DICOM_HEADER else None, kvp)
        if kvp is not None and settings.kvp_source != DICOM_HEADER:
            self.set_tube_voltage(ct_node, settings.kvp)
        return warnings

    def set_contrast_phase(self, ct_node, phase) -> None:
        """Record the contrast phase of a CT (none, arterial, portal); None forgets it."""
        if phase is None:
            ct_node.RemoveAttribute(registry.CONTRAST_ATTRIBUTE)
            return
        settings, _ = scan_settings(contrast=phase)
        ct_node.SetAttribute(registry.CONTRAST_ATTRIBUTE, settings.contrast)

    def contrast_phase(self, ct_node) -> str | None:
        return registry.contrast_phase(ct_node.GetAttribute(registry.CONTRAST_ATTRIBUTE))

    def tube_voltage(self, ct_node) -> tuple[int | None, str]:
        """(kVp the classifiers use or None, where it comes from)."""
        raw = ct_node.GetAttribute(registry.KVP_ATTRIBUTE)
        source = ct_node.GetAttribute(registry.KVP_SOURCE_ATTRIBUTE) or "user"
        if not raw:
            raw, source = _slicer_dicom_kvp(ct_node), DICOM_HEADER
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

    def labels_digest(self, segmentation_node, ct_node) -> str:
        """A fingerprint of the segments on the CT grid: tells whether they changed since."""
        return _digest(self.labelmap(segmentation_node, ct_node))

    def vertebra_stats(self, segmentation_node, ct_node) -> dict[str, dict]:
        return vertebra_stats(self.labelmap(segmentation_node, ct_node))

    def segment(self, ct_node, progress=None, cancel=None, name: str | None = None):
        """Segment L1/L2 of a volume node into a NEW segmentation node (never replaces one).

        Returns ``(segmentation_node, output)`` where ``output`` holds the label map on the
        CT grid, warnings and timings. ``cancel()`` returning True stops the work.
        """
        outcome = run_case(self.models, self.case_input(ct_node), model=None, progress=progress, cancel=cancel)
        return self.segmentation_node(outcome.labels, ct_node, self.models.segmentation_source, name), outcome.segmentation

    def segmentation_node(self, labels: Volume, ct_node, source: str, name: str | None = None):
        """A NEW segmentation node of a label map on the CT grid, with where its segments come from."""
        node, _ = segmentation_nodes.segmentation_from_labelmap(
            self.scene, labels, ct_node, name=name or f"{ct_node.GetName()} L1-L2")
        node.SetAttribute(registry.SOURCE_ATTRIBUTE, source)
        return node

    def save_segmentation(self, segmentation_node, path, overwrite: bool = False) -> Path:
        return segmentation_nodes.save_segmentation(segmentation_node, path, overwrite)

    # --- classification

    def classify(self, ct_node, segmentation_node, model: str = registry.DEFAULT_MODEL, warnings=None):
        """Classify from the CURRENT segments (automatic or corrected); returns a :class:`CaseResult`."""
        from .classifier import check_model_name

        check_model_name(model)
        case = self.case_input(ct_node)
        case.warnings = list(warnings or [])
        labels = case.ct.with_array(segmentation_nodes.labelmap_on_grid(segmentation_node, ct_node))
        source = segmentation_node.GetAttribute(registry.SOURCE_ATTRIBUTE) or "user segmentation"
        return run_case(self.models, case, model, labels, source).result

    def result_to_table(self, result, table_node=None):
        """The result's rows (``CaseResult.table_rows``) in a table node, which is returned.

        ``table_node`` is filled only if OsteoScreen made it; otherwise (none, or a table of
        the reader's, which must never be emptied) a new one is made.
        """
        import vtk

        if table_node is None or table_node.GetAttribute(registry.RESULT_TABLE_ATTRIBUTE) != "1":
            table_node = self.scene.AddNewNodeByClass(
                "vtkMRMLTableNode", self.scene.GenerateUniqueName("OsteoScreen result"))
            table_node.SetAttribute(registry.RESULT_TABLE_ATTRIBUTE, "1")
        table = table_node.GetTable()
        table.Initialize()
        columns = [vtk.vtkStringArray(), vtk.vtkStringArray()]
        for column, title in zip(columns, ("Measure", "Value")):
            column.SetName(title)
        for measure, value in result.table_rows():
            columns[0].InsertNextValue(measure)
            columns[1].InsertNextValue(value)
        for column in columns:
            table.AddColumn(column)
        table_node.Modified()
        return table_node

    def save_report(self, result, ct_node, segmentation_node, folder, overwrite: bool = False,
                    labels_digest: str | None = None) -> Path:
        """Write result.json and report.png (the same report as the batch command) into ``folder``.

        ``labels_digest``: :meth:`labels_digest` of the segments the result was classified from;
        the report is refused if they have changed since (the figures would not match the contours).
        """
        from .pipeline import CaseOutcome, write_case

        case = self.case_input(ct_node)
        labels = case.ct.with_array(segmentation_nodes.labelmap_on_grid(segmentation_node, ct_node))
        if labels_digest is not None and _digest(labels) != labels_digest:
            raise OsteoScreenError("the segments changed since the last Classify: classify again, then save the report")
        features = _features(case.ct, labels, result, self.models)
        return write_case(case, CaseOutcome(labels, result, features), Path(folder), overwrite, segmentation=False)

    def export_dicom(self, result, ct_node, segmentation_node, folder, overwrite: bool = False,
                     labels_digest: str | None = None, file_for_instance=None) -> dict[str, Path]:
        """Write the segments as a DICOM SEG (seg.dcm) and the result as a TID 1500 SR (sr.dcm) into
        ``folder``, referencing the DICOM series the CT was read from; returns {"seg": path, "sr": path}.

        For a CT that OsteoScreen read from a DICOM folder (``registry.SOURCE_PATH_ATTRIBUTE``), or that
        Slicer's DICOM module loaded (its slices' UIDs in ``registry.SLICER_DICOM_UIDS_ATTRIBUTE``, their
        files from ``file_for_instance``: by default Slicer's DICOM database). ``labels_digest`` as in
        :meth:`save_report`.
        """
        from .dicom_export import write_dicom_outputs

        source, files = self.dicom_source(ct_node, file_for_instance)
        labels = volume_from_node(ct_node).with_array(segmentation_nodes.labelmap_on_grid(segmentation_node, ct_node))
        if labels_digest is not None and _digest(labels) != labels_digest:
            raise OsteoScreenError("the segments changed since the last Classify: classify again, then export")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # the segments' source: the result's
        written = write_dicom_outputs(source, labels, result, folder, overwrite, series_files=files)
        return {kind: folder / name for kind, name in written.items()}

    @staticmethod
    def dicom_source(ct_node, file_for_instance=None) -> tuple[str, list | None]:
        """The DICOM series of a CT node: (its folder, its files where known), or a one-line error."""
        from .dicom_export import is_dicom_input

        source = ct_node.GetAttribute(registry.SOURCE_PATH_ATTRIBUTE)
        if is_dicom_input(source):
            return source, None
        uids = (ct_node.GetAttribute(registry.SLICER_DICOM_UIDS_ATTRIBUTE) or "").split()
        if uids and file_for_instance is None:
            try:
                import slicer

                database = getattr(slicer, "dicomDatabase", None)
                file_for_instance = database.fileForInstance if database is not None and database.isOpen else None
            except ImportError:
                pass
        files = [file_for_instance(uid) for uid in uids] if uids and file_for_instance is not None else []
        if not files or not all(f and Path(f).is_file() for f in files):
            raise OsteoScreenError(f"{ct_node.GetName()} was not read from a DICOM series whose files are known "
                                   f"({source or 'no source file known'}); DICOM SEG/SR need the series' files")
        return str(Path(files[0]).parent), files

    def add_to_dicom_database(self, folder) -> bool:
        """Import the DICOM files of ``folder`` (copies) into Slicer's DICOM database; False where there
        is none (outside the Slicer application: headless, PythonSlicer)."""
        try:
            import slicer
            from DICOMLib import DICOMUtils
        except ImportError:
            return False
        if getattr(slicer, "dicomDatabase", None) is None or not slicer.dicomDatabase.isOpen:
            return False
        if not DICOMUtils.importDicom(str(folder), slicer.dicomDatabase, copyFiles=True):
            raise OsteoScreenError(f"Slicer's DICOM database did not import {folder}; see the log")
        return True

    # --- annotators

    def compare_segmentations(self, reference_node, prediction_node, ct_node) -> list[dict]:
        """Dice and 95 % Hausdorff (mm) per segment, both resampled onto the CT grid."""
        from .metrics import compare_labelmaps

        ref = self.labelmap(reference_node, ct_node)
        pred = segmentation_nodes.labelmap_on_grid(prediction_node, ct_node)
        return compare_labelmaps(ref, pred, registry.LABEL_OF)

    def comparison_to_table(self, rows: list[dict], table_node=None):
        """One row per segment (DSC, HD95 in mm, volumes) in a table node; a new one unless given."""
        import vtk

        from .metrics import COMPARISON_COLUMNS

        table_node = table_node or self.scene.AddNewNodeByClass(
            "vtkMRMLTableNode", self.scene.GenerateUniqueName("OsteoScreen comparison"))
        table = table_node.GetTable()
        table.Initialize()
        for key, title in COMPARISON_COLUMNS:
            column = vtk.vtkStringArray() if key == "segment" else vtk.vtkDoubleArray()
            column.SetName(title)
            for row in rows:
                value = row.get(key)
                column.InsertNextValue(str(value) if key == "segment" else float("nan") if value is None else float(value))
            table.AddColumn(column)
        table_node.Modified()
        return table_node

    # --- files for a background job (the module's worker reads and writes files)

    def export_volume(self, volume_node, path) -> str:
        """Write a volume node to an uncompressed NRRD without changing the node's own storage."""
        import slicer

        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(0)
        if not storage.WriteData(volume_node):
            raise OsteoScreenError(f"could not write {volume_node.GetName()} to {path}; check the free disk space")
        return str(path)

    def source_path(self, volume_node) -> str | None:
        """The file a volume was read from (for result.json), if known."""
        storage = volume_node.GetStorageNode()
        return (volume_node.GetAttribute(registry.SOURCE_PATH_ATTRIBUTE)
                or (storage.GetFileName() if storage is not None else None) or None)

    def import_segmentation(self, path, ct_node, name: str, source: str | None = None, warnings=()):
        """A NEW segmentation node from a temporary .seg.nrrd (e.g. the worker's); no node is touched,
        and none keeps pointing at the file (Save asks for a place)."""
        node = self.load_segmentation(path, ct_node)
        storage = node.GetStorageNode()
        node.SetAndObserveStorageNodeID(None)
        if storage is not None:
            self.scene.RemoveNode(storage)
        node.SetName(self.scene.GenerateUniqueName(name))
        if source:
            node.SetAttribute(registry.SOURCE_ATTRIBUTE, source)
        node.SetAttribute(registry.WARNINGS_ATTRIBUTE, json.dumps(list(warnings)))
        return node

    def segmentation_warnings(self, segmentation_node) -> list[str]:
        """The warnings the model gave with a segmentation (see :meth:`import_segmentation`)."""
        try:
            return list(json.loads(segmentation_node.GetAttribute(registry.WARNINGS_ATTRIBUTE) or "[]"))
        except ValueError:
            return []

    # --- batch

    def screen(self, inputs, output_dir, model: str = registry.DEFAULT_MODEL, overwrite: bool = False, progress=None,
               cancel=None, kvp: int | None = None, contrast: str | None = None, dicom_root=None,
               engine: str = "local", address: str | None = None, workers: int | None = None):
        """Segment, classify and report each input into ``output_dir`` (see :mod:`batch`).

        No node is made: the user's scene is left alone. ``kvp``: the tube voltage of inputs that
        do not record it (DICOM headers win); ``contrast``: the contrast phase of every input
        (none, arterial, portal), None if unknown. ``dicom_root``: where a manifest's
        StudyInstanceUIDs are looked for. A DICOM tree is screened by study (:mod:`study`).
        ``engine``: "local" (this process) or "ray" (Ray workers, local or at ``address``; :mod:`engines`).
        """
        from .batch import expand_inputs, run_batch
        from .classifier import check_model_name
        from .engines import ENGINES, ScreenProcessor, run_batch_ray

        check_model_name(model)
        scan_settings(kvp=kvp, contrast=contrast)  # a bad setting stops the batch before its first case
        if engine not in ENGINES:
            raise OsteoScreenError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        paths = expand_inputs(inputs, dicom_root)
        if engine == "ray":
            return run_batch_ray(paths, Path(output_dir), ScreenProcessor(model, kvp, contrast), overwrite, progress,
                                 cancel, address, workers)
        process = ScreenProcessor(model, kvp, contrast, models=self.models, cancel=cancel)
        return run_batch(paths, Path(output_dir), process, overwrite, progress, cancel)


def _digest(labels: Volume) -> str:
    return hashlib.sha256(labels.array.tobytes()).hexdigest()


def _features(ct: Volume, labels: Volume, result, models) -> dict:
    """The body features of the measured vertebrae (a report of a result made elsewhere, e.g. the worker),
    made as the result's classifier makes them (its model card's preprocessing)."""
    from .features import DEFAULT_PREPROCESSING, body_features

    pre = models.classifier(result.model.name).preprocessing if result.model else DEFAULT_PREPROCESSING
    return {n: body_features(ct, labels, n, pre) for n in result.measured()}


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


def display_name(path: Path) -> str:
    """A file's name without its image extension (``ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
