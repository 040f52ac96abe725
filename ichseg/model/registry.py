"""Where models live and which one is current.

* **Shipped models**: ``Resources/Models/registry.json`` lists the packages bundled with the
  extension (paths relative to ``Resources/Models``) and the default one.
* **User models**: fine-tuned versions are packages under the user model folder
  (``$ICHSEG_MODELS_DIR``, default ``~/.ichseg/models``), one sub-folder per version.
  ``current.json`` there names the current version (``ichseg models use`` / ``rollback``);
  without it the shipped default is current.

A model is named by a path to a package, by ``id@version``, by a bare ``version`` or by ``id``
(the newest version of that id).  Everything is local: nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..fileutil import write_json_atomic
from ..resources import resources_dir
from .card import ModelCard
from .package import MODEL_JSON

__all__ = [
    "ModelEntry",
    "user_models_dir",
    "list_models",
    "resolve_model",
    "current_model",
    "set_current",
    "version_key",
]


@dataclass(frozen=True)
class ModelEntry:
    id: str
    version: str
    path: Path
    source: str  # "shipped" or "user"
    card: ModelCard

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"


def user_models_dir() -> Path:
    return Path(os.environ.get("ICHSEG_MODELS_DIR") or Path.home() / ".ichseg" / "models")


def shipped_models_dir() -> Path:
    return resources_dir() / "Models"


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a semantic version ``MAJOR.MINOR.PATCH`` (pre-release parts ignored)."""
    core = version.split("-")[0].split("+")[0]
    try:
        return tuple(int(p) for p in core.split("."))
    except ValueError:
        return (0,)


def _read_card(package_dir: Path) -> ModelCard | None:
    try:
        data = json.loads((package_dir / MODEL_JSON).read_text(encoding="utf-8"))
        return ModelCard.from_dict(data, source=str(package_dir / MODEL_JSON))
    except (OSError, ValueError, InputError):
        return None


def _shipped() -> tuple[list[ModelEntry], str | None]:
    folder = shipped_models_dir()
    index = folder / "registry.json"
    if not index.is_file():
        return [], None
    data = json.loads(index.read_text(encoding="utf-8"))
    entries = []
    for item in data.get("models", []):
        path = folder / item["path"]
        card = _read_card(path)
        if card is not None:
            entries.append(ModelEntry(card.id, card.version, path, "shipped", card))
    return entries, data.get("default")


def _user() -> list[ModelEntry]:
    folder = user_models_dir()
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        card = _read_card(path)
        if card is not None:
            entries.append(ModelEntry(card.id, card.version, path, "user", card))
    return entries


def list_models() -> list[ModelEntry]:
    """All shipped and user models, oldest version first."""
    shipped, _ = _shipped()
    return sorted(shipped + _user(), key=lambda e: (e.id, version_key(e.version), e.source))


def _current_ref() -> str | None:
    path = user_models_dir() / "current.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError):
            return None
    return _shipped()[1]


def current_model() -> ModelEntry:
    """The current model: the user's choice if set, else the shipped default."""
    ref = _current_ref()
    if not ref:
        raise InputError("no model installed: the extension's Resources/Models has no registry.json")
    return resolve_model(ref)


def set_current(ref: str) -> ModelEntry:
    """Make a model current (written to the user model folder's current.json)."""
    entry = resolve_model(ref)
    write_json_atomic(user_models_dir() / "current.json", {"model": entry.ref})
    return entry


def resolve_model(spec: str | os.PathLike | None) -> ModelEntry:
    """A model by path, ``id@version``, version or id; None means the current model."""
    if spec is None or str(spec) in ("", "current", "default"):
        if spec == "default":
            ref = _shipped()[1]
            if not ref:
                raise InputError("no shipped default model")
            return resolve_model(ref)
        return current_model()
    text = str(spec)
    path = Path(text)
    if path.exists():
        if path.is_dir() and not (path / MODEL_JSON).is_file():
            raise InputError(f"not a model package (no {MODEL_JSON}): {path}")
        if path.is_file() and path.suffix.lower() != ".zip":
            raise InputError(f"not a model package (a folder or .zip): {path}")
        if path.is_dir():
            card = _read_card(path)
            if card is None:
                raise InputError(f"unreadable model card: {path / MODEL_JSON}")
            return ModelEntry(card.id, card.version, path, "path", card)
        from .package import load_package

        card = load_package(path, load_weights=False).card
        return ModelEntry(card.id, card.version, path, "path", card)
    models = list_models()
    if "@" in text:
        mid, ver = text.split("@", 1)
        hits = [e for e in models if e.id == mid and e.version == ver]
    else:
        hits = [e for e in models if e.version == text] or [e for e in models if e.id == text]
    if not hits:
        known = ", ".join(e.ref for e in models) or "none"
        raise InputError(f"unknown model {text!r} (installed: {known})")
    # prefer a user model over a shipped one of the same version, and the newest version
    return max(hits, key=lambda e: (version_key(e.version), e.source == "user"))
