"""Synthetic head-CT cases: ties anatomy, lesions and scanner together; case kinds; files."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..fileutil import atomic_output
from .anatomy import HeadModel
from .anatomy_params import Anatomy, AnatomyParams
from .geometry import Box, Pose, ScanGrid, WorkGrid, tilt_direction
from .lesions import (
    LesionPlan,
    MassEffect,
    catheter,
    make_ich,
    make_ivh,
    make_phe,
    nearest_ventricle_point,
    plan_lesions,
)
from .scanner import (
    Sampled,
    acquire,
    add_noise,
    add_streaks,
    beam_hardening,
    inplane_factor,
    sub_slices,
    to_int16,
)
from .shapes import F32

CASE_KINDS: tuple[str, ...] = ("negative", "ich", "ich_phe", "ich_phe_ivh", "ivh")
KIND_WEIGHTS = (0.10, 0.10, 0.45, 0.25, 0.10)
SLICE_THICKNESSES: tuple[float, ...] = (5.0, 2.5, 1.0, 0.625)
THICKNESS_WEIGHTS = (0.55, 0.15, 0.15, 0.15)
GENERATOR_VERSION = 1


@dataclass
class PhantomCase:
    """One synthetic case: image (int16 HU), label (uint8 0..3) and the parameters that made it."""

    name: str
    image: sitk.Image
    label: sitk.Image
    params: dict
    ventricles: sitk.Image | None = None
    brain: sitk.Image | None = None


def _check_args(kind: str | None, slice_thickness: float | None, matrix: int) -> float | None:
    if kind is not None and kind not in CASE_KINDS:
        raise ValueError(f"unknown case kind {kind!r}; expected one of {', '.join(CASE_KINDS)}")
    if slice_thickness is not None:
        try:
            st = float(slice_thickness)
        except (TypeError, ValueError):
            raise ValueError(f"slice thickness must be a number, got {slice_thickness!r}") from None
        match = [t for t in SLICE_THICKNESSES if abs(t - st) < 1e-6]
        if not match:
            allowed = ", ".join(f"{t:g}" for t in SLICE_THICKNESSES)
            raise ValueError(f"unsupported slice thickness {slice_thickness!r} mm; expected one of {allowed}")
        slice_thickness = match[0]
    if not isinstance(matrix, (int, np.integer)) or isinstance(matrix, bool) or not 32 <= int(matrix) <= 1024:
        raise ValueError(f"matrix must be an integer from 32 to 1024, got {matrix!r}")
    return slice_thickness


def plan_geometry(
    rng: np.random.Generator, head: HeadModel, thickness: float, matrix: int
) -> tuple[ScanGrid, Pose, dict]:
    """Gantry tilt, head pose, field of view and slice range of the acquisition."""
    tilt = float(rng.uniform(10.0, 25.0)) if rng.random() < 0.3 else 0.0
    plane = float(np.clip(rng.normal(6.0, 7.0), -12.0, 22.0))  # scan plane vs. the head's axial plane
    pose_angles = {
        "pitch_deg": plane - tilt,
        "yaw_deg": float(np.clip(rng.normal(0.0, 4.0), -10, 10)),
        "roll_deg": float(np.clip(rng.normal(0.0, 3.0), -8, 8)),
    }
    d = tilt_direction(tilt)
    col0, col1, n = d[:, 0], d[:, 1], d[:, 2]
    rot = Pose(pose_angles["yaw_deg"], pose_angles["pitch_deg"], pose_angles["roll_deg"], (0.0, 0.0, 0.0)).rotation
    c_hb, axes = head.head_box()
    # in-plane half extents of the head (ellipsoid support along the image axes)
    half = [float(np.sqrt(np.sum((axes * (rot.T @ u)) ** 2))) for u in (col0, col1)]
    px512 = float(rng.uniform(0.40, 0.50))
    need = 2 * (max(half) + 6.0)
    fov = float(min(max(512 * px512, need), 256.0))
    room = [max(0.0, fov / 2 - h - 4.0) for h in half]
    dx, dy = (float(rng.uniform(-1, 1) * min(r, 12.0)) for r in room)
    c_fov = np.array([rng.uniform(-6, 6), rng.uniform(-10, 30), rng.uniform(-250, 60)])
    w_hb = c_fov + dx * col0 + dy * col1
    center = w_hb - rot @ c_hb
    pose = Pose(
        pose_angles["yaw_deg"], pose_angles["pitch_deg"], pose_angles["roll_deg"], tuple(float(v) for v in center)
    )
    # slice range: from below the lowest brain (cerebellum, foramen magnum, temporal poles) to above the vertex
    low_pts = [head.point(p) for p in ((28, 52, -64), (-28, 52, -64), (0, 40, -68), (42, -15, -46), (-42, -15, -46))]
    w_low = min(float(n @ pose.head_to_world(p)) for p in low_pts)
    n_h = rot.T @ n
    w_top = float(n @ pose.head_to_world(c_hb)) + float(np.sqrt(np.sum((axes * n_h) ** 2))) - 8.0
    start = w_low - float(rng.uniform(3.0, 15.0))
    top = w_top + float(rng.uniform(0.0, 8.0))
    nz = int(math.ceil((top - start) / thickness))
    px = fov / matrix
    w0 = start + 0.5 * thickness
    origin = c_fov - col0 * px * (matrix - 1) / 2 - col1 * px * (matrix - 1) / 2 + (w0 - float(n @ c_fov)) * n
    scan = ScanGrid((int(matrix), int(matrix), nz), (px, px, float(thickness)), tuple(float(v) for v in origin), d)
    info = {
        "gantry_tilt_deg": tilt,
        "scan_plane_vs_head_deg": plane,
        "head_pose": {**pose_angles, "center_mm": [float(v) for v in center], "scale": [float(v) for v in head.s]},
        "field_of_view_mm": fov,
        "pixel_mm_at_512": fov / 512,
    }
    return scan, pose, info


def _volume_ml(mask: np.ndarray, voxel_mm3: float) -> float:
    return float(np.count_nonzero(mask) * voxel_mm3 / 1000.0)


def generate_case(
    seed: int,
    kind: str | None = None,
    slice_thickness: float | None = None,
    *,
    matrix: int = 512,
    name: str | None = None,
) -> PhantomCase:
    """Generate one reproducible synthetic non-contrast head CT with ICH/PHE/IVH ground truth.

    ``kind`` (one of ``CASE_KINDS``) and ``slice_thickness`` (one of ``SLICE_THICKNESSES``)
    are drawn from the seed when None.  ``matrix`` is the in-plane size: the field of view
    is the same for any matrix, so a small matrix gives the same head with coarser pixels.
    """
    slice_thickness = _check_args(kind, slice_thickness, matrix)
    seed = int(seed)
    r_case, r_geo, r_anat, r_tex, r_plan, r_les, r_art, r_noise = np.random.default_rng(seed).spawn(8)
    kind_drawn, st_drawn = _draw_kind_and_thickness(r_case)
    kind = kind or kind_drawn
    st = float(slice_thickness or st_drawn)
    name = name or f"synth_{seed:06d}"

    ap = AnatomyParams.draw(r_anat)
    plan = plan_lesions(r_plan, kind, HeadModel(ap))
    if plan.hydrocephalus != 1.0:
        ap.ventricle_scale = float(min(ap.ventricle_scale * plan.hydrocephalus, 2.0))
    head = HeadModel(ap)
    head.build_fields(r_tex)
    scan, pose, geo = plan_geometry(r_geo, head, st, int(matrix))
    px = scan.spacing[0]
    factor = inplane_factor(px)
    w = float(np.clip(0.8 * px * factor, 1.0, 1.5))
    lo, hi = head.extent()
    grid = WorkGrid.covering(lo, hi, w)
    deform = MassEffect(plan.center, plan.ich_volume_ml, plan.mass_effect) if plan.mass_effect > 0 else None
    anat = head.render(grid, deform)
    gravity = pose.rotation.T @ np.array([0.0, 1.0, 0.0])  # supine: posterior is dependent
    lesion_params, region = _lesions(r_les, head, anat, plan, gravity, deform)
    for box, frac, h in anat.overlays:
        anat.hu[box.slices] += (F32(h) - anat.hu[box.slices]) * frac
    artefacts = beam_hardening(r_art, anat, head)

    sub = sub_slices(st, w)
    nx, ny, nz = scan.size
    img = np.full((nz, ny, nx), -1000.0, F32)
    sampled = acquire(anat.hu, grid, pose, scan, factor=factor, sub=sub, background=-1000.0)
    if sampled is not None:
        sampled.paste(img)
    brain_mask = np.zeros((nz, ny, nx), bool)
    sampled = acquire(anat.brain, grid, pose, scan, factor=factor, sub=sub, nearest=True)
    if sampled is not None:
        sampled.paste(brain_mask)
    label = np.zeros((nz, ny, nx), np.uint8)
    vent_mask = np.zeros((nz, ny, nx), bool)
    if region is not None:
        fr = acquire(region.data, region.grid, pose, scan, factor=factor, sub=sub)
        if fr is not None:
            ich, phe, ivh, vent = fr.data
            top = np.maximum(np.maximum(ich, phe), ivh)
            lab = np.where(ivh >= top, 3, np.where(phe >= top, 2, 1)).astype(np.uint8)
            lab[top <= 1.0 - ich - phe - ivh] = 0
            Sampled(lab[None], fr.offset).paste(label)
            Sampled((vent >= 0.5)[None], fr.offset).paste(vent_mask)

    # scanner noise and artefacts on the output grid
    sigma = float(np.clip(rng_sigma(r_noise) * (5.0 / st) ** 0.25, 3.0, 8.0))
    add_noise(r_noise, img, sigma, px)
    streaks = []
    if r_art.random() < 0.3:
        k = int(r_art.integers(1, 5))
        low = max(1, int(nz * 0.35))
        streaks = add_streaks(r_art, img, scan, sorted({int(v) for v in r_art.integers(0, low, k)}))
    if r_art.random() < 0.4:
        yy, xx = np.ogrid[0:ny, 0:nx]
        outside = ((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2) > (min(nx, ny) / 2) ** 2
        img[:, outside] = -1024.0
    image = to_int16(img)

    voxel_ml = px * px * st / 1000.0
    params = {
        "generator": "ichseg.phantom",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "name": name,
        "kind": kind,
        "slice_thickness": st,
        "matrix": int(matrix),
        "size": [int(v) for v in scan.size],
        "spacing": [float(v) for v in scan.spacing],
        "origin": [float(v) for v in scan.origin],
        "direction": [float(v) for v in scan.direction.ravel()],
        **geo,
        "working_spacing_mm": w,
        "sub_slices": sub,
        "noise_sigma_hu": sigma,
        "anatomy": ap.as_dict(),
        "lesions": lesion_params,
        "artefacts": {**artefacts, "streaks": streaks},
        "label_volumes_ml": {
            "ICH": float(np.count_nonzero(label == 1) * voxel_ml),
            "PHE": float(np.count_nonzero(label == 2) * voxel_ml),
            "IVH": float(np.count_nonzero(label == 3) * voxel_ml),
        },
    }

    def wrap(a: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(a)
        scan.apply(im)
        return im

    return PhantomCase(
        name=name,
        image=wrap(image),
        label=wrap(label),
        params=_jsonable(params),
        ventricles=wrap(vent_mask.astype(np.uint8)),
        brain=wrap(brain_mask.astype(np.uint8)),
    )


def _draw_kind_and_thickness(rng: np.random.Generator) -> tuple[str, float]:
    kind = CASE_KINDS[int(rng.choice(len(CASE_KINDS), p=KIND_WEIGHTS))]
    st = SLICE_THICKNESSES[int(rng.choice(len(SLICE_THICKNESSES), p=THICKNESS_WEIGHTS))]
    return kind, st


def drawn_kind_and_thickness(seed: int) -> tuple[str, float]:
    """The case kind and slice thickness that ``generate_case(seed)`` draws when not given (cheap)."""
    return _draw_kind_and_thickness(np.random.default_rng(int(seed)).spawn(8)[0])


def drawn_ich_pattern(seed: int, kind: str | None = None) -> str | None:
    """The ICH HU pattern (``homogeneous``, ``heterogeneous``, ``fluid_level``, ``hyperacute``) that
    ``generate_case(seed, kind)`` draws, or None for a case without ICH (cheap: no volumes are built)."""
    _check_args(kind, None, 512)
    r_case, _, r_anat, _, r_plan, *_ = np.random.default_rng(int(seed)).spawn(8)
    kind = kind or _draw_kind_and_thickness(r_case)[0]
    plan = plan_lesions(r_plan, kind, HeadModel(AnatomyParams.draw(r_anat)))
    return plan.hu_pattern if plan.ich else None


def rng_sigma(rng: np.random.Generator) -> float:
    """Noise SD of a 5 mm slice (HU)."""
    return float(rng.uniform(3.0, 4.5))


def _lesions(rng, head: HeadModel, anat: Anatomy, plan: LesionPlan, gravity: np.ndarray, deform):
    """Draw and paint the lesions; return their parameters, the label-fraction channels and their region."""
    grid = anat.grid
    voxel = grid.spacing**3
    out: dict = {}
    if deform is not None:
        septum = np.asarray(head.point((0.0, -5.0, 14.0)))
        out["midline_shift_mm"] = deform.midline_shift(septum)
    if plan.catheter:
        side = plan.side or ("left" if rng.random() < 0.5 else "right")
        box, f_hole, f_tube, hu, info = catheter(rng, head, grid, anat, side)
        anat.hu[box.slices] += (F32(25.0) - anat.hu[box.slices]) * f_hole
        anat.overlays.append((box, f_tube, hu))
        out["catheter"] = {"side": side, "hu": hu, **info}
    boxes = []
    ich_box = ich_mask = phe_mask = ivh_box = ivh_mask = None
    if plan.ich:
        toward = None
        if plan.ivh:
            toward = nearest_ventricle_point(anat, plan.center)
        ich_box, ich_mask, frac, hu_ich, _, _, info = make_ich(rng, anat, plan, gravity, toward)
        h = anat.hu[ich_box.slices]
        ich = {
            "site": plan.site,
            "side": plan.side,
            "center_mm": list(plan.center),
            "volume_ml": _volume_ml(ich_mask, voxel),
            "drawn_volume_ml": plan.ich_volume_ml,
            **info,
        }
        if plan.lobe:
            ich["lobe"] = plan.lobe
        if deform is not None:
            ich["mass_effect_strength"] = plan.mass_effect
        if plan.phe:
            target = plan.phe_ratio * plan.ich_volume_ml
            phe_mask, ramp, drop, pinfo = make_phe(rng, anat, ich_box, ich_mask, target)
            h -= drop * ramp
            out["phe"] = {"volume_ml": _volume_ml(phe_mask, voxel), "target_ratio": plan.phe_ratio, **pinfo}
        h += (hu_ich - h) * frac
        out["ich"] = ich
        boxes.append(ich_box)
    if plan.ivh:
        if plan.ivh_seed == "near_ich" and ich_mask is not None:
            idx = np.argwhere(ich_mask)
            centroid = np.asarray(grid.origin) + grid.spacing * (
                idx.mean(axis=0)[::-1] + [s.start for s in ich_box.slices[::-1]]
            )
            seed_pt = nearest_ventricle_point(anat, centroid)
        else:
            seed_pt = np.asarray(anat.landmarks[plan.ivh_seed])
        res = make_ivh(rng, anat, plan, gravity, seed_pt)
        if res is not None:
            ivh_box, ivh_mask, hu_ivh, info = res
            h = anat.hu[ivh_box.slices]
            h += (hu_ivh - h) * ivh_mask
            out["ivh"] = {
                "volume_ml": _volume_ml(ivh_mask, voxel),
                "drawn_volume_ml": plan.ivh_volume_ml,
                "seed": plan.ivh_seed,
                "seed_mm": [float(v) for v in seed_pt],
                "hydrocephalus_factor": plan.hydrocephalus,
                **info,
            }
            boxes.append(ivh_box)
    out["ventricle_volume_ml"] = _volume_ml(anat.ventricles, voxel)
    out["brain_volume_ml"] = _volume_ml(anat.brain, voxel)
    out["intracranial_volume_ml"] = float(np.count_nonzero(anat.d_cavity < 0) * voxel / 1000.0)
    # label channels (ICH, PHE, IVH, ventricle fractions) over the lesions' and ventricles' bounding boxes
    found = (
        (ich_box, ich_mask),
        (ich_box, phe_mask),
        (ivh_box, ivh_mask),
        (Box(tuple(slice(0, n) for n in grid.shape)), anat.ventricles),
    )
    parts = [(k, *_tight(b, m)) for k, (b, m) in enumerate(found) if m is not None and m.any()]
    if not parts:
        return out, None
    ubox = parts[0][1]
    for _, b, _ in parts[1:]:
        ubox = ubox.union(b)
    ch = np.zeros(ubox.shape + (4,), F32)
    for k, b, m in parts:
        ch[b.within(ubox) + (k,)] = m
    xs, ys, zs = grid.axes(ubox)
    # the channels live on the union box: give them a grid of their own
    sub_grid = WorkGrid((float(xs[0]), float(ys[0]), float(zs[0])), grid.spacing, ubox.shape)
    return out, _Channels(ch, sub_grid)


def _tight(box: Box, mask: np.ndarray, pad: int = 2) -> tuple[Box, np.ndarray]:
    """Shrink a box (and its mask) to the mask's bounding box plus ``pad`` voxels."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, mask.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    new = Box(tuple(slice(s.start + a.start, s.start + a.stop) for s, a in zip(box.slices, sl, strict=True)))  # type: ignore[arg-type]
    return new, mask[sl]


@dataclass
class _Channels:
    """Label-fraction channels on a sub-grid of the working grid."""

    data: np.ndarray
    grid: WorkGrid


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_case(case: PhantomCase, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``<name>.nii.gz`` (image), ``<name>_label.nii.gz`` and ``<name>.json`` atomically."""
    out = Path(out_dir)
    paths = {
        "image": out / f"{case.name}.nii.gz",
        "label": out / f"{case.name}_label.nii.gz",
        "params": out / f"{case.name}.json",
    }
    for key, img in (("image", case.image), ("label", case.label)):
        with atomic_output(paths[key]) as tmp:
            sitk.WriteImage(img, str(tmp), True)
    with atomic_output(paths["params"]) as tmp:
        tmp.write_text(json.dumps(case.params, indent=2) + "\n", encoding="utf-8")
    return paths
