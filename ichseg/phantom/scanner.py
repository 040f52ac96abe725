"""The CT scanner: sampling onto the acquisition grid with slice-thickness averaging, partial
volume, correlated noise, beam hardening and streaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .anatomy import HeadModel
from .anatomy_params import Anatomy
from .geometry import Pose, ScanGrid, WorkGrid
from .shapes import F32, ellipsoid

HU_MIN, HU_MAX = -1024, 3071


def sub_slices(thickness: float, working_spacing: float) -> int:
    """Number of sub-slices averaged into one slice (about one per working voxel)."""
    return max(1, int(round(thickness / working_spacing)))


def inplane_factor(pixel_mm: float) -> int:
    """Sample the anatomy at 2× the output pixel when pixels are finer than the working grid."""
    return 2 if pixel_mm < 0.7 else 1


@dataclass
class Sampled:
    """Part of the scan grid holding sampled values: ``data`` (c, nz, ny, nx) at ``offset`` (z, y, x)."""

    data: np.ndarray
    offset: tuple[int, int, int]

    def paste(self, out: np.ndarray, channel: int = 0) -> np.ndarray:
        z, y, x = self.offset
        a = self.data[channel]
        nz, ny, nx = out.shape
        a = a[: nz - z, : ny - y, : nx - x]
        out[z : z + a.shape[0], y : y + a.shape[1], x : x + a.shape[2]] = a
        return out


def acquire(
    array: np.ndarray,
    grid: WorkGrid,
    pose: Pose,
    scan: ScanGrid,
    *,
    factor: int,
    sub: int,
    background: float = 0.0,
    nearest: bool = False,
) -> Sampled | None:
    """Sample a working-grid array (z, y, x[, c]) onto the part of the scan grid it covers.

    Each output slice is the mean of ``sub`` planes spread over the slice thickness (the
    slice sensitivity profile); in-plane the anatomy is sampled every ``factor`` pixels and
    linearly upsampled.  With ``nearest`` the slice centre is sampled by nearest neighbour
    and replicated (for masks).  Returns None when the array does not reach the scan.
    """
    vec = array.ndim == 4
    nc = array.shape[3] if vec else 1
    nx, ny, nz = scan.size
    d = scan.direction
    if nearest:
        sub = 1
    sp_out = np.asarray(scan.spacing)
    sp_int = np.array([sp_out[0] * factor, sp_out[1] * factor, sp_out[2] / sub])
    shift = np.array([(factor - 1) / 2, (factor - 1) / 2, -(sub - 1) / (2 * sub)])
    origin_int = np.asarray(scan.origin) + d @ (sp_out * shift)
    ni, nj = -(-nx // factor), -(-ny // factor)
    lo = np.asarray(grid.origin)
    hi = lo + grid.spacing * (np.asarray(grid.shape[::-1]) - 1)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    idx = ((pose.head_to_world(corners) - origin_int) @ d) / sp_int
    i0, j0 = (max(0, int(math.floor(idx[:, a].min())) - 1) for a in (0, 1))
    i1, j1 = min(ni, int(math.ceil(idx[:, 0].max())) + 2), min(nj, int(math.ceil(idx[:, 1].max())) + 2)
    s0 = max(0, int(math.floor(idx[:, 2].min() / sub)) - 1)
    s1 = min(nz, int(math.ceil(idx[:, 2].max() / sub)) + 2)
    if i1 <= i0 or j1 <= j0 or s1 <= s0:
        return None
    pix = sitk.sitkVectorFloat32 if vec else sitk.sitkFloat32
    src = array - F32(background) if background else array
    if nearest:
        pix = sitk.sitkUInt8
        src = array.astype(np.uint8, copy=False)
    ref = sitk.Image([i1 - i0, j1 - j0, (s1 - s0) * sub], pix, nc)
    ref.SetSpacing([float(v) for v in sp_int])
    ref.SetOrigin([float(v) for v in origin_int + d @ (sp_int * np.array([i0, j0, s0 * sub]))])
    ref.SetDirection([float(v) for v in d.ravel()])
    img = grid.to_image(src, pose)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    res = sitk.Resample(img, ref, sitk.Transform(), interp, 0.0, img.GetPixelID())
    a = sitk.GetArrayViewFromImage(res)  # (k, j, i[, c])
    if not vec:
        a = a[..., None]
    if nearest:
        a = np.moveaxis(a, 3, 0)
        # copy: the view dies with the SimpleITK image ``res``
        a = a.repeat(factor, axis=2).repeat(factor, axis=3) if factor > 1 else a.copy()
        return Sampled(a, (s0, j0 * factor, i0 * factor))
    a = a.reshape(s1 - s0, sub, j1 - j0, i1 - i0, nc).mean(axis=1, dtype=F32)
    a = np.moveaxis(a, 3, 0)
    if factor == 2:
        a = upsample2(upsample2(a, 2), 3)
    if background:
        a += F32(background)
    return Sampled(a, (s0, j0 * factor, i0 * factor))


def upsample2(a: np.ndarray, axis: int) -> np.ndarray:
    """Linear 2× upsampling along ``axis``; sample i sits between output pixels 2i and 2i+1."""

    def s(start, stop, step=None):
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(start, stop, step)
        return tuple(idx)

    n = a.shape[axis]
    shape = list(a.shape)
    shape[axis] = 2 * n
    out = np.empty(shape, F32)
    q = a[s(1, None)] - a[s(None, -1)]
    q *= F32(0.25)
    np.add(a[s(None, -1)], q, out=out[s(1, 2 * n - 1, 2)])
    np.subtract(a[s(1, None)], q, out=out[s(2, 2 * n, 2)])
    out[s(0, 1)] = a[s(0, 1)]
    out[s(2 * n - 1, 2 * n)] = a[s(n - 1, n)]
    return out


def add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float, pixel_mm: float, corr_mm: float = 0.9) -> None:
    """Add spatially correlated (smooth reconstruction) Gaussian noise of SD ``sigma`` in place."""
    s = corr_mm / pixel_mm
    radius = max(1, int(math.ceil(3 * s)))
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / max(s, 1e-3)) ** 2)
    k /= k.sum()
    gain = 1.0 / math.sqrt(float((k**2).sum()) ** 2)
    for z in range(img.shape[0]):
        n = rng.standard_normal(img.shape[1:], dtype=F32)
        n = ndimage.correlate1d(n, k.astype(F32), axis=0, mode="wrap")
        n = ndimage.correlate1d(n, k.astype(F32), axis=1, mode="wrap")
        n *= F32(sigma * gain)
        img[z] += n


def beam_hardening(rng: np.random.Generator, anat: Anatomy, head: HeadModel) -> dict:
    """Dark band between the petrous bones (Hounsfield bar), slight darkening of the posterior
    fossa, and a faint bright rim under the inner table."""
    grid = anat.grid
    amp = float(rng.uniform(3.0, 9.0))
    lam = float(rng.uniform(4.0, 7.0))
    phase = float(rng.uniform(0, 2 * math.pi))
    c = np.asarray(head.point((0.0, 16.0, -36.0)))
    r = np.array([40.0, 16.0, 10.0]) * head.s
    box = grid.box(c - r - 2, c + r + 2)
    if not box.empty:
        X, Y, Z = grid.mesh(box)
        d = ellipsoid(X, Y, Z, c, r)
        wgt = np.exp(-(np.maximum(d + F32(8.0), 0) ** 2) / F32(2 * 6.0**2)) * (d < 0)
        mod = F32(0.65) + F32(0.35) * np.cos(F32(2 * math.pi / lam) * (Y - F32(c[1])) + F32(phase))
        anat.hu[box.slices] -= F32(amp) * wgt * mod * (anat.d_cavity[box.slices] < 0)
    pf_dark = float(rng.uniform(0.0, 3.0))
    c2 = np.asarray(head.point((0.0, 45.0, -45.0)))
    r2 = np.array([48.0, 42.0, 24.0]) * head.s
    box2 = grid.box(c2 - r2, c2 + r2)
    if not box2.empty and pf_dark > 0:
        X, Y, Z = grid.mesh(box2)
        d = ellipsoid(X, Y, Z, c2, r2)
        anat.hu[box2.slices] -= F32(pf_dark) * np.clip(-d / F32(10.0), 0, 1) * (anat.d_cavity[box2.slices] < 0)
    rim = float(rng.uniform(1.0, 5.0))
    nz = grid.shape[0]
    for k0 in range(0, nz, 8):
        dc = anat.d_cavity[k0 : k0 + 8]
        anat.hu[k0 : k0 + 8] += F32(rim) * np.exp(np.clip(dc, -30, 0) / F32(2.5)) * (dc < 0)
    return {"hounsfield_bar_hu": amp, "posterior_fossa_darkening_hu": pf_dark, "inner_table_rim_hu": rim}


def add_streaks(rng: np.random.Generator, img: np.ndarray, scan: ScanGrid, slices: list[int]) -> list[dict]:
    """Thin bright/dark line artefacts through dense structures on a few slices (in place)."""
    nz, ny, nx = img.shape
    px = scan.spacing[0]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(F32)
    info = []
    for z in slices:
        head = img[z] > -300
        if not head.any():
            continue
        iy, ix = np.nonzero(head)
        k = int(rng.integers(len(iy)))
        y0, x0 = float(iy[k]), float(ix[k])
        field = np.zeros((ny, nx), F32)
        n_lines = int(rng.integers(3, 9))
        amp = float(rng.uniform(6.0, 25.0))
        for _ in range(n_lines):
            th = rng.uniform(0, math.pi)
            dist = np.abs((xx - F32(x0)) * F32(math.sin(th)) - (yy - F32(y0)) * F32(math.cos(th))) * F32(px)
            sign = F32(1.0 if rng.random() < 0.5 else -1.0)
            field += sign * F32(amp * rng.uniform(0.4, 1.0)) * np.exp(-(dist**2) / F32(2 * 0.5**2))
        img[z] += field * head
        info.append({"slice": int(z), "lines": n_lines, "amplitude_hu": amp})
    return info


def to_int16(img: np.ndarray) -> np.ndarray:
    out = np.rint(img, out=img)
    np.clip(out, HU_MIN, HU_MAX, out=out)
    return out.astype(np.int16)
