"""OsteoScreen: opportunistic osteoporosis screening on chest CT, as a 3D Slicer module.

The panel walks through one case: segment the L1 and L2 vertebral bodies, correct
them in the embedded Segment Editor, classify (normal / osteopenia /
osteoporosis) with model 1 (L1 + L2) or model 2 (L1 alone), save the report;
annotators compare two segmentations (DSC, HD95). All computation is in
``OsteoScreenLib.logic.OsteoScreenLogic`` (also usable from the Python console
and headless); this file holds only the GUI.

Long work runs in a separate ``PythonSlicer`` process, never on the GUI thread:
the logic creates MRML nodes and exports label maps through the scene, and MRML
and VTK are not thread-safe, so a worker thread could not call it; a process
can also be stopped in the middle of an ONNX inference, which a thread cannot.
The worker runs the same logic in its own headless scene, streams progress as
JSON lines, checks a cancel flag between stages and is killed if it does not
stop within a few seconds. Its inputs (the CT, the current segments) go through
uncompressed files in a temporary folder; its outputs come back as files that
are loaded into NEW nodes, so nothing the user edited is ever overwritten.

The section "Qt-free helpers" below needs no Qt: Testing/Python/test_slicer_module.py
runs it headless on the slicer-core wheel.
"""

import csv
import enum
import glob
import importlib.util
import json
import logging
import os
import pathlib
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import ctk
import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# ---------------------------------------------------------------------------------------------
# Qt-free helpers (tested headless by Testing/Python/test_slicer_module.py)
# ---------------------------------------------------------------------------------------------

MODULE_NAME = "OsteoScreen"
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_NAME = "OsteoScreenChestPhantom"
SAMPLE_SEED = 7
WORKER_PREFIX = "OSTEOSCREEN-WORKER "
CANCEL_GRACE_S = 3.0  # after Cancel, the worker gets this long to stop between stages, then it is killed
POLL_INTERVAL_MS = 200

MODEL_LABELS = {"l1l2": "Model 1: L1 + L2 fusion", "l1": "Model 2: L1 only"}
MODEL_HELP = {
    "l1l2": "Uses both vertebral bodies (the paper's model 1); the default when the scan covers L1 and L2.",
    "l1": "Uses L1 alone (the paper's model 2), for lower-radiation chest scans that stop above L2.",
}


def moduleBaseFolders():
    """Folders that may hold Resources/ and OsteoScreenLib/: installed (next to the module) first, then source."""
    return [MODULE_DIR, os.path.dirname(MODULE_DIR)]


def resourcePath(relativePath):
    """Absolute path of a file under Resources/, in the installed or the source layout."""
    candidates = [os.path.join(base, "Resources", relativePath) for base in moduleBaseFolders()]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return candidates[0]


def libraryParent():
    """The folder that holds the OsteoScreenLib package (installed or source layout)."""
    for base in moduleBaseFolders():
        if os.path.isfile(os.path.join(base, "OsteoScreenLib", "__init__.py")):
            return base
    raise RuntimeError(f"OsteoScreenLib not found next to {MODULE_DIR} or one folder up; reinstall OsteoScreen")


def ensureLibraryImportable():
    """Make ``import OsteoScreenLib`` work when the source folder is an additional module path."""
    parent = libraryParent()
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return parent


class ClassifierModel(enum.Enum):
    """The two bundled classifiers; values are the logic's model names."""

    L1L2 = "l1l2"
    L1 = "l1"

    @staticmethod
    def label(member):  # shown in the combo box by the parameter node wrapper
        return MODEL_LABELS[member.value]


class TubeVoltage(enum.Enum):
    """The scan's kVp for the classifiers; AUTO takes it from the DICOM header (unknown otherwise)."""

    AUTO = "auto"
    KV80 = "80"
    KV100 = "100"
    KV120 = "120"
    KV140 = "140"

    @staticmethod
    def label(member):
        return "From the DICOM header (else unknown)" if member.value == "auto" else f"{member.value} kVp"


class ContrastPhase(enum.Enum):
    """The scan's contrast phase for the classifiers (DICOM does not record it reliably)."""

    UNKNOWN = "unknown"
    NONE = "none"
    ARTERIAL = "arterial"
    PORTAL = "portal"

    @staticmethod
    def label(member):
        return {"unknown": "Unknown", "none": "None (unenhanced)", "arterial": "Arterial",
                "portal": "Portal venous"}[member.value]


def pythonSlicerExecutable():
    """Slicer's own Python interpreter, which sees the same packages as the application."""
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(candidate):
        return candidate
    raise RuntimeError("PythonSlicer was not found next to Slicer; reinstall Slicer")


