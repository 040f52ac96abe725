"""A segmentation run for one CT node: write the input, build the command, import the result.

The run itself happens in a background process (:mod:`ICHSegmentationLib.process`)
running ``ichseg segment``; this module is the MRML side around it.  The CT is written
on its own voxel grid (a parent transform is not applied, the result gets the same
transform), and the result is imported only after the process succeeded, so a failed
or cancelled run leaves nothing in the scene.  Functions take the scene and logics as
arguments: they run in Slicer and under slicer-core alike.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import slicer

from . import segments
from .process import QUALITIES, BackgroundProcess, ichseg_command, ichseg_environment

__all__ = ["DEVICE_ARGUMENTS", "SegmentationJob", "import_result", "prepare_segmentation", "start_segmentation"]

#: Device choice of the panel -> ``ichseg segment --device``.
DEVICE_ARGUMENTS = {"auto": "auto", "CPU": "cpu", "GPU": "cuda"}
CASE_NAME = "input"


@dataclass
class SegmentationJob:
    """Files and command line of one run; :meth:`cleanup` removes the work folder."""

    work_dir: Path
    input_path: Path
    output_dir: Path
    args: list[str]
    model: str
    warnings: list[str] = field(default_factory=list)

    @property
    def labels_path(self) -> Path:
        return self.output_dir / f"{CASE_NAME}_labels.nii.gz"

    @property
    def volumes_path(self) -> Path:
        return self.output_dir / f"{CASE_NAME}_volumes.json"

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def write_volume(volume_node: slicer.vtkMRMLScalarVolumeNode, path: Path) -> None:
    """Write a scalar volume with its geometry (not its parent transform) to ``path``."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # a temporary file: speed over size
    if not storage.WriteData(volume_node) or not path.is_file():
        raise OSError(f"cannot write the CT to {path}")


def prepare_segmentation(
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    *,
    model: str = "current",
    device: str = "auto",
    quality: str = "auto",
    work_root: str | os.PathLike | None = None,
    python: str | None = None,
    extra_args: list[str] | None = None,
) -> SegmentationJob:
    """Write ``volume_node`` to a fresh work folder and build the ``ichseg segment`` command."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("select a CT volume with image data")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"'{volume_node.GetName()}' is a label map, not a CT")
    if device not in DEVICE_ARGUMENTS:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_ARGUMENTS)}")
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}")
    work_dir = Path(tempfile.mkdtemp(prefix="ICHSegmentation-", dir=work_root))
    try:
        input_path = work_dir / f"{CASE_NAME}.nrrd"
        write_volume(volume_node, input_path)
        output_dir = work_dir / "output"
        args = ichseg_command(
            "segment",
            str(input_path),
            "-o",
            str(output_dir),
            "--model",
            model or "current",
            "--device",
            DEVICE_ARGUMENTS[device],
            "--quality",
            quality,
            "--no-overlay",
            *(extra_args or []),
            python=python,
        )
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return SegmentationJob(work_dir=work_dir, input_path=input_path, output_dir=output_dir, args=args, model=model)


def start_segmentation(
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    *,
    model: str = "current",
    device: str = "auto",
    quality: str = "auto",
    on_progress=None,
    on_log=None,
    on_finished=None,
) -> tuple[SegmentationJob, BackgroundProcess]:
    """:func:`prepare_segmentation`, then start its command in a :class:`BackgroundProcess`.

    The work folder is removed when the process cannot start; else the caller calls ``job.cleanup()``.
    """
    segmentation_job = prepare_segmentation(volume_node, model=model, device=device, quality=quality)
    try:
        process = BackgroundProcess(
            segmentation_job.args,
            on_progress=on_progress,
            on_log=on_log,
            on_finished=on_finished,
            env=ichseg_environment(),
        ).start()
    except BaseException:
        segmentation_job.cleanup()
        raise
    return segmentation_job, process


def import_result(
    scene: slicer.vtkMRMLScene,
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic,
    job: SegmentationJob,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """Import the finished run's label map as segments ICH/PHE/IVH of ``volume_node``.

    The run's warnings (contrast, metal, ...) and model are added to ``job.warnings`` and
    stored as node attributes, so the segmentation says which model produced it.
    """
    if not job.labels_path.is_file():
        raise FileNotFoundError(f"the run wrote no result ({job.labels_path.name} missing)")
    record: dict = {}
    if job.volumes_path.is_file():
        record = json.loads(job.volumes_path.read_text(encoding="utf-8"))
        job.warnings.extend(str(w) for w in record.get("warnings", []) or [])
    node = segments.import_labelmap_as_segments(
        scene, segmentations_logic, str(job.labels_path), volume_node, segmentation_node
    )
    model = record.get("model")
    if isinstance(model, dict):
        model = model.get("ref") or f"{model.get('id')}@{model.get('version')}"
    node.SetAttribute("ICHSegmentation.Model", str(model or job.model))
    node.SetAttribute("ICHSegmentation.Warnings", json.dumps(job.warnings))
    return node
