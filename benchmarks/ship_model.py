"""Put a trained model package into Resources/Models with its held-out evaluation in the model card.

    python benchmarks/ship_model.py MODEL_DIR EVAL_DIR [--test-description TEXT]
        [--accurate-eval EVAL_DIR_ACCURATE --accurate-description TEXT] [--recommend-quality accurate]
        [--postprocessing OUT_DIR/postprocessing.json] [--min-component CHOICE.json] [--dest MODELS_DIR]

Copies the package to ``Resources/Models/<id>-<version>/`` (or ``--dest``), stores the summary of
``EVAL_DIR/metrics.json`` (from ``ichseg evaluate``) under ``metrics.test`` in its ``model.json``
(the weights, and so their SHA-256, are untouched), copies ``metrics.md`` and the plots beside it,
and makes it the default in ``Resources/Models/registry.json``.  An evaluation of the same cases with
``--quality accurate`` goes under ``metrics.test_accurate`` (``evaluation/accurate/``), and
``--recommend-quality`` writes ``inference.quality``: what ``--quality auto`` (the default of
``ichseg segment``, Slicer and the batch script) uses with this model.  Recommending ``accurate``
needs its evaluation.  ``--postprocessing`` (from ``choose_postprocessing.py``, chosen on validation
cases) writes ``inference.min_component_confidence`` and how it was chosen; ``--min-component`` (from
``choose_min_component.py``, on this model's validation outputs) likewise ``inference.min_component_ml``.
The test evaluations must have been made with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ichseg.errors import InputError  # noqa: E402
from ichseg.fileutil import replace_folder, write_json_atomic  # noqa: E402
from ichseg.model import load_package  # noqa: E402


def read_json(path: Path) -> dict:
    """A JSON file's object; ValueError (naming the file) when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def summarize(metrics: dict) -> dict:
    """The numbers a model card should carry: per class Dice (both conventions), HD95, NSD, volume agreement."""
    out: dict = {"n_cases": metrics["summary"]["n_ok"], "classes": {}}
    for key, c in metrics["summary"]["classes"].items():

        def stat(name: str, field: str = "mean", _c=c):
            v = _c.get(name) or {}
            return v.get(field)

        out["classes"][key] = {
            "dice_pos_mean": stat("dice_pos"),
            "dice_pos_median": stat("dice_pos", "median"),
            "n_positive": stat("dice_pos", "n"),
            "dice_empty1_mean": stat("dice_empty1"),
            "hd95_mm_median": stat("hd95_mm", "median"),
            "nsd_2mm_mean": stat("nsd"),
            "abs_volume_error_ml_median": stat("abs_volume_error_ml", "median"),
            "volume_ccc": (c.get("volume_agreement") or {}).get("ccc"),
            "bland_altman": (c.get("volume_agreement") or {}).get("bland_altman"),
            "lesion_sensitivity": (c.get("lesions") or {}).get("pooled_sensitivity"),
        }
    return out


def confidence_settings(card, chosen: dict, source: Path) -> dict:
    """``inference`` entries for the card from a ``choose_postprocessing.py`` result; ValueError when it
    was chosen for other weights."""
    if chosen["weights_sha256"] != [w.sha256 for w in card.weights]:
        raise ValueError(f"{source} was chosen for other weights ({chosen['model']})")
    # a fine-tuned child inherits the rule: ``model`` says whose weights chose it
    record = {k: chosen[k] for k in ("model", "quality", "criterion", "sweep")}
    return {
        "min_component_confidence": chosen["min_component_confidence"],
        "min_component_confidence_chosen_on": {**record, "cases": len(chosen["cases"])},
    }


def min_component_settings(card, choice: dict) -> dict:
    """``inference`` entries for the card from a ``choose_min_component.py`` result; ValueError when it
    was made on another model's predictions or would lower a limit its predictions were made with."""
    ref = f"{card.id}@{card.version}"
    if choice.get("model") != ref:
        made = choice.get("model") or "predictions without <case>_volumes.json"
        raise ValueError(f"the limits were chosen on predictions of {made}, not of {ref}")
    limits = dict(card.inference.get("min_component_ml") or {})
    for key, ml in choice["min_component_ml"].items():
        if ml < limits.get(key, 0.0):
            raise ValueError(f"{key}: {ml:g} mL cannot be judged from predictions already made with {limits[key]:g} mL")
        limits[key] = ml
    record = {k: choice[k] for k in ("model", "quality", "criterion", "sweep")}
    return {"min_component_ml": limits, "min_component_ml_chosen_on": {**record, "cases": len(choice["cases"])}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("eval", type=Path)
    ap.add_argument("--test-description", default="")
    ap.add_argument("--accurate-eval", type=Path, help="the same test cases segmented with --quality accurate")
    ap.add_argument("--accurate-description", default="")
    ap.add_argument("--recommend-quality", choices=("fast", "accurate"), default="fast")
    ap.add_argument("--postprocessing", type=Path, help="postprocessing.json of choose_postprocessing.py")
    ap.add_argument("--min-component", type=Path, help="the output of choose_min_component.py")
    ap.add_argument("--dest", type=Path, default=ROOT / "Resources" / "Models", help="models folder (registry.json)")
    args = ap.parse_args(argv)
    if args.recommend_quality == "accurate" and args.accurate_eval is None:
        ap.error("--recommend-quality accurate needs --accurate-eval (the evaluation behind the recommendation)")
    try:
        package = load_package(args.model)  # verifies the checksums
    except InputError as exc:
        ap.error(str(exc))
    card = package.card
    runs = [("test", args.eval, args.test_description, Path("evaluation"))]
    if args.accurate_eval is not None:
        runs.append(("test_accurate", args.accurate_eval, args.accurate_description, Path("evaluation", "accurate")))
    try:
        rules = {}
        if args.postprocessing is not None:
            rules = confidence_settings(card, read_json(args.postprocessing), args.postprocessing)
        limits = min_component_settings(card, read_json(args.min_component)) if args.min_component else {}
        summaries = {key: summarize(read_json(eval_dir / "metrics.json")) for key, eval_dir, *_ in runs}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        ap.error(f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc))
    dest = args.dest / f"{card.id}-{card.version}"
    if dest.resolve() == args.model.resolve():
        ap.error(f"{args.model} is already the shipped copy: ship from the training output")
    args.dest.mkdir(parents=True, exist_ok=True)
    work = args.dest / f".{dest.name}.partial-{os.getpid()}"  # renamed into place once complete and verified
    try:
        shutil.copytree(args.model, work)
        data = json.loads((work / "model.json").read_text())
        for key, eval_dir, description, evaluation in runs:
            data.setdefault("metrics", {})[key] = {"description": description, **summaries[key]}
            (work / evaluation).mkdir(parents=True, exist_ok=True)
            for name in ("metrics.md", "bland_altman.png", "volume_scatter.png"):
                if (eval_dir / name).is_file():
                    shutil.copy2(eval_dir / name, work / evaluation / name)
        inference = data.setdefault("inference", {})
        inference["quality"] = args.recommend_quality
        inference.update(rules)
        inference.update(limits)
        write_json_atomic(work / "model.json", data)
        load_package(work)  # the shipped copy still loads and verifies
        replace_folder(work, dest)  # an existing copy is swapped out only once the new one is complete
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json_atomic(
        args.dest / "registry.json",
        {"default": f"{card.id}@{card.version}", "models": [{"path": dest.name}]},
    )
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {card.id}@{card.version} to {dest} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
