"""Run an ``ichseg`` command in a background process and follow its JSON progress lines.

Slicer's GUI thread never waits on the work: a reader thread copies the child's output
(stdout and stderr merged, so a traceback is never lost) line by line into a queue, and
the GUI drains the queue from a ``QTimer`` by calling :meth:`BackgroundProcess.poll`.
``poll`` reports completion only once the output is drained *and* the process has exited.
:meth:`BackgroundProcess.cancel` kills the whole process tree (data-loader workers
included) with psutil.

No ``slicer``, ``qt`` or ``vtk`` here: the same class runs in Slicer, under
``Slicer --no-main-window`` (call :meth:`BackgroundProcess.wait`) and in the tests.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "QUALITIES",
    "BackgroundProcess",
    "ProcessOutcome",
    "ichseg_command",
    "ichseg_environment",
    "parse_progress_line",
    "python_executable",
]

#: ``ichseg segment --quality`` choices; auto (the default) is what the model card recommends.
QUALITIES = ("auto", "fast", "accurate")
#: Lines of output kept for the error message of a failed run.
LOG_TAIL_LINES = 40
_EOF = object()


def python_executable() -> str:
    """Python interpreter for the child: Slicer's ``PythonSlicer`` when this is Slicer, else this one."""
    executable = Path(sys.executable)
    # In Slicer sys.executable is the application; PythonSlicer sits next to it (bin/).
    if executable.stem.lower().startswith("slicer"):
        for candidate in (executable.with_name("PythonSlicer"), executable.with_name("PythonSlicer.exe")):
            if candidate.is_file():
                return str(candidate)
    return sys.executable


def ichseg_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment in which ``python -m ichseg`` imports *this* ``ichseg`` (bundled with the extension)."""
    import ichseg

    env = dict(os.environ if base is None else base)
    package_parent = str(Path(ichseg.__file__).resolve().parent.parent)
    paths = [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_parent]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"  # progress lines as they happen, not when a buffer fills
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def ichseg_command(subcommand: str, *args: str, python: str | None = None) -> list[str]:
    """``[python, -m, ichseg, subcommand, *args, --progress, json]``."""
    return [python or python_executable(), "-m", "ichseg", subcommand, *args, "--progress", "json"]


def parse_progress_line(line: str) -> dict | None:
    """The progress record of a JSON line (``{"stage", "fraction", "message", ...}``), else ``None``."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or "fraction" not in record:
        return None
    return record


@dataclass(frozen=True)
class ProcessOutcome:
    """How a background run ended."""

    returncode: int | None
    cancelled: bool
    log_tail: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.cancelled and self.returncode == 0

    def error_message(self) -> str:
        """One paragraph for the user: the error line and the last lines of the log."""
        if self.cancelled:
            return "Cancelled."
        errors = [line for line in self.log_tail if _is_error_line(line)]
        head = errors[-1] if errors else f"The process failed (exit code {self.returncode})."
        tail = "\n".join(self.log_tail[-12:])
        return f"{head}\n\nLast lines of the log:\n{tail}" if tail else head


class BackgroundProcess:
    """One child process whose output is read by a thread and handed over by :meth:`poll`.

    ``on_progress(record)`` gets each JSON progress record, ``on_log(line)`` every other
    line, ``on_finished(outcome)`` is called exactly once, from :meth:`poll`, after the
    last line was handed over.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        on_progress: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_finished: Callable[[ProcessOutcome], None] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_finished = on_finished
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._cancelled = False
        self._outcome: ProcessOutcome | None = None
        self._started = 0.0

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        """Started and not yet reported finished."""
        return self._popen is not None and self._outcome is None

    @property
    def outcome(self) -> ProcessOutcome | None:
        return self._outcome

    # ------------------------------------------------------------------ control
    def start(self) -> BackgroundProcess:
        if self._popen is not None:
            raise RuntimeError("the process was already started")
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: signals to Slicer do not reach it
        self._started = time.monotonic()
        self._popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, name="ichseg-output-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._popen is not None and self._popen.stdout is not None
        try:
            for line in self._popen.stdout:
                self._queue.put(line.rstrip("\r\n"))
        finally:
            self._queue.put(_EOF)

    def cancel(self, timeout: float = 1.0) -> None:
        """Kill the process and all its descendants (terminate, then kill after ``timeout`` s)."""
        if self._popen is None or self._outcome is not None:
            return
        self._cancelled = True
        kill_tree(self._popen.pid, timeout=timeout)

    def poll(self) -> ProcessOutcome | None:
        """Hand over the lines read so far; report and return the outcome once everything is in."""
        if self._popen is None or self._outcome is not None:
            return self._outcome
        reached_end = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _EOF:
                reached_end = True
                break
            self._handle(item)
        if reached_end:
            returncode = self._popen.wait()
            self._outcome = ProcessOutcome(
                returncode=returncode,
                cancelled=self._cancelled,
                log_tail=tuple(self._tail),
                seconds=time.monotonic() - self._started,
            )
            if self.on_finished is not None:
                self.on_finished(self._outcome)
        return self._outcome

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> ProcessOutcome:
        """Block (no GUI) until finished, handing lines over as they come; cancel after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            outcome = self.poll()
            if outcome is not None:
                return outcome
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
            time.sleep(interval)

    def _handle(self, line: str) -> None:
        record = parse_progress_line(line)
        if record is not None:
            if record.get("message"):
                self._tail.append(str(record["message"]))
            if self.on_progress is not None:
                self.on_progress(record)
            return
        self._tail.append(line)
        if self.on_log is not None:
            self.on_log(line)


def _is_error_line(line: str) -> bool:
    low = line.lower()
    return ": error:" in low or ": internal error:" in low or low.startswith(("error", "fatal"))


def kill_tree(pid: int, timeout: float = 1.0) -> None:
    """Terminate ``pid`` and its descendants; kill whatever is still alive after ``timeout`` s."""
    import psutil  # a first-run dependency in Slicer: imported when needed, not when the module loads

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        processes = [root]
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout / 2)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout / 2)
