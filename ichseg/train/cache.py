"""Preprocess each case once and cache it: HU (int16) and labels (uint8) on the cropped working grid.

Layout: ``<cache_dir>/<case>_img.npy``, ``<case>_seg.npy`` and ``<case>.json`` (metadata, written
last, so a case is cached only when its JSON exists and its key matches).  The key covers the
source files (path, size, mtime), the working spacing, crop and resampling settings and
:data:`CACHE_VERSION`; normalisation is applied later (augmentations act on HU first), so one cache
serves every normalisation.  Cases that fail their checks are returned as :class:`Skipped`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..fileutil import atomic_output, write_json_atomic
from ..preprocess import PreprocessConfig, label_box, label_to_working, orient_axial, prepare_image, working_grid
from .dataset import CaseError, CaseRef, Skipped, file_signature, load_case
from .fingerprint import CaseInfo, case_info

__all__ = [
    "CACHE_VERSION",
    "CachedCase",
    "cache_case",
    "build_cache",
    "scan_case",
    "scan_cases",
    "parallel_map",
    "cache_dir_for",
]

CACHE_VERSION = 1
R = TypeVar("R")


@dataclass(frozen=True)
class CachedCase:
    name: str
    image: Path
    label: Path
    meta: dict[str, Any]

    def arrays(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        mode = "r" if mmap else None
        return np.load(self.image, mmap_mode=mode), np.load(self.label, mmap_mode=mode)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(self.meta["shape_zyx"])  # type: ignore[return-value]

    @property
    def lesion_labels(self) -> set[int]:
        """Lesion labels (> 0) present in the case, from its cached ``class_voxels``."""
        return {i for i, count in enumerate(self.meta.get("class_voxels", ())) if i > 0 and count > 0}


def _key(ref: CaseRef, extra: Any) -> str:
    payload = json.dumps([CACHE_VERSION, [file_signature(p) for p in ref.files()], ref.lut, extra], default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:20]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        np.save(tmp, array)


def cache_case(ref: CaseRef, pre: PreprocessConfig, cache_dir: Path) -> CachedCase:
    """Cache one case (or return the cached one); raises CaseError when the case must be skipped."""
    settings = pre.to_dict()
    settings.pop("normalization")
    key = _key(ref, settings)
    meta_path = cache_dir / f"{ref.name}.json"
    img_path, seg_path = cache_dir / f"{ref.name}_img.npy", cache_dir / f"{ref.name}_seg.npy"
    if meta_path.is_file() and img_path.is_file() and seg_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key:
                return CachedCase(ref.name, img_path, seg_path, meta)
        except (OSError, ValueError):
            pass
    loaded = load_case(ref)
    grid = working_grid(orient_axial(loaded.image), pre.spacing_xyz)
    label_full = label_to_working(loaded.label, grid)
    prepared = prepare_image(loaded.image, pre, keep_box=label_box(label_full))
    label = np.ascontiguousarray(label_full[prepared.box])
    hu = np.clip(np.round(prepared.hu), -32768, 32767).astype(np.int16)
    counts = np.bincount(label.ravel(), minlength=4)
    _save_npy(img_path, hu)
    _save_npy(seg_path, label)
    meta = {
        "key": key,
        "case": ref.name,
        "dataset": ref.dataset,
        "image_file": str(ref.image),
        "label_file": str(ref.label),
        "shape_zyx": list(label.shape),
        "spacing_xyz": list(pre.spacing_xyz),
        "box_zyx": [[s.start, s.stop] for s in prepared.box],
        "class_voxels": [int(c) for c in counts[:4]],
        "messages": loaded.messages,
        "sidecar": loaded.meta,
    }
    write_json_atomic(meta_path, meta)
    return CachedCase(ref.name, img_path, seg_path, meta)


def scan_case(ref: CaseRef, scan_dir: Path) -> tuple[CaseInfo, np.ndarray]:
    """Fingerprint one case (cached in ``scan_dir``); raises CaseError when the case must be skipped."""
    key = _key(ref, "scan")
    info_path, sample_path = scan_dir / f"{ref.name}.json", scan_dir / f"{ref.name}_fg.npy"
    if info_path.is_file() and sample_path.is_file():
        try:
            d = json.loads(info_path.read_text())
            if d.get("key") == key:
                if d.get("error"):
                    raise CaseError(d["error"])
                return CaseInfo.from_dict(d["info"]), np.load(sample_path)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        loaded = load_case(ref)
    except CaseError as exc:
        write_json_atomic(info_path, {"key": key, "error": str(exc)})
        _save_npy(sample_path, np.zeros(0, np.float32))
        raise
    info, sample = case_info(ref.name, loaded.image, loaded.label)
    _save_npy(sample_path, sample)
    write_json_atomic(info_path, {"key": key, "info": info.__dict__})
    return info, sample


def _try(fn: Callable[..., R], ref: CaseRef, *args: Any) -> R | Skipped:
    try:
        return fn(ref, *args)
    except CaseError as exc:
        return Skipped(ref.name, str(ref.image), str(exc))


def parallel_map(
    fn: Callable[..., R], refs: Sequence[CaseRef], args: tuple, workers: int = 1
) -> Iterator[tuple[CaseRef, R | Skipped]]:
    """``fn(ref, *args)`` for every case, in order, in ``workers`` spawned processes (CaseError → Skipped)."""
    if workers <= 1 or len(refs) <= 1:
        for ref in refs:
            yield ref, _try(fn, ref, *args)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(refs)), mp_context=ctx) as pool:
        futures = [pool.submit(_try, fn, ref, *args) for ref in refs]
        for ref, fut in zip(refs, futures, strict=True):
            yield ref, fut.result()


def scan_cases(
    refs: Sequence[CaseRef], scan_dir: Path, *, workers: int = 1, report: Callable[[int, int, str], None] | None = None
) -> tuple[list[CaseRef], list[CaseInfo], list[np.ndarray], list[Skipped]]:
    """Fingerprint all cases; returns the usable refs, their infos and samples, and the skipped cases."""
    scan_dir.mkdir(parents=True, exist_ok=True)
    ok, infos, samples, skipped = [], [], [], []
    for i, (ref, res) in enumerate(parallel_map(scan_case, refs, (scan_dir,), workers)):
        if isinstance(res, Skipped):
            skipped.append(res)
        else:
            ok.append(ref)
            infos.append(res[0])
            samples.append(res[1])
        if report:
            report(i + 1, len(refs), ref.name)
    return ok, infos, samples, skipped


def build_cache(
    refs: Sequence[CaseRef],
    pre: PreprocessConfig,
    cache_dir: Path,
    *,
    workers: int = 1,
    report: Callable[[int, int, str], None] | None = None,
) -> tuple[list[CachedCase], list[Skipped]]:
    """Cache all cases on the working grid; returns cached cases and skipped ones (with reasons)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached, skipped = [], []
    for i, (ref, res) in enumerate(parallel_map(cache_case, refs, (pre, cache_dir), workers)):
        if isinstance(res, Skipped):
            skipped.append(res)
        else:
            cached.append(res)
        if report:
            report(i + 1, len(refs), ref.name)
    return cached, skipped


def cache_dir_for(root: Path, pre: PreprocessConfig) -> Path:
    """A cache folder per working spacing (so a changed plan never mixes grids)."""
    tag = "x".join(f"{s:g}" for s in pre.spacing_xyz)
    return root / f"cache_{tag}mm"
