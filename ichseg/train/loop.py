"""The training loop: patches → DynUNet → loss → optimiser, with checkpoints that survive a kill.

Determinism and resume
    Every training sample is drawn from an RNG seeded by (seed, rank, step, index in batch): the case
    choice and every MONAI random transform (reseeded per sample).  The data of step *s* therefore do
    not depend on what ran before, on the number of data-loader workers, or on a restart.  A
    checkpoint (written atomically every ``checkpoint_every`` steps) holds the model, optimiser,
    scheduler and grad-scaler states, the global RNG states (torch, CUDA, numpy, python ``random``),
    the step, the loss history and the best validation score; resuming from it with the same
    configuration reproduces an uninterrupted run exactly (same weights, bit for bit, on the same
    hardware and thread count).

Precision
    CUDA: float16 autocast with a ``GradScaler`` (``amp``), or bfloat16 autocast when ``bf16`` is set
    and supported.  CPU: float32, or bfloat16 autocast when ``bf16`` is set and the CPU supports it.
    Losses are always evaluated in float32.

Weight averaging
    With ``ema`` set, an exponential moving average of the weights (``torch.optim.swa_utils``) is
    updated after every step; it is what is validated, kept as "best" and packaged, and it is part of
    the checkpoint.  Small-batch training is noisy from step to step; the average is not.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from .. import labels
from ..errors import IchsegError, InputError
from ..fileutil import atomic_output
from ..infer import cpu_bf16_supported, quality_settings, window_probabilities
from ..preprocess import Normalization, normalize
from ..progress import Progress
from .cache import CachedCase
from .config import TrainConfig
from .ddp import DistInfo, all_equal, barrier, unwrap
from .losses import build_loss

__all__ = [
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "LoopResult",
    "PatchDataset",
    "TrainingError",
    "resolve_device",
    "precision",
    "validate",
    "run_loop",
]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
CHECKPOINT_FORMAT = "ichseg-checkpoint-1"


class TrainingError(IchsegError):
    """Training cannot continue (diverged, inconsistent checkpoint, ...)."""


@dataclass
class LoopResult:
    state_dict: dict[str, torch.Tensor]
    best_state_dict: dict[str, torch.Tensor] | None
    losses: list[float]
    val_history: list[dict[str, Any]]
    best_score: float | None
    best_step: int | None
    steps: int
    seconds: float
    pool_counts: list[int] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def last_dice(self) -> dict[str, Any]:
        return self.val_history[-1]["dice"] if self.val_history else {}


# --------------------------------------------------------------------------- data


class PatchDataset(Dataset):
    """Map-style dataset of training samples; item ``i`` is sample ``i % batch`` of step ``i // batch``.

    ``pools``: lists of cached cases with sampling weights (e.g. new cases and replay cases).
    """

    def __init__(
        self,
        pools: Sequence[tuple[Sequence[CachedCase], float]],
        transform: Callable[[dict[str, Any]], Any],
        *,
        seed: int,
        rank: int,
        batch_size: int,
        steps: int,
    ):
        self.pools = [(list(cases), float(w)) for cases, w in pools if cases and w > 0]
        if not self.pools:
            raise InputError("no training cases to sample from")
        weights = np.array([w for _, w in self.pools])
        self.cum = np.cumsum(weights / weights.sum())
        self.transform = transform
        self.seed, self.rank, self.batch_size, self.steps = seed, rank, batch_size, steps

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def __getitem__(self, index: int) -> dict[str, Any]:
        step, j = divmod(int(index), self.batch_size)
        rng = np.random.default_rng([self.seed, self.rank, step, j])
        pool = int(np.searchsorted(self.cum, rng.random(), side="right"))
        pool = min(pool, len(self.pools) - 1)
        cases = self.pools[pool][0]
        case = cases[int(rng.integers(len(cases)))]
        img, seg = case.arrays(mmap=True)
        item = {"image": np.array(img, dtype=np.float32)[None], "label": np.array(seg)[None]}
        self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))  # type: ignore[attr-defined]
        out = self.transform(item)
        if isinstance(out, list):
            out = out[0]
        return {"image": out["image"], "label": out["label"], "pool": pool}


# --------------------------------------------------------------------------- devices and precision


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` → CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but no CUDA GPU is available (this torch build or machine)")
        if name == "cuda" and info is not None and info.enabled:
            return torch.device("cuda", info.local_rank % torch.cuda.device_count())
        return torch.device(name)
    if name != "cpu":
        raise InputError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device("cpu")


def precision(device: torch.device, amp: bool, bf16: bool) -> tuple[torch.dtype | None, bool, str]:
    """(autocast dtype or None, use GradScaler, description)."""
    if device.type == "cuda":
        if bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16, False, "bf16 autocast (CUDA)"
        if amp:
            return torch.float16, True, "float16 autocast + GradScaler (CUDA)"
        return None, False, "float32 (CUDA)"
    if bf16 and cpu_bf16_supported():
        return torch.bfloat16, False, "bf16 autocast (CPU)"
    return None, False, "float32 (CPU)" + (" — bf16 requested but not supported by this CPU" if bf16 else "")


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, key.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(
    model: nn.Module,
    cases: Sequence[CachedCase],
    patch_zyx: Sequence[int],
    normalization: Normalization,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    quality: str = "fast",
    inference: dict[str, Any] | None = None,
) -> dict[str, float | None]:
    """Dice per class (nan-mean over cases where the class is present) and their mean.

    Predicts like ``ichseg segment`` in the given quality mode (same windows, overlap, padding and
    mirroring, including the card's ``inference`` mirroring settings, e.g. a parent's per-class
    mirroring), so that ``keep="best"`` selects the weights that are best for what users run.
    """
    settings = quality_settings(quality, inference or {})
    net = unwrap(model)
    was_training = net.training
    net.eval()
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True, num_classes=labels.NUM_CLASSES)
    rows = []
    try:
        for case in cases:
            img, seg = case.arrays(mmap=True)
            x = torch.from_numpy(normalize(np.asarray(img, dtype=np.float32), normalization))[None, None].to(device)
            with torch.inference_mode(), autocast():
                probs = window_probabilities(
                    [net],
                    x,
                    patch_zyx,
                    overlap=settings["overlap"],
                    mirror_axes=settings["mirror_axes"],
                    class_mirror_axes=settings["class_mirror_axes"],
                    sw_batch_size=2,
                )
            pred = probs.argmax(1, keepdim=True)
            y = torch.from_numpy(np.asarray(seg, dtype=np.int64))[None, None].to(device)
            rows.append(metric(y_pred=pred, y=y).cpu().numpy()[0])
    finally:
        net.train(was_training)
    table = np.array(rows, dtype=float).reshape(-1, len(labels.CLASSES))
    out: dict[str, float | None] = {}
    for i, cls in enumerate(labels.CLASSES):
        col = table[:, i][~np.isnan(table[:, i])]
        out[cls.key] = round(float(col.mean()), 4) if col.size else None
    present = [v for v in out.values() if v is not None]
    out["mean"] = round(float(np.mean(present)), 4) if present else None
    return out


# --------------------------------------------------------------------------- checkpoints


def _save(obj: Any, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or truncated file
        raise TrainingError(f"checkpoint {path} cannot be read: {' '.join(str(exc).split())[:160]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not an ichseg training checkpoint")
    return ckpt


# --------------------------------------------------------------------------- the loop


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def run_loop(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    patch_zyx: Sequence[int],
    normalization: Normalization,
    transform: Callable[[dict[str, Any]], Any],
    pools: Sequence[tuple[Sequence[CachedCase], float]],
    val_cases: Sequence[CachedCase],
    ckpt_dir: Path,
    device: torch.device,
    info: DistInfo,
    progress: Progress,
    lr: float,
    deep_supervision: bool,
    signature: str,
    fold: int | None = None,
    fraction_range: tuple[float, float] = (0.0, 1.0),
    val_inference: dict[str, Any] | None = None,
) -> LoopResult:
    """Train ``model`` (already on ``device``, wrapped for DDP if distributed) for ``cfg.steps`` steps.

    ``val_inference`` is the inference block of the card being trained (mirroring settings), used by
    validation."""
    t_start = time.monotonic()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("no trainable parameters")
    optimizer = make_optimizer(params, cfg, lr)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.steps, power=0.9)
    amp_dtype, use_scaler, precision_text = precision(device, cfg.amp, cfg.bf16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    autocast = _autocast(device, amp_dtype)
    loss_fn = build_loss(cfg.loss, deep_supervision=deep_supervision).to(device)
    ema = None if cfg.ema is None else AveragedModel(unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
    evaluated = model if ema is None else ema.module  # the weights validated and packaged

    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    best_path = ckpt_dir / BEST_NAME
    start, losses, val_history = 0, [], []
    best_score: float | None = None
    best_step: int | None = None
    pool_counts = [0] * len(pools)
    elapsed_before = 0.0
    if cfg.resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("signature") != signature:
            raise TrainingError(
                f"checkpoint {ckpt_path} was written by a different configuration; start a new --work-dir "
                "or run without --resume (with --overwrite) to start again"
            )
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if use_scaler and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        losses = list(ckpt["losses"])
        val_history = list(ckpt["val_history"])
        best_score, best_step = ckpt["best_score"], ckpt["best_step"]
        pool_counts = list(ckpt.get("pool_counts", pool_counts))
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        progress.emit(
            "train", _frac(fraction_range, start, cfg.steps), f"resumed at step {start}", step=start, fold=fold
        )
    resumed_from = start
    if info.is_main:
        progress.info(f"training on {device} with {precision_text}; {len(params)} parameter tensors; lr {lr:g}")

    dataset = PatchDataset(pools, transform, seed=cfg.seed, rank=info.rank, batch_size=cfg.batch_size, steps=cfg.steps)
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=range(start * cfg.batch_size, cfg.steps * cfg.batch_size),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    def checkpoint(step: int) -> None:
        if not info.is_main:
            return
        _save(
            {
                "format": CHECKPOINT_FORMAT,
                "signature": signature,
                "step": step,
                "fold": fold,
                "model": _state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_scaler else {},
                "ema": {} if ema is None else ema.state_dict(),
                "rng": rng_state(),
                "losses": losses,
                "val_history": val_history,
                "best_score": best_score,
                "best_step": best_step,
                "pool_counts": pool_counts,
                "elapsed_s": elapsed_before + time.monotonic() - t_start,
            },
            ckpt_path,
        )
        progress.emit("checkpoint", None, f"checkpoint at step {step}", step=step, fold=fold, path=str(ckpt_path))

    model.train()
    t_loop = time.monotonic()
    step = start
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        for p in batch["pool"].tolist():
            pool_counts[int(p)] += 1
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = model(x)
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss is {float(loss)} at step {step + 1}: training diverged (try a lower --lr"
                + (", or without --bf16)" if cfg.bf16 else ")")
            )
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(unwrap(model))
        step += 1
        value = loss.detach()
        if info.enabled:
            torch.distributed.all_reduce(value)
            value = value / info.world_size
        losses.append(round(float(value), 6))

        dice = None
        if val_cases and (step % cfg.val_every == 0 or step == cfg.steps):
            if info.is_main:
                dice = validate(
                    evaluated, val_cases, patch_zyx, normalization, device, autocast, cfg.val_quality, val_inference
                )
                val_history.append({"step": step, "dice": dice})
                score = dice.get("mean")
                if score is not None and (best_score is None or score > best_score):
                    best_score, best_step = float(score), step
                    _save(_state(evaluated), best_path)
            barrier(info)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint(step)
        if info.is_main and (step % cfg.log_every == 0 or step == cfg.steps or step == start + 1 or dice):
            done = step - start
            rate = (time.monotonic() - t_loop) / max(done, 1)
            eta = rate * (cfg.steps - step)
            extra: dict[str, Any] = {
                "step": step,
                "steps": cfg.steps,
                "fold": fold,
                "loss": losses[-1],
                "lr": scheduler.get_last_lr()[0],
                "eta_s": round(eta, 1),
                "step_s": round(rate, 3),
            }
            if dice is not None:
                extra["dice"] = dice
            text = f"step {step}/{cfg.steps} loss {losses[-1]:.4f}" + (
                f" val Dice {dice['mean']}" if dice and dice.get("mean") is not None else ""
            )
            progress.emit("train", _frac(fraction_range, step, cfg.steps), text, **extra)

    if info.enabled:
        same = all_equal(model, info)
        if info.is_main:
            progress.info(f"DDP: weights identical on all {info.world_size} ranks: {same}")
        if not same:
            raise TrainingError("DDP ranks ended with different weights")
    best_state = None
    if best_path.is_file() and info.is_main and best_step is not None:
        best_state = torch.load(best_path, map_location="cpu", weights_only=True)
    return LoopResult(
        state_dict=_state(evaluated),
        best_state_dict=best_state,
        losses=losses,
        val_history=val_history,
        best_score=best_score,
        best_step=best_step,
        steps=cfg.steps,
        seconds=elapsed_before + time.monotonic() - t_start,
        pool_counts=pool_counts,
        resumed_from=resumed_from,
    )


def _frac(rng: tuple[float, float], step: int, steps: int) -> float:
    lo, hi = rng
    return lo + (hi - lo) * (step / max(steps, 1))
