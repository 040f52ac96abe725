"""Synthetic training data: nnU-Net raw datasets from the phantom generator, and tiny blob volumes for tests.

``make_synthetic_dataset(out_dir, seeds)`` writes ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz`` and ``dataset.json`` using :func:`ichseg.phantom.generate_case`
(realistic 512 × 512 head CT, mixed slice thickness and gantry tilt).  Existing cases are kept,
so an interrupted run can be continued.  Command line::

    python -m ichseg.train.synthetic OUT_DIR --seeds 100000:100400 --workers 8

``--ich-patterns fluid_level,hyperacute --count 96`` keeps only the seeds (in order) whose case draws
one of those ICH HU patterns, up to ``--count`` of them: hard cases of the same generator, for a
fine-tuning stage aimed at them (the pattern is drawn cheaply, before any volume is built).

``make_blob_dataset`` writes small, easily learnt head-like volumes (skull, brain, ventricles, a
hematoma with an edema rim, sometimes ventricular blood) in the same layout, for smoke tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .. import labels
from ..fileutil import write_json_atomic

__all__ = [
    "make_synthetic_dataset",
    "select_seeds",
    "make_blob_dataset",
    "blob_case",
    "write_dataset_json",
    "parse_seeds",
]


def write_dataset_json(out_dir: Path, n: int, name: str, description: str, extra: dict[str, Any] | None = None) -> Path:
    meta = {
        "name": name,
        "description": description,
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{c.key: c.value for c in labels.CLASSES}},
        "numTraining": n,
        "file_ending": ".nii.gz",
        **(extra or {}),
    }
    return write_json_atomic(out_dir / "dataset.json", meta)


def _write_pair(out_dir: Path, name: str, image: sitk.Image, label: sitk.Image) -> None:
    from ..fileutil import atomic_output

    for img, path in (
        (image, out_dir / "imagesTr" / f"{name}_0000.nii.gz"),
        (label, out_dir / "labelsTr" / f"{name}.nii.gz"),
    ):
        with atomic_output(path) as tmp:
            sitk.WriteImage(img, str(tmp), True)


def _record_path(out_dir: Path, seed: int) -> Path:
    return out_dir / "phantom_params" / f"seed_{seed}.json"


def _done(out_dir: Path, seed: int) -> dict[str, Any] | None:
    """The record of a case already written for ``seed`` (image and label present), else None."""
    try:
        row = json.loads(_record_path(out_dir, seed).read_text())
    except (OSError, ValueError):
        return None
    name = row.get("case", "")
    ok = (out_dir / "imagesTr" / f"{name}_0000.nii.gz").is_file() and (
        out_dir / "labelsTr" / f"{name}.nii.gz"
    ).is_file()
    return row if ok else None


def _phantom_case(args: tuple[int, str, str | None, float | None, int]) -> dict[str, Any]:
    seed, out, kind, thickness, matrix = args
    out_dir = Path(out)
    row = _done(out_dir, seed)
    if row is not None:
        return row
    from ..phantom import generate_case

    case = generate_case(seed, kind, thickness, matrix=matrix)
    _write_pair(out_dir, case.name, case.image, case.label)
    row = {
        "seed": seed,
        "case": case.name,
        "kind": case.params.get("kind"),
        "spacing": [round(float(v), 5) for v in case.image.GetSpacing()],
        "params": case.params,
    }
    write_json_atomic(_record_path(out_dir, seed), json.loads(json.dumps(row, default=str)))
    return row


def select_seeds(
    seeds: Sequence[int], ich_patterns: Sequence[str], count: int | None = None, kind: str | None = None
) -> list[int]:
    """The seeds (in order) whose phantom draws one of ``ich_patterns``, at most ``count`` of them."""
    from ..phantom.generator import drawn_ich_pattern
    from ..phantom.lesions import ICH_PATTERNS

    unknown = sorted(set(ich_patterns) - set(ICH_PATTERNS))
    if unknown:
        raise ValueError(f"unknown ICH pattern(s) {', '.join(unknown)}; expected some of {', '.join(ICH_PATTERNS)}")
    chosen = []
    for seed in seeds:
        if count is not None and len(chosen) >= count:
            break
        if drawn_ich_pattern(seed, kind) in ich_patterns:
            chosen.append(int(seed))
    return chosen


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    seeds: Sequence[int],
    *,
    kind: str | None = None,
    slice_thickness: float | None = None,
    matrix: int = 512,
    workers: int = 1,
    name: str = "ICHPhantom",
    selection: dict[str, Any] | None = None,
    progress: Any = None,
) -> Path:
    """Generate phantom cases for ``seeds`` into an nnU-Net raw dataset folder; returns the folder.

    Seeds already written (``phantom_params/seed_<seed>.json`` plus both images) are skipped, so an
    interrupted run can simply be started again.  ``selection`` (how the seeds were chosen, e.g. by
    ICH pattern) is recorded in ``dataset.json``.
    """
    out = Path(out_dir)
    for sub in ("imagesTr", "labelsTr", "phantom_params"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(int(s), str(out), kind, slice_thickness, matrix) for s in seeds]
    pool = None
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_phantom_case, jobs)
    else:
        results = map(_phantom_case, jobs)
    try:
        for i, row in enumerate(results):
            if progress is not None:
                info = {k: row[k] for k in ("seed", "case", "kind", "spacing")}
                progress.emit("synthetic", (i + 1) / len(jobs), f"case {i + 1}/{len(jobs)}: {row['case']}", **info)
    finally:
        if pool is not None:
            pool.shutdown()
    rows = []
    for rec in sorted((out / "phantom_params").glob("seed_*.json")):
        row = _done(out, int(rec.stem.split("_", 1)[1]))
        if row is not None:
            rows.append({k: row[k] for k in ("seed", "case", "kind", "spacing")})
    rows.sort(key=lambda r: r["seed"])
    write_dataset_json(
        out,
        len(rows),
        name,
        "Synthetic non-contrast head CT from ichseg.phantom",
        {"seeds": [r["seed"] for r in rows], "cases": rows, **({"selection": selection} if selection else {})},
    )
    return out


# --------------------------------------------------------------------------- tiny blob volumes


def blob_case(
    seed: int,
    shape_zyx: Sequence[int] = (24, 48, 48),
    spacing_xyz: Sequence[float] = (4.5, 4.5, 4.0),
    ivh_probability: float = 0.6,
) -> tuple[sitk.Image, sitk.Image]:
    """A small head-like CT (HU, int16) with an ICH sphere, a PHE rim and sometimes IVH, and its label."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = (int(s) for s in shape_zyx)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in (nz, ny, nx)), indexing="ij")
    cz, cy, cx = (nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2
    r = np.sqrt(((z - cz) / (0.46 * nz)) ** 2 + ((y - cy) / (0.44 * ny)) ** 2 + ((x - cx) / (0.38 * nx)) ** 2)
    hu = np.full((nz, ny, nx), -1000.0)
    lab = np.zeros((nz, ny, nx), np.uint8)
    hu[r < 1.0] = 900.0
    brain = r < 0.86
    hu[brain] = 35.0
    vent = np.sqrt(((z - cz) / (0.12 * nz)) ** 2 + ((y - cy) / (0.16 * ny)) ** 2 + ((x - cx) / (0.07 * nx)) ** 2) < 1
    hu[vent] = 8.0
    side = rng.choice([-1, 1])
    hz = cz + rng.uniform(-0.15, 0.15) * nz
    hy = cy + rng.uniform(-0.15, 0.15) * ny
    hx = cx + side * rng.uniform(0.16, 0.22) * nx
    rad = rng.uniform(3.5, 5.5)
    d = np.sqrt((z - hz) ** 2 + (y - hy) ** 2 + (x - hx) ** 2)
    phe = (d < rad + 2.0) & brain & ~vent
    ich = (d < rad) & brain & ~vent
    hu[phe] = 22.0
    hu[ich] = 66.0
    lab[phe] = labels.PHE.value
    lab[ich] = labels.ICH.value
    if rng.random() < ivh_probability:
        ivh = vent & (y > cy + rng.uniform(-0.05, 0.08) * ny)
        hu[ivh] = 60.0
        lab[ivh] = labels.IVH.value
    hu += rng.normal(0, 3.0, hu.shape)
    image = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    image.SetSpacing([float(s) for s in spacing_xyz])
    image.SetOrigin((-cx * spacing_xyz[0], -cy * spacing_xyz[1], -cz * spacing_xyz[2]))
    label = sitk.GetImageFromArray(lab)
    label.CopyInformation(image)
    return image, label


def make_blob_dataset(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    shape_zyx: Sequence[int] = (24, 48, 48),
    spacing_xyz: Sequence[float] = (4.5, 4.5, 4.0),
    prefix: str = "blob",
) -> Path:
    """An nnU-Net raw dataset of ``n`` blob cases (fast to train on: for tests and smoke runs)."""
    out = Path(out_dir)
    for i in range(n):
        image, label = blob_case(seed + i, shape_zyx, spacing_xyz)
        _write_pair(out, f"{prefix}_{i:03d}", image, label)
    write_dataset_json(out, n, "Blobs", "tiny synthetic head-like volumes for tests")
    return out


def parse_seeds(text: str) -> list[int]:
    """``"100:110"`` (half-open range), ``"1,2,5"`` or ``"7"``."""
    if ":" in text:
        a, b = text.split(":", 1)
        return list(range(int(a), int(b)))
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ichseg.train.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output nnU-Net raw dataset folder")
    p.add_argument("--seeds", required=True, help="seeds: START:STOP (half-open) or a comma list")
    p.add_argument("--kind", help="phantom case kind (default: drawn from the seed)")
    p.add_argument("--slice-thickness", type=float, help="slice thickness in mm (default: drawn from the seed)")
    p.add_argument("--matrix", type=int, default=512)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ich-patterns", help="keep only seeds whose ICH has one of these HU patterns (comma list)")
    p.add_argument("--count", type=int, help="with --ich-patterns: at most this many seeds")
    p.add_argument("--progress", choices=("json", "bar", "quiet"), default=None)
    args = p.parse_args(argv)
    from ..progress import Progress, default_mode

    seeds = parse_seeds(args.seeds)
    if args.count is not None and args.count < 1:
        p.error(f"--count must be at least 1, got {args.count}")
    selection = None
    if args.ich_patterns:
        patterns = args.ich_patterns.split(",")
        try:
            seeds = select_seeds(seeds, patterns, args.count, args.kind)
        except ValueError as e:
            p.error(str(e))
        if args.count is not None and len(seeds) < args.count:
            p.error(f"only {len(seeds)} of the seeds {args.seeds} draw {args.ich_patterns}; give a wider range")
        selection = {"from_seeds": args.seeds, "ich_patterns": patterns, "count": args.count}
    elif args.count is not None:
        p.error("--count needs --ich-patterns")
    progress = Progress(args.progress or default_mode())
    make_synthetic_dataset(
        args.out,
        seeds,
        kind=args.kind,
        slice_thickness=args.slice_thickness,
        matrix=args.matrix,
        workers=args.workers,
        selection=selection,
        progress=progress,
    )
    progress.done(f"dataset written: {args.out}", path=str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
