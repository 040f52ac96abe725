"""The correction loop: corrected segmentations saved in Slicer become the next, checked model version.

Python API::

    from ichseg.improve import ImproveConfig, improve
    result = improve(ImproveConfig(cases_dir=Path("~/ICH training cases").expanduser(), tolerance=0.02))
    result.decision        # "promoted" or "rejected"
    result.reasons         # why it was refused, one line per class that got worse
    result.candidate       # "ichseg-ich-phe-ivh@1.1.0"
    result.report          # <run folder>/improve.json: counts, per-class Dice and volume errors, timings

Command line: ``ichseg improve CASES_DIR [--holdout 0.2|DIR] [--replay DATASET] [--tolerance 0.02] ...``.

Modules: :mod:`.cases` (scan, check, hash, duplicates, held-out split), :mod:`.quarantine` (copies and
report of the cases left out), :mod:`.staging` (link the chosen cases into folders for training),
:mod:`.gate` (evaluate both models, decide), :mod:`.versions` (version numbers, install, history, lock),
:mod:`.config` (:class:`ImproveConfig`, :class:`ImproveResult`), :mod:`.relay` (progress),
:mod:`.report` (reports and the model-card record), :mod:`.loop` (:func:`improve`).
"""

from __future__ import annotations

from .cases import CaseRecord, CaseSelection, FolderScan, scan_folder, select_cases
from .config import ImproveConfig, ImproveResult
from .gate import GATE_METRICS, Decision, decide, evaluate_models, summarize_cases
from .loop import auto_replay, improve
from .quarantine import write_quarantine
from .versions import improve_dir, read_history

__all__ = [
    "ImproveConfig",
    "ImproveResult",
    "improve",
    "auto_replay",
    "CaseRecord",
    "CaseSelection",
    "FolderScan",
    "scan_folder",
    "select_cases",
    "write_quarantine",
    "GATE_METRICS",
    "Decision",
    "decide",
    "evaluate_models",
    "summarize_cases",
    "improve_dir",
    "read_history",
]
