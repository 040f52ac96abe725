"""Where the extension's bundled resources (sample CT, shipped models, registry) live."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import InputError
from .fileutil import sha256_file

__all__ = ["resources_dir", "sample_path", "SAMPLE_NAME"]

SAMPLE_NAME = "ICH-sample"


def resources_dir() -> Path:
    """``$ICHSEG_RESOURCES`` if set, else ``Resources/`` beside the package (checkout or Slicer install)."""
    env = os.environ.get("ICHSEG_RESOURCES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "Resources"


def sample_path(name: str = SAMPLE_NAME, verify: bool = True) -> Path:
    """Path of a bundled sample CT, its SHA-256 checked against ``Samples/samples.json``."""
    folder = resources_dir() / "Samples"
    index_file = folder / "samples.json"
    if not index_file.is_file():
        raise InputError(f"sample index not found: {index_file}")
    index = json.loads(index_file.read_text())
    entry = index.get(name)
    if entry is None:
        raise InputError(f"unknown sample {name!r}; available: {', '.join(sorted(index))}")
    path = folder / entry["file"]
    if not path.is_file():
        raise InputError(f"sample file missing: {path}")
    if verify and sha256_file(path) != entry["sha256"]:
        raise InputError(f"sample {path.name} is corrupted (SHA-256 mismatch)")
    return path
