"""ICH Segmentation: intracerebral hemorrhage, perihematomal edema and intraventricular hemorrhage on head CT.

A thin Slicer module: the widget wires the panel to the logic, the logic delegates to
``ICHSegmentationLib`` (scene-in functions, testable with slicer-core) and to the
``ichseg`` core package.  Nothing here computes.
"""

import logging
import os
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from ICHSegmentationLib import dependencies, editing, measure, sampledata, selftest
from ICHSegmentationLib.logic import SegmentationLogic
from ICHSegmentationLib.process import QUALITIES
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEVICES = ("auto", "CPU", "GPU")
LAST_FOLDER_SETTING = "ICHSegmentation/LastFolder"
#: Delay between the last segment edit and the volumes update.
VOLUMES_UPDATE_DELAY_MS = 750
#: How often the GUI takes the background process's output.
PROCESS_POLL_MS = 100


class ICHSegmentation(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ICH Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["ICH Segmentation contributors"]
        self.parent.helpText = (
            "Segments intracerebral hemorrhage (ICH), perihematomal edema (PHE) and intraventricular "
            "hemorrhage (IVH) on non-contrast head CT, and measures their volumes (mL), lesion counts, "
            "PHE/ICH ratio and ICH ABC/2. Results are segments ICH, PHE and IVH with SNOMED-CT terminology; "
            "edit them in Segment Editor and the volumes follow. Corrected cases can be saved for training. "
            "Research use only; not for clinical decisions."
        )
        self.parent.acknowledgementText = (
            "Built on 3D Slicer, PyTorch and MONAI. Label scheme and terminology follow DICOM/SNOMED-CT codes."
        )
        # The bundled synthetic head CT in the Sample Data module (with its SHA-256).
        slicer.app.connect("startupCompleted()", sampledata.register_in_slicer)


def ensureDependencies() -> None:
    """Install missing Python packages (torch through PyTorchUtils); ask first when there is a main window."""
    dependencies.ensure_in_slicer()  # ICHTraining calls it from here


@parameterNodeWrapper
class ICHSegmentationParameterNode:
    """State of the module panel, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    volumesTable: vtkMRMLTableNode
    model: str = ""  # model reference (id@version); empty: the current model
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    quality: Annotated[str, Choice(list(QUALITIES))] = "auto"


class ICHSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: only wiring, the work is done by :class:`ICHSegmentationLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSegmentation = None
        self._volumesTimer = None
        self._volumesOutdated = False
        self._processTimer = None
        self._process = None
        self._job = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ICHSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ICHSegmentationLogic()

        self._volumesTimer = qt.QTimer()
        self._volumesTimer.setSingleShot(True)
        self._volumesTimer.setInterval(VOLUMES_UPDATE_DELAY_MS)
        self._volumesTimer.connect("timeout()", self.onAutoUpdateVolumes)

        self._processTimer = qt.QTimer()
        self._processTimer.setInterval(PROCESS_POLL_MS)
        self._processTimer.connect("timeout()", self.onProcessTimer)
        self.ui.progressBar.hide()
        self.refreshModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3D)
        self.ui.importLabelmapButton.connect("clicked(bool)", self.onImportLabelmap)
        self.ui.updateVolumesButton.connect("clicked(bool)", self.onUpdateVolumes)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.saveTrainingCaseButton.connect("clicked(bool)", self.onSaveTrainingCase)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._process is not None:  # closing Slicer or reloading the module must not leave a worker behind
            self._process.cancel()
            self.onProcessTimer()
        if self._processTimer is not None:
            self._processTimer.stop()
        if self._volumesTimer is not None:
            self._volumesTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self._volumesOutdated:
            self.onAutoUpdateVolumes()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._process is not None:
            self._process.cancel()
            self.onProcessTimer()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # The .ui sets a "SlicerParameterName" property on each widget bound to a parameter.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        volume = p.inputVolume if p else None
        segmentation = p.outputSegmentation if p else None
        running = self._process is not None
        self.ui.segmentButton.enabled = running or (volume is not None and self.ui.modelSelector.count > 0)
        self.ui.importLabelmapButton.enabled = volume is not None and not running
        self.ui.show3DCheckBox.enabled = segmentation is not None
        for button in (self.ui.updateVolumesButton, self.ui.exportCsvButton, self.ui.saveTrainingCaseButton):
            button.enabled = volume is not None and segmentation is not None
        self.ui.volumesTableView.setMRMLTableNode(p.volumesTable if p else None)
        self.observeSegmentation(segmentation)

    def observeSegmentation(self, segmentationNode) -> None:
        """Update the volumes shortly after the segments change (Segment Editor edits, renames, deletions)."""
        if segmentationNode is self._observedSegmentation:
            return
        if self._observedSegmentation is not None:
            for event in editing.segmentation_events():
                self.removeObserver(self._observedSegmentation, event, self.onSegmentationChanged)
        self._observedSegmentation = segmentationNode
        if segmentationNode is not None:
            for event in editing.segmentation_events():
                self.addObserver(segmentationNode, event, self.onSegmentationChanged)

    def onSegmentationChanged(self, caller=None, event=None) -> None:
        self._volumesOutdated = True
        if self.parent.isEntered:  # else measured on return, not while painting in Segment Editor
            self._volumesTimer.start()

    def onAutoUpdateVolumes(self) -> None:
        try:
            self.updateVolumes()
        except Exception as exc:  # an edit in progress must not raise dialogs; report in the log
            self.log(f"Volumes not updated: {exc}")

    # ------------------------------------------------------------------ models
    def refreshModels(self) -> None:
        """Fill the model selector from the registry (shipped and fine-tuned versions)."""
        try:
            from ICHSegmentationLib import models

            choices = models.model_choices()
        except ImportError as exc:  # first run: torch/monai not installed yet (installed on Segment)
            self.ui.modelSelector.clear()
            self.ui.modelSelector.addItem("current model (packages not installed yet)", "current")
            self.ui.modelSelector.toolTip = f"Python packages are installed when you click Segment ({exc.name})."
            return
        selected = self._parameterNode.model if self._parameterNode else ""
        self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        for choice in choices:
            self.ui.modelSelector.addItem(choice.label, choice.ref)
            self.ui.modelSelector.setItemData(self.ui.modelSelector.count - 1, choice.summary, qt.Qt.ToolTipRole)
        refs = [c.ref for c in choices]
        current = next((i for i, c in enumerate(choices) if c.current), 0)
        self.ui.modelSelector.setCurrentIndex(refs.index(selected) if selected in refs else current)
        self.ui.modelSelector.blockSignals(False)
        if not choices:
            self.ui.modelSelector.toolTip = "No model is installed; reinstall the extension or train one (ICHTraining)."
        self.onModelSelected()

    def onModelSelected(self, index=None) -> None:
        i = self.ui.modelSelector.currentIndex
        if i >= 0:
            self.ui.modelSelector.toolTip = self.ui.modelSelector.itemData(i, qt.Qt.ToolTipRole) or ""
            if self._parameterNode:
                self._parameterNode.model = self.ui.modelSelector.itemData(i)

    # ------------------------------------------------------------------ segmentation in a background process
    def onSegmentButton(self) -> None:
        if self._process is not None:
            self.log("Cancelling...")
            self._process.cancel()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            ensureDependencies()
            self.refreshModels()
            self._job, self._process = self.logic.startSegmentation(
                p.inputVolume,
                model=p.model or "current",
                device=p.device,
                quality=p.quality,
                onProgress=self.onProgress,
                onLog=self.log,
                onFinished=self.onFinished,
            )
            model = p.model or "the current model"
            self.log(f"Segmenting '{p.inputVolume.GetName()}' with {model} ({p.device}, {p.quality}).")
            self.ui.segmentButton.text = "Cancel"
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.show()
            self._processTimer.start()
            self.onParameterNodeModified()

    def onProcessTimer(self) -> None:
        if self._process is not None:
            self._process.poll()  # calls onProgress / log / onFinished

    def onProgress(self, record: dict) -> None:
        if record.get("fraction") is not None:
            self.ui.progressBar.setValue(int(round(100 * float(record["fraction"]))))
        if record.get("message"):
            self.ui.progressBar.setFormat(f"%p%  {record.get('stage', '')}: {record['message']}"[:120])
            logging.debug(record["message"])

    def onFinished(self, outcome) -> None:
        self._processTimer.stop()
        segmentationJob, self._job, self._process = self._job, None, None
        self.ui.segmentButton.text = "Segment"
        self.ui.progressBar.hide()
        p = self._parameterNode
        try:
            if outcome.cancelled:
                self.log("Cancelled; nothing was added to the scene.")
            elif not outcome.ok:
                self.log(outcome.error_message())
                slicer.util.errorDisplay("Segmentation failed.", detailedText=outcome.error_message())
            elif p is None or p.inputVolume is None:
                self.log("The input volume was removed during the run; the result was discarded.")
            else:
                with slicer.util.tryWithErrorDisplay("Failed to load the result.", waitCursor=True):
                    p.outputSegmentation = self.logic.finishSegmentation(
                        segmentationJob, p.inputVolume, p.outputSegmentation
                    )
                    for warning in segmentationJob.warnings:
                        self.log(f"Warning: {warning}")
                    self.log(f"Done in {outcome.seconds:.1f} s.")
                    slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
                    self.onShow3D(self.ui.show3DCheckBox.checked)
                    self.updateVolumes()
        finally:
            segmentationJob.cleanup()
            self.onParameterNodeModified()

    def onShow3D(self, show: bool) -> None:
        p = self._parameterNode
        if p and p.outputSegmentation:
            self.logic.showIn3D(p.outputSegmentation, bool(show))

    def log(self, message: str) -> None:
        logging.info(message)
        self.ui.logTextEdit.appendPlainText(message)

    def updateVolumes(self) -> None:
        p = self._parameterNode
        if not p or not p.inputVolume or not p.outputSegmentation:
            return
        notes = []
        measurements = self.logic.computeVolumes(p.outputSegmentation, p.inputVolume, notes)
        p.volumesTable = self.logic.updateVolumesTable(measurements, p.volumesTable)
        self.ui.volumesTableView.setMRMLTableNode(p.volumesTable)
        self.ui.summaryLabel.text = measure.summary_text(measurements)
        self._volumesOutdated = False
        self._volumesTimer.stop()  # edits made so far are measured
        for note in notes:
            self.log(note)

    def onUpdateVolumes(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to compute the volumes.", waitCursor=True):
            self.updateVolumes()

    def onImportLabelmap(self) -> None:
        p = self._parameterNode
        settings = qt.QSettings()
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            "Import ICH/PHE/IVH label map",
            settings.value(LAST_FOLDER_SETTING, ""),
            "Label maps (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)",
        )
        if not path:
            return
        settings.setValue(LAST_FOLDER_SETTING, os.path.dirname(path))
        with slicer.util.tryWithErrorDisplay("Failed to import the label map.", waitCursor=True):
            segmentation = self.logic.importLabelmap(path, p.inputVolume, p.outputSegmentation)
            p.outputSegmentation = segmentation
            slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
            self.log(f"Imported {path} into '{segmentation.GetName()}'.")
            self.updateVolumes()

    def onExportCsv(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Failed to export the volumes.", waitCursor=True):
            measurements = self.logic.computeVolumes(p.outputSegmentation, p.inputVolume)
            settings = qt.QSettings()
            default = os.path.join(
                settings.value(LAST_FOLDER_SETTING, ""), f"{editing.safe_name(p.inputVolume.GetName())}.csv"
            )
            path = qt.QFileDialog.getSaveFileName(
                slicer.util.mainWindow(), "Export volumes", default, "CSV files (*.csv)"
            )
            if not path:
                return
            settings.setValue(LAST_FOLDER_SETTING, os.path.dirname(path))
            self.logic.writeCsv(path, p.inputVolume.GetName(), measurements)
            self.log(f"Volumes written to {path}.")

    def onSaveTrainingCase(self) -> None:
        from ICHTrainingLib import cases

        p = self._parameterNode
        settings = qt.QSettings()
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Folder of training cases", settings.value(cases.CASES_FOLDER_SETTING, "")
        )
        if not folder:
            return
        settings.setValue(cases.CASES_FOLDER_SETTING, folder)
        name = qt.QInputDialog.getText(
            slicer.util.mainWindow(), "Save as training case", "Case name:", qt.QLineEdit.Normal,
            editing.safe_name(p.inputVolume.GetName()),
        )  # fmt: skip
        if not name:
            return
        with slicer.util.tryWithErrorDisplay("Failed to save the training case.", waitCursor=True):
            sidecar = editing.training_sidecar(p.inputVolume, p.outputSegmentation, slicer.app.applicationVersion)
            paths = self.logic.saveTrainingCase(p.inputVolume, p.outputSegmentation, folder, name, sidecar)
            self.log(f"Training case saved in {paths['folder']}.")
            slicer.util.showStatusMessage(f"Training case '{name}' saved.", 5000)


class ICHSegmentationLogic(SegmentationLogic, ScriptedLoadableModuleLogic):
    """Slicer's module logic; the work is :class:`ICHSegmentationLib.logic.SegmentationLogic`'s.

    The scene and Segmentations logic can be passed in (tests, scripts).
    """

    def __init__(self, scene=None, segmentationsLogic=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationLogic.__init__(self, scene, segmentationsLogic)

    def getParameterNode(self):
        return ICHSegmentationParameterNode(super().getParameterNode())


class ICHSegmentationTest(ScriptedLoadableModuleTest):
    """Self-tests in Slicer: segment the bundled sample in a background process; import and measure a label."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SegmentSample()
        self.setUp()
        self.test_PhantomLabelVolumes()

    def test_SegmentSample(self) -> None:
        """Sample CT -> Segment (background process, waited on) -> segments -> volumes equal the run's JSON."""
        import json

        from ichseg import labels
        from ichseg.resources import sample_path

        ensureDependencies()
        self.delayDisplay("Loading the bundled sample CT")
        volume = slicer.util.loadVolume(str(sample_path()))
        logic = ICHSegmentationLogic()
        progress = []
        with tempfile.TemporaryDirectory() as folder:
            model = selftest.model_for_test(folder)
            self.delayDisplay(f"Segmenting with {model}")
            segmentationJob, process = logic.startSegmentation(
                volume, model=model, device="CPU", onProgress=progress.append
            )
            try:
                outcome = process.wait(timeout=1800)
                self.assertTrue(outcome.ok, outcome.error_message())
                segmentation = logic.finishSegmentation(segmentationJob, volume)
                expected = json.loads(segmentationJob.volumes_path.read_text(encoding="utf-8"))["classes"]
            finally:
                segmentationJob.cleanup()
        self.assertEqual(progress[-1]["fraction"], 1.0)
        self.assertEqual(selftest.segment_ids(segmentation), [cls.key for cls in labels.CLASSES])
        rows = selftest.table_rows(logic.updateVolumesTable(logic.computeVolumes(segmentation, volume)))
        self.assertEqual([row[0] for row in rows], [cls.name for cls in labels.CLASSES])
        for (_, volumeMl, _, voxels), cls in zip(rows, labels.CLASSES, strict=True):
            self.assertAlmostEqual(volumeMl, expected[cls.key]["volume_ml"], places=6)
            self.assertEqual(voxels, expected[cls.key]["voxels"])
        self.delayDisplay("Test passed")

    def test_PhantomLabelVolumes(self) -> None:
        """Phantom CT and label files -> segments -> volumes equal ``ichseg.volumes.measure`` of the label."""
        from ichseg import labels

        self.delayDisplay("Generating a phantom head CT")
        with tempfile.TemporaryDirectory() as folder:
            imagePath, labelPath, expected = selftest.phantom_case(folder)
            volume = slicer.util.loadVolume(imagePath)
            logic = ICHSegmentationLogic()
            segmentation = logic.importLabelmap(labelPath, volume)

        self.assertEqual(selftest.segment_ids(segmentation), [cls.key for cls in labels.CLASSES])
        rows = selftest.table_rows(logic.updateVolumesTable(logic.computeVolumes(segmentation, volume)))
        self.assertEqual([row[0] for row in rows], [cls.name for cls in labels.CLASSES])
        for (_, volumeMl, lesions, voxels), cls in zip(rows, labels.CLASSES, strict=True):
            self.assertAlmostEqual(volumeMl, expected.classes[cls.key].volume_ml, places=9)
            self.assertEqual(lesions, expected.classes[cls.key].lesions)
            self.assertEqual(voxels, expected.classes[cls.key].voxels)
        self.assertGreater(expected.classes[labels.ICH.key].voxels, 0)
        self.delayDisplay("Test passed")
