"""Training and validation transforms: MONAI dictionary transforms on cached HU volumes.

Input items are ``{"image": (1, z, y, x) float32 HU, "label": (1, z, y, x) uint8}``.  Order:

1. pad to the crop size with air / background;
2. class-balanced patch sampling (``RandCropByLabelClassesd``; ratios bg:ICH:PHE:IVH default 1:1:1:1,
   so ≥ 3/4 of patches are centred on a lesion class present in the case — PHE and the rare IVH
   are seen often); background patches are centred on *hard negatives* — tissue whose HU looks
   like blood (default 40–150 HU: grey matter, the cerebellum, deep nuclei, falx, calcifications,
   the inner table of the skull) — rather than on any head voxel, most of which are scalp, bone
   and face that no model confuses with a bleed; crop a larger patch so rotation/scaling do not
   bring in padding, then ``CenterSpatialCropd`` to the patch;
3. spatial: rotation (mostly in-plane; out-of-plane only for isotropic plans) and scaling
   (``RandAffined``), left-right mirroring (``RandFlipd`` on x);
4. HU calibration: scale ±3 % and offset ±5 HU (``RandScaleIntensityd``/``RandShiftIntensityd``)
   applied to HU, *before* the window clip;
5. normalisation (:func:`ichseg.preprocess.normalize`, the same function inference uses);
6. image quality: thick-slice simulation (Gaussian blur along z only), blur, low resolution
   (``RandSimulateLowResolutiond``), Gaussian noise, gamma (``RandAdjustContrastd``).

Every random transform draws from its own RNG, reseeded per sample by the training loop, so a
sample depends only on (seed, rank, step, index) — resuming reproduces the data exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    EnsureTyped,
    Lambdad,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    SpatialPadd,
)
from monai.transforms.utils import map_classes_to_indices

from ..labels import NUM_CLASSES
from ..preprocess import AIR_HU, Normalization, normalize

__all__ = [
    "train_transforms",
    "val_transforms",
    "crop_size_for",
    "PatchCentresd",
    "DEFAULT_CLASS_RATIOS",
    "DEFAULT_NEGATIVE_HU",
]

KEYS = ("image", "label")
DEFAULT_CLASS_RATIOS = (1.0, 1.0, 1.0, 1.0)  # background, ICH, PHE, IVH
DEFAULT_NEGATIVE_HU = (40.0, 150.0)  # background patch centres: blood-like tissue that is not a lesion
HEAD_THRESHOLD_HU = -500.0  # patch centres lie in the head, not in the air around it
INDICES_KEY = "label_cls_indices"


class PatchCentresd(MapTransform):
    """Candidate patch centres per class for ``RandCropByLabelClassesd`` (its ``indices_key``).

    Lesion classes: their voxels inside the head. Background: background voxels whose HU lies in
    ``negative_hu`` (hard negatives); if a case has none, any background voxel in the head.
    Expects HU images (before normalisation).
    """

    def __init__(self, negative_hu: Sequence[float] | None) -> None:
        super().__init__(keys=KEYS)
        self.negative_hu = None if negative_hu is None else (float(negative_hu[0]), float(negative_hu[1]))

    def __call__(self, data):
        d = dict(data)
        image, label = d["image"], d["label"]
        indices = map_classes_to_indices(label, NUM_CLASSES, image, HEAD_THRESHOLD_HU)
        if self.negative_hu is not None:
            lo, hi = self.negative_hu
            hard = (label[0] == 0) & (image[0] >= lo) & (image[0] <= hi)
            hard_indices = torch.nonzero(torch.as_tensor(hard).reshape(-1)).flatten()
            if hard_indices.numel() > 0:
                indices[0] = hard_indices
        d[INDICES_KEY] = indices
        return d


def crop_size_for(patch_zyx: Sequence[int], anisotropic: bool) -> list[int]:
    """Crop before rotation: 1.25× in-plane (and along z for isotropic plans), so corners stay inside."""
    z, y, x = (int(p) for p in patch_zyx)
    grow = 1.25
    return [int(math.ceil(z * (1.0 if anisotropic else grow))), int(math.ceil(y * grow)), int(math.ceil(x * grow))]


def train_transforms(
    patch_zyx: Sequence[int],
    normalization: Normalization,
    *,
    anisotropic: bool,
    class_ratios: Sequence[float] = DEFAULT_CLASS_RATIOS,
    negative_hu: Sequence[float] | None = DEFAULT_NEGATIVE_HU,
    augment: bool = True,
) -> Compose:
    """The training pipeline (see module docstring)."""
    if len(class_ratios) != NUM_CLASSES:
        raise ValueError(f"class_ratios needs {NUM_CLASSES} values (bg, ICH, PHE, IVH), got {list(class_ratios)}")
    crop = crop_size_for(patch_zyx, anisotropic) if augment else [int(p) for p in patch_zyx]
    steps: list = [
        EnsureTyped(keys=KEYS, data_type="tensor", track_meta=False),
        SpatialPadd(keys="image", spatial_size=crop, mode="constant", value=AIR_HU),
        SpatialPadd(keys="label", spatial_size=crop, mode="constant", value=0),
        PatchCentresd(negative_hu),
        RandCropByLabelClassesd(
            keys=KEYS,
            label_key="label",
            spatial_size=crop,
            ratios=[float(r) for r in class_ratios],
            num_classes=NUM_CLASSES,
            num_samples=1,
            indices_key=INDICES_KEY,
            warn=False,
        ),
    ]
    if augment:
        out_of_plane = 0.0 if anisotropic else math.radians(15)
        steps += [
            RandAffined(
                keys=KEYS,
                prob=0.3,
                rotate_range=(math.radians(20), out_of_plane, out_of_plane),
                scale_range=(0.0 if anisotropic else 0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            ),
            CenterSpatialCropd(keys=KEYS, roi_size=[int(p) for p in patch_zyx]),
            RandFlipd(keys=KEYS, prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.03, prob=0.3),
            RandShiftIntensityd(keys="image", offsets=5.0, prob=0.3),
        ]
    steps.append(Lambdad(keys="image", func=partial(normalize, norm=normalization)))
    if augment:
        steps += [
            RandGaussianSmoothd(keys="image", sigma_x=(0.5, 1.5), sigma_y=(0.0, 0.0), sigma_z=(0.0, 0.0), prob=0.15),
            RandGaussianSmoothd(keys="image", sigma_x=(0.3, 0.8), sigma_y=(0.3, 0.8), sigma_z=(0.3, 0.8), prob=0.1),
            RandSimulateLowResolutiond(keys="image", prob=0.1, zoom_range=(0.6, 1.0)),
            RandGaussianNoised(keys="image", prob=0.15, std=0.03),
            RandAdjustContrastd(keys="image", prob=0.15, gamma=(0.7, 1.5)),
        ]
    steps.append(EnsureTyped(keys=KEYS, data_type="tensor", dtype=np.float32, track_meta=False))
    return Compose(steps)


def val_transforms(normalization: Normalization) -> Compose:
    """Validation: normalisation only (the whole volume goes through a sliding window)."""
    return Compose(
        [
            EnsureTyped(keys=KEYS, data_type="tensor", track_meta=False),
            Lambdad(keys="image", func=partial(normalize, norm=normalization)),
            EnsureTyped(keys=KEYS, data_type="tensor", dtype=np.float32, track_meta=False),
        ]
    )
