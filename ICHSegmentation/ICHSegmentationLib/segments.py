"""Scene-in functions: ICH/PHE/IVH label maps to segments, and segments back to classes.

Every function takes the MRML scene and the Segmentations module logic as arguments
(``slicer.mrmlScene`` and ``slicer.modules.segmentations.logic()`` in Slicer; a bare
``vtkMRMLScene`` and ``vtkSlicerSegmentationsModuleLogic`` in tests), never the
application or Qt.

Segments are identified by class through their terminology first, then their name,
then their ID (:func:`segment_class`), never by their position in the segmentation.
Where segments of different classes overlap, :data:`OVERLAP_PRIORITY` decides, as in
:mod:`ichseg.io.segnrrd`: ICH over IVH over PHE.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from ichseg import labels

from .colors import color_table

__all__ = [
    "LABELMAP_REPRESENTATION",
    "OVERLAP_PRIORITY",
    "ClassLabel",
    "SegmentClasses",
    "class_label_array",
    "classify_segments",
    "grid_mismatch",
    "ijk_to_ras",
    "import_labelmap_as_segments",
    "labelmap_node_from_array",
    "place_beside",
    "read_labelmap_file",
    "segment_class",
    "set_class_metadata",
    "terminology_codes",
    "volume_array",
]

LABELMAP_REPRESENTATION = "Binary labelmap"
#: Which class keeps a voxel claimed by segments of several classes: earlier wins (same as ichseg.io.segnrrd).
OVERLAP_PRIORITY: tuple[labels.LabelClass, ...] = (labels.ICH, labels.IVH, labels.PHE)
_SNOMED_SCHEMES = ("SCT", "SRT", "SNM3")


# --------------------------------------------------------------------------- geometry and arrays


def ijk_to_ras(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _dimensions(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[int, int, int]:
    image = volume_node.GetImageData()
    if image is None:
        raise ValueError(f"volume '{volume_node.GetName()}' has no image data")
    return tuple(int(n) for n in image.GetDimensions())  # type: ignore[return-value]


def grid_mismatch(node: slicer.vtkMRMLVolumeNode, reference: slicer.vtkMRMLVolumeNode) -> str | None:
    """How ``node``'s voxel grid differs from ``reference``'s, or None when they agree.

    Tolerances as in :func:`ichseg.io._common.grid_mismatch`: they allow float32 geometry
    (NIfTI) but not a shifted or resampled grid.
    """
    dims, ref_dims = _dimensions(node), _dimensions(reference)
    if dims != ref_dims:
        return f"size {'x'.join(map(str, dims))} vs {'x'.join(map(str, ref_dims))}"
    a, b = ijk_to_ras(node), ijk_to_ras(reference)
    spacing, ref_spacing = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(spacing, ref_spacing, rtol=1e-5, atol=0):
        return f"spacing {tuple(np.round(spacing, 6))} vs {tuple(np.round(ref_spacing, 6))}"
    if not np.allclose(a[:3, :3] / spacing, b[:3, :3] / ref_spacing, rtol=0, atol=1e-5):
        return "axis directions differ"
    offset = float(np.max(np.abs(a[:3, 3] - b[:3, 3])))
    if offset > 1e-3 * float(ref_spacing.min()):
        return f"origin differs by {offset:.4g} mm"
    return None


def volume_array(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's voxels as a (k, j, i) = (z, y, x) numpy view (no copy)."""
    image = volume_node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{volume_node.GetName()}' has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume '{volume_node.GetName()}' has {image.GetNumberOfScalarComponents()} components")
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])


