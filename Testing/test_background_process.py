"""The background-process runner of the Slicer modules (no Slicer needed): output, completion, cancel."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "ICHSegmentation") not in sys.path:
    sys.path.insert(0, str(ROOT / "ICHSegmentation"))

from ICHSegmentationLib.process import (  # noqa: E402
    BackgroundProcess,
    ichseg_command,
    ichseg_environment,
    parse_progress_line,
)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_parse_progress_line():
    assert parse_progress_line('{"stage": "predict", "fraction": 0.5, "message": "x"}')["fraction"] == 0.5
    assert parse_progress_line("ichseg segment: error: no such file") is None
    assert parse_progress_line('{"no": "fraction"}') is None
    assert parse_progress_line("{broken json}") is None


def test_every_line_is_handed_over_before_completion_and_a_traceback_is_kept():
    events: list[tuple[str, object]] = []
    child = script(
        """
        import json, sys
        for i in range(200):
            print(json.dumps({"stage": "work", "fraction": i / 199, "message": f"step {i}"}))
        print("a plain log line")
        sys.stdout.flush()
        raise RuntimeError("boom at the very end")
        """
    )
    proc = BackgroundProcess(
        child,
        on_progress=lambda r: events.append(("progress", r["fraction"])),
        on_log=lambda line: events.append(("log", line)),
        on_finished=lambda o: events.append(("finished", o)),
    ).start()
    outcome = proc.wait(timeout=60)
    kinds = [k for k, _ in events]
    assert kinds.count("progress") == 200
    assert kinds[-1] == "finished" and kinds.count("finished") == 1
    assert events[199] == ("progress", 1.0)
    logs = [v for k, v in events if k == "log"]
    assert "a plain log line" in logs
    assert any("RuntimeError: boom at the very end" in line for line in logs)  # stderr merged, not lost
    assert not outcome.ok and outcome.returncode == 1 and not outcome.cancelled
    assert "boom at the very end" in outcome.error_message()
    assert proc.poll() is outcome and not proc.running  # reported once, stays reported


def test_error_line_of_ichseg_is_the_message(tmp_path):
    outcome = (
        BackgroundProcess(
            ichseg_command(
                "segment", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "out"), python=sys.executable
            ),
            env=ichseg_environment(),
        )
        .start()
        .wait(timeout=120)
    )
    assert outcome.returncode not in (0, None)
    first = outcome.error_message().splitlines()[0]
    assert first.startswith("ichseg segment: error:") and "missing.nii.gz" in first
    assert not (tmp_path / "out" / "missing_labels.nii.gz").exists()


def test_cancel_kills_the_whole_tree_within_a_second(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    child = script(
        f"""
        import json, subprocess, sys, time
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(g.pid))
        print(json.dumps({{"stage": "work", "fraction": 0.1, "message": "started"}}), flush=True)
        time.sleep(120)
        """
    )
    seen: list[dict] = []
    proc = BackgroundProcess(child, on_progress=seen.append).start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.02)
    assert seen, "the child never reported progress"
    grandchild = int(pid_file.read_text())
    parent = proc.pid
    t0 = time.monotonic()
    proc.cancel(timeout=1.0)
    outcome = proc.wait(timeout=5)
    assert time.monotonic() - t0 < 1.5
    assert outcome.cancelled and not outcome.ok
    assert outcome.error_message() == "Cancelled."
    for pid in (parent, grandchild):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_environment_imports_this_ichseg(tmp_path):
    out = BackgroundProcess(
        [sys.executable, "-c", "import ichseg, json; print(json.dumps({'fraction': 1.0, 'message': ichseg.__file__}))"],
        env=ichseg_environment({"PATH": "/usr/bin:/bin"}),
        cwd=tmp_path,
    )
    got: list[dict] = []
    out.on_progress = got.append
    assert out.start().wait(timeout=60).ok
    assert Path(got[0]["message"]).resolve().parent == (ROOT / "ichseg").resolve()


def test_start_twice_is_refused():
    proc = BackgroundProcess(script("print('x')")).start()
    with pytest.raises(RuntimeError):
        proc.start()
    assert proc.wait(timeout=30).ok
    json.dumps(proc.outcome.log_tail)
