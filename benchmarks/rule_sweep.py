"""Scoring and choosing a post-processing rule on validation cases, shared by
``choose_postprocessing.py`` (component confidence) and ``choose_min_component.py`` (smallest kept
finding).  No torch: the network-free tool stays light.

A sweep row scores one setting of one class: mean Dice over all cases (an empty prediction of an
empty reference counts 1), over the cases with the class, and ``lost`` (cases whose lesion was found
without the rule, Dice > 0, and is missed with it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["best_row", "summarize"]


def summarize(
    results: Sequence[tuple[float, bool]], base: Sequence[tuple[float, bool]] | None = None, digits: int | None = None
) -> dict:
    """One sweep row from per-case (Dice, case has the class); ``base``: the same cases without the
    rule (for ``lost``); ``digits``: round the means (so near-ties count as ties)."""

    def mean(values: list[float]) -> float | None:
        if not values:
            return None
        m = float(np.mean(values))
        return m if digits is None else round(m, digits)

    lost = 0
    if base is not None:
        lost = sum(1 for (d, has), (d0, _) in zip(results, base, strict=True) if has and d0 > 0 and d == 0)
    positive = [d for d, has in results if has]
    return {"dice_all": mean([d for d, _ in results]), "dice_positive": mean(positive), "lost": lost}


def best_row(rows: Sequence[dict], setting: str, min_gain: float, max_lost: int, prefer_larger: bool = False):
    """Of ``rows[1:]`` (``rows[0]``: no rule), the row with the best ``dice_all`` among those losing at
    most ``max_lost`` found cases — on a tie the first, or the largest ``setting`` if ``prefer_larger``
    — when it gains at least ``min_gain`` over ``rows[0]``; else None."""
    admissible = [r for r in rows[1:] if r["lost"] <= max_lost]
    key = (lambda r: (r["dice_all"], r[setting])) if prefer_larger else (lambda r: r["dice_all"])
    best = max(admissible, key=key, default=None)
    if best is not None and best["dice_all"] >= rows[0]["dice_all"] + min_gain:
        return best
    return None
