"""Batch segmentation from Slicer without a main window: ``ichseg segment`` over many CTs.

Used by ``Resources/Scripts/ICHSegmentationBatch.py``.  The work runs in a child process
(Slicer's Python), its JSON progress lines are echoed, and the exit code says what
happened: 0 all cases done, 1 some failed (see ``status.csv``), 2 bad arguments, 130 cancelled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from .process import QUALITIES, BackgroundProcess, ichseg_command, ichseg_environment

__all__ = ["EXIT_BAD_ARGUMENTS", "build_parser", "dependencies_problem", "exit_application", "run_batch", "run_echoed"]

EXIT_BAD_ARGUMENTS = 2
EXIT_CANCELLED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # no SystemExit inside Slicer: raise, the caller exits with code 2
        raise ValueError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ICHSegmentationBatch.py",
        description="Segment ICH/PHE/IVH on every CT of a folder or CSV list; writes <case>.seg.nrrd, "
        "<case>_labels.nii.gz, <case>_volumes.json, volumes.csv and status.csv in the output folder.",
    )
    p.add_argument("--input", action="append", required=True, help="CT file, DICOM folder, folder or .csv list")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--model", default="current", help="model id@version, version or package path")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--quality", choices=QUALITIES, default="auto", help="auto (default): what the model card recommends"
    )
    p.add_argument("--overlap", type=float, help="window overlap 0-0.9 instead of the quality's (0.5)")
    p.add_argument("--force", action="store_true", help="re-segment cases already done")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--timeout", type=float, help="cancel after this many seconds")
    return p


def run_batch(argv: Sequence[str], python: str | None = None, stream: TextIO | None = None) -> int:
    """Parse ``argv``, run ``ichseg segment`` in a child process, echo its output; return the exit code."""
    stream = stream or sys.stdout
    try:
        args = build_parser().parse_args(list(argv))
    except ValueError as exc:
        stream.write(f"ICHSegmentationBatch: error: {exc}\n")
        return EXIT_BAD_ARGUMENTS
    command_args = [*args.input, "-o", args.output, "--model", args.model, "--device", args.device]
    command_args += ["--quality", args.quality] + (["--force"] if args.force else [])
    command_args += ["--no-overlay"] if args.no_overlay else []
    command_args += ["--overlap", str(args.overlap)] if args.overlap is not None else []
    return run_echoed(
        ichseg_command("segment", *command_args, python=python), "ICHSegmentationBatch", stream, args.timeout
    )


def run_echoed(command: Sequence[str], name: str, stream: TextIO | None = None, timeout: float | None = None) -> int:
    """Run an ``ichseg`` command in a child process, echo its progress and log lines; return its exit code."""
    stream = stream or sys.stdout

    def echo(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    process = BackgroundProcess(
        command,
        on_progress=lambda record: echo(
            f"[{100 * (record.get('fraction') or 0):5.1f}%] {record.get('message', '')}".rstrip()
        ),
        on_log=echo,
        env=ichseg_environment(),
    ).start()
    try:
        outcome = process.wait(timeout=timeout)
    except KeyboardInterrupt:
        process.cancel()
        outcome = process.wait()
    if outcome.cancelled:
        echo(f"{name}: cancelled")
        return EXIT_CANCELLED
    echo(f"{name}: finished with exit code {outcome.returncode} in {outcome.seconds:.1f} s")
    return int(outcome.returncode or 0)


def exit_application(code: int) -> None:
    """Leave with ``code``: through Slicer's application when running in Slicer, else ``sys.exit``."""
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:
            slicer.util.exit(code)
            return
    except ImportError:
        pass
    sys.exit(code)


def dependencies_problem() -> str | None:
    """In Slicer: install missing packages (no dialog without a main window); the error text, or None."""
    try:
        import slicer

        if getattr(slicer, "app", None) is None:
            return None
        from .dependencies import ensure_in_slicer

        ensure_in_slicer()
    except ImportError:
        return None
    except Exception as exc:
        return str(exc)
    return None
