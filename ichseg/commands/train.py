"""``ichseg train``: train a segmentation model (3D U-Net) on nnU-Net raw datasets and/or Slicer case folders."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "train"
HELP = "train a model package on nnU-Net raw datasets or folders of Slicer cases"
DESCRIPTION = (
    "Train a 3D U-Net (MONAI DynUNet, nnU-Net-like plan) for ICH/PHE/IVH. DATASET is an nnU-Net raw dataset "
    "(imagesTr/labelsTr/dataset.json) or a folder of CT files with <case>.seg.nrrd segmentations. Cases that fail "
    "their checks are reported and skipped. Progress is printed as JSON lines (or a bar on a terminal). "
    "Distributed: torchrun --nproc_per_node N -m ichseg train ..."
)

VAL_QUALITIES = ("fast", "accurate")  # = ichseg.model.card.QUALITY_MODES (not imported: torch)


def number_list(kind: Callable[[str], Any], n: int | None = None, name: str = "value") -> Callable[[str], tuple]:
    """argparse type: ``n`` comma-separated numbers of type ``kind`` (any count when ``n`` is None)."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers for {name}, got {text!r}") from None
        if n is not None and len(values) != n:
            raise argparse.ArgumentTypeError(f"{name} needs {n} comma-separated values, got {text!r}")
        return values

    return parse


