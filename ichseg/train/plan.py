"""Experiment planning (nnU-Net-like): fingerprint → working spacing, patch size, network topology.

Rules (each decision is also written to ``Plan.notes``):

1. **Target spacing** — the per-axis median of the training spacings.  If the data are
   anisotropic (median z spacing > 3 × the in-plane spacing *and* the median number of slices × 3 <
   the in-plane matrix), the z spacing is instead the 10th percentile of the z spacings (nnU-Net's
   rule: resample thick-slice scans less coarsely than the median would).
2. **CPU-speed floor** — each axis is then raised to at least ``min_spacing_xyz`` (default
   1.0 × 1.0 × 2.5 mm).  Inference must run in seconds on a 2-core CPU: a cropped head at
   1 × 1 × 2.5 mm is ≈ 2–2.5 M voxels, a few seconds of DynUNet forward passes; at the native
   0.45 mm it would be ~30× more.  2.5 mm matches the thinnest common clinical reconstruction of
   thick-slice protocols and halves the work of the 5 mm → 1 mm interpolation nnU-Net would do.
3. **Patch size** — start from the median head size at the target spacing and shrink the axis
   with the largest physical extent until the (stride-divisible) patch has at most
   ``max_patch_voxels`` voxels (default 32 × 128 × 128, a CPU-sized training step).
4. **Topology** — per stage, an axis is convolved with kernel 3 and down-sampled (stride 2) only
   while its spacing is ≤ 2 × the finest spacing and its feature map stays ≥ 2 × ``min_feature_map``;
   otherwise kernel 1 / stride 1.  For 5 mm data (and the 2.5 mm floor) the first stages are
   therefore anisotropic (1×3×3 kernels, 1×2×2 strides) until the in-plane spacing catches up, as
   nnU-Net does.  Depth ≤ ``max_stages``; filters ``base_filters`` × 2^stage capped at ``max_filters``.

All spatial lists of the plan are in array order (z, y, x) except ``spacing_xyz``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..model.network import architecture
from ..preprocess import DEFAULT_WINDOW, Normalization, PreprocessConfig
from .fingerprint import Fingerprint

__all__ = ["PlanOptions", "Plan", "make_plan", "target_spacing", "network_topology", "choose_patch"]

ANISOTROPY_THRESHOLD = 3.0
KERNEL_RATIO = 2.0


@dataclass
class PlanOptions:
    """Knobs of the planner; ``None`` means "derive from the data"."""

    target_spacing_xyz: tuple[float, float, float] | None = None
    min_spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 2.5)
    patch_size_zyx: tuple[int, int, int] | None = None
    max_patch_voxels: int = 32 * 128 * 128
    min_feature_map: int = 4
    max_stages: int = 6
    base_filters: int = 16
    max_filters: int = 256
    filters: tuple[int, ...] | None = None
    deep_supervision: bool = True
    batch_size: int = 2
    normalization: str = "unit"  # or "zscore"
    window: tuple[float, float] = DEFAULT_WINDOW
    sw_overlap: float = 0.5


@dataclass
class Plan:
    spacing_xyz: list[float]
    patch_size_zyx: list[int]
    kernels: list[list[int]]
    strides: list[list[int]]
    filters: list[int]
    batch_size: int
    deep_supervision: bool
    normalization: dict[str, Any]
    median_shape_zyx: list[int]
    anisotropic_stages: int
    notes: list[str] = field(default_factory=list)
    sw_overlap: float = 0.5

    def architecture(self) -> dict[str, Any]:
        return architecture(self.kernels, self.strides, self.filters, deep_supervision=self.deep_supervision)

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(
            spacing_xyz=tuple(self.spacing_xyz),  # type: ignore[arg-type]
            normalization=Normalization.from_dict(self.normalization),
        )

    def inference(self) -> dict[str, Any]:
        """Sliding-window settings for the model card."""
        return {"patch_size_zyx": list(self.patch_size_zyx), "overlap": self.sw_overlap, "mode": "gaussian"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def target_spacing(
    spacings_xyz: np.ndarray,
    sizes_xyz: np.ndarray,
    min_spacing_xyz: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[list[float], list[str]]:
    """Working spacing (x, y, z) from the spacing distribution, with nnU-Net's anisotropy rule and a floor."""
    notes = []
    sp = np.asarray(spacings_xyz, float).reshape(-1, 3)
    sz = np.asarray(sizes_xyz, float).reshape(-1, 3)
    target = np.median(sp, axis=0)
    median_size = np.median(sz, axis=0)
    notes.append(f"median spacing (x, y, z) {np.round(target, 3).tolist()} mm over {len(sp)} cases")
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    aniso_voxels = median_size[worst] * ANISOTROPY_THRESHOLD < min(median_size[others])
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(sp[:, worst], 10))
        value = max(p10, float(max(target[others])) + 1e-5)
        if abs(value - target[worst]) > 1e-4:
            notes.append(
                f"anisotropic data: axis {'xyz'[worst]} spacing set to the 10th percentile {value:.3f} mm "
                f"instead of the median {target[worst]:.3f} mm"
            )
        else:
            notes.append(f"anisotropic data: axis {'xyz'[worst]} 10th percentile equals the median {value:.3f} mm")
        target[worst] = value
    floor = np.asarray(min_spacing_xyz, float)
    raised = target < floor
    if raised.any():
        notes.append(
            f"CPU-speed floor {floor.tolist()} mm raised axes {[a for a, r in zip('xyz', raised, strict=True) if r]} "
            f"from {np.round(target, 3).tolist()}"
        )
        target = np.maximum(target, floor)
    return [round(float(v), 4) for v in target], notes


