"""``ichseg volumes``: volumes (mL), lesion counts, PHE/ICH ratio and ABC/2 of labelmaps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "volumes"
HELP = "measure labelmaps or .seg.nrrd files: mL per class, lesions, PHE/ICH ratio, ABC/2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("labels", nargs="+", type=Path, help="labelmap files (.nii.gz, .nrrd, .seg.nrrd, ...)")
    p.add_argument("--json", type=Path, help="write all measurements to this JSON file")
    p.add_argument("--csv", type=Path, help="write one CSV row per file to this file")


def measure_file(path: Path):
    """Read a labelmap (or .seg.nrrd, mapped by segment name) and measure it."""
    import SimpleITK as sitk

    from ..fileutil import full_suffix
    from ..io import read_image, read_seg_nrrd
    from ..volumes import measure

    label = read_seg_nrrd(path).label if full_suffix(path) == ".seg.nrrd" else read_image(path)
    return measure(sitk.GetArrayViewFromImage(label), label.GetSpacing())


def run(args: argparse.Namespace) -> int:
    from ..fileutil import stem, write_json_atomic, write_text_atomic
    from ..volumes import format_table, measurements_csv

    results = [(stem(p), measure_file(p)) for p in args.labels]
    for case, m in results:
        sys.stdout.write(f"{case}\n{format_table(m)}\n\n")
    if args.json:
        write_json_atomic(args.json, {case: m.to_dict() for case, m in results})
    if args.csv:
        write_text_atomic(args.csv, measurements_csv(results))
    return 0
