"""Segment many head CTs with 3D Slicer and no window.

    Slicer --no-main-window --python-script ICHSegmentationBatch.py --input CASES --output OUT [--model REF]
        [--device auto|cpu|cuda] [--quality fast|accurate] [--force] [--no-overlay] [--timeout S]

CASES is a CT file, a DICOM folder, a folder of CTs or a .csv list (repeat --input for more).
Writes OUT/<case>.seg.nrrd (segments ICH/PHE/IVH with terminology), OUT/<case>_labels.nii.gz,
OUT/<case>_volumes.json, OUT/volumes.csv and OUT/status.csv; a re-run skips finished cases.
Exit code: 0 all done, 1 some cases failed (see status.csv), 2 bad arguments or missing
dependencies, 130 cancelled.  Never opens a dialog.  Also runs with a plain Python that has
the ``ichseg`` package (no Slicer needed).
"""

import os
import sys


def main(argv) -> int:
    module_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # ICHSegmentation/
    for path in (module_dir, os.path.dirname(module_dir)):  # ICHSegmentationLib, and ichseg in a source checkout
        if path not in sys.path:
            sys.path.insert(0, path)
    from ICHSegmentationLib.batch import dependencies_problem, run_batch

    problem = dependencies_problem()  # in Slicer without a main window: installs without asking
    if problem:
        print(f"ICHSegmentationBatch: error: {problem}")
        return 2
    return run_batch(argv)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    from ICHSegmentationLib.batch import exit_application

    exit_application(code)
