"""One progress protocol for every long command: JSON lines on stdout.

Each line is a JSON object with at least ``stage`` (str), ``fraction`` (0..1 or null)
and ``message`` (str); commands may add fields (``step``, ``loss``, ``dice``, ``eta_s``,
``case`` ...).  The Slicer modules parse these lines in one place
(``parse_progress_line``).  On a terminal a human progress bar is shown instead, and
``quiet`` mode prints nothing but errors.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

Mode = Literal["json", "bar", "quiet"]
PREFIX = ""  # lines are bare JSON objects; kept as a constant so parsers agree


def default_mode(stream: TextIO | None = None) -> Mode:
    """JSON lines when stdout is not a terminal (a pipe to Slicer or a log), a bar otherwise."""
    stream = stream or sys.stdout
    return "bar" if getattr(stream, "isatty", lambda: False)() else "json"


@dataclass
class Progress:
    """Emit progress events in the chosen mode."""

    mode: Mode = "json"
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    _last_bar_len: int = 0
    _start: float = field(default_factory=time.monotonic)

    def emit(self, stage: str, fraction: float | None = None, message: str = "", **extra: Any) -> None:
        if fraction is not None:
            fraction = float(min(1.0, max(0.0, fraction)))
        if self.mode == "quiet":
            return
        if self.mode == "json":
            event = {"stage": stage, "fraction": fraction, "message": message, **extra}
            self.stream.write(json.dumps(event, default=_jsonable) + "\n")
            self.stream.flush()
            return
        self._bar(stage, fraction, message)

    def info(self, message: str) -> None:
        """A human message: a progress event without a fraction."""
        self.emit("info", None, message)

    def done(self, message: str = "done", **extra: Any) -> None:
        self.emit("done", 1.0, message, **extra)

    def _bar(self, stage: str, fraction: float | None, message: str) -> None:
        width = 30
        if fraction is None:
            line = f"{stage}: {message}"
            self._clear()
            self.stream.write(line + "\n")
        else:
            filled = int(round(fraction * width))
            elapsed = time.monotonic() - self._start
            line = (
                f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% {stage}: {message} ({elapsed:.0f}s)"
            )
            pad = max(0, self._last_bar_len - len(line))
            self.stream.write(line + " " * pad)
            self._last_bar_len = len(line)
            if fraction >= 1.0:
                self.stream.write("\n")
                self._last_bar_len = 0
        self.stream.flush()

    def _clear(self) -> None:
        if self._last_bar_len:
            self.stream.write("\r" + " " * self._last_bar_len + "\r")
            self._last_bar_len = 0


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """Parse one output line; return the event dict, or None if the line is not a progress event."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or "stage" not in event:
        return None
    return event
