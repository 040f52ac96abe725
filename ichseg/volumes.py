"""Volumes and clinical measurements of a labelmap: mL per class, lesion counts, PHE/ICH ratio, ABC/2.

All volumes are voxel count × voxel volume (from the spacing) in float64.  Arrays are
indexed (z, y, x) as SimpleITK's ``GetArrayFromImage`` returns them; spacing is given in
ITK order (x, y, z) in mm.  "Axial" means the acquired slice plane (index z), which is
where radiologists measure ABC/2, also on gantry-tilted scans.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .labels import CLASSES, ICH, PHE, LabelClass

__all__ = ["ABC2", "ClassMeasurement", "Measurements", "abc2", "measure", "measurements_csv", "CSV_COLUMNS"]

#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one lesion.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass
class ClassMeasurement:
    value: int
    name: str
    voxels: int
    volume_ml: float
    lesions: int


@dataclass
class ABC2:
    """The ABC/2 estimate of a hematoma (Kwak/Kothari): A·B·C/2 with A, B, C in cm gives mL."""

    a_mm: float
    b_mm: float
    c_mm: float
    volume_ml: float
    slice_index: int  # the axial slice (index z) with the largest area, where A and B are measured
    slices: int  # number of slices containing the lesion


@dataclass
class Measurements:
    spacing_mm: tuple[float, float, float]
    voxel_volume_ml: float
    classes: dict[str, ClassMeasurement] = field(default_factory=dict)
    phe_ich_ratio: float | None = None
    ich_abc2: ABC2 | None = None

    def volume_ml(self, key: str) -> float:
        return self.classes[key].volume_ml

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spacing_mm"] = list(self.spacing_mm)
        return d


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm³), float64."""
    return float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0


def count_lesions(mask: np.ndarray) -> int:
    """Number of 26-connected components of a binary mask."""
    if not mask.any():
        return 0
    _, n = ndimage.label(mask, structure=CONNECTIVITY)
    return int(n)


def _pixel_corners(mask2d: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Physical (x, y) in mm of the corners of the boundary pixels of a 2-D mask."""
    boundary = mask2d & ~ndimage.binary_erosion(mask2d)
    ys, xs = np.nonzero(boundary)
    corners = []
    for dy in (-0.5, 0.5):
        for dx in (-0.5, 0.5):
            corners.append(np.stack([(xs + dx) * sx, (ys + dy) * sy], axis=1))
    return np.unique(np.concatenate(corners), axis=0)


def _feret(points: np.ndarray) -> tuple[float, float]:
    """Largest diameter A of a point set and its width B perpendicular to A (both in mm)."""
    if len(points) < 3:
        return 0.0, 0.0
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # collinear points: a line of pixels
        hull = points
    diff = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    a = float(dist[i, j])
    axis = (hull[j] - hull[i]) / a
    perp = np.array([-axis[1], axis[0]])
    proj = hull @ perp
    return a, float(proj.max() - proj.min())


def abc2(mask: np.ndarray, spacing: Sequence[float]) -> ABC2 | None:
    """ABC/2 of a binary (z, y, x) mask: A largest axial diameter on the slice of largest area,
    B the diameter perpendicular to A on that slice, C = slices containing the lesion × slice spacing."""
    if not mask.any():
        return None
    sx, sy, sz = (float(s) for s in spacing)
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    k = int(np.argmax(areas))
    a, b = _feret(_pixel_corners(mask[k], sx, sy))
    n_slices = int((areas > 0).sum())
    c = n_slices * sz
    return ABC2(a_mm=a, b_mm=b, c_mm=c, volume_ml=a * b * c / 2.0 / 1000.0, slice_index=k, slices=n_slices)


def measure(label: np.ndarray, spacing: Sequence[float], classes: Iterable[LabelClass] = CLASSES) -> Measurements:
    """Measure a (z, y, x) labelmap with voxel spacing (x, y, z) in mm."""
    if label.ndim != 3:
        raise ValueError(f"expected a 3-D labelmap, got {label.ndim}-D")
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"invalid spacing {spacing}")
    vml = voxel_volume_ml(spacing_t)
    counts = np.bincount(label.ravel().astype(np.intp, copy=False), minlength=max(c.value for c in CLASSES) + 1)
    result = Measurements(spacing_mm=spacing_t, voxel_volume_ml=vml)  # type: ignore[arg-type]
    for cls in classes:
        n = int(counts[cls.value]) if cls.value < len(counts) else 0
        lesions = count_lesions(label == cls.value) if n else 0
        result.classes[cls.key] = ClassMeasurement(cls.value, cls.name, n, n * vml, lesions)
    ich = result.classes.get(ICH.key)
    phe = result.classes.get(PHE.key)
    if ich and phe and ich.voxels > 0:
        result.phe_ich_ratio = phe.volume_ml / ich.volume_ml
    if ich and ich.voxels > 0:
        result.ich_abc2 = abc2(label == ICH.value, spacing_t)
    return result


CSV_COLUMNS = (
    ["case"]
    + [f"{c.key}_ml" for c in CLASSES]
    + [f"{c.key}_lesions" for c in CLASSES]
    + ["PHE_ICH_ratio", "ICH_ABC2_ml", "ICH_A_mm", "ICH_B_mm", "ICH_C_mm"]
)


def csv_row(case: str, m: Measurements) -> dict[str, str]:
    """One CSV row (strings, fixed precision) for a case."""
    row: dict[str, str] = {"case": case}
    for c in CLASSES:
        cm = m.classes.get(c.key)
        row[f"{c.key}_ml"] = f"{cm.volume_ml:.3f}" if cm else ""
        row[f"{c.key}_lesions"] = str(cm.lesions) if cm else ""
    row["PHE_ICH_ratio"] = f"{m.phe_ich_ratio:.3f}" if m.phe_ich_ratio is not None else ""
    e = m.ich_abc2
    row["ICH_ABC2_ml"] = f"{e.volume_ml:.3f}" if e else ""
    row["ICH_A_mm"] = f"{e.a_mm:.1f}" if e else ""
    row["ICH_B_mm"] = f"{e.b_mm:.1f}" if e else ""
    row["ICH_C_mm"] = f"{e.c_mm:.1f}" if e else ""
    return row


def measurements_csv(rows: Iterable[tuple[str, Measurements]]) -> str:
    """CSV text with one row per (case, measurements)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case, m in rows:
        writer.writerow(csv_row(case, m))
    return buf.getvalue()


def format_table(m: Measurements) -> str:
    """A short human-readable summary for the terminal."""
    lines = [f"{'class':<6} {'volume (mL)':>12} {'lesions':>8}"]
    for key, cm in m.classes.items():
        lines.append(f"{key:<6} {cm.volume_ml:>12.2f} {cm.lesions:>8d}")
    if m.phe_ich_ratio is not None:
        lines.append(f"PHE/ICH ratio: {m.phe_ich_ratio:.2f}")
    if m.ich_abc2 is not None:
        e = m.ich_abc2
        lines.append(
            f"ICH ABC/2: {e.volume_ml:.2f} mL (A {e.a_mm:.1f} mm, B {e.b_mm:.1f} mm, C {e.c_mm:.1f} mm; "
            f"planimetric {m.classes[ICH.key].volume_ml:.2f} mL)"
        )
    return "\n".join(lines)
