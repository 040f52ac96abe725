"""Lesions: intracerebral haemorrhage (ICH), perihaematomal oedema (PHE), intraventricular
haemorrhage (IVH), and the mass effect of a large bleed.

Shapes are built on the working grid from smooth implicit fields and thresholded at the
quantile that gives the drawn volume inside the tissue where the lesion may lie (brain
parenchyma for ICH/PHE, the ventricles for IVH), so volumes are exact and lesions never
leave their compartment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .anatomy import HeadModel
from .anatomy_params import CAVITY, Anatomy
from .geometry import Box, WorkGrid
from .shapes import F32, Field, capsule, ellipsoid, noise_field, rotation, smin, soft

ICH_MEDIAN_ML = 12.3
ICH_SIGMA = 1.23  # log-normal shape: IQR ≈ 5.3–28 mL (TICH-2)
ICH_RANGE_ML = (0.5, 150.0)
IVH_MEDIAN_ML = 5.6
IVH_SIGMA = 1.45  # IQR ≈ 1.9–13.4 mL
IVH_RANGE_ML = (0.1, 80.0)

# Site: (base weight, max volume mL).
ICH_SITES: dict[str, tuple[float, float]] = {
    "putamen": (0.38, 150.0),
    "lobar": (0.27, 150.0),
    "thalamus": (0.15, 60.0),
    "cerebellum": (0.09, 45.0),
    "brainstem": (0.05, 14.0),
    "caudate": (0.06, 35.0),
}
LOBAR_POINTS = {
    "frontal": (30.0, -48.0, 20.0),
    "parietal": (34.0, 30.0, 38.0),
    "temporal": (46.0, -8.0, -16.0),
    "occipital": (24.0, 62.0, 10.0),
    "frontoparietal": (26.0, -8.0, 48.0),
}


def draw_ich_volume(rng: np.random.Generator) -> float:
    """ICH volume in mL: log-normal (median ≈ 12 mL, IQR ≈ 5–28 mL) truncated to 0.5–150 mL."""
    return _truncated_lognormal(rng, ICH_MEDIAN_ML, ICH_SIGMA, ICH_RANGE_ML)


def draw_ivh_volume(rng: np.random.Generator) -> float:
    """IVH volume in mL: log-normal (median ≈ 5.6 mL, IQR ≈ 1.9–13 mL) truncated to 0.1–80 mL."""
    return _truncated_lognormal(rng, IVH_MEDIAN_ML, IVH_SIGMA, IVH_RANGE_ML)


def _truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, bounds: tuple[float, float]) -> float:
    for _ in range(1000):
        v = float(median * math.exp(sigma * rng.standard_normal()))
        if bounds[0] <= v <= bounds[1]:
            return v
    return float(np.clip(median, *bounds))


def choose_site(rng: np.random.Generator, volume_ml: float, near_ventricle: bool = False) -> str:
    """ICH site given its volume (big bleeds are putaminal or lobar); IVH-associated bleeds lie deep."""
    names = list(ICH_SITES)
    w = np.array([ICH_SITES[n][0] if volume_ml <= ICH_SITES[n][1] else 0.0 for n in names])
    if near_ventricle:
        boost = {"thalamus": 2.5, "caudate": 3.0, "putamen": 0.8, "lobar": 0.25, "cerebellum": 0.6, "brainstem": 0.3}
        w = w * np.array([boost[n] for n in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


ICH_PATTERNS: tuple[str, ...] = ("homogeneous", "heterogeneous", "fluid_level", "hyperacute")


@dataclass
class LesionPlan:
    """What to draw, decided before the anatomy is rendered (mass effect and hydrocephalus need it)."""

    ich: bool
    phe: bool
    ivh: bool
    ich_volume_ml: float = 0.0
    site: str = ""
    side: str = ""
    lobe: str = ""
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)  # head coordinates (mm)
    phe_ratio: float = 0.0
    ivh_volume_ml: float = 0.0
    ivh_pattern: str = ""
    ivh_seed: str = ""
    hu_pattern: str = "homogeneous"
    ich_hu: float = 62.0
    mass_effect: float = 0.0  # fraction of the equivalent radius pushed out
    hydrocephalus: float = 1.0
    catheter: bool = False
    extra: dict = field(default_factory=dict)


KIND_CLASSES = {
    "negative": (False, False, False),
    "ich": (True, False, False),
    "ich_phe": (True, True, False),
    "ich_phe_ivh": (True, True, True),
    "ivh": (False, False, True),
}


def plan_lesions(rng: np.random.Generator, kind: str, head: HeadModel) -> LesionPlan:
    """Draw volumes, sites and patterns for a case kind."""
    ich, phe, ivh = KIND_CLASSES[kind]
    plan = LesionPlan(ich, phe, ivh)
    # Always consume the same draws so that the head does not depend on the kind.
    v_ich = draw_ich_volume(rng)
    v_ivh = draw_ivh_volume(rng)
    side = "left" if rng.random() < 0.5 else "right"
    u = rng.random(8)
    if ich:
        plan.ich_volume_ml = v_ich
        plan.site = choose_site(rng, v_ich, near_ventricle=ivh)
        plan.side = side
        lm = head.landmarks()
        sg = 1.0 if side == "left" else -1.0
        jitter = rng.normal(0, 2.5, 3)
        if plan.site == "lobar":
            lobe = list(LOBAR_POINTS)[int(rng.integers(len(LOBAR_POINTS)))]
            plan.lobe = lobe
            t = np.array(LOBAR_POINTS[lobe]) * [sg, 1, 1]
            c = np.array(head.point(t)) + rng.normal(0, 6, 3)
        elif plan.site == "brainstem":
            c = np.array(lm["pons"]) + [sg * 3.0, 0, 0] + jitter * 0.5
        else:
            c = np.array(lm[f"{plan.site}_{side}"]) + jitter
        r_eq = (3 * v_ich * 1000 / (4 * math.pi)) ** (1 / 3)
        if plan.site in ("putamen", "lobar") and v_ich > 30:
            # big bleeds grow outward from their origin: shift the centre laterally/away from the midline
            c[0] += sg * min(0.25 * r_eq, 8.0)
        plan.center = (float(c[0]), float(c[1]), float(c[2]))
        plan.phe_ratio = float(math.exp(rng.uniform(math.log(0.3), math.log(1.5)))) if phe else 0.0
        plan.ich_hu = float(np.clip(rng.normal(65.5, 4.5), 55.0, 78.0))
        pat = u[0]
        plan.hu_pattern = "homogeneous" if pat < 0.65 else "heterogeneous" if pat < 0.9 else "fluid_level"
        if u[1] < 0.07:
            plan.hu_pattern = "hyperacute"
            plan.ich_hu = float(rng.uniform(50.0, 56.0))
        strength = float(rng.uniform(0.85, 1.1))
        plan.mass_effect = strength * (0.55 if ivh else 1.0) if v_ich > 4 else 0.0
    if ivh:
        plan.ivh_volume_ml = v_ivh if ich else float(v_ivh * rng.uniform(0.8, 1.6))
        plan.ivh_pattern = ["layering", "cast", "mixed"][int(rng.choice(3, p=[0.35, 0.2, 0.45]))]
        if ich:
            plan.ivh_seed = "near_ich"
        else:
            plan.ivh_seed = ["frontal_horn", "body", "third_ventricle", "fourth_ventricle"][int(rng.integers(4))]
            plan.ivh_seed += "" if plan.ivh_seed in ("third_ventricle", "fourth_ventricle") else f"_{side}"
        plan.hydrocephalus = float(rng.uniform(1.15, 1.45)) if (u[2] < 0.35 or plan.ivh_volume_ml > 25) else 1.0
        plan.catheter = bool(u[3] < 0.3)
    else:
        plan.catheter = bool(u[3] < 0.02)
    return plan


class MassEffect:
    """Incompressible radial push away from a bleed, fading with distance (a ``Deformation``)."""

    def __init__(self, center, volume_ml: float, strength: float) -> None:
        self.c = np.asarray(center, dtype=F32)
        self.r_eq = float((3 * volume_ml * 1000 / (4 * math.pi)) ** (1 / 3))
        self.k3 = float((strength * self.r_eq) ** 3)
        self.fade = 2.2 * self.r_eq + 25.0
        self.max_shift = float(min(strength * self.r_eq, 12.0))
        self.volume_ml = volume_ml

    def shift_at(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=F32)
        r0 = np.cbrt(np.maximum(r**3 - F32(self.k3), 0)).astype(F32)
        return (r - r0) / (F32(1) + (r / F32(self.fade)) ** 4)

    def apply(self, X, Y, Z):
        dx, dy, dz = X - self.c[0], Y - self.c[1], Z - self.c[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz, dtype=F32) + F32(1e-3)
        f = F32(1) - self.shift_at(r) / r
        return self.c[0] + dx * f, self.c[1] + dy * f, self.c[2] + dz * f

    def efface(self, X, Y, Z):
        if self.volume_ml < 8:
            return F32(1.0)
        r2 = (X - self.c[0]) ** 2 + (Y - self.c[1]) ** 2 + (Z - self.c[2]) ** 2
        e = min(0.9, self.volume_ml / 50.0)
        return F32(1) - F32(e) * np.exp(-r2 / F32((1.6 * self.r_eq + 18.0) ** 2))

    def midline_shift(self, septum) -> float:
        """Displacement (mm) of a midline point (head coordinates) away from the bleed."""
        p = np.asarray(septum, dtype=F32)
        r = float(np.linalg.norm(p - self.c))
        return float(self.shift_at(np.array([r]))[0])


@dataclass
class Lesions:
    """Lesion masks on the working grid (each in its own box) and the recorded parameters."""

    ich: tuple[Box, np.ndarray] | None = None
    phe: tuple[Box, np.ndarray] | None = None
    ivh: tuple[Box, np.ndarray] | None = None
    params: dict = field(default_factory=dict)


def _quantile_mask(score: np.ndarray, allowed: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """The ``n`` allowed voxels with the lowest score (ties broken by the score order)."""
    vals = score[allowed]
    if n <= 0 or vals.size == 0:
        return np.zeros_like(allowed), float("-inf")
    if n >= vals.size:
        return allowed.copy(), float(vals.max())
    thr = float(np.partition(vals, n - 1)[n - 1])
    return allowed & (score <= thr), thr


def _excluded(anat: Anatomy, box: Box) -> np.ndarray:
    """Voxels covered by calcifications or a catheter (never labelled as a lesion)."""
    ex = np.zeros(box.shape, bool)
    for obox, frac, _ in anat.overlays:
        inter = _intersect(box, obox)
        if inter is None:
            continue
        a, b = inter
        ex[a] |= frac[b] > 0.2
    return ex


def _intersect(box: Box, other: Box):
    sl_a, sl_b = [], []
    for s, o in zip(box.slices, other.slices, strict=True):
        lo, hi = max(s.start, o.start), min(s.stop, o.stop)
        if hi <= lo:
            return None
        sl_a.append(slice(lo - s.start, hi - s.start))
        sl_b.append(slice(lo - o.start, hi - o.start))
    return tuple(sl_a), tuple(sl_b)


def make_ich(rng: np.random.Generator, anat: Anatomy, plan: LesionPlan, gravity: np.ndarray, toward=None):
    """Irregular haematoma: union of random blobs and finger-like extensions, warped by smooth noise."""
    grid = anat.grid
    w = grid.spacing
    v_mm3 = plan.ich_volume_ml * 1000.0
    r_eq = (3 * v_mm3 / (4 * math.pi)) ** (1 / 3)
    c = np.asarray(plan.center, dtype=float)
    half = 2.0 * r_eq + 16.0
    lo, hi = c - half, c + half
    box = grid.box(lo, hi)
    # the shape is built on a lattice of its own (coarser for big bleeds), fixed by the lesion only
    sc = float(np.clip(r_eq / 8, 1.0, 3.0))
    cn = [int(math.ceil((hi[i] - lo[i]) / sc)) + 1 for i in range(3)]
    X = (lo[0] + sc * np.arange(cn[0], dtype=F32))[None, None, :]
    Y = (lo[1] + sc * np.arange(cn[1], dtype=F32))[None, :, None]
    Z = (lo[2] + sc * np.arange(cn[2], dtype=F32))[:, None, None]

    def noise(sigma: float) -> np.ndarray:
        return noise_field(rng, lo, hi, sc, sigma).data[: cn[2], : cn[1], : cn[0]]

    amp = F32(0.22 * r_eq)
    sig = max(2.5, 0.3 * r_eq)
    Xd, Yd, Zd = X + amp * noise(sig), Y + amp * noise(sig), Z + amp * noise(sig)
    lob = noise(max(1.5, 0.18 * r_eq))
    # main body: elongated (putamen along y), random orientation elsewhere
    e = np.exp(rng.normal(0, 0.22, 3))
    e = np.sort(e)[::-1] / np.prod(e) ** (1 / 3)
    rot = rotation(rng, 180.0)
    if plan.site in ("putamen", "caudate", "thalamus"):
        rot = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]) @ _small_rotation(rng, 25)
    d = ellipsoid(Xd, Yd, Zd, c, r_eq * e * 0.9, rot)
    n_blobs = int(rng.integers(2, 6))
    for _ in range(n_blobs):
        dirv = _unit(rng)
        off = c + dirv * r_eq * rng.uniform(0.4, 0.9)
        rb = r_eq * rng.uniform(0.3, 0.65) * np.exp(rng.normal(0, 0.2, 3))
        d = smin(d, ellipsoid(Xd, Yd, Zd, off, rb, rotation(rng)), 0.25 * r_eq)
    n_fingers = int(rng.integers(0, 5)) if plan.ich_volume_ml > 2 else int(rng.integers(0, 2))
    fingers = [(_unit(rng), r_eq * rng.uniform(0.9, 1.6)) for _ in range(n_fingers)]
    if toward is not None:
        v = np.asarray(toward, dtype=float) - c
        if np.linalg.norm(v) > 1e-6:
            fingers.append((v / np.linalg.norm(v), float(np.linalg.norm(v)) + 2.0))
    for dirv, length in fingers:
        rf = r_eq * rng.uniform(0.16, 0.28)
        d = smin(d, capsule(Xd, Yd, Zd, c + dirv * 0.4 * r_eq, c + dirv * length, rf, rf * 0.45), 0.15 * r_eq)
    d = d + F32(0.12 * r_eq) * lob
    xs, ys, zs = grid.axes(box)
    d = Field(d.astype(F32), (float(lo[0]), float(lo[1]), float(lo[2])), sc).sample(xs, ys, zs)
    X, Y, Z = grid.mesh(box)
    allowed = anat.brain[box.slices] & ~_excluded(anat, box)
    n = int(round(v_mm3 / w**3))
    mask, thr = _quantile_mask(d, allowed, n)
    mask = _largest_components(mask, keep_fraction=0.02)
    frac = soft(d - F32(thr), w) * allowed
    # HU: base, texture, darker rim, pattern
    tex = noise_field(rng, lo, hi, 1.5, 2.0).sample(xs, ys, zs)
    hu = F32(plan.ich_hu) + F32(rng.uniform(2.5, 4.5)) * tex
    hu -= F32(rng.uniform(1.0, 3.5)) * np.clip(F32(1) + (d - F32(thr)) / F32(2.0), 0, 1)
    info = {"hu_mean": plan.ich_hu, "pattern": plan.hu_pattern}
    if plan.hu_pattern == "heterogeneous":
        sw = noise_field(rng, lo, hi, 1.5, max(1.5, 0.12 * r_eq)).sample(xs, ys, zs)
        thr_sw = rng.uniform(0.9, 1.4)
        drop = F32(rng.uniform(8.0, 16.0))
        hu -= drop * np.clip((sw - F32(thr_sw)) * F32(2.0), 0, 1) * np.clip(-(d - F32(thr)) / F32(2.5), 0, 1)
        info["swirl_drop_hu"] = float(drop)
    elif plan.hu_pattern == "fluid_level":
        g = gravity.astype(F32)
        depth = (X - F32(c[0])) * g[0] + (Y - F32(c[1])) * g[1] + (Z - F32(c[2])) * g[2]
        level = float(np.quantile(depth[mask], rng.uniform(0.35, 0.7))) if mask.any() else 0.0
        below = np.clip(F32(0.5) + (depth - F32(level)) / F32(1.0), 0, 1)
        hi_hu, lo_hu = rng.uniform(72.0, 85.0), rng.uniform(32.0, 48.0)
        hu = hu - F32(plan.ich_hu) + F32(lo_hu) + F32(hi_hu - lo_hu) * below
        info.update({"dependent_hu": float(hi_hu), "supernatant_hu": float(lo_hu)})
    return box, mask, frac, hu.astype(F32), d, thr, info


def _small_rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    return rotation(rng, deg)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / (np.linalg.norm(v) + 1e-12)


def _largest_components(mask: np.ndarray, keep_fraction: float) -> np.ndarray:
    """Drop specks: keep components holding at least ``keep_fraction`` of the largest one."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.nonzero(sizes >= keep_fraction * sizes.max())[0] + 1
    return np.isin(lab, keep)


