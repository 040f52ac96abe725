"""Is this a head CT we can segment?  Every bad-input rule in one place, each a one-line message.

``check_ct`` raises :class:`InputError` for input that must be refused and returns warnings
(strings) for input that can be processed but whose result needs care (contrast, metal).
"""

from __future__ import annotations

import numpy as np
import psutil
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError

__all__ = ["check_ct", "estimate_memory_bytes", "MIN_SLICES", "MIN_EXTENT_Z_MM"]

MIN_SLICES = 5
MIN_EXTENT_Z_MM = 40.0
HEAD_EXTENT_MM = (100.0, 320.0)  # in-plane width of the largest tissue component of a head
#: bytes per input voxel the pipeline needs at most (image copy, resampled copies, uint8 outputs)
BYTES_PER_VOXEL = 12


def estimate_memory_bytes(image: sitk.Image) -> int:
    """Rough peak memory of segmenting this image (input grid part only)."""
    return int(np.prod(image.GetSize(), dtype=np.int64)) * BYTES_PER_VOXEL


def _sample(arr: np.ndarray, max_voxels: int = 2_000_000) -> np.ndarray:
    step = max(1, int(np.ceil((arr.size / max_voxels) ** (1 / 3))))
    return arr[::step, ::step, ::step]


def check_ct(image: sitk.Image, *, memory_limit_bytes: int | None = None) -> list[str]:
    """Refuse what is not a head CT in HU; return warnings for what is usable with care."""
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("expected a single-channel (grey-scale) CT, got a multi-component image")
    size = image.GetSize()
    spacing = image.GetSpacing()
    if min(size[:2]) < 32:
        raise InputError(f"image is too small in-plane ({size[0]}x{size[1]} pixels)")
    if size[2] < MIN_SLICES or size[2] * spacing[2] < MIN_EXTENT_Z_MM:
        raise InputError(
            f"too few slices: {size[2]} slices covering {size[2] * spacing[2]:.0f} mm "
            f"(need at least {MIN_SLICES} slices and {MIN_EXTENT_Z_MM:.0f} mm)"
        )
    need = estimate_memory_bytes(image)
    limit = memory_limit_bytes if memory_limit_bytes is not None else int(psutil.virtual_memory().available * 0.8)
    if need > limit:
        raise InputError(
            f"volume too large for memory: {size[0]}x{size[1]}x{size[2]} needs about {need / 2**30:.1f} GiB, "
            f"{limit / 2**30:.1f} GiB available"
        )
    arr = sitk.GetArrayViewFromImage(image)
    sample = _sample(arr).astype(np.float32)
    if not np.isfinite(sample).all():
        raise InputError("image contains NaN or infinite values")
    lo, hi = float(sample.min()), float(sample.max())
    if hi == lo:
        raise InputError(f"image is constant ({lo:g} everywhere): not a CT")
    if lo >= 0 and hi <= 255:
        raise InputError(f"intensities {lo:g}..{hi:g} look like an 8-bit windowed image, not CT Hounsfield units")
    if lo > -500:
        raise InputError(f"no air below -500 HU (minimum {lo:g}): not a CT in Hounsfield units (MR or rescaled?)")
    p99 = float(np.percentile(sample, 99.9))
    if p99 > 6000:
        raise InputError(f"intensities up to {p99:g} are not Hounsfield units of a head CT")
    tissue = sample > -300
    lab, n = ndimage.label(tissue)
    if n == 0:
        raise InputError("no tissue above -300 HU: not a head CT")
    sizes = np.bincount(lab.ravel())[1:]
    head = lab == (int(np.argmax(sizes)) + 1)
    step = max(1, int(np.ceil((arr.size / 2_000_000) ** (1 / 3))))
    zs, ys, xs = np.nonzero(head)
    width_x = (xs.max() - xs.min() + 1) * step * spacing[0]
    width_y = (ys.max() - ys.min() + 1) * step * spacing[1]
    if not (HEAD_EXTENT_MM[0] <= max(width_x, width_y) <= HEAD_EXTENT_MM[1]):
        raise InputError(
            f"field of view is not a head: the body is {width_x:.0f} x {width_y:.0f} mm in-plane "
            f"(a head is {HEAD_EXTENT_MM[0]:.0f}-{HEAD_EXTENT_MM[1]:.0f} mm)"
        )
    warnings: list[str] = []
    values = sample[head]
    metal = float((values > 3000).mean())
    if metal > 2e-4:
        warnings.append(f"possible metal artefacts ({metal * 100:.2f}% of head voxels above 3000 HU): check the result")
    # Enhancing soft tissue (vessels, sinuses) away from bone, whose partial-volume rim also reads 130-400 HU.
    near_bone = ndimage.binary_dilation(sample > 400, iterations=2)
    soft = sample[head & ~near_bone & (sample > -20) & (sample < 400)]
    if soft.size:
        enhancing = float(((soft > 130) & (soft < 400)).mean())
        if enhancing > 0.025:  # non-contrast synthetic and real heads stay below ~1.5 %
            warnings.append(
                f"possible contrast enhancement ({enhancing * 100:.1f}% of soft tissue at 130-400 HU): "
                "the model is trained on non-contrast CT"
            )
    if hi < 300:
        warnings.append("no bone above 300 HU (skull removed?): results may be less reliable")
    return warnings
