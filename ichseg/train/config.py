"""Training and fine-tuning configuration (dataclasses with sensible defaults)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..model.card import QUALITY_MODES
from .losses import LOSSES
from .transforms import DEFAULT_CLASS_RATIOS, DEFAULT_NEGATIVE_HU

__all__ = ["TrainConfig", "FinetuneConfig", "DEFAULT_MODEL_ID"]

DEFAULT_MODEL_ID = "ichseg-ich-phe-ivh"


@dataclass
class TrainConfig:
    """Everything a training run needs.  Spatial tuples: spacing (x, y, z) mm, patch (z, y, x) voxels."""

    datasets: list[Path] = field(default_factory=list)
    output: Path | None = None  # the model package folder to write
    work_dir: Path | None = None  # fingerprint, plan, cache, checkpoints (default: <output>.work)
    # data and plan
    target_spacing: tuple[float, float, float] | None = None
    min_spacing: tuple[float, float, float] = (1.0, 1.0, 2.5)
    patch_size: tuple[int, int, int] | None = None
    max_patch_voxels: int = 32 * 128 * 128
    filters: tuple[int, ...] | None = None
    base_filters: int = 16
    max_filters: int = 256
    max_stages: int = 6
    deep_supervision: bool = True
    normalization: str = "unit"  # "unit" or "zscore"
    window: tuple[float, float] = (-15.0, 100.0)
    class_ratios: tuple[float, float, float, float] = DEFAULT_CLASS_RATIOS
    negative_hu: tuple[float, float] | None = DEFAULT_NEGATIVE_HU  # background patch centres (None: anywhere)
    augment: bool = True
    val_cases: int = 2  # held out when not cross-validating
    folds: int = 1  # k-fold cross-validation when > 1
    fold: int | None = None  # train only this fold
    # optimisation
    steps: int = 1000
    batch_size: int = 2
    loss: str = "dicece"
    optimizer: str = "sgd"  # "sgd" (nnU-Net: momentum 0.99, Nesterov) or "adamw"
    lr: float | None = None  # default 0.01 (sgd) / 3e-4 (adamw); poly decay (power 0.9)
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    ema: float | None = None  # decay of an exponential moving average of the weights (validated, packaged)
    # runtime
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    bf16: bool = False  # bf16 autocast on CPU (when supported) or CUDA
    amp: bool = True  # float16 autocast + GradScaler on CUDA
    deterministic: bool = True
    threads: int | None = None  # torch CPU threads
    num_workers: int | None = None  # data-loader workers (default: 0 on CPU, 4 on CUDA)
    cache_workers: int = 1
    val_every: int = 250
    val_quality: str = "fast"  # inference mode of validation: "fast" or "accurate" (mirroring, overlap 0.5)
    checkpoint_every: int = 50
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False
    keep: str = "last"  # weights to package: "last" or "best" (by validation mean Dice)
    progress: str = "json"
    # model card
    model_id: str = DEFAULT_MODEL_ID
    version: str | None = None  # default 1.0.0 (training) / parent minor bump (fine-tuning)
    name: str = "ICH / PHE / IVH segmentation (3D U-Net)"
    description: str = ""

    def validate(self) -> None:
        from ..errors import InputError

        if not self.datasets:
            raise InputError("no training data given")
        if self.output is None:
            raise InputError("no output model folder given (-o)")
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.loss.lower() not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.folds < 1:
            raise InputError(f"--folds must be at least 1, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise InputError(f"--fold must be in 0..{self.folds - 1}, got {self.fold}")
        if self.keep not in ("last", "best"):
            raise InputError(f"keep must be 'last' or 'best', got {self.keep!r}")
        if self.normalization not in ("unit", "zscore"):
            raise InputError(f"normalization must be unit or zscore, got {self.normalization!r}")
        if len(self.class_ratios) != 4 or min(self.class_ratios) < 0 or sum(self.class_ratios) <= 0:
            raise InputError(
                f"class ratios must be 4 non-negative numbers (bg, ICH, PHE, IVH), got {self.class_ratios}"
            )
        if self.negative_hu is not None and not (
            len(self.negative_hu) == 2 and float(self.negative_hu[0]) < float(self.negative_hu[1])
        ):
            raise InputError(f"negative HU range must be LO,HI with LO < HI, got {self.negative_hu}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise InputError(f"--ema must be a decay in [0, 1), e.g. 0.999, got {self.ema}")
        if self.val_quality not in QUALITY_MODES:
            raise InputError(f"validation quality must be {' or '.join(QUALITY_MODES)}, got {self.val_quality!r}")
        for name in ("val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1")

    @property
    def resolved_work_dir(self) -> Path:
        if self.work_dir is not None:
            return Path(self.work_dir)
        assert self.output is not None
        out = Path(self.output)
        return out.with_name(out.name + ".work")

    @property
    def default_lr(self) -> float:
        return 0.01 if self.optimizer == "sgd" else 3e-4

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    def signature(self) -> str:
        """Digest of the settings that determine the trained weights (a resume must match it)."""
        ignore = {
            "output",
            "work_dir",
            "resume",
            "overwrite",
            "progress",
            "num_workers",
            "cache_workers",
            "threads",
            "val_every",
            "val_quality",
            "checkpoint_every",
            "log_every",
            "name",
            "description",
            "version",
            "model_id",
            "keep",
        }
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ignore}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class FinetuneConfig(TrainConfig):
    """Fine-tune an existing package on new (corrected) cases, with replay of the original data."""

    model: Path | None = None  # parent package folder or .zip
    replay: list[Path] = field(default_factory=list)  # original training datasets
    replay_fraction: float = 0.3  # share of samples drawn from the replay data
    freeze_encoder: bool = False
    steps: int = 300
    lr_factor: float = 0.1  # lr = parent lr × factor unless lr is given
    val_cases: int = 1
    loss: str | None = None  # default: the parent's loss
    optimizer: str | None = None  # default: the parent's optimiser
    model_id: str | None = None  # default: the parent's id
    name: str | None = None  # default: the parent's name

    def validate(self) -> None:
        from ..errors import InputError

        if self.model is None:
            raise InputError("no parent model given (--model)")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise InputError(f"--replay-fraction must be in [0, 1), got {self.replay_fraction}")
        super().validate()
