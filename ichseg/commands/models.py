"""``ichseg models``: list installed models, show a model card, choose or roll back the current one,
average the weights of related models into a new package, derive a version with other inference settings,
widen a model to more channels with the same outputs (a start for further training)."""

from __future__ import annotations

import argparse
import json
import sys

from .train import number_list

NAME = "models"
HELP = (
    "list models and their versions; show, use or roll back a version; average models' weights; derive a "
    "version with other inference settings; widen a model; history of `ichseg improve` runs"
)


def json_object(text: str) -> dict:
    """argparse type: a JSON object, e.g. ``{"min_component_ml": {"ICH": 0.25}}``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got: {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=("list", "show", "use", "rollback", "history", "average", "derive", "widen"),
    )
    p.add_argument(
        "model",
        nargs="*",
        help="path, id@version, version or id (show/use/rollback/derive/widen: one; average: two or more)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-o", "--out", help="average/derive/widen: the new package folder")
    p.add_argument("--version", dest="new_version", help="average/derive/widen: the new package's version, e.g. 1.4.1")
    p.add_argument(
        "--weights",
        type=number_list(float, name="--weights"),
        help="average: one weight per model, comma-separated (default: equal)",
    )
    p.add_argument(
        "--inference",
        type=json_object,
        metavar="JSON",
        help="average/derive: inference settings for the new card, replacing the (last) model's, e.g. "
        '\'{"class_mirror_axes": {"IVH": [2]}, "min_component_ml": {"ICH": 0.25}}\' (null removes a setting); '
        "derive: the same weights as a new version with these settings (e.g. a post-processing rule)",
    )
    p.add_argument(
        "--filters",
        type=number_list(int, name="--filters"),
        help="widen: channels per stage, comma-separated, each at least the model's (e.g. 16,32,64,128,192)",
    )
    p.add_argument("--seed", type=int, default=0, help="widen: seed of the new channels' random input weights")


def _summary(entry, current_ref: str | None) -> dict:
    card = entry.card
    dice = (card.metrics or {}).get("test", {}).get("dice_mean") or (card.metrics or {}).get("dice_mean")
    return {
        "ref": entry.ref,
        "id": entry.id,
        "version": entry.version,
        "source": entry.source,
        "current": entry.ref == current_ref,
        "created": card.created,
        "parent": card.parent.to_dict() if card.parent else None,
        "spacing_mm": card.preprocessing.get("spacing_xyz"),
        "loss": card.training.get("loss"),
        "steps": card.training.get("steps"),
        "dice": dice,
        "holdout_dice": ((card.metrics or {}).get("holdout") or {}).get("dice_mean"),
        "training_cases": len(((card.training or {}).get("improve") or {}).get("training_cases") or []) or None,
        "path": str(entry.path),
    }


def _history(as_json: bool) -> int:
    """The runs of ``ichseg improve``: promoted and refused candidates with their reasons."""
    from ..improve.versions import read_history

    rows = read_history()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        sys.stdout.write("no `ichseg improve` runs yet\n")
        return 0
    for r in rows:
        why = f": {'; '.join(r['reasons'])}" if r.get("reasons") else (f": {r['error']}" if r.get("error") else "")
        target = r.get("candidate") or "-"
        sys.stdout.write(f"{r.get('run_id', '?')}  {r.get('parent')} -> {target}  {r.get('decision')}{why}\n")
    return 0


def _average(args: argparse.Namespace) -> int:
    """Write the weighted mean of the models' weights as a new package."""
    from ..errors import InputError
    from ..model.average import average_packages
    from ..model.registry import resolve_model

    if not args.out or not args.new_version:
        raise InputError("`ichseg models average` needs --out FOLDER and --version X.Y.Z")
    paths = [resolve_model(ref).path for ref in args.model]
    out = average_packages(paths, args.out, args.new_version, args.weights, inference=args.inference)
    sys.stdout.write(f"wrote {out}\n")
    return 0


def _derive(args: argparse.Namespace) -> int:
    """Write one model's weights with other inference settings as a new version."""
    from ..errors import InputError
    from ..model.derive import derive_package
    from ..model.registry import resolve_model

    if len(args.model) != 1 or not args.out or not args.new_version or args.inference is None:
        raise InputError("`ichseg models derive` needs one model, --out FOLDER, --version X.Y.Z and --inference JSON")
    out = derive_package(resolve_model(args.model[0]).path, args.out, args.new_version, args.inference)
    sys.stdout.write(f"wrote {out}\n")
    return 0


def _widen(args: argparse.Namespace) -> int:
    """Write one model widened to more channels per stage, computing the same outputs, as a new version."""
    from ..errors import InputError
    from ..model.registry import resolve_model
    from ..model.widen import widen_package

    if len(args.model) != 1 or not args.out or not args.new_version or not args.filters:
        raise InputError("`ichseg models widen` needs one model, --out FOLDER, --version X.Y.Z and --filters A,B,...")
    out = widen_package(resolve_model(args.model[0]).path, args.out, args.new_version, args.filters, seed=args.seed)
    sys.stdout.write(f"wrote {out}\n")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..model.registry import current_model, list_models, resolve_model, set_current

    try:
        current_ref = current_model().ref
    except InputError:
        current_ref = None
    if args.action == "history":
        return _history(args.json)
    if args.action == "list":
        rows = [_summary(e, current_ref) for e in list_models()]
        if args.json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return 0
        if not rows:
            sys.stdout.write("no models installed\n")
            return 0
        for r in rows:
            mark = "*" if r["current"] else " "
            parent = f" parent {r['parent']['id']}@{r['parent']['version']}" if r["parent"] else ""
            sys.stdout.write(f"{mark} {r['ref']:<40} {r['source']:<8} {r['created'][:10]}{parent}\n")
        sys.stdout.write("(* = current)\n")
        return 0
    if args.action == "average":
        return _average(args)
    if args.action == "derive":
        return _derive(args)
    if args.action == "widen":
        return _widen(args)
    if len(args.model) != 1:
        raise InputError(f"`ichseg models {args.action}` needs one model (path, id@version or version)")
    if args.action == "show":
        entry = resolve_model(args.model[0])
        sys.stdout.write(json.dumps(entry.card.to_dict(), indent=2) + "\n")
        return 0
    entry = set_current(args.model[0])
    verb = "rolled back to" if args.action == "rollback" else "current model is now"
    sys.stdout.write(f"{verb} {entry.ref}\n")
    return 0
