"""Atomic writes, file-name helpers and the JSON-lines progress protocol."""

import io
import json
import os
import stat

import pytest
from conftest import make_tiny_package

from ichseg.errors import OutputError
from ichseg.fileutil import (
    atomic_output,
    full_suffix,
    replace_folder,
    sha256_file,
    stem,
    write_json_atomic,
    write_text_atomic,
)
from ichseg.progress import Progress, parse_progress_line


def test_suffix_and_stem():
    assert full_suffix("a/b/case.nii.gz") == ".nii.gz"
    assert full_suffix("x.SEG.NRRD") == ".seg.nrrd"
    assert full_suffix("x.mha") == ".mha"
    assert stem("a/case_01.nii.gz") == "case_01"
    assert stem("case.seg.nrrd") == "case"


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_overwrite(tmp_path):
    target = tmp_path / "case.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(OutputError, match="refusing to overwrite"):
        write_json_atomic(target, {"a": 2}, overwrite=False)
    assert json.loads(target.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1
    assert len(sha256_file(target)) == 64


def test_replace_folder_swaps_a_complete_folder_in(tmp_path):
    target, new = tmp_path / "pkg", tmp_path / ".pkg.tmp"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    assert replace_folder(new, target) == target
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # neither the source nor the old copy is left


def test_replace_folder_puts_the_old_folder_back_when_the_rename_fails(tmp_path):
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError):
        replace_folder(tmp_path / "missing", target)
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_progress_json_lines_parse():
    buf = io.StringIO()
    p = Progress("json", buf)
    p.emit("load", 0.1, "reading", case="a")
    p.info("hello")
    p.done()
    events = [parse_progress_line(line) for line in buf.getvalue().splitlines()]
    assert [e["stage"] for e in events] == ["load", "info", "done"]
    assert events[0]["case"] == "a" and events[-1]["fraction"] == 1.0
    assert parse_progress_line("Traceback (most recent call last):") is None
    assert parse_progress_line('{"not": "progress"}') is None


def test_progress_quiet_and_bar():
    buf = io.StringIO()
    Progress("quiet", buf).emit("x", 0.5, "y")
    assert buf.getvalue() == ""
    Progress("bar", buf).emit("x", 1.0, "y")
    assert "100.0%" in buf.getvalue()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_outputs_are_as_readable_as_plainly_created_files(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = stat.S_IMODE(plain.stat().st_mode)
    written = write_text_atomic(tmp_path / "atomic.json", "{}")
    assert stat.S_IMODE(written.stat().st_mode) == expected  # not mkstemp's private 0o600
    folder = tmp_path / "plain_dir"
    folder.mkdir()
    package = make_tiny_package(tmp_path / "pkg")
    assert stat.S_IMODE(package.stat().st_mode) == stat.S_IMODE(folder.stat().st_mode)
    assert all(stat.S_IMODE(p.stat().st_mode) == expected for p in package.iterdir())
