"""ICHTraining's runs: the ``ichseg improve`` command line, its progress state, the headless script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "ICHSegmentation", ROOT / "ICHTraining"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from ICHSegmentationLib.process import BackgroundProcess, ichseg_environment  # noqa: E402
from ICHTrainingLib import runs  # noqa: E402

from ichseg.io import write_seg_nrrd  # noqa: E402
from ichseg.train.synthetic import blob_case  # noqa: E402

SCRIPT = ROOT / "ICHTraining" / "Resources" / "Scripts" / "ICHTrainingImprove.py"


def save_cases(folder: Path, n: int) -> Path:
    for i in range(n):
        image, label = blob_case(500 + i)
        case = folder / f"case{i}"
        case.mkdir(parents=True)
        sitk.WriteImage(image, str(case / "ct.nrrd"), True)
        write_seg_nrrd(sitk.GetArrayFromImage(label), image, case / "segmentation.seg.nrrd")
        (case / "case.json").write_text(json.dumps({"case": case.name, "saved": f"2026-11-23T10:0{i}:00+00:00"}))
    return folder


def test_improve_command_and_resume(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    request = runs.ImproveRequest(cases, steps=40, device="cpu", holdout=["0.3"], replay=[tmp_path / "orig"])
    args = runs.improve_command(request, python="python")
    assert args[:4] == ["python", "-m", "ichseg", "improve"] and args[4] == str(cases)
    assert args[args.index("--steps") + 1] == "40" and args[args.index("--holdout") + 1] == "0.3"
    assert args[args.index("--work-dir") + 1] == str(runs.default_work_dir(cases))
    assert args[-2:] == ["--progress", "json"] and "--resume" not in args
    assert "--resume" in runs.improve_command(request, resume=True, python="python")
    assert not request.can_resume()
    checkpoint = runs.default_work_dir(cases) / "fold_all" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert request.can_resume()
    with pytest.raises(ValueError, match="not found"):
        runs.improve_command(runs.ImproveRequest(tmp_path / "missing"))
    with pytest.raises(ValueError, match="steps"):
        runs.improve_command(runs.ImproveRequest(cases, steps=0))


def test_run_state_follows_progress_records():
    state = runs.RunState()
    state.update({"stage": "finetune", "fraction": 0.4, "message": "step 20/50", "step": 20, "steps": 50, "loss": 0.5})
    state.update({"stage": "finetune", "fraction": 0.5, "message": "", "eta_s": 125.0})
    assert state.status_text() == "finetune, step 20/50, loss 0.500, about 2 min 05 s left"
    assert state.promoted is None
    state.update({"stage": "done", "fraction": 1.0, "message": "promoted 1.1.0", "promoted": True})
    assert state.promoted is True and state.status_text() == "promoted 1.1.0"


def test_background_dry_run_and_headless_script(tmp_path, tiny_package, monkeypatch):
    monkeypatch.setenv("ICHSEG_MODELS_DIR", str(tmp_path / "user_models"))
    cases = save_cases(tmp_path / "cases", 3)
    request = runs.ImproveRequest(cases, model=str(tiny_package), extra_args=["--dry-run"])
    state = runs.RunState()
    outcome = (
        BackgroundProcess(
            runs.improve_command(request, python=sys.executable), on_progress=state.update, env=ichseg_environment()
        )
        .start()
        .wait(timeout=300)
    )
    assert outcome.ok, outcome.error_message()
    assert state.result is not None and state.fraction == 1.0

    script = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "no-cases"), "--model", str(tiny_package)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert script.returncode != 0 and "Traceback" not in script.stdout + script.stderr
    assert "ichseg improve: error:" in script.stdout and "no-cases" in script.stdout