def network_topology(
    spacing_zyx: Sequence[float],
    patch_zyx: Sequence[int],
    *,
    min_feature_map: int = 4,
    max_stages: int = 6,
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Kernels and strides per stage (z, y, x) and the patch padded to be divisible by the total stride."""
    spacing = [float(s) for s in spacing_zyx]
    size = [int(s) for s in patch_zyx]
    kernel = [3 if spacing[d] / min(spacing) <= KERNEL_RATIO else 1 for d in range(3)]
    kernels = [list(kernel)]
    strides = [[1, 1, 1]]
    pools = [0, 0, 0]
    while len(strides) < max_stages:
        finest = min(spacing)
        valid = [d for d in range(3) if size[d] >= 2 * min_feature_map and spacing[d] / finest <= KERNEL_RATIO]
        if not valid or (len(valid) == 1 and size[valid[0]] < 3 * min_feature_map):
            break
        stride = [2 if d in valid else 1 for d in range(3)]
        for d in valid:
            spacing[d] *= 2
            size[d] = math.ceil(size[d] / 2)
            pools[d] += 1
        finest = min(spacing)
        kernel = [3 if kernel[d] == 3 or spacing[d] / finest <= KERNEL_RATIO else 1 for d in range(3)]
        strides.append(stride)
        kernels.append(list(kernel))
    divisor = [2**p for p in pools]
    padded = [int(math.ceil(p / d) * d) for p, d in zip(patch_zyx, divisor, strict=True)]
    return kernels, strides, padded


def choose_patch(
    median_shape_zyx: Sequence[int],
    spacing_zyx: Sequence[float],
    *,
    max_voxels: int,
    min_feature_map: int = 4,
    max_stages: int = 6,
) -> list[int]:
    """Largest stride-divisible patch ≤ ``max_voxels``, shrinking the physically longest axis first."""
    patch = [max(int(s), 2 * min_feature_map) for s in median_shape_zyx]
    for _ in range(1000):
        _, strides, padded = network_topology(
            spacing_zyx, patch, min_feature_map=min_feature_map, max_stages=max_stages
        )
        if int(np.prod(padded)) <= max_voxels:
            return padded
        divisor = [int(np.prod([s[d] for s in strides])) for d in range(3)]
        extent = [p * s for p, s in zip(patch, spacing_zyx, strict=True)]
        order = np.argsort(extent)[::-1]
        for d in order:
            step = max(divisor[d], int(patch[d] * 0.1) // divisor[d] * divisor[d])
            if patch[d] - step >= 2 * min_feature_map:
                patch[d] -= step
                break
        else:
            return padded
    return padded


def make_plan(fingerprint: Fingerprint, options: PlanOptions | None = None) -> Plan:
    """The plan for a fingerprint (see the module docstring for the rules)."""
    opt = options or PlanOptions()
    notes: list[str] = []
    if opt.target_spacing_xyz is not None:
        spacing_xyz = [float(s) for s in opt.target_spacing_xyz]
        notes.append(f"target spacing given: {spacing_xyz} mm")
    else:
        if not fingerprint.cases:
            raise ValueError("cannot plan without cases")
        spacing_xyz, n = target_spacing(fingerprint.spacings(), fingerprint.sizes(), opt.min_spacing_xyz)
        notes += n
    spacing_zyx = spacing_xyz[::-1]
    if fingerprint.cases:
        extent_zyx = np.median(fingerprint.extents(), axis=0)[::-1]
    else:
        extent_zyx = np.array([150.0, 220.0, 180.0])
    median_shape = [max(1, int(round(e / s))) for e, s in zip(extent_zyx, spacing_zyx, strict=True)]
    max_stages = len(opt.filters) if opt.filters else opt.max_stages
    if opt.patch_size_zyx is not None:
        kernels, strides, patch = network_topology(
            spacing_zyx, opt.patch_size_zyx, min_feature_map=opt.min_feature_map, max_stages=max_stages
        )
        if list(patch) != list(opt.patch_size_zyx):
            notes.append(f"patch {list(opt.patch_size_zyx)} padded to {patch} (divisible by the total stride)")
    else:
        patch = choose_patch(
            median_shape,
            spacing_zyx,
            max_voxels=opt.max_patch_voxels,
            min_feature_map=opt.min_feature_map,
            max_stages=max_stages,
        )
        kernels, strides, patch = network_topology(
            spacing_zyx, patch, min_feature_map=opt.min_feature_map, max_stages=max_stages
        )
        notes.append(f"patch {patch} (z, y, x) from the median head size {median_shape} at the target spacing")
    n_stages = len(strides)
    if opt.filters:
        filters = [int(f) for f in opt.filters[:n_stages]]
    else:
        filters = [min(opt.base_filters * 2**i, opt.max_filters) for i in range(n_stages)]
    aniso = sum(1 for k in kernels if min(k) == 1)
    notes.append(
        f"{n_stages} stages, {aniso} anisotropic "
        f"(kernel 1 along an axis whose spacing is > {KERNEL_RATIO:g}x the finest)"
    )
    if opt.normalization == "zscore":
        fg = fingerprint.foreground
        if fg.get("window_low") == opt.window[0] and fg.get("window_high") == opt.window[1]:
            mean, std = fg["window_mean"], fg["window_std"]
        else:
            mean, std = float(np.mean(opt.window)), float((opt.window[1] - opt.window[0]) / 4)
            notes.append("z-score statistics not available for this window: window centre/quarter-width used")
        norm = Normalization(tuple(opt.window), "zscore", mean, std)  # type: ignore[arg-type]
    else:
        norm = Normalization(tuple(opt.window), "unit")  # type: ignore[arg-type]
    deep = opt.deep_supervision and n_stages >= 3
    return Plan(
        spacing_xyz=spacing_xyz,
        patch_size_zyx=[int(p) for p in patch],
        kernels=kernels,
        strides=strides,
        filters=filters,
        batch_size=opt.batch_size,
        deep_supervision=deep,
        normalization=norm.to_dict(),
        median_shape_zyx=median_shape,
        anisotropic_stages=aniso,
        notes=notes,
        sw_overlap=opt.sw_overlap,
    )
