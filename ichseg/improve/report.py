"""What a run of the correction loop writes down: scan report, problem summary, model-card record, decision message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileutil import write_json_atomic
from ..model.card import ModelCard
from ..model.package import MODEL_JSON
from .cases import CaseSelection
from .gate import GATE_METRICS, Decision

__all__ = ["scan_report", "problem_summary", "record_in_card", "compact", "decision_message"]


def scan_report(selection: CaseSelection) -> dict[str, Any]:
    return {
        "cases_dir": str(selection.cases.root),
        "format": selection.cases.format,
        "holdout_dirs": [str(s.root) for s in selection.holdouts],
        "holdout_fraction": selection.fraction,
        "counts": selection.counts(),
        "messages": selection.cases.messages,
        "cases": [r.to_dict() for r in selection.records()],
    }


def problem_summary(selection: CaseSelection) -> str:
    bad = [r for r in selection.cases.records if r.status != "train"]
    if not bad:
        return "the folder holds no cases"
    parts = [f"{r.name}: {r.status}" + (f" ({r.reason})" if r.reason else "") for r in bad[:3]]
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return "; ".join(parts) + more


def record_in_card(
    package_dir: Path, training_update: dict[str, Any], improve_info: dict[str, Any], holdout_eval: dict[str, Any]
) -> ModelCard:
    """Add the loop's provenance and evaluation to the card (the weights and their SHA-256 are untouched)."""
    path = package_dir / MODEL_JSON
    data = json.loads(path.read_text(encoding="utf-8"))
    training = data["training"]
    training["improve"] = improve_info
    for key, value in training_update.items():
        section = training.setdefault(key, {})
        if isinstance(section, dict):
            section.update(value)
    data.setdefault("metrics", {})["holdout"] = holdout_eval
    card = ModelCard.from_dict(data, source=str(path))
    write_json_atomic(path, data)
    return card


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without its per-case rows (for progress events and the result)."""
    return {k: v for k, v in summary.items() if k != "cases"}


def decision_message(decision: Decision, parent: str, candidate: str, current: Any, new: Any) -> str:
    metric_field = GATE_METRICS[decision.metric]
    parts = []
    for key in decision.classes:
        a = current["classes"][key][metric_field]
        b = new["classes"][key][metric_field]
        parts.append(f"{key} {a:.3f}->{b:.3f}" if a is not None and b is not None else f"{key} n/a")
    table = ", ".join(parts)
    if decision.promote:
        return f"promoted {candidate} (now current; parent {parent}): {decision.metric} {table}"
    return f"refused {candidate}: {'; '.join(decision.reasons)}; {parent} stays current ({table})"
