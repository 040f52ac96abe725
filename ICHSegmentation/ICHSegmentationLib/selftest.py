"""Helpers of the module's self-test (``ICHSegmentationTest``, run in Slicer; the assertions stay there).

A model to segment with when none is installed, a phantom case on disk, and the volumes
table and segment IDs read back as plain values.
"""

from __future__ import annotations

import os

import slicer

__all__ = ["model_for_test", "phantom_case", "segment_ids", "table_rows"]


def model_for_test(folder: str | os.PathLike) -> str:
    """The current model if one is installed, else a tiny random-weight package in ``folder`` (tests the pipeline)."""
    import torch

    from ichseg.errors import IchsegError
    from ichseg.model import ModelCard, architecture, build_network, save_package
    from ichseg.model.registry import current_model
    from ichseg.preprocess import PreprocessConfig

    try:
        return current_model().ref
    except IchsegError:
        pass
    arch = architecture(
        kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        filters=[4, 8, 16],
        deep_supervision=False,
    )
    card = ModelCard(
        id="selftest-tiny",
        version="0.0.1",
        architecture=arch,
        preprocessing=PreprocessConfig((2.0, 2.0, 5.0)).to_dict(),
        plan={"patch_size_zyx": [16, 32, 32]},
        training={"data": {"n_cases": 0}, "loss": "dicece", "steps": 0},
        inference={"patch_size_zyx": [16, 32, 32], "overlap": 0.25},
    )
    torch.manual_seed(0)
    return str(save_package(os.path.join(folder, "selftest-tiny"), card, [(None, build_network(arch).state_dict())]))


def phantom_case(folder: str | os.PathLike, seed: int = 7, matrix: int = 128):
    """Write a phantom head CT and its label map to ``folder``: (CT path, label path, the label's measurements)."""
    import SimpleITK as sitk

    from ichseg.phantom import generate_case, write_case
    from ichseg.volumes import measure

    case = generate_case(seed, matrix=matrix)
    write_case(case, folder)
    image_path = os.path.join(folder, f"{case.name}.nii.gz")
    label_path = os.path.join(folder, f"{case.name}_label.nii.gz")
    label_image = sitk.ReadImage(label_path)
    return image_path, label_path, measure(sitk.GetArrayFromImage(label_image), label_image.GetSpacing())


def segment_ids(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def table_rows(table_node: slicer.vtkMRMLTableNode) -> list[tuple[str, float, int, int]]:
    """The volumes table (``measure.volumes_table``) as (class name, volume mL, lesions, voxels) rows."""
    cell = table_node.GetCellText
    return [
        (cell(row, 0), float(cell(row, 1)), int(cell(row, 2)), int(cell(row, 3)))
        for row in range(table_node.GetNumberOfRows())
    ]
