"""Does the cranial cavity leak out of the skull?  Measured on phantoms, whose true intracranial volume is known.

    python benchmarks/cavity_leaks.py DATASET [DATASET ...] --erosions 4,5 [--model MODEL] [--workers 2]
        [-o OUT.json]

DATASET is a synthetic nnU-Net raw dataset (``python -m ichseg.train.synthetic``: ``imagesTr``,
``labelsTr`` and ``phantom_params/*.json``, whose ``params.lesions.intracranial_volume_ml`` is the
generator's own).  For every case and erosion radius the cavity of :func:`ichseg.intracranial.cranial_cavity`
is found on the model's working grid, exactly as ``ichseg segment`` prepares the image, and compared
with the truth: ``ratio`` = cavity volume / intracranial volume (a leak into the orbits or the face
shows as a ratio above 1; a cavity that stops at the inner table's partial volume reads about 0.9),
and the lesion voxels of the reference outside it.  No network is run.

Measured 2026-12-07 on the 296 phantoms of the shipped model's stage 9 (seeds 100160-100359 and 96
fluid-level/hyperacute cases from 200000): 4 mm leaked in 16 (ratio 1.11-1.27), 5 mm in none (at
most 0.95), with lesion voxels outside the cavity 31 270 -> 31 415 (+0.5 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ichseg.fileutil import write_json_atomic  # noqa: E402
from ichseg.intracranial import cranial_cavity  # noqa: E402
from ichseg.model.registry import resolve_model  # noqa: E402
from ichseg.preprocess import PreprocessConfig, crop, label_to_working, prepare_image  # noqa: E402

#: A cavity larger than this fraction of the true intracranial volume has run out of the skull.
LEAK_RATIO = 1.0


def measure_case(job: tuple[Path, PreprocessConfig, list[float]]) -> dict:
    """One phantom: the cavity's volume ratio and the lesion voxels outside it, per erosion radius."""
    params_file, config, erosions = job
    record = json.loads(params_file.read_text())
    dataset, name, params = params_file.parent.parent, record["case"], record["params"]
    image = sitk.ReadImage(str(dataset / "imagesTr" / f"{name}_0000.nii.gz"))
    label = sitk.ReadImage(str(dataset / "labelsTr" / f"{name}.nii.gz"))
    prepared = prepare_image(image, config)
    lesion = crop(label_to_working(label, prepared.working), prepared.box) > 0
    truth_ml = float(params["lesions"]["intracranial_volume_ml"])
    row: dict = {"case": name, "slice_thickness": params["slice_thickness"], "intracranial_ml": truth_ml}
    for radius in erosions:
        cavity = cranial_cavity(prepared.hu, tuple(prepared.grid.spacing[::-1]), erosion_mm=radius)
        inside = cavity.mask if cavity.mask is not None else np.zeros_like(lesion)
        row[f"{radius:g}"] = {
            "found": cavity.mask is not None,
            "ratio": round(cavity.volume_ml / truth_ml, 4),
            "lesion_voxels_outside": int((lesion & ~inside).sum()),
            "lesion_voxels": int(lesion.sum()),
        }
    return row


def summarize(rows: list[dict], erosions: list[float]) -> dict:
    """Per radius: cases whose cavity leaked or was not found, and the spread of the volume ratio."""
    out = {}
    for radius in erosions:
        cells = [(r["case"], r[f"{radius:g}"]) for r in rows]
        ratios = sorted(c["ratio"] for _, c in cells if c["found"])
        out[f"{radius:g}"] = {
            "leaked": [case for case, c in cells if c["found"] and c["ratio"] > LEAK_RATIO],
            "not_found": [case for case, c in cells if not c["found"]],
            "ratio_min_median_max": [ratios[0], ratios[len(ratios) // 2], ratios[-1]] if ratios else None,
            "lesion_voxels_outside": sum(c["lesion_voxels_outside"] for _, c in cells),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", type=Path, nargs="+")
    ap.add_argument("--erosions", default="4,5", help="erosion radii in mm, comma-separated")
    ap.add_argument("--model", default=None, help="model whose working grid is used (default: the current)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    try:
        erosions = [float(e) for e in args.erosions.split(",") if e.strip()]
    except ValueError:
        ap.error("--erosions must be numbers in mm")
    files = sorted(p for d in args.datasets for p in (d / "phantom_params").glob("*.json"))
    if not files:
        ap.error("no phantom_params/*.json in the datasets (make them with python -m ichseg.train.synthetic)")
    config = resolve_model(args.model).card.preprocess_config()
    jobs = [(f, config, erosions) for f in files]
    if args.workers > 1:
        with Pool(args.workers) as pool:
            rows = list(pool.imap(measure_case, jobs))
    else:
        rows = [measure_case(job) for job in jobs]
    result = {"cases": len(rows), "leak_ratio": LEAK_RATIO, "summary": summarize(rows, erosions), "per_case": rows}
    for radius, s in result["summary"].items():
        print(
            f"{radius} mm: {len(s['leaked'])} of {len(rows)} leaked, {len(s['not_found'])} not found, "
            f"ratio min/median/max {s['ratio_min_median_max']}, lesion voxels outside {s['lesion_voxels_outside']}"
        )
    if args.output:
        write_json_atomic(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