def _negative_hu(text: str) -> tuple[float, float] | str:
    if text.strip().lower() == "any":
        return "any"
    lo, hi = number_list(float, 2, "--negative-hu")(text)
    if lo >= hi:
        raise argparse.ArgumentTypeError(f"--negative-hu: LO must be below HI, got {text!r}")
    return (lo, hi)


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``finetune``."""
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="training steps (iterations)")
    g.add_argument("--batch-size", type=int, default=2)
    g.add_argument("--optimizer", choices=("sgd", "adamw"), help="sgd (nnU-Net: momentum 0.99, Nesterov) or adamw")
    g.add_argument("--lr", type=float, help="initial learning rate (poly decay)")
    g.add_argument("--weight-decay", type=float, default=3e-5)
    g.add_argument(
        "--class-ratios",
        type=number_list(float, 4, "--class-ratios"),
        metavar="BG,ICH,PHE,IVH",
        help="patch-centre sampling ratios (default 1,1,1,1)",
    )
    g.add_argument(
        "--negative-hu",
        type=_negative_hu,
        metavar="LO,HI|any",
        help="centre background patches on non-lesion tissue in this HU range (hard negatives; default 40,150)",
    )
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no data augmentation")
    g.add_argument("--val-cases", type=int, help="cases held out for validation (no cross-validation)")
    g.add_argument("--val-every", type=int, default=250, help="validate every N steps")
    g.add_argument(
        "--val-quality",
        choices=VAL_QUALITIES,
        default="fast",
        help="inference mode of validation (accurate: mirroring TTA, overlap 0.5; ~7x slower, less noisy)",
    )
    g.add_argument("--keep", choices=("last", "best"), default="last", help="weights to package")
    g.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="validate and package an exponential moving average of the weights (e.g. 0.999: ~1000 steps)",
    )
    r = p.add_argument_group("runtime")
    r.add_argument("--work-dir", type=Path, help="cache and checkpoints (default: OUTPUT.work)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU when supported, or CUDA)")
    r.add_argument("--no-amp", dest="amp", action="store_false", help="no float16 autocast on CUDA")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument("--workers", type=int, help="data-loader worker processes (default 0 on CPU, 4 on CUDA)")
    r.add_argument("--cache-workers", type=int, default=1, help="processes for reading and caching cases")
    r.add_argument("--checkpoint-every", type=int, default=50, help="checkpoint every N steps")
    r.add_argument("--log-every", type=int, default=10, help="progress line every N steps")
    r.add_argument("--resume", action="store_true", help="continue from the checkpoints in the work folder")
    r.add_argument("--overwrite", action="store_true", help="replace an existing package / start the work again")
    r.add_argument("--progress", choices=("json", "bar", "quiet"), help="progress output (default: json when piped)")
    c = p.add_argument_group("model card")
    c.add_argument("--id", dest="model_id", help="model id (lower-case, e.g. ichseg-ich-phe-ivh)")
    c.add_argument("--version", help="semantic version of the new package")
    c.add_argument("--name", help="display name")
    c.add_argument("--description", default="", help="description")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("datasets", nargs="+", type=Path, metavar="DATASET", help="training data folder(s)")
    p.add_argument("-o", "--output", type=Path, required=True, help="model package folder to write")
    g = p.add_argument_group("plan (default: derived from the data)")
    g.add_argument("--spacing", type=number_list(float, 3, "--spacing"), metavar="X,Y,Z", help="working spacing in mm")
    g.add_argument(
        "--min-spacing",
        type=number_list(float, 3, "--min-spacing"),
        metavar="X,Y,Z",
        help="CPU-speed floor of the working spacing (default 1,1,2.5 mm)",
    )
    g.add_argument("--patch", type=number_list(int, 3, "--patch"), metavar="Z,Y,X", help="patch size in voxels")
    g.add_argument("--max-patch-voxels", type=int, default=32 * 128 * 128)
    g.add_argument(
        "--filters",
        type=number_list(int, None, "--filters"),
        metavar="F1,F2,...",
        help="filters per stage (sets the depth)",
    )
    g.add_argument("--base-filters", type=int, default=16)
    g.add_argument("--max-filters", type=int, default=256)
    g.add_argument("--max-stages", type=int, default=6)
    g.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_false")
    g.add_argument("--normalization", choices=("unit", "zscore"), default="unit")
    g.add_argument(
        "--window",
        type=number_list(float, 2, "--window"),
        metavar="LOW,HIGH",
        default=(-15.0, 100.0),
        help="HU clipping window (default -15,100)",
    )
    from ..train.losses import LOSSES

    p.add_argument("--loss", choices=LOSSES, default="dicece", help="loss (default dicece)")
    p.add_argument("--folds", type=int, default=1, help="k-fold cross-validation: one weights file per fold")
    p.add_argument("--fold", type=int, help="train only this fold (0-based)")
    add_runtime_arguments(p)


def common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields from the shared options (only those given)."""
    from ..progress import default_mode

    kw: dict[str, Any] = {
        "datasets": list(args.datasets),
        "output": args.output,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "augment": args.augment,
        "val_every": args.val_every,
        "val_quality": args.val_quality,
        "keep": args.keep,
        "ema": args.ema,
        "work_dir": args.work_dir,
        "seed": args.seed,
        "device": args.device,
        "bf16": args.bf16,
        "amp": args.amp,
        "threads": args.threads,
        "num_workers": args.workers,
        "cache_workers": args.cache_workers,
        "checkpoint_every": args.checkpoint_every,
        "log_every": args.log_every,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "progress": args.progress or default_mode(),
        "description": args.description,
    }
    for opt in ("steps", "optimizer", "lr", "class_ratios", "val_cases", "model_id", "version", "name"):
        value = getattr(args, opt)
        if value is not None:
            kw[opt] = value
    if args.negative_hu is not None:
        kw["negative_hu"] = None if args.negative_hu == "any" else args.negative_hu
    return kw


def config_from_args(args: argparse.Namespace):
    from ..train.config import TrainConfig

    kw = common_kwargs(args)
    kw.update(
        target_spacing=args.spacing,
        patch_size=args.patch,
        max_patch_voxels=args.max_patch_voxels,
        filters=args.filters,
        base_filters=args.base_filters,
        max_filters=args.max_filters,
        max_stages=args.max_stages,
        deep_supervision=args.deep_supervision,
        normalization=args.normalization,
        window=args.window,
        loss=args.loss,
        folds=args.folds,
        fold=args.fold,
    )
    if args.min_spacing is not None:
        kw["min_spacing"] = args.min_spacing
    return TrainConfig(**kw)


def run(args: argparse.Namespace) -> int:
    from ..train.api import run_training

    run_training(config_from_args(args))
    return 0
