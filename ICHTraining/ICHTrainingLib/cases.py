"""Training cases corrected in Slicer: a folder per case with the CT, the segmentation and a JSON sidecar.

Layout (``CASE_FILES``)::

    <out_dir>/<case_name>/ct.nrrd                 the CT as loaded in Slicer (vtkMRMLVolumeArchetypeStorageNode)
    <out_dir>/<case_name>/segmentation.seg.nrrd   segments ICH, PHE, IVH (IDs, names, colours, SNOMED terminology,
                                                  label values 1, 2, 3 in one layer) on the CT grid
    <out_dir>/<case_name>/case.json               the caller's sidecar + what was saved

Segments are identified by terminology, then name (:func:`ichseg.labels.match_segment`),
then ID, never by order; the saved segmentation is rebuilt from that mapping, so segments
reordered, renamed back, or deleted and re-added in Segment Editor are saved correctly.
A case is written into a hidden temporary folder that is renamed into place only when
complete, and an existing case is never overwritten.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from ICHSegmentationLib.segments import (
    LABELMAP_REPRESENTATION,
    class_label_array,
    classify_segments,
    ijk_to_ras,
    import_labelmap_as_segments,
    labelmap_node_from_array,
)
from vtkmodules.util import numpy_support

from ichseg import __version__ as ichseg_version
from ichseg import labels, volumes
from ichseg.fileutil import make_readable

__all__ = [
    "CASES_FOLDER_SETTING",
    "CASE_FILES",
    "CT_FILE",
    "SEGMENTATION_FILE",
    "SIDECAR_FILE",
    "CaseExistsError",
    "TrainingCase",
    "list_training_cases",
    "save_training_case",
    "validate_case_name",
]

CT_FILE = "ct.nrrd"
SEGMENTATION_FILE = "segmentation.seg.nrrd"
SIDECAR_FILE = "case.json"
CASE_FILES = (CT_FILE, SEGMENTATION_FILE, SIDECAR_FILE)
#: Settings key under which the Slicer modules remember the folder of training cases.
CASES_FOLDER_SETTING = "ICHSegmentation/TrainingCasesFolder"
#: Sidecar keys written by :func:`save_training_case`; a caller's sidecar may not use them.
RESERVED_KEYS = ("case", "files", "saved", "ichseg_version", "label_values", "segments", "geometry", "volumes_ml")
_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_GEOMETRY_PARAMETER = "Reference image geometry"


class CaseExistsError(FileExistsError):
    """A training case of that name already exists; it is never overwritten."""


def validate_case_name(case_name: str) -> str:
    """``case_name`` if it is a safe folder name (letters, digits, ``._-``, no leading ``.``), else ValueError."""
    if not isinstance(case_name, str) or not _CASE_NAME.match(case_name) or case_name.endswith((".", " ")):
        raise ValueError(
            f"invalid case name {case_name!r}: "
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return case_name


# --------------------------------------------------------------------------- checks


def _matrix(vtk_matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _lattice_problem(image_to_world: np.ndarray, ct_ijk_to_ras: np.ndarray) -> str | None:
    """How a labelmap's voxel lattice differs from the CT's (None: same spacing/axes, origin on a CT voxel)."""
    spacing, ct_spacing = np.linalg.norm(image_to_world[:3, :3], axis=0), np.linalg.norm(ct_ijk_to_ras[:3, :3], axis=0)
    if not np.allclose(spacing, ct_spacing, rtol=1e-5, atol=0):
        return f"spacing {tuple(np.round(spacing, 6))} vs the CT's {tuple(np.round(ct_spacing, 6))}"
    if not np.allclose(image_to_world[:3, :3] / spacing, ct_ijk_to_ras[:3, :3] / ct_spacing, rtol=0, atol=1e-5):
        return "axis directions differ from the CT's"
    shift = np.linalg.solve(ct_ijk_to_ras[:3, :3], image_to_world[:3, 3] - ct_ijk_to_ras[:3, 3])
    if np.max(np.abs(shift - np.round(shift))) > 1e-3:
        return "voxels are shifted against the CT's voxels"
    return None


def _check_geometry(
    volume_node: slicer.vtkMRMLScalarVolumeNode, segmentation_node: slicer.vtkMRMLSegmentationNode
) -> None:
    """Raise ValueError unless the segmentation lies on the CT's voxel grid (see :func:`save_training_case`)."""
    name = segmentation_node.GetName()
    ct_name = volume_node.GetName()
    # Both files are written in the CT's own (untransformed) frame, so both nodes must share their transform.
    if volume_node.GetTransformNodeID() != segmentation_node.GetTransformNodeID():
        raise ValueError(
            f"'{ct_name}' and '{name}' are under different transforms; put them under the same one or harden them"
        )
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSourceRepresentationName() != LABELMAP_REPRESENTATION:
        raise ValueError(f"'{name}' is not edited as a binary labelmap; it cannot be saved as a training case")
    ct = ijk_to_ras(volume_node)
    dims = volume_node.GetImageData().GetDimensions()
    geometry = segmentation.GetConversionParameter(_GEOMETRY_PARAMETER)
    if geometry:
        matrix, extent = vtk.vtkMatrix4x4(), [0, -1, 0, -1, 0, -1]
        if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, matrix, extent):
            raise ValueError(f"'{name}' has an unreadable reference geometry")
        problem = _lattice_problem(_matrix(matrix), ct)
        if problem is None and not np.allclose(_matrix(matrix)[:3, 3], ct[:3, 3], rtol=0, atol=1e-3):
            problem = "origin differs"
        if problem is None and list(extent) != [0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1]:
            problem = f"extent {list(extent)} vs the CT's {[0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1]}"
        if problem:
            raise ValueError(f"'{name}' was made on another image than '{ct_name}': reference geometry {problem}")
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        image = segmentation.GetSegment(segment_id).GetRepresentation(LABELMAP_REPRESENTATION)
        extent = image.GetExtent() if image is not None else (0, -1, 0, -1, 0, -1)
        if image is None or extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
            continue  # an empty segment has no voxels to misplace
        image_to_world = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(image_to_world)
        problem = _lattice_problem(_matrix(image_to_world), ct)
        if problem:
            segment_name = segmentation.GetSegment(segment_id).GetName()
            raise ValueError(
                f"segment '{segment_name}' of '{name}' does not lie on the voxel grid of '{ct_name}': {problem}"
            )


