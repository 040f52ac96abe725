"""``ichseg improve``: the correction loop -- fine-tune on corrected cases, compare on held-out cases, then promote."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "improve"
HELP = "fine-tune the current model on corrected cases; promote the new version only if it is not worse"
DESCRIPTION = (
    "The correction loop. CASES_DIR holds training cases saved in Slicer (<case>/ct.nrrd, segmentation.seg.nrrd, "
    "case.json; CT + .seg.nrrd pairs and nnU-Net raw datasets work too). Every case is checked and hashed; "
    "duplicates (same CT) and unusable cases are reported in quarantine.json (with copies of the unusable ones) -- "
    "the cases themselves are never changed, moved or deleted. The model is fine-tuned on the usable cases with "
    "replay of its original training data, then the new version and the current one segment the held-out cases. "
    "The new version is registered and made current only if no class is worse in Dice than the current model's "
    "by more than --tolerance; otherwise it is refused with the reasons and kept in the run folder as rejected. "
    "`ichseg models` lists the versions; `ichseg models rollback VERSION` makes an earlier one current. "
    "Exit status: 0 when the loop ran (promoted or refused; with --fail-if-refused a refusal exits 4), "
    "2 for bad input."
)

REFUSED_EXIT_CODE = 4


def _holdout(text: str) -> float | Path:
    try:
        value = float(text)
    except ValueError:
        return Path(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a held-out fraction must be in [0, 1), got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .train import number_list

    p.add_argument("cases_dir", type=Path, metavar="CASES_DIR", help="folder of corrected training cases")
    p.add_argument(
        "--model", default="current", help="model to improve: 'current' (default), id@version, version or a path"
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--holdout",
        type=_holdout,
        action="append",
        default=[],
        metavar="FRACTION|DIR",
        help="held-out cases: a fraction of CASES_DIR (default 0.2; stable per case) and/or a folder of cases "
        "(repeatable; with a folder and no fraction all of CASES_DIR trains)",
    )
    g.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        metavar="DATASET",
        help="original training data to replay (default: the data recorded in the model card, if it still exists)",
    )
    g.add_argument("--no-replay", action="store_true", help="fine-tune on the corrected cases only")
    g.add_argument("--replay-fraction", type=float, default=0.3, help="share of samples from the replay data")
    g.add_argument(
        "--replay-cases", type=int, default=50, help="at most this many cases of each replay dataset (0: all)"
    )
    d = p.add_argument_group("promotion gate")
    d.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="largest allowed loss of mean Dice in any class (default 0.02; negative: demand a gain)",
    )
    d.add_argument(
        "--metric",
        choices=("dice_empty1", "dice_pos"),
        default="dice_empty1",
        help="Dice over all held-out cases (empty+empty = 1; default) or over the cases with the class",
    )
    d.add_argument(
        "--quality",
        choices=("auto", "fast", "accurate"),
        default="auto",
        help="inference quality of the gate (auto, the default: what each model's card recommends)",
    )
    d.add_argument("--fail-if-refused", action="store_true", help=f"exit {REFUSED_EXIT_CODE} when refused")
    o = p.add_argument_group("fine-tuning")
    o.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    o.add_argument("--batch-size", type=int, default=2)
    o.add_argument("--lr", type=float, help="learning rate (default: the parent's x --lr-factor)")
    o.add_argument("--lr-factor", type=float, default=0.1)
    o.add_argument("--freeze-encoder", action="store_true", help="train only the decoder")
    o.add_argument("--class-ratios", type=number_list(float, 4, "--class-ratios"), metavar="BG,ICH,PHE,IVH")
    o.add_argument("--no-augment", dest="augment", action="store_false")
    o.add_argument("--loss", help="loss (default: the parent's)")
    r = p.add_argument_group("runtime")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU when supported, or CUDA)")
    r.add_argument("--cache-workers", type=int, default=1)
    r.add_argument("--run-dir", type=Path, help="run folder (default: <user models>/.improve/runs/<run id>)")
    r.add_argument("--work-dir", type=Path, help="fine-tuning work folder (default: <user models>/.improve/work)")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run from its fine-tuning checkpoint in --work-dir (same cases and options)",
    )
    r.add_argument("--checkpoint-every", type=int, default=50, help="fine-tuning checkpoint every N steps")
    r.add_argument("--version", help="version of the new model (default: the next free minor version)")
    r.add_argument("--description", default="", help="description for the new model card")
    r.add_argument("--dry-run", action="store_true", help="check the cases and write the reports; train nothing")
    r.add_argument("--progress", choices=("json", "bar", "quiet"), help="progress output (default: json when piped)")


def config_from_args(args: argparse.Namespace):
    from ..errors import InputError
    from ..improve import ImproveConfig
    from ..progress import default_mode

    fractions = [h for h in args.holdout if isinstance(h, float)]
    dirs = [h for h in args.holdout if isinstance(h, Path)]
    if len(fractions) > 1:
        raise InputError("give at most one held-out fraction (--holdout 0.2); folders may be repeated")
    if args.no_replay and args.replay:
        raise InputError("--replay and --no-replay contradict each other")
    replay = [] if args.no_replay else (list(args.replay) if args.replay else None)
    return ImproveConfig(
        cases_dir=args.cases_dir,
        model=args.model,
        replay=replay,
        replay_fraction=args.replay_fraction,
        replay_cases=args.replay_cases or None,
        holdout_fraction=fractions[0] if fractions else None,
        holdout_dirs=dirs,
        tolerance=args.tolerance,
        metric=args.metric,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_factor=args.lr_factor,
        freeze_encoder=args.freeze_encoder,
        class_ratios=args.class_ratios,
        augment=args.augment,
        loss=args.loss,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        bf16=args.bf16,
        quality=args.quality,
        cache_workers=args.cache_workers,
        run_dir=args.run_dir,
        work_dir=args.work_dir,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        version=args.version,
        description=args.description,
        dry_run=args.dry_run,
        progress=args.progress or default_mode(),
    )


def run(args: argparse.Namespace) -> int:
    from ..improve import improve

    result = improve(config_from_args(args))
    if result.decision == "rejected" and args.fail_if_refused:
        print(f"ichseg improve: refused: {'; '.join(result.reasons)}", file=sys.stderr)
        return REFUSED_EXIT_CODE
    return 0
