"""Deep brain regions as implicit fields in template coordinates: gyral (sulcal) pattern,
ventricles, deep grey nuclei and basal cisterns, Sylvian fissures, and the posterior fossa.
"""

from __future__ import annotations

import numpy as np

from .anatomy_params import AnatomyParams
from .shapes import F32, capsule, chain, ellipsoid, noise_field, smin, soft


def sulcal_field(rng: np.random.Generator, lo, hi, shape: tuple[int, int, int]) -> np.ndarray:
    """Gyral pattern on the 2 mm field grid: smooth noise sampled at partly radially projected
    points (sulci run roughly perpendicular to the brain surface, curving), scaled so that
    ``|value|`` is about the distance in mm to the nearest sulcal mid-plane."""
    base = noise_field(rng, (-80, -80, -80), (80, 80, 80), 2.0, 3.4)
    sp = 2.0
    nz, ny, nx = shape
    c0 = np.array([0.0, 4.0, 4.0])
    xs = lo[0] + sp * np.arange(nx) - c0[0]
    ys = lo[1] + sp * np.arange(ny) - c0[1]
    zs = lo[2] + sp * np.arange(nz) - c0[2]
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    r = np.sqrt(X * X + Y * Y + Z * Z) + 1e-3
    f = (60.0 / r) ** 0.55
    s = base.at(np.stack([X * f + c0[0], Y * f + c0[1], Z * f + c0[2]], axis=-1))
    gz, gy, gx = np.gradient(s, sp)
    near = np.abs(s) < 0.15
    g = float(np.median(np.sqrt(gx[near] ** 2 + gy[near] ** 2 + gz[near] ** 2))) if near.any() else 0.25
    return (s / F32(g)).astype(F32)


def _vpt(pt, side: int, vs: float) -> np.ndarray:
    q = np.array(pt, dtype=F32)
    q[0] *= side
    return VC + (q - VC) * F32(vs)


VC = np.array([0.0, 5.0, 8.0], dtype=F32)  # centre about which the ventricles scale


def central_fields(X, Y, Z, p: AnatomyParams, n: np.ndarray) -> dict[str, np.ndarray]:
    """Ventricles, deep grey nuclei and basal cisterns (template coordinates, already deformed)."""
    vs = p.ventricle_scale
    out: dict[str, np.ndarray] = {}
    lat = None
    caud_all = None
    for side in (1, -1):
        asym = p.ventricle_asymmetry if side > 0 else 1.0 / p.ventricle_asymmetry
        body = [(10, -31, 6), (9, -21, 10), (8, -8, 13), (9, 6, 17), (11, 18, 17), (20, 30, 11), (22, 42, 8)]
        body_r = [3.0, 5.2, 5.8, 4.8, 4.8, 6.5, 4.0]
        pts = [_vpt(q, side, vs) for q in body] + [_vpt((18, 56, 7), side, vs)]
        radii = [r * vs**0.5 * asym for r in body_r] + [1.2]
        d = chain(X, Y, Z, pts, radii, k=3.0)
        th = [_vpt(q, side, vs) for q in ((22, 28, 6), (30, 16, -8), (31, 2, -18), (28, -10, -22))]
        d = smin(d, chain(X, Y, Z, th, [4.0 * asym, 2.8 * vs, 2.0 * vs, 1.6 * vs], k=2.0), 2.0)
        caud = ellipsoid(X, Y, Z, (side * 15.5, -14.0, 8.0), (6.5, 9.0, 9.0))
        caud = smin(caud, capsule(X, Y, Z, (side * 15.5, -12.0, 11.0), (side * 17.5, 10.0, 17.5), 4.0, 2.6), 3.0)
        d = np.maximum(d, -caud - F32(0.3))
        d = np.maximum(d, F32(0.9) - side * X)  # septum pellucidum
        lat = d if lat is None else np.minimum(lat, d)
        caud_all = caud if caud_all is None else np.minimum(caud_all, caud)
    out["d_lat"] = lat
    out["d_caudate"] = caud_all
    third = ellipsoid(X, Y, Z, VC + (np.array([0.0, 3.0, -2.0], F32) - VC) * vs, (1.2 + 3.2 * p.atrophy, 13.0, 8.5))
    monro = chain(X, Y, Z, [(-7 * vs, -8, 11), (0, -7, 6), (7 * vs, -8, 11)], [2.0, 2.0, 2.0])
    third = smin(third, monro, 1.5)
    aqueduct = capsule(X, Y, Z, (0, 15, -8), (0, 24, -32), 1.1, 1.1)
    out["d_vent"] = np.minimum(np.minimum(lat, third), aqueduct)
    ax = np.abs(X)
    out["d_putamen"] = ellipsoid(ax, Y, Z, (25.0, -2.0, 2.0), (5.5, 15.0, 11.0))
    out["d_pallidum"] = ellipsoid(ax, Y, Z, (18.5, -1.0, -1.0), (3.5, 8.0, 6.0))
    out["d_thalamus"] = ellipsoid(ax, Y, Z, (10.5, 13.0, 4.0), (8.0, 13.5, 9.0))
    mid = ellipsoid(X, Y, Z, (0, 11, -12), (13.0, 10.5, 12.0))
    amb = np.maximum(mid - F32(1.0 + 2.0 * p.atrophy), -mid)
    amb = np.maximum(amb, np.maximum(Z - F32(-2.0), F32(-24.0) - Z))
    quad = ellipsoid(X, Y, Z, (0, 26, -4), (7.0 + 3 * p.atrophy, 5.0, 5.0))
    supra = ellipsoid(X, Y, Z, (0, -10, -18), (9.0 + 3 * p.atrophy, 7.0, 3.5))
    out["d_cistern"] = np.minimum(np.minimum(amb, quad), supra)
    return out


