"""The module logic without the application: what ``ICHSegmentation.ICHSegmentationLogic`` does.

:class:`SegmentationLogic` works on an injected scene and Segmentations logic (tests, scripts)
or on Slicer's; each method delegates to a function of this package.  The module's
``ICHSegmentationLogic`` adds Slicer's ``ScriptedLoadableModuleLogic`` (the parameter node).
"""

from __future__ import annotations

from . import editing, job, measure, segments
from .sceneaccess import SceneAccess

__all__ = ["SegmentationLogic"]


class SegmentationLogic(SceneAccess):
    """Segment, import, measure, export and save for training; the scene and Segmentations logic can be passed in."""

    def __init__(self, scene=None, segmentationsLogic=None) -> None:
        self.initSceneAccess(scene, segmentationsLogic)
        self._drafts = {}  # segmentation node ID -> (model ref, label array of the model's draft)

    def startSegmentation(
        self, volumeNode, model="current", device="auto", quality="auto", onProgress=None, onLog=None, onFinished=None
    ):
        """Write the CT and start ``ichseg segment`` in a background process; returns (job, process).

        The caller polls ``process.poll()`` (a QTimer in the widget) or calls ``process.wait()``
        (no GUI), then calls :meth:`finishSegmentation` on success and ``job.cleanup()`` always.
        """
        return job.start_segmentation(
            volumeNode, model=model, device=device, quality=quality,
            on_progress=onProgress, on_log=onLog, on_finished=onFinished,
        )  # fmt: skip

    def finishSegmentation(self, segmentationJob, volumeNode, segmentationNode=None):
        """Import a finished run's result as segments ICH/PHE/IVH; returns the segmentation node.

        The draft is remembered, so that a training case saved later records the editing done.
        """
        node = job.import_result(self.scene, self.segmentationsLogic, segmentationJob, volumeNode, segmentationNode)
        draft = segments.class_label_array(self.scene, self.segmentationsLogic, node, volumeNode).label
        self._drafts[node.GetID()] = (node.GetAttribute("ICHSegmentation.Model"), draft)
        return node

    def showIn3D(self, segmentationNode, show: bool = True) -> None:
        """Closed-surface (3D) display of the segments on or off."""
        if show:
            segmentationNode.CreateClosedSurfaceRepresentation()
        else:
            segmentationNode.RemoveClosedSurfaceRepresentation()

    def importLabelmap(self, labelmap, referenceVolume, segmentationNode=None):
        """Import a label map (node or file) as segments ICH, PHE, IVH; returns the segmentation node."""
        return segments.import_labelmap_as_segments(
            self.scene, self.segmentationsLogic, labelmap, referenceVolume, segmentationNode
        )

    def computeVolumes(self, segmentationNode, referenceVolume, notes=None):
        """Volumes of the segments on the CT grid (``ichseg.volumes.Measurements``)."""
        return measure.segment_volumes(self.scene, self.segmentationsLogic, segmentationNode, referenceVolume, notes)

    def updateVolumesTable(self, measurements, tableNode=None):
        return measure.volumes_table(self.scene, measurements, tableNode)

    def writeCsv(self, path: str, caseName: str, measurements) -> None:
        from ichseg.fileutil import write_text_atomic

        write_text_atomic(path, measure.csv_text(caseName, measurements))

    def saveTrainingCase(self, volumeNode, segmentationNode, outDir, caseName: str, sidecar=None) -> dict:
        """Save a training case; its sidecar records the editing since the model's draft (if drafted here)."""
        model, draft = self._drafts.get(
            segmentationNode.GetID(), (segmentationNode.GetAttribute("ICHSegmentation.Model"), None)
        )
        return editing.save_training_case(
            self.scene, self.segmentationsLogic, volumeNode, segmentationNode, outDir, caseName, sidecar, draft, model
        )
