"""Settings (:class:`ImproveConfig`) and outcome (:class:`ImproveResult`) of one run of the correction loop."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .gate import GATE_METRICS

__all__ = ["DEFAULT_HOLDOUT_FRACTION", "ImproveConfig", "ImproveResult", "same_path"]

DEFAULT_HOLDOUT_FRACTION = 0.2


@dataclass
class ImproveConfig:
    """Settings of one run of the correction loop (see :func:`improve`)."""

    cases_dir: Path
    model: str = "current"  # package path, id@version, version, id or "current"
    replay: list[Path] | None = None  # None: the parent's recorded training data that still exists; []: none
    replay_fraction: float = 0.3  # share of the training samples drawn from the replay data
    replay_cases: int | None = 50  # at most this many cases of each replay dataset (None: all)
    holdout_fraction: float | None = None  # of the cases folder; default 0.2 without holdout_dirs, else 0
    holdout_dirs: list[Path] = field(default_factory=list)
    tolerance: float = 0.02  # no class may lose more than this (in the gate metric)
    metric: str = "dice_empty1"  # or "dice_pos"
    # fine-tuning
    steps: int = 300
    batch_size: int = 2
    lr: float | None = None  # default: the parent's lr x lr_factor
    lr_factor: float = 0.1
    freeze_encoder: bool = False
    class_ratios: tuple[float, float, float, float] | None = None
    augment: bool = True
    loss: str | None = None  # default: the parent's
    # runtime
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    bf16: bool = False
    quality: str = "auto"  # inference quality of the held-out evaluation (auto: the models' cards)
    cache_workers: int = 1
    run_dir: Path | None = None  # default: <user models>/.improve/runs/<run id>
    work_dir: Path | None = None  # default: <user models>/.improve/work
    resume: bool = False  # continue a stopped run from the fine-tuning checkpoint in work_dir
    checkpoint_every: int = 50
    version: str | None = None  # default: the parent's next free minor version
    description: str = ""
    dry_run: bool = False  # scan and report only
    progress: str = "json"
    quarantine_copy_limit_mb: float = 2048.0
    min_train_cases: int = 1

    @property
    def resolved_holdout_fraction(self) -> float:
        if self.holdout_fraction is not None:
            return float(self.holdout_fraction)
        return 0.0 if self.holdout_dirs else DEFAULT_HOLDOUT_FRACTION

    def validate(self) -> None:
        root = Path(self.cases_dir)
        if not root.is_dir():
            raise InputError(f"cases folder not found: {root}")
        if not 0.0 <= self.resolved_holdout_fraction < 1.0:
            raise InputError(f"the held-out fraction must be in [0, 1), got {self.resolved_holdout_fraction}")
        for d in self.holdout_dirs:
            if not Path(d).is_dir():
                raise InputError(f"held-out folder not found: {d}")
            if same_path(d, root):
                raise InputError(f"the held-out folder is the cases folder itself: {d} (use a fraction instead)")
        for d in self.replay or []:
            if not Path(d).is_dir():
                raise InputError(f"replay dataset not found: {d}")
            if any(same_path(d, h) for h in self.holdout_dirs):
                raise InputError(f"{d} is both replay (training) data and a held-out folder")
        if not math.isfinite(self.tolerance):
            raise InputError(f"--tolerance must be a number, got {self.tolerance}")
        if self.metric not in GATE_METRICS:
            raise InputError(f"--metric must be one of {', '.join(GATE_METRICS)}, got {self.metric!r}")
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise InputError(f"--replay-fraction must be in [0, 1), got {self.replay_fraction}")
        if self.replay_cases is not None and self.replay_cases < 1:
            raise InputError(f"--replay-cases must be at least 1, got {self.replay_cases}")
        if self.quality not in ("auto", "fast", "accurate"):
            raise InputError(f"--quality must be auto, fast or accurate, got {self.quality!r}")
        if self.min_train_cases < 1:
            raise InputError("min_train_cases must be at least 1")
        if self.checkpoint_every < 1:
            raise InputError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")


@dataclass
class ImproveResult:
    """What a run did: the decision and where everything is."""

    decision: str  # "promoted", "rejected" or "scanned" (dry run)
    parent: str  # id@version of the model that was improved
    current: str  # id@version of the current model after the run
    run_dir: Path
    report: Path
    quarantine: Path
    candidate: str | None = None  # id@version of the new package
    candidate_path: Path | None = None  # installed package (promoted) or the rejected one in the run folder
    reasons: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)  # current / candidate summaries, comparison
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "promoted": self.promoted,
            "parent": self.parent,
            "candidate": self.candidate,
            "candidate_path": str(self.candidate_path) if self.candidate_path else None,
            "current": self.current,
            "reasons": self.reasons,
            "counts": self.counts,
            "run_dir": str(self.run_dir),
            "report": str(self.report),
            "quarantine": str(self.quarantine),
            "evaluation": self.evaluation,
            "timings_s": self.timings_s,
        }


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (False when one cannot be resolved)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
