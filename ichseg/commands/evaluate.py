"""``ichseg evaluate``: compare predicted label maps with references; write metrics.json, metrics.md and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "evaluate"
HELP = "compare predictions with reference labels: Dice, HD95, surface Dice, volumes, lesions, agreement"
DESCRIPTION = (
    "Pair prediction and reference label files by case name and write OUT/metrics.json (per case and summary), "
    "OUT/metrics.md (tables) and OUT/bland_altman.png, OUT/volume_scatter.png. "
    "Pairing: the case name is the file name without its suffix (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd, ...) "
    "and without one trailing tag (_labels, _label, _pred, _prediction, _seg, _segmentation, _gt, _mask); "
    "files are taken from the top of each folder and from its labelsTr/ and labelsTs/ sub-folders. "
    "When a folder holds several files of one case, a tagged file is used first (so case_label.nii.gz, "
    "not the CT case.nii.gz beside it), then a .seg.nrrd, then a file in labelsTr/labelsTs, then an untagged one. "
    "Unmatched files are listed and warned about. Prediction and reference must share the grid "
    "(a cropped .seg.nrrd is padded); a case that does not is reported as an error."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..evaluate.metrics import DEFAULT_TOLERANCE_MM

    p.add_argument("--pred", required=True, type=Path, metavar="PRED_DIR", help="folder of predicted label files")
    p.add_argument("--ref", required=True, type=Path, metavar="REF_DIR", help="folder of reference label files")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="OUT", help="output folder")
    p.add_argument(
        "--tolerance-mm",
        type=float,
        default=DEFAULT_TOLERANCE_MM,
        help=f"tolerance of the normalised surface Dice in mm (default {DEFAULT_TOLERANCE_MM:g})",
    )
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")


def _summary_lines(result: dict) -> list[str]:
    summary = result["summary"]
    lines = [f"{summary['n_ok']} of {summary['n_cases']} case(s) evaluated"]
    for key, s in summary["classes"].items():
        d, hd, a = s["dice_pos"], s["hd95_mm"], s["volume_agreement"]
        parts = [
            f"Dice(pos) {d['mean']:.3f} (n={d['n']})" if d["n"] else "Dice(pos) - (n=0)",
            f"HD95 {hd['median']:.2f} mm median" if hd["n"] else "HD95 -",
            f"CCC {a['ccc']:.3f}" if a["ccc"] is not None else "CCC -",
        ]
        lines.append(f"  {key}: " + ", ".join(parts))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_folders
    from ..progress import Progress, default_mode

    result = evaluate_folders(
        args.pred,
        args.ref,
        args.out,
        tolerance_mm=args.tolerance_mm,
        plots=not args.no_plots,
        progress=Progress(default_mode()),
    )
    errors = [c for c in result["cases"] if c["status"] != "ok"]
    lines = _summary_lines(result)
    lines += [f"  not evaluated: {c['case']}: {c['error']}" for c in errors]
    unmatched = result["pairing"]["unmatched_pred"] + result["pairing"]["unmatched_ref"]
    if unmatched:
        lines.append(f"  unmatched files: {len(unmatched)} (listed in metrics.json and metrics.md)")
    lines.append(f"outputs written to {args.out}/")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
