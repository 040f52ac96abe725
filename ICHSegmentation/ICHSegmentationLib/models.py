"""The model selector's entries: shipped and fine-tuned model versions with a card summary."""

from __future__ import annotations

from dataclasses import dataclass

from ichseg.errors import IchsegError
from ichseg.model.card import test_metrics
from ichseg.model.registry import ModelEntry, current_model, list_models

__all__ = ["ModelChoice", "card_summary", "model_choices"]


@dataclass(frozen=True)
class ModelChoice:
    """One selector entry: ``ref`` is what ``ichseg segment --model`` takes."""

    ref: str
    label: str
    summary: str
    current: bool


def _dice_text(metrics: dict, quality: str = "fast") -> str:
    """Held-out test Dice in the recommended quality (``metrics.test`` is fast, ``metrics.test_<quality>``
    the others; see benchmarks/ship_model.py), else the validation Dice."""
    for mode in dict.fromkeys((quality, "fast")):
        test = test_metrics(metrics, mode)
        if test is None:
            continue
        parts = [
            f"{name} {c['dice_pos_mean']:.2f}"
            for name, c in test["classes"].items()
            if isinstance(c, dict) and c.get("dice_pos_mean") is not None
        ]
        if parts:
            return f"Test Dice ({test.get('n_cases', '?')} cases, {mode}): " + ", ".join(parts)
    folds = metrics.get("folds")
    if isinstance(folds, dict):
        for fold in folds.values():
            dice = fold.get("final_dice") if isinstance(fold, dict) else None
            if isinstance(dice, dict):
                parts = [f"{k} {float(v):.2f}" for k, v in dice.items() if k in ("ICH", "PHE", "IVH") and v is not None]
                if parts:
                    return "Validation Dice: " + ", ".join(parts)
    return "Dice: not recorded"


def card_summary(entry: ModelEntry) -> str:
    """A few lines for the tooltip: name, version, source, training, recommended quality, metrics, parent."""
    card = entry.card
    training = card.training or {}
    quality = card.inference.get("quality", "fast")
    lines = [
        f"{card.name or card.id} {card.version} ({entry.source})",
        f"Created {card.created[:10]}; trained {training.get('steps', '?')} steps, loss {training.get('loss', '?')}",
        f"Recommended quality: {quality} (what 'auto' uses)",
        _dice_text(card.metrics or {}, quality),
    ]
    rule = card.inference.get("min_component_confidence")
    if isinstance(rule, dict) and rule:
        limits = ", ".join(f"{key} {float(value):g}" for key, value in rule.items())
        lines.append(f"Drops findings whose peak probability stays below: {limits}")
    sizes = card.inference.get("min_component_ml")
    if isinstance(sizes, dict) and sizes:
        limits = ", ".join(f"{key} {float(value):g} mL" for key, value in sizes.items())
        lines.append(f"Drops findings smaller than: {limits}")
    if card.parent is not None:
        lines.append(f"Fine-tuned from {card.parent.id}@{card.parent.version}")
    lines.append(card.intended_use)
    return "\n".join(lines)


def model_choices() -> list[ModelChoice]:
    """Installed models, newest first; the current one marked.  Empty when none is installed."""
    try:
        current_ref = current_model().ref
    except IchsegError:
        current_ref = None
    choices = []
    for entry in reversed(list_models()):
        label = f"{entry.card.name or entry.id} {entry.version}"
        if entry.source == "user":
            label += " (fine-tuned)"
        if entry.ref == current_ref:
            label += " [current]"
        choices.append(ModelChoice(entry.ref, label, card_summary(entry), entry.ref == current_ref))
    return choices
