"""Lesion-level detection: connected components of one class in prediction and reference.

Lesions are 26-connected components.  A reference lesion is *detected* when any of its
voxels is also predicted as the same class; a predicted lesion is a *false positive* when
none of its voxels is in the reference of that class.  Sensitivity = detected / reference
lesions (None when the reference has no lesion).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ._box import bounding_box

__all__ = ["CONNECTIVITY", "LesionDetection", "detect_lesions"]

#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one lesion.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionDetection:
    ref_lesions: int
    pred_lesions: int
    detected: int  # reference lesions overlapping the prediction
    false_positives: int  # predicted lesions not overlapping the reference

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.ref_lesions if self.ref_lesions else None

    def to_dict(self) -> dict:
        return {**asdict(self), "sensitivity": self.sensitivity}


def detect_lesions(pred: np.ndarray, ref: np.ndarray) -> LesionDetection:
    """Count reference lesions found and false-positive predicted lesions (boolean masks, same shape)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    box = bounding_box(pred | ref)
    if box is None:
        return LesionDetection(0, 0, 0, 0)
    p, r = pred[box], ref[box]
    structure = CONNECTIVITY if p.ndim == 3 else np.ones((3,) * p.ndim, dtype=bool)
    ref_components, n_ref = ndimage.label(r, structure=structure)
    pred_components, n_pred = ndimage.label(p, structure=structure)
    both = p & r
    detected = np.unique(ref_components[both]).size
    matched = np.unique(pred_components[both]).size
    return LesionDetection(int(n_ref), int(n_pred), int(detected), int(n_pred - matched))
