"""Weight averaging of model packages ("model soup", Wortsman et al. 2022; WiSE-FT).

A fine-tuned model and the model it started from lie in one basin of the loss: the weighted mean
of their weights is a model of the same size and speed that often keeps what each does best (one
inference pass, unlike an ensemble).  Measured here: the mean of 1.3.0 and its fine-tune 1.4.0 beat
both in ICH and IVH Dice on the validation phantoms, but on the test set it kept 1.4.0's trade-off
(more ICH false positives, lower IVH Dice than 1.3.0), only milder.

Only packages with the same architecture, preprocessing and classes, one weights file each and
the same tensor names and shapes can be averaged.  The new card is the last package's card with
the new version (checked when the card is validated), ``parent`` = the first package, the members
and their weights recorded in ``training.weight_average``, and no metrics (they belong to the
members, not to the average).  ``inference`` changes the card's inference settings (e.g. per-class
mirroring and component limits chosen for the average) by :func:`.derive.apply_inference`: each
key replaces the last package's, a null removes it, and a changed setting drops the inherited
record of how it was chosen (``<key>_chosen_on``) unless one is given; the result is checked with
the card.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .card import ParentRef, inherited_inference, utc_now
from .derive import apply_inference
from .package import ModelPackage, load_package, save_package

__all__ = ["average_packages", "average_states"]


def average_states(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_i w_i · state_i per tensor (in float64, cast back); integer tensors must agree and are kept."""
    first = states[0]
    out: dict[str, torch.Tensor] = {}
    for key, ref in first.items():
        tensors = [s[key] for s in states]
        if not ref.is_floating_point():
            if any(not torch.equal(t, ref) for t in tensors[1:]):
                raise InputError(f"cannot average: integer tensor {key} differs between the models")
            out[key] = ref.clone()
            continue
        total = sum(float(w) * t.double() for w, t in zip(weights, tensors, strict=True))
        out[key] = total.to(ref.dtype)
    return out


def _check_compatible(packages: Sequence[ModelPackage]) -> None:
    first = packages[0]
    for pkg in packages:
        if len(pkg.states) != 1:
            raise InputError(f"cannot average {pkg.source}: it has {len(pkg.states)} weights files (folds), not one")
    for pkg in packages[1:]:
        for part in ("architecture", "preprocessing", "classes"):
            if getattr(pkg.card, part) != getattr(first.card, part):
                raise InputError(f"cannot average {first.source} and {pkg.source}: their {part} differ")
        a, b = first.states[0], pkg.states[0]
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
            raise InputError(f"cannot average {first.source} and {pkg.source}: their tensors differ")


def average_packages(
    sources: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    version: str,
    weights: Sequence[float] | None = None,
    *,
    inference: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the weighted mean of the packages ``sources`` as a new package ``out_dir``; returns it.

    ``weights`` (default: equal) must be non-negative with a positive sum; they are normalised.
    ``inference``: settings that replace the card's (a None value removes one).
    """
    if len(sources) < 2:
        raise InputError("averaging needs at least two model packages")
    weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sources):
        raise InputError(f"{len(weights)} weights given for {len(sources)} models")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights)
    weights = [w / total for w in weights]
    packages = [load_package(s) for s in sources]
    _check_compatible(packages)
    state = average_states([p.states[0] for p in packages], weights)

    card = copy.deepcopy(packages[-1].card)
    card.inference = inherited_inference(packages[-1].card)  # each *_chosen_on names its model
    card.version = version
    card.created = utc_now()
    card.metrics = {}
    card.parent = ParentRef.of(packages[0].card)
    card.training["weight_average"] = [
        {"id": p.card.id, "version": p.card.version, "sha256": p.card.weights[0].sha256, "weight": w}
        for p, w in zip(packages, weights, strict=True)
    ]
    members = " + ".join(f"{w:g}×{p.card.version}" for p, w in zip(packages, weights, strict=True))
    card.description = f"Weight average {members}. " + (packages[-1].card.description or "")
    apply_inference(card, inference or {})
    return save_package(out_dir, card, [(None, state)], overwrite=overwrite)
