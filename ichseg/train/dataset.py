"""Find training cases and load them safely: nnU-Net raw datasets and folders of Slicer cases.

Formats
    * nnU-Net raw: ``imagesTr/<case>_0000<ending>``, ``labelsTr/<case><ending>`` and ``dataset.json``
      (``labels`` maps names to values; names are mapped to our classes by name, so a dataset with
      another value order is remapped, and an unknown name is refused).
    * A folder of Slicer cases: CT files (``.nrrd``, ``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``,
      ``.nhdr`` or a DICOM sub-folder) paired by file stem with ``<case>.seg.nrrd`` (segments mapped by
      terminology/name via :func:`ichseg.io.read_seg_nrrd`, never by order), or with a label map
      ``<case>_label.nii.gz`` in our values (as ``ichseg phantom`` writes); optional ``<case>.json``
      sidecar (``{"exclude": true}`` leaves the case out).

A case that cannot be used is reported and skipped, never fixed silently: a label on another grid
(a sub-box of the image grid, as Slicer may save, is placed exactly), unknown segments, label
values outside the scheme, or intensities that are not CT Hounsfield units.  Inputs are only read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .. import labels
from ..errors import InputError
from ..fileutil import full_suffix, stem

__all__ = [
    "IMAGE_SUFFIXES",
    "CaseRef",
    "Skipped",
    "Discovery",
    "LoadedCase",
    "CaseError",
    "discover",
    "discover_all",
    "discover_nnunet",
    "discover_slicer",
    "load_case",
    "ct_problem",
    "file_signature",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LABEL_ENDINGS = ("_label", "_labels", "_seg", "_mask")
MIN_MAX_HU = 200.0  # a head CT has bone (and blood) above this
UNMAPPED = 255
_CHANNEL = re.compile(r"_\d{4}$")


class CaseError(InputError):
    """A training case that cannot be used (the message is the reason, one line)."""


@dataclass(frozen=True)
class CaseRef:
    """Where a case's files are; ``lut`` maps stored label values to scheme values (255 = not allowed)."""

    name: str
    image: Path
    label: Path
    label_format: str  # "labelmap" or "seg.nrrd"
    dataset: str
    sidecar: Path | None = None
    lut: tuple[int, ...] | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.image, self.label, self.sidecar) if p is not None]


@dataclass
class Skipped:
    name: str
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"case": self.name, "path": self.path, "reason": self.reason}


@dataclass
class Discovery:
    cases: list[CaseRef] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)

    def extend(self, other: Discovery) -> None:
        self.cases += other.cases
        self.skipped += other.skipped
        self.messages += other.messages
        self.formats += other.formats


@dataclass
class LoadedCase:
    ref: CaseRef
    image: sitk.Image
    label: sitk.Image  # uint8, scheme values, on the image grid
    messages: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- discovery


def file_signature(path: Path) -> list[Any]:
    """Cheap identity of a file or folder (name, size, mtime) for cache keys."""
    if path.is_dir():
        return [str(path), sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir())]
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _is_nnunet(root: Path) -> bool:
    return (root / "dataset.json").is_file() or (root / "imagesTr").is_dir()


