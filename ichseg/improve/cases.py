"""Scan a folder of corrected training cases: check every case, hash it, find duplicates, split off a held-out set.

Nothing in the scanned folders is ever written, moved or deleted.  Each case gets a
:class:`CaseRecord` with a status:

* ``train`` -- used for fine-tuning;
* ``holdout`` -- set aside to evaluate the current and the new model (never trained on);
* ``duplicate`` -- the same CT (SHA-256 of its voxels and geometry) as another case; the newest
  saved correction is used, the others are reported (``conflict`` when their segmentations differ);
* ``overlap`` -- a case of the folder whose CT is also in a held-out folder: left out of training
  so that the evaluation stays fair;
* ``excluded`` -- left out by the user (``"exclude": true`` in its sidecar);
* ``quarantined`` -- cannot be used (corrupt file, segmentation on another grid, unknown segments,
  incomplete case folder ...), with the reason; :func:`ichseg.improve.quarantine.write_quarantine`
  copies its files into a quarantine folder and writes ``quarantine.json``.

The held-out split is stable: a case is held out when a number drawn from the SHA-256 of its CT
is below the fraction, so a case keeps its role as the folder grows and a case once held out is
never trained on later (at least one case is held out when the fraction is positive).  A case
whose sidecar says ``"holdout": true`` is always held out, ``"holdout": false`` never.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .. import labels
from ..errors import InputError
from ..fileutil import sha256_file
from ..train.dataset import (
    CASE_FOLDER_CT,
    CASE_FOLDER_SEGMENTATION,
    CASE_FOLDER_SIDECAR,
    CaseError,
    CaseRef,
    discover,
    load_case,
)

__all__ = [
    "CaseRecord",
    "FolderScan",
    "CaseSelection",
    "scan_folder",
    "select_cases",
    "image_content_sha256",
    "path_sha256",
    "holdout_key",
]

ReportFn = Callable[[int, int, "CaseRecord"], None]

#: Reasons of :class:`CaseError` (ichseg.train.dataset) by their start, as quarantine kinds.
_KINDS = (
    ("CT cannot be read", "corrupt"),
    ("segmentation cannot be read", "corrupt"),
    ("not usable as a head CT", "not_ct"),
    ("unknown segment", "unknown_segments"),
    ("label grid does not match", "mismatch"),
    ("label values", "bad_labels"),
    ("label map has non-integer", "bad_labels"),
)


@dataclass
class CaseRecord:
    """One case found in a folder, its hashes and what the loop does with it."""

    name: str
    source: str  # the scanned folder
    path: str  # the case folder, or the CT file of a flat pair
    status: str  # train, holdout, duplicate, overlap, excluded, quarantined
    files: dict[str, str] = field(default_factory=dict)  # role -> path (ct, segmentation, sidecar)
    reason: str | None = None
    kind: str | None = None  # quarantine kind
    ct_sha256: str | None = None  # the CT file's bytes (a DICOM folder: its files)
    ct_content_sha256: str | None = None  # voxel values + grid: the same CT however it was stored
    segmentation_sha256: str | None = None
    label_content_sha256: str | None = None
    sidecar_sha256: str | None = None
    saved: str | None = None  # when the correction was saved (case.json "saved", else the file time)
    volumes_ml: dict[str, float] = field(default_factory=dict)
    spacing: list[float] | None = None
    size: list[int] | None = None
    duplicate_of: str | None = None
    conflict: bool = False
    messages: list[str] = field(default_factory=list)
    holdout_flag: bool | None = None  # the sidecar's "holdout", when it has one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def provenance(self) -> dict[str, Any]:
        """What a model card keeps of a training or held-out case."""
        return {
            "case": self.name,
            "ct_sha256": self.ct_sha256,
            "ct_content_sha256": self.ct_content_sha256,
            "segmentation_sha256": self.segmentation_sha256,
            "saved": self.saved,
            "volumes_ml": self.volumes_ml,
        }


@dataclass
class FolderScan:
    """The cases of one folder: records (every case, usable or not) and the refs of the usable ones."""

    root: Path
    format: str
    records: list[CaseRecord] = field(default_factory=list)
    refs: dict[str, CaseRef] = field(default_factory=dict)  # name -> ref, usable cases only
    extra_files: list[Path] = field(default_factory=list)  # e.g. the nnU-Net dataset.json
    messages: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- hashing


def path_sha256(path: Path) -> str:
    """SHA-256 of a file; of a folder (a DICOM series): of its files' relative names and hashes."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def image_content_sha256(image: sitk.Image) -> str:
    """SHA-256 of an image's grid (size, spacing, origin, direction) and voxel values (as float32).

    The same CT saved as int16 NRRD or float NIfTI, compressed or not, hashes the same.
    """
    grid = {
        "size": list(image.GetSize()),
        "spacing": [round(float(v), 5) for v in image.GetSpacing()],
        "origin": [round(float(v), 3) for v in image.GetOrigin()],
        "direction": [round(float(v), 5) + 0.0 for v in image.GetDirection()],
    }
    h = hashlib.sha256(json.dumps(grid, sort_keys=True).encode())
    arr = sitk.GetArrayViewFromImage(image)
    for k in range(arr.shape[0]):  # slab by slab: no float32 copy of the whole volume
        h.update(np.ascontiguousarray(arr[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def _label_sha256(label: sitk.Image) -> str:
    return hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(label), dtype=np.uint8).tobytes()).hexdigest()


def holdout_key(ct_content_sha256: str) -> float:
    """A number in [0, 1) drawn from the CT's hash: the case is held out when it is below the fraction."""
    digest = hashlib.sha256(f"ichseg-holdout:{ct_content_sha256}".encode()).hexdigest()
    return int(digest[:13], 16) / float(16**13)


# --------------------------------------------------------------------------- scanning


def _kind(reason: str) -> str:
    for start, kind in _KINDS:
        if reason.startswith(start):
            return kind
    return "invalid"


def _mtime_iso(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0).isoformat()
    except OSError:
        return None


def _case_path(ref: CaseRef) -> Path:
    """The case folder of a Slicer case (``<case>/ct.nrrd``), else the CT path."""
    parent = ref.image.parent
    if ref.image.name in CASE_FOLDER_CT and ref.label.parent == parent and parent.name == ref.name:
        return parent
    return ref.image


def _sidecar_problem(meta: dict[str, Any], image: sitk.Image) -> str | None:
    """A case.json written by Slicer records the CT grid: a different grid means the CT was replaced."""
    geometry = meta.get("geometry")
    if not isinstance(geometry, dict):
        return None
    size = geometry.get("size")
    if isinstance(size, list) and len(size) == 3 and [int(v) for v in size] != list(image.GetSize()):
        return f"case.json records a CT of {size} voxels but the CT file has {list(image.GetSize())}"
    spacing = geometry.get("spacing")
    if isinstance(spacing, list) and len(spacing) == 3:
        try:
            ok = np.allclose([float(v) for v in spacing], image.GetSpacing(), rtol=1e-4, atol=1e-5)
        except (TypeError, ValueError):
            return None
        if not ok:
            return f"case.json records spacing {spacing} but the CT file has {list(image.GetSpacing())}"
    return None


def _incomplete_folders(root: Path, refs: Sequence[CaseRef]) -> list[tuple[Path, str]]:
    """Sub-folders that are not part of any case: an incomplete Slicer case (or something else)."""
    used = set()
    for r in refs:
        for p in r.files():
            used.add(p)
            used.update(p.parents)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub in used:
            continue
        has_ct = any((sub / n).is_file() for n in CASE_FOLDER_CT)
        has_seg = (sub / CASE_FOLDER_SEGMENTATION).is_file()
        if has_ct or has_seg or (sub / CASE_FOLDER_SIDECAR).is_file():
            missing = [n for n, ok in ((CASE_FOLDER_CT[0], has_ct), (CASE_FOLDER_SEGMENTATION, has_seg)) if not ok]
            out.append((sub, f"incomplete case folder: missing {', '.join(missing)}"))
        else:
            out.append((sub, f"not a training case: no {CASE_FOLDER_CT[0]} and {CASE_FOLDER_SEGMENTATION}"))
    return out


def _check_case(ref: CaseRef, record: CaseRecord) -> None:
    """Load and check one case, filling in its hashes; marks the record quarantined when it cannot be used."""
    record.files = {"ct": str(ref.image), "segmentation": str(ref.label)}
    if ref.sidecar is not None:
        record.files["sidecar"] = str(ref.sidecar)
    meta: dict[str, Any] = {}
    if ref.sidecar is not None:
        try:
            loaded = json.loads(ref.sidecar.read_text(encoding="utf-8"))
            meta = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            record.messages.append("sidecar JSON unreadable; ignored")
    if meta.get("exclude") is True:
        record.status, record.reason = "excluded", f"excluded by its {ref.sidecar.name if ref.sidecar else 'sidecar'}"
        return
    try:
        case = load_case(ref)
    except CaseError as exc:
        record.status, record.reason, record.kind = "quarantined", str(exc), _kind(str(exc))
    else:
        problem = _sidecar_problem(meta, case.image)
        if problem:
            record.status, record.reason, record.kind = "quarantined", problem, "mismatch"
        else:
            record.messages += case.messages
            record.ct_content_sha256 = image_content_sha256(case.image)
            record.label_content_sha256 = _label_sha256(case.label)
            lab = sitk.GetArrayViewFromImage(case.label)
            voxel_ml = float(np.prod(case.image.GetSpacing())) / 1000.0
            record.volumes_ml = {
                c.key: round(int(np.count_nonzero(lab == c.value)) * voxel_ml, 3) for c in labels.CLASSES
            }
            record.spacing = [float(v) for v in case.image.GetSpacing()]
            record.size = [int(v) for v in case.image.GetSize()]
    try:  # file hashes for the record, also of a quarantined case (what exactly was refused)
        record.ct_sha256 = path_sha256(ref.image)
        record.segmentation_sha256 = path_sha256(ref.label)
        if ref.sidecar is not None:
            record.sidecar_sha256 = path_sha256(ref.sidecar)
    except OSError as exc:
        if record.status != "quarantined":
            record.status, record.reason, record.kind = "quarantined", f"cannot be read: {exc}", "corrupt"
    saved = meta.get("saved")
    record.saved = saved if isinstance(saved, str) else _mtime_iso(ref.label)
    if isinstance(meta.get("holdout"), bool):
        record.holdout_flag = meta["holdout"]


def scan_folder(root: str | os.PathLike, *, report: ReportFn | None = None) -> FolderScan:
    """Find and check every case of a folder (Slicer case folders, CT + .seg.nrrd pairs or nnU-Net raw)."""
    folder = Path(root)
    if not folder.is_dir():
        raise InputError(f"cases folder not found: {folder}")
    disc = discover(folder)
    scan = FolderScan(folder, disc.formats[0] if disc.formats else "slicer", messages=list(disc.messages))
    if scan.format == "nnunet" and (folder / "dataset.json").is_file():
        scan.extra_files.append(folder / "dataset.json")
    for s in disc.skipped:
        excluded = "excluded by" in s.reason
        scan.records.append(
            CaseRecord(
                s.name,
                str(folder),
                s.path,
                "excluded" if excluded else "quarantined",
                files={"file": s.path},
                reason=s.reason,
                kind=None if excluded else "incomplete",
            )
        )
    if scan.format != "nnunet":
        for sub, reason in _incomplete_folders(folder, disc.cases):
            files = {n: str(sub / n) for n in (*CASE_FOLDER_CT, CASE_FOLDER_SEGMENTATION, CASE_FOLDER_SIDECAR)}
            files = {k: v for k, v in files.items() if Path(v).is_file()}
            scan.records.append(CaseRecord(sub.name, str(folder), str(sub), "quarantined", files, reason, "incomplete"))
    n = len(disc.cases)
    for i, ref in enumerate(disc.cases):
        record = CaseRecord(ref.name, str(folder), str(_case_path(ref)), "ok")
        _check_case(ref, record)
        scan.records.append(record)
        if record.status == "ok":
            scan.refs[ref.name] = ref
        if report is not None:
            report(i + 1, n, record)
    scan.records.sort(key=lambda r: r.name)
    return scan


# --------------------------------------------------------------------------- selection


@dataclass
class CaseSelection:
    """The scanned folders with every record's final status."""

    cases: FolderScan
    holdouts: list[FolderScan]
    fraction: float

    def records(self, status: str | None = None, *, include_holdout_dirs: bool = True) -> list[CaseRecord]:
        scans = [self.cases, *(self.holdouts if include_holdout_dirs else [])]
        out = [r for s in scans for r in s.records]
        return [r for r in out if status is None or r.status == status]

    @property
    def train(self) -> list[CaseRecord]:
        return [r for r in self.cases.records if r.status == "train"]

    @property
    def holdout(self) -> list[CaseRecord]:
        return self.records("holdout")

    def ref(self, record: CaseRecord) -> CaseRef:
        for scan in (self.cases, *self.holdouts):
            if scan.root == Path(record.source) and record.name in scan.refs:
                return scan.refs[record.name]
        raise KeyError(record.name)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.cases.records:
            out[r.status] = out.get(r.status, 0) + 1
        out["holdout_total"] = len(self.holdout)
        return out


def _dedupe(records: list[CaseRecord], what: str) -> None:
    """Mark all but one case of each CT as ``duplicate`` (keep the newest saved correction)."""
    groups: dict[str, list[CaseRecord]] = {}
    for r in records:
        if r.status == "ok" and r.ct_content_sha256:
            groups.setdefault(r.ct_content_sha256, []).append(r)
    for group in groups.values():
        if len(group) < 2:
            continue
        keep = max(sorted(group, key=lambda r: r.name), key=lambda r: r.saved or "")  # ties: first by name
        for r in group:
            if r is keep:
                continue
            r.status, r.duplicate_of = "duplicate", keep.name
            r.conflict = r.label_content_sha256 != keep.label_content_sha256
            if r.conflict:
                r.reason = f"same CT as {what} '{keep.name}', whose later-saved segmentation is used instead"
            else:
                r.reason = f"same CT and segmentation as {what} '{keep.name}'"


def select_cases(cases: FolderScan, holdouts: Sequence[FolderScan] = (), fraction: float = 0.2) -> CaseSelection:
    """Resolve duplicates and overlaps and split the usable cases of ``cases`` into train and held-out."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"the held-out fraction must be in [0, 1), got {fraction}")
    _dedupe(cases.records, "case")
    held: dict[str, CaseRecord] = {}
    for scan in holdouts:
        _dedupe(scan.records, "held-out case")
        for r in scan.records:
            if r.status == "ok":
                if r.ct_content_sha256 in held:
                    first = held[r.ct_content_sha256]
                    r.status, r.duplicate_of = "duplicate", first.name
                    r.reason = f"same CT as held-out case '{first.name}' of {first.source}"
                    continue
                held[r.ct_content_sha256] = r  # type: ignore[index]
                r.status = "holdout"
    usable = []
    for r in cases.records:
        if r.status != "ok":
            continue
        if r.ct_content_sha256 in held:
            other = held[r.ct_content_sha256]  # type: ignore[index]
            r.status, r.duplicate_of = "overlap", other.name
            r.reason = (
                f"same CT as held-out case '{other.name}' of {other.source}: "
                "not trained on, so that the evaluation stays fair"
            )
            continue
        usable.append(r)
    forced_in = [r for r in usable if r.holdout_flag is True]
    free = [r for r in usable if r.holdout_flag is None]
    chosen = {id(r) for r in forced_in}
    if fraction > 0 and free:
        picked = [r for r in free if holdout_key(r.ct_content_sha256 or "") < fraction]
        if not picked and not forced_in:
            picked = [min(free, key=lambda r: holdout_key(r.ct_content_sha256 or ""))]
        chosen |= {id(r) for r in picked}
    if usable and all(id(r) in chosen for r in usable):  # keep at least one case to train on
        last = max((r for r in usable if r.holdout_flag is not True), key=_key_of, default=None)
        if last is not None:
            chosen.discard(id(last))
    for r in usable:
        r.status = "holdout" if id(r) in chosen else "train"
    return CaseSelection(cases, list(holdouts), fraction)


def _key_of(r: CaseRecord) -> float:
    return holdout_key(r.ct_content_sha256 or "")
