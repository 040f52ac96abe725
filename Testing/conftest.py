"""Shared fixtures: a simple synthetic head on an arbitrary grid, and a tiny model package."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ichseg.model import ModelCard, architecture, build_network, save_package
from ichseg.preprocess import PreprocessConfig

TINY_ARCH = architecture(
    kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    filters=[4, 8, 16],
    deep_supervision=False,
)


def load_benchmark(name: str):
    """The module of the script ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_slicer_core():
    """The ``slicer`` module with the real MRML classes (slicer-core), or skip the calling test module."""
    try:
        import slicer

        if not hasattr(slicer, "vtkMRMLScene"):
            raise ImportError("the 'slicer' module found has no MRML classes (not slicer-core)")
    except Exception as exc:  # ImportError, or a broken binary wheel (OSError)
        pytest.skip(f"slicer-core is not available: {exc}", allow_module_level=True)
    return slicer


def new_mrml_scene():
    """A scene like Slicer's (default colour tables, Segmentations logic attached): (scene, logic, color logic)."""
    slicer = import_slicer_core()
    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    return scene, logic, color_logic


@pytest.fixture
def mrml():
    """(scene, Segmentations logic) of a fresh :func:`new_mrml_scene`; the colour logic lives as long."""
    scene, logic, color_logic = new_mrml_scene()
    yield scene, logic
    del color_logic


def tilt_direction(deg: float) -> tuple[float, ...]:
    t = math.radians(deg)
    return (1.0, 0.0, 0.0, 0.0, -math.cos(t), math.sin(t), 0.0, math.sin(t), math.cos(t))


def simple_head(
    size=(96, 96, 24),
    spacing=(2.4, 2.4, 5.0),
    direction=None,
    origin=(-110.0, 95.0, -60.0),
    blob_index=None,
    blob_radius_mm=12.0,
    blob_hu=80.0,
    seed=0,
    radii_mm=(85.0, 100.0, 75.0),
) -> sitk.Image:
    """An ellipsoidal head (skull 1000 HU, brain 35 HU, noise) in air, optionally with a bright blob.

    ``blob_index`` is a continuous (x, y, z) voxel index of the blob centre.
    """
    nx, ny, nz = size
    z, y, x = np.indices((nz, ny, nx), dtype=np.float32)
    sx, sy, sz = spacing
    cx, cy, cz = (nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2
    rx, ry, rz = radii_mm
    r = np.sqrt(((x - cx) * sx / rx) ** 2 + ((y - cy) * sy / ry) ** 2 + ((z - cz) * sz / rz) ** 2)
    arr = np.full(r.shape, -1000.0, np.float32)
    arr[r < 1.0] = 1000.0
    arr[r < 0.93] = 35.0
    if blob_index is not None:
        bx, by, bz = blob_index
        d = np.sqrt(((x - bx) * sx) ** 2 + ((y - by) * sy) ** 2 + ((z - bz) * sz) ** 2)
        arr[d <= blob_radius_mm] = blob_hu
    arr += np.random.default_rng(seed).normal(0, 3, arr.shape).astype(np.float32)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def write_label_file(folder: Path, name: str, array: np.ndarray) -> None:
    """``folder/<name>.nii.gz``: a uint8 label map on a 1 mm grid."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))


def make_tiny_package(out: Path, spacing=(2.0, 2.0, 4.0), seed: int = 0) -> Path:
    """A model package with a tiny random-weight network (for pipeline tests)."""
    card = ModelCard(
        id="tiny-test",
        version="0.0.1",
        architecture=TINY_ARCH,
        preprocessing=PreprocessConfig(spacing).to_dict(),
        plan={"patch_size_zyx": [16, 32, 32]},
        training={"data": {"n_cases": 0}, "loss": "dicece", "steps": 0},
        inference={"patch_size_zyx": [16, 32, 32], "overlap": 0.25},
    )
    torch.manual_seed(seed)
    return save_package(out, card, [(None, build_network(TINY_ARCH).state_dict())])


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    return make_tiny_package(tmp_path_factory.mktemp("models") / "tiny-test-0.0.1")