WORKER_CODE = '''\
"""OsteoScreen background worker, written by the OsteoScreen module and run by PythonSlicer.

Runs one task of OsteoScreenLogic in its own headless scene. Protocol: one JSON
object per stdout line after the prefix; progress, then done / error / cancelled.
"""
import json
import os
import sys
import traceback

PREFIX = "OSTEOSCREEN-WORKER "


def emit(**message):
    def plain(value):
        return value.tolist() if hasattr(value, "tolist") else str(value)

    sys.stdout.write(PREFIX + json.dumps(message, default=plain) + "\\n")
    sys.stdout.flush()


class WorkerCancelled(Exception):
    pass


def run(job):
    sys.path.insert(0, job["lib"])
    cancel_file = job["cancel_file"]

    def cancel():
        return os.path.exists(cancel_file)

    def check():
        if cancel():
            raise WorkerCancelled("cancelled")

    def progress(fraction, message):
        emit(progress=float(fraction), message=str(message))

    progress(0.0, "starting")
    import slicer
    from OsteoScreenLib.logic import OsteoScreenLogic

    check()
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    progress(0.02, "reading the CT")
    ct = logic.load_ct(job["ct"])
    if job.get("source_path"):
        ct.SetAttribute("OsteoScreen.SourcePath", job["source_path"])
    check()
    task = job["task"]
    if task == "segment":
        node, output = logic.segment(ct, progress=progress, cancel=cancel)
        check()
        path = os.path.join(job["out_dir"], "segmentation.seg.nrrd")
        logic.save_segmentation(node, path)
        return {"segmentation": path, "source": node.GetAttribute("OsteoScreen.Source"),
                "warnings": list(output.warnings), "timing_s": dict(output.timing_s)}
    if task == "classify":
        seg = logic.load_segmentation(job["segmentation"], ct)
        if job.get("segmentation_source"):
            seg.SetAttribute("OsteoScreen.Source", job["segmentation_source"])
        check()
        if job.get("kvp"):
            logic.set_tube_voltage(ct, job["kvp"], job.get("kvp_source") or "user")
        if job.get("contrast"):
            logic.set_contrast_phase(ct, job["contrast"])
        progress(0.3, "classifying with model " + job["model"])
        result = logic.classify(ct, seg, model=job["model"], warnings=job.get("warnings") or None)
        check()
        path = os.path.join(job["out_dir"], "result.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
        return {"result": path}
    if task == "compare":
        reference = logic.load_segmentation(job["reference"], ct)
        compared = logic.load_segmentation(job["compared"], ct)
        check()
        progress(0.3, "comparing the segmentations")
        return {"rows": logic.compare_segmentations(reference, compared, ct)}
    raise ValueError("unknown task " + repr(task))


def main(argv):
    with open(argv[1]) as f:
        job = json.load(f)
    try:
        outcome = run(job)
    except Exception as exc:
        name = type(exc).__name__
        if name in ("Cancelled", "WorkerCancelled"):
            emit(cancelled=True)
            return 2
        if name == "OsteoScreenError":
            emit(error=str(exc))
            return 1
        traceback.print_exc(file=sys.stdout)
        emit(error="internal error (%s: %s); details are in the log" % (name, exc), internal=True)
        return 4
    emit(done=True, **outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


class WorkerProcess:
    """One task of the logic in a separate Python process, polled without blocking.

    ``poll()`` (called from a timer in the GUI) returns the new messages; when
    ``running`` turns False exactly one of ``result`` / ``error`` / ``cancelled``
    is set. ``cancel()`` asks the worker to stop at its next stage and kills it
    when it has not stopped ``CANCEL_GRACE_S`` later: the work really stops.
    """

    def __init__(self, task, inputs, workDir=None, python=None):
        self.workDir = workDir or tempfile.mkdtemp(prefix="OsteoScreen-")
        self.cancelFile = os.path.join(self.workDir, "cancel")
        job = dict(inputs, task=task, lib=libraryParent(), cancel_file=self.cancelFile, out_dir=self.workDir)
        jobPath = os.path.join(self.workDir, "job.json")
        workerPath = os.path.join(self.workDir, "worker.py")
        with open(jobPath, "w") as f:
            json.dump(job, f)
        with open(workerPath, "w") as f:
            f.write(WORKER_CODE)
        self.task = task
        self.log = []  # the worker's other output lines (warnings, tracebacks)
        self.progress = 0.0
        self.message = ""
        self.result = None
        self.error = None
        self.cancelled = False
        self._cancelRequestedAt = None
        self._eof = False
        self._lines = queue.Queue()
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        self.process = subprocess.Popen(
            [python or pythonSlicerExecutable(), workerPath, jobPath],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", env=env, creationflags=flags,
        )
        self._reader = threading.Thread(target=self._readOutput, daemon=True)  # I/O only, no MRML
        self._reader.start()

    def _readOutput(self):
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)

    @property
    def running(self):
        return not (self._eof and self.process.poll() is not None)

    def poll(self):
        """New messages from the worker (dicts); never blocks."""
        messages = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                continue
            if not line.startswith(WORKER_PREFIX):
                self.log.append(line)
                continue
            try:
                message = json.loads(line[len(WORKER_PREFIX):])
            except ValueError:
                self.log.append(line)
                continue
            messages.append(message)
            if "progress" in message:
                self.progress, self.message = message["progress"], message.get("message", "")
            if message.get("done"):
                self.result = message
            elif "error" in message:
                self.error = message["error"]
            elif message.get("cancelled"):
                self.cancelled = True
        if self._cancelRequestedAt is not None and self.process.poll() is None:
            if time.monotonic() - self._cancelRequestedAt > CANCEL_GRACE_S:
                self.process.kill()
        if not self.running and self.result is None and self.error is None and not self.cancelled:
            if self._cancelRequestedAt is not None:
                self.cancelled = True
            else:
                self.error = f"the background process stopped unexpectedly (exit code {self.process.returncode}); details are in the log"
        return messages

    def cancel(self):
        if self.process.poll() is None and self._cancelRequestedAt is None:
            with open(self.cancelFile, "w") as f:
                f.write("cancel\n")
            self._cancelRequestedAt = time.monotonic()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self._cancelRequestedAt = self._cancelRequestedAt or time.monotonic()

    def wait(self, timeoutS=None, interval=0.05):
        """Poll until the worker has finished (for scripts and tests; the GUI uses a timer)."""
        start = time.monotonic()
        while True:
            self.poll()
            if not self.running:
                self.poll()
                return
            if timeoutS is not None and time.monotonic() - start > timeoutS:
                self.kill()
            time.sleep(interval)

    def cleanup(self):
        shutil.rmtree(self.workDir, ignore_errors=True)


def exportVolumeForWorker(volumeNode, path):
    """Write a volume node to an uncompressed NRRD without changing the node's own storage."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(volumeNode):
        raise RuntimeError(f"could not write {volumeNode.GetName()} to {path}; check the free disk space")
    return str(path)


def sourcePathOf(volumeNode):
    """The file a volume was read from (for result.json), if known."""
    path = volumeNode.GetAttribute("OsteoScreen.SourcePath")
    storage = volumeNode.GetStorageNode()
    if not path and storage is not None:
        path = storage.GetFileName()
    return path or None


def importSegmentation(logic, path, ctNode, name, source=None, warnings=()):
    """A NEW segmentation node from a .seg.nrrd written by the worker; no existing node is touched."""
    node = logic.load_segmentation(path, ctNode)
    scene = node.GetScene()
    storage = node.GetStorageNode()
    node.SetAndObserveStorageNodeID(None)  # the file is temporary: Save must ask for a place
    if storage is not None:
        scene.RemoveNode(storage)
    node.SetName(scene.GenerateUniqueName(name))
    if source:
        node.SetAttribute("OsteoScreen.Source", source)
    node.SetAttribute("OsteoScreen.Warnings", json.dumps(list(warnings)))
    return node


def segmentationWarnings(segmentationNode):
    try:
        return list(json.loads(segmentationNode.GetAttribute("OsteoScreen.Warnings") or "[]"))
    except ValueError:
        return []


def formatResult(result):
    """The result as rich text for the panel: class, probabilities, ROI HU, BMD, warnings."""
    prediction = result["prediction"]
    model = result.get("model", {})
    lines = [f"<b>{prediction['class'].capitalize()}</b> "
             f"({MODEL_LABELS.get(model.get('name'), model.get('name', '?'))}, v{model.get('version', '?')})"]
    lines.append("Probabilities: " + ", ".join(f"{c} {p:.2f}" for c, p in prediction["probabilities"].items()))
    lines.append(f"Estimated BMD: {prediction['bmd_mg_cm3']:.1f} mg/cm\u00b3")
    kvp = result.get("input", {}).get("tube_voltage_kvp")
    lines.append(f"Tube voltage: {kvp} kVp ({result['input'].get('tube_voltage_source')})" if kvp else "Tube voltage: unknown")
    lines.append(f"Contrast phase: {result.get('input', {}).get('contrast_phase') or 'unknown'}")
    for name, v in result.get("vertebrae", {}).items():
        if v.get("trabecular_roi_hu") is not None:
            lines.append(f"{name} trabecular ROI: {v['trabecular_roi_hu']:.1f} HU")
    for w in result.get("warnings", []):
        lines.append(f'<span style="color:#b36b00">Warning: {w}</span>')
    return "<br>".join(lines)


COMPARISON_COLUMNS = (("segment", "Segment"), ("dsc", "DSC"), ("hd95_mm", "HD95 (mm)"),
                      ("reference_ml", "Reference (ml)"), ("prediction_ml", "Compared (ml)"))


def comparisonToTable(rows, tableNode):
    """Fill a table node with one row per segment (DSC, HD95 in mm, volumes)."""
    table = tableNode.GetTable()
    table.Initialize()
    columns = []
    for key, title in COMPARISON_COLUMNS:
        column = vtk.vtkStringArray() if key == "segment" else vtk.vtkDoubleArray()
        column.SetName(title)
        columns.append((key, column))
    for row in rows:
        for key, column in columns:
            value = row.get(key)
            if key == "segment":
                column.InsertNextValue(str(value))
            else:
                column.InsertNextValue(float("nan") if value is None else float(value))
    for _, column in columns:
        table.AddColumn(column)
    tableNode.Modified()
    return tableNode


def writeComparisonCsv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key for key, _ in COMPARISON_COLUMNS])
        for row in rows:
            writer.writerow([row.get(key) for key, _ in COMPARISON_COLUMNS])
    return path


def caseFile(folder, stem):
    """``folder/stem.<ext>`` as written by ``OsteoScreenLib.phantom.write_case``, or None."""
    for path in sorted(glob.glob(os.path.join(folder, stem + ".*"))):
        if not path.endswith(".json"):
            return path
    return None


# ---------------------------------------------------------------------------------------------
# Sample data: a chest phantom generated locally, nothing downloaded
# ---------------------------------------------------------------------------------------------


def sampleCaseFolder():
    return os.path.join(slicer.app.cachePath, MODULE_NAME, f"chest-phantom-{SAMPLE_SEED:05d}")


def ensureSamplePhantom():
    """Generate the sample chest phantom once into Slicer's cache; returns its folder."""
    folder = sampleCaseFolder()
    if caseFile(folder, "ct") is None:
        ensureLibraryImportable()
        from OsteoScreenLib.phantom import generate_case, write_case

        slicer.util.showStatusMessage("OsteoScreen: generating the sample chest phantom (only once)...")
        with slicer.util.WaitCursor():
            case = generate_case(SAMPLE_SEED, preset="chest")
            write_case(case, folder, fmt="nrrd", overwrite=True)
        slicer.util.showStatusMessage("")
    return folder


def loadSamplePhantom(source=None):
    """Load the sample chest phantom (the SampleData button calls this with its source)."""
    path = caseFile(ensureSamplePhantom(), "ct")
    node = slicer.util.loadVolume(path, {"name": SAMPLE_NAME})
    node.SetAttribute("OsteoScreen.SourcePath", path)
    return node


def registerSampleData():
    """Add the phantom to the Sample Data module (called once Slicer has started)."""
    import SampleData

    ctPath = os.path.join(sampleCaseFolder(), "ct.nrrd")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="OsteoScreen",
        sampleName=SAMPLE_NAME,
        uris=pathlib.Path(ctPath).as_uri(),
        fileNames=f"{SAMPLE_NAME}.nrrd",
        nodeNames=SAMPLE_NAME,
        thumbnailFileName=resourcePath("Icons/OsteoScreen.png"),
        loadFileType="VolumeFile",
        customDownloader=loadSamplePhantom,
    )


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------


class OsteoScreen(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "OsteoScreen"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["The OsteoScreen developers"]
        self.parent.helpText = (
            "Opportunistic osteoporosis screening on chest CT: segment L1/L2, correct the segments, classify "
            "normal / osteopenia / osteoporosis with model 1 (L1 + L2) or model 2 (L1 alone), save the report; "
            "compare two segmentations (DSC, HD95). <b>Research software trained on synthetic scans; "
            "not a diagnostic device.</b> See the README of the OsteoScreen extension."
        )
        self.parent.acknowledgementText = (
            "Reproduces and extends BMC Musculoskeletal Disorders 2024;25:176 (models 1 and 2). "
            "Built on 3D Slicer, VTK and ONNX Runtime."
        )
        try:
            ensureLibraryImportable()  # a sys.path entry only: OsteoScreenLib is imported when first needed
        except RuntimeError as exc:
            logging.error(f"OsteoScreen: {exc}")
        iconPath = resourcePath(f"Icons/{MODULE_NAME}.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)
        slicer.app.connect("startupCompleted()", registerSampleData)


# ---------------------------------------------------------------------------------------------
# Parameter node
# ---------------------------------------------------------------------------------------------


@parameterNodeWrapper
class OsteoScreenParameterNode:
    """GUI state saved with the scene; every field is bound to a widget of the .ui."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    model: ClassifierModel = ClassifierModel.L1L2
    tubeVoltage: TubeVoltage = TubeVoltage.AUTO
    contrastPhase: ContrastPhase = ContrastPhase.UNKNOWN
    resultTable: vtkMRMLTableNode
    reportFolder: pathlib.Path
    overwriteReport: bool = False
    referenceSegmentation: vtkMRMLSegmentationNode
    comparedSegmentation: vtkMRMLSegmentationNode


# ---------------------------------------------------------------------------------------------
# Widget
# ---------------------------------------------------------------------------------------------


class OsteoScreenWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    SEGMENT_EDITOR_TAG = "OsteoScreenSegmentEditor"

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._onJobDone = None
        self._lastResult = None  # (result dict, CT node, segmentation node) of the last Classify
        self._comparisonRows = None
        self._comparisonTable = None
        self._timer = None

    def resourcePath(self, filename):
        return resourcePath(filename)

    # --- set-up and life cycle

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        ensureLibraryImportable()
        from OsteoScreenLib.logic import OsteoScreenLogic

        uiWidget = slicer.util.loadUI(resourcePath(f"UI/{MODULE_NAME}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OsteoScreenLogic(slicer.mrmlScene)

        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.setTextInteractionFlags(qt.Qt.TextSelectableByMouse)
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)

        self._ensureSegmentEditorNode()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.classifyButton.connect("clicked(bool)", self.onClassify)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.exportComparisonButton.connect("clicked(bool)", self.onExportComparison)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)

        self.initializeParameterNode()

    def cleanup(self):
        if self._job is not None:
            self._job.kill()
            self._job.cleanup()
            self._job = None
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._ensureSegmentEditorNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self):
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIState)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self._lastResult = None
        self._comparisonRows = None
        self._comparisonTable = None

    def onSceneEndClose(self, caller, event):
        self._ensureSegmentEditorNode()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def getParameterNode(self):
        """The module's singleton parameter node, wrapped (no ScriptedLoadableModuleLogic needed)."""
        node = slicer.mrmlScene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(MODULE_NAME))
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = slicer.mrmlScene.AddNode(node)
        return OsteoScreenParameterNode(node)

    def initializeParameterNode(self):
        self.setParameterNode(self.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIState)
        self._updateGUIState()

    def _ensureSegmentEditorNode(self):
        editorNode = slicer.mrmlScene.GetSingletonNode(self.SEGMENT_EDITOR_TAG, "vtkMRMLSegmentEditorNode")
        if editorNode is None:
            editorNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            editorNode.UnRegister(None)
            editorNode.SetSingletonTag(self.SEGMENT_EDITOR_TAG)
            editorNode = slicer.mrmlScene.AddNode(editorNode)
        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(editorNode)

    def _updateGUIState(self, caller=None, event=None):
        p = self._parameterNode
        busy = self._job is not None
        ct = p.inputVolume if p else None
        seg = p.segmentation if p else None
        self.ui.segmentButton.enabled = bool(ct) and not busy
        self.ui.classifyButton.enabled = bool(ct and seg) and not busy
        self.ui.compareButton.enabled = bool(p and ct and p.referenceSegmentation and p.comparedSegmentation) and not busy
        self.ui.saveReportButton.enabled = self._lastResult is not None and not busy
        self.ui.exportComparisonButton.enabled = bool(self._comparisonRows)
        self.ui.cancelButton.enabled = busy
        self.ui.modelHelpLabel.text = MODEL_HELP[p.model.value] if p else ""
        editor = self.ui.segmentEditorWidget
        if editor.segmentationNode() != seg:
            editor.setSegmentationNode(seg)
        if ct and editor.sourceVolumeNode() != ct:
            editor.setSourceVolumeNode(ct)

    # --- messages

    def showStatus(self, text):
        self.ui.statusLabel.setStyleSheet("")
        self.ui.statusLabel.text = text
        logging.info(f"OsteoScreen: {text}")

    def showError(self, text, details=None):
        """A short message in the panel; the details go to the log (never a modal dialog)."""
        self.ui.statusLabel.setStyleSheet("color: #c0392b")
        self.ui.statusLabel.text = text
        logging.error(f"OsteoScreen: {text}" + (f"\n{details}" if details else ""))

    # --- dependencies, checked when first needed

    def ensurePythonDependencies(self):
        """ONNX Runtime for the models: installed after one confirmation if missing."""
        if importlib.util.find_spec("onnxruntime") is not None:
            return True
        try:
            try:
                import slicer.packaging as packaging  # Slicer 5.12+
            except ImportError:
                import slicer.pydeps as packaging  # Slicer 5.11
            pipEnsure = packaging.pip_ensure
        except (ImportError, AttributeError):
            pipEnsure = None
        try:
            if pipEnsure is not None:
                from packaging.requirements import Requirement  # bundled with Slicer's Python

                pipEnsure([Requirement("onnxruntime")], requester=MODULE_NAME)  # asks once, then installs
            else:
                if not slicer.util.confirmOkCancelDisplay(
                    "OsteoScreen needs ONNX Runtime (about 20 MB) to run its models. Install it now?",
                    windowTitle="OsteoScreen",
                ):
                    self.showError("ONNX Runtime is not installed; nothing was run.")
                    return False
                with slicer.util.WaitCursor():
                    slicer.util.pip_install("onnxruntime")
        except Exception as exc:
            self.showError("ONNX Runtime could not be installed; see the log.", details=repr(exc))
            return False
        importlib.invalidate_caches()
        if importlib.util.find_spec("onnxruntime") is None:
            self.showError("ONNX Runtime is not installed; nothing was run.")
            return False
        return True

    # --- background jobs

    def _startJob(self, task, workDir, inputs, onDone, text):
        try:
            self._job = WorkerProcess(task, inputs, workDir=workDir)
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError("The background process could not start; see the log.", details=repr(exc))
            return
        self._onJobDone = onDone
        self.ui.progressBar.value = 0
        self.ui.progressBar.setVisible(True)
        self.showStatus(text)
        self._timer.start()
        self._updateGUIState()

    def _pollJob(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for message in job.poll():
            if "progress" in message:
                self.ui.progressBar.value = int(round(100 * message["progress"]))
                if message.get("message"):
                    self.ui.statusLabel.text = message["message"]
        if job.running:
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setVisible(False)
        if job.log:
            logging.info("OsteoScreen worker output:\n" + "\n".join(job.log))
        try:
            if job.result is not None:
                self._onJobDone(job.result)
            elif job.cancelled:
                self.showStatus("Cancelled; nothing was changed.")
            else:
                self.showError(job.error or "The task failed; see the log.", details="\n".join(job.log))
        except Exception as exc:
            logging.exception("OsteoScreen")
            self.showError(f"Could not use the result ({exc}); see the log.")
        finally:
            job.cleanup()
            self._updateGUIState()

    def onCancel(self):
        if self._job is not None:
            self._job.cancel()
            self.showStatus("Cancelling...")

    def _newWorkDir(self):
        return tempfile.mkdtemp(prefix="OsteoScreen-", dir=slicer.app.temporaryPath)

    # --- 1. segment

    def onSegment(self):
        ct = self._parameterNode.inputVolume
        if not ct or self._job is not None or not self.ensurePythonDependencies():
            return
        workDir = self._newWorkDir()
        try:
            inputs = {"ct": exportVolumeForWorker(ct, os.path.join(workDir, "ct.nrrd")), "source_path": sourcePathOf(ct)}
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError(str(exc))
            return

        def done(result):
            node = importSegmentation(self.logic, result["segmentation"], ct, f"{ct.GetName()} L1-L2",
                                      result.get("source"), result.get("warnings", []))
            node.CreateClosedSurfaceRepresentation()
            slicer.util.setSliceViewerLayers(background=ct)
            self._parameterNode.segmentation = node
            seconds = result.get("timing_s", {}).get("total")
            text = f"New segmentation '{node.GetName()}'" + (f" in {seconds:.0f} s" if seconds else "")
            text += ". Check and correct L1 and L2 below, then Classify."
            for w in result.get("warnings", []):
                text += f"\nWarning: {w}"
            self.showStatus(text)

        self._startJob("segment", workDir, inputs, done, f"Segmenting L1 and L2 of {ct.GetName()}...")

    # --- 3. classify and report

    def onClassify(self):
        p = self._parameterNode
        ct, seg, model = p.inputVolume, p.segmentation, p.model.value
        if not (ct and seg) or self._job is not None or not self.ensurePythonDependencies():
            return
        workDir = self._newWorkDir()
        try:
            segPath = os.path.join(workDir, "segmentation.seg.nrrd")
            self.logic.save_segmentation(seg, segPath)  # the CURRENT segments, with the user's corrections
            inputs = {
                "ct": exportVolumeForWorker(ct, os.path.join(workDir, "ct.nrrd")),
                "source_path": sourcePathOf(ct),
                "segmentation": segPath,
                "segmentation_source": seg.GetAttribute("OsteoScreen.Source") or "user segmentation",
                "warnings": segmentationWarnings(seg),
                "model": model,
            }
            # The worker reads a plain NRRD copy: the kVp (the reader's choice, else the
            # DICOM header through Slicer's database) travels with the job.
            if p.tubeVoltage != TubeVoltage.AUTO:
                inputs["kvp"], inputs["kvp_source"] = int(p.tubeVoltage.value), "user"
            else:
                kvp, source = self.logic.tube_voltage(ct)
                if kvp is not None:
                    inputs["kvp"], inputs["kvp_source"] = kvp, source
            if p.contrastPhase != ContrastPhase.UNKNOWN:
                inputs["contrast"] = p.contrastPhase.value
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError(f"Could not prepare the inputs: {exc}")
            return

        def done(message):
            with open(message["result"]) as f:
                result = json.load(f)
            table = self.logic.result_to_table(result, self._parameterNode.resultTable)
            self._parameterNode.resultTable = table
            self.ui.resultTableView.setMRMLTableNode(table)
            self.ui.resultLabel.text = formatResult(result)
            self._lastResult = (result, ct, seg)
            self.showStatus(f"Classified with {MODEL_LABELS[model]}. Classify again after further corrections.")

        self._startJob("classify", workDir, inputs, done, f"Classifying with {MODEL_LABELS[model]}...")

    def onSaveReport(self):
        if self._lastResult is None:
            return
        result, ct, seg = self._lastResult
        folder = str(self._parameterNode.reportFolder or "")
        if folder in ("", "."):
            folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder for the OsteoScreen report")
            if not folder:
                return
            self._parameterNode.reportFolder = pathlib.Path(folder)
        target = os.path.join(folder, ct.GetName())
        try:
            with slicer.util.WaitCursor():
                written = self.logic.save_report(result, ct, seg, target, overwrite=self._parameterNode.overwriteReport)
        except Exception as exc:
            self.showError(str(exc).splitlines()[0] if str(exc) else "The report could not be written; see the log.",
                           details=repr(exc))
            return
        self.showStatus(f"Report written to {written} (result.json, report.png).")

    # --- annotator tools

    def onCompare(self):
        p = self._parameterNode
        ct, reference, compared = p.inputVolume, p.referenceSegmentation, p.comparedSegmentation
        if not (ct and reference and compared) or self._job is not None:
            return
        workDir = self._newWorkDir()
        try:
            inputs = {"ct": exportVolumeForWorker(ct, os.path.join(workDir, "ct.nrrd"))}
            for key, node in (("reference", reference), ("compared", compared)):
                inputs[key] = str(self.logic.save_segmentation(node, os.path.join(workDir, f"{key}.seg.nrrd")))
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError(f"Could not prepare the inputs: {exc}")
            return

        def done(message):
            rows = message["rows"]
            if self._comparisonTable is None or self._comparisonTable.GetScene() is None:
                self._comparisonTable = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName("OsteoScreen comparison"))
            comparisonToTable(rows, self._comparisonTable)
            self.ui.comparisonTableView.setMRMLTableNode(self._comparisonTable)
            self._comparisonRows = rows
            self.showStatus(f"Compared '{compared.GetName()}' with '{reference.GetName()}'.")

        self._startJob("compare", workDir, inputs, done, "Comparing the segmentations...")

    def onExportComparison(self):
        if not self._comparisonRows:
            return
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export the comparison", "comparison.csv",
                                              "CSV files (*.csv)")
        if not path:
            return
        try:
            writeComparisonCsv(self._comparisonRows, path)
        except OSError as exc:
            self.showError(f"Could not write {path}: {exc.strerror}")
            return
        self.showStatus(f"Comparison written to {path}.")


# ---------------------------------------------------------------------------------------------
# Self-test: the real logic on the sample phantom, then the panel itself
# ---------------------------------------------------------------------------------------------


class OsteoScreenTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (
            self.test_sample_phantom_loads_as_a_ct,
            self.test_segmenting_twice_makes_two_nodes_and_keeps_the_edited_one,
            self.test_cancel_stops_segmentation_before_any_node_is_made,
            self.test_both_models_classify_and_the_report_is_written,
            self.test_segmentation_agrees_with_the_phantom_reference,
            self.test_panel_segments_in_the_background_and_cancel_stops_it,
        ):
            self.setUp()
            test()

    def _logic(self):
        ensureLibraryImportable()
        from OsteoScreenLib.logic import OsteoScreenLogic

        return OsteoScreenLogic(slicer.mrmlScene)

    def _segmentNames(self, segmentationNode):
        segmentation = segmentationNode.GetSegmentation()
        return sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))

    def test_sample_phantom_loads_as_a_ct(self):
        self.delayDisplay("Sample chest phantom")
        registerSampleData()
        ct = loadSamplePhantom()
        self.assertIsNotNone(ct.GetImageData())
        self.assertEqual(len(ct.GetImageData().GetDimensions()), 3)
        low, high = ct.GetImageData().GetScalarRange()
        self.assertLess(low, -500)  # air, in Hounsfield units
        self.assertGreater(high, 300)  # bone

    def test_segmenting_twice_makes_two_nodes_and_keeps_the_edited_one(self):
        self.delayDisplay("Segmenting twice never overwrites")
        logic = self._logic()
        ct = loadSamplePhantom()
        first, _ = logic.segment(ct)
        self.assertEqual(self._segmentNames(first), ["L1", "L2"])
        # the reader "edits" the first segmentation: removes L2
        first.GetSegmentation().RemoveSegment(first.GetSegmentation().GetSegmentIdBySegmentName("L2"))
        second, _ = logic.segment(ct)
        self.assertIsNot(first, second)
        self.assertNotEqual(first.GetName(), second.GetName())
        self.assertEqual(self._segmentNames(first), ["L1"])
        self.assertEqual(self._segmentNames(second), ["L1", "L2"])

    def test_cancel_stops_segmentation_before_any_node_is_made(self):
        self.delayDisplay("Cancel stops the segmentation")
        from OsteoScreenLib.segmenter import Cancelled

        logic = self._logic()
        ct = loadSamplePhantom()
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        with self.assertRaises(Cancelled):
            logic.segment(ct, cancel=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), before)

    def test_both_models_classify_and_the_report_is_written(self):
        self.delayDisplay("Classification with both models, table and report")
        from OsteoScreenLib.registry import CLASSES

        logic = self._logic()
        ct = loadSamplePhantom()
        seg, _ = logic.segment(ct)
        for model in ("l1l2", "l1"):
            result = logic.classify(ct, seg, model=model)
            prediction = result["prediction"]
            self.assertIn(prediction["class"], CLASSES)
            self.assertAlmostEqual(sum(prediction["probabilities"].values()), 1.0, places=3)
            self.assertIsNotNone(result["vertebrae"]["L1"]["trabecular_roi_hu"])
            table = logic.result_to_table(result)
            self.assertGreater(table.GetTable().GetNumberOfRows(), 3)
            self.assertIn(prediction["class"].capitalize(), formatResult(result))
        folder = tempfile.mkdtemp(prefix="OsteoScreenTest-", dir=slicer.app.temporaryPath)
        try:
            written = logic.save_report(result, ct, seg, os.path.join(folder, "case"))
            self.assertTrue(os.path.isfile(os.path.join(written, "result.json")))
            self.assertTrue(os.path.isfile(os.path.join(written, "report.png")))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_segmentation_agrees_with_the_phantom_reference(self):
        self.delayDisplay("Comparison with the phantom's reference labels")
        logic = self._logic()
        ct = loadSamplePhantom()
        reference = logic.load_segmentation(caseFile(ensureSamplePhantom(), "labels"), ct)
        predicted, _ = logic.segment(ct)
        rows = {row["segment"]: row for row in logic.compare_segmentations(reference, predicted, ct)}
        self.assertEqual(sorted(rows), ["L1", "L2"])
        for row in rows.values():
            self.assertGreater(row["dsc"], 0.7)
            self.assertLess(row["hd95_mm"], 10.0)
        table = comparisonToTable(list(rows.values()), slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode"))
        self.assertEqual(table.GetTable().GetNumberOfRows(), 2)

    def _waitForPanel(self, widget, timeoutS=900):
        start = time.time()
        while widget._job is not None:
            slicer.app.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeoutS:
                widget.onCancel()
                self.fail("the background task did not finish in time")

    def test_panel_segments_in_the_background_and_cancel_stops_it(self):
        self.delayDisplay("The panel: background segmentation, never overwrite, cancel, classify")
        slicer.util.selectModule(MODULE_NAME)
        widget = slicer.modules.OsteoScreenWidget
        ct = loadSamplePhantom()
        widget._parameterNode.inputVolume = ct

        widget.ui.segmentButton.click()
        self.assertIsNotNone(widget._job)  # returned at once: the work runs in the background
        self._waitForPanel(widget)
        first = widget._parameterNode.segmentation
        self.assertIsNotNone(first, widget.ui.statusLabel.text)
        self.assertEqual(self._segmentNames(first), ["L1", "L2"])

        widget.ui.segmentButton.click()
        self._waitForPanel(widget)
        second = widget._parameterNode.segmentation
        self.assertIsNot(first, second)
        self.assertIsNotNone(first.GetScene())  # the first one is still there, untouched

        count = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        widget.ui.segmentButton.click()
        widget.ui.cancelButton.click()
        self._waitForPanel(widget, timeoutS=60)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), count)
        self.assertIn("Cancelled", widget.ui.statusLabel.text)

        widget._parameterNode.model = ClassifierModel.L1
        widget.ui.classifyButton.click()
        self._waitForPanel(widget)
        self.assertIsNotNone(widget._lastResult, widget.ui.statusLabel.text)
        self.assertGreater(widget._parameterNode.resultTable.GetTable().GetNumberOfRows(), 3)
        self.assertEqual(widget._lastResult[0]["model"]["name"], "l1")
