"""Put a trained model package into Resources/Models with its held-out evaluation in the model card.

    python benchmarks/ship_model.py MODEL_DIR EVAL_DIR [--test-description TEXT]
        [--accurate-eval EVAL_DIR_ACCURATE --accurate-description TEXT] [--recommend-quality accurate]
        [--postprocessing OUT_DIR/postprocessing.json]

Copies the package to ``Resources/Models/<id>-<version>/``, stores the summary of
``EVAL_DIR/metrics.json`` (from ``ichseg evaluate``) under ``metrics.test`` in its ``model.json``
(the weights, and so their SHA-256, are untouched), copies ``metrics.md`` and the plots beside it,
and makes it the default in ``Resources/Models/registry.json``.  An evaluation of the same cases with
``--quality accurate`` goes under ``metrics.test_accurate`` (``evaluation/accurate/``), and
``--recommend-quality`` writes ``inference.quality``: what ``--quality auto`` (the default of
``ichseg segment``, Slicer and the batch script) uses with this model.  Recommending ``accurate``
needs its evaluation.  ``--postprocessing`` (from ``choose_postprocessing.py``, chosen on validation
cases) writes ``inference.min_component_confidence`` and how it was chosen; the test evaluations must
have been made with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ichseg.fileutil import write_json_atomic  # noqa: E402
from ichseg.model import load_package  # noqa: E402


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("eval", type=Path)
    ap.add_argument("--test-description", default="")
    ap.add_argument("--accurate-eval", type=Path, help="the same test cases segmented with --quality accurate")
    ap.add_argument("--accurate-description", default="")
    ap.add_argument("--recommend-quality", choices=("fast", "accurate"), default="fast")
    ap.add_argument("--postprocessing", type=Path, help="postprocessing.json of choose_postprocessing.py")
    args = ap.parse_args()
    if args.recommend_quality == "accurate" and args.accurate_eval is None:
        ap.error("--recommend-quality accurate needs --accurate-eval (the evaluation behind the recommendation)")
    package = load_package(args.model)  # verifies the checksums
    card = package.card
    chosen = json.loads(args.postprocessing.read_text()) if args.postprocessing is not None else None
    if chosen is not None and chosen["weights_sha256"] != [w.sha256 for w in card.weights]:
        ap.error(f"{args.postprocessing} was chosen for other weights ({chosen['model']})")
    dest_root = ROOT / "Resources" / "Models"
    dest = dest_root / f"{card.id}-{card.version}"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(args.model, dest)
    data = json.loads((dest / "model.json").read_text())
    runs = [("test", args.eval, args.test_description, dest / "evaluation")]
    if args.accurate_eval is not None:
        runs.append(("test_accurate", args.accurate_eval, args.accurate_description, dest / "evaluation" / "accurate"))
    for key, eval_dir, description, evaluation in runs:
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        data.setdefault("metrics", {})[key] = {"description": description, **summarize(metrics)}
        evaluation.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.md", "bland_altman.png", "volume_scatter.png"):
            if (eval_dir / name).is_file():
                shutil.copy2(eval_dir / name, evaluation / name)
    data.setdefault("inference", {})["quality"] = args.recommend_quality
    if chosen is not None:
        data["inference"]["min_component_confidence"] = chosen["min_component_confidence"]
        data["inference"]["min_component_confidence_chosen_on"] = {
            "model": chosen["model"],  # a fine-tuned child inherits the rule: this says whose weights chose it
            "cases": len(chosen["cases"]),
            "quality": chosen["quality"],
            "criterion": chosen["criterion"],
            "sweep": chosen["sweep"],
        }
    write_json_atomic(dest / "model.json", data)
    load_package(dest)  # the shipped copy still loads and verifies
    write_json_atomic(
        dest_root / "registry.json",
        {"default": f"{card.id}@{card.version}", "models": [{"path": dest.name}]},
    )
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {card.id}@{card.version} to {dest} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
