"""Dataset fingerprint (nnU-Net style): spacings, sizes, head extents, foreground intensities, class volumes.

Computed on each case after :func:`ichseg.preprocess.orient_axial` (so the axes are x, y, z of
an axial scan whatever the storage order) and saved as JSON; the planner reads only this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from .. import labels
from ..preprocess import DEFAULT_WINDOW, head_bbox, orient_axial, resample_image, working_grid

__all__ = ["CaseInfo", "Fingerprint", "case_info", "build_fingerprint", "SAMPLES_PER_CASE"]

SAMPLES_PER_CASE = 10_000
EXTENT_GRID_MM = 2.0


@dataclass
class CaseInfo:
    name: str
    spacing_xyz: list[float]
    size_xyz: list[int]
    head_extent_mm_xyz: list[float]  # physical size of the head crop box
    obliquity_deg: float  # angle between the slice normal and the nearest axis (gantry tilt)
    class_voxels: dict[str, int]
    class_ml: dict[str, float]
    hu_min: float
    hu_max: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _obliquity_deg(direction: Sequence[float]) -> float:
    m = np.reshape(direction, (3, 3))
    return float(math.degrees(math.acos(min(1.0, float(np.max(np.abs(m[:, 2])))))))


def case_info(name: str, image: sitk.Image, label: sitk.Image, seed: int = 0) -> tuple[CaseInfo, np.ndarray]:
    """Fingerprint of one case and a random sample (≤ 10 000) of its foreground intensities (HU)."""
    oriented = orient_axial(image)
    spacing = [float(s) for s in oriented.GetSpacing()]
    size = [int(s) for s in oriented.GetSize()]
    coarse = working_grid(oriented, [max(s, EXTENT_GRID_MM) for s in spacing])
    hu_coarse = sitk.GetArrayFromImage(resample_image(oriented, coarse, antialias=False))
    box = head_bbox(hu_coarse, coarse.spacing, margin_mm=0.0)
    extent = [(b.stop - b.start) * s for b, s in zip(reversed(box), coarse.spacing, strict=True)]
    arr = sitk.GetArrayViewFromImage(image)
    lab = sitk.GetArrayViewFromImage(label)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    counts = np.bincount(np.asarray(lab, dtype=np.uint8).ravel(), minlength=labels.NUM_CLASSES)
    class_voxels = {c.key: int(counts[c.value]) for c in labels.CLASSES}
    fg = np.asarray(arr)[np.asarray(lab) > 0]
    rng = np.random.default_rng(seed)
    sample = rng.choice(fg, size=min(SAMPLES_PER_CASE, fg.size), replace=False) if fg.size else np.zeros(0)
    info = CaseInfo(
        name=name,
        spacing_xyz=spacing,
        size_xyz=size,
        head_extent_mm_xyz=[float(e) for e in extent],
        obliquity_deg=round(_obliquity_deg(oriented.GetDirection()), 3),
        class_voxels=class_voxels,
        class_ml={k: round(v * voxel_ml, 3) for k, v in class_voxels.items()},
        hu_min=float(np.min(arr)),
        hu_max=float(np.max(arr)),
    )
    return info, sample.astype(np.float32)


@dataclass
class Fingerprint:
    cases: list[CaseInfo] = field(default_factory=list)
    foreground: dict[str, float] = field(default_factory=dict)  # HU statistics of labelled voxels

    def spacings(self) -> np.ndarray:
        return np.array([c.spacing_xyz for c in self.cases], dtype=float).reshape(-1, 3)

    def sizes(self) -> np.ndarray:
        return np.array([c.size_xyz for c in self.cases], dtype=float).reshape(-1, 3)

    def extents(self) -> np.ndarray:
        return np.array([c.head_extent_mm_xyz for c in self.cases], dtype=float).reshape(-1, 3)

    def to_dict(self) -> dict[str, Any]:
        return {"cases": [asdict(c) for c in self.cases], "foreground": self.foreground}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls([CaseInfo.from_dict(c) for c in d.get("cases", [])], dict(d.get("foreground", {})))

    def summary(self) -> dict[str, Any]:
        """A compact description of the training data for the model card."""
        sp = self.spacings()
        out: dict[str, Any] = {"n_cases": len(self.cases)}
        if len(self.cases):
            out["spacing_xyz_median"] = [round(float(v), 4) for v in np.median(sp, axis=0)]
            out["spacing_z_values"] = sorted({round(float(v), 3) for v in sp[:, 2]})
            out["tilted_cases"] = int(sum(c.obliquity_deg > 1.0 for c in self.cases))
            for c in labels.CLASSES:
                ml = np.array([ci.class_ml.get(c.key, 0.0) for ci in self.cases])
                present = ml > 0
                out[f"{c.key}_cases"] = int(present.sum())
                out[f"{c.key}_ml_median"] = round(float(np.median(ml[present])), 2) if present.any() else 0.0
        out["foreground_hu"] = {k: round(float(v), 2) for k, v in self.foreground.items()}
        return out


def build_fingerprint(
    infos: Sequence[CaseInfo], samples: Sequence[np.ndarray], window: Sequence[float] = DEFAULT_WINDOW
) -> Fingerprint:
    """Combine per-case fingerprints; foreground statistics as nnU-Net (mean, SD, 0.5/99.5 percentiles).

    ``window_mean``/``window_std`` are the statistics after clipping to ``window`` (for z-score
    normalisation).
    """
    allv = np.concatenate([s for s in samples if s.size]) if any(s.size for s in samples) else np.zeros(0)
    fg: dict[str, float] = {}
    if allv.size:
        fg = {
            "mean": float(allv.mean()),
            "std": float(allv.std()),
            "median": float(np.median(allv)),
            "p00_5": float(np.percentile(allv, 0.5)),
            "p99_5": float(np.percentile(allv, 99.5)),
            "min": float(allv.min()),
            "max": float(allv.max()),
        }
        clipped = np.clip(allv, window[0], window[1])
        fg.update(window_low=float(window[0]), window_high=float(window[1]))
        fg.update(window_mean=float(clipped.mean()), window_std=float(max(clipped.std(), 1e-3)))
    return Fingerprint(list(infos), fg)
