"""CT preprocessing shared by training and inference: orientation, working grid, head crop, HU normalisation.

Everything here is a pure function of its inputs and of a :class:`PreprocessConfig`, which the
model card stores, so inference repeats exactly what training did.

The working grid
    The input is first re-indexed to the nearest LPS axis order (:func:`orient_axial`: a lossless
    permutation/flip of the voxel axes, so array axes are (z, y, x) = (inferior→superior,
    anterior→posterior, right→left) up to the residual obliquity).  The working grid then keeps that
    direction matrix and the physical box of the input and changes only the spacing
    (:func:`working_grid`).  A gantry-tilted or rotated scan therefore stays oblique on the working
    grid: nothing is rotated, no voxels are lost at corners, and the network sees slices as acquired.
    Going back (:func:`labels_to_original`) resamples class probabilities linearly onto the
    original grid (its exact size/spacing/origin/direction) before the arg-max.

Normalisation
    Clip HU to a window (default [−15, 100], covering CSF, edema, parenchyma and blood) and map to
    [0, 1] (``mode="unit"``) or to zero mean / unit SD with the training foreground statistics
    (``mode="zscore"``).  The window and statistics are read from the card, never from constants.

Head crop
    Bounding box of tissue above −500 HU after removing the table (in-plane erosion separates thin
    table/head-rest structures from the head, the largest 3-D component is kept, then dilated back),
    plus a margin.  :func:`uncrop` is its inverse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = [
    "AIR_HU",
    "DEFAULT_WINDOW",
    "Grid",
    "Normalization",
    "PreprocessConfig",
    "Prepared",
    "orient_axial",
    "working_grid",
    "resample_image",
    "resample_label",
    "normalize",
    "head_bbox",
    "crop",
    "uncrop",
    "union_box",
    "label_box",
    "prepare_image",
    "label_to_working",
    "probabilities_to_original",
    "labels_to_original",
]

AIR_HU = -1024.0
DEFAULT_WINDOW = (-15.0, 100.0)
Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3-D image in ITK order: size/spacing/origin are (x, y, z), direction row-major 3×3."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(
            tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
            tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
            tuple(float(s) for s in image.GetOrigin()),  # type: ignore[arg-type]
            tuple(float(s) for s in image.GetDirection()),
        )

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (self.size[2], self.size[1], self.size[0])

    @property
    def matrix(self) -> np.ndarray:
        return np.reshape(self.direction, (3, 3))

    def index_to_point(self, index_xyz: Sequence[float]) -> np.ndarray:
        """Physical (LPS, mm) position of a continuous voxel index (x, y, z)."""
        return np.asarray(self.origin) + self.matrix @ (np.asarray(index_xyz, float) * np.asarray(self.spacing))

    def cropped(self, box: Box) -> Grid:
        """The sub-grid selected by a (z, y, x) slice box."""
        start_xyz = [box[2].start or 0, box[1].start or 0, box[0].start or 0]
        stop_xyz = [
            box[2].stop if box[2].stop is not None else self.size[0],
            box[1].stop if box[1].stop is not None else self.size[1],
            box[0].stop if box[0].stop is not None else self.size[2],
        ]
        size = tuple(int(b - a) for a, b in zip(start_xyz, stop_xyz, strict=True))
        origin = tuple(float(v) for v in self.index_to_point(start_xyz))
        return Grid(size, self.spacing, origin, self.direction)  # type: ignore[arg-type]

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set this grid's spacing/origin/direction on an image of the same size."""
        if tuple(image.GetSize()) != self.size:
            raise ValueError(f"image size {image.GetSize()} does not match grid size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass(frozen=True)
class Normalization:
    """HU window clipping, then ``unit`` ([0, 1] over the window) or ``zscore`` (training foreground mean/SD)."""

    window: tuple[float, float] = DEFAULT_WINDOW
    mode: str = "unit"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = self.window
        if not hi > lo:
            raise ValueError(f"normalisation window must have low < high, got {list(self.window)}")
        if self.mode not in ("unit", "zscore"):
            raise ValueError(f"normalisation mode must be 'unit' or 'zscore', got {self.mode!r}")
        if self.mode == "zscore" and not self.std > 0:
            raise ValueError(f"normalisation std must be > 0, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = {"method": "ct_window", "window": [float(v) for v in self.window], "mode": self.mode}
        if self.mode == "zscore":
            d.update(mean=float(self.mean), std=float(self.std))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalization:
        method = d.get("method", "ct_window")
        if method != "ct_window":
            raise ValueError(f"unknown normalisation method {method!r} (expected 'ct_window')")
        window = d.get("window", DEFAULT_WINDOW)
        if not isinstance(window, Sequence) or len(window) != 2:
            raise ValueError(f"normalisation window must be [low, high], got {window!r}")
        return cls(
            window=(float(window[0]), float(window[1])),
            mode=str(d.get("mode", "unit")),
            mean=float(d.get("mean", 0.0)),
            std=float(d.get("std", 1.0)),
        )


@dataclass(frozen=True)
class PreprocessConfig:
    """What the model expects: working spacing (x, y, z mm), normalisation, head crop, resampling."""

    spacing_xyz: tuple[float, float, float]
    normalization: Normalization = field(default_factory=Normalization)
    crop: bool = True
    crop_threshold_hu: float = -500.0
    crop_margin_mm: float = 5.0
    table_erosion_mm: float = 4.0
    antialias: bool = True

    def __post_init__(self) -> None:
        if len(self.spacing_xyz) != 3 or not all(float(s) > 0 for s in self.spacing_xyz):
            raise ValueError(f"spacing must be three positive numbers (x, y, z mm), got {self.spacing_xyz!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "spacing_xyz": [float(s) for s in self.spacing_xyz],
            "orientation": "nearest LPS axis order (lossless permutation/flip); oblique direction kept",
            "normalization": self.normalization.to_dict(),
            "crop": {
                "enabled": self.crop,
                "threshold_hu": self.crop_threshold_hu,
                "margin_mm": self.crop_margin_mm,
                "table_erosion_mm": self.table_erosion_mm,
            },
            "resampling": {
                "image": "linear",
                "antialias": self.antialias,
                "label": "nearest",
                "to_original": "linear on class probabilities, then argmax",
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        spacing = d.get("spacing_xyz")
        if not isinstance(spacing, Sequence) or len(spacing) != 3:
            raise ValueError(f"spacing_xyz must be [x, y, z] in mm, got {spacing!r}")
        crop_d = d.get("crop", {}) or {}
        res = d.get("resampling", {}) or {}
        return cls(
            spacing_xyz=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            normalization=Normalization.from_dict(d.get("normalization", {})),
            crop=bool(crop_d.get("enabled", True)),
            crop_threshold_hu=float(crop_d.get("threshold_hu", -500.0)),
            crop_margin_mm=float(crop_d.get("margin_mm", 5.0)),
            table_erosion_mm=float(crop_d.get("table_erosion_mm", 4.0)),
            antialias=bool(res.get("antialias", True)),
        )


# --------------------------------------------------------------------------- geometry


def orient_axial(image: sitk.Image) -> sitk.Image:
    """Re-index the voxel axes to the nearest LPS order (permutation/flip only: no interpolation)."""
    direction = np.reshape(image.GetDirection(), (3, 3))
    if np.array_equal(np.argmax(np.abs(direction), axis=0), [0, 1, 2]) and np.all(np.diag(direction) > 0):
        return image
    return sitk.DICOMOrient(image, "LPS")


def working_grid(image: sitk.Image | Grid, spacing_xyz: Sequence[float]) -> Grid:
    """Same direction and physical box as ``image``, new spacing; the new grid is centred on the old box."""
    g = image if isinstance(image, Grid) else Grid.of(image)
    old_sp = np.asarray(g.spacing, float)
    new_sp = np.asarray(spacing_xyz, float)
    extent = np.asarray(g.size) * old_sp
    new_size = np.maximum(1, np.round(extent / new_sp)).astype(int)
    local = -0.5 * old_sp + 0.5 * new_sp + (extent - new_size * new_sp) / 2.0
    origin = np.asarray(g.origin) + g.matrix @ local
    return Grid(
        tuple(int(s) for s in new_size),  # type: ignore[arg-type]
        tuple(float(s) for s in new_sp),  # type: ignore[arg-type]
        tuple(float(s) for s in origin),  # type: ignore[arg-type]
        g.direction,
    )


def _resample(image: sitk.Image, grid: Grid, interpolator: int, default: float, pixel_id: int) -> sitk.Image:
    return sitk.Resample(
        image,
        list(grid.size),
        sitk.Transform(),
        interpolator,
        list(grid.origin),
        list(grid.spacing),
        list(grid.direction),
        float(default),
        pixel_id,
    )


def resample_image(image: sitk.Image, grid: Grid, *, antialias: bool = True, default: float = AIR_HU) -> sitk.Image:
    """Linear resampling of a CT (float32 output); Gaussian pre-filter along axes that get coarser.

    The anti-aliasing sigma per axis is (new − old spacing) / 2 mm (skimage's (factor − 1) / 2 voxels).
    """
    img = sitk.Cast(image, sitk.sitkFloat32)
    if antialias:
        old = np.asarray(image.GetSpacing(), float)
        sigma = np.maximum(0.0, (np.asarray(grid.spacing, float) - old) / 2.0)
        if np.any(sigma > 0.05 * old):
            img = sitk.DiscreteGaussian(img, [float(s * s) for s in sigma], 32, 0.01, True)
    return _resample(img, grid, sitk.sitkLinear, default, sitk.sitkFloat32)


def resample_label(label: sitk.Image, grid: Grid) -> sitk.Image:
    """Nearest-neighbour resampling of a label map (uint8 output, 0 outside)."""
    return _resample(label, grid, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


# --------------------------------------------------------------------------- intensities


def normalize(values: Any, norm: Normalization | Mapping[str, Any]) -> Any:
    """Clip HU to the window and normalise; works on numpy arrays and torch tensors (float32 out)."""
    n = norm if isinstance(norm, Normalization) else Normalization.from_dict(norm)
    lo, hi = n.window
    if isinstance(values, np.ndarray) or np.isscalar(values):
        x = np.clip(np.asarray(values, dtype=np.float32), lo, hi)
    else:  # torch tensor (or MONAI MetaTensor)
        x = values.float().clamp(lo, hi)
    if n.mode == "unit":
        return (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return (x - np.float32(n.mean)) * np.float32(1.0 / n.std)


# --------------------------------------------------------------------------- head crop


def _disk(radius_vox: tuple[int, int]) -> np.ndarray:
    ry, rx = radius_vox
    y, x = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    d = (y / max(ry, 1e-6)) ** 2 + (x / max(rx, 1e-6)) ** 2 <= 1.0
    return d[np.newaxis]


def head_bbox(
    hu_zyx: np.ndarray,
    spacing_xyz: Sequence[float],
    *,
    threshold: float = -500.0,
    margin_mm: float = 5.0,
    erosion_mm: float = 4.0,
) -> Box:
    """(z, y, x) slices of the head: tissue > ``threshold`` HU, table removed, plus ``margin_mm``.

    Returns the full extent when no tissue is found.
    """
    shape = hu_zyx.shape
    full: Box = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    mask = hu_zyx > threshold
    if not mask.any():
        return full
    sx, sy, sz = (float(s) for s in spacing_xyz)
    radius = (int(round(erosion_mm / sy)), int(round(erosion_mm / sx)))
    core = mask
    if max(radius) > 0:
        structure = _disk(radius)
        eroded = ndimage.binary_erosion(mask, structure=structure)
        if eroded.any():
            core = eroded
    labels, n = ndimage.label(core)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        core = labels == int(np.argmax(sizes))
    if max(radius) > 0 and core is not mask:
        core = ndimage.binary_dilation(core, structure=_disk(radius)) & mask
    idx = (
        np.nonzero(core.any(axis=(1, 2)))[0],
        np.nonzero(core.any(axis=(0, 2)))[0],
        np.nonzero(core.any(axis=(0, 1)))[0],
    )
    if any(len(i) == 0 for i in idx):
        return full
    margins = (int(np.ceil(margin_mm / sz)), int(np.ceil(margin_mm / sy)), int(np.ceil(margin_mm / sx)))
    return tuple(  # type: ignore[return-value]
        slice(max(0, int(i[0]) - m), min(n_, int(i[-1]) + 1 + m)) for i, m, n_ in zip(idx, margins, shape, strict=True)
    )


def union_box(a: Box, b: Box) -> Box:
    """Smallest box holding both boxes."""
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop the last three (z, y, x) axes of ``array`` (channels first allowed)."""
    return array[(Ellipsis, *box)]


def uncrop(array: np.ndarray, box: Box, shape_zyx: Sequence[int], fill: float | Sequence[float] = 0) -> np.ndarray:
    """Inverse of :func:`crop`: place ``array`` into a (C,) z, y, x array of ``shape_zyx`` filled with ``fill``.

    ``fill`` may be one value per channel (e.g. background probability 1, others 0).
    """
    lead = array.shape[:-3]
    out = np.empty((*lead, *shape_zyx), dtype=array.dtype)
    if np.ndim(fill) == 0:
        out[...] = fill
    else:
        out[...] = np.asarray(fill, dtype=array.dtype).reshape(-1, 1, 1, 1)
    out[(Ellipsis, *box)] = array
    return out


# --------------------------------------------------------------------------- high level


@dataclass
class Prepared:
    """An image on the (cropped) working grid plus what is needed to go back."""

    hu: np.ndarray  # float32 (z, y, x), HU, cropped
    working: Grid  # full working grid (before the crop)
    box: Box  # crop box on the working grid
    original: Grid  # the input's grid, exactly as read
    config: PreprocessConfig

    @property
    def grid(self) -> Grid:
        """The cropped working grid (geometry of ``hu``)."""
        return self.working.cropped(self.box)

    def normalized(self) -> np.ndarray:
        return normalize(self.hu, self.config.normalization)


def prepare_image(image: sitk.Image, config: PreprocessConfig, *, keep_box: Box | None = None) -> Prepared:
    """Orient, resample to the working spacing and crop to the head (``keep_box`` is always kept inside)."""
    original = Grid.of(image)
    oriented = orient_axial(image)
    grid = working_grid(oriented, config.spacing_xyz)
    hu = sitk.GetArrayFromImage(resample_image(oriented, grid, antialias=config.antialias))
    shape = hu.shape
    box: Box = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    if config.crop:
        box = head_bbox(
            hu,
            config.spacing_xyz,
            threshold=config.crop_threshold_hu,
            margin_mm=config.crop_margin_mm,
            erosion_mm=config.table_erosion_mm,
        )
        if keep_box is not None:
            box = union_box(box, keep_box)
    return Prepared(np.ascontiguousarray(hu[box]), grid, box, original, config)


def label_to_working(label: sitk.Image, working: Grid) -> np.ndarray:
    """A label map on the full working grid, (z, y, x) uint8 (nearest neighbour)."""
    return sitk.GetArrayFromImage(resample_label(orient_axial(label), working))


def label_box(label_zyx: np.ndarray) -> Box | None:
    """Bounding box of the non-zero voxels, or None when empty."""
    nz = [np.nonzero(label_zyx.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1))]
    if any(len(i) == 0 for i in nz):
        return None
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)  # type: ignore[return-value]


def point_to_index(grid: Grid, point: Sequence[float]) -> np.ndarray:
    """Continuous voxel index (x, y, z) of a physical point on ``grid``."""
    return np.linalg.solve(grid.matrix, np.asarray(point, float) - np.asarray(grid.origin)) / np.asarray(grid.spacing)


#: Working-grid voxels whose foreground probability reaches this are resampled back; elsewhere
#: background wins the arg-max anyway (after linear interpolation a class needs > 1/C somewhere).
FOREGROUND_FLOOR = 0.2


def foreground_box_on_original(probs: np.ndarray, prepared: Prepared, margin: int = 2) -> Box | None:
    """Box (z, y, x) of the original grid that holds every voxel whose arg-max can be foreground.

    Found on the working grid (voxels where a foreground class reaches ``FOREGROUND_FLOOR``),
    grown by ``margin`` working voxels, and mapped corner by corner to the original grid, plus
    ``margin`` original voxels.  None when no voxel can be foreground.
    """
    fg = probs[1:].max(axis=0) >= FOREGROUND_FLOOR
    box = label_box(fg)
    if box is None:
        return None
    offset = [prepared.box[i].start or 0 for i in range(3)]
    lo = [box[i].start + offset[i] - margin for i in range(3)]  # z, y, x on the full working grid
    hi = [box[i].stop - 1 + offset[i] + margin for i in range(3)]
    corners = [
        point_to_index(prepared.original, prepared.working.index_to_point([x, y, z]))
        for z in (lo[0], hi[0])
        for y in (lo[1], hi[1])
        for x in (lo[2], hi[2])
    ]
    c = np.array(corners)  # (8, xyz)
    start = np.floor(c.min(axis=0)).astype(int) - margin
    stop = np.ceil(c.max(axis=0)).astype(int) + margin + 1
    size = np.asarray(prepared.original.size)
    start, stop = np.clip(start, 0, size), np.clip(stop, 0, size)
    if np.any(stop <= start):
        return None
    return (slice(int(start[2]), int(stop[2])), slice(int(start[1]), int(stop[1])), slice(int(start[0]), int(stop[0])))


def probabilities_to_original(
    probs: np.ndarray, prepared: Prepared, channel: int, target: Grid | None = None
) -> np.ndarray:
    """One class channel of ``probs`` (C, z, y, x on the cropped working grid) on the original grid
    (or on ``target``, a sub-grid of it), float32."""
    fill = 1.0 if channel == 0 else 0.0
    full = uncrop(probs[channel].astype(np.float32, copy=False), prepared.box, prepared.working.shape_zyx, fill)
    img = prepared.working.apply_to(sitk.GetImageFromArray(full))
    back = _resample(img, target or prepared.original, sitk.sitkLinear, fill, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(back)


def labels_to_original(probs: np.ndarray, prepared: Prepared) -> sitk.Image:
    """Arg-max label map (uint8) on the original grid from working-grid class probabilities (C, z, y, x).

    Only the box of the original grid where a foreground class can win is resampled
    (:func:`foreground_box_on_original`); channels go one at a time (linear) with a running
    arg-max, so memory stays at two float32 volumes of that box.
    """
    label = np.zeros(prepared.original.shape_zyx, dtype=np.uint8)
    box = foreground_box_on_original(probs, prepared)
    if box is not None:
        target = prepared.original.cropped(box)
        best = probabilities_to_original(probs, prepared, 0, target)
        sub = np.zeros(best.shape, dtype=np.uint8)
        for c in range(1, probs.shape[0]):
            p = probabilities_to_original(probs, prepared, c, target)
            better = p > best
            sub[better] = c
            np.maximum(best, p, out=best)
            del p, better
        label[box] = sub
    out = sitk.GetImageFromArray(label)
    return prepared.original.apply_to(out)
