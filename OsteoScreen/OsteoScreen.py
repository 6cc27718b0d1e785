"""OsteoScreen: opportunistic osteoporosis screening on chest CT, as a 3D Slicer module.

The panel walks through one case: segment the L1 and L2 vertebral bodies, correct
them in the embedded Segment Editor, classify (normal / osteopenia /
osteoporosis) with model 1 (L1 + L2) or model 2 (L1 alone), save the report;
annotators compare two segmentations (DSC, HD95). This file holds only the GUI:
the work is ``OsteoScreenLib``'s (the same code as the command line and the
Python console).

Long work runs in a separate ``PythonSlicer -m OsteoScreenLib.worker`` process,
never on the GUI thread (MRML and VTK are not thread-safe, and a process can be
stopped in the middle of an ONNX inference). ``OsteoScreenLib.jobs`` starts it
in its own process group, streams its progress, and ends the whole process tree
on Cancel, when the scene closes and when Slicer exits. Inputs (the CT, the
current segments) go to the worker as files; its outputs come back as files that
are loaded into NEW nodes, so nothing the user edited is ever overwritten.

The section "Qt-free helpers" below needs no Qt: Testing/Python/slicer_module/test_slicer_module.py
runs it headless on the slicer-core wheel.
"""

import enum
import glob
import importlib.util
import logging
import os
import pathlib
import shutil
import sys
import tempfile
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
# Qt-free helpers (tested headless by Testing/Python/slicer_module/test_slicer_module.py)
# ---------------------------------------------------------------------------------------------

MODULE_NAME = "OsteoScreen"
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_NAME = "OsteoScreenChestPhantom"
SAMPLE_SEED = 7
POLL_INTERVAL_MS = 200


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


ensureLibraryImportable()
from OsteoScreenLib import dependencies, registry  # noqa: E402  (light: names, numbers, standard library)
from OsteoScreenLib.jobs import WorkerProcess  # noqa: E402  (standard library only)


def _choice(name, members, labels, doc):
    """An enum for a combo box of the parameter node wrapper, with the labels it shows."""
    choice = enum.Enum(name, members)
    choice.__doc__ = doc
    choice.label = staticmethod(lambda member: labels[member.value])
    return choice


ClassifierModel = _choice(
    "ClassifierModel", {n.upper(): n for n in registry.MODEL_NAMES}, {n: m["title"] for n, m in registry.MODELS.items()},
    "The bundled classifiers; values are the logic's model names.")
TubeVoltage = _choice(
    "TubeVoltage", {"AUTO": "auto", **{f"KV{v}": str(v) for v in registry.TUBE_VOLTAGES_KVP}},
    {"auto": "From the DICOM header (else unknown)", **{str(v): f"{v} kVp" for v in registry.TUBE_VOLTAGES_KVP}},
    "The scan's kVp for the classifiers; AUTO takes it from the DICOM header (unknown otherwise).")
ContrastPhase = _choice(
    "ContrastPhase", {"UNKNOWN": "unknown", **{p.upper(): p for p in registry.CONTRAST_PHASES}},
    {"unknown": "Unknown", **registry.CONTRAST_PHASE_TITLES},
    "The scan's contrast phase for the classifiers (DICOM does not record it reliably).")


def stopJob(job):
    """End a job now, with its whole process tree, and delete its files: nothing it makes is used.
    Cancel, closing the module, closing the scene (its result must not land in the next scene)."""
    if job is not None:
        job.kill()
        job.cleanup()


def caseFile(folder, stem):
    """``folder/stem.<ext>`` as written by ``OsteoScreenLib.phantom.write_case``, or None."""
    for path in sorted(glob.glob(os.path.join(folder, stem + ".*"))):
        if not path.endswith(".json"):
            return path
    return None


# ---------------------------------------------------------------------------------------------
# Sample data: a chest phantom generated locally, nothing downloaded
# ---------------------------------------------------------------------------------------------

_samplePhantomJob = None  # the background generation started with Slicer, if the phantom was missing


def sampleCaseFolder():
    """Where ``osteoscreen phantom CACHE --seed SAMPLE_SEED`` writes the sample."""
    return os.path.join(slicer.app.cachePath, MODULE_NAME, f"phantom-{SAMPLE_SEED:05d}")


