"""New versions of a model that change only how it is run (its card's ``inference`` settings).

A post-processing rule chosen on validation cases (``benchmarks/choose_postprocessing.py``,
``choose_min_component.py``) or a per-class mirroring choice changes what a model outputs, so it
gets a version of its own: :func:`derive_package` writes the same weights (same SHA-256) under a new
version whose ``parent`` is the source, whose card holds the new settings and no metrics (they were
measured with the old settings).  :func:`apply_inference` is the rule both this and the weight
average (:mod:`.average`) use to change a card's settings: each key replaces the card's, a null
removes it, and a changed setting drops the record of how the old one was chosen
(``<key>_chosen_on``) unless one is given.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from .card import ModelCard, ParentRef, inherited_inference, utc_now
from .package import load_package, save_package

__all__ = ["apply_inference", "derive_package"]


def apply_inference(card: ModelCard, inference: Mapping[str, Any]) -> list[str]:
    """Change ``card.inference`` in place by ``inference`` (see the module docstring); returns the
    keys whose value changed.  The patch size cannot be changed: the weights were trained for it."""
    changed_keys = []
    for key, value in inference.items():
        if key == "patch_size_zyx":
            raise InputError("the patch size is the one the weights were trained with; it cannot be changed")
        changed = value != card.inference.get(key)
        if value is None:
            card.inference.pop(key, None)
        else:
            card.inference[key] = copy.deepcopy(value)
        if changed:
            changed_keys.append(key)
            if not key.endswith("_chosen_on") and f"{key}_chosen_on" not in inference:
                card.inference.pop(f"{key}_chosen_on", None)  # the inherited evidence was for another setting
    return changed_keys


def derive_package(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    version: str,
    inference: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``source``'s weights with changed ``inference`` settings as version ``version`` in ``out_dir``."""
    package = load_package(source)
    card = copy.deepcopy(package.card)
    card.inference = inherited_inference(package.card)  # each *_chosen_on names the weights that chose it
    changed = apply_inference(card, inference)
    if not changed:
        raise InputError("the inference settings are unchanged: a new version would be the same model")
    card.version = version
    card.created = utc_now()
    card.metrics = {}
    card.parent = ParentRef.of(package.card)
    card.training["derived"] = {"from": f"{package.card.id}@{package.card.version}", "inference_changed": changed}
    card.description = (
        f"{package.card.version} with changed inference settings ({', '.join(changed)}); the same weights. "
        + (package.card.description or "")
    )
    folds = [w.fold for w in package.card.weights]  # a k-fold package stays an ensemble of the same folds
    return save_package(out_dir, card, list(zip(folds, package.states, strict=True)), overwrite=overwrite)
