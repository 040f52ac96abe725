"""The model card: everything needed to use and trace a model, as a dataclass ↔ JSON (``model.json``).

Inference reads the working spacing, normalisation, crop, classes, network architecture and
sliding-window settings from the card, never from constants.  Validation collects every problem
and raises one :class:`CardError` whose one-line message names the fields.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .. import __version__, labels
from ..errors import InputError

__all__ = [
    "SCHEMA_VERSION",
    "CardError",
    "WeightsFile",
    "ParentRef",
    "ModelCard",
    "default_classes",
    "bump_version",
    "test_metrics",
    "utc_now",
]

SCHEMA_VERSION = 1
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
WEIGHTS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.pt$")
#: Inference quality modes (the keys of ``ichseg.infer.QUALITY_SETTINGS``); a card may recommend one.
QUALITY_MODES = ("fast", "accurate")


def test_metrics(metrics: dict[str, Any] | None, quality: str) -> dict[str, Any] | None:
    """The held-out test summary measured in a quality mode, or None.

    ``metrics.test`` was measured in fast mode, ``metrics.test_<quality>`` in the others
    (``benchmarks/ship_model.py`` writes them).
    """
    value = (metrics or {}).get("test" if quality == "fast" else f"test_{quality}")
    return value if isinstance(value, dict) and isinstance(value.get("classes"), dict) else None


class CardError(InputError):
    """A model card (model.json) that cannot be used."""


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def default_classes() -> list[dict[str, Any]]:
    """The classes of :mod:`ichseg.labels` with their terminology, as stored in the card."""
    out = []
    for c in labels.CLASSES:
        term = {k: v.as_dict() for k, v in (("category", c.category), ("type", c.type), ("region", c.region)) if v}
        out.append(
            {
                "value": c.value,
                "key": c.key,
                "name": c.name,
                "description": c.description,
                "color": list(c.color),
                "terminology": term,
                "slicer_terminology": labels.slicer_terminology_string(c),
            }
        )
    return out


def bump_version(version: str, part: str = "minor") -> str:
    """Next semantic version: ``1.2.3`` → ``1.3.0`` (minor), ``2.0.0`` (major), ``1.2.4`` (patch)."""
    m = SEMVER.match(version)
    if not m:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch = (int(g) for g in m.groups())
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    if part == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise ValueError(f"version part must be major, minor or patch, got {part!r}")


def _axes_ok(axes: Any) -> bool:
    """A list of distinct (z, y, x) axes 0, 1, 2 (``inference.mirror_axes`` and its per-class form)."""
    return (
        isinstance(axes, list)
        and all(isinstance(a, int) and not isinstance(a, bool) and a in (0, 1, 2) for a in axes)
        and len(set(axes)) == len(axes)
    )


def inherited_inference(parent: ModelCard) -> dict[str, Any]:
    """A child's inference block (fine-tune or weight average): a copy of the parent's settings, each
    ``*_chosen_on`` record naming the model whose validation chose it (``model``: ``id@version``), so
    the child's card does not claim the parent's evidence as its own."""
    out = copy.deepcopy(dict(parent.inference))
    for key, record in out.items():
        if key.endswith("_chosen_on") and isinstance(record, dict):
            record.setdefault("model", f"{parent.id}@{parent.version}")  # the reference --model takes
    return out


def parse_class_mirror_axes(spec: Mapping[str, Any] | None) -> dict[int, tuple[int, ...]]:
    """A card's ``inference.class_mirror_axes`` (class keys, case-insensitive, → lists of axes, e.g.
    ``{"IVH": [2]}``) as {class value: axes}; ValueError when invalid.  The card check and inference
    both read it through here."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ValueError("inference.class_mirror_axes must map class keys to lists of axes")
    out: dict[int, tuple[int, ...]] = {}
    for key, axes in spec.items():
        try:
            value = labels.class_by_key(str(key)).value
        except KeyError:
            raise ValueError(f"inference.class_mirror_axes: unknown class {key!r}") from None
        if not _axes_ok(axes):
            raise ValueError(f"inference.class_mirror_axes[{key}] must be a list of distinct axes 0, 1, 2: {axes!r}")
        if value in out:
            raise ValueError(f"inference.class_mirror_axes: class {key!r} is given twice")
        out[value] = tuple(axes)
    return out


@dataclass
class WeightsFile:
    """One weights file of the package: a plain ``state_dict``; ``fold`` is its cross-validation fold."""

    file: str
    sha256: str
    fold: int | None = None
    size_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "fold": self.fold, "size_bytes": self.size_bytes}


