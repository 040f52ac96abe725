"""Atomic output: write a file or folder under a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError

_MULTI_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import: setting the umask to read it is process-wide, so it is not done per file.
_UMASK = _read_umask()


def make_readable(path: str | os.PathLike) -> None:
    """Give a finished temporary file or folder the permissions a plainly created one gets (``0o666``
    or ``0o777`` less the umask): :func:`tempfile.mkstemp` and ``mkdtemp`` make them private
    (``0o600``/``0o700``), which would hide every output from a user's colleagues."""
    with contextlib.suppress(OSError):  # e.g. file systems without POSIX permissions
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


def full_suffix(path: str | os.PathLike) -> str:
    """Suffix including compound ones such as ``.nii.gz`` and ``.seg.nrrd``."""
    name = Path(path).name.lower()
    for s in _MULTI_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(path).suffix.lower()


def stem(path: str | os.PathLike) -> str:
    """File name without its (compound) suffix: ``a/b/case1.nii.gz`` -> ``case1``."""
    name = Path(path).name
    suffix = full_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else name


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path with the target's suffix; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched,
    so a reader never sees a half-written file.
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise OutputError(f"refusing to overwrite existing file: {target}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {target.parent}: {exc.strerror}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{full_suffix(target)}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not overwrite and target.exists():
            raise OutputError(f"refusing to overwrite existing file: {target}")
        make_readable(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def replace_folder(src: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename the finished folder ``src`` onto ``target``, replacing a folder already there.

    The old folder is first moved aside (a hidden sibling), so ``target`` is at every moment either
    the complete old folder or the complete new one; if the final rename fails, the old one is put
    back.  ``src`` must be on the same file system as ``target`` (build it as a sibling).
    """
    src, target = Path(src), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(src, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, overwrite: bool = True) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", overwrite=overwrite)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