def sylvian_fields(X, Y, Z, p: AnatomyParams, n: np.ndarray) -> dict[str, np.ndarray]:
    """Sylvian fissures and insular cisterns: CSF surfaces for the cortical ribbon."""
    ax = np.abs(X) + F32(2.5) * n
    Z = Z + F32(3.0) * n
    w_syl = F32(0.7 + 2.0 * p.atrophy)
    z_syl = F32(-6.0) + F32(0.38) * (Y + F32(8.0))
    d_syl = np.abs(Z - z_syl) * F32(0.93) - w_syl
    d_syl = np.maximum(d_syl, np.maximum(F32(37.0) - ax, np.maximum(Y - F32(22.0), F32(-34.0) - Y)))
    x_ins = F32(36.0) + F32(0.004) * (Y + F32(8.0)) ** 2
    d_ins = np.abs(ax - x_ins) - w_syl
    lim = np.maximum(np.maximum(Z - F32(14.0), F32(-12.0) - Z), np.maximum(Y - F32(10.0), F32(-28.0) - Y))
    return {"d_fissure": np.minimum(d_syl, np.maximum(d_ins, lim))}


def fossa_fields(X, Y, Z, p: AnatomyParams, n: np.ndarray) -> dict[str, np.ndarray]:
    """Posterior fossa: region below the tentorium, cerebellum with folia, brainstem, 4th ventricle."""
    ax = np.abs(X)
    tent = F32(-6.0) - F32(0.42) * ax - F32(0.28) * np.maximum(Y - F32(30.0), 0)
    y_pr = F32(-4.0) + F32(0.62) * np.maximum(ax - F32(10.0), 0)
    in_pf = np.maximum(Z - tent, y_pr + F32(2.0) - Y)
    incisura = np.maximum(ax - F32(18.0), Y - F32(22.0))  # < 0 in the tentorial notch (midbrain)
    in_pf = np.maximum(in_pf, -incisura)
    mid = ellipsoid(X, Y, Z, (0, 11, -12), (13.0, 10.5, 12.0))
    bs = smin(mid, ellipsoid(X, Y, Z, (0, 9, -32), (16.5, 13.5, 12.5)), 5.0)
    bs = smin(bs, chain(X, Y, Z, [(0, 18, -46), (0, 24, -66), (0, 28, -112)], [9.0, 7.0, 6.0]), 4.0)
    fourth = ellipsoid(X, Y, Z, (0, 26.5, -38), (6.5, 4.5, 8.0))
    fourth = smin(fourth, capsule(X, Y, Z, (0, 26, -37), (0, 32, -35), 3.0, 1.0), 2.0)
    cmagna = ellipsoid(X, Y, Z, (0, 66, -58), (8.0 + 4 * p.atrophy, 11.0, 8.0))
    hemi = ellipsoid(ax, Y, Z, (26.0, 47.0, -42.0), (29.0, 37.0, 23.0))
    # the cerebellum fills the fossa behind the brainstem, below the tentorium
    y_front = np.maximum(F32(27.0) - F32(0.6) * ax, F32(4.0))
    cb = np.maximum(in_pf - F32(1.0), y_front - Y)
    cb = np.maximum(cb, -(fourth - F32(0.5)))
    par = np.maximum(np.minimum(cb, bs), -np.minimum(fourth, cmagna))
    w_f = F32(0.05 + 0.3 * p.atrophy)
    fol = np.abs(np.sin((hemi + F32(2.5) * n) * F32(1.1))) * F32(0.9) - w_f
    fol = np.where((hemi > -11) & (bs > 2), fol, F32(50.0))
    return {
        "pf": soft(in_pf, 2.0),
        "d_brainstem": bs,
        "d_cbwm": ellipsoid(ax, Y, Z, (16.0, 44.0, -38.0), (9.0, 11.0, 9.0)),
        "d_pf_par": np.maximum(par, -fol),
        "d_vent": fourth,
    }
