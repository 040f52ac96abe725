"""The result in the user's hands: the edits that change the measurements, and saving it corrected.

:func:`segmentation_events` are what the panel observes to re-measure after Segment Editor
edits; :func:`save_training_case` saves the corrected result as a training case together
with the editing done since the model's draft.  Functions take the scene and logics as
arguments: they run in Slicer and under slicer-core alike.
"""

from __future__ import annotations

import re

import numpy as np
import slicer

from . import measure

__all__ = ["safe_name", "save_training_case", "segmentation_events", "training_sidecar"]


def segmentation_events() -> list[int]:
    """Events of a segmentation node that change what is measured."""
    source = getattr(slicer.vtkSegmentation, "SourceRepresentationModified", None)
    if source is None:  # Slicer < 5.4
        source = slicer.vtkSegmentation.MasterRepresentationModified
    return [
        source,
        slicer.vtkSegmentation.SegmentAdded,
        slicer.vtkSegmentation.SegmentRemoved,
        slicer.vtkSegmentation.SegmentModified,
    ]


def safe_name(text: str) -> str:
    """``text`` reduced to a file/case name: letters, digits, ``._-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "case"


def training_sidecar(
    volume_node: slicer.vtkMRMLVolumeNode, segmentation_node: slicer.vtkMRMLSegmentationNode, slicer_version: str
) -> dict:
    """Sidecar fields of a training case saved from the module panel."""
    return {
        "source": "ICHSegmentation",
        "ct_name": volume_node.GetName(),
        "segmentation_name": segmentation_node.GetName(),
        "slicer_version": slicer_version,
    }


def save_training_case(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    out_dir,
    case_name: str,
    sidecar: dict | None,
    draft: np.ndarray | None,
    draft_model: str | None,
) -> dict:
    """Save a training case (``ICHTrainingLib.cases``) whose sidecar records the editing since ``draft``."""
    from ICHTrainingLib import cases

    sidecar = dict(sidecar or {})
    sidecar.update(
        measure.editing_record(scene, segmentations_logic, segmentation_node, volume_node, draft, draft_model)
    )
    return cases.save_training_case(
        scene, segmentations_logic, volume_node, segmentation_node, out_dir, case_name, sidecar
    )
