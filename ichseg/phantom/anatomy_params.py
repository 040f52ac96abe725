"""Head-anatomy data types and constants: tissue HU, the intracranial cavity template, the
``Deformation`` protocol (mass effect), per-case ``AnatomyParams`` and the rendered ``Anatomy``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from .geometry import WorkGrid

AIR_HU = -1000.0
FAT_HU = -95.0
MUSCLE_HU = 48.0

# Intracranial cavity (inner table): semi-axes a (x), b (y), centre y0, c_up/c_down above/below the
# origin, and the radius that turns the normalised ellipsoid distance into mm (before per-case scaling).
CAVITY = {"a": 64.0, "b": 83.0, "y0": 2.0, "c_up": 71.0, "c_down": 110.0, "r": 71.0}


class Deformation(Protocol):
    """Smooth displacement of the anatomy (mass effect): maps output points to anatomical points."""

    max_shift: float  # upper bound of the displacement (mm) that boxes must allow for

    def apply(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def efface(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray | float: ...


@dataclass
class AnatomyParams:
    """Per-case anatomical parameters (all JSON-serialisable)."""

    scale: tuple[float, float, float]
    atrophy: float  # 0 young … 1 marked atrophy
    ventricle_scale: float
    ventricle_asymmetry: float
    skull_mm: float
    table_hu: float
    diploe_hu: float
    petrous_hu: float
    scalp_mm: float
    scalp_fat: float
    gm_hu: float
    wm_hu: float
    csf_hu: float
    falx_hu: float
    sinus_hu: float
    falx_calcified: bool
    pineal_calc: list[float] | None  # [radius mm, HU]
    choroid_calc: list[float] | None
    basal_ganglia_calc: list[float] | None
    leukoaraiosis_hu: float
    sulcal_depth_mm: float
    midline_x_mm: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> AnatomyParams:
        g = rng.normal(0.995, 0.03)
        scale = tuple(float(np.clip(g + rng.normal(0, 0.015), 0.9, 1.08)) for _ in range(3))
        atrophy = float(rng.beta(2.0, 2.6))
        wm = float(rng.uniform(28.0, 32.5))
        gm = float(wm + rng.uniform(9.0, 12.0))
        return cls(
            scale=scale,  # type: ignore[arg-type]
            atrophy=atrophy,
            ventricle_scale=float(np.clip(0.82 + 0.55 * atrophy + rng.normal(0, 0.06), 0.75, 1.6)),
            ventricle_asymmetry=float(rng.normal(1.0, 0.06)),
            skull_mm=float(rng.uniform(5.5, 7.5)),
            table_hu=float(rng.uniform(1350, 1650)),
            diploe_hu=float(rng.uniform(350, 650)),
            petrous_hu=float(rng.uniform(1600, 2000)),
            scalp_mm=float(rng.uniform(3.5, 5.5)),
            scalp_fat=float(rng.uniform(0.25, 0.85)),
            gm_hu=gm,
            wm_hu=wm,
            csf_hu=float(rng.uniform(2.0, 8.0)),
            falx_hu=float(rng.uniform(60, 100)),
            sinus_hu=float(rng.uniform(48, 62)),
            falx_calcified=bool(rng.random() < 0.15),
            pineal_calc=[float(rng.uniform(1.8, 3.5)), float(rng.uniform(250, 600))] if rng.random() < 0.65 else None,
            choroid_calc=[float(rng.uniform(1.8, 3.5)), float(rng.uniform(200, 450))] if rng.random() < 0.55 else None,
            basal_ganglia_calc=[float(rng.uniform(1.5, 3.0)), float(rng.uniform(150, 350))]
            if rng.random() < 0.08
            else None,
            leukoaraiosis_hu=float(max(0.0, atrophy - 0.3) * rng.uniform(0.0, 14.0)),
            sulcal_depth_mm=float(rng.uniform(14.0, 20.0)),
            midline_x_mm=float(rng.normal(0.0, 0.8)),
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Anatomy:
    """Rendered anatomy on the working grid."""

    grid: WorkGrid
    hu: np.ndarray  # float32 HU (lesions not yet painted)
    brain: np.ndarray  # bool: brain parenchyma (where a bleed or edema may be)
    ventricles: np.ndarray  # bool: ventricular system (where IVH may be)
    d_cavity: np.ndarray  # float32 signed distance to the inner skull surface (mm, <0 inside)
    overlays: list = field(default_factory=list)  # (box, soft fraction, HU) painted after the lesions
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
