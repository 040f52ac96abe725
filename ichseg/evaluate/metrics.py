"""Per-case, per-class segmentation metrics from two label arrays and the voxel spacing.

Arrays are indexed (z, y, x) as SimpleITK's ``GetArrayFromImage`` returns them; the
spacing is given in ITK order (x, y, z) in mm, as ``image.GetSpacing()`` returns it.

Conventions for empty masks (a class absent from prediction and/or reference):

* ``dice_empty1``: Dice, with an empty prediction of an empty reference counting as 1.0
  (and 0.0 when exactly one of them is empty);
* ``dice_pos``: Dice over positive cases only, None when the reference is empty;
* ``hd95_mm`` and ``nsd``: None when either mask is empty.  (MONAI returns inf for one
  empty mask and nan for two in HD95, and 0 / nan in surface Dice; a mean over cases
  would then be inf, or mix a distance with a detection failure.)  Detection failures
  show up in Dice, volumes and the lesion counts instead;
* ``rvd`` = (pred - ref) / ref as a fraction, None when the reference is empty.

HD95 is MONAI's symmetric 95th-percentile Hausdorff distance between the surface voxels
of the two masks (the larger of the two directed 95th percentiles), in mm.  ``nsd`` is
MONAI's normalised surface Dice: the fraction of surface voxels of both masks lying within
``tolerance_mm`` of the other surface.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from ..labels import CLASSES, LabelClass
from ._box import bounding_box
from .lesions import detect_lesions

__all__ = ["DEFAULT_TOLERANCE_MM", "HD_PERCENTILE", "class_metrics", "dice", "evaluate_case", "surface_metrics"]

#: Tolerance of the normalised surface Dice, in mm.
DEFAULT_TOLERANCE_MM = 2.0
#: Percentile of the Hausdorff distance.
HD_PERCENTILE = 95.0


def dice(pred: np.ndarray, ref: np.ndarray, empty: float | None = 1.0) -> float | None:
    """Dice of two boolean masks; ``empty`` is returned when both are empty."""
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred + n_ref == 0:
        return empty
    return 2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref)


def _spacing_zyx(spacing: Sequence[float], ndim: int) -> list[float]:
    values = [float(s) for s in spacing]
    if len(values) != ndim or not all(s > 0 for s in values):
        raise ValueError(f"spacing must hold {ndim} positive values (x, y, z), got {tuple(spacing)}")
    return values[::-1]


def surface_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> tuple[float | None, float | None]:
    """``(hd95_mm, nsd)`` of two boolean masks with MONAI; ``(None, None)`` when either is empty.

    Both masks are cropped to the bounding box of their union (plus one voxel, so that
    surfaces are unchanged) before MONAI sees them.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    if not pred.any() or not ref.any():
        return None, None
    box = bounding_box(pred | ref, margin=1)
    spacing_zyx = _spacing_zyx(spacing, pred.ndim)
    p = torch.from_numpy(np.ascontiguousarray(pred[box], dtype=bool))[None, None]
    r = torch.from_numpy(np.ascontiguousarray(ref[box], dtype=bool))[None, None]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd = compute_hausdorff_distance(p, r, include_background=True, percentile=HD_PERCENTILE, spacing=spacing_zyx)
        nsd = compute_surface_dice(
            p, r, class_thresholds=[float(tolerance_mm)], include_background=True, spacing=spacing_zyx
        )
    hd_value, nsd_value = float(hd[0, 0]), float(nsd[0, 0])
    return (
        hd_value if np.isfinite(hd_value) else None,
        nsd_value if np.isfinite(nsd_value) else None,
    )


def class_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict:
    """All per-case metrics of one class from its boolean masks (see the module docstring)."""
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    overlap = int(np.count_nonzero(pred & ref)) if n_pred and n_ref else 0
    vol_pred, vol_ref = n_pred * voxel_ml, n_ref * voxel_ml
    d = 2.0 * overlap / (n_pred + n_ref) if n_pred + n_ref else None
    hd95, nsd = surface_metrics(pred, ref, spacing, tolerance_mm) if n_pred and n_ref else (None, None)
    return {
        "pred_voxels": n_pred,
        "ref_voxels": n_ref,
        "overlap_voxels": overlap,
        "volume_pred_ml": vol_pred,
        "volume_ref_ml": vol_ref,
        "volume_diff_ml": vol_pred - vol_ref,
        "abs_volume_error_ml": abs(vol_pred - vol_ref),
        "rvd": (vol_pred - vol_ref) / vol_ref if n_ref else None,
        "dice_empty1": 1.0 if d is None else d,
        "dice_pos": d if n_ref else None,
        "hd95_mm": hd95,
        "nsd": nsd,
        "lesions": detect_lesions(pred, ref).to_dict(),
    }


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    classes: Iterable[LabelClass] = CLASSES,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict:
    """Metrics of every class of one case: ``{class key: class_metrics(...)}``.

    ``pred`` and ``ref`` are label arrays (z, y, x) of the same shape holding scheme values;
    ``spacing`` is (x, y, z) in mm.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    _spacing_zyx(spacing, pred.ndim)
    return {cls.key: class_metrics(pred == cls.value, ref == cls.value, spacing, tolerance_mm) for cls in classes}
