"""The promotion gate: evaluate the current and the candidate model on the same held-out cases, then decide.

Rule: the candidate is promoted only if, for every class, its mean Dice over the held-out cases
is at least the current model's minus ``tolerance``.  A class that cannot be compared (no
held-out case has it, with ``dice_pos``) is reported as not assessed; if no class can be
compared the candidate is refused.  A negative tolerance demands an improvement in every class.

Metrics (``metric``):

* ``dice_empty1`` (default) -- Dice per case with an empty prediction of an empty reference
  counting as 1, so false positives on cases without the class count against a model;
* ``dice_pos`` -- Dice over the cases that have the class only.

Volume errors (mean absolute error and mean signed difference in mL) are reported beside Dice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..evaluate import evaluate_case
from ..labels import CLASSES
from ..model.package import ModelPackage
from ..train.dataset import CaseRef, load_case

__all__ = ["GATE_METRICS", "Decision", "evaluate_models", "summarize_cases", "decide"]

GATE_METRICS = {"dice_empty1": "dice", "dice_pos": "dice_pos"}
_KEEP = (
    "dice_empty1",
    "dice_pos",
    "volume_pred_ml",
    "volume_ref_ml",
    "abs_volume_error_ml",
    "volume_diff_ml",
    "hd95_mm",
)


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarize_cases(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-class means over evaluated cases (``{"case", "classes": {key: metrics}}`` records)."""
    classes = {}
    for cls in CLASSES:
        rows = [c["classes"][cls.key] for c in cases]
        classes[cls.key] = {
            "dice": _mean([r["dice_empty1"] for r in rows]),
            "dice_pos": _mean([r["dice_pos"] for r in rows]),
            "n_positive": sum(1 for r in rows if r["volume_ref_ml"] > 0),
            "abs_volume_error_ml": _mean([r["abs_volume_error_ml"] for r in rows]),
            "volume_diff_ml": _mean([r["volume_diff_ml"] for r in rows]),
            "hd95_mm_median": (
                float(np.median([r["hd95_mm"] for r in rows if r["hd95_mm"] is not None]))
                if any(r["hd95_mm"] is not None for r in rows)
                else None
            ),
        }
    dice = [c["dice"] for c in classes.values() if c["dice"] is not None]
    return {
        "n_cases": len(cases),
        "dice_mean": float(np.mean(dice)) if dice else None,
        "classes": classes,
        "cases": list(cases),
    }


def evaluate_models(
    models: Mapping[str, ModelPackage],
    cases: Sequence[tuple[str, CaseRef]],
    *,
    device: str = "auto",
    threads: int | None = None,
    quality: str = "auto",
    bf16: bool = False,
    report: Callable[[int, int, str], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], float]:
    """Segment every held-out case with every model and summarise; returns (summaries by model, seconds).

    Each case is read once and segmented by all models, so they are compared on identical input.
    """
    from ..infer import Segmenter

    t0 = time.perf_counter()
    segmenters = {
        name: Segmenter(pkg, device=device, threads=threads, quality=quality, bf16=bf16)  # type: ignore[arg-type]
        for name, pkg in models.items()
    }
    per_model: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    for i, (case_name, ref) in enumerate(cases):
        loaded = load_case(ref)
        truth = sitk.GetArrayFromImage(loaded.label)
        spacing = loaded.image.GetSpacing()
        for name, seg in segmenters.items():
            pred = sitk.GetArrayFromImage(seg.segment(loaded.image).label)
            metrics = evaluate_case(pred, truth, spacing)
            per_model[name].append(
                {"case": case_name, "classes": {k: {f: m[f] for f in _KEEP} for k, m in metrics.items()}}
            )
        if report is not None:
            report(i + 1, len(cases), case_name)
    return {name: summarize_cases(rows) for name, rows in per_model.items()}, time.perf_counter() - t0


@dataclass
class Decision:
    """Whether to promote, why, and the per-class comparison behind it."""

    promote: bool
    metric: str
    tolerance: float
    reasons: list[str] = field(default_factory=list)
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        if self.promote:
            return f"no class worse than the current model by more than {self.tolerance:g} ({self.metric})"
        return "; ".join(self.reasons)


def decide(
    current: Mapping[str, Any], candidate: Mapping[str, Any], tolerance: float = 0.02, metric: str = "dice_empty1"
) -> Decision:
    """Compare two :func:`summarize_cases` summaries class by class (see the module docstring)."""
    if metric not in GATE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(GATE_METRICS)}, got {metric!r}")
    if not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number, got {tolerance!r}")
    field_name = GATE_METRICS[metric]
    decision = Decision(True, metric, float(tolerance))
    assessed = 0
    for cls in CLASSES:
        cur = current["classes"][cls.key][field_name]
        new = candidate["classes"][cls.key][field_name]
        row: dict[str, Any] = {"current": cur, "candidate": new, "delta": None, "required": None, "ok": None}
        if cur is None or new is None:
            row["note"] = f"not assessed: no held-out case has {cls.key}" if metric == "dice_pos" else "not assessed"
        else:
            assessed += 1
            required = cur - tolerance
            ok = new >= required - 1e-9
            row.update(delta=new - cur, required=required, ok=ok)
            if not ok:
                decision.promote = False
                if tolerance >= 0:
                    decision.reasons.append(
                        f"{cls.key} {metric} {new:.3f} is worse than the current model's {cur:.3f} by "
                        f"{cur - new:.3f} (tolerance {tolerance:g})"
                    )
                else:
                    decision.reasons.append(
                        f"{cls.key} {metric} {new:.3f} is not better than the current model's {cur:.3f} by "
                        f"at least {-tolerance:g} (negative tolerance)"
                    )
        decision.classes[cls.key] = row
    if assessed == 0:
        decision.promote = False
        decision.reasons.append(f"no class could be compared on the held-out cases ({metric})")
    return decision
