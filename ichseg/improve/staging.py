"""Stage cases for fine-tuning without touching the originals: folders of links (or copies) to their files.

Fine-tuning reads dataset folders; the loop trains on a chosen subset of a folder (the cases
that passed the checks and are not held out) and replays a subset of the original training
data.  Both are staged as folders that mirror the source layout (``<case>/ct.nrrd`` ...,
flat pairs, or nnU-Net ``imagesTr``/``labelsTr`` with ``dataset.json``) holding hard links,
else symbolic links, else copies of the source files.  Staged folders are only ever removed
by the loop itself; the sources are never written.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import OutputError
from ..train.dataset import CaseRef, discover

__all__ = ["link_file", "stage_refs", "stage_replay"]


def link_file(src: Path, dst: Path, modes: Sequence[str] = ("hardlink", "symlink", "copy")) -> str:
    """Make ``dst`` a hard link, symbolic link or copy of ``src`` (the first that works); returns the mode."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    last: OSError | None = None
    for mode in modes:
        try:
            if mode == "hardlink":
                os.link(src, dst)
            elif mode == "symlink":
                os.symlink(src.resolve(), dst)
            else:
                shutil.copy2(src, dst)
            return mode
        except OSError as exc:  # another file system, no link support (FAT, some network drives) ...
            last = exc
    raise OutputError(f"cannot stage {src} in {dst.parent}: {last}")


def _files(path: Path) -> Iterable[Path]:
    if path.is_dir():
        yield from (p for p in sorted(path.rglob("*")) if p.is_file())
    else:
        yield path


def stage_refs(
    refs: Iterable[CaseRef],
    root: Path,
    dest: Path,
    *,
    extra_files: Sequence[Path] = (),
    modes: Sequence[str] = ("hardlink", "symlink", "copy"),
) -> Path:
    """Mirror the files of ``refs`` (paths relative to ``root``) and ``extra_files`` into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for ref in refs:
        for top in ref.files():
            for f in _files(top):
                try:
                    rel = f.relative_to(root)
                except ValueError:  # outside the folder (should not happen): keep it beside the case
                    rel = Path(ref.name) / f.name
                link_file(f, dest / rel, modes)
    for f in extra_files:
        link_file(f, dest / f.relative_to(root), modes)
    return dest


def stage_replay(
    datasets: Sequence[Path], dest_root: Path, *, max_cases: int | None, seed: int = 0
) -> tuple[list[Path], dict[str, int]]:
    """Stage (a deterministic subset of at most ``max_cases`` cases of) each replay dataset.

    The staged folder of a dataset has a stable name and links with the source files' size and
    time, so the fine-tuning cache of the replay cases is reused from one run to the next.
    Returns the staged folders and the number of cases staged from each dataset.
    """
    staged, counts = [], {}
    for ds in datasets:
        root = Path(ds)
        disc = discover(root)
        refs = sorted(disc.cases, key=lambda r: r.name)
        if max_cases and len(refs) > max_cases:
            refs = sorted(random.Random(seed).sample(refs, max_cases), key=lambda r: r.name)
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        extra = [root / "dataset.json"] if (root / "dataset.json").is_file() else []
        out = stage_refs(refs, root, dest_root / f"{root.name}-{tag}", extra_files=extra)
        staged.append(out)
        counts[str(root)] = len(refs)
    return staged, counts