def _segment_voxels(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str) -> int:
    """Voxels of one segment in its own labelmap (before any export onto the CT grid)."""
    image = slicer.vtkOrientedImageData()
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image):
        return 0
    scalars = image.GetPointData().GetScalars()
    if scalars is None or image.GetNumberOfPoints() == 0:
        return 0
    return int(np.count_nonzero(numpy_support.vtk_to_numpy(scalars)))


# --------------------------------------------------------------------------- saving


def _write_volume(volume_node: slicer.vtkMRMLVolumeNode, path: Path) -> None:
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    if not storage.WriteData(volume_node) or not path.is_file():
        raise OSError(f"cannot write {path}")


def _write_segmentation(segmentation_node: slicer.vtkMRMLSegmentationNode, path: Path) -> None:
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    storage.SetCropToMinimumExtent(False)
    if not storage.WriteData(segmentation_node) or not path.is_file():
        raise OSError(f"cannot write {path}")


def _remove_with_display(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode) -> None:
    displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    scene.RemoveNode(node)
    for display in displays:
        if display is not None and display.GetScene() is not None:
            scene.RemoveNode(display)


def save_training_case(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    out_dir: str | os.PathLike,
    case_name: str,
    sidecar: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Save the CT and its corrected segmentation as a new training case ``out_dir/case_name``.

    Refuses (ValueError) a segmentation that is not on the CT's voxel grid (other reference
    geometry, resampled or shifted segments, content outside the CT, another parent
    transform than the CT's; both files are written in the CT's own frame), that has segments
    which are not ICH, PHE or IVH, or that has none of them; refuses (:class:`CaseExistsError`)
    an existing case.  ``sidecar`` (JSON-serialisable) is stored in ``case.json`` with the
    saved files, segment mapping, geometry and class volumes.  Returns the paths by
    ``"folder"``, ``"ct"``, ``"segmentation"``, ``"sidecar"``.
    """
    validate_case_name(case_name)
    sidecar = dict(sidecar or {})
    reserved = sorted(set(sidecar) & set(RESERVED_KEYS))
    if reserved:
        raise ValueError(f"sidecar keys {reserved} are reserved")
    json.dumps(sidecar)  # fail before writing anything if it cannot be stored
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("a CT volume with image data is required")
    if segmentation_node is None:
        raise ValueError("a segmentation is required")
    out = Path(out_dir)
    final = out / case_name
    if final.exists():
        raise CaseExistsError(f"training case '{case_name}' already exists in {out}; choose another name")

    _check_geometry(volume_node, segmentation_node)
    classes = classify_segments(segmentation_node)
    if classes.unknown:
        raise ValueError(
            f"segments {classes.describe_unknown()} of '{segmentation_node.GetName()}' are not ICH, PHE or IVH; "
            "rename them (or set their terminology) or delete them"
        )
    if not any(classes.by_class.values()):
        raise ValueError(f"'{segmentation_node.GetName()}' has no ICH, PHE or IVH segment")
    flat = class_label_array(scene, segmentations_logic, segmentation_node, volume_node)
    for segment_id, on_grid in flat.segment_voxels.items():
        own = _segment_voxels(segmentation_node, segment_id)
        if own != on_grid:
            raise ValueError(
                f"segment '{classes.names[segment_id]}' has {own - on_grid} voxel(s) outside '{volume_node.GetName()}'"
            )

    measurements = volumes.measure(flat.label, flat.spacing)
    matrix = ijk_to_ras(volume_node)
    record: dict[str, Any] = {
        **sidecar,
        "case": case_name,
        "files": {"ct": CT_FILE, "segmentation": SEGMENTATION_FILE},
        "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "ichseg_version": ichseg_version,
        "label_values": {cls.key: cls.value for cls in labels.CLASSES},
        "segments": [
            {"id": segment_id, "name": classes.names[segment_id], "class": key}
            for key, ids in classes.by_class.items()
            for segment_id in ids
        ],
        "geometry": {
            "size": list(volume_node.GetImageData().GetDimensions()),
            "spacing": list(volume_node.GetSpacing()),
            "ijk_to_ras": matrix.tolist(),
        },
        "volumes_ml": {key: cm.volume_ml for key, cm in measurements.classes.items()},
    }

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{case_name}.", suffix=".tmp", dir=out))
    clean = None
    try:
        _write_volume(volume_node, tmp / CT_FILE)
        clean = import_labelmap_as_segments(
            scene,
            segmentations_logic,
            labelmap_node_from_array(flat.label, volume_node),
            volume_node,
            _hidden_segmentation(scene, case_name),
        )
        _write_segmentation(clean, tmp / SEGMENTATION_FILE)
        (tmp / SIDECAR_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            raise CaseExistsError(f"training case '{case_name}' already exists in {out}; choose another name")
        make_readable(tmp)  # mkdtemp made it private
        try:
            os.rename(tmp, final)  # fails if a non-empty folder appeared meanwhile
        except OSError as exc:
            raise CaseExistsError(f"cannot create training case '{case_name}' in {out}: {exc.strerror}") from exc
    finally:
        if clean is not None:
            sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
            item = sh.GetItemByDataNode(clean)
            if item != sh.GetInvalidItemID():
                sh.RemoveItem(item, False, False)
            _remove_with_display(scene, clean)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "folder": final,
        "ct": final / CT_FILE,
        "segmentation": final / SEGMENTATION_FILE,
        "sidecar": final / SIDECAR_FILE,
    }


def _hidden_segmentation(scene: slicer.vtkMRMLScene, case_name: str) -> slicer.vtkMRMLSegmentationNode:
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(f"{case_name} (saving)")
    node.SetHideFromEditors(True)
    scene.AddNode(node)
    return node


# --------------------------------------------------------------------------- listing


@dataclass
class TrainingCase:
    """One case folder; ``problem`` says why it cannot be used (None when complete)."""

    name: str
    folder: Path
    ct: Path
    segmentation: Path
    sidecar: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None


def list_training_cases(folder: str | os.PathLike) -> list[TrainingCase]:
    """The case folders in ``folder``, sorted by name (hidden and temporary folders skipped).

    Incomplete cases (a file missing, unreadable sidecar) are listed with ``problem`` set.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    cases = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        case = TrainingCase(sub.name, sub, sub / CT_FILE, sub / SEGMENTATION_FILE, sub / SIDECAR_FILE)
        missing = [name for name in CASE_FILES if not (sub / name).is_file()]
        if missing:
            case.problem = f"missing {', '.join(missing)}"
        else:
            try:
                metadata = json.loads(case.sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                case.problem = f"unreadable {SIDECAR_FILE}: {exc}"
            else:
                if isinstance(metadata, dict):
                    case.metadata = metadata
                else:
                    case.problem = f"{SIDECAR_FILE} is not a JSON object"
        cases.append(case)
    return cases
