"""Choose a model's component-confidence post-processing on validation cases (nnU-Net style).

    python benchmarks/choose_postprocessing.py MODEL VAL_IMAGES VAL_REFS -o OUT_DIR
        [--quality auto] [--classes ICH,IVH,PHE] [--thresholds 0.5,0.6,...] [--threads 2]

For every validation case the model's class probabilities (working grid, in the given quality)
are computed once.  Then, one class at a time (ICH, then IVH, then PHE, each on top of the rules
already kept), every threshold of ``--thresholds`` is tried as that class's
``inference.min_component_confidence`` (:func:`ichseg.postprocess.drop_unconfident_components`,
followed by the resampling to the input grid and the usual post-processing, exactly as
``ichseg segment`` does).  A threshold is admissible when it turns no validation case whose lesion
the model found (Dice > 0) into a miss (``--max-lost``, default 0: a rule that deletes a found
hemorrhage costs the radiologist more than the false positives it removes).  The best admissible
threshold is kept when it raises that class's mean Dice over all validation cases (an empty
prediction of an empty reference counts 1, so false positives on cases without the class count)
by at least ``--min-gain``.  Writes ``OUT_DIR/postprocessing.json`` (the
choice and the whole sweep) for ``ship_model.py --postprocessing``.
The probabilities are cached (``--cache``), so a second sweep is quick.

The validation cases must not be the test cases the model is evaluated on (e.g. ``ichseg phantom
--seed 300001 --count 30``: training used seeds 100000–100239, the test set 1–50).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # rule_sweep beside this script, also when it is loaded by path
    sys.path.insert(0, str(HERE))

from rule_sweep import best_row, summarize  # noqa: E402

from ichseg.batch import collect_cases  # noqa: E402
from ichseg.evaluate.loading import label_array, read_label  # noqa: E402
from ichseg.evaluate.metrics import dice  # noqa: E402
from ichseg.evaluate.pairing import find_label_files  # noqa: E402
from ichseg.fileutil import write_json_atomic  # noqa: E402
from ichseg.infer import QUALITY_CHOICES, Segmenter, find_cavity, finish_label  # noqa: E402
from ichseg.labels import CLASSES, class_by_key, class_by_value  # noqa: E402
from ichseg.model import load_package  # noqa: E402
from ichseg.preprocess import Prepared, prepare_image  # noqa: E402

#: Up to 0.9 only: above it a rule depends on the last percent of probability, and a model trained on
#: synthetic CT will be less sure of itself on real scans.  Measured with 1.3.0 (which therefore ships
#: without a rule): chosen on 30 validation cases, ICH/IVH 0.99 (PHE 0.98) and ICH/IVH 0.9 both lost no
#: validation case, but on the 50 test cases both deleted correctly found lesions in 2 ICH and 2 IVH
#: cases (mean Dice of cases with the class ICH 0.763 -> 0.778 / 0.755, IVH 0.744 -> 0.700), while
#: removing most false positives (ICH false-positive lesions 160 -> 22 / 44).  Thirty validation
#: cases cannot show that tail; check the test set's lesion sensitivity before shipping a rule.
#: Measured with 1.6.0 (shipped with the rule as 1.6.1): ICH 0.8 chosen on the 30 validation cases (ICH Dice over all
#: cases 0.776 -> 0.894); on the 50 test cases ICH false-positive lesions 37 -> 20, no found lesion lost, no case worse.
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)


class ValidationCase:
    """One case's working-grid probabilities and its reference label on the input grid.

    The probabilities stay float32, as ``ichseg segment`` uses them: rounded to float16 they flipped
    borderline voxels, and so whole components (1.4.2, validation case 300002: a 0.57 mL false ICH
    that users get vanished from the score; ICH Dice over 30 cases read 0.880 instead of 0.799)."""

    def __init__(
        self, name: str, probs: np.ndarray, prepared: Prepared, spacing, reference: np.ndarray, min_component_mm3=None
    ):
        self.name, self.probs, self.prepared, self.spacing, self.reference = name, probs, prepared, spacing, reference
        self.min_component_mm3 = min_component_mm3  # the model card's component limits (None: the defaults)
        self.cavity = find_cavity(prepared)  # once per case: it depends on the CT only, not on the rules

    def label(self, rules: dict[int, float]) -> np.ndarray:
        """The class map ``ichseg segment`` would write with these confidence rules."""
        probs = np.array(self.probs, dtype=np.float32)  # a copy: finish_label may change it in place
        label, _ = finish_label(
            probs,
            self.prepared,
            self.spacing,
            min_confidence=rules,
            cavity=self.cavity,
            min_component_mm3=self.min_component_mm3,
        )
        return label


def predict_cases(segmenter: Segmenter, images: Path, refs: Path, cache: Path, log) -> list[ValidationCase]:
    """Probabilities of every paired case, reusing ``cache/<case>.npy`` written for the same weights and quality."""
    references, _ = find_label_files(refs, "reference")
    pairs = [(c.name, c.path, references[c.name]) for c in collect_cases([images]) if c.name in references]
    if not pairs:
        raise SystemExit(f"error: no image in {images} has a reference in {refs}")
    stamp = {"weights": [w.sha256 for w in segmenter.card.weights], "quality": segmenter.quality, "dtype": "float32"}
    stamp_file = cache / "cache.json"
    cache.mkdir(parents=True, exist_ok=True)
    if not stamp_file.exists() or json.loads(stamp_file.read_text()) != stamp:
        for old in cache.glob("*.npy"):
            old.unlink()
        write_json_atomic(stamp_file, stamp)
    cases = []
    for name, image_path, ref_path in pairs:
        t = time.perf_counter()
        image = sitk.ReadImage(str(image_path))
        prepared = prepare_image(image, segmenter.config)
        cached = cache / f"{name}.npy"
        if cached.exists():
            probs = np.load(cached, mmap_mode="r")  # paged in when a rule is scored: 30 cases need not fit in memory
        else:
            probs = segmenter.predict_probabilities(prepared)[0].astype(np.float32)
            tmp = cache / f".{name}.tmp.npy"
            np.save(tmp, probs)
            tmp.replace(cached)
        if probs.shape[1:] != prepared.hu.shape:
            raise SystemExit(f"error: {cached}: cached probabilities do not fit {image_path}; delete the cache")
        reference = label_array(read_label(ref_path), ref_path)
        if reference.shape != prepared.original.shape_zyx:
            raise SystemExit(f"error: {ref_path}: reference grid {reference.shape} differs from its image's")
        cases.append(ValidationCase(name, probs, prepared, image.GetSpacing(), reference, segmenter.min_component_mm3))
        log(f"{name}: probabilities ready ({time.perf_counter() - t:.0f} s)")
    return cases


_CASES: list[ValidationCase] = []  # filled before the worker processes fork


def _case_dice(job: tuple[int, dict[int, float], int]) -> tuple[float, bool]:
    index, rules, value = job
    case = _CASES[index]
    ref = case.reference == value
    return float(dice(case.label(rules) == value, ref, empty=1.0)), bool(ref.any())


def class_dice(run_map, rules: dict[int, float], value: int) -> list[tuple[float, bool]]:
    """Per case: Dice of one class (empty/empty = 1) and whether the reference has the class."""
    return list(run_map(_case_dice, [(i, rules, value) for i in range(len(_CASES))]))


def choose(run_map, classes, thresholds, min_gain, log, max_lost: int = 0) -> dict:
    """One class at a time: the threshold with the best mean Dice over all cases among those that lose
    at most ``max_lost`` found cases; kept when it gains at least ``min_gain``."""
    rules: dict[int, float] = {}
    sweep: dict[str, list[dict]] = {}
    for cls in classes:
        base = class_dice(run_map, rules, cls.value)
        rows = [{"threshold": None, **summarize(base)}]
        log(f"{cls.key}: no rule: {rows[0]}")
        for t in thresholds:
            rows.append({"threshold": t, **summarize(class_dice(run_map, {**rules, cls.value: t}, cls.value), base)})
            log(f"{cls.key}: threshold {t}: {rows[-1]}")
        best = best_row(rows, "threshold", min_gain, max_lost)
        if best is not None:
            rules[cls.value] = best["threshold"]
        sweep[cls.key] = rows
    return {"rules": rules, "sweep": sweep}


def _single_threaded() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("images", type=Path, help="validation CT images (a folder, as for ichseg segment)")
    ap.add_argument("refs", type=Path, help="their reference labels, paired by case name (may be the same folder)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--quality", choices=QUALITY_CHOICES, default="auto")
    ap.add_argument("--classes", default="ICH,IVH,PHE", help="classes to try, in this order")
    ap.add_argument("--thresholds", default=",".join(str(t) for t in DEFAULT_THRESHOLDS))
    ap.add_argument("--min-gain", type=float, default=0.002, help="Dice gain a rule must bring to be kept")
    ap.add_argument(
        "--max-lost",
        type=int,
        default=0,
        help="validation cases a rule may turn from found (Dice > 0) into missed (Dice 0); default 0",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] (as for ichseg segment)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the sweep")
    ap.add_argument("--cache", type=Path, help="probability cache (default OUT_DIR/probabilities)")
    args = ap.parse_args(argv)
    try:
        classes = [class_by_key(k.strip()) for k in args.classes.split(",") if k.strip()]
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except (KeyError, ValueError) as exc:
        ap.error(f"--classes must name {', '.join(c.key for c in CLASSES)}; --thresholds numbers ({exc})")
    if any(not 0.0 < t < 1.0 for t in thresholds):
        ap.error("--thresholds must lie in (0, 1)")

    def log(message: str) -> None:
        print(message, flush=True)

    package = load_package(args.model)
    segmenter = Segmenter(package, device=args.device, quality=args.quality, threads=args.threads)
    cases = predict_cases(segmenter, args.images, args.refs, args.cache or args.output / "probabilities", log)
    if not cases:
        raise SystemExit("error: no validation case")
    _CASES[:] = cases
    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers, initializer=_single_threaded) as pool:
            result = choose(pool.imap, classes, thresholds, args.min_gain, log, args.max_lost)
    else:
        result = choose(map, classes, thresholds, args.min_gain, log, args.max_lost)
    out = {
        "model": f"{package.card.id}@{package.card.version}",
        "weights_sha256": [w.sha256 for w in package.card.weights],
        "quality": segmenter.quality,
        "cases": [c.name for c in cases],
        "criterion": "mean Dice over all validation cases (empty prediction of an empty reference = 1), "
        f"among thresholds that turn at most {args.max_lost} found case(s) into misses",
        "min_gain": args.min_gain,
        "min_component_confidence": {class_by_value(v).key: t for v, t in result["rules"].items()},
        "sweep": result["sweep"],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output / "postprocessing.json", out)
    log(f"chosen: {out['min_component_confidence'] or 'no rule'} -> {args.output / 'postprocessing.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
