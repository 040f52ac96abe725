"""Scanner grid, head pose and gantry tilt.

Coordinates: *world* is ITK/LPS physical space in mm (x to the patient's left, y
posterior, z superior).  *Head* coordinates are the same axes fixed to the head, origin at
the centre of the brain at the level of the basal ganglia; ``world = pose.center +
pose.rotation @ head``.  Arrays are indexed (z, y, x) as SimpleITK returns them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

F32 = np.float32


def rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def tilt_direction(tilt_deg: float) -> np.ndarray:
    """Direction matrix of a gantry-tilted axial series, as written by common DICOM-to-NIfTI tools.

    Rows (1, 0, 0), (0, −cos t, sin t), (0, sin t, cos t): columns are the image axes, i
    to the patient's left, j anterior (tilted up), k superior (tilted back).  Orthonormal,
    determinant −1 (the row axis runs anterior, as in the measured real scan).
    """
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, -c, s], [0.0, s, c]])


@dataclass(frozen=True)
class Pose:
    """Placement of the head in world space."""

    yaw_deg: float  # about the world z axis (head turned left/right)
    pitch_deg: float  # about the x axis (chin up/down)
    roll_deg: float  # about the y axis (head tilted to a shoulder)
    center: tuple[float, float, float]  # world position of the head origin (mm)

    @property
    def rotation(self) -> np.ndarray:
        """Head-to-world rotation matrix."""
        return rot_z(self.yaw_deg) @ rot_y(self.roll_deg) @ rot_x(self.pitch_deg)

    def head_to_world(self, p) -> np.ndarray:
        return np.asarray(self.center) + np.asarray(p, dtype=float) @ self.rotation.T

    def world_to_head(self, p) -> np.ndarray:
        return (np.asarray(p, dtype=float) - np.asarray(self.center)) @ self.rotation


@dataclass(frozen=True)
class ScanGrid:
    """The output image grid (ITK order: size and spacing are (x, y, z))."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # 3×3, columns are the image axes in world space

    def reference(self, pixel_id: int = sitk.sitkFloat32) -> sitk.Image:
        img = sitk.Image([int(v) for v in self.size], pixel_id)
        self.apply(img)
        return img

    def apply(self, img: sitk.Image) -> sitk.Image:
        img.SetSpacing([float(v) for v in self.spacing])
        img.SetOrigin([float(v) for v in self.origin])
        img.SetDirection([float(v) for v in self.direction.ravel()])
        return img

    def index_to_world(self, ijk) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def world_to_index(self, p) -> np.ndarray:
        p = np.asarray(p, dtype=float) - np.asarray(self.origin)
        return (p @ self.direction) / np.asarray(self.spacing)


@dataclass(frozen=True)
class WorkGrid:
    """Isotropic working grid in head coordinates on which the anatomy is built."""

    origin: tuple[float, float, float]  # head (x, y, z) of voxel [0, 0, 0]
    spacing: float
    shape: tuple[int, int, int]  # (nz, ny, nx)

    @classmethod
    def covering(cls, lo, hi, spacing: float) -> WorkGrid:
        n = [int(math.ceil((hi[i] - lo[i]) / spacing)) + 1 for i in range(3)]
        return cls((float(lo[0]), float(lo[1]), float(lo[2])), float(spacing), (n[2], n[1], n[0]))

    def axes(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-D head coordinates (x, y, z) of the grid, or of a sub-box."""
        nz, ny, nx = self.shape
        sl = box.slices if box is not None else (slice(0, nz), slice(0, ny), slice(0, nx))
        xs = self.origin[0] + self.spacing * np.arange(sl[2].start, sl[2].stop, dtype=np.float64)
        ys = self.origin[1] + self.spacing * np.arange(sl[1].start, sl[1].stop, dtype=np.float64)
        zs = self.origin[2] + self.spacing * np.arange(sl[0].start, sl[0].stop, dtype=np.float64)
        return xs.astype(F32), ys.astype(F32), zs.astype(F32)

    def mesh(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinate arrays X (1,1,nx), Y (1,ny,1), Z (nz,1,1)."""
        xs, ys, zs = self.axes(box)
        return xs[None, None, :], ys[None, :, None], zs[:, None, None]

    def box(self, lo, hi) -> Box:
        """Sub-box of the grid covering the head-coordinate box [lo, hi] (clipped to the grid)."""
        sl = []
        for axis in (2, 1, 0):
            n = self.shape[axis]
            i = 2 - axis
            a = int(math.floor((lo[i] - self.origin[i]) / self.spacing))
            b = int(math.ceil((hi[i] - self.origin[i]) / self.spacing)) + 1
            sl.append(slice(min(max(a, 0), n), min(max(b, 0), n)))
        return Box((sl[2], sl[1], sl[0]))

    def to_image(self, array: np.ndarray, pose: Pose) -> sitk.Image:
        """Wrap a working-grid array as a SimpleITK image placed in world space by ``pose``."""
        img = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
        r = pose.rotation
        img.SetSpacing([self.spacing] * 3)
        img.SetOrigin([float(v) for v in pose.head_to_world(self.origin)])
        img.SetDirection([float(v) for v in r.ravel()])
        return img


@dataclass(frozen=True)
class Box:
    """Array slices (z, y, x) of a sub-box of a working grid."""

    slices: tuple[slice, slice, slice]

    @property
    def empty(self) -> bool:
        return any(s.stop <= s.start for s in self.slices)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.slices)  # type: ignore[return-value]

    def union(self, other: Box) -> Box:
        return Box(
            tuple(
                slice(min(a.start, b.start), max(a.stop, b.stop))
                for a, b in zip(self.slices, other.slices, strict=True)
            )  # type: ignore[arg-type]
        )

    def within(self, outer: Box) -> tuple[slice, slice, slice]:
        """Slices of this box relative to an enclosing box."""
        return tuple(slice(a.start - o.start, a.stop - o.start) for a, o in zip(self.slices, outer.slices, strict=True))  # type: ignore[return-value]


def orthonormal(direction: np.ndarray, tol: float = 1e-6) -> bool:
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    return bool(np.allclose(d @ d.T, np.eye(3), atol=tol))