#: The thinnest oedema, as a fraction of the local rim width (2–10 mm): the drawn PHE/ICH volume ratio
#: alone made rims of about 1 mm around small bleeds (a 2.6 mL ICH with PHE 0.5x its volume), which
#: blur and the haematoma's partial volume left no darker than the tissue around them (measured
#: 0–2 HU); real oedema is an irregular rim 2–10 mm wide (``shared/real_ct_facts.md``).
PHE_MIN_RIM_FRACTION = 0.4
#: Oedema is at least this much darker than the tissue it replaces (before blur), and at most
#: ``PHE_MAX_DROP_HU``: after the scanner's blur and noise its core is 5–10 HU darker than the
#: parenchyma around it, as measured on real scans.
PHE_MIN_DROP_HU = 8.0
PHE_MAX_DROP_HU = 15.0


def make_phe(rng: np.random.Generator, anat: Anatomy, box: Box, ich_mask: np.ndarray, volume_ml: float):
    """Oedema rim of irregular width (≈2–10 mm) around the haematoma, inside brain parenchyma:
    ``volume_ml``, or more where that would make the rim thinner than ``PHE_MIN_RIM_FRACTION`` of
    its local width."""
    tissue_hu = anat.hu[box.slices]
    grid = anat.grid
    w = grid.spacing
    dist = np.full(ich_mask.shape, F32(1e3))
    idx = np.argwhere(ich_mask)
    if len(idx):
        m = int(math.ceil(13.0 / w))
        a, b = np.maximum(idx.min(0) - m, 0), np.minimum(idx.max(0) + m + 1, ich_mask.shape)
        sub = tuple(slice(int(i), int(j)) for i, j in zip(a, b, strict=True))
        dist[sub] = ndimage.distance_transform_edt(~ich_mask[sub], sampling=w)
    xs, ys, zs = grid.axes(box)
    lo = (float(xs[0]), float(ys[0]), float(zs[0]))
    hi = (float(xs[-1]), float(ys[-1]), float(zs[-1]))
    width = noise_field(rng, lo, hi, 2.0, 5.0).sample(xs, ys, zs)
    width = F32(2.0) + F32(8.0) / (F32(1) + np.exp(-F32(1.6) * width))
    score = dist / width
    allowed = anat.brain[box.slices] & ~ich_mask & ~_excluded(anat, box) & (dist <= 12.0)
    n = int(round(volume_ml * 1000.0 / w**3))
    mask, thr = _quantile_mask(score, allowed, n)
    if thr < PHE_MIN_RIM_FRACTION:
        thr = PHE_MIN_RIM_FRACTION
        mask = allowed & (score <= thr)
    lab, nlab = ndimage.label(mask | ich_mask)
    if nlab > 1:
        touching = np.unique(lab[ich_mask])
        mask &= np.isin(lab, touching[touching > 0])
    ramp = np.clip(F32(0.5) + (F32(thr) - score) * width / F32(1.5), 0, 1) * allowed
    level = float(rng.uniform(23.0, 29.0))
    wobble = F32(1.5) * noise_field(rng, lo, hi, 2.0, 4.0).sample(xs, ys, zs)
    # oedema is darker than the tissue it replaces, and about ``level`` HU
    drop = np.maximum(F32(PHE_MIN_DROP_HU) + wobble, tissue_hu - F32(level) + wobble)
    drop = np.minimum(drop, F32(PHE_MAX_DROP_HU))
    return mask, ramp, drop, {"hu_level": level}


