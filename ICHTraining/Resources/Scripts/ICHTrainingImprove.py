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


def main(argv) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    training_dir = os.path.dirname(os.path.dirname(here))  # ICHTraining/
    root = os.path.dirname(training_dir)
    for path in (training_dir, os.path.join(root, "ICHSegmentation"), root):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
    from ICHSegmentationLib.batch import dependencies_problem, run_echoed
    from ICHSegmentationLib.process import ichseg_command

    problem = dependencies_problem()
    if problem:
        print(f"ICHTrainingImprove: error: {problem}")
        return 2
    return run_echoed(ichseg_command("improve", *argv), "ICHTrainingImprove")


if __name__ == "__main__":
    code = main(sys.argv[1:])
    from ICHSegmentationLib.batch import exit_application

    exit_application(code)
