"""Batch inputs: expand files, folders and CSV lists into named cases; shard them over workers.

* a file with an image suffix is one case, named by its stem;
* a folder holding DICOM files is one case (named by the folder);
* any other folder contributes its image files and its DICOM sub-folders (not recursively
  deeper); ``.seg.nrrd`` files and ``*_label(s)`` files are skipped: they are not CTs;
* a ``.csv`` file lists inputs in a ``path`` column (or its first column), relative paths
  being relative to the CSV.

Sharding (``--shard i/N`` or ``RANK``/``WORLD_SIZE`` under ``torchrun``) takes every N-th case
of the sorted list, so N workers over the same inputs split them without talking to each other.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .fileutil import full_suffix, stem

__all__ = ["Case", "collect_cases", "parse_shard", "shard_from_env", "select_shard"]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_NOT_CT_ENDINGS = ("_label", "_labels", "_seg", "_mask")


@dataclass(frozen=True)
class Case:
    name: str
    path: Path


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _has_dicom(folder: Path) -> bool:
    return any(p.is_file() and _is_dicom_file(p) for p in folder.iterdir())


def _is_ct_file(path: Path) -> bool:
    suffix = full_suffix(path)
    return suffix in IMAGE_SUFFIXES and not stem(path).lower().endswith(_NOT_CT_ENDINGS)


def _from_csv(path: Path) -> list[Path]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise InputError(f"CSV list is empty: {path}")
    header = [h.strip().lower() for h in rows[0]]
    col = header.index("path") if "path" in header else 0
    body = rows[1:] if ("path" in header or not Path(rows[0][0]).suffix) else rows
    return [(path.parent / r[col].strip()) for r in body if r and r[col].strip()]


def _expand(item: Path) -> list[Path]:
    if not item.exists():
        raise InputError(f"input not found: {item}")
    if item.is_file():
        if full_suffix(item) == ".csv":
            out: list[Path] = []
            for p in _from_csv(item):
                out.extend(_expand(p) if p.is_dir() else [p])
            return out
        return [item]
    if _has_dicom(item):
        return [item]
    found = [p for p in sorted(item.iterdir()) if (p.is_file() and _is_ct_file(p)) or (p.is_dir() and _has_dicom(p))]
    return found


def collect_cases(items: Iterable[str | os.PathLike]) -> list[Case]:
    """Expand inputs into uniquely named cases, sorted by name."""
    cases: dict[str, Case] = {}
    for item in items:
        for path in _expand(Path(item)):
            name = path.name if path.is_dir() else stem(path)
            base, k = name, 2
            while name in cases and cases[name].path.resolve() != path.resolve():
                name = f"{base}_{k}"
                k += 1
            cases[name] = Case(name, path)
    if not cases:
        raise InputError("no input images found")
    return [cases[k] for k in sorted(cases)]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``i/N`` (0-based i) into (i, N)."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError as exc:
        raise InputError(f"--shard must look like i/N, e.g. 0/4; got {text!r}") from exc
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text}: need 0 <= i < N")
    return i, n


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) under torchrun or another launcher that sets RANK/WORLD_SIZE; else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def select_shard(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    return list(cases[index::count])
