"""ICH Training: the training cases corrected in Slicer, and fine-tuning the model on them.

Thin and headless-capable: :class:`ICHTrainingLogic` needs no main window.  The correction
loop (``ichseg improve``: fine-tune, compare with the current model on held-out cases,
promote or refuse) runs in a background process; Stop kills it, Resume continues from the
last checkpoint.  Without a window:
``Slicer --no-main-window --python-script <ICHTraining>/Resources/Scripts/ICHTrainingImprove.py CASES_DIR``.
The work is done by ``ICHTrainingLib`` and the ``ichseg`` package.
"""

import os
import tempfile

import ctk
import qt
import slicer
from ICHSegmentationLib.process import BackgroundProcess, ichseg_environment
from ICHSegmentationLib.sceneaccess import SceneAccess
from ICHTrainingLib import cases, runs
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

CASE_TABLE_COLUMNS = ("Case", "Status", "ICH (mL)", "PHE (mL)", "IVH (mL)", "Saved")


class ICHTraining(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ICH Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["ICH Segmentation contributors"]
        self.parent.helpText = (
            "Training cases saved from the ICH Segmentation module: one folder per case with the CT "
            "(ct.nrrd), the corrected segmentation (segmentation.seg.nrrd, segments identified by name and "
            "terminology) and a JSON sidecar. Existing cases are never overwritten."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, PyTorch and MONAI."


class ICHTrainingWidget(ScriptedLoadableModuleWidget):
    """Panel: choose the cases folder and see its cases."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = ICHTrainingLogic()

        casesButton = ctk.ctkCollapsibleButton()
        casesButton.text = "Training cases"
        self.layout.addWidget(casesButton)
        form = qt.QFormLayout(casesButton)

        self.casesFolderEdit = ctk.ctkPathLineEdit()
        self.casesFolderEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.casesFolderEdit.toolTip = "Folder with one sub-folder per training case."
        self.casesFolderEdit.currentPath = qt.QSettings().value(cases.CASES_FOLDER_SETTING, "")
        form.addRow("Cases folder:", self.casesFolderEdit)

        self.casesTable = qt.QTableWidget()
        self.casesTable.setColumnCount(len(CASE_TABLE_COLUMNS))
        self.casesTable.setHorizontalHeaderLabels(list(CASE_TABLE_COLUMNS))
        self.casesTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.casesTable.setMinimumHeight(160)
        form.addRow(self.casesTable)

        self.refreshButton = qt.QPushButton("Refresh")
        self.refreshButton.toolTip = "List the cases in the folder again."
        form.addRow(self.refreshButton)
        self.summaryLabel = qt.QLabel()
        form.addRow(self.summaryLabel)

        trainButton = ctk.ctkCollapsibleButton()
        trainButton.text = "Improve the model with these cases"
        self.layout.addWidget(trainButton)
        trainForm = qt.QFormLayout(trainButton)
        self.stepsSpinBox = qt.QSpinBox()
        self.stepsSpinBox.setRange(10, 100000)
        self.stepsSpinBox.value = 300
        self.stepsSpinBox.toolTip = "Fine-tuning steps (about 1 s each on a laptop CPU, much less on a GPU)."
        trainForm.addRow("Steps:", self.stepsSpinBox)
        self.deviceComboBox = qt.QComboBox()
        self.deviceComboBox.addItems(["auto", "cpu", "cuda"])
        trainForm.addRow("Device:", self.deviceComboBox)
        self.startButton = qt.QPushButton("Start")
        self.startButton.toolTip = (
            "Fine-tune the current model on the cases, evaluate it against the current model on held-out cases "
            "and make it current only if no class gets worse."
        )
        self.resumeButton = qt.QPushButton("Resume")
        self.resumeButton.toolTip = "Continue a stopped run from its last checkpoint."
        buttons = qt.QHBoxLayout()
        buttons.addWidget(self.startButton)
        buttons.addWidget(self.resumeButton)
        trainForm.addRow(buttons)
        self.progressBar = qt.QProgressBar()
        self.progressBar.hide()
        trainForm.addRow(self.progressBar)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        trainForm.addRow(self.statusLabel)
        self.logEdit = qt.QPlainTextEdit()
        self.logEdit.readOnly = True
        self.logEdit.maximumBlockCount = 2000
        trainForm.addRow(self.logEdit)
        self.layout.addStretch(1)

        self.process = None
        self.runState = None
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.startButton.connect("clicked(bool)", lambda: self.onStart(resume=False))
        self.resumeButton.connect("clicked(bool)", lambda: self.onStart(resume=True))

        self.casesFolderEdit.connect("currentPathChanged(QString)", self.onCasesFolderChanged)
        self.refreshButton.connect("clicked(bool)", self.refreshCases)
        self.refreshCases()

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.cancel()
            self.onPoll()
        self.pollTimer.stop()

    def request(self):
        return runs.ImproveRequest(
            cases_dir=self.casesFolderEdit.currentPath,
            steps=self.stepsSpinBox.value,
            device=self.deviceComboBox.currentText,
        )

    def onStart(self, resume: bool) -> None:
        if self.process is not None:  # the Start button is "Stop" while running
            self.log("Stopping; the last checkpoint is kept for Resume.")
            self.process.cancel()
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the training.", waitCursor=True):
            from ICHSegmentation import ensureDependencies

            ensureDependencies()
            self.runState = runs.RunState()
            self.process = self.logic.startImprove(
                self.request(), resume=resume, onProgress=self.onProgress, onLog=self.log, onFinished=self.onFinished
            )
            self.startButton.text = "Stop"
            self.resumeButton.enabled = False
            self.progressBar.setValue(0)
            self.progressBar.show()
            self.pollTimer.start()

    def onPoll(self) -> None:
        if self.process is not None:
            self.process.poll()

    def onProgress(self, record: dict) -> None:
        self.runState.update(record)
        self.progressBar.setValue(int(round(100 * self.runState.fraction)))
        self.statusLabel.text = self.runState.status_text()
        if record.get("stage") in ("info", "done", "model") or record.get("step") is None:
            self.log(str(record.get("message", "")))

    def onFinished(self, outcome) -> None:
        self.pollTimer.stop()
        self.process = None
        self.startButton.text = "Start"
        self.progressBar.hide()
        request = self.request()
        self.resumeButton.enabled = outcome.cancelled and request.can_resume()
        if outcome.cancelled:
            resumable = " Resume continues from the last checkpoint." if request.can_resume() else ""
            self.statusLabel.text = "Stopped." + resumable
        elif not outcome.ok:
            self.statusLabel.text = "Failed: " + outcome.error_message().splitlines()[0]
            self.log(outcome.error_message())
        else:
            self.statusLabel.text = self.runState.status_text()
            if self.runState.promoted:
                slicer.util.showStatusMessage("New model version is current; ICH Segmentation lists it.", 5000)

    def log(self, message: str) -> None:
        if message:
            self.logEdit.appendPlainText(message)

    def enter(self) -> None:
        saved = qt.QSettings().value(cases.CASES_FOLDER_SETTING, "")
        if saved and saved != self.casesFolderEdit.currentPath:
            self.casesFolderEdit.currentPath = saved  # may have been chosen in ICH Segmentation
        self.refreshCases()

    def onCasesFolderChanged(self, path: str) -> None:
        qt.QSettings().setValue(cases.CASES_FOLDER_SETTING, path)
        self.refreshCases()

    def refreshCases(self) -> None:
        folder = self.casesFolderEdit.currentPath
        found = self.logic.listTrainingCases(folder) if folder else []
        self.casesTable.setRowCount(len(found))
        for row, case in enumerate(found):
            volumes = case.metadata.get("volumes_ml", {}) if case.complete else {}
            values = [
                case.name,
                "complete" if case.complete else case.problem,
                *(f"{volumes[key]:.2f}" if key in volumes else "" for key in ("ICH", "PHE", "IVH")),
                str(case.metadata.get("saved", "")),
            ]
            for column, value in enumerate(values):
                self.casesTable.setItem(row, column, qt.QTableWidgetItem(value))
        self.casesTable.resizeColumnsToContents()
        complete = sum(1 for case in found if case.complete)
        self.summaryLabel.text = f"{complete} complete case(s)" + (
            f", {len(found) - complete} incomplete" if len(found) > complete else ""
        )


class ICHTrainingLogic(SceneAccess, ScriptedLoadableModuleLogic):
    """Usable without a main window; the scene and Segmentations logic can be passed in (tests, scripts)."""

    def __init__(self, scene=None, segmentationsLogic=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.initSceneAccess(scene, segmentationsLogic)

    def saveTrainingCase(self, volumeNode, segmentationNode, outDir, caseName: str, sidecar=None) -> dict:
        """Save a CT and its corrected segmentation as a new case (see ``ICHTrainingLib.cases``)."""
        return cases.save_training_case(
            self.scene, self.segmentationsLogic, volumeNode, segmentationNode, outDir, caseName, sidecar
        )

    def listTrainingCases(self, folder) -> list:
        return cases.list_training_cases(folder)

    def startImprove(self, request, resume=False, onProgress=None, onLog=None, onFinished=None):
        """Start ``ichseg improve`` for ``request`` (``runs.ImproveRequest``) in a background process.

        Poll the returned process (QTimer) or call ``process.wait()`` without a GUI; ``process.cancel()``
        stops it and keeps the checkpoints, ``resume=True`` continues from them.
        """
        return BackgroundProcess(
            runs.improve_command(request, resume=resume),
            on_progress=onProgress,
            on_log=onLog,
            on_finished=onFinished,
            env=ichseg_environment(),
        ).start()


class ICHTrainingTest(ScriptedLoadableModuleTest):
    """Self-test in Slicer: save a small labelled CT as a training case and read it back."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SaveAndListCase()

    def test_SaveAndListCase(self) -> None:
        import numpy as np
        from ICHSegmentationLib import segments

        from ichseg import labels

        ct = np.full((12, 40, 48), 30, dtype=np.int16)
        label = np.zeros(ct.shape, dtype=np.uint8)
        label[4:8, 10:20, 10:22] = labels.PHE.value
        label[5:7, 12:18, 12:20] = labels.ICH.value
        label[2:4, 30:34, 30:36] = labels.IVH.value
        volume = slicer.util.addVolumeFromArray(ct, ijkToRAS=np.diag([0.5, 0.5, 5.0, 1.0]), name="CT")
        labelNode = slicer.util.addVolumeFromArray(
            label, ijkToRAS=np.diag([0.5, 0.5, 5.0, 1.0]), name="label", nodeClassName="vtkMRMLLabelMapVolumeNode"
        )
        logic = ICHTrainingLogic()
        segmentation = segments.import_labelmap_as_segments(
            slicer.mrmlScene, logic.segmentationsLogic, labelNode, volume
        )
        with tempfile.TemporaryDirectory() as folder:
            paths = logic.saveTrainingCase(volume, segmentation, folder, "selftest", {"source": "self-test"})
            self.assertTrue(os.path.isfile(paths["segmentation"]))
            with self.assertRaises(cases.CaseExistsError):
                logic.saveTrainingCase(volume, segmentation, folder, "selftest", {})
            found = logic.listTrainingCases(folder)
            self.assertEqual([case.name for case in found], ["selftest"])
            self.assertTrue(found[0].complete)
            saved = slicer.util.loadSegmentation(str(paths["segmentation"]))
            savedIds = [saved.GetSegmentation().GetNthSegmentID(i) for i in range(3)]
            self.assertEqual(savedIds, [cls.key for cls in labels.CLASSES])
            flat = segments.class_label_array(slicer.mrmlScene, logic.segmentationsLogic, saved, volume)
            np.testing.assert_array_equal(flat.label, label)
        self.delayDisplay("Test passed")
