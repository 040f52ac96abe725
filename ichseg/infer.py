"""Inference: a CT image in, a uint8 class map on the input's grid out.

Pipeline: CT checks → orientation, HU normalisation and resampling to the model's working
grid (read from the model card) → crop to the head → sliding-window prediction (MONAI,
Gaussian blending) with the fold ensemble and optional mirroring test-time augmentation →
class probabilities resampled back to the input grid one channel at a time with a running
arg-max (uint8; never per-class float64 volumes at full resolution) → post-processing.

Speed on a CPU comes from the fixed working grid (a 1 mm or 0.6 mm scan costs about what a
5 mm one does) and the head crop.  Windows are the trained patch size: the network uses instance
normalisation, whose statistics over a whole-head window differ from those of the training patches
(measured: a whole-head window turned most of the brain into "ICH"), so the tempting single large
window is only used for a model whose card sets ``inference.max_window_voxels``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from .checks import check_ct
from .intracranial import CranialCavity, cranial_cavity
from .labels import NUM_CLASSES, class_by_value
from .model.card import ModelCard, parse_class_mirror_axes, test_metrics
from .model.network import total_stride
from .model.package import ModelPackage
from .postprocess import (
    drop_extracranial_components,
    drop_unconfident_components,
    parse_min_component_ml,
    parse_min_confidence,
    postprocess,
)
from .preprocess import Prepared, labels_to_original, prepare_image

__all__ = [
    "QUALITY_CHOICES",
    "QUALITY_SETTINGS",
    "Quality",
    "SegmentationResult",
    "Segmenter",
    "cavity_summary",
    "find_cavity",
    "finish_label",
    "class_axes_by_key",
    "class_mirror_axes_of",
    "cpu_bf16_supported",
    "mirror_axes_of",
    "quality_settings",
    "resolve_quality",
    "quality_warning",
    "select_device",
    "window_probabilities",
]

Quality = Literal["auto", "fast", "accurate"]
ProgressFn = Callable[[str, float, str], None]

#: What each quality mode does.  "accurate" mirrors along x and y unless the card's
#: ``inference.mirror_axes`` says otherwise (:func:`mirror_axes_of`).  Training flips x only, so a
#: head flipped front to back (y) is one the network never saw; measured with 1.3.0 on 50 test cases,
#: x only instead of x and y: ICH Dice 0.823 → 0.757 (ICH false positives 91 → 137: the y-flipped
#: passes put theirs elsewhere, the average drops them), IVH 0.748 → 0.796.  Fast mode's overlap was
#: 0.25 until 2026-12-06: ICH Dice 0.41 with 1.3.0, against 0.74 at 0.5.
QUALITY_SETTINGS: dict[str, dict[str, Any]] = {
    "fast": {"mirror_axes": (), "overlap": 0.5},
    "accurate": {"mirror_axes": (2, 1), "overlap": 0.5},
}
#: Choices offered to users; "auto" (the default of the command line, Slicer and batch jobs) is the
#: quality the model card recommends (``inference.quality``), "fast" for a card without one.
QUALITY_CHOICES: tuple[str, ...] = ("auto", *QUALITY_SETTINGS)


def resolve_quality(quality: str, inference: dict[str, Any]) -> str:
    """The concrete quality mode for a requested one: ``auto`` → the card's ``inference.quality``."""
    if quality not in QUALITY_CHOICES:
        raise ValueError(f"quality must be one of {', '.join(QUALITY_CHOICES)}, got {quality!r}")
    if quality != "auto":
        return quality
    recommended = inference.get("quality", "fast")
    return recommended if recommended in QUALITY_SETTINGS else "fast"


def mirror_axes_of(quality: str, inference: dict[str, Any]) -> tuple[int, ...]:
    """The (z, y, x) axes test-time mirroring flips in a quality mode: none in "fast"; in "accurate"
    the card's ``inference.mirror_axes`` (validated with the card) or the mode's default."""
    default = tuple(QUALITY_SETTINGS[quality]["mirror_axes"])
    if not default:
        return ()
    axes = inference.get("mirror_axes")
    return default if axes is None else tuple(int(a) for a in axes)


def class_mirror_axes_of(quality: str, inference: dict[str, Any]) -> dict[int, tuple[int, ...]]:
    """Per-class mirroring of a quality mode: the card's ``inference.class_mirror_axes`` ({"IVH": [2]},
    class keys) as {class value: axes}, each limited to the mode's mirrored axes; {} without mirroring."""
    axes = mirror_axes_of(quality, inference)
    if not axes:
        return {}
    spec = parse_class_mirror_axes(inference.get("class_mirror_axes"))
    return {value: tuple(a for a in class_axes if a in axes) for value, class_axes in spec.items()}


