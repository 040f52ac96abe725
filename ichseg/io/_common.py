"""Helpers shared by the readers and writers: ITK error summaries and volume checks."""

from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

_ITK_ERROR = re.compile(r"(?:ITK ERROR|s?itk::ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(.*)")
_TEEM_DETAIL = re.compile(r"^\[\w+\]\s*\w+:\s*(.*)")  # "[nrrd] _nrrdRead: reason" lines of NRRD errors
_FRIENDLY = {
    "Unable to determine ImageIO reader": "unknown or corrupted file format",
    "Could not create IO object": "unknown or corrupted file format",
}


def summarize_itk_error(exc: BaseException, path: object = None, limit: int = 160) -> str:
    """One short line out of a (multi-line) ITK/SimpleITK exception text.

    Occurrences of ``path`` are shortened to the file name (the caller names the path).
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = ""
    for line in lines:
        m = _ITK_ERROR.search(line)
        if m and m.group(1).strip():
            reason = m.group(1)
            break
    if not reason:
        rest = [ln for ln in lines if not ln.startswith("Exception thrown")]
        reason = rest[0] if rest else type(exc).__name__
    for key, friendly in _FRIENDLY.items():
        if key in reason:
            return friendly
    details = [m.group(1) for m in (_TEEM_DETAIL.match(ln) for ln in lines) if m]
    if details:
        reason = f"{reason.rstrip(':')}: {details[-1]}"
    if path is not None:
        reason = reason.replace(str(path), getattr(path, "name", str(path)))
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def describe_size(size: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in size)


def check_volume(image: sitk.Image, source: str) -> None:
    """Raise InputError unless ``image`` is a scalar 3-D volume with finite voxels.

    ``source`` names the input in the message (a path).
    """
    dim = image.GetDimension()
    size = tuple(image.GetSize())
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(vector/RGB); a single-channel CT volume is required"
        )
    if dim == 2 or (dim == 3 and size[2] == 1):
        raise InputError(f"{source}: image is 2-D ({describe_size(size)}); a 3-D CT volume is required")
    if dim != 3:
        raise InputError(f"{source}: image is {dim}-D ({describe_size(size)}); a 3-D CT volume is required")
    if min(size) < 1:
        raise InputError(f"{source}: image is empty ({describe_size(size)})")
    if abs(np.linalg.det(np.reshape(image.GetDirection(), (3, 3)))) < 1e-6:
        raise InputError(f"{source}: image axes are degenerate (direction matrix is singular)")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise InputError(f"{source}: volume contains {bad} NaN/Inf voxel(s)")
    elif image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{source}: image has complex voxels; a real-valued CT volume is required")


def _label_values_to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == bool:
        return values.astype(np.uint8)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"label has unsupported dtype {values.dtype}")
    if values.size:
        lo, hi = values.min(), values.max()
        if lo < 0 or hi > 255:
            raise ValueError(f"label values must be within 0..255 (found {lo}..{hi})")
        if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
            raise ValueError("label has non-integer values")
    return values.astype(np.uint8)


def grid_mismatch(image: sitk.Image, reference: sitk.Image) -> str | None:
    """Describe how ``image``'s grid differs from ``reference``'s, or None when they agree.

    Tolerances allow for float32 geometry (NIfTI) but not for a shifted or resampled grid.
    """
    if image.GetDimension() != reference.GetDimension():
        return f"dimension {image.GetDimension()} vs {reference.GetDimension()}"
    if tuple(image.GetSize()) != tuple(reference.GetSize()):
        return f"size {describe_size(image.GetSize())} vs {describe_size(reference.GetSize())}"
    spacing, ref_spacing = np.array(image.GetSpacing()), np.array(reference.GetSpacing())
    if not np.allclose(spacing, ref_spacing, rtol=1e-5, atol=0):
        return f"spacing {tuple(spacing)} vs {tuple(ref_spacing)}"
    if not np.allclose(image.GetDirection(), reference.GetDirection(), rtol=0, atol=1e-5):
        return "direction differs"
    offset = float(np.max(np.abs(np.subtract(image.GetOrigin(), reference.GetOrigin()))))
    if offset > 1e-3 * float(ref_spacing.min()):
        return f"origin differs by {offset:.4g} mm"
    return None


def to_label_image(label: np.ndarray | sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A uint8 label image carrying exactly the reference's spacing/origin/direction.

    ``label``: numpy array indexed (z, y, x), or a SimpleITK image on (nearly) the same
    grid as the reference.  Raises ValueError on a size/grid mismatch or bad values.
    """
    if reference.GetDimension() != 3:
        raise ValueError(f"reference must be a 3-D image (got {reference.GetDimension()}-D)")
    expected = tuple(reversed(reference.GetSize()))
    if isinstance(label, sitk.Image):
        if label.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("label image must have one component per voxel")
        problem = grid_mismatch(label, reference)
        if problem:
            raise ValueError(f"label grid does not match the reference: {problem}")
        values = sitk.GetArrayViewFromImage(label)
    else:
        values = np.asarray(label)
        if values.shape != expected:
            raise ValueError(f"label shape {values.shape} does not match the reference (z, y, x) shape {expected}")
    out = sitk.GetImageFromArray(_label_values_to_uint8(values))
    out.CopyInformation(reference)
    return out
