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
    module_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # ICHSegmentation/
    for path in (module_dir, os.path.dirname(module_dir)):  # ICHSegmentationLib, and ichseg in a source checkout
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:
            from ICHSegmentation import ensureDependencies

            ensureDependencies()  # no main window: installs without asking
    except ImportError:
        pass
    except Exception as exc:
        print(f"ICHSegmentationBatch: error: {exc}")
        return 2
    from ICHSegmentationLib.batch import run_batch

    return run_batch(argv)


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