def make_ivh(
    rng: np.random.Generator, anat: Anatomy, plan: LesionPlan, gravity: np.ndarray, seed_point, excluded_extra=None
):
    """Blood inside the ventricles: dependent layering (fluid level) and/or a cast around a seed."""
    grid = anat.grid
    w = grid.spacing
    vz = np.nonzero(anat.ventricles.any(axis=(1, 2)))[0]
    vy = np.nonzero(anat.ventricles.any(axis=(0, 2)))[0]
    vx = np.nonzero(anat.ventricles.any(axis=(0, 1)))[0]
    if len(vz) == 0:
        return None
    box = Box((slice(vz[0], vz[-1] + 1), slice(vy[0], vy[-1] + 1), slice(vx[0], vx[-1] + 1)))
    allowed = anat.ventricles[box.slices] & ~_excluded(anat, box)
    if excluded_extra is not None:
        allowed &= ~excluded_extra
    X, Y, Z = grid.mesh(box)
    xs, ys, zs = grid.axes(box)
    lo = (float(xs[0]), float(ys[0]), float(zs[0]))
    hi = (float(xs[-1]), float(ys[-1]), float(zs[-1]))
    jitter = noise_field(rng, lo, hi, 2.0, 3.0).sample(xs, ys, zs)
    n_total = int(round(plan.ivh_volume_ml * 1000.0 / w**3))
    n_total = min(n_total, int(0.85 * allowed.sum()))
    g = gravity.astype(F32)
    dep = -(X * g[0] + Y * g[1] + Z * g[2])  # lower = more dependent
    pattern = plan.ivh_pattern
    frac_layer = {"layering": 1.0, "cast": 0.0}.get(pattern, float(rng.uniform(0.3, 0.7)))
    n_layer = int(round(n_total * frac_layer))
    mask = np.zeros(allowed.shape, bool)
    if n_layer > 0:
        mask, _ = _quantile_mask(dep + F32(0.3) * jitter, allowed, n_layer)
    n_cast = n_total - int(mask.sum())
    if n_cast > 0:
        s = np.asarray(seed_point, dtype=F32)
        dist = np.sqrt((X - s[0]) ** 2 + (Y - s[1]) ** 2 + (Z - s[2]) ** 2, dtype=F32) + F32(4.0) * jitter
        cast, _ = _quantile_mask(dist, allowed & ~mask, n_cast)
        mask |= cast
    hu_base = float(np.clip(rng.normal(68.0, 5.0), 58.0, 80.0))
    hu = F32(hu_base) + F32(2.5) * jitter
    if n_layer > 0:
        d_layer = dep - F32(np.min(dep[allowed])) if allowed.any() else dep
        hu += F32(4.0) * np.exp(-d_layer / F32(6.0))
    info = {"hu_mean": hu_base, "pattern": pattern, "layer_fraction": frac_layer}
    return box, mask, hu.astype(F32), info


