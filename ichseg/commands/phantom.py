"""``ichseg phantom``: write synthetic head-CT cases (image, label, parameters)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "phantom"
HELP = "generate synthetic head-CT cases with ICH/PHE/IVH ground truth"
DESCRIPTION = (
    "Generate reproducible synthetic non-contrast head CT with labels. For each case writes "
    "DIR/<case>.nii.gz (image, HU), DIR/<case>_label.nii.gz (0 bg, 1 ICH, 2 PHE, 3 IVH) and DIR/<case>.json."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..phantom import CASE_KINDS, SLICE_THICKNESSES

    p.add_argument("--seed", type=int, required=True, help="random seed of the (first) case")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    p.add_argument("--kind", choices=CASE_KINDS, help="case type (default: drawn from the seed)")
    p.add_argument(
        "--slice-thickness",
        type=float,
        help=f"slice thickness in mm, one of {', '.join(str(t) for t in SLICE_THICKNESSES)} (default: drawn)",
    )
    p.add_argument("--count", type=int, default=1, help="number of cases, with seeds SEED, SEED+1, ...")
    p.add_argument("--matrix", type=int, default=512, help="in-plane matrix size (default 512)")
    p.add_argument("--montage", action="store_true", help="also write DIR/<case>_montage.png (W80/L40, outlines)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..overlay import write_montage
    from ..phantom import generate_case, write_case

    if args.count < 1:
        raise InputError("--count must be at least 1")
    for i in range(args.count):
        seed = args.seed + i
        try:
            case = generate_case(seed, args.kind, args.slice_thickness, matrix=args.matrix)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        paths = write_case(case, args.out)
        if args.montage:
            paths["montage"] = write_montage(
                Path(args.out) / f"{case.name}_montage.png",
                case.image,
                case.label,
                title=f"{case.name} ({case.params.get('kind')})",
            )
        summary = {"case": case.name, "kind": case.params.get("kind"), **{k: str(v) for k, v in paths.items()}}
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0
