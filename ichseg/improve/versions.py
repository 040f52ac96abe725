"""Versions made by the loop: numbering, installing a promoted package, the history of runs, one run at a time.

Everything lives in the user model folder (:func:`ichseg.model.registry.user_models_dir`):

* ``<id>-<version>/`` -- a promoted package (listed by ``ichseg models``; ``rollback`` works on it);
* ``.improve/runs/<run id>/`` -- one folder per run: ``cases.json``, ``quarantine.json`` (+ copies),
  ``improve.json`` (the report) and, when refused, ``candidate/`` (the rejected package);
* ``.improve/history.jsonl`` -- one line per run: parent, candidate, decision and reasons;
* ``.improve/work/`` -- fine-tuning work folder (the cache of the replay cases is kept between runs);
* ``.improve/lock`` -- held while a run is going on.

A candidate's version is the parent's next minor version that no installed model and no
earlier candidate (promoted or rejected) has used, so every version number names one model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from ..errors import OutputError
from ..model.card import bump_version
from ..model.package import load_package
from ..model.registry import list_models, user_models_dir

__all__ = [
    "improve_dir",
    "read_history",
    "append_history",
    "next_version",
    "install_package",
    "package_dir_name",
    "RunLock",
]


def improve_dir() -> Path:
    return user_models_dir() / ".improve"


def read_history() -> list[dict[str, Any]]:
    """The runs so far, oldest first (unreadable lines are skipped)."""
    path = improve_dir() / "history.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def append_history(entry: dict[str, Any]) -> Path:
    path = improve_dir() / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def package_dir_name(model_id: str, version: str) -> str:
    return f"{model_id}-{version}"


def _used_versions(model_id: str) -> set[str]:
    used = {e.version for e in list_models() if e.id == model_id}
    for entry in read_history():
        ref = str(entry.get("candidate") or "")
        if ref.startswith(f"{model_id}@"):
            used.add(ref.split("@", 1)[1])
    return used


def version_taken(model_id: str, version: str) -> bool:
    return version in _used_versions(model_id) or (user_models_dir() / package_dir_name(model_id, version)).exists()


def next_version(model_id: str, parent_version: str) -> str:
    """The parent's next minor version not used by any installed model or earlier candidate."""
    used = _used_versions(model_id)
    version = bump_version(parent_version, "minor")
    while version in used or (user_models_dir() / package_dir_name(model_id, version)).exists():
        version = bump_version(version, "minor")
    return version


def install_package(package: Path, model_id: str, version: str) -> Path:
    """Move a package folder into the user model folder as ``<id>-<version>`` and verify it loads."""
    target = user_models_dir() / package_dir_name(model_id, version)
    if target.exists():
        raise OutputError(f"a model package already exists at {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.installing")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        os.replace(package, tmp)
    except OSError:  # another file system: copy, then remove the source
        shutil.copytree(package, tmp)
        shutil.rmtree(package)
    load_package(tmp)  # the SHA-256 of every weights file is checked before the version becomes visible
    os.replace(tmp, target)
    return target


class RunLock:
    """An exclusive lock file (with the holder's process id) for one loop at a time per model folder."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is None and self._age_s() < 10:  # being written by a process that just took it
                    holder = -1
                if holder is not None and (holder == -1 or psutil.pid_exists(holder)) and holder != os.getpid():
                    who = f"process {holder}" if holder > 0 else "just started"
                    raise OutputError(
                        f"another `ichseg improve` ({who}) is running on {self.path.parent.parent}; "
                        f"wait for it to finish (or delete {self.path} if it is gone)"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "since": datetime.now(UTC).isoformat(timespec="seconds")}, f)
            self.held = True
            return self
        raise OutputError(f"cannot take the lock {self.path}")

    def _holder(self) -> int | None:
        try:
            return int(json.loads(self.path.read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _age_s(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
