"""PNG montage of axial slices with the label outlines drawn in the class colours.

Used for the README picture of a generated case and for ``<case>_overlay.png`` after
segmentation.  Slices are shown in radiological convention (patient right on the image
left, anterior up) after reorienting the volume to LPS, with a brain window (default
0–80 HU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw
from scipy import ndimage

from .fileutil import atomic_output
from .labels import CLASSES

__all__ = ["choose_slices", "render_montage", "write_montage"]


def choose_slices(label: np.ndarray, max_slices: int = 12) -> list[int]:
    """Slices (index z) to show: those with lesions (evenly picked), else evenly spaced through the volume."""
    nz = label.shape[0]
    with_lesion = np.nonzero(label.reshape(nz, -1).any(axis=1))[0]
    pool = with_lesion if len(with_lesion) else np.arange(int(nz * 0.15), max(int(nz * 0.9), int(nz * 0.15) + 1))
    if len(pool) <= max_slices:
        return [int(k) for k in pool]
    picks = np.linspace(0, len(pool) - 1, max_slices).round().astype(int)
    return [int(pool[i]) for i in picks]


def _tile(ct: np.ndarray, lab: np.ndarray, window: tuple[float, float], size: int) -> Image.Image:
    lo, hi = window
    grey = np.clip((ct.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
    img = Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    scale = size / max(ct.shape)
    new_size = (max(1, round(ct.shape[1] * scale)), max(1, round(ct.shape[0] * scale)))
    img = img.resize(new_size, Image.Resampling.BILINEAR)
    lab_small = np.asarray(Image.fromarray(lab.astype(np.uint8)).resize(new_size, Image.Resampling.NEAREST))
    rgb = np.asarray(img).copy()
    for cls in CLASSES:
        mask = lab_small == cls.value
        if not mask.any():
            continue
        edge = mask & ~ndimage.binary_erosion(mask)
        rgb[edge] = cls.color
    canvas = Image.new("RGB", (size, size))
    canvas.paste(Image.fromarray(rgb), ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


def render_montage(
    image: sitk.Image,
    label: sitk.Image | None = None,
    *,
    slices: Sequence[int] | None = None,
    window: tuple[float, float] = (0.0, 80.0),
    tile: int = 256,
    columns: int = 4,
    title: str | None = None,
) -> Image.Image:
    """Render a montage of axial slices of ``image`` with outlines of ``label`` (same grid)."""
    image = sitk.DICOMOrient(image, "LPS")
    ct = sitk.GetArrayViewFromImage(image)
    if label is not None:
        label = sitk.DICOMOrient(label, "LPS")  # keep the image alive: the view below does not own its buffer
        lab = sitk.GetArrayViewFromImage(label)
        if lab.shape != ct.shape:
            raise ValueError(f"label grid {lab.shape} differs from image grid {ct.shape}")
    else:
        lab = np.zeros(ct.shape, dtype=np.uint8)
    if slices is None:
        slices = choose_slices(np.asarray(lab))
    slices = list(slices) or [ct.shape[0] // 2]
    columns = min(columns, len(slices))
    rows = -(-len(slices) // columns)
    header = 24 if title else 0
    sheet = Image.new("RGB", (columns * tile, rows * tile + header), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 5), title, fill=(255, 255, 255))
    for i, k in enumerate(slices):
        r, c = divmod(i, columns)
        sheet.paste(_tile(ct[k], lab[k], window, tile), (c * tile, r * tile + header))
        draw.text((c * tile + 4, r * tile + header + 4), f"z={k}", fill=(255, 255, 0))
    legend_x = 6
    for cls in CLASSES:
        y = rows * tile + header - 16
        draw.rectangle([legend_x, y + 2, legend_x + 10, y + 12], fill=cls.color)
        draw.text((legend_x + 14, y), cls.name, fill=(255, 255, 255))
        legend_x += 60
    return sheet


def write_montage(path: str | os.PathLike, image: sitk.Image, label: sitk.Image | None = None, **kwargs) -> Path:
    """Render and write the montage PNG atomically."""
    sheet = render_montage(image, label, **kwargs)
    with atomic_output(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return Path(path)
