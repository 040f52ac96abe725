"""Summaries over cases: descriptive statistics per metric, lesion totals and volume agreement."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..labels import CLASSES, LabelClass
from .agreement import volume_agreement

__all__ = ["SUMMARY_METRICS", "describe", "summarize"]

#: Per-case metrics summarised with :func:`describe` (None values are left out).
SUMMARY_METRICS = (
    "dice_empty1",
    "dice_pos",
    "hd95_mm",
    "nsd",
    "rvd",
    "abs_volume_error_ml",
    "volume_diff_ml",
    "volume_pred_ml",
    "volume_ref_ml",
)


def describe(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """n, mean, SD (n - 1), median, quartiles and IQR of the non-None values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "q1": None, "q3": None, "iqr": None}
    q1, median, q3 = (float(q) for q in np.percentile(v, [25, 50, 75]))
    return {
        "n": n,
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if n > 1 else None,
        "median": median,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
    }


def _lesion_summary(per_case: Sequence[dict]) -> dict:
    ref = sum(c["ref_lesions"] for c in per_case)
    detected = sum(c["detected"] for c in per_case)
    return {
        "ref_lesions": ref,
        "pred_lesions": sum(c["pred_lesions"] for c in per_case),
        "detected": detected,
        "false_positives": sum(c["false_positives"] for c in per_case),
        "pooled_sensitivity": detected / ref if ref else None,
        "sensitivity": describe(c["sensitivity"] for c in per_case),
        "false_positives_per_case": describe(c["false_positives"] for c in per_case),
    }


def summarize(cases: Sequence[dict], classes: Iterable[LabelClass] = CLASSES) -> dict:
    """Summary of the evaluated cases (records with ``status == "ok"`` and a ``classes`` dict)."""
    ok = [c for c in cases if c.get("status") == "ok"]
    out: dict = {"n_cases": len(cases), "n_ok": len(ok), "n_errors": len(cases) - len(ok), "classes": {}}
    for cls in classes:
        rows = [c["classes"][cls.key] for c in ok]
        entry: dict = {name: describe(r[name] for r in rows) for name in SUMMARY_METRICS}
        entry["lesions"] = _lesion_summary([r["lesions"] for r in rows])
        entry["volume_agreement"] = volume_agreement(
            [r["volume_pred_ml"] for r in rows], [r["volume_ref_ml"] for r in rows]
        )
        out["classes"][cls.key] = entry
    return out
