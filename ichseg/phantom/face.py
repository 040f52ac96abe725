"""The face and neck below the skull base (orbits, sinuses, mastoids, ears, jaw, upper cervical
spine) as primitives painted over the rendered anatomy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .anatomy_params import AIR_HU, FAT_HU, Anatomy
from .geometry import WorkGrid
from .shapes import F32, capsule, ellipsoid, soft

if TYPE_CHECKING:
    from .anatomy import HeadModel


def paint(anat: Anatomy, lo, hi, sdf_fn, hu_value, outside_cavity: bool = True) -> None:
    """Paint a primitive (signed distance function of (X, Y, Z)) with a HU value or HU function."""
    box = anat.grid.box(lo, hi)
    if box.empty:
        return
    X, Y, Z = anat.grid.mesh(box)
    d = sdf_fn(X, Y, Z)
    f = soft(d, anat.grid.spacing)
    if outside_cavity:
        f *= np.clip(anat.d_cavity[box.slices] * F32(0.5), 0, 1)
    h = anat.hu[box.slices]
    val = hu_value(X, Y, Z) if callable(hu_value) else F32(hu_value)
    h += (val - h) * f


def face_primitives(head: HeadModel, grid: WorkGrid):
    """Primitives below the skull base: (lo, hi, sdf, hu) in head coordinates of this case."""
    s = head.s
    prims = []

    def P(p):
        return np.asarray(p, dtype=float) * s

    def ell(c, r, hu, pad=2.0):
        c2, r2 = P(c), np.asarray(r) * s
        prims.append((c2 - r2 - pad, c2 + r2 + pad, lambda X, Y, Z, c2=c2, r2=r2: ellipsoid(X, Y, Z, c2, r2), hu))

    def cap(a, b, r, hu):
        a2, b2 = P(a), P(b)
        lo, hi = np.minimum(a2, b2) - r - 2, np.maximum(a2, b2) + r + 2
        prims.append((lo, hi, lambda X, Y, Z, a2=a2, b2=b2: capsule(X, Y, Z, a2, b2, r, r), hu))

    fine = head.fine

    def cells(air_frac: float, bone_hu: float):
        def fn(X, Y, Z):
            n = fine.sample(X.ravel(), Y.ravel(), Z.ravel())
            return F32(-950.0) + F32(bone_hu + 950.0) * np.clip((n - F32(air_frac)) * F32(2.5), 0, 1)

        return fn

    for sg in (-1, 1):
        # orbit: bony walls, fat, globe (sclera, vitreous, lens), muscles, optic nerve
        ell((sg * 31, -74, -37), (16.0, 22, 15.0), 550.0)
        ell((sg * 31, -76, -37), (14.5, 21, 13.5), FAT_HU)
        cap((sg * 15, -50, -38), (sg * 22, -86, -37), 2.6, 45.0)
        cap((sg * 15, -50, -38), (sg * 42, -84, -37), 2.6, 45.0)
        cap((sg * 15, -50, -36), (sg * 29, -76, -36), 2.2, 32.0)
        ell((sg * 31, -87, -36), (12, 12, 12), 45.0)
        ell((sg * 31, -87, -36), (10.8, 10.8, 10.8), 10.0)
        ell((sg * 31, -97.5, -36), (4.5, 1.8, 4.5), 100.0)
        # maxillary sinus with walls
        ell((sg * 28, -68, -74), (15.2, 17.2, 18.2), 650.0)
        ell((sg * 28, -68, -74), (14, 16, 17), AIR_HU)
        # mastoid air cells, ear canal, auricle
        ell((sg * 50, 20, -57), (11, 13, 12), cells(0.15, 1300.0))
        cap((sg * 54, 4, -45), (sg * 74, 6, -45), 3.8, AIR_HU)
        ell((sg * 76, 8, -38), (5, 16, 28), 35.0, pad=3.0)
        # mandibular ramus + condyle, zygomatic arch
        ell((sg * 50, -24, -90), (4.5, 14, 22), 1200.0)
        ell((sg * 50, -12, -62), (6, 5, 6), 1100.0)
        cap((sg * 60, -58, -48), (sg * 63, -8, -48), 3.2, 1150.0)
        # C1 lateral masses
        ell((sg * 20, 12, -90), (8, 10, 7), 900.0)
    # frontal sinus (in the thickened glabella), ethmoid cells, sphenoid sinus, nasal cavity, nasopharynx
    ell((0, -81, -8), (18, 7, 14), 1100.0)
    ell((0, -81, -10), (13, 4.0, 10), AIR_HU)
    ell((0, -76, -38), (10, 22, 13), cells(-0.2, 300.0))
    ell((0, -27, -44), (13, 11, 9.5), AIR_HU)
    ell((0, -70, -68), (11, 27, 19), AIR_HU)
    ell((0, -70, -68), (1.2, 26, 18), 150.0, pad=1.5)
    ell((0, -28, -88), (12, 9, 14), AIR_HU)
    ell((0, -62, -97), (22, 24, 3.5), 1000.0)
    # C1 arches and dens
    ell((0, -5, -90), (9, 4, 5), 1000.0)
    cap((-20, 24, -89), (0, 46, -87), 3.8, 950.0)
    cap((20, 24, -89), (0, 46, -87), 3.8, 950.0)
    cap((0, 6, -106), (0, 6, -84), 5.5, 900.0)
    return prims
