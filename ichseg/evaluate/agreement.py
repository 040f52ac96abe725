"""Agreement of paired measurements (predicted vs reference volumes) across cases.

* Lin's concordance correlation coefficient (Lin 1989), with population (1/n) moments:
  ``CCC = 2 s_xy / (s_x² + s_y² + (m_x - m_y)²)``;
* Bland–Altman: differences ``pred - ref``, their mean (bias), sample SD (n - 1) and the
  95% limits of agreement ``mean ± 1.96 SD``;
* Pearson's r.

Every statistic is None where it is undefined (too few cases, zero variance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["LOA_Z", "bland_altman", "lins_ccc", "pearson_r", "volume_agreement"]

#: Normal quantile of the 95% limits of agreement.
LOA_Z = 1.96


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} vs {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite")
    return a, b


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def lins_ccc(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Lin's concordance correlation coefficient of ``x`` and ``y`` (None if n < 2 or both are constant)."""
    a, b = _pair(x, y)
    if a.size < 2:
        return None
    mx, my = a.mean(), b.mean()
    sxy = np.mean((a - mx) * (b - my))
    denominator = a.var() + b.var() + (mx - my) ** 2
    if denominator <= 0:
        return None
    return _finite(2.0 * sxy / denominator)


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's correlation coefficient (None if n < 2 or either variable is constant)."""
    a, b = _pair(x, y)
    if a.size < 2:
        return None
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.sum(da * da)) * float(np.sum(db * db)))
    if denominator <= 0:
        return None
    return _finite(float(np.sum(da * db)) / denominator)


def bland_altman(pred: Sequence[float], ref: Sequence[float]) -> dict[str, float | int | None]:
    """Bias and 95% limits of agreement of ``pred - ref`` (SD with n - 1; None where undefined)."""
    a, b = _pair(pred, ref)
    n = int(a.size)
    diff = a - b
    mean_diff = float(diff.mean()) if n else None
    sd = float(diff.std(ddof=1)) if n >= 2 else None
    lower = upper = None
    if mean_diff is not None and sd is not None:
        lower, upper = mean_diff - LOA_Z * sd, mean_diff + LOA_Z * sd
    return {"n": n, "mean_diff": mean_diff, "sd_diff": sd, "loa_lower": lower, "loa_upper": upper}


def volume_agreement(pred_ml: Sequence[float], ref_ml: Sequence[float]) -> dict:
    """All agreement statistics of predicted vs reference volumes (mL) over cases."""
    a, b = _pair(pred_ml, ref_ml)
    ba = bland_altman(a, b)
    return {
        "n": int(a.size),
        "ccc": lins_ccc(a, b),
        "pearson_r": pearson_r(a, b),
        "bland_altman": {
            "mean_diff_ml": ba["mean_diff"],
            "sd_diff_ml": ba["sd_diff"],
            "loa_lower_ml": ba["loa_lower"],
            "loa_upper_ml": ba["loa_upper"],
        },
    }
