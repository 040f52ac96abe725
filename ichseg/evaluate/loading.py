"""Read a prediction/reference pair as label arrays on one grid.

Grids must agree: same size, spacing within a relative 1e-4, direction within 1e-4 and
origin within 1 % of the smallest voxel side (this allows float32 NIfTI geometry but no
shift or resampling).  One exception: a ``.seg.nrrd`` whose grid is a sub-box of the other
file's grid (3D Slicer may save segmentations cropped to their extent) is padded onto it;
that is exact, voxel for voxel.  Any other mismatch raises InputError for that case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..fileutil import full_suffix
from ..labels import NUM_CLASSES

__all__ = ["grid_problem", "label_array", "read_label", "read_pair"]

SPACING_RTOL = 1e-4
DIRECTION_ATOL = 1e-4
ORIGIN_FRACTION = 0.01


def read_label(path: str | Path) -> sitk.Image:
    """A labelmap file or a Slicer ``.seg.nrrd`` (mapped onto the scheme) as a SimpleITK image."""
    from ..io import read_image, read_seg_nrrd

    if full_suffix(path) == ".seg.nrrd":
        return read_seg_nrrd(path).label
    return read_image(path)


def label_array(image: sitk.Image, source: str | Path) -> np.ndarray:
    """The image's voxels as a uint8 (z, y, x) array; InputError unless they are scheme values 0..3."""
    values = sitk.GetArrayViewFromImage(image)
    if values.size == 0:
        raise InputError(f"{source}: label map is empty")
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise InputError(f"{source}: label map has unsupported voxel type {values.dtype}")
    lo, hi = values.min(), values.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > NUM_CLASSES - 1:
        raise InputError(
            f"{source}: not a label map of the scheme (values {lo:g}..{hi:g}, expected 0..{NUM_CLASSES - 1})"
        )
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        raise InputError(f"{source}: label map has non-integer values")
    return values.astype(np.uint8)


def grid_problem(image: sitk.Image, reference: sitk.Image) -> str | None:
    """How ``image``'s grid differs from ``reference``'s (see the module docstring), or None."""
    if tuple(image.GetSize()) != tuple(reference.GetSize()):
        return "size " + "x".join(map(str, image.GetSize())) + " vs " + "x".join(map(str, reference.GetSize()))
    return _geometry_problem(image, reference, check_origin=True)


def _geometry_problem(image: sitk.Image, reference: sitk.Image, check_origin: bool) -> str | None:
    spacing, ref_spacing = np.array(image.GetSpacing()), np.array(reference.GetSpacing())
    if not np.allclose(spacing, ref_spacing, rtol=SPACING_RTOL, atol=0):
        return f"spacing {tuple(np.round(spacing, 6))} vs {tuple(np.round(ref_spacing, 6))} mm"
    if not np.allclose(image.GetDirection(), reference.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        return "direction differs"
    if check_origin:
        offset = float(np.max(np.abs(np.subtract(image.GetOrigin(), reference.GetOrigin()))))
        if offset > ORIGIN_FRACTION * float(ref_spacing.min()):
            return f"origin differs by {offset:.4g} mm"
    return None


def _sub_box_index(small: sitk.Image, big: sitk.Image) -> tuple[int, ...] | None:
    """Index of ``small``'s first voxel in ``big`` when ``small`` is an aligned sub-box of it, else None."""
    if _geometry_problem(small, big, check_origin=False):
        return None
    index = np.array(big.TransformPhysicalPointToContinuousIndex(small.GetOrigin()))
    rounded = np.round(index)
    tolerance = ORIGIN_FRACTION * min(big.GetSpacing()) / max(big.GetSpacing())
    if np.max(np.abs(index - rounded)) > tolerance:
        return None
    start = rounded.astype(int)
    if (start < 0).any() or (start + np.array(small.GetSize()) > np.array(big.GetSize())).any():
        return None
    return tuple(int(i) for i in start)


def _pad_onto(small: np.ndarray, start: tuple[int, ...], big: sitk.Image) -> np.ndarray:
    out = np.zeros(tuple(reversed(big.GetSize())), dtype=np.uint8)
    zyx = tuple(reversed(start))
    out[tuple(slice(s, s + n) for s, n in zip(zyx, small.shape, strict=True))] = small
    return out


def read_pair(pred_path: str | Path, ref_path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """``(pred, ref, spacing_xyz)``: both label arrays on the reference grid; InputError on any problem."""
    pred_image, ref_image = read_label(pred_path), read_label(ref_path)
    if pred_image.GetDimension() != 3 or ref_image.GetDimension() != 3:
        raise InputError(f"{pred_path}: 3-D label maps are required")
    pred, ref = label_array(pred_image, pred_path), label_array(ref_image, ref_path)
    problem = grid_problem(pred_image, ref_image)
    if problem is None:
        return pred, ref, tuple(ref_image.GetSpacing())
    if full_suffix(pred_path) == ".seg.nrrd" and (start := _sub_box_index(pred_image, ref_image)) is not None:
        return _pad_onto(pred, start, ref_image), ref, tuple(ref_image.GetSpacing())
    if full_suffix(ref_path) == ".seg.nrrd" and (start := _sub_box_index(ref_image, pred_image)) is not None:
        return pred, _pad_onto(ref, start, pred_image), tuple(pred_image.GetSpacing())
    raise InputError(f"prediction and reference grids differ ({problem}); resample the prediction onto the reference")
