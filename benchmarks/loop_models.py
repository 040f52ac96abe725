"""Models of ``correction_loop.py``: the weakened starting model, segmenting with a package, Dice per class."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ichseg import labels


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def weak_model(args: argparse.Namespace, base_data: Path, out: Path) -> Path:
    """The weakened starting model (see the module docstring)."""
    from ichseg.train import FinetuneConfig, TrainConfig, run_finetune, run_training

    if args.weak_model:
        return Path(args.weak_model)
    target = out / "weak_model"
    if (target / "model.json").is_file():
        log(f"reusing the weak model {target}")
        return target
    common = dict(
        datasets=[base_data],
        output=target,
        work_dir=out / "weak_work",
        threads=args.threads,
        device=args.device,
        bf16=args.bf16,
        progress="quiet",
        val_cases=0,
        overwrite=True,
        seed=args.seed,
        version="1.0.0",
        description=f"deliberately weak model for the correction-loop benchmark ({args.scenario})",
    )
    t = time.perf_counter()
    if args.base_model:
        log(f"weakening {args.base_model}: {args.weaken_steps} fine-tuning steps on the base data")
        run_finetune(FinetuneConfig(model=Path(args.base_model), steps=args.weaken_steps, lr=args.weaken_lr, **common))
    else:
        log(f"training the weak model from scratch: {args.weak_steps} steps")
        kw: dict[str, Any] = dict(steps=args.weak_steps, optimizer="adamw", lr=args.weak_lr, loss="dicefocal")
        if args.tiny:
            kw.update(target_spacing=(3.0, 3.0, 5.0), patch_size=(16, 48, 48), filters=(4, 8, 16), batch_size=2)
        else:
            if args.spacing:
                kw.update(target_spacing=args.spacing)
            if args.filters:
                kw.update(filters=args.filters)
        run_training(TrainConfig(model_id="ichseg-weak", **kw, **common))
    log(f"weak model ready in {time.perf_counter() - t:.0f} s")
    return target


def segment_all(package, images: list[sitk.Image], args) -> list[np.ndarray]:
    from ichseg.infer import Segmenter

    seg = Segmenter(package, device=args.device, threads=args.threads, bf16=args.bf16)
    return [sitk.GetArrayFromImage(seg.segment(img).label) for img in images]


def dice_per_class(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    from ichseg.evaluate.metrics import dice

    return {c.key: dice(pred == c.value, truth == c.value, empty=None) for c in labels.CLASSES}
