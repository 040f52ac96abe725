"""Subcommands of the ``ichseg`` command-line tool, one module each.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Subcommand modules, in the order ``ichseg --help`` lists them.
COMMAND_MODULES = (
    "phantom",
    "demo",
    "segment",
    "volumes",
    "train",
    "finetune",
    "evaluate",
    "models",
    "improve",
)


def load_commands() -> list[ModuleType]:
    """Import the subcommand modules that exist in this version."""
    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return modules
