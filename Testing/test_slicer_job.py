"""Segment from a scene (slicer-core): CT node -> background ``ichseg segment`` -> segments ICH/PHE/IVH.

The CT is tilted and anisotropic and has a parent transform, so a result that lands on the
wrong grid, or a transform applied twice, fails the geometry checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "ICHSegmentation", ROOT / "ICHTraining"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from conftest import import_slicer_core  # noqa: E402

slicer = import_slicer_core()

import vtk  # noqa: E402
from conftest import simple_head, tilt_direction  # noqa: E402
from ICHSegmentationLib import job, segments  # noqa: E402
from ICHSegmentationLib.process import BackgroundProcess, ichseg_environment  # noqa: E402

from ichseg import labels  # noqa: E402


@pytest.fixture
def scene_with_ct(tmp_path, mrml):
    scene, logic = mrml
    image = simple_head(
        size=(64, 72, 14), spacing=(3.0, 2.8, 6.0), direction=tilt_direction(15.0), blob_index=(30, 40, 7)
    )
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Head CT")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(ct)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(transform.GetID())
    return scene, logic, ct, image


def run(segmentation_job, timeout=300):
    progress: list[dict] = []
    outcome = BackgroundProcess(segmentation_job.args, on_progress=progress.append, env=ichseg_environment())
    return outcome.start().wait(timeout=timeout), progress


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_segment_in_background_and_import(scene_with_ct, tiny_package, tmp_path):
    scene, logic, ct, image = scene_with_ct
    segmentation_job = job.prepare_segmentation(
        ct, model=str(tiny_package), device="CPU", quality="fast", work_root=tmp_path, python=sys.executable
    )
    try:
        # the file is the node's own grid (Slicer made the left-handed input right-handed), no transform baked in
        written = sitk.ReadImage(str(segmentation_job.input_path))
        assert written.GetSize() == image.GetSize()
        lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras(ct)[:3]
        axes = np.array(written.GetDirection()).reshape(3, 3) * written.GetSpacing()
        np.testing.assert_allclose(axes, lps[:, :3], atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), lps[:, 3], atol=1e-4)
        outcome, progress = run(segmentation_job)
        assert outcome.ok, outcome.error_message()
        assert progress and progress[-1]["fraction"] == 1.0
        node = job.import_result(scene, logic, segmentation_job, ct)
    finally:
        segmentation_job.cleanup()
    assert not segmentation_job.work_dir.exists()
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(3)] == [c.key for c in labels.CLASSES]
    assert [segmentation.GetNthSegment(i).GetName() for i in range(3)] == [c.name for c in labels.CLASSES]
    assert node.GetTransformNodeID() == ct.GetTransformNodeID()
    assert node.GetAttribute("ICHSegmentation.Model") == "tiny-test@0.0.1"
    # the imported segments, exported back onto the CT grid, equal the label map the run wrote
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert logic.ExportVisibleSegmentsToLabelmapNode(node, label_node, ct)
    np.testing.assert_allclose(ijk_to_ras(label_node), ijk_to_ras(ct), atol=1e-6)
    got = segments.volume_array(label_node)
    assert got.shape == sitk.GetArrayViewFromImage(image).shape


def test_failed_or_cancelled_run_leaves_the_scene_unchanged(scene_with_ct, tmp_path):
    scene, logic, ct, _ = scene_with_ct
    before = scene.GetNumberOfNodes()
    segmentation_job = job.prepare_segmentation(
        ct, model=str(tmp_path / "no-such-model"), work_root=tmp_path, python=sys.executable
    )
    outcome, _ = run(segmentation_job)
    assert not outcome.ok and "no-such-model" in outcome.error_message()
    with pytest.raises(FileNotFoundError):
        job.import_result(scene, logic, segmentation_job, ct)
    segmentation_job.cleanup()
    assert scene.GetNumberOfNodes() == before
    assert not segmentation_job.work_dir.exists()


def test_bad_choices_are_refused_before_anything_is_written(scene_with_ct, tmp_path):
    scene, _, ct, _ = scene_with_ct
    with pytest.raises(ValueError, match="device"):
        job.prepare_segmentation(ct, device="TPU", work_root=tmp_path)
    with pytest.raises(ValueError, match="quality"):
        job.prepare_segmentation(ct, quality="best", work_root=tmp_path)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="image data"):
        job.prepare_segmentation(empty, work_root=tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "ct.nrrd"]
