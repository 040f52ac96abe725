"""Deterministic data splits (k-fold, hold-out) and merging single-fold packages into an ensemble."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.card import ModelCard
from ..model.package import load_package, save_package

__all__ = ["kfold_splits", "holdout_split", "merge_fold_packages"]


def _shuffled(names: Sequence[str], seed: int) -> list[str]:
    ordered = sorted(set(names))
    rng = np.random.default_rng(seed)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def kfold_splits(names: Sequence[str], k: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``k`` (train, validation) splits; each case is validated in exactly one fold (same seed → same splits)."""
    if k < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {k}")
    shuffled = _shuffled(names, seed)
    if len(shuffled) < k:
        raise InputError(f"{k}-fold cross-validation needs at least {k} cases, found {len(shuffled)}")
    parts = [list(p) for p in np.array_split(np.array(shuffled, dtype=object), k)]
    out = []
    for i in range(k):
        val = sorted(parts[i])
        train = sorted(n for j, p in enumerate(parts) if j != i for n in p)
        out.append((train, val))
    return out


def holdout_split(
    names: Sequence[str], n_val: int, seed: int = 0, present: Mapping[str, Collection[int]] | None = None
) -> tuple[list[str], list[str]]:
    """Hold ``n_val`` cases out for validation (at least one case is always left for training).

    ``present`` (case → lesion labels it contains): the validation cases then cover every label that
    at least two cases contain, rarest label first, as far as ``n_val`` allows; the rest are drawn
    at random, keeping a case whose label no other case has in training.  Without it a small
    hold-out can miss a rare class (IVH) and model selection is blind to it.
    """
    shuffled = _shuffled(names, seed)
    n_val = max(0, min(n_val, len(shuffled) - 1))
    val: list[str] = []
    if present is not None:
        having: dict[int, list[str]] = {}  # label → cases containing it, in shuffled order
        for n in shuffled:
            for lab in present.get(n, ()):
                having.setdefault(int(lab), []).append(n)
        for lab in sorted(having, key=lambda lab: (len(having[lab]), lab)):
            covered = any(lab in present.get(n, ()) for n in val)
            if len(val) < n_val and not covered and len(having[lab]) >= 2:
                val.append(next(n for n in having[lab] if n not in val))
        unique = {cases[0] for cases in having.values() if len(cases) == 1}  # its class is seen only there
        rest = [n for n in shuffled if n not in val and n not in unique] + [n for n in shuffled if n in unique]
    else:
        rest = shuffled
    val += [n for n in rest if n not in val][: n_val - len(val)]
    return sorted(n for n in shuffled if n not in val), sorted(val)


def merge_fold_packages(
    packages: Sequence[str | os.PathLike], output: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """One ensemble package from single-fold packages trained separately (e.g. one per GPU/machine).

    The packages must share id, version, architecture and preprocessing and have distinct folds.
    """
    loaded = [load_package(p) for p in packages]
    if not loaded:
        raise InputError("no packages to merge")
    first = loaded[0].card
    weights = []
    metrics = {}
    for pkg in loaded:
        c = pkg.card
        for attr in ("id", "version", "architecture", "preprocessing"):
            if getattr(c, attr) != getattr(first, attr):
                raise InputError(f"cannot merge {pkg.source}: its {attr} differs from {loaded[0].source}")
        for w, state in zip(c.weights, pkg.states, strict=True):
            weights.append((w.fold, state))
        metrics[str(c.weights[0].fold)] = c.metrics
    folds = [f for f, _ in weights]
    if None in folds or len(set(folds)) != len(folds):
        raise InputError(f"packages to merge need distinct cross-validation folds, got {folds}")
    weights.sort(key=lambda fw: fw[0])
    d = first.to_dict()
    d["weights"] = []
    d["metrics"] = {"folds": metrics}
    card = ModelCard.from_dict(d)
    return save_package(output, card, weights, overwrite=overwrite)
