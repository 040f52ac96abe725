"""Implicit-shape helpers: approximate signed distances, smooth unions, soft masks, noise fields.

Shapes are described by approximate signed distance fields in millimetres (negative
inside).  All functions work on numpy arrays that broadcast (``X`` of shape (1, 1, nx),
``Y`` (1, ny, 1), ``Z`` (nz, 1, 1)) and return float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

F32 = np.float32


def soft(d: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased inside fraction of a signed distance: 1 inside, 0 outside, linear over ``width`` mm."""
    out = np.multiply(d, F32(-1.0 / width), dtype=F32)
    out += F32(0.5)
    return np.clip(out, F32(0.0), F32(1.0), out=out)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (union of two signed distances) with blending radius ``k`` mm."""
    h = np.clip(F32(0.5) + F32(0.5 / k) * (b - a), F32(0.0), F32(1.0))
    return (b + (a - b) * h - F32(k) * h * (F32(1.0) - h)).astype(F32, copy=False)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (intersection of two signed distances) with blending radius ``k`` mm."""
    return -smin(-a, -b, k)


def ellipsoid(X, Y, Z, center: Sequence[float], radii: Sequence[float], rot: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (radial scaling; exact on a sphere).

    ``rot`` (3×3) maps the ellipsoid's own axes to head axes (columns are its axes).
    """
    dx, dy, dz = X - F32(center[0]), Y - F32(center[1]), Z - F32(center[2])
    if rot is not None:
        r = np.asarray(rot, dtype=F32)
        dx, dy, dz = (
            r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
        )
    rx, ry, rz = (F32(v) for v in radii)
    q = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2 + (dz / rz) ** 2, dtype=F32)
    return ((q - F32(1.0)) * F32(min(radii))).astype(F32, copy=False)


def capsule(X, Y, Z, a: Sequence[float], b: Sequence[float], ra: float, rb: float) -> np.ndarray:
    """Signed distance to a rounded cone from point ``a`` (radius ``ra``) to ``b`` (radius ``rb``)."""
    ax, ay, az = (F32(v) for v in a)
    ux, uy, uz = (F32(b[i] - a[i]) for i in range(3))
    ll = float(ux * ux + uy * uy + uz * uz) or 1e-6
    px, py, pz = X - ax, Y - ay, Z - az
    t = np.clip((px * ux + py * uy + pz * uz) * F32(1.0 / ll), F32(0.0), F32(1.0))
    d = np.sqrt((px - t * ux) ** 2 + (py - t * uy) ** 2 + (pz - t * uz) ** 2, dtype=F32)
    return (d - (F32(ra) + t * F32(rb - ra))).astype(F32, copy=False)


def chain(X, Y, Z, points: Sequence[Sequence[float]], radii: Sequence[float], k: float = 2.0) -> np.ndarray:
    """Smooth union of rounded cones along a polyline (a tube of varying radius)."""
    d = capsule(X, Y, Z, points[0], points[1], radii[0], radii[1])
    for i in range(1, len(points) - 1):
        d = smin(d, capsule(X, Y, Z, points[i], points[i + 1], radii[i], radii[i + 1]), k)
    return d


def rotation(rng: np.random.Generator, max_deg: float = 180.0) -> np.ndarray:
    """A random rotation matrix (axis uniformly drawn, angle up to ``max_deg``)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis) + 1e-12
    ang = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * (k @ k)


@dataclass
class Field:
    """Scalar field(s) sampled on a regular grid in head coordinates (mm).

    ``data`` is indexed (z, y, x), or (c, z, y, x) for several channels sharing one grid.
    """

    data: np.ndarray
    origin: tuple[float, float, float]  # head (x, y, z) of data[..., 0, 0, 0]
    spacing: float

    def sample(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Trilinear values on the rectilinear grid ``zs × ys × xs`` (separable: z, then y, then x)."""
        a = self.data
        lead = a.ndim - 3
        for axis, coords in ((0, zs), (1, ys), (2, xs)):
            ax = axis + lead
            i0, wt = _lerp_weights(
                np.asarray(coords, dtype=np.float64), self.origin[2 - axis], self.spacing, a.shape[ax]
            )
            shape = [1] * a.ndim
            shape[ax] = len(coords)
            wt = wt.reshape(shape)
            a0 = np.take(a, i0, axis=ax)
            a1 = np.take(a, i0 + 1, axis=ax)
            a1 -= a0
            a1 *= wt
            a0 += a1
            a = a0
        return a

    def at(self, pts: np.ndarray) -> np.ndarray:
        """Trilinear values at scattered head points ``pts`` (…, 3) of a single-channel field."""
        p = np.asarray(pts, dtype=np.float64)
        idx = [(p[..., 2] - self.origin[2]) / self.spacing, (p[..., 1] - self.origin[1]) / self.spacing]
        idx.append((p[..., 0] - self.origin[0]) / self.spacing)
        return ndimage.map_coordinates(self.data, idx, order=1, mode="nearest").astype(F32)

    def channel(self, c: int) -> Field:
        return Field(self.data[c], self.origin, self.spacing)


def _lerp_weights(coords: np.ndarray, origin: float, spacing: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.clip((coords - origin) / spacing, 0, max(n - 1, 0))
    i0 = np.minimum(np.floor(f).astype(np.intp), max(n - 2, 0))
    return i0, (f - i0).astype(F32)


def axis_to_xyz(axis: int) -> int:
    """Array axis (z, y, x order) to coordinate index (x, y, z order)."""
    return 2 - axis


def noise_field(
    rng: np.random.Generator,
    lo: Sequence[float],
    hi: Sequence[float],
    spacing: float,
    sigma_mm: float,
) -> Field:
    """Smooth Gaussian random field (zero mean, unit SD) covering the head box [lo, hi] (x, y, z mm).

    The grid is fixed by the box and ``spacing`` only, so the field is the same whatever the
    resolution it is later sampled at.
    """
    n = [int(np.ceil((hi[i] - lo[i]) / spacing)) + 2 for i in range(3)]
    white = rng.standard_normal((n[2], n[1], n[0]), dtype=F32)
    sm = ndimage.gaussian_filter(white, sigma_mm / spacing, mode="wrap", truncate=3.0)
    sm -= sm.mean()
    sm /= sm.std() + F32(1e-12)
    return Field(sm.astype(F32, copy=False), (float(lo[0]), float(lo[1]), float(lo[2])), float(spacing))
