"""The command line: phantom, volumes, demo, python -m, and one-line errors with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from ichseg.cli import main


def test_python_m_ichseg_help():
    out = subprocess.run([sys.executable, "-m", "ichseg", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("phantom", "segment", "train", "finetune", "evaluate", "models", "volumes", "demo"):
        assert cmd in out


def test_phantom_writes_case_and_is_reproducible(tmp_path, capsys):
    args = ["phantom", "--seed", "3", "--matrix", "96", "--kind", "ich_phe", "--slice-thickness", "5"]
    assert main([*args, "--out", str(tmp_path / "a"), "--montage"]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    name = "synth_000003"
    for suffix in (".nii.gz", "_label.nii.gz", ".json", "_montage.png"):
        assert (tmp_path / "a" / f"{name}{suffix}").is_file()
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / f"{name}.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / f"{name}.nii.gz")))
    assert np.array_equal(a, b)
    params = json.loads((tmp_path / "a" / f"{name}.json").read_text())
    assert params["kind"] == "ich_phe" and params["seed"] == 3


def test_volumes_command_json_csv(tmp_path, capsys):
    label = np.zeros((10, 20, 20), np.uint8)
    label[2:6, 5:15, 5:15] = 1
    img = sitk.GetImageFromArray(label)
    img.SetSpacing((0.5, 0.5, 5.0))
    path = tmp_path / "case_label.nii.gz"
    sitk.WriteImage(img, str(path))
    assert main(["volumes", str(path), "--json", str(tmp_path / "v.json"), "--csv", str(tmp_path / "v.csv")]) == 0
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["case_label"]["classes"]["ICH"]["volume_ml"] == pytest.approx(400 * 1.25 / 1000)
    assert (tmp_path / "v.csv").read_text().startswith("case,ICH_ml")


def _bad_files(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(flat))
    nan = tmp_path / "nan.mha"  # (SimpleITK drops NaN when writing NIfTI)
    a = np.zeros((4, 8, 8), np.float32)
    a[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(a), str(nan))
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage")
    empty_dicom = tmp_path / "empty_dicom"
    empty_dicom.mkdir()
    return {
        "2-D": flat,
        "NaN": nan,
        "corrupt": corrupt,
        "empty": empty_dicom,
        "missing": tmp_path / "missing.nii.gz",
    }


@pytest.mark.parametrize("problem", ["2-D", "NaN", "corrupt", "empty", "missing"])
def test_bad_input_one_line_error_nothing_written(problem, tmp_path):
    path = _bad_files(tmp_path)[problem]
    out_json = tmp_path / "out" / "v.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ichseg", "volumes", str(path), "--json", str(out_json)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path.name) in lines[0] or problem.lower() in lines[0].lower() or "not found" in lines[0]
    assert not out_json.exists()


def test_demo_runs_on_bundled_sample(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "ICH" in out and "mL" in out
    for name in ("ICH-sample_labels.nii.gz", "ICH-sample.seg.nrrd", "ICH-sample_volumes.json", "volumes.csv"):
        assert (tmp_path / "demo" / name).is_file()
    assert (tmp_path / "demo" / "ICH-sample_overlay.png").is_file()