@dataclass
class ParentRef:
    """The model a fine-tuned model started from."""

    id: str
    version: str
    sha256: str  # of the parent weights file the fine-tuning started from
    weights_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "sha256": self.sha256, "weights_file": self.weights_file}

    @classmethod
    def of(cls, card: ModelCard) -> ParentRef:
        """The reference to ``card``'s model (its first weights file) for a model derived from it."""
        first = card.weights[0]
        return cls(card.id, card.version, first.sha256, first.file)


@dataclass
class ModelCard:
    """Model card; see :meth:`to_dict` for the JSON layout."""

    id: str
    version: str
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]  # ichseg.preprocess.PreprocessConfig.to_dict(): spacing, normalisation, crop
    plan: dict[str, Any]
    training: dict[str, Any]  # needs "data" (summary), "loss", "steps"
    name: str = ""
    description: str = ""
    created: str = field(default_factory=utc_now)
    classes: list[dict[str, Any]] = field(default_factory=default_classes)
    inference: dict[str, Any] = field(default_factory=dict)  # patch_size_zyx, overlap, mode, quality, ...
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: ParentRef | None = None
    weights: list[WeightsFile] = field(default_factory=list)
    intended_use: str = "Research use only; not a medical device; not for clinical decisions."
    ichseg_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "parent":
                v = v.to_dict() if v else None
            elif f.name == "weights":
                v = [w.to_dict() for w in v]
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "model.json") -> ModelCard:
        """Parse and validate; raises :class:`CardError` listing every problem."""
        if not isinstance(d, Mapping):
            raise CardError(f"model card {source}: expected a JSON object, got {type(d).__name__}")
        problems: list[str] = []
        known = {f.name for f in fields(cls)}
        for key in ("id", "version", "architecture", "preprocessing", "plan", "training"):
            if key not in d:
                problems.append(f"missing field '{key}'")
        if problems:
            raise CardError(f"model card {source}: " + "; ".join(problems))
        kwargs = {k: v for k, v in d.items() if k in known}
        parent = d.get("parent")
        if parent is not None:
            if not isinstance(parent, Mapping) or not {"id", "version", "sha256"} <= set(parent):
                problems.append("'parent' must be an object with id, version and sha256")
                kwargs["parent"] = None
            else:
                kwargs["parent"] = ParentRef(
                    str(parent["id"]), str(parent["version"]), str(parent["sha256"]), parent.get("weights_file")
                )
        weights = d.get("weights", [])
        parsed: list[WeightsFile] = []
        if not isinstance(weights, list):
            problems.append("'weights' must be a list")
        else:
            for i, w in enumerate(weights):
                if not isinstance(w, Mapping) or "file" not in w or "sha256" not in w:
                    problems.append(f"weights[{i}] must be an object with 'file' and 'sha256'")
                    continue
                fold = w.get("fold")
                parsed.append(WeightsFile(str(w["file"]), str(w["sha256"]), fold, w.get("size_bytes")))
        kwargs["weights"] = parsed
        card = cls(**kwargs)
        problems += card.problems()
        if problems:
            raise CardError(f"model card {source}: " + "; ".join(problems))
        return card

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Every problem of this card (empty when valid)."""
        p: list[str] = []
        if self.schema_version != SCHEMA_VERSION:
            p.append(f"schema_version {self.schema_version!r} is not supported (this ichseg reads {SCHEMA_VERSION})")
        if not isinstance(self.id, str) or not MODEL_ID.match(self.id):
            p.append(f"'id' must be lower-case letters, digits, '.', '_' or '-' (max 64), got {self.id!r}")
        if not isinstance(self.version, str) or not SEMVER.match(self.version):
            p.append(f"'version' must be a semantic version like 1.2.0, got {self.version!r}")
        try:
            datetime.fromisoformat(str(self.created))
        except ValueError:
            p.append(f"'created' must be an ISO 8601 date-time, got {self.created!r}")
        p += self._class_problems()
        p += self._preprocessing_problems()
        if not isinstance(self.architecture, Mapping):
            p.append("'architecture' must be an object")
        else:
            out = self.architecture.get("out_channels")
            if out != labels.NUM_CLASSES:
                p.append(f"architecture.out_channels must be {labels.NUM_CLASSES} (background + classes), got {out!r}")
            try:
                from .network import _check

                _check(self.architecture)
            except ValueError as exc:
                p.append(str(exc))
        if not isinstance(self.plan, Mapping):
            p.append("'plan' must be an object")
        if not isinstance(self.training, Mapping):
            p.append("'training' must be an object")
        else:
            if not isinstance(self.training.get("data"), Mapping):
                p.append("training.data (a summary of the training data) is missing")
            if not isinstance(self.training.get("loss"), str):
                p.append("training.loss (the loss name) is missing")
            steps = self.training.get("steps")
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
                p.append(f"training.steps must be a non-negative integer, got {steps!r}")
        if not isinstance(self.metrics, Mapping):
            p.append("'metrics' must be an object")
        if not isinstance(self.inference, Mapping):
            p.append("'inference' must be an object")
        elif self.inference.get("quality", "fast") not in QUALITY_MODES:
            p.append(
                f"inference.quality (the recommended quality) must be one of {', '.join(QUALITY_MODES)}, "
                f"got {self.inference.get('quality')!r}"
            )
        if isinstance(self.inference, Mapping) and "mirror_axes" in self.inference:
            axes = self.inference["mirror_axes"]
            if not _axes_ok(axes):
                p.append(f"inference.mirror_axes must be a list of distinct axes 0 (z), 1 (y), 2 (x), got {axes!r}")
        if isinstance(self.inference, Mapping) and "class_mirror_axes" in self.inference:
            try:
                parse_class_mirror_axes(self.inference["class_mirror_axes"])
            except ValueError as exc:
                p.append(str(exc))
        if isinstance(self.inference, Mapping):
            from ..postprocess import parse_min_component_ml, parse_min_confidence

            rules = (("min_component_confidence", parse_min_confidence), ("min_component_ml", parse_min_component_ml))
            for name, parse in rules:
                if name in self.inference:
                    try:
                        parse(self.inference[name])
                    except (TypeError, ValueError) as exc:
                        p.append(str(exc))
        if self.parent is not None:
            if not MODEL_ID.match(self.parent.id):
                p.append(f"parent.id is not a valid model id: {self.parent.id!r}")
            if not SEMVER.match(self.parent.version):
                p.append(f"parent.version must be a semantic version, got {self.parent.version!r}")
            if not SHA256.match(self.parent.sha256):
                p.append("parent.sha256 must be 64 lower-case hex digits")
        names = set()
        for w in self.weights:
            if not WEIGHTS_NAME.match(w.file):
                p.append(f"weights file name {w.file!r} must be a plain file name ending in .pt")
            if w.file in names:
                p.append(f"weights file {w.file!r} is listed twice")
            names.add(w.file)
            if not SHA256.match(w.sha256):
                p.append(f"weights {w.file!r}: sha256 must be 64 lower-case hex digits")
            if w.fold is not None and (not isinstance(w.fold, int) or isinstance(w.fold, bool) or w.fold < 0):
                p.append(f"weights {w.file!r}: fold must be a non-negative integer or null, got {w.fold!r}")
        return p

    def _class_problems(self) -> list[str]:
        if not isinstance(self.classes, list) or not all(isinstance(c, Mapping) for c in self.classes):
            return ["'classes' must be a list of objects"]
        p = []
        by_value = {}
        for c in self.classes:
            try:
                by_value[int(c.get("value"))] = c
            except (TypeError, ValueError):
                p.append(f"class {c.get('key', c)!r} has no integer 'value'")
        for cls in labels.CLASSES:
            c = by_value.get(cls.value)
            if c is None:
                p.append(f"classes: value {cls.value} ({cls.key}) is missing")
            elif str(c.get("key", "")).lower() != cls.key.lower():
                p.append(
                    f"classes: value {cls.value} is {c.get('key')!r} in the card but {cls.key!r} in this "
                    "version's label scheme"
                )
        extra = sorted(set(by_value) - {c.value for c in labels.CLASSES})
        if extra:
            p.append(f"classes: values {extra} are not in the label scheme (1 ICH, 2 PHE, 3 IVH)")
        return p

    def _preprocessing_problems(self) -> list[str]:
        from ..preprocess import PreprocessConfig

        if not isinstance(self.preprocessing, Mapping):
            return ["'preprocessing' must be an object"]
        try:
            PreprocessConfig.from_dict(self.preprocessing)
        except (ValueError, TypeError) as exc:
            return [f"preprocessing: {exc}"]
        return []

    def validate(self, source: str = "model.json") -> ModelCard:
        problems = self.problems()
        if problems:
            raise CardError(f"model card {source}: " + "; ".join(problems))
        return self

    # ------------------------------------------------------------------ helpers
    def preprocess_config(self):
        """The :class:`ichseg.preprocess.PreprocessConfig` of this model."""
        from ..preprocess import PreprocessConfig

        return PreprocessConfig.from_dict(self.preprocessing)

    @property
    def folds(self) -> list[int | None]:
        return [w.fold for w in self.weights]

    @property
    def label(self) -> str:
        return f"{self.id} {self.version}"
