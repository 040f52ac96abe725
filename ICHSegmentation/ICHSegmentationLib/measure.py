"""Volumes of ICH/PHE/IVH segments: flatten to the label scheme on the CT grid, then :func:`ichseg.volumes.measure`."""

from __future__ import annotations

import math

import numpy as np
import slicer
import vtk

from ichseg import labels, volumes

from .segments import class_label_array

__all__ = [
    "TABLE_COLUMNS",
    "csv_text",
    "segment_volumes",
    "summary_text",
    "volumes_table",
]

#: Column names of the volumes table, one row per class.
TABLE_COLUMNS = ("Segment", "Volume (mL)", "Lesions", "Voxels")
RATIO_ATTRIBUTE = "ICHSegmentation.PHE_ICH_ratio"
ABC2_ATTRIBUTE = "ICHSegmentation.ICH_ABC2_mL"


def segment_volumes(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    reference_volume_node: slicer.vtkMRMLVolumeNode,
    notes: list[str] | None = None,
) -> volumes.Measurements:
    """Measure the segmentation on the reference volume's grid.

    Segments are mapped to classes by terminology, name, then ID (never by order), exported
    onto the reference grid by Slicer, united per class, overlaps resolved ICH > IVH > PHE;
    the resulting label goes to :func:`ichseg.volumes.measure`.  Remarks (unrecognised
    segments, overlaps) are appended to ``notes`` when given.
    """
    flat = class_label_array(scene, segmentations_logic, segmentation_node, reference_volume_node)
    if notes is not None:
        notes.extend(flat.messages())
    return volumes.measure(flat.label, flat.spacing)


def volumes_table(
    scene: slicer.vtkMRMLScene,
    measurements: volumes.Measurements,
    table_node: slicer.vtkMRMLTableNode | None = None,
) -> slicer.vtkMRMLTableNode:
    """Fill (or create) a table node: one row per class with volume (mL), lesion count and voxel count.

    The PHE/ICH ratio and the ICH ABC/2 volume are stored as node attributes
    (``ICHSegmentation.PHE_ICH_ratio``, ``ICHSegmentation.ICH_ABC2_mL``; empty when undefined).
    """
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("ICH volumes"))
    was_modifying = table_node.StartModify()
    try:
        table_node.SetLocked(False)
        table_node.RemoveAllColumns()
        table = table_node.GetTable()
        names, ml, lesions, voxels = vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkIntArray(), vtk.vtkIntArray()
        for array, title in zip((names, ml, lesions, voxels), TABLE_COLUMNS, strict=True):
            array.SetName(title)
        for cls in labels.CLASSES:
            cm = measurements.classes[cls.key]
            names.InsertNextValue(cls.name)
            ml.InsertNextValue(cm.volume_ml)
            lesions.InsertNextValue(cm.lesions)
            voxels.InsertNextValue(cm.voxels)
        for array in (names, ml, lesions, voxels):
            table.AddColumn(array)
        table_node.SetColumnUnitLabel(TABLE_COLUMNS[1], "mL")
        table_node.SetColumnDescription(TABLE_COLUMNS[1], "voxel count x voxel volume")
        table_node.SetColumnDescription(TABLE_COLUMNS[2], "26-connected components")
        ratio = measurements.phe_ich_ratio
        table_node.SetAttribute(RATIO_ATTRIBUTE, "" if ratio is None else repr(ratio))
        abc2 = measurements.ich_abc2
        table_node.SetAttribute(ABC2_ATTRIBUTE, "" if abc2 is None else repr(abc2.volume_ml))
        table_node.SetLocked(True)
        table_node.Modified()
    finally:
        table_node.EndModify(was_modifying)
    return table_node


def summary_text(measurements: volumes.Measurements) -> str:
    """One line with the total volumes, PHE/ICH ratio and ICH ABC/2, for the module panel."""
    parts = [f"{cls.key} {measurements.classes[cls.key].volume_ml:.2f} mL" for cls in labels.CLASSES]
    ratio = measurements.phe_ich_ratio
    if ratio is not None and math.isfinite(ratio):
        parts.append(f"PHE/ICH {ratio:.2f}")
    if measurements.ich_abc2 is not None:
        parts.append(f"ICH ABC/2 {measurements.ich_abc2.volume_ml:.2f} mL")
    return "; ".join(parts)


def csv_text(case_name: str, measurements: volumes.Measurements) -> str:
    """CSV text (header + one row) in the column layout of ``ichseg volumes``."""
    return volumes.measurements_csv([(case_name, measurements)])


def edit_summary(draft: np.ndarray, final: np.ndarray, voxel_volume_ml: float) -> dict:
    """What the user changed between the model's draft and the saved label map (same grid).

    Per class: voxels (and mL) added and removed, and the Dice between draft and final, so a
    training case records how much correcting it needed.
    """
    if draft.shape != final.shape:
        raise ValueError(f"draft {draft.shape} and final {final.shape} label maps differ in shape")
    out: dict = {"changed_voxels": int(np.count_nonzero(draft != final)), "classes": {}}
    for cls in labels.CLASSES:
        d, f = draft == cls.value, final == cls.value
        added, removed = int(np.count_nonzero(f & ~d)), int(np.count_nonzero(d & ~f))
        total = int(np.count_nonzero(d)) + int(np.count_nonzero(f))
        out["classes"][cls.key] = {
            "added_voxels": added,
            "removed_voxels": removed,
            "added_ml": added * voxel_volume_ml,
            "removed_ml": removed * voxel_volume_ml,
            "dice_draft_final": 1.0 if total == 0 else 2.0 * int(np.count_nonzero(d & f)) / total,
        }
    out["edited"] = out["changed_voxels"] > 0
    return out


def editing_record(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    volume_node: slicer.vtkMRMLVolumeNode,
    draft: np.ndarray | None,
    draft_model: str | None,
) -> dict:
    """Sidecar fields of a training case: the model of the first draft and the editing done since."""
    record: dict = {"draft_model": draft_model}
    if draft is None:
        record["editing"] = None  # not drafted by a model in this session (imported or drawn by hand)
        return record
    final = class_label_array(scene, segmentations_logic, segmentation_node, volume_node)
    voxel_ml = float(np.prod(final.spacing)) / 1000.0
    record["editing"] = edit_summary(draft, final.label, voxel_ml)
    return record
