"""Read a CT volume from a folder of DICOM files (classic single-frame CT image storage).

Choices (documented behaviour):

* The folder is scanned recursively for files with the DICOM preamble or a .dcm/.dicom/.ima
  suffix (hidden files and folders are skipped).  Files are grouped into candidate volumes by
  SeriesInstanceUID, image orientation and image size (a localizer series with three
  orthogonal images gives three one-image candidates).
* A candidate is usable when it has at least ``MIN_SLICES`` images with position,
  orientation and pixel spacing, is not a LOCALIZER and its modality is CT (or missing).
  The chosen one is, in this order of preference: axial (slice normal within 45 degrees of
  the scanner z axis), not a bone/lung/angio/MIP/... reconstruction (by series
  description), CT rather than missing modality, most slices.
* Slices are sorted by their position along the slice normal (row x column cosines),
  never by file name or InstanceNumber.  Rescale slope/intercept are applied (HU).
  The result is int16 when the values are integers that fit, float32 for non-integer values.
* Duplicate positions, missing slices or mixed slice spacing (gaps differing by more than
  ``SPACING_TOLERANCE`` of the median gap), and positions not on a straight line raise
  InputError: such series cannot be put on a regular grid without guessing.
* Gantry tilt: when the slice positions step along a direction that is not the slice
  normal (sheared stack), the image is resampled onto an orthonormal grid whose axes are
  the row, column and normal directions of the slices (the tilted orientation is kept).
  Each output slice lies exactly in the plane of the acquired slice, so the resampling
  only shifts slices in-plane (linear interpolation within the slice, none across
  slices).  The in-plane field of view is enlarged to keep all acquired voxels; voxels
  outside the acquired data get the minimum value of the series.  A stack whose total
  in-plane shift is below ``MAX_UNCORRECTED_SHIFT`` voxel is not resampled.
  A tilted orientation whose positions follow the normal is already orthonormal and is
  returned as is.
* Multi-frame (enhanced) DICOM is not supported (InputError).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ._common import check_volume, summarize_itk_error

__all__ = [
    "DicomSeriesCandidate",
    "DicomSeriesInfo",
    "read_dicom_series",
    "read_dicom_file",
    "is_dicom_file",
    "MIN_SLICES",
]

MIN_SLICES = 3
SPACING_TOLERANCE = 0.1  # relative deviation of a slice gap from the median gap
MAX_UNCORRECTED_SHIFT = 0.1  # voxels of accumulated in-plane shift left uncorrected
_ORIENTATION_TOLERANCE = 1e-3  # max difference of direction cosines within one volume
_AXIAL_MIN_COS = math.cos(math.radians(45.0))
_DEPRIORITIZED_WORDS = ("bone", "lung", "angio", "cta", "mip", "perf", "dose", "scout", "topo", "locali", "surview")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass(frozen=True)
class DicomSeriesCandidate:
    """One candidate volume found in the folder (a series, or part of one with its own orientation)."""

    series_uid: str
    description: str
    modality: str
    num_slices: int
    orientation: str  # "axial", "coronal", "sagittal" or "unknown"
    size: tuple[int, int]  # columns, rows
    usable: bool
    reason: str = ""  # why it is not usable

    def label(self) -> str:
        name = f"'{self.description}'" if self.description else f"UID {self.series_uid}"
        return f"{name} ({self.modality or 'no modality'}, {self.orientation}, {self.num_slices} slices)"


@dataclass
class DicomSeriesInfo:
    """What :func:`read_dicom_series` found and picked."""

    folder: Path
    series_uid: str
    description: str
    modality: str
    num_slices: int
    candidates: list[DicomSeriesCandidate]
    gantry_tilt: float  # degrees between the slice stacking direction and the slice normal
    gantry_tilt_tag: float | None  # GantryDetectorTilt (0018,1120) as stored, if present
    resampled: bool  # True when a sheared (tilted) stack was resampled onto an orthonormal grid
    slice_spacing: float  # mm along the slice normal
    files: list[Path] = field(default_factory=list)  # slice files in the volume's k order
    message: str = ""


@dataclass
class _Slice:
    path: Path
    series_uid: str
    modality: str
    description: str
    image_type: str
    iop: np.ndarray | None
    ipp: np.ndarray | None
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) as in DICOM
    rows: int
    cols: int
    frames: int
    tilt: float | None


@dataclass
class _Group:
    slices: list[_Slice]
    candidate: DicomSeriesCandidate | None = None
    rank: tuple = ()


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace("\x00", "").strip().split("\\") if v.strip()]


def _read_header(path: Path) -> _Slice | None:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None

    def tag(key: str) -> str:
        try:
            return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
        except (RuntimeError, UnicodeDecodeError):  # e.g. a description in an unexpected character set
            return ""

    def vector(key: str, n: int) -> np.ndarray | None:
        try:
            values = _floats(tag(key))
        except ValueError:
            return None
        return np.array(values, dtype=float) if len(values) == n else None

    spacing = vector("0028|0030", 2)
    try:
        tilt = float(tag("0018|1120")) if tag("0018|1120") else None
    except ValueError:
        tilt = None
    try:
        frames = int(float(tag("0028|0008") or 1))
    except ValueError:
        frames = 1
    size = reader.GetSize()
    return _Slice(
        path=path,
        series_uid=tag("0020|000e"),
        modality=tag("0008|0060").upper(),
        description=tag("0008|103e"),
        image_type=tag("0008|0008").upper(),
        iop=vector("0020|0037", 6),
        ipp=vector("0020|0032", 3),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        rows=int(size[1]),
        cols=int(size[0]),
        frames=max(frames, int(size[2]) if len(size) > 2 else 1),
        tilt=tilt,
    )


def _candidate_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            p = Path(root) / name
            if p.suffix.lower() in _DICOM_SUFFIXES or is_dicom_file(p):
                files.append(p)
    return files


def _axes(iop: np.ndarray) -> np.ndarray:
    """Orthonormal 3x3 matrix whose columns are the row, column and normal directions."""
    r = iop[:3] / np.linalg.norm(iop[:3])
    c = iop[3:] - np.dot(iop[3:], r) * r
    c = c / np.linalg.norm(c)
    return np.column_stack([r, c, np.cross(r, c)])


def _orientation(iop: np.ndarray | None) -> str:
    if iop is None or np.linalg.norm(iop[:3]) < 1e-3 or np.linalg.norm(np.cross(iop[:3], iop[3:])) < 1e-3:
        return "unknown"  # missing or degenerate (parallel) direction cosines
    normal = _axes(iop)[:, 2]
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _group_slices(slices: list[_Slice]) -> list[_Group]:
    groups: list[_Group] = []
    for s in slices:
        for g in groups:
            first = g.slices[0]
            if (
                first.series_uid == s.series_uid
                and (first.rows, first.cols) == (s.rows, s.cols)
                and (first.iop is None) == (s.iop is None)
                and (s.iop is None or np.max(np.abs(first.iop - s.iop)) <= _ORIENTATION_TOLERANCE)
            ):
                g.slices.append(s)
                break
        else:
            groups.append(_Group([s]))
    return groups


def _assess(group: _Group) -> None:
    first = group.slices[0]
    n = len(group.slices)
    orientation = _orientation(first.iop)
    reason = ""
    if first.modality and first.modality != "CT":
        reason = f"modality {first.modality}"
    elif "LOCALIZER" in first.image_type:
        reason = "localizer"
    elif first.frames > 1:
        reason = "multi-frame DICOM is not supported"
    elif first.iop is None or any(s.ipp is None for s in group.slices) or orientation == "unknown":
        reason = "no slice position/orientation"
    elif first.pixel_spacing is None or min(first.pixel_spacing) <= 0:
        reason = "no pixel spacing"
    elif n < MIN_SLICES:
        reason = f"only {n} slice(s)"
    group.candidate = DicomSeriesCandidate(
        series_uid=first.series_uid,
        description=first.description,
        modality=first.modality,
        num_slices=n,
        orientation=orientation,
        size=(first.cols, first.rows),
        usable=not reason,
        reason=reason,
    )
    description = first.description.lower()
    axial = orientation != "unknown" and abs(_axes(first.iop)[2, 2]) >= _AXIAL_MIN_COS
    group.rank = (
        axial,
        not any(w in description for w in _DEPRIORITIZED_WORDS),
        first.modality == "CT",
        n,
    )


def _summary(candidates: list[DicomSeriesCandidate], limit: int = 4) -> str:
    parts = [c.label() + (f": {c.reason}" if c.reason else "") for c in candidates[:limit]]
    if len(candidates) > limit:
        parts.append(f"and {len(candidates) - limit} more")
    return "; ".join(parts)


def _pick(folder: Path, series_uid: str | None) -> tuple[_Group, list[DicomSeriesCandidate], int]:
    files = _candidate_files(folder)
    if not files:
        raise InputError(f"{folder}: no DICOM files found")
    slices = [s for s in (_read_header(f) for f in files) if s is not None]
    if not slices:
        raise InputError(f"{folder}: {len(files)} DICOM file(s) but none holds an image (DICOMDIR/reports only?)")
    groups = _group_slices(slices)
    for g in groups:
        _assess(g)
    candidates = [g.candidate for g in groups if g.candidate is not None]
    num_series = len({c.series_uid for c in candidates})
    pool = [g for g in groups if series_uid is None or g.slices[0].series_uid == series_uid]
    usable = [g for g in pool if g.candidate is not None and g.candidate.usable]
    if not usable:
        found = _summary([g.candidate for g in pool if g.candidate is not None])
        what = f"series {series_uid}" if series_uid else f"{num_series} series"
        raise InputError(f"{folder}: no usable CT volume in {what} ({found})")
    best = max(usable, key=lambda g: g.rank)
    return best, candidates, num_series


def _sorted_geometry(group: _Group, folder: Path) -> tuple[list[_Slice], np.ndarray, np.ndarray, float]:
    """Sort slices along the normal; return slices, axes (3x3), mean step vector, spacing along the normal."""
    axes = _axes(group.slices[0].iop)
    normal = axes[:, 2]
    slices = sorted(group.slices, key=lambda s: float(np.dot(s.ipp, normal)))
    positions = np.array([s.ipp for s in slices])
    distances = positions @ normal
    gaps = np.diff(distances)
    name = group.candidate.label() if group.candidate else "series"
    if gaps.min() <= 1e-3:
        dup = int(np.count_nonzero(gaps <= 1e-3))
        raise InputError(f"{folder}: series {name} has {dup} duplicate slice position(s) (several acquisitions?)")
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) > max(SPACING_TOLERANCE * median, 0.01):
        raise InputError(
            f"{folder}: series {name} has non-uniform slice spacing (gaps {gaps.min():.3g} to {gaps.max():.3g} mm):"
            " missing slices or mixed slice thickness"
        )
    n = len(slices)
    step = (positions[-1] - positions[0]) / (n - 1)
    spacing = float(np.dot(step, normal))
    # in-plane deviation of each position from the straight line through the first and last
    deviation = positions - positions[0] - np.outer(np.arange(n), step)
    deviation -= np.outer(deviation @ normal, normal)
    if np.linalg.norm(deviation, axis=1).max() > 0.5 * min(slices[0].pixel_spacing):
        raise InputError(f"{folder}: series {name} has slice positions that are not on a straight line")
    return slices, axes, step, spacing


def _read_pixels(files: list[Path], folder: Path, name: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(f) for f in files])
    reader.SetSpacingWarningRelThreshold(1e6)  # spacing is checked and set here, not by ITK
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{folder}: cannot read pixel data of series {name}: {summarize_itk_error(exc)}") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{folder}: series {name} is not grayscale (colour/RGB images)")
    return image


def _compact_type(image: sitk.Image) -> sitk.Image:
    """int16 when the (rescaled) values fit, float32 for non-integer values."""
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating):
        if np.array_equal(values, np.round(values)) and values.min() >= -32768 and values.max() <= 32767:
            return sitk.Cast(image, sitk.sitkInt16)
        return sitk.Cast(image, sitk.sitkFloat32)
    if image.GetPixelID() != sitk.sitkInt16 and values.min() >= -32768 and values.max() <= 32767:
        return sitk.Cast(image, sitk.sitkInt16)
    return image


def _deshear(image: sitk.Image, step: np.ndarray) -> sitk.Image:
    """Resample a sheared stack (geometry set as if unsheared) so each voxel sits at its acquired position.

    ``image`` has origin = first slice position, direction = (row, column, normal) and
    spacing along the normal; ``step`` is the true vector between consecutive slice origins.
    """
    axes = np.reshape(image.GetDirection(), (3, 3))
    normal = axes[:, 2]
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    size = np.array(image.GetSize())
    shear = step - np.dot(step, normal) * normal  # in-plane shift per slice (mm)
    # output index = input index + k * shift (in voxels along row/column)
    shift = np.array([np.dot(shear, axes[:, 0]) / spacing[0], np.dot(shear, axes[:, 1]) / spacing[1]])
    total = shift * (size[2] - 1)
    lo = np.floor(np.minimum(total, 0.0) + 1e-6).astype(int)
    hi = np.ceil(size[:2] - 1 + np.maximum(total, 0.0) - 1e-6).astype(int)
    out_size = [int(hi[0] - lo[0] + 1), int(hi[1] - lo[1] + 1), int(size[2])]
    out_origin = origin + lo[0] * spacing[0] * axes[:, 0] + lo[1] * spacing[1] * axes[:, 1]
    # maps a true (output) physical point to the point of the unsheared input geometry
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((np.eye(3) - np.outer(shear, normal) / spacing[2]).ravel().tolist())
    transform.SetCenter(origin.tolist())
    pixel_type = image.GetPixelID()
    values = sitk.GetArrayViewFromImage(image)
    out = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32),
        out_size,
        transform,
        sitk.sitkLinear,
        out_origin.tolist(),
        spacing.tolist(),
        image.GetDirection(),
        float(values.min()),
        sitk.sitkFloat32,
    )
    if pixel_type != sitk.sitkFloat32:
        out = sitk.Cast(sitk.Round(out), pixel_type)
    return out


def read_dicom_series(
    folder: str | os.PathLike, *, series_uid: str | None = None
) -> tuple[sitk.Image, DicomSeriesInfo]:
    """Read the best CT volume in ``folder`` (see the module docstring for the choices made).

    ``series_uid`` restricts the choice to one series.  Returns the image (LPS, HU) and a
    :class:`DicomSeriesInfo` whose ``message`` says what was picked.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"input not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    group, candidates, num_series = _pick(folder, series_uid)
    chosen = group.candidate
    assert chosen is not None
    slices, axes, step, spacing = _sorted_geometry(group, folder)
    files = [s.path for s in slices]

    image = _read_pixels(files, folder, chosen.label())
    expected = (slices[0].cols, slices[0].rows, len(slices))
    if tuple(image.GetSize()) != expected:
        raise InputError(f"{folder}: series {chosen.label()} has images of different sizes")
    row_spacing, col_spacing = slices[0].pixel_spacing
    image.SetSpacing((col_spacing, row_spacing, spacing))
    image.SetOrigin(slices[0].ipp.tolist())
    image.SetDirection(axes.ravel().tolist())
    image = _compact_type(image)

    normal = axes[:, 2]
    shear = step - np.dot(step, normal) * normal
    tilt = math.degrees(math.atan2(float(np.linalg.norm(shear)), float(np.dot(step, normal))))
    shift_voxels = (len(slices) - 1) * max(
        abs(np.dot(shear, axes[:, 0])) / col_spacing, abs(np.dot(shear, axes[:, 1])) / row_spacing
    )
    resampled = shift_voxels >= MAX_UNCORRECTED_SHIFT
    if resampled:
        image = _deshear(image, step)
    check_volume(image, str(folder))

    name = f"'{chosen.description}'" if chosen.description else chosen.series_uid
    message = f"picked series {name} ({len(slices)} slices) of {num_series} series"
    if resampled:
        message += f"; gantry tilt {tilt:.1f} deg corrected by resampling onto an orthonormal grid"
    info = DicomSeriesInfo(
        folder=folder,
        series_uid=chosen.series_uid,
        description=chosen.description,
        modality=chosen.modality,
        num_slices=len(slices),
        candidates=candidates,
        gantry_tilt=tilt,
        gantry_tilt_tag=slices[0].tilt,
        resampled=resampled,
        slice_spacing=spacing,
        files=files,
        message=message,
    )
    return image, info


def read_dicom_file(path: str | os.PathLike) -> tuple[sitk.Image, DicomSeriesInfo]:
    """Read the series that the DICOM file ``path`` belongs to, from the file's folder."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    header = _read_header(p)
    if header is None:
        raise InputError(f"{p}: cannot read DICOM file (corrupted or not an image)")
    return read_dicom_series(p.parent, series_uid=header.series_uid or None)