def nearest_ventricle_point(anat: Anatomy, point) -> np.ndarray:
    """Head coordinates of the ventricle voxel nearest to ``point``."""
    idx = np.argwhere(anat.ventricles)
    if len(idx) == 0:
        return np.asarray(point, dtype=float)
    g = anat.grid
    pts = np.asarray(g.origin)[None, :] + g.spacing * idx[:, ::-1]
    k = int(np.argmin(np.sum((pts - np.asarray(point)) ** 2, axis=1)))
    return pts[k]


def catheter(rng: np.random.Generator, head: HeadModel, grid: WorkGrid, anat: Anatomy, side: str):
    """External ventricular drain: burr hole near Kocher's point and a dense tube to the frontal horn."""
    sg = 1.0 if side == "left" else -1.0
    target = np.asarray(anat.landmarks[f"frontal_horn_{side}"]) + [0.0, 4.0, -4.0]
    u = np.array([sg * 0.42, -0.2, 0.88])
    u /= np.linalg.norm(u)
    c = CAVITY
    s = head.s
    axes = np.array([c["a"] * s[0], c["b"] * s[1], c["c_up"] * s[2]])
    c0 = np.array([0.0, c["y0"] * s[1], 0.0])
    entry = c0 + u / np.sqrt(np.sum((u / axes) ** 2))  # on the inner table
    v = entry - target
    v /= np.linalg.norm(v)
    outer = entry + v * (head.p.skull_mm + 1.5)  # the tube leaves through the burr hole under the scalp
    lo, hi = np.minimum(outer, target) - 8, np.maximum(outer, target) + 8
    box = grid.box(lo, hi)
    X, Y, Z = grid.mesh(box)
    hole = capsule(X, Y, Z, entry - 2.0 * v, outer + 2.0 * v, 5.0, 5.0)
    f_hole = soft(hole, grid.spacing) * np.clip(anat.d_cavity[box.slices] * F32(0.5), 0, 1)
    r = float(rng.uniform(1.1, 1.5))
    f_tube = soft(capsule(X, Y, Z, outer, target, r, r), grid.spacing)
    hu = float(rng.uniform(500.0, 1200.0))
    return box, f_hole, f_tube, hu, {"entry_mm": [float(x) for x in entry], "target_mm": [float(x) for x in target]}
