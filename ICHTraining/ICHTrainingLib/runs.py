"""Training runs of the ICHTraining module: the command line, and what their progress lines say.

The module runs ``ichseg improve`` (fine-tune on the saved cases, compare with the current
model on held-out cases, promote or refuse) in a background process
(``ICHSegmentationLib.process.BackgroundProcess``).  Stop kills the process tree; the
fine-tuning checkpoints stay in the work folder, and *resume* starts the same command
with ``--resume`` so it continues from the last checkpoint to the same result.
No Slicer, no Qt: usable from the widget, from ``Slicer --no-main-window`` and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ICHSegmentationLib.process import ichseg_command

__all__ = ["ImproveRequest", "RunState", "default_work_dir", "improve_command"]


def default_work_dir(cases_dir: str | Path) -> Path:
    """Fine-tuning work folder of a cases folder (checkpoints for stop/resume), beside the cases."""
    cases = Path(cases_dir).resolve()
    return cases.parent / f".{cases.name}.ichseg-work"


@dataclass
class ImproveRequest:
    """What to run: ``ichseg improve CASES_DIR`` with these options."""

    cases_dir: Path
    model: str = "current"
    steps: int = 300
    device: str = "auto"
    tolerance: float = 0.02
    holdout: list[str] = field(default_factory=list)  # fractions ("0.2") and/or folders of held-out cases
    replay: list[Path] = field(default_factory=list)  # empty: the data recorded in the model card
    work_dir: Path | None = None  # default: default_work_dir(cases_dir)
    extra_args: list[str] = field(default_factory=list)

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else default_work_dir(self.cases_dir)

    def can_resume(self) -> bool:
        """A stopped run left a fine-tuning checkpoint to continue from."""
        return any(self.resolved_work_dir().glob("**/checkpoint.pt"))


def improve_command(request: ImproveRequest, *, resume: bool = False, python: str | None = None) -> list[str]:
    """The ``ichseg improve`` command line of ``request`` (``--resume`` continues a stopped run)."""
    if request.steps < 1:
        raise ValueError("steps must be at least 1")
    if not Path(request.cases_dir).is_dir():
        raise ValueError(f"cases folder not found: {request.cases_dir}")
    args = [str(request.cases_dir), "--model", request.model or "current", "--steps", str(request.steps)]
    args += ["--device", request.device, "--tolerance", str(request.tolerance)]
    args += ["--work-dir", str(request.resolved_work_dir())]
    for holdout in request.holdout:
        args += ["--holdout", str(holdout)]
    if request.replay:
        args += ["--replay", *map(str, request.replay)]
    args += list(request.extra_args)
    if resume:
        args.append("--resume")
    return ichseg_command("improve", *args, python=python)


@dataclass
class RunState:
    """The latest state of a run, updated from its progress records (for the panel and the log)."""

    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    dice: dict | None = None
    result: dict | None = None  # the final "done" record: decision, candidate, reasons, comparison

    def update(self, record: dict) -> None:
        self.stage = str(record.get("stage", self.stage))
        if record.get("fraction") is not None:
            self.fraction = float(record["fraction"])
        self.message = str(record.get("message", ""))
        for name in ("step", "steps", "loss", "eta_s"):
            if record.get(name) is not None:
                setattr(self, name, record[name])
        if isinstance(record.get("dice"), dict):
            self.dice = record["dice"]
        if self.stage == "done":
            self.result = record

    def status_text(self) -> str:
        """One line for a status label."""
        if self.result is not None:
            return self.message
        parts = [self.stage]
        if self.step is not None and self.steps:
            parts.append(f"step {self.step}/{self.steps}")
        if self.loss is not None:
            parts.append(f"loss {float(self.loss):.3f}")
        if self.eta_s is not None:
            minutes, seconds = divmod(int(self.eta_s), 60)
            parts.append(f"about {minutes} min {seconds:02d} s left")
        return ", ".join(parts)

    @property
    def promoted(self) -> bool | None:
        return None if self.result is None else bool(self.result.get("promoted"))