def labelmap_node_from_array(
    array_zyx: np.ndarray, reference: slicer.vtkMRMLVolumeNode
) -> slicer.vtkMRMLLabelMapVolumeNode:
    """A new (not yet added) uint8 labelmap node holding ``array_zyx`` on the reference's exact grid."""
    data = np.ascontiguousarray(array_zyx, dtype=np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(data.shape[2], data.shape[1], data.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(data.shape)
    view[...] = data
    node = slicer.vtkMRMLLabelMapVolumeNode()
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    return node


# --------------------------------------------------------------------------- identifying segments


def terminology_codes(terminology: str | None) -> tuple[str | None, str | None]:
    """SNOMED-CT code values (type, anatomic region) of a segment's ``TerminologyEntry`` tag.

    Reads Slicer's ``context~category~type~typeModifier~regionContext~region~regionModifier``
    string (each coded entry ``scheme^value^meaning``) and, for newer Slicer versions, a
    JSON object with ``type``/``anatomicRegion`` entries (``[scheme, value, meaning]`` or
    ``{"CodingSchemeDesignator", "CodeValue"}``).
    """
    if not terminology:
        return None, None
    text = terminology.strip()
    entries: dict[str, list[str]] = {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None, None
        for key, names in (("type", ("type",)), ("region", ("anatomicRegion", "region"))):
            value = next((data[n] for n in names if n in data), None)
            if isinstance(value, dict):
                value = [value.get("CodingSchemeDesignator", ""), value.get("CodeValue", "")]
            if isinstance(value, (list, tuple)):
                entries[key] = [str(v) for v in value]
    else:
        fields = text.split("~")
        if len(fields) > 2:
            entries["type"] = fields[2].split("^")
        if len(fields) > 5:
            entries["region"] = fields[5].split("^")

    def code(key: str) -> str | None:
        triplet = entries.get(key) or []
        if len(triplet) >= 2 and triplet[0].upper() in _SNOMED_SCHEMES and triplet[1]:
            return triplet[1]
        return None

    return code("type"), code("region")


def segment_class(segment_id: str, segment: slicer.vtkSegment) -> labels.LabelClass | None:
    """The class of a segment: by terminology, then name (:func:`ichseg.labels.match_segment`), then ID."""
    type_code, region_code = terminology_codes(segment.GetTerminology())
    cls = labels.match_segment(segment.GetName(), type_code, region_code)
    if cls is None:
        cls = labels.match_segment(segment_id)
    return cls


@dataclass
class SegmentClasses:
    """The segments of a segmentation, grouped by class (IDs in segmentation order)."""

    by_class: dict[str, list[str]] = field(default_factory=dict)  # class key -> segment IDs
    unknown: list[str] = field(default_factory=list)  # IDs of segments that are none of the classes
    names: dict[str, str] = field(default_factory=dict)  # segment ID -> name

    def describe_unknown(self) -> str:
        return ", ".join(f"'{self.names[i]}'" for i in self.unknown)


def classify_segments(segmentation_node: slicer.vtkMRMLSegmentationNode) -> SegmentClasses:
    """Group the segments of ``segmentation_node`` by class (see :func:`segment_class`)."""
    segmentation = segmentation_node.GetSegmentation()
    result = SegmentClasses(by_class={cls.key: [] for cls in labels.CLASSES})
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        result.names[segment_id] = segment.GetName()
        cls = segment_class(segment_id, segment)
        if cls is None:
            result.unknown.append(segment_id)
        else:
            result.by_class[cls.key].append(segment_id)
    return result


def set_class_metadata(segment: slicer.vtkSegment, cls: labels.LabelClass) -> None:
    """Give ``segment`` the scheme's name, colour and SNOMED terminology of ``cls``."""
    segment.SetName(cls.name)
    segment.SetColor(*cls.color_float)
    segment.SetTerminology(labels.slicer_terminology_string(cls))
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)


# --------------------------------------------------------------------------- segments to a class label


@dataclass
class ClassLabel:
    """A segmentation flattened to the label scheme on a reference volume's grid."""

    label: np.ndarray  # uint8 (z, y, x), values 0..3 of the scheme
    spacing: tuple[float, float, float]  # (x, y, z) in mm
    classes: SegmentClasses
    overlaps: dict[tuple[str, str], int] = field(default_factory=dict)  # (kept, lost) class keys -> voxels
    segment_voxels: dict[str, int] = field(default_factory=dict)  # segment ID -> voxels on the reference grid

    def messages(self) -> list[str]:
        notes = []
        if self.classes.unknown:
            notes.append(f"segments not recognised as ICH, PHE or IVH were left out: {self.classes.describe_unknown()}")
        for key, ids in self.classes.by_class.items():
            if len(ids) > 1:
                notes.append(f"{len(ids)} segments are {key}; their union is used")
        for (kept, lost), count in self.overlaps.items():
            notes.append(f"{count} voxel(s) are in both {kept} and {lost}; counted as {kept}")
        return notes


def _count(scene: slicer.vtkMRMLScene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLColorNode")


def _export_mask(
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    segment_ids: list[str],
    reference_volume_node: slicer.vtkMRMLVolumeNode,
    scratch: slicer.vtkMRMLLabelMapVolumeNode,
) -> np.ndarray:
    """Binary mask (z, y, x) of the union of ``segment_ids`` on the reference volume's grid."""
    scene = scratch.GetScene()
    color_ids = {scene.GetNthNodeByClass(i, "vtkMRMLColorNode").GetID() for i in range(_count(scene))}
    ok = segmentations_logic.ExportSegmentsToLabelmapNode(
        segmentation_node, segment_ids, scratch, reference_volume_node
    )
    # The export makes a colour table for the labelmap ("<segmentation>_ColorTable"); it is not wanted here.
    display = scratch.GetDisplayNode()
    color_id = display.GetColorNodeID() if display is not None else None
    if color_id and color_id not in color_ids and scene.GetNodeByID(color_id) is not None:
        scene.RemoveNode(scene.GetNodeByID(color_id))
    if not ok or scratch.GetImageData() is None:
        raise RuntimeError(f"Slicer could not export segments {segment_ids} of '{segmentation_node.GetName()}'")
    array = volume_array(scratch)
    expected = _dimensions(reference_volume_node)[::-1]
    if array.shape != expected:
        raise RuntimeError(f"exported labelmap has shape {array.shape}, expected {expected}")
    return array > 0


def class_label_array(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    reference_volume_node: slicer.vtkMRMLVolumeNode,
) -> ClassLabel:
    """Flatten the segmentation to the label scheme on the reference volume's grid.

    Each segment is exported on its own (Slicer resamples it onto the reference grid), its
    class found by :func:`segment_class`; several segments of one class are united, and
    overlaps between classes are resolved by :data:`OVERLAP_PRIORITY`.
    """
    classes = classify_segments(segmentation_node)
    shape = _dimensions(reference_volume_node)[::-1]
    masks: dict[str, np.ndarray] = {}
    segment_voxels: dict[str, int] = {}
    scratch = slicer.vtkMRMLLabelMapVolumeNode()
    scratch.SetHideFromEditors(True)
    scratch.SetName(scene.GenerateUniqueName("ICHSegmentation scratch"))
    scene.AddNode(scratch)
    try:
        for cls in labels.CLASSES:
            mask = np.zeros(shape, dtype=bool)
            for segment_id in classes.by_class[cls.key]:
                segment_mask = _export_mask(
                    segmentations_logic, segmentation_node, [segment_id], reference_volume_node, scratch
                )
                segment_voxels[segment_id] = int(np.count_nonzero(segment_mask))
                mask |= segment_mask
            masks[cls.key] = mask
    finally:
        display = scratch.GetDisplayNode()
        scene.RemoveNode(scratch)
        if display is not None and display.GetScene() is not None:
            scene.RemoveNode(display)

    overlaps: dict[tuple[str, str], int] = {}
    for i, high in enumerate(OVERLAP_PRIORITY):
        for low in OVERLAP_PRIORITY[i + 1 :]:
            count = int(np.count_nonzero(masks[high.key] & masks[low.key]))
            if count:
                overlaps[(high.key, low.key)] = count
    label = np.zeros(shape, dtype=np.uint8)
    for cls in reversed(OVERLAP_PRIORITY):
        label[masks[cls.key]] = cls.value
    spacing = tuple(float(s) for s in reference_volume_node.GetSpacing())
    return ClassLabel(label, spacing, classes, overlaps, segment_voxels)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reading and importing label maps


def read_labelmap_file(path: str | os.PathLike) -> slicer.vtkMRMLLabelMapVolumeNode:
    """Read a label map file (NRRD, NIfTI, MetaImage, ...) into a new labelmap node, not added to any scene."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"label map not found: {p}")
    node = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(p))
    storage.SetSingleFile(True)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise ValueError(f"cannot read label map {p}")
    node.SetName(p.name.split(".")[0])
    return node


def _read_segmentation_file(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    path: Path,
    reference_volume_node: slicer.vtkMRMLVolumeNode,
) -> ClassLabel:
    """A .seg.nrrd file flattened to the label scheme on the reference grid (via a temporary node)."""
    node = slicer.vtkMRMLSegmentationNode()
    node.SetHideFromEditors(True)
    scene.AddNode(node)
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise ValueError(f"cannot read segmentation {path}")
        return class_label_array(scene, segmentations_logic, node, reference_volume_node)
    finally:
        for i in reversed(range(node.GetNumberOfDisplayNodes())):
            display = node.GetNthDisplayNode(i)
            if display is not None:
                scene.RemoveNode(display)
        scene.RemoveNode(node)


def _checked_label_values(array: np.ndarray, source: str) -> np.ndarray:
    """``array`` as uint8 after checking it holds only label values of the scheme."""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{source}: label map has non-integer values")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{source}: label map has unsupported voxel type {array.dtype}")
    known = {0} | {cls.value for cls in labels.CLASSES}
    present = {int(v) for v in np.unique(array)}
    if not present <= known:
        keys = ", ".join(f"{cls.value} {cls.key}" for cls in labels.CLASSES)
        raise ValueError(
            f"{source}: label values {sorted(present - known)} are not in the scheme (0 background, {keys})"
        )
    return array.astype(np.uint8, copy=False)


def _fixed_segments(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """Make the segmentation hold one segment per class with ID = class key, in class order.

    Segments of a class under another ID (e.g. a previous result renamed by Slicer) are
    removed, since the import replaces each class; segments of no class are kept.
    """
    segmentation = segmentation_node.GetSegmentation()
    classes = classify_segments(segmentation_node)
    for cls in labels.CLASSES:
        for segment_id in classes.by_class[cls.key]:
            if segment_id != cls.key:
                segmentation.RemoveSegment(segment_id)
    ids = []
    for index, cls in enumerate(labels.CLASSES):
        segment = segmentation.GetSegment(cls.key)
        if segment is None:
            segment = slicer.vtkSegment()
            set_class_metadata(segment, cls)
            if not segmentation.AddSegment(segment, cls.key):
                raise RuntimeError(f"cannot add segment {cls.key} to '{segmentation_node.GetName()}'")
        set_class_metadata(segment, cls)
        segmentation.SetSegmentIndex(cls.key, index)
        ids.append(cls.key)
    return ids


def place_beside(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode, reference_node: slicer.vtkMRMLNode) -> int:
    """Put ``node`` under the subject hierarchy parent (study, folder or scene) of ``reference_node``.

    Returns the node's subject hierarchy item ID.
    """
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    invalid = sh.GetInvalidItemID()
    reference_item = sh.GetItemByDataNode(reference_node)
    if reference_item == invalid:
        reference_item = sh.CreateItem(sh.GetSceneItemID(), reference_node)
    parent = sh.GetItemParent(reference_item)
    item = sh.GetItemByDataNode(node)
    if item == invalid:
        item = sh.CreateItem(parent, node)
    else:
        sh.SetItemParent(item, parent)
    return item


def import_labelmap_as_segments(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    label_node_or_file: slicer.vtkMRMLLabelMapVolumeNode | slicer.vtkMRMLScalarVolumeNode | str | os.PathLike,
    reference_volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """Import an ICH/PHE/IVH label map (node or file) as segments ``ICH``, ``PHE``, ``IVH``.

    The label must lie on the reference volume's voxel grid (as ``ichseg segment`` writes
    it) and hold only scheme values.  A ``.seg.nrrd`` file is read by segment name and
    terminology instead.  The segments get fixed IDs (the class keys), names, colours and
    SNOMED terminology from :mod:`ichseg.labels`; all three exist even when empty.  The
    segmentation (new, or ``segmentation_node`` whose ICH/PHE/IVH segments are replaced)
    takes its reference geometry and parent transform from the volume and is placed
    beside the volume (its study) in the subject hierarchy.
    """
    if reference_volume_node is None or reference_volume_node.GetImageData() is None:
        raise ValueError("a reference CT volume with image data is required")
    if isinstance(label_node_or_file, (str, os.PathLike)):
        path = Path(label_node_or_file)
        source = str(path)
        if path.name.lower().endswith(".seg.nrrd"):
            array = _read_segmentation_file(scene, segmentations_logic, path, reference_volume_node).label
        else:
            node = read_labelmap_file(path)
            problem = grid_mismatch(node, reference_volume_node)
            if problem:
                raise ValueError(
                    f"{source}: label map grid does not match '{reference_volume_node.GetName()}': {problem}"
                )
            array = volume_array(node)
    else:
        source = label_node_or_file.GetName() or "label map"
        problem = grid_mismatch(label_node_or_file, reference_volume_node)
        if problem:
            raise ValueError(f"{source}: label map grid does not match '{reference_volume_node.GetName()}': {problem}")
        array = volume_array(label_node_or_file)
    labelmap = labelmap_node_from_array(_checked_label_values(array, source), reference_volume_node)
    colors = color_table(scene)

    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{reference_volume_node.GetName()} ICH segmentation")
        )
    # Same parent transform as the CT, so that the label lands on the CT's voxels wherever the CT is moved.
    transform_id = reference_volume_node.GetTransformNodeID()
    segmentation_node.SetAndObserveTransformNodeID(transform_id)
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation_node.SetLabelmapConversionColorTableNodeID(colors.GetID())
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()

    labelmap.SetHideFromEditors(True)
    labelmap.SetName(scene.GenerateUniqueName("ICHSegmentation import"))
    scene.AddNode(labelmap)
    try:
        labelmap.SetAndObserveTransformNodeID(transform_id)
        segment_ids = vtk.vtkStringArray()
        ids = _fixed_segments(segmentation_node)
        # ImportLabelmapToSegmentationNode maps label value i + 1 to the i-th ID of the array.
        by_value = {cls.value: cls.key for cls in labels.CLASSES}
        for value in range(1, max(by_value) + 1):
            segment_ids.InsertNextValue(by_value.get(value, ""))
        if not segmentations_logic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node, segment_ids):
            raise RuntimeError(f"Slicer could not import {source} into '{segmentation_node.GetName()}'")
    finally:
        display = labelmap.GetDisplayNode()
        scene.RemoveNode(labelmap)
        if display is not None and display.GetScene() is not None:
            scene.RemoveNode(display)
    segmentation = segmentation_node.GetSegmentation()
    for cls in labels.CLASSES:  # the import keeps metadata, but make sure of it
        set_class_metadata(segmentation.GetSegment(cls.key), cls)
    if ids != [cls.key for cls in labels.CLASSES]:
        raise RuntimeError(f"unexpected segment IDs {ids}")
    place_beside(scene, segmentation_node, reference_volume_node)
    return segmentation_node
