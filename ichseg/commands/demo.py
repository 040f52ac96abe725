"""``ichseg demo``: the main job on the bundled synthetic sample CT (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "demo"
HELP = "run the main job on the bundled sample CT and write its outputs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "-o", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")


def _reference_outputs(sample: Path, out: Path) -> int:
    """Write the sample's reference annotation as the outputs the segmentation would produce."""
    import SimpleITK as sitk

    from ..fileutil import stem, write_json_atomic, write_text_atomic
    from ..io import read_image, write_labelmap, write_seg_nrrd
    from ..overlay import write_montage
    from ..volumes import format_table, measure, measurements_csv

    case = stem(sample)
    image = read_image(sample)
    label = read_image(sample.with_name(f"{case}_label.nii.gz"))
    m = measure(sitk.GetArrayViewFromImage(label), label.GetSpacing())
    write_labelmap(label, image, out / f"{case}_labels.nii.gz")
    write_seg_nrrd(label, image, out / f"{case}.seg.nrrd")
    write_json_atomic(out / f"{case}_volumes.json", {"case": case, "source": "reference", **m.to_dict()})
    write_text_atomic(out / "volumes.csv", measurements_csv([(case, m)]))
    write_montage(out / f"{case}_overlay.png", image, label, title=f"{case}: reference annotation")
    sys.stdout.write(f"{case} (reference annotation of the synthetic sample)\n{format_table(m)}\n")
    sys.stdout.write(f"outputs written to {out}/\n")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..model.registry import current_model
    from ..resources import sample_path
    from .segment import segment_for_demo

    sample = sample_path()
    try:
        current_model()
    except InputError as exc:
        sys.stdout.write(f"{exc}: showing the sample's reference annotation instead\n")
        return _reference_outputs(sample, args.out)
    return segment_for_demo(sample, args.out)
