"""Run the correction loop with 3D Slicer and no window.

    Slicer --no-main-window --python-script ICHTrainingImprove.py CASES_DIR [ichseg improve options...]

Fine-tunes the current model on the training cases in CASES_DIR (saved with "Save as
training case"), evaluates it against the current model on held-out cases and makes it
current only if no class gets worse (see ``ichseg improve --help`` for the options; add
``--resume`` to continue a stopped run).  Progress lines are echoed; never opens a dialog.
Exit code: that of ``ichseg improve`` (0 done, non-zero on error), 130 when cancelled.
"""

import os
import sys


def _exit(code: int) -> None:
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:
            slicer.util.exit(code)
            return
    except ImportError:
        pass
    sys.exit(code)


def main(argv) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    training_dir = os.path.dirname(os.path.dirname(here))  # ICHTraining/
    root = os.path.dirname(training_dir)
    for path in (training_dir, os.path.join(root, "ICHSegmentation"), root):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:
            from ICHSegmentation import ensureDependencies

            ensureDependencies()
    except ImportError:
        pass
    except Exception as exc:
        print(f"ICHTrainingImprove: error: {exc}")
        return 2
    from ICHSegmentationLib.process import BackgroundProcess, ichseg_command, ichseg_environment

    def echo(line: str) -> None:
        print(line, flush=True)

    process = BackgroundProcess(
        ichseg_command("improve", *argv),
        on_progress=lambda r: echo(f"[{100 * (r.get('fraction') or 0):5.1f}%] {r.get('message', '')}".rstrip()),
        on_log=echo,
        env=ichseg_environment(),
    ).start()
    try:
        outcome = process.wait()
    except KeyboardInterrupt:
        process.cancel()
        outcome = process.wait()
    if outcome.cancelled:
        return 130
    return int(outcome.returncode or 0)


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