def startSamplePhantomGeneration():
    """Generate the sample phantom in the background (once; ~30 s) so that
    ``SampleData.downloadSample(SAMPLE_NAME)`` finds its file, also from the Python console."""
    global _samplePhantomJob
    folder = sampleCaseFolder()
    if caseFile(folder, "ct") is not None or _samplePhantomJob is not None:
        return
    import subprocess

    from OsteoScreenLib.jobs import python_slicer_executable, start

    os.makedirs(os.path.dirname(folder), exist_ok=True)
    try:
        _samplePhantomJob = start([python_slicer_executable(), "-m", "OsteoScreenLib.cli", "phantom",
                                   os.path.dirname(folder), "--seed", str(SAMPLE_SEED), "--format", "nrrd"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, RuntimeError) as exc:
        logging.warning(f"OsteoScreen: the sample phantom will be generated when first loaded ({exc})")


def ensureSamplePhantom():
    """The sample chest phantom's folder, generated now if the background run has not made it."""
    folder = sampleCaseFolder()
    if _samplePhantomJob is not None and _samplePhantomJob.poll() is None:
        with slicer.util.WaitCursor():
            _samplePhantomJob.wait()
    if caseFile(folder, "ct") is None:
        from OsteoScreenLib.phantom import generate_case, write_case

        slicer.util.showStatusMessage("OsteoScreen: generating the sample chest phantom (only once)...")
        with slicer.util.WaitCursor():
            write_case(generate_case(SAMPLE_SEED, preset="chest"), folder, fmt="nrrd", overwrite=True)
        slicer.util.showStatusMessage("")
    return folder


def samplePhantomUri():
    """The file URI that the Sample Data source names (the generated phantom's CT)."""
    return pathlib.Path(os.path.join(sampleCaseFolder(), "ct.nrrd")).as_uri()


def sampleUrlRule(sampleUri, ensure):
    """A SampleData URL rewrite rule that makes the phantom (``ensure()``) before SampleData fetches ``sampleUri``.

    ``SampleData.downloadSample(name)`` (the Python console) never calls ``customDownloader``, only the
    button does; but every fetch, the console's included, passes the URI through the registered rewrite
    rules first (``SampleDataLogic.downloadFile``, Slicer 5.10+). Other URIs pass unchanged.
    """

    def rule(url):
        if url == sampleUri:
            ensure()
        return url

    return rule


def loadSamplePhantom(source=None):
    """Load the sample chest phantom (the SampleData button calls this with its source)."""
    path = caseFile(ensureSamplePhantom(), "ct")
    node = slicer.util.loadVolume(path, {"name": SAMPLE_NAME})
    node.SetAttribute(registry.SOURCE_PATH_ATTRIBUTE, path)
    return node


def registerSampleData():
    """Add the phantom to the Sample Data module (called once Slicer has started)."""
    import SampleData

    startSamplePhantomGeneration()
    SampleData.SampleDataLogic.registerUrlRewriteRule(SAMPLE_NAME, sampleUrlRule(samplePhantomUri(), ensureSamplePhantom))
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="OsteoScreen",
        sampleName=SAMPLE_NAME,
        uris=samplePhantomUri(),
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
        iconPath = resourcePath(f"Icons/{MODULE_NAME}.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)
        if (slicer.app.majorVersion, slicer.app.minorVersion) < registry.MINIMUM_SLICER_VERSION:
            logging.error("OsteoScreen needs Slicer %d.%d or later" % registry.MINIMUM_SLICER_VERSION)
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
        self._lastResult = None  # (CaseResult, CT node, segmentation node, digest of its segments) of the last Classify
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
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.exportComparisonButton.connect("clicked(bool)", self.onExportComparison)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)

        self.initializeParameterNode()

    def cleanup(self):
        self._endJob("Stopped: the module was closed.")
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
        self._endJob("Stopped: the scene was closed.")  # its result must not land in the next scene
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
        self.ui.exportDicomButton.enabled = self._lastResult is not None and not busy
        self.ui.exportComparisonButton.enabled = bool(self._comparisonRows)
        self.ui.cancelButton.enabled = busy
        self.ui.modelHelpLabel.text = registry.MODELS[p.model.value]["help"] if p else ""
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
        """ONNX Runtime for the models: installed after one confirmation if missing (see OsteoScreenLib.dependencies)."""
        if importlib.util.find_spec(dependencies.REQUIREMENT) is not None:
            return True
        try:
            from slicer.packaging import pip_ensure  # Slicer 5.12+
        except ImportError:
            pip_ensure = None
        route = dependencies.install_route((slicer.app.majorVersion, slicer.app.minorVersion), pip_ensure is not None)
        error, declined, install = None, False, None
        if route == dependencies.PIP_ENSURE:
            try:  # Slicer's own confirmation and progress dialogs
                pip_ensure(dependencies.REQUIREMENT, requester=MODULE_NAME)
            except Exception as exc:
                error = exc
        elif not slicer.util.confirmOkCancelDisplay(dependencies.CONFIRM_TEXT, windowTitle=MODULE_NAME):
            declined = True
        else:
            try:
                install = self._pipInstallWithBusyDialog()
            except Exception as exc:
                error = exc
        importlib.invalidate_caches()
        outcome = dependencies.outcome(
            importlib.util.find_spec(dependencies.REQUIREMENT) is not None, error=error, declined=declined,
            cancelled=bool(install and install.cancelled), returncode=install.returncode if install else None)
        text, isError = dependencies.message(outcome, route, dependencies.failure_detail(
            error, install.returncode if install else None))
        if isError:
            self.showError(text, details=("\n".join(install.lines) if install else repr(error)))
        else:
            self.showStatus(text)
        return outcome == dependencies.INSTALLED

    def _pipInstallWithBusyDialog(self):
        """pip in a PythonSlicer process (Slicer before 5.12) while a busy dialog shows its latest line."""
        install = dependencies.PipInstall()
        dialog = slicer.util.createProgressDialog(  # maximum 0: busy; modal: no second Segment meanwhile
            maximum=0, labelText=dependencies.progress_text(), windowTitle=f"{MODULE_NAME}: installing ONNX Runtime",
            windowModality=qt.Qt.ApplicationModal)
        dialog.show()
        try:
            while install.running:
                if dialog.wasCanceled:
                    install.cancel()
                dialog.labelText = dependencies.progress_text(install.last_line)
                slicer.app.processEvents()
                time.sleep(0.05)
            install.wait()
        finally:
            dialog.close()
        logging.info("OsteoScreen: pip install %s:\n%s" % (dependencies.REQUIREMENT, "\n".join(install.lines)))
        return install

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

    def _endJob(self, text):
        """Stop the running job now (its whole process tree) and forget it: nothing it makes is used."""
        if self._timer is not None:
            self._timer.stop()
        job, self._job = self._job, None
        if job is not None:
            stopJob(job)
            self.showStatus(text)
        if hasattr(self, "ui"):
            self.ui.progressBar.setVisible(False)

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
            inputs = {"ct": self.logic.export_volume(ct, os.path.join(workDir, "ct.nrrd")),
                      "source_path": self.logic.source_path(ct)}
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError(str(exc))
            return

        def done(result):
            node = self.logic.import_segmentation(result["segmentation"], ct, f"{ct.GetName()} L1-L2",
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
            digest = self.logic.labels_digest(seg, ct)  # Save report checks that they are still these
            inputs = {
                "ct": self.logic.export_volume(ct, os.path.join(workDir, "ct.nrrd")),
                "source_path": self.logic.source_path(ct),
                "segmentation": segPath,
                "segmentation_source": seg.GetAttribute(registry.SOURCE_ATTRIBUTE) or "user segmentation",
                "warnings": self.logic.segmentation_warnings(seg),
                "model": model,
            }
            # The worker reads a plain NRRD copy: the scan settings (the reader's choice, else the
            # DICOM header through Slicer's database) travel with the job.
            if p.tubeVoltage.value != "auto":
                inputs["kvp"], inputs["kvp_source"] = int(p.tubeVoltage.value), "user"
            else:
                inputs["kvp"], inputs["kvp_source"] = self.logic.tube_voltage(ct)
            if p.contrastPhase.value != "unknown":
                inputs["contrast"] = p.contrastPhase.value
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError(f"Could not prepare the inputs: {exc}")
            return

        def done(message):
            import json

            from OsteoScreenLib.result import CaseResult

            with open(message["result"]) as f:
                result = CaseResult.from_json(json.load(f))
            # a table OsteoScreen made is reused; a table of the reader's is never emptied
            table = self.logic.result_to_table(result, self._parameterNode.resultTable)
            self._parameterNode.resultTable = table
            self.ui.resultTableView.setMRMLTableNode(table)
            self.ui.resultLabel.text = result.html()
            self._lastResult = (result, ct, seg, digest)
            title = registry.MODELS[model]["title"]
            self.showStatus(f"Classified with {title}. Classify again after further corrections.")

        self._startJob("classify", workDir, inputs, done, f"Classifying with {registry.MODELS[model]['title']}...")

    def reportFolder(self):
        """The report folder of the panel, asked for when none is set yet (None: the reader cancelled)."""
        folder = str(self._parameterNode.reportFolder or "")
        if folder in ("", "."):
            folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder for the OsteoScreen report")
            if not folder:
                return None
            self._parameterNode.reportFolder = pathlib.Path(folder)
        return folder

    def onExportDicom(self):
        """seg.dcm and sr.dcm of the last classification into the report folder, then into Slicer's DICOM database."""
        def write(result, ct, seg, digest, target):
            written = self.logic.export_dicom(result, ct, seg, target, labels_digest=digest,
                                              overwrite=self._parameterNode.overwriteReport)
            added = self.logic.add_to_dicom_database(target)
            where = " and added to the DICOM database" if added else " (no DICOM database open: not added)"
            return f"DICOM {', '.join(p.name for p in written.values())} written to {target}{where}."

        self._writeLastResult(write, "The DICOM export failed; see the log.", "dicom")

    def onSaveReport(self):
        def write(result, ct, seg, digest, target):
            written = self.logic.save_report(result, ct, seg, target, overwrite=self._parameterNode.overwriteReport,
                                             labels_digest=digest)
            return f"Report written to {written} (result.json, report.png)."

        self._writeLastResult(write, "The report could not be written; see the log.")

    def _writeLastResult(self, write, failure, *subfolders):
        """Files of the last classification into ``<report folder>/<CT name>/<subfolders>``: ``write(result,
        ct, seg, digest, target)`` returns the status line; an error shows its first line (``failure``
        when it has none), the details go to the log."""
        if self._lastResult is None:
            return
        folder = self.reportFolder()
        if folder is None:
            return
        result, ct, seg, digest = self._lastResult
        target = os.path.join(folder, ct.GetName(), *subfolders)
        try:
            with slicer.util.WaitCursor():
                status = write(result, ct, seg, digest, target)
        except Exception as exc:
            self.showError(str(exc).splitlines()[0] if str(exc) else failure, details=repr(exc))
            return
        self.showStatus(status)

    # --- annotator tools

    def onCompare(self):
        p = self._parameterNode
        ct, reference, compared = p.inputVolume, p.referenceSegmentation, p.comparedSegmentation
        if not (ct and reference and compared) or self._job is not None:
            return
        workDir = self._newWorkDir()
        try:
            inputs = {"ct": self.logic.export_volume(ct, os.path.join(workDir, "ct.nrrd"))}
            for key, node in (("reference", reference), ("compared", compared)):
                inputs[key] = str(self.logic.save_segmentation(node, os.path.join(workDir, f"{key}.seg.nrrd")))
        except Exception as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            self.showError(f"Could not prepare the inputs: {exc}")
            return

        def done(message):
            rows = message["rows"]
            if self._comparisonTable is not None and self._comparisonTable.GetScene() is None:
                self._comparisonTable = None  # removed by the reader: make a new one
            self._comparisonTable = self.logic.comparison_to_table(rows, self._comparisonTable)
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
        from OsteoScreenLib.atomic import write_text
        from OsteoScreenLib.metrics import comparison_csv

        try:
            write_text(path, comparison_csv(self._comparisonRows), overwrite=True)
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
            prediction = result.prediction
            self.assertIn(prediction.class_name, CLASSES)
            self.assertAlmostEqual(sum(prediction.probabilities.values()), 1.0, places=3)
            self.assertIsNotNone(result.vertebrae["L1"].trabecular_roi_hu)
            table = logic.result_to_table(result)
            self.assertGreater(table.GetTable().GetNumberOfRows(), 3)
            self.assertIn(prediction.class_name.capitalize(), result.html())
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
        table = logic.comparison_to_table(list(rows.values()))
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
        self.assertEqual(widget._lastResult[0].model.name, "l1")