def discover(path: str | os.PathLike) -> Discovery:
    """Cases of one dataset folder (format detected)."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"training data folder not found: {root}")
    return discover_nnunet(root) if _is_nnunet(root) else discover_slicer(root)


def discover_all(paths: Iterable[str | os.PathLike]) -> Discovery:
    """Cases of several datasets; names made unique by prefixing the dataset folder name on clashes."""
    paths = list(paths)
    out = Discovery()
    for p in paths:
        out.extend(discover(p))
    seen: dict[str, int] = {}
    for c in out.cases:
        seen[c.name] = seen.get(c.name, 0) + 1
    if any(n > 1 for n in seen.values()):
        renamed = []
        for c in out.cases:
            if seen[c.name] > 1:
                c = CaseRef(f"{c.dataset}__{c.name}", c.image, c.label, c.label_format, c.dataset, c.sidecar, c.lut)
            renamed.append(c)
        out.cases = renamed
        out.messages.append("case names repeat across datasets: prefixed with the dataset folder name")
    if not out.cases:
        detail = f" ({len(out.skipped)} skipped: {out.skipped[0].reason} ...)" if out.skipped else ""
        raise InputError(f"no usable training cases found in {', '.join(str(p) for p in paths)}{detail}")
    return out


def _label_lut(label_names: dict[str, Any], source: Path) -> tuple[int, ...]:
    lut = [UNMAPPED] * 256
    for name, value in label_names.items():
        if isinstance(value, (list, tuple)):
            raise InputError(f"{source}: region-based label '{name}' is not supported (use one value per class)")
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise InputError(f"{source}: label '{name}' has a non-integer value {value!r}") from None
        if not 0 <= v <= 255:
            raise InputError(f"{source}: label '{name}' value {v} is outside 0..255")
        if name.strip().lower() in ("background", "bg", "0") or v == 0:
            if v != 0:
                raise InputError(f"{source}: background must have value 0, got {v}")
            lut[0] = 0
            continue
        cls = labels.match_segment(name)
        if cls is None:
            raise InputError(
                f"{source}: label '{name}' (value {v}) is not recognised as ICH, PHE or IVH; rename it in dataset.json"
            )
        lut[v] = cls.value
    lut[0] = 0
    return tuple(lut)


def discover_nnunet(root: Path) -> Discovery:
    """Cases of an nnU-Net raw dataset (single CT channel)."""
    out = Discovery(formats=["nnunet"])
    ending = ".nii.gz"
    lut: tuple[int, ...] | None = None
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{meta_file}: cannot read dataset.json: {exc}") from exc
        ending = str(meta.get("file_ending", ending))
        channels = meta.get("channel_names", meta.get("modality", {"0": "CT"}))
        if isinstance(channels, dict) and len(channels) != 1:
            raise InputError(f"{meta_file}: {len(channels)} input channels; a single CT channel is required")
        if isinstance(meta.get("labels"), dict):
            names = meta["labels"]
            # nnU-Net v1 stored {"0": "background", "1": "ICH"}; v2 stores {"background": 0, "ICH": 1}
            if all(str(k).isdigit() for k in names):
                names = {str(v): int(k) for k, v in names.items()}
            lut = _label_lut(names, meta_file)
    else:
        out.messages.append(f"{root}: no dataset.json; label values are taken as 0 bg, 1 ICH, 2 PHE, 3 IVH")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(f"{root}: nnU-Net dataset without an imagesTr folder")
    suffix0 = f"_0000{ending}"
    for img in sorted(images_dir.iterdir()):
        if not img.name.endswith(ending) or img.name.startswith("."):
            continue
        if not img.name.endswith(suffix0):
            if _CHANNEL.search(img.name[: -len(ending)]):
                out.skipped.append(Skipped(img.name, str(img), "extra input channel (only _0000 is used)"))
            continue
        name = img.name[: -len(suffix0)]
        lab = labels_dir / f"{name}{ending}"
        if not lab.is_file():
            out.skipped.append(Skipped(name, str(img), f"no label file labelsTr/{lab.name}"))
            continue
        out.cases.append(CaseRef(name, img, lab, "labelmap", root.name, None, lut))
    return out


#: File names of one case folder written by the Slicer module's "Save as training case".
CASE_FOLDER_CT = ("ct.nrrd", "ct.nii.gz", "ct.mha")
CASE_FOLDER_SEGMENTATION = "segmentation.seg.nrrd"
CASE_FOLDER_SIDECAR = "case.json"


def _case_folder(folder: Path) -> CaseRef | None:
    """A case saved by the Slicer module: ``<case>/ct.nrrd``, ``segmentation.seg.nrrd``, ``case.json``."""
    seg = folder / CASE_FOLDER_SEGMENTATION
    ct = next((folder / n for n in CASE_FOLDER_CT if (folder / n).is_file()), None)
    if ct is None or not seg.is_file():
        return None
    sidecar = folder / CASE_FOLDER_SIDECAR
    return CaseRef(folder.name, ct, seg, "seg.nrrd", folder.parent.name, sidecar if sidecar.is_file() else None)


def discover_slicer(root: Path) -> Discovery:
    """Cases of a folder: CT files paired by stem with ``.seg.nrrd`` (or ``_label``) files, and case folders."""
    out = Discovery(formats=["slicer"])
    images: dict[str, Path] = {}
    segs: dict[str, Path] = {}
    labelmaps: dict[str, Path] = {}
    sidecars: dict[str, Path] = {}
    folders: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            folders[p.name] = p
            continue
        suffix = full_suffix(p)
        s = stem(p)
        if suffix == ".seg.nrrd":
            segs[s] = p
        elif suffix == ".json":
            sidecars[s] = p
        elif suffix in IMAGE_SUFFIXES:
            base = next((s[: -len(e)] for e in LABEL_ENDINGS if s.lower().endswith(e)), None)
            if base is not None:
                labelmaps[base] = p
            else:
                images[s] = p
    for name, folder in list(folders.items()):
        case = _case_folder(folder)
        if case is not None:  # <case>/ct.nrrd + segmentation.seg.nrrd + case.json (Slicer's "Save as training case")
            out.cases.append(case)
            del folders[name]
    for name, folder in folders.items():  # a DICOM folder is a CT when a segmentation names it
        if name in segs and name not in images:
            images[name] = folder
    for name, img in sorted(images.items()):
        sidecar = sidecars.get(name)
        if sidecar is not None:
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                out.messages.append(f"{sidecar.name}: unreadable sidecar ignored ({exc})")
                meta, sidecar = {}, None
            if isinstance(meta, dict) and meta.get("exclude"):
                out.skipped.append(Skipped(name, str(img), "excluded by its .json sidecar"))
                continue
        if name in segs:
            out.cases.append(CaseRef(name, img, segs[name], "seg.nrrd", root.name, sidecar))
        elif name in labelmaps:
            out.cases.append(CaseRef(name, img, labelmaps[name], "labelmap", root.name, sidecar))
        else:
            out.skipped.append(Skipped(name, str(img), f"no segmentation {name}.seg.nrrd next to the CT"))
    for name, seg in sorted(segs.items()):
        if name not in images:
            out.skipped.append(Skipped(name, str(seg), "segmentation without a CT of the same name"))
    return out


# --------------------------------------------------------------------------- loading and checks


def ct_problem(image: sitk.Image) -> str | None:
    """Why ``image`` is not a head CT in HU (None when it is); rules of :func:`ichseg.checks.check_ct` plus max HU."""
    from ..checks import check_ct

    try:
        check_ct(image)
    except InputError as exc:
        return str(exc)
    hi = float(np.max(sitk.GetArrayViewFromImage(image)))
    if hi < MIN_MAX_HU:
        return f"maximum intensity {hi:g} < {MIN_MAX_HU:g}: no bone or blood, not a head CT in Hounsfield units"
    return None


def _grid_problem(label: sitk.Image, image: sitk.Image) -> str | None:
    from ..io._common import grid_mismatch

    return grid_mismatch(label, image)


def _on_sub_grid(label: sitk.Image, image: sitk.Image) -> bool:
    """True when the label's voxels are a sub-box of the image's voxels (same axes, integer offset, inside)."""
    if not np.allclose(label.GetSpacing(), image.GetSpacing(), rtol=1e-5):
        return False
    if not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-5):
        return False
    start = np.array(image.TransformPhysicalPointToContinuousIndex(label.GetOrigin()))
    if np.any(np.abs(start - np.round(start)) > 1e-3):
        return False
    start = np.round(start).astype(int)
    stop = start + np.array(label.GetSize())
    return bool(np.all(start >= 0) and np.all(stop <= np.array(image.GetSize())))


def _align(label: sitk.Image, image: sitk.Image, ref: CaseRef, messages: list[str]) -> sitk.Image:
    problem = _grid_problem(label, image)
    if problem is None:
        out = sitk.Cast(label, sitk.sitkUInt8) if label.GetPixelID() != sitk.sitkUInt8 else label
        out = sitk.Image(out)
        out.CopyInformation(image)
        return out
    if _on_sub_grid(label, image):
        messages.append("segmentation stored on a sub-box of the CT grid: placed on the full grid")
        return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    raise CaseError(f"label grid does not match the CT ({problem})")


def _read_labelmap(ref: CaseRef) -> sitk.Image:
    from ..io import read_image

    lab = read_image(ref.label)
    arr = sitk.GetArrayViewFromImage(lab)
    floating = np.issubdtype(arr.dtype, np.floating)
    if floating and (not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr))):
        raise CaseError("label map has non-integer values")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 255:
        raise CaseError(f"label values {lo}..{hi} are outside 0..255")
    values = np.asarray(arr, dtype=np.uint8)
    present = np.unique(values)
    if ref.lut is None:
        bad = [int(v) for v in present if v > labels.NUM_CLASSES - 1]
        if bad:
            raise CaseError(f"label values {bad} are not in the scheme (0 bg, 1 ICH, 2 PHE, 3 IVH)")
        mapped = values
    else:
        lut = np.asarray(ref.lut, dtype=np.uint8)
        bad = [int(v) for v in present if lut[v] == UNMAPPED]
        if bad:
            raise CaseError(f"label values {bad} are not listed in dataset.json")
        mapped = lut[values]
    out = sitk.GetImageFromArray(np.ascontiguousarray(mapped))
    out.CopyInformation(lab)
    return out


def load_case(ref: CaseRef) -> LoadedCase:
    """Read a case and check it; raises :class:`CaseError` (one line) when it must be skipped."""
    from ..io import read_image, read_seg_nrrd

    messages: list[str] = []
    try:
        image = read_image(ref.image)
    except InputError as exc:
        raise CaseError(f"CT cannot be read: {exc}") from exc
    problem = ct_problem(image)
    if problem:
        raise CaseError(f"not usable as a head CT: {problem}")
    try:
        if ref.label_format == "seg.nrrd":
            result = read_seg_nrrd(ref.label)
            if result.unknown:
                raise CaseError(
                    f"unknown segment(s) {', '.join(repr(u) for u in result.unknown)} in {ref.label.name}: "
                    "name them ICH, PHE or IVH (or delete them) in Slicer"
                )
            messages += result.messages
            label = result.label
        else:
            label = _read_labelmap(ref)
    except CaseError:
        raise
    except InputError as exc:
        raise CaseError(f"segmentation cannot be read: {exc}") from exc
    label = _align(label, image, ref, messages)
    meta: dict[str, Any] = {}
    if ref.sidecar is not None:
        try:
            loaded = json.loads(ref.sidecar.read_text(encoding="utf-8"))
            meta = loaded if isinstance(loaded, dict) else {"value": loaded}
        except (OSError, ValueError):
            messages.append("sidecar JSON unreadable; ignored")
    return LoadedCase(ref, image, label, messages, meta)


def summarize_refs(refs: Sequence[CaseRef]) -> dict[str, Any]:
    """Counts per dataset/format for the model card."""
    out: dict[str, Any] = {}
    for r in refs:
        key = f"{r.dataset} ({r.label_format})"
        out[key] = out.get(key, 0) + 1
    return out
