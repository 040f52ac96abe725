"""``ichseg segment`` end to end with a tiny model: outputs, volumes, batch behaviour, bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import simple_head, tilt_direction

from ichseg.cli import main
from ichseg.model import MODEL_JSON
from ichseg.progress import parse_progress_line
from ichseg.volumes import measure


def _csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write(img: sitk.Image, path) -> str:
    sitk.WriteImage(img, str(path), True)
    return str(path)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _write(simple_head(blob_index=(50.0, 40.0, 12.0)), folder / "caseA.nii.gz")
    _write(simple_head(direction=tilt_direction(18), spacing=(2.3, 2.3, 5.0), seed=1), folder / "caseB.nrrd")
    return folder


def _run(capsys, *argv):
    code = main(["segment", *map(str, argv), "--progress", "json", "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_outputs_geometry_volumes_and_progress(inputs, tmp_path, tiny_package, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, inputs, "-o", out, "--model", tiny_package)
    assert code == 0
    for case, src in (("caseA", "caseA.nii.gz"), ("caseB", "caseB.nrrd")):
        for suffix in ("_labels.nii.gz", ".seg.nrrd", "_volumes.json", "_overlay.png"):
            assert (out / f"{case}{suffix}").is_file()
        image = sitk.ReadImage(str(inputs / src))
        label = sitk.ReadImage(str(out / f"{case}_labels.nii.gz"))
        assert label.GetSize() == image.GetSize()
        assert np.allclose(label.GetSpacing(), image.GetSpacing(), atol=1e-5)
        assert np.allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-6)
        record = json.loads((out / f"{case}_volumes.json").read_text())
        m = measure(sitk.GetArrayFromImage(label), label.GetSpacing())
        for key in ("ICH", "PHE", "IVH"):
            assert record["classes"][key]["voxels"] == m.classes[key].voxels
            assert record["classes"][key]["volume_ml"] == pytest.approx(m.classes[key].volume_ml, rel=1e-6)
        assert record["model"]["id"] == "tiny-test"
        assert record["cranial_cavity"]["found"] is True, record["cranial_cavity"]
        assert record["postprocess_removed_voxels"]["extracranial_components"] >= 0  # a random network
    events = [parse_progress_line(line) for line in stdout.splitlines()]
    assert all(e is not None for e in events), stdout
    assert events[-1]["stage"] == "done" and events[-1]["fraction"] == 1.0
    fractions = [e["fraction"] for e in events if e["fraction"] is not None]
    assert fractions == sorted(fractions)
    rows = _csv(out / "volumes.csv")
    assert [r["case"] for r in rows] == ["caseA", "caseB"]


def test_batch_continues_past_corrupt_file_and_rerun_skips(inputs, tmp_path, tiny_package, capsys):
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "out"
    code, _, err = _run(capsys, inputs, "-o", out, "--model", tiny_package)
    assert code == 1
    assert "broken" in err and "Traceback" not in err
    status = {r["case"]: r["status"] for r in _csv(out / "status.csv")}
    assert status == {"broken": "error", "caseA": "ok", "caseB": "ok"}
    assert not (out / "broken_labels.nii.gz").exists()
    mtime = (out / "caseA_labels.nii.gz").stat().st_mtime_ns
    code, _, _ = _run(capsys, inputs, "-o", out, "--model", tiny_package)
    status = {r["case"]: r["status"] for r in _csv(out / "status.csv")}
    assert status["caseA"] == "skipped" and status["caseB"] == "skipped"
    assert (out / "caseA_labels.nii.gz").stat().st_mtime_ns == mtime


def test_quality_is_recorded_and_a_different_one_re_segments(inputs, tmp_path, tiny_package, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, inputs / "caseA.nii.gz", "-o", out, "--model", tiny_package)
    assert code == 0
    assert json.loads((out / "caseA_volumes.json").read_text())["quality"] == "fast"  # auto; no recommendation
    assert parse_progress_line(stdout.splitlines()[0])["quality"] == "fast"
    _run(capsys, inputs / "caseA.nii.gz", "-o", out, "--model", tiny_package, "--quality", "fast")
    assert _csv(out / "status.csv")[0]["status"] == "skipped"
    _run(capsys, inputs / "caseA.nii.gz", "-o", out, "--model", tiny_package, "--quality", "accurate")
    assert _csv(out / "status.csv")[0]["status"] == "ok"
    assert json.loads((out / "caseA_volumes.json").read_text())["quality"] == "accurate"


def test_a_quality_against_the_cards_recommendation_is_warned_once(inputs, tmp_path, tiny_package, capsys):
    recommending = tmp_path / "recommends-accurate"
    shutil.copytree(tiny_package, recommending)
    card = json.loads((recommending / MODEL_JSON).read_text())
    card["inference"]["quality"] = "accurate"
    (recommending / MODEL_JSON).write_text(json.dumps(card))
    code, _, stderr = _run(capsys, inputs, "-o", tmp_path / "fast", "--model", recommending, "--quality", "fast")
    assert code == 0 and stderr.count("is meant to run with --quality accurate") == 1  # two cases, one warning
    for case in ("caseA", "caseB"):  # and recorded with each case, where the Slicer module reads warnings
        warnings = json.loads((tmp_path / "fast" / f"{case}_volumes.json").read_text())["warnings"]
        assert any("is meant to run with --quality accurate" in w for w in warnings)
    code, _, stderr = _run(capsys, inputs / "caseA.nii.gz", "-o", tmp_path / "auto", "--model", recommending)
    assert code == 0 and "meant to run" not in stderr


def test_sharding_splits_cases(inputs, tmp_path, tiny_package, capsys):
    out = tmp_path / "out"
    assert _run(capsys, inputs, "-o", out, "--model", tiny_package, "--shard", "1/2")[0] == 0
    assert (out / "caseB_volumes.json").is_file() and not (out / "caseA_volumes.json").exists()
    assert (out / "status_shard1of2.csv").is_file()


def test_bf16_without_native_support_runs_in_float32_and_says_so(inputs, tmp_path, tiny_package, capsys, monkeypatch):
    import ichseg.infer

    monkeypatch.setattr(ichseg.infer, "cpu_bf16_supported", lambda: False)
    code, _, stderr = _run(capsys, inputs / "caseA.nii.gz", "-o", tmp_path / "o", "--model", tiny_package, "--bf16")
    assert code == 0 and stderr.count("no native bfloat16 on this CPU; float32") == 1


def test_wrong_checksum_refused(inputs, tmp_path, tiny_package, capsys):
    bad = tmp_path / "bad-model"
    shutil.copytree(tiny_package, bad)
    weights = next(bad.glob("weights*.pt"))
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, _, err = _run(capsys, inputs / "caseA.nii.gz", "-o", out, "--model", bad)
    assert code != 0
    assert "SHA-256" in err or "checksum" in err.lower()
    assert len(err.strip().splitlines()) <= 2
    assert not (out / "caseA_labels.nii.gz").exists()


def _bad_inputs():
    head = simple_head()
    arr = sitk.GetArrayFromImage(head)

    def like(a):
        img = sitk.GetImageFromArray(a)
        img.CopyInformation(head)
        return img

    mr = like(np.clip(arr.astype(np.float32) + 1000, 0, 1800).astype(np.int16))
    zeros = like(np.zeros_like(arr))
    windowed = like(np.clip((arr.astype(np.float32) + 15) * 255 / 115, 0, 255).astype(np.uint8))
    few = simple_head(size=(96, 96, 3))
    body = simple_head(spacing=(5.0, 5.0, 5.0), radii_mm=(200.0, 140.0, 75.0))  # 400 mm wide: not a head
    return {
        "mr": (mr, "air"),
        "zeros": (zeros, "constant"),
        "windowed": (windowed, "8-bit"),
        "few_slices": (few, "too few slices"),
        "body": (body, "not a head"),
    }


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_bad_input_one_line_error_nothing_written(name, tmp_path, tiny_package, capsys):
    img, expected = _bad_inputs()[name]
    path = _write(img, tmp_path / f"{name}.nii.gz")
    out = tmp_path / "out"
    code, _, err = _run(capsys, path, "-o", out, "--model", tiny_package)
    assert code != 0
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_2d_and_missing_inputs(tmp_path, tiny_package, capsys):
    flat = sitk.GetImageFromArray(np.zeros((64, 64), np.int16))
    path = _write(flat, tmp_path / "flat.nii.gz")
    code, _, err = _run(capsys, path, "-o", tmp_path / "o1", "--model", tiny_package)
    assert code != 0 and "2-D" in err
    code, _, err = _run(capsys, tmp_path / "missing.nii.gz", "-o", tmp_path / "o2", "--model", tiny_package)
    assert code != 0 and "not found" in err


def test_keep_extracranial_is_recorded_and_re_segments(inputs, tmp_path, tiny_package, capsys):
    out = tmp_path / "out"
    case = inputs / "caseA.nii.gz"
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast")
    assert json.loads((out / "caseA_volumes.json").read_text())["cranial_cavity"]["found"] is True
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast", "--keep-extracranial")
    assert _csv(out / "status.csv")[0]["status"] == "ok"  # another setting: segmented again
    record = json.loads((out / "caseA_volumes.json").read_text())
    assert record["cranial_cavity"] is None and "extracranial_components" not in record["postprocess_removed_voxels"]
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast", "--keep-extracranial")
    assert _csv(out / "status.csv")[0]["status"] == "skipped"


def test_overlap_is_recorded_and_another_re_segments(inputs, tmp_path, tiny_package, capsys):
    out = tmp_path / "out"
    case = inputs / "caseA.nii.gz"
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast")
    assert json.loads((out / "caseA_volumes.json").read_text())["overlap"] == 0.5  # the quality's
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast", "--overlap", "0.5")
    assert _csv(out / "status.csv")[0]["status"] == "skipped"  # the same setting, said explicitly
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast", "--overlap", "0.25")
    assert _csv(out / "status.csv")[0]["status"] == "ok"
    assert json.loads((out / "caseA_volumes.json").read_text())["overlap"] == 0.25


def test_mirroring_is_recorded_and_older_settings_are_redone(inputs, tmp_path, tiny_package, capsys):
    out = tmp_path / "out"
    case = inputs / "caseA.nii.gz"
    marker = out / "caseA_volumes.json"
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "accurate")
    record = json.loads(marker.read_text())
    assert record["mirror_axes"] == [2, 1] and record["overlap"] == 0.5 and record["class_mirror_axes"] == {}
    # a record of an older ichseg (no mirror_axes: accurate mirrored x and y) is the same setting
    del record["mirror_axes"]
    marker.write_text(json.dumps(record))
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "accurate")
    assert _csv(out / "status.csv")[0]["status"] == "skipped"
    # other mirroring (here: a card that asks for x only) is segmented again
    marker.write_text(json.dumps({**record, "mirror_axes": [2]}))
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "accurate")
    assert _csv(out / "status.csv")[0]["status"] == "ok"
    # ... and so is one without an overlap (fast mode's was 0.25)
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast")
    record = json.loads(marker.read_text())
    assert record["mirror_axes"] == []
    del record["overlap"], record["mirror_axes"]
    marker.write_text(json.dumps(record))
    _run(capsys, case, "-o", out, "--model", tiny_package, "--quality", "fast")
    assert _csv(out / "status.csv")[0]["status"] == "ok"


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "half"])
def test_a_bad_overlap_is_refused_before_anything_runs(inputs, tmp_path, tiny_package, capsys, bad):
    with pytest.raises(SystemExit) as exc:
        _run(capsys, inputs / "caseA.nii.gz", "-o", tmp_path / "out", "--model", tiny_package, "--overlap", bad)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--overlap" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
