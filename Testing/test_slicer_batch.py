"""The batch script shipped with ICHSegmentation (run with a plain Python, as Slicer would run it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk
from conftest import simple_head

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ICHSegmentation" / "Resources" / "Scripts" / "ICHSegmentationBatch.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=ROOT.parent
    )


def test_batch_segments_good_cases_and_reports_a_corrupt_one(tmp_path, tiny_package):
    cases = tmp_path / "cases"
    cases.mkdir()
    sitk.WriteImage(
        simple_head(size=(48, 48, 12), spacing=(4.8, 4.8, 10.0), blob_index=(20, 24, 6)), str(cases / "head1.nii.gz")
    )
    (cases / "broken.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    result = run_script("--input", str(cases), "--output", str(out), "--model", str(tiny_package), "--no-overlay")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (out / "head1.seg.nrrd").is_file() and (out / "head1_labels.nii.gz").is_file()
    assert not (out / "broken.seg.nrrd").exists()
    status = (out / "status.csv").read_text()
    assert "head1,ok" in status and "broken,error" in status
    assert "head1" in (out / "volumes.csv").read_text()
    assert "100.0%" in result.stdout

    again = run_script("--input", str(cases / "head1.nii.gz"), "--output", str(out), "--model", str(tiny_package))
    assert again.returncode == 0 and "already done" in again.stdout

    overlap = run_script(
        "--input", str(cases / "head1.nii.gz"), "--output", str(out), "--model", str(tiny_package), "--overlap", "0.25"
    )
    assert overlap.returncode == 0 and "already done" not in overlap.stdout  # another overlap: segmented again
    assert json.loads((out / "head1_volumes.json").read_text())["overlap"] == 0.25


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    result = run_script("--output", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout.strip().startswith("ICHSegmentationBatch: error:") and "--input" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
