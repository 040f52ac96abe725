"""Progress of the correction loop on one overall scale: the phases' spans and the fine-tuning's relayed events."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from ..progress import Progress, parse_progress_line

__all__ = ["SCAN_SPAN", "CACHE_SPAN", "TRAIN_SPAN", "EVAL_SPAN", "Relay", "span_reporter"]

# overall progress fractions of the phases
SCAN_SPAN = (0.0, 0.10)
CACHE_SPAN = (0.10, 0.18)
TRAIN_SPAN = (0.18, 0.80)
EVAL_SPAN = (0.80, 0.98)


class Relay(io.TextIOBase):
    """A stdout stand-in that re-emits the fine-tuning's JSON progress lines on the loop's overall scale."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.buffer_text = ""
        self.last = CACHE_SPAN[0]  # the overall fraction never goes back (new and replay cases are cached in turn)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer_text += text
        while "\n" in self.buffer_text:
            line, self.buffer_text = self.buffer_text.split("\n", 1)
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        event = parse_progress_line(line)
        if event is None:
            if line.strip():
                self.progress.info(line.strip())
            return
        stage = str(event.pop("stage"))
        fraction = event.pop("fraction", None)
        message = str(event.pop("message", ""))
        span = CACHE_SPAN if stage == "cache" else TRAIN_SPAN if stage in ("train", "validate") else None
        overall = None
        if fraction is not None and span is not None:
            overall = span[0] + (span[1] - span[0]) * float(fraction)
        if stage == "done":
            stage, overall = "finetuned", TRAIN_SPAN[1]
        if overall is not None:
            overall = self.last = max(self.last, overall)
        self.progress.emit(stage, overall, message, phase="finetune", stage_fraction=fraction, **event)


def span_reporter(
    progress: Progress, stage: str, span: tuple[float, float], verb: str
) -> Callable[[int, int, Any], None]:
    """A ``report(i, n, name)`` callback that emits ``stage`` events spread over ``span``."""

    def report(i: int, n: int, name: Any) -> None:
        name = getattr(name, "name", name)
        progress.emit(stage, span[0] + (span[1] - span[0]) * i / max(n, 1), f"{verb} {i}/{n}: {name}", case=name)

    return report
