"""Choose a model card's ``inference.min_component_ml`` (smallest kept finding) on validation cases.

    python benchmarks/choose_min_component.py PRED_DIR REF_DIR -o OUT.json
        [--classes ICH] [--limits 0.05,0.1,0.15,0.2,0.25] [--max-ml ICH=0.25] [--max-lost 0]

``PRED_DIR`` holds ``ichseg segment`` outputs (``<case>_labels.nii.gz``) of the validation cases,
made with the model's current limits; ``REF_DIR`` their references (paired by case name).  Raising a
limit only removes more, so applying :func:`ichseg.postprocess.postprocess` with the raised limits to
those labels gives exactly what ``ichseg segment`` would write with them (the PHE rule then sees the
final ICH): no network pass is needed.  For each class in turn, every limit of ``--limits`` (mL) is
tried on top of the limits already kept.  A limit is admissible when it turns no validation case
whose lesion was found (Dice > 0) into a miss (``--max-lost``) and stays within the class's cap
(``--max-ml``; default ICH 0.25 mL, half the smallest spontaneous ICH of TICH-2, 0.5 mL, so a bleed
under-segmented by half survives).  The largest admissible limit with the best mean Dice over all
cases (an empty prediction of an empty reference counts 1) is kept when it gains at least
``--min-gain``.  Writes the choice, the whole sweep and the model and quality that made the
predictions (from their ``<case>_volumes.json``), for ``ship_model.py --min-component``.

Measured (1.4.2's weights, 30 validation cases, seeds 300001-300030, accurate): ICH 0.25 mL, false-
positive ICH components 53 -> 13, ICH Dice over all cases 0.726 -> 0.799, no found lesion lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # rule_sweep beside this script, also when it is loaded by path
    sys.path.insert(0, str(HERE))

from rule_sweep import best_row, summarize  # noqa: E402

from ichseg.errors import InputError  # noqa: E402
from ichseg.evaluate.loading import read_pair  # noqa: E402
from ichseg.evaluate.metrics import dice  # noqa: E402
from ichseg.evaluate.pairing import pair_folders  # noqa: E402
from ichseg.fileutil import write_json_atomic  # noqa: E402
from ichseg.labels import class_by_key  # noqa: E402
from ichseg.postprocess import DEFAULT_MIN_COMPONENT_MM3, postprocess  # noqa: E402

DEFAULT_LIMITS_ML = (0.05, 0.1, 0.15, 0.2, 0.25)
DEFAULT_CAPS_ML = {"ICH": 0.25}  # IVH and PHE: real ones go down to 0.008 mL / 0 (TICH-2); no cap given, no rule


def load_pairs(pred_dir: Path, ref_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """(case, prediction, reference, spacing xyz) of every case with both files, paired and read as
    ``ichseg evaluate`` does; SystemExit with its message when the folders or a pair do not fit."""
    try:
        pairing = pair_folders(pred_dir, ref_dir)
        out = []
        for case, pred_path, ref_path in pairing.pairs:
            pred, ref, spacing = read_pair(pred_path, ref_path)
            out.append((case, np.array(pred, dtype=np.uint8), np.asarray(ref), spacing))
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    return out


def predictions_source(pred_dir: Path, cases: list[str]) -> dict:
    """``{"model": "id@version", "quality": ...}`` that made the predictions, from each case's
    ``<case>_volumes.json`` (``ichseg segment``); both None when no case has one.  SystemExit when the
    cases were made by different models or in different qualities, or only some have the record."""
    seen = set()
    for case in cases:
        path = pred_dir / f"{case}_volumes.json"
        if not path.is_file():
            seen.add((None, None))
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            seen.add((record["model"]["ref"], record.get("quality")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"error: {path}: not an ichseg segment volumes record ({exc})") from None
    if len(seen) > 1:
        made = ", ".join(sorted(f"{m} ({q})" if m else "unknown" for m, q in seen))
        raise SystemExit(f"error: {pred_dir}: the predictions were not all made by one model in one quality: {made}")
    model, quality = seen.pop() if seen else (None, None)
    return {"model": model, "quality": quality}


def score(pairs, limits_mm3: dict[int, float], value: int) -> list[tuple[float, bool]]:
    """Per case: Dice of class ``value`` after post-processing with ``limits_mm3`` and whether the reference has it."""
    rows = []
    for _, pred, ref, spacing in pairs:
        label = pred.copy()
        postprocess(label, spacing, limits_mm3)
        truth = ref == value
        rows.append((float(dice(label == value, truth, empty=1.0)), bool(truth.any())))
    return rows


def choose(pairs, classes, limits_ml, caps_ml: dict[str, float], min_gain: float, max_lost: int, log) -> dict:
    """One class at a time, on top of the limits already kept; see the module docstring."""
    limits = dict(DEFAULT_MIN_COMPONENT_MM3)
    chosen: dict[str, float] = {}
    sweep: dict[str, list[dict]] = {}
    for cls in classes:
        base = score(pairs, limits, cls.value)
        rows = [{"limit_ml": None, **summarize(base, base, digits=4)}]
        log(f"{cls.key}: default limit: {rows[0]}")
        cap = caps_ml.get(cls.key)
        for ml in limits_ml:
            if cap is None or ml > cap or ml * 1000.0 <= DEFAULT_MIN_COMPONENT_MM3[cls.value]:
                continue
            trial = score(pairs, {**limits, cls.value: ml * 1000.0}, cls.value)
            rows.append({"limit_ml": ml, **summarize(trial, base, digits=4)})
            log(f"{cls.key}: {ml:g} mL: {rows[-1]}")
        best = best_row(rows, "limit_ml", min_gain, max_lost, prefer_larger=True)
        if best is not None:
            chosen[cls.key] = best["limit_ml"]
            limits[cls.value] = best["limit_ml"] * 1000.0
        sweep[cls.key] = rows
    return {"min_component_ml": chosen, "sweep": sweep}


def parse_caps(text: str) -> dict[str, float]:
    caps = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        caps[class_by_key(key.strip()).key] = float(value)
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", type=Path, help="ichseg segment outputs of the validation cases")
    ap.add_argument("refs", type=Path, help="their reference labels, paired by case name")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--classes", default="ICH", help="classes to try, in this order")
    ap.add_argument("--limits", default=",".join(f"{v:g}" for v in DEFAULT_LIMITS_ML), help="candidate limits, mL")
    ap.add_argument("--max-ml", default=",".join(f"{k}={v:g}" for k, v in DEFAULT_CAPS_ML.items()), help="caps, mL")
    ap.add_argument("--min-gain", type=float, default=0.002, help="Dice gain a limit must bring to be kept")
    ap.add_argument("--max-lost", type=int, default=0, help="found validation cases a limit may turn into misses")
    args = ap.parse_args(argv)
    try:
        classes = [class_by_key(k.strip()) for k in args.classes.split(",") if k.strip()]
        limits_ml = sorted(float(v) for v in args.limits.split(",") if v.strip())
        caps_ml = parse_caps(args.max_ml)
    except (KeyError, ValueError) as exc:
        ap.error(f"--classes / --max-ml must name classes, --limits and caps must be numbers ({exc})")
    if any(c.value == 0 for c in classes) or any(v <= 0 for v in limits_ml):
        ap.error("--classes must be lesion classes and --limits positive")
    pairs = load_pairs(args.pred, args.refs)
    cases = [case for case, *_ in pairs]
    source = predictions_source(args.pred, cases)
    result = choose(pairs, classes, limits_ml, caps_ml, args.min_gain, args.max_lost, lambda m: print(m, flush=True))
    out = {
        "predictions": str(args.pred),
        **source,
        "cases": cases,
        "criterion": "mean Dice over all validation cases (empty prediction of an empty reference = 1), among "
        f"limits within the caps {caps_ml} (mL) that turn at most {args.max_lost} found case(s) into misses",
        "min_gain": args.min_gain,
        **result,
    }
    write_json_atomic(args.output, out)
    print(f"chosen: {out['min_component_ml'] or 'no limit'} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
