"""ICH Training: the training cases corrected in Slicer (and, later, fine-tuning a model on them).

Thin and headless-capable: :class:`ICHTrainingLogic` needs no main window, e.g.
``Slicer --no-main-window --python-code "import ICHTraining; ICHTraining.ICHTrainingLogic().listTrainingCases(...)"``.
The work is done by ``ICHTrainingLib`` (scene-in functions, testable with slicer-core).
"""

import os
import tempfile

import ctk
import qt
import slicer
from ICHTrainingLib import cases
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
        self.layout.addStretch(1)

        self.casesFolderEdit.connect("currentPathChanged(QString)", self.onCasesFolderChanged)
        self.refreshButton.connect("clicked(bool)", self.refreshCases)
        self.refreshCases()

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


class ICHTrainingLogic(ScriptedLoadableModuleLogic):
    """Usable without a main window; the scene and Segmentations logic can be passed in (tests, scripts)."""

    def __init__(self, scene=None, segmentationsLogic=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene = scene
        self._segmentationsLogic = segmentationsLogic

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    @property
    def segmentationsLogic(self):
        if self._segmentationsLogic is None:
            self._segmentationsLogic = slicer.modules.segmentations.logic()
        return self._segmentationsLogic

    def saveTrainingCase(self, volumeNode, segmentationNode, outDir, caseName: str, sidecar=None) -> dict:
        """Save a CT and its corrected segmentation as a new case (see ``ICHTrainingLib.cases``)."""
        return cases.save_training_case(
            self.scene, self.segmentationsLogic, volumeNode, segmentationNode, outDir, caseName, sidecar
        )

    def listTrainingCases(self, folder) -> list:
        return cases.list_training_cases(folder)


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
