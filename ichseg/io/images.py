"""Read and write 3-D volumes (NIfTI, NRRD, MetaImage, DICOM) keeping their geometry exactly.

Geometry notes: SimpleITK works in LPS.  NRRD and MetaImage store spacing, origin and
direction as text with full double precision (NRRD stores ``direction * spacing``, so a
direction read back can differ in the last bit, ~1e-16).  NIfTI stores the geometry as
float32 (pixdim, qform quaternion, sform), so after a NIfTI round trip spacing, origin
and direction agree only to float32 precision (relative ~1e-7, e.g. ~1e-5 mm for an
origin of 100 mm).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from ..fileutil import atomic_output, full_suffix
from ._common import check_volume, describe_size, summarize_itk_error, to_label_image
from ._nifti import nifti_is_truncated
from .dicom import is_dicom_file, read_dicom_file, read_dicom_series

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DICOM_SUFFIXES",
    "WRITE_SUFFIXES",
    "read_image",
    "write_image",
    "write_labelmap",
]

#: Volume file suffixes that :func:`read_image` accepts (besides DICOM files and folders).
SUPPORTED_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Suffixes of single DICOM files; :func:`read_image` reads the series the file belongs to.
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
#: Suffixes :func:`write_image` can write (single-file formats only, so writes can be atomic).
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3-D scalar volume with its spacing/origin/direction exactly as stored.

    ``path`` is a NIfTI/NRRD/MetaImage file, a folder holding a DICOM series (see
    :func:`read_dicom_series`), or a single DICOM file (its series is read from its folder).
    Raises InputError with a one-line message for any unusable input.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        return read_dicom_series(p)[0]
    suffix = full_suffix(p)
    if suffix == ".seg.nrrd":
        raise InputError(f"{p}: is a Slicer segmentation (.seg.nrrd), not a CT volume")
    if suffix in DICOM_SUFFIXES or (suffix not in SUPPORTED_SUFFIXES and is_dicom_file(p)):
        return read_dicom_file(p)[0]
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES + DICOM_SUFFIXES)
        raise InputError(f"{p}: unsupported file type '{suffix or p.name}' (use {supported} or a DICOM folder)")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: file is not readable (permission denied)")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{p}: corrupted or unreadable image ({summarize_itk_error(exc, p)})") from exc
    size = tuple(reader.GetSize())
    dim = reader.GetDimension()
    if dim == 2 or (dim == 3 and size[2] == 1):
        raise InputError(f"{p}: image is 2-D ({describe_size(size)}); a 3-D CT volume is required")
    if dim > 4 or (dim == 4 and size[3] != 1):
        raise InputError(f"{p}: image is {dim}-D ({describe_size(size)}); a 3-D CT volume is required")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"{p}: image has {reader.GetNumberOfComponents()} components per voxel (vector/RGB); "
            "a single-channel CT volume is required"
        )
    if suffix in (".nii", ".nii.gz") and nifti_is_truncated(p):
        raise InputError(f"{p}: file is truncated (fewer voxels than its header announces)")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{p}: truncated or corrupted image data ({summarize_itk_error(exc, p)})") from exc
    if image.GetDimension() == 4:  # x*y*z*1, e.g. NIfTI with a singleton time axis
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    check_volume(image, str(p))
    return image


def write_image(image: sitk.Image, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``image`` atomically (compressed where the format allows) with its exact geometry.

    Supported: .nii.gz, .nii, .nrrd, .mha.  Raises OutputError on an unsupported suffix,
    an existing file with ``overwrite=False`` or a write failure; the target is never left
    half-written.
    """
    p = Path(path)
    suffix = full_suffix(p)
    if suffix == ".seg.nrrd":
        raise OutputError(f"{p}: .seg.nrrd is a segmentation format; write labels with write_labelmap/write_seg_nrrd")
    if suffix not in WRITE_SUFFIXES:
        raise OutputError(f"{p}: unsupported output format '{suffix or p.name}' (use {', '.join(WRITE_SUFFIXES)})")
    with atomic_output(p, overwrite=overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as exc:
            reason = summarize_itk_error(exc, tmp).replace(tmp.name, p.name)
            raise OutputError(f"cannot write {p}: {reason}") from exc
    return p


def write_labelmap(
    label: np.ndarray | sitk.Image,
    reference: sitk.Image,
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
) -> Path:
    """Write a label volume as uint8 on the exact grid (spacing/origin/direction) of ``reference``.

    ``label`` is a numpy array indexed (z, y, x) or a SimpleITK image of the reference's
    size.  A ``.seg.nrrd`` path writes a Slicer segmentation (:func:`write_seg_nrrd`).
    Raises ValueError when the label does not fit the reference grid.
    """
    if full_suffix(path) == ".seg.nrrd":
        from .segnrrd import write_seg_nrrd

        return write_seg_nrrd(label, reference, path, overwrite=overwrite)
    return write_image(to_label_image(label, reference), path, overwrite=overwrite)