def quality_settings(quality: str, inference: dict[str, Any], overlap: float | None = None) -> dict[str, Any]:
    """What a (resolved) quality mode runs with a card's ``inference`` block: ``overlap`` (the mode's
    unless given), ``mirror_axes`` and ``class_mirror_axes`` ({class value: axes}).  One derivation for
    :class:`Segmenter`, ``ichseg segment``'s re-run check and training validation."""
    return {
        "overlap": float(QUALITY_SETTINGS[quality]["overlap"] if overlap is None else overlap),
        "mirror_axes": mirror_axes_of(quality, inference),
        "class_mirror_axes": class_mirror_axes_of(quality, inference),
    }


def class_axes_by_key(class_axes: Mapping[int, Sequence[int]]) -> dict[str, list[int]]:
    """{class value: axes} → {class key: axes}, as ``<case>_volumes.json`` records per-class mirroring."""
    return {class_by_value(c).key: list(axes) for c, axes in class_axes.items()}


def quality_warning(card: ModelCard, quality: str) -> str | None:
    """A warning when ``quality`` (resolved) is not the one the card recommends, with the held-out ICH Dice of both."""
    recommended = card.inference.get("quality")
    if recommended not in QUALITY_SETTINGS or quality == recommended:
        return None

    def ich_dice(mode: str) -> float | None:
        summary = test_metrics(card.metrics, mode)
        ich = summary["classes"].get("ICH") if summary else None
        return ich.get("dice_pos_mean") if isinstance(ich, dict) else None

    message = f"model {card.id}@{card.version} is meant to run with --quality {recommended}"
    chosen, best = ich_dice(quality), ich_dice(recommended)
    if chosen is not None and best is not None:
        message += f" (held-out ICH Dice {best:.2f}; with {quality}: {chosen:.2f})"
    return message


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 / AMX); elsewhere it is emulated, many times slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; otherwise the named device (checked)."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            from .errors import InputError

            raise InputError("a CUDA GPU was requested but none is available (use --device cpu or auto)")
        return torch.device("cuda" if name == "gpu" else name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            from .errors import InputError

            raise InputError("Apple MPS was requested but is not available")
    return torch.device(name)


@dataclass
class SegmentationResult:
    label: sitk.Image  # uint8 class map on the input grid
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    postprocess: dict[str, int] = field(default_factory=dict)
    working_shape_zyx: tuple[int, int, int] | None = None
    window_zyx: tuple[int, int, int] | None = None
    quality: str = ""  # the quality mode used (auto resolved)
    overlap: float | None = None  # the sliding windows' overlap used
    mirror_axes: tuple[int, ...] = ()  # the (z, y, x) axes test-time mirroring flipped
    class_mirror_axes: dict[str, list[int]] = field(default_factory=dict)  # classes mirrored along fewer axes
    cranial_cavity: dict[str, Any] | None = None  # see ichseg.intracranial; None when not looked for


def choose_window(
    shape_zyx: Sequence[int], patch_zyx: Sequence[int], divisor: Sequence[int], max_voxels: int
) -> tuple[int, ...]:
    """One window covering the whole (cropped) volume if it fits ``max_voxels``; else the trained patch.

    Each axis is rounded up to a multiple of ``divisor`` and never below the trained patch size.
    """
    div = np.asarray(divisor, dtype=int)
    whole = np.maximum(np.ceil(np.asarray(shape_zyx) / div).astype(int) * div, np.asarray(patch_zyx, dtype=int))
    if int(np.prod(whole)) <= max_voxels:
        return tuple(int(v) for v in whole)
    return tuple(int(v) for v in patch_zyx)


def window_probabilities(
    networks: Sequence[torch.nn.Module],
    x: torch.Tensor,
    window: Sequence[int],
    *,
    overlap: float,
    mirror_axes: Sequence[int] = (),
    class_mirror_axes: Mapping[int, Sequence[int]] | None = None,
    sw_batch_size: int = 1,
) -> torch.Tensor:
    """Softmax probabilities (N, C, z, y, x) of a normalised volume (N, 1, z, y, x), float32.

    Sliding windows with Gaussian blending (padding with the volume's minimum, i.e. air), averaged
    over the networks (fold ensemble) and over every combination of flips along ``mirror_axes``
    (axes of the (z, y, x) volume).  ``class_mirror_axes`` ({class value: axes}) averages those
    classes' channels only over the passes whose flips lie along their axes (e.g. IVH over the
    x-only passes while the others use x and y: no extra pass); the channels then need not sum to 1,
    the arg-max decides.  Shared by inference and training validation so that model selection
    scores what users get.  The caller sets inference mode and autocast.
    """
    flips: list[tuple[int, ...]] = [()]
    for axis in mirror_axes:  # +2 for the (N, C) axes
        flips += [(*f, axis + 2) for f in flips]
    allowed = {c: {a + 2 for a in axes} for c, axes in (class_mirror_axes or {}).items()}
    partial: dict[int, torch.Tensor] = {}
    counts = dict.fromkeys(allowed, 0)
    total: torch.Tensor | None = None
    for net in networks:
        for flip in flips:
            xi = torch.flip(x, flip) if flip else x
            logits = sliding_window_inference(
                xi,
                roi_size=list(window),
                sw_batch_size=sw_batch_size,
                predictor=net,
                overlap=overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=float(x.min()),
            )
            if isinstance(logits, list | tuple):  # deep supervision heads: the full-resolution one
                logits = logits[0]
            probs = torch.softmax(logits.float(), dim=1)
            if flip:
                probs = torch.flip(probs, flip)
            for c, axes in allowed.items():
                if set(flip) <= axes:  # (the unflipped pass always counts)
                    channel = probs[:, c]
                    partial[c] = channel.clone() if c not in partial else partial[c].add_(channel)
                    counts[c] += 1
            total = probs if total is None else total.add_(probs)
    if total is None:
        raise ValueError("no networks to predict with")
    out = total / (len(networks) * len(flips))
    for c, summed in partial.items():
        out[:, c] = summed / counts[c]
    return out


def cavity_summary(cavity: CranialCavity) -> dict[str, Any]:
    """What ``<case>_volumes.json`` records about the cranial cavity."""
    return {
        "found": cavity.mask is not None,
        "volume_ml": round(cavity.volume_ml, 1),
        "bone_enclosure": round(cavity.bone_enclosure, 3),
        "reason": cavity.reason,
    }


def find_cavity(prepared: Prepared) -> CranialCavity:
    """The cranial cavity of a prepared image, on its (cropped) working grid."""
    return cranial_cavity(prepared.hu, tuple(prepared.grid.spacing[::-1]))


def finish_label(
    probs: np.ndarray,
    prepared: Prepared,
    spacing_xyz: Sequence[float],
    *,
    min_confidence: dict[int, float],
    cavity: CranialCavity | None,
    timings: dict[str, float] | None = None,
    min_component_mm3: Mapping[int, float] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """What follows the network: the class map (z, y, x) uint8 on the input grid, voxels removed per rule.

    Working-grid rules on the probabilities (edited in place): unconfident components (when the
    card sets thresholds), then findings outside ``cavity`` (:func:`find_cavity`; None: rule off,
    and a cavity without a mask removes nothing); then probabilities back to the input grid
    (``spacing_xyz``) and :func:`ichseg.postprocess.postprocess` (component limits
    ``min_component_mm3``, default: the module's).  Removed voxels are counted on
    the input grid.  Shared by :class:`Segmenter` and the benchmarks that tune rules.
    """
    timings = {} if timings is None else timings
    t = time.perf_counter()
    dropped = drop_unconfident_components(probs, min_confidence)
    if cavity is not None and cavity.mask is not None:
        spacing_zyx = tuple(prepared.grid.spacing[::-1])
        dropped["extracranial_components"] = drop_extracranial_components(probs, cavity.mask, spacing_zyx)
    scale = math.prod(prepared.working.spacing) / math.prod(spacing_xyz)
    removed = {rule: int(round(n * scale)) for rule, n in dropped.items()}
    arr = sitk.GetArrayFromImage(labels_to_original(probs, prepared))
    timings["resample_back"] = time.perf_counter() - t
    t = time.perf_counter()
    removed.update(postprocess(arr, spacing_xyz, min_component_mm3))
    timings["postprocess"] = time.perf_counter() - t
    return arr, removed


class Segmenter:
    """A loaded model ready to segment CT images."""

    def __init__(
        self,
        package: ModelPackage,
        *,
        device: str = "auto",
        quality: Quality = "auto",
        threads: int | None = None,
        bf16: bool = False,
        overlap: float | None = None,
        sw_batch_size: int = 1,
        cavity_check: bool = True,
    ) -> None:
        self.quality = resolve_quality(quality, package.card.inference)
        if threads:
            torch.set_num_threads(int(threads))
        self.package = package
        self.card = package.card
        self.device = select_device(device)
        self.settings = quality_settings(self.quality, self.card.inference, overlap)
        # bf16 autocast on the CPU only where it is native: emulated it was ~50x slower (AMD EPYC, AVX2)
        self.bf16 = bool(bf16) and (self.device.type != "cpu" or cpu_bf16_supported())
        self.sw_batch_size = sw_batch_size
        self.config = self.card.preprocess_config()
        self.networks = package.build_networks(self.device)
        patch = self.card.inference.get("patch_size_zyx") or self.card.plan.get("patch_size_zyx")
        if not patch:
            from .errors import InputError

            raise InputError(f"model {self.card.label}: its card has no patch size")
        self.patch_zyx = tuple(int(v) for v in patch)
        # 0: windows of the trained patch size (see the module docstring)
        self.settings["max_window_voxels"] = int(self.card.inference.get("max_window_voxels", 0))
        self.divisor = total_stride(self.card.architecture)
        # thresholds chosen on validation cases when the model was shipped (see ichseg.postprocess)
        self.min_confidence = parse_min_confidence(self.card.inference.get("min_component_confidence"))
        self.min_component_mm3 = parse_min_component_ml(self.card.inference.get("min_component_ml"))
        # findings outside the cranial cavity are given up (ichseg.intracranial); --keep-extracranial: off
        self.cavity_check = bool(cavity_check)

    # ------------------------------------------------------------------ prediction
    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.device.type == "cpu" and self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def predict_probabilities(self, prepared: Prepared) -> tuple[np.ndarray, tuple[int, ...]]:
        """Class probabilities (C, z, y, x) float32 on the cropped working grid, and the window used."""
        x = torch.from_numpy(np.ascontiguousarray(prepared.normalized()))[None, None].to(self.device)
        window = choose_window(x.shape[2:], self.patch_zyx, self.divisor, self.settings["max_window_voxels"])
        with torch.inference_mode(), self._autocast():
            probs = window_probabilities(
                self.networks,
                x,
                window,
                overlap=self.settings["overlap"],
                mirror_axes=self.settings["mirror_axes"],
                class_mirror_axes=self.settings["class_mirror_axes"],
                sw_batch_size=self.sw_batch_size,
            )
        out = probs[0].to("cpu", torch.float32).numpy()
        if out.shape[0] != NUM_CLASSES:
            raise RuntimeError(f"model produced {out.shape[0]} channels, expected {NUM_CLASSES}")
        return out, window

    # ------------------------------------------------------------------ pipeline
    def segment(self, image: sitk.Image, progress: ProgressFn | None = None) -> SegmentationResult:
        """Segment a CT image (already read); the result's label is on the image's exact grid."""
        report = progress or (lambda stage, fraction, message: None)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        report("check", 0.05, "checking the CT")
        warnings = check_ct(image)
        timings["check"] = time.perf_counter() - t

        t = time.perf_counter()
        report("preprocess", 0.1, "resampling to the model grid")
        prepared = prepare_image(image, self.config)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        report("predict", 0.2, f"running the network on {self.device.type}")
        probs, window = self.predict_probabilities(prepared)
        timings["predict"] = time.perf_counter() - t

        t = time.perf_counter()
        cavity = find_cavity(prepared) if self.cavity_check else None
        timings["cavity"] = time.perf_counter() - t

        report("resample", 0.8, "returning to the input grid")
        arr, removed = finish_label(
            probs,
            prepared,
            image.GetSpacing(),
            min_confidence=self.min_confidence,
            cavity=cavity,
            timings=timings,
            min_component_mm3=self.min_component_mm3,
        )
        del probs
        if cavity is not None and cavity.mask is None:
            warnings.append(f"cranial cavity not found ({cavity.reason}): findings outside the skull were kept")
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(image)
        return SegmentationResult(
            label=out,
            warnings=warnings,
            timings_s=timings,
            postprocess=removed,
            cranial_cavity=None if cavity is None else cavity_summary(cavity),
            working_shape_zyx=tuple(int(v) for v in prepared.hu.shape),  # type: ignore[arg-type]
            window_zyx=window,  # type: ignore[arg-type]
            quality=self.quality,
            overlap=float(self.settings["overlap"]),
            mirror_axes=tuple(self.settings["mirror_axes"]),
            class_mirror_axes=class_axes_by_key(self.settings["class_mirror_axes"]),
        )


def default_threads() -> int:
    """Physical-ish core count for torch on a CPU (respects CPU affinity)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, n)


def estimate_window_memory_bytes(window_zyx: Sequence[int], filters: int = 32) -> int:
    """Rough activation memory of one window (float32) for logging and memory checks."""
    return int(math.prod(window_zyx)) * filters * 4 * 6
