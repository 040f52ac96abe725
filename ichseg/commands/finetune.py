"""``ichseg finetune``: fine-tune a model package on new (corrected) cases, with replay of the original data."""

from __future__ import annotations

import argparse
from pathlib import Path

from .train import add_runtime_arguments, common_kwargs, number_list

NAME = "finetune"
HELP = "fine-tune a model package on new cases (lower lr, optional frozen encoder, replay)"
DESCRIPTION = (
    "Fine-tune an existing model package on new cases (e.g. segmentations corrected in Slicer), keeping its "
    "preprocessing and architecture. A share of the samples is drawn from the original training data (--replay) "
    "so the model does not forget. The new package gets a new version and records its parent."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("datasets", nargs="+", type=Path, metavar="CASES_DIR", help="folder(s) of new training cases")
    p.add_argument(
        "--model",
        default="current",
        help="parent model: package folder/.zip, id@version, version, or 'current' (default)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="new model package folder")
    p.add_argument("--replay", type=Path, nargs="+", default=[], metavar="DATASET", help="original training data")
    p.add_argument("--replay-fraction", type=float, default=0.3, help="share of samples from the replay data")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the decoder")
    p.add_argument("--lr-factor", type=float, default=0.1, help="lr = parent lr x factor (unless --lr)")
    p.add_argument("--loss", help="loss (default: the parent's)")
    p.add_argument(
        "--patch",
        type=number_list(int, 3, "--patch"),
        metavar="Z,Y,X",
        help="training and inference window in voxels (default: the parent's; a larger one gives more context)",
    )
    add_runtime_arguments(p)


def config_from_args(args: argparse.Namespace):
    from ..model.registry import resolve_model
    from ..train.config import FinetuneConfig

    kw = common_kwargs(args)
    kw.update(
        model=resolve_model(args.model).path,
        replay=list(args.replay),
        replay_fraction=args.replay_fraction,
        freeze_encoder=args.freeze_encoder,
        lr_factor=args.lr_factor,
        loss=args.loss,
        patch_size=args.patch,
    )
    return FinetuneConfig(**kw)


def run(args: argparse.Namespace) -> int:
    from ..train.finetune import run_finetune

    run_finetune(config_from_args(args))
    return 0
