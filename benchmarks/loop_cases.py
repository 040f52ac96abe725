"""Data of ``correction_loop.py``: synthetic cases per scenario and role, the weak model's nnU-Net dataset,
and the corrected cases saved the way the ICHTraining Slicer module saves them."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ichseg import labels

SCENARIOS = ("no-ivh", "thick-only")
SEED_BASE, SEED_CORRECTIONS, SEED_HOLDOUT = 500_000, 600_000, 700_000
# kinds of the new cases: most have the class the weak model never saw
IVH_KINDS = ("ich_phe_ivh", "ivh", "ich_phe", "ich_phe_ivh", "ivh", "ich")
NO_IVH_KINDS = ("ich_phe", "ich", "ich_phe", "negative", "ich_phe", "ich")
THIN = (0.625, 1.0, 2.5)


def _case_spec(scenario: str, role: str, i: int, seed0: int) -> tuple[int, str | None, float | None]:
    """(seed, kind, slice thickness) of case ``i`` of a role (base, corrections, holdout)."""
    base = {"base": SEED_BASE, "corrections": SEED_CORRECTIONS, "holdout": SEED_HOLDOUT}[role] + seed0
    if scenario == "no-ivh":
        kinds = NO_IVH_KINDS if role == "base" else IVH_KINDS
        return base + i, kinds[i % len(kinds)], None
    if role == "base":
        return base + i, None, 5.0
    return base + i, None, THIN[i % len(THIN)]


def _make_case(job: tuple[int, str | None, float | None, int, str, str]) -> dict[str, Any]:
    """Generate one phantom case and write it as ``<name>.nii.gz`` + ``<name>_label.nii.gz`` (skip if present)."""
    seed, kind, thickness, matrix, out, name = job
    folder = Path(out)
    img, lab = folder / f"{name}.nii.gz", folder / f"{name}_label.nii.gz"
    if not (img.is_file() and lab.is_file()):
        from ichseg.phantom import generate_case, write_case

        write_case(generate_case(seed, kind, thickness, matrix=matrix, name=name), folder)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(lab)))  # a copy: a view would outlive its image
    return {"case": name, "seed": seed, "ivh": bool((label == labels.IVH.value).any())}


def generate(scenario: str, role: str, n: int, out: Path, matrix: int, seed0: int, workers: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(n):
        seed, kind, thickness = _case_spec(scenario, role, i, seed0)
        jobs.append((seed, kind, thickness, matrix, str(out), f"{role}_{i:03d}"))
    rows = _run_jobs(jobs, workers)
    if scenario == "no-ivh" and role == "base":
        # the generator may extend a hematoma into the ventricles: the weak model must never see IVH
        rows = [r for r in rows if not r["ivh"]]
        extra = 0
        while len(rows) < n and extra < 10 * n:
            seed, kind, thickness = _case_spec(scenario, role, n + extra, seed0)
            rows += [r for r in _run_jobs([(seed, kind, thickness, matrix, str(out), f"{role}_{n + extra:03d}")], 1)]
            rows = [r for r in rows if not r["ivh"]]
            extra += 1
    return rows


def _run_jobs(jobs: list, workers: int) -> list[dict]:
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_make_case, jobs))
    return [_make_case(j) for j in jobs]


def to_nnunet(pool: Path, rows: list[dict], out: Path) -> Path:
    """The base cases as an nnU-Net raw dataset (links to the generated files)."""
    from ichseg.improve.staging import link_file
    from ichseg.train.synthetic import write_dataset_json

    for r in rows:
        link_file(pool / f"{r['case']}.nii.gz", out / "imagesTr" / f"{r['case']}_0000.nii.gz")
        link_file(pool / f"{r['case']}_label.nii.gz", out / "labelsTr" / f"{r['case']}.nii.gz")
    write_dataset_json(out, len(rows), "CorrectionLoopBase", "base data of the weak model (benchmark)")
    return out


def save_slicer_case(folder: Path, name: str, image: sitk.Image, label: np.ndarray, extra: dict) -> Path:
    """A case as the ICHTraining module saves it (the ground truth plays the corrected segmentation)."""
    from ichseg.io import write_seg_nrrd

    case = folder / name
    if (case / "case.json").is_file():
        return case
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sitk.WriteImage(image, str(tmp / "ct.nrrd"), True)
    write_seg_nrrd(label, image, tmp / "segmentation.seg.nrrd")
    sidecar = {
        "case": name,
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        "geometry": {"size": list(image.GetSize()), "spacing": list(image.GetSpacing())},
        **extra,
    }
    (tmp / "case.json").write_text(json.dumps(sidecar, indent=2))
    os.replace(tmp, case)
    return case
