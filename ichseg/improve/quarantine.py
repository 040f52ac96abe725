"""Quarantine of a scanned folder's unusable cases: copies of their files and ``quarantine.json``.

Duplicates, overlaps and exclusions are listed in the same report without copies; the user's
files are only read, never moved, changed or deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileutil import write_json_atomic
from .cases import CaseSelection

__all__ = ["write_quarantine"]


def _size(paths: Sequence[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return total


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def write_quarantine(
    selection: CaseSelection, run_dir: Path, *, copy_limit_bytes: int = 2 << 30
) -> tuple[Path, list[dict[str, Any]]]:
    """Copy the quarantined cases into ``run_dir/quarantine/`` and write ``run_dir/quarantine.json``.

    The user's files are only read: a copy keeps the evidence of what was refused (up to
    ``copy_limit_bytes`` in all; beyond that only the record is written).  Duplicates,
    overlaps and exclusions are listed in the same report without copies (their files are
    still in place and nothing about them is wrong).
    """
    entries: list[dict[str, Any]] = []
    budget = copy_limit_bytes
    used_names: set[str] = set()
    for r in selection.records():
        if r.status not in ("quarantined", "duplicate", "overlap", "excluded"):
            continue
        entry = {
            "case": r.name,
            "source": r.source,
            "path": r.path,
            "status": r.status,
            "kind": r.kind,
            "reason": r.reason,
            "duplicate_of": r.duplicate_of,
            "conflict": r.conflict,
            "ct_sha256": r.ct_sha256,
            "segmentation_sha256": r.segmentation_sha256,
            "files": r.files,
            "copy": None,
        }
        if r.status == "quarantined":
            files = [Path(p) for p in r.files.values() if Path(p).exists()]
            size = _size(files)
            if files and size <= budget:
                name = r.name
                i = 1
                while name in used_names:
                    i += 1
                    name = f"{r.name}-{i}"
                used_names.add(name)
                dest = run_dir / "quarantine" / name
                try:
                    for f in files:
                        _copy(f, dest / f.name)
                    entry["copy"] = str(dest)
                    budget -= size
                except OSError as exc:
                    entry["copy_error"] = str(exc)
            elif files:
                entry["copy_error"] = f"not copied: {size / 2**20:.0f} MB is over the quarantine copy limit"
        entries.append(entry)
    path = write_json_atomic(
        run_dir / "quarantine.json",
        {
            "cases_dir": str(selection.cases.root),
            "holdout_dirs": [str(s.root) for s in selection.holdouts],
            "note": (
                "The cases were not moved, changed or deleted. Quarantined cases cannot be used "
                "(fix them in Slicer and save them again); copies of their files are under 'copy'."
            ),
            "counts": {s: sum(1 for e in entries if e["status"] == s) for s in ("quarantined", "duplicate", "overlap")},
            "cases": entries,
        },
    )
    return path, entries
