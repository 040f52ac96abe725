"""A versioned model package: a folder (or .zip) with ``model.json`` and ``weights*.pt``.

Each weights file is a plain ``state_dict`` (tensors only), loaded with
``torch.load(weights_only=True)`` and never unpickled otherwise.  Its SHA-256 is recorded in
the card and checked at load: a mismatch is refused with an :class:`InputError` naming the
file.  A k-fold package holds one weights file per fold, used as an ensemble.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError, OutputError
from ..fileutil import make_readable, replace_folder, write_json_atomic
from .card import ModelCard, WeightsFile
from .network import build_network

__all__ = [
    "MODEL_JSON",
    "ModelPackage",
    "save_package",
    "load_package",
    "zip_package",
    "clean_state_dict",
    "weights_file_name",
]

MODEL_JSON = "model.json"
MAX_CARD_BYTES = 4 << 20


def weights_file_name(fold: int | None, n_files: int) -> str:
    return "weights.pt" if fold is None and n_files == 1 else f"weights_fold{0 if fold is None else fold}.pt"


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of the tensors, without DistributedDataParallel's ``module.`` prefix.

    Names that share one tensor (a DynUNet registers each decoder block twice, under ``skip_layers``
    too) share its copy, so the saved file holds the weights once."""
    out: dict[str, torch.Tensor] = {}
    copies: dict[tuple, torch.Tensor] = {}
    for k, v in state.items():
        key = k[len("module.") :] if k.startswith("module.") else k
        same = (v.device, v.data_ptr(), v.dtype, tuple(v.shape), v.stride())
        if same not in copies or v.numel() == 0:
            copies[same] = v.detach().to("cpu", copy=True).contiguous()
        out[key] = copies[same]
    return out


def _load_state_bytes(data: bytes, name: str, source: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        reason = " ".join(str(exc).split())[:160]
        raise InputError(
            f"model package {source}: weights file {name} cannot be loaded as a state_dict: {reason}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputError(f"model package {source}: weights file {name} is not a plain state_dict of tensors")
    return dict(state)


@dataclass
class ModelPackage:
    """A loaded package: its card and (when loaded) verified state dicts, one per weights file."""

    card: ModelCard
    source: Path
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def weights(self) -> list[WeightsFile]:
        return self.card.weights

    def build_networks(self, device: str | torch.device = "cpu", *, eval_mode: bool = True) -> list[torch.nn.Module]:
        """One network per weights file (an ensemble for k-fold packages), weights loaded strictly."""
        if not self.states:
            raise InputError(f"model package {self.source}: weights were not loaded")
        nets = []
        for w, state in zip(self.card.weights, self.states, strict=True):
            net = build_network(self.card.architecture)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = " ".join(str(exc).split())[:200]
                raise InputError(
                    f"model package {self.source}: weights file {w.file} does not fit the architecture in "
                    f"{MODEL_JSON}: {first}"
                ) from exc
            net.to(device)
            if eval_mode:
                net.eval()
            nets.append(net)
        return nets


def save_package(
    out_dir: str | os.PathLike,
    card: ModelCard,
    weights: Sequence[tuple[int | None, Mapping[str, torch.Tensor]]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/model.json`` and one ``weights*.pt`` per (fold, state_dict); fills ``card.weights``.

    The package is written into a temporary sibling folder and renamed into place, so a reader
    never sees a half-written package.  Raises OutputError if ``out_dir`` exists and not ``overwrite``.
    """
    target = Path(out_dir)
    if not weights:
        raise ValueError("a model package needs at least one weights file")
    if target.exists() and not overwrite:
        raise OutputError(f"refusing to overwrite existing model package: {target}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot create model package folder {target}: {exc.strerror}") from exc
    try:
        entries = []
        for fold, state in weights:
            name = weights_file_name(fold, len(weights))
            buf = io.BytesIO()
            torch.save(clean_state_dict(state), buf)
            data = buf.getvalue()
            (tmp / name).write_bytes(data)
            entries.append(WeightsFile(name, hashlib.sha256(data).hexdigest(), fold, len(data)))
        card.weights = entries
        card.validate(str(target / MODEL_JSON))
        write_json_atomic(tmp / MODEL_JSON, card.to_dict())
        for path in (tmp, *tmp.iterdir()):
            make_readable(path)
        replace_folder(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write model package {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class _Reader:
    """Read files of a package folder or zip (where model.json may sit in one top-level folder)."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if path.is_dir():
            return
        if not path.is_file():
            raise InputError(f"model package not found: {path}")
        if not zipfile.is_zipfile(path):
            raise InputError(f"model package {path}: not a folder or a .zip file")
        self.zip = zipfile.ZipFile(path)
        names = [n for n in self.zip.namelist() if n.rsplit("/", 1)[-1] == MODEL_JSON]
        if not names:
            raise InputError(f"model package {path}: the zip holds no {MODEL_JSON}")
        best = min(names, key=lambda n: n.count("/"))
        self.prefix = best[: -len(MODEL_JSON)]

    def read(self, name: str, limit: int | None = None) -> bytes:
        if self.zip is None:
            f = self.path / name
            if not f.is_file():
                raise InputError(f"model package {self.path}: {name} is missing")
            if limit is not None and f.stat().st_size > limit:
                raise InputError(f"model package {self.path}: {name} is too large")
            return f.read_bytes()
        try:
            info = self.zip.getinfo(self.prefix + name)
        except KeyError:
            raise InputError(f"model package {self.path}: {name} is missing from the zip") from None
        if limit is not None and info.file_size > limit:
            raise InputError(f"model package {self.path}: {name} is too large")
        return self.zip.read(info)

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def load_package(path: str | os.PathLike, *, load_weights: bool = True) -> ModelPackage:
    """Load and validate a package folder or .zip; with ``load_weights`` verify and load every weights file."""
    p = Path(path)
    reader = _Reader(p)
    try:
        raw = reader.read(MODEL_JSON, limit=MAX_CARD_BYTES)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"model package {p}: {MODEL_JSON} is not valid JSON: {exc}") from exc
        card = ModelCard.from_dict(data, source=str(p / MODEL_JSON) if p.is_dir() else f"{p}:{MODEL_JSON}")
        if not card.weights:
            raise InputError(f"model package {p}: {MODEL_JSON} lists no weights files")
        pkg = ModelPackage(card, p)
        if load_weights:
            for w in card.weights:
                blob = reader.read(w.file)
                digest = hashlib.sha256(blob).hexdigest()
                if digest != w.sha256:
                    raise InputError(
                        f"model package {p}: weights file {w.file} fails its SHA-256 check "
                        f"(expected {w.sha256[:12]}…, got {digest[:12]}…): the file is corrupt or was modified"
                    )
                pkg.states.append(_load_state_bytes(blob, w.file, str(p)))
        return pkg
    finally:
        reader.close()


def zip_package(package_dir: str | os.PathLike, zip_path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Zip a package folder (model.json + weights files only), written atomically."""
    src = Path(package_dir)
    pkg = load_package(src, load_weights=False)
    target = Path(zip_path)
    if target.exists() and not overwrite:
        raise OutputError(f"refusing to overwrite existing file: {target}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_STORED) as z:
            z.write(src / MODEL_JSON, MODEL_JSON)
            for w in pkg.card.weights:
                z.write(src / w.file, w.file)
        make_readable(tmp_name)
        os.replace(tmp_name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return target
