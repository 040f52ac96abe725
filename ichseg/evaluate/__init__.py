"""Evaluation of ICH/PHE/IVH segmentations against references: metrics, agreement, reports, plots.

* :func:`evaluate_case` -- per-class metrics of one case from two label arrays;
* :func:`evaluate_folders` -- pair files by case name, evaluate, write ``metrics.json``,
  ``metrics.md`` and PNG plots.
"""

from .metrics import evaluate_case
from .report import evaluate_folders

__all__ = ["evaluate_case", "evaluate_folders"]
