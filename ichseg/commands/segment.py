"""``ichseg segment``: segment CT scans (files, folders, CSV lists) into labelmaps, .seg.nrrd and volumes.

For an input named ``<case>`` it writes ``OUTDIR/<case>_labels.nii.gz`` (labelmap on the input
grid), ``<case>.seg.nrrd`` (Slicer segments with names, colours and terminology),
``<case>_volumes.json`` (written last: it marks the case done) and ``<case>_overlay.png``, and for
the run ``volumes.csv`` and ``status.csv``.  A failing case is reported and the batch goes on; a
re-run skips cases already done with the same model.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NAME = "segment"
HELP = "segment ICH, PHE and IVH on CT scans"
OUTPUT_SUFFIXES = ("_labels.nii.gz", ".seg.nrrd", "_overlay.png", "_volumes.json")
QUALITY_CHOICES = ("auto", "fast", "accurate")  # = ichseg.infer.QUALITY_CHOICES (not imported: torch)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="+", help="CT files (.nii.gz, .nrrd, .mha, ...), DICOM folders, folders or a .csv list"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", help="model package path, id@version, version or id (default: the current model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--quality",
        choices=QUALITY_CHOICES,
        default="auto",
        help="fast: one pass; accurate: mirroring TTA (x and y: four passes, about 3x slower); "
        "auto (default): what the model card recommends",
    )
    p.add_argument(
        "--overlap",
        type=_overlap,
        help="window overlap, 0-0.9, instead of the quality's (0.5)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all available cores)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on the CPU (where supported)")
    p.add_argument("--shard", help="process only shard i of N (i/N, 0-based); default from RANK/WORLD_SIZE")
    p.add_argument("--force", action="store_true", help="re-segment cases already done")
    p.add_argument(
        "--keep-extracranial",
        action="store_true",
        help="keep findings outside the cranial cavity (by default they are removed when the skull is found)",
    )
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay PNG")
    p.add_argument("--progress", choices=("json", "bar", "quiet"), help="progress output (default: bar on a terminal)")


def _overlap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.9, got {value}")
    return value


def _is_done(
    out: Path,
    case: str,
    model_ref: str,
    quality: str,
    cavity_check: bool = True,
    overlap: float | None = None,
    mirror_axes: Sequence[int] | None = None,
    class_mirror_axes: dict[str, list[int]] | None = None,
) -> bool:
    """Outputs of ``case`` exist and were made with this model, quality, overlap, mirroring and cranial-cavity setting.

    Older records: any quality; without ``overlap`` they are redone (fast mode's overlap was 0.25);
    without ``mirror_axes`` fast had none and accurate mirrored x and y; without a
    ``cranial_cavity`` entry they predate the rule (redone).
    """
    marker = out / f"{case}_volumes.json"
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    needed = [out / f"{case}{s}" for s in OUTPUT_SUFFIXES if s != "_overlay.png"]
    same = data.get("model", {}).get("ref") == model_ref and data.get("quality") in (None, quality)
    same = same and (data.get("cranial_cavity") is not None) == cavity_check
    if overlap is not None:
        recorded = data.get("overlap")
        same = same and recorded is not None and abs(float(recorded) - overlap) < 1e-9
    if mirror_axes is not None:
        recorded_axes = data.get("mirror_axes", [] if (data.get("quality") or quality) == "fast" else [2, 1])
        same = same and list(recorded_axes) == list(mirror_axes)
    if class_mirror_axes is not None:
        same = same and (data.get("class_mirror_axes") or {}) == class_mirror_axes
    return same and all(p.is_file() for p in needed)


def write_case_outputs(
    out: Path, case: str, source: Path, image, result, entry, overlay: bool = True, run_warnings: Sequence[str] = ()
) -> dict[str, Any]:
    """Write one case's files (volumes JSON last) and return its volumes record.

    ``run_warnings`` (about the whole run, e.g. a quality the model is not meant for) are recorded
    after the case's own, so that whoever reads only this case (the Slicer module) sees them too.
    """
    import SimpleITK as sitk

    from ..fileutil import write_json_atomic
    from ..io import write_labelmap, write_seg_nrrd
    from ..overlay import write_montage
    from ..volumes import measure

    write_labelmap(result.label, image, out / f"{case}_labels.nii.gz")
    write_seg_nrrd(result.label, image, out / f"{case}.seg.nrrd")
    if overlay:
        write_montage(out / f"{case}_overlay.png", image, result.label, title=f"{case}: {entry.ref}")
    m = measure(sitk.GetArrayViewFromImage(result.label), result.label.GetSpacing())
    record = {
        "case": case,
        "input": str(source),
        "model": {"ref": entry.ref, "id": entry.id, "version": entry.version, "path": str(entry.path)},
        "quality": result.quality,
        "overlap": result.overlap,
        "mirror_axes": list(result.mirror_axes),
        "class_mirror_axes": result.class_mirror_axes,
        "warnings": [*result.warnings, *run_warnings],
        "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
        "postprocess_removed_voxels": result.postprocess,
        "cranial_cavity": result.cranial_cavity,
        **m.to_dict(),
    }
    write_json_atomic(out / f"{case}_volumes.json", record)
    return record


def _volumes_csv(out: Path, cases: list[str]) -> str:
    from ..volumes import CSV_COLUMNS

    buf = io.StringIO()
    columns = [*CSV_COLUMNS, "model"]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for case in cases:
        path = out / f"{case}_volumes.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text(encoding="utf-8"))
        row: dict[str, Any] = {"case": case, "model": d.get("model", {}).get("ref", "")}
        for key, c in d["classes"].items():
            row[f"{key}_ml"] = f"{c['volume_ml']:.3f}"
            row[f"{key}_lesions"] = c["lesions"]
        row["PHE_ICH_ratio"] = "" if d.get("phe_ich_ratio") is None else f"{d['phe_ich_ratio']:.3f}"
        e = d.get("ich_abc2")
        row["ICH_ABC2_ml"] = f"{e['volume_ml']:.3f}" if e else ""
        row["ICH_A_mm"] = f"{e['a_mm']:.1f}" if e else ""
        row["ICH_B_mm"] = f"{e['b_mm']:.1f}" if e else ""
        row["ICH_C_mm"] = f"{e['c_mm']:.1f}" if e else ""
        writer.writerow(row)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from ..batch import collect_cases, parse_shard, select_shard, shard_from_env
    from ..errors import IchsegError
    from ..fileutil import write_text_atomic
    from ..infer import Segmenter, class_axes_by_key, quality_settings, quality_warning, resolve_quality
    from ..io import read_image
    from ..model.package import load_package
    from ..model.registry import resolve_model
    from ..progress import Progress, default_mode

    progress = Progress(args.progress or default_mode())
    cases = collect_cases(args.inputs)
    index, count = parse_shard(args.shard) if args.shard else shard_from_env()
    cases = select_shard(cases, index, count)
    out: Path = args.out
    entry = resolve_model(args.model)
    quality = resolve_quality(args.quality, entry.card.inference)
    progress.emit(
        "model", 0.0, f"model {entry.ref} ({entry.source}), {quality} quality", model=entry.ref, quality=quality
    )
    run_warnings = [w for w in (quality_warning(entry.card, quality),) if w is not None]
    for warning in run_warnings:  # printed once per run, recorded with every case
        print(f"ichseg segment: warning: {warning}", file=sys.stderr)
    settings = quality_settings(quality, entry.card.inference, args.overlap)
    overlap, mirror_axes = settings["overlap"], settings["mirror_axes"]
    class_axes = class_axes_by_key(settings["class_mirror_axes"])
    segmenter: Segmenter | None = None
    statuses: list[dict[str, str]] = []
    n = len(cases)
    for i, case in enumerate(cases):
        base = i / max(n, 1)

        def report(stage: str, fraction: float, message: str, _case=case.name, _base=base) -> None:
            progress.emit(stage, _base + fraction / max(n, 1), f"{_case}: {message}", case=_case)

        if not args.force and _is_done(
            out, case.name, entry.ref, quality, not args.keep_extracranial, overlap, mirror_axes, class_axes
        ):
            statuses.append(
                {"case": case.name, "status": "skipped", "message": "already done with this model", "seconds": "0"}
            )
            report("skip", 1.0, "already done")
            continue
        t0 = time.perf_counter()
        try:
            report("read", 0.0, f"reading {case.path}")
            image = read_image(case.path)
            if segmenter is None:
                report("load", 0.02, f"loading {entry.ref}")
                segmenter = Segmenter(
                    load_package(entry.path),
                    device=args.device,
                    quality=quality,  # type: ignore[arg-type]
                    threads=args.threads,
                    bf16=args.bf16,
                    cavity_check=not args.keep_extracranial,
                    overlap=args.overlap,
                )
                if args.bf16 and not segmenter.bf16 and segmenter.device.type == "cpu":
                    print("ichseg segment: warning: --bf16: no native bfloat16 on this CPU; float32", file=sys.stderr)
            result = segmenter.segment(image, report)
            report("write", 0.95, "writing outputs")
            write_case_outputs(
                out, case.name, case.path, image, result, entry, not args.no_overlay, run_warnings=run_warnings
            )
            message = "; ".join(result.warnings)
            statuses.append({"case": case.name, "status": "ok", "message": message})
            for w in result.warnings:
                print(f"ichseg segment: warning: {case.name}: {w}", file=sys.stderr)
        except IchsegError as exc:
            if n == 1:  # a single input: one error line from the CLI, nothing written
                raise
            statuses.append({"case": case.name, "status": "error", "message": str(exc)})
            print(f"ichseg segment: error: {case.name}: {exc}", file=sys.stderr)
        except MemoryError:
            statuses.append({"case": case.name, "status": "error", "message": "out of memory"})
            print(f"ichseg segment: error: {case.name}: out of memory", file=sys.stderr)
        statuses[-1]["seconds"] = f"{time.perf_counter() - t0:.2f}"
    suffix = "" if count == 1 else f"_shard{index}of{count}"
    done = [s["case"] for s in statuses if s["status"] in ("ok", "skipped")]
    write_text_atomic(out / f"volumes{suffix}.csv", _volumes_csv(out, done))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["case", "status", "message", "seconds"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(statuses)
    write_text_atomic(out / f"status{suffix}.csv", buf.getvalue())
    failed = sum(s["status"] == "error" for s in statuses)
    progress.done(f"{n - failed} of {n} cases done, {failed} failed", failed=failed, cases=n)
    return 1 if failed else 0


def segment_for_demo(sample: Path, out: Path) -> int:
    """What ``make demo`` runs: segment the bundled sample and print its volumes."""
    from ..fileutil import stem
    from ..volumes import Measurements, format_table

    parser = argparse.ArgumentParser(prog="ichseg segment")
    add_arguments(parser)  # the command line's own defaults, so a new option cannot be forgotten here
    code = run(parser.parse_args([str(sample), "-o", str(out), "--force", "--progress", "quiet"]))
    case = stem(sample)
    d = json.loads((out / f"{case}_volumes.json").read_text(encoding="utf-8"))
    m = _measurements_from_dict(d, Measurements)
    sys.stdout.write(f"{case} segmented with {d['model']['ref']} in {sum(d['timings_s'].values()):.1f} s\n")
    sys.stdout.write(format_table(m) + f"\noutputs written to {out}/\n")
    return code


def _measurements_from_dict(d: dict[str, Any], cls):
    from ..volumes import ABC2, ClassMeasurement

    m = cls(spacing_mm=tuple(d["spacing_mm"]), voxel_volume_ml=d["voxel_volume_ml"])
    m.classes = {k: ClassMeasurement(**v) for k, v in d["classes"].items()}
    m.phe_ich_ratio = d.get("phe_ich_ratio")
    m.ich_abc2 = ABC2(**d["ich_abc2"]) if d.get("ich_abc2") else None
    return m
