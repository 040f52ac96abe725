"""Deterministic data splits (k-fold, hold-out) and merging single-fold packages into an ensemble."""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def holdout_split(names: Sequence[str], n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold ``n_val`` cases out for validation (at least one case is always left for training)."""
    shuffled = _shuffled(names, seed)
    n_val = max(0, min(n_val, len(shuffled) - 1))
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


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
