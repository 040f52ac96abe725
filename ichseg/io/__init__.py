"""Image I/O with exact geometry: volumes (NIfTI/NRRD/MetaImage/DICOM), label maps and Slicer .seg.nrrd."""

from .dicom import DicomSeriesCandidate, DicomSeriesInfo, read_dicom_series
from .images import DICOM_SUFFIXES, SUPPORTED_SUFFIXES, WRITE_SUFFIXES, read_image, write_image, write_labelmap
from .segnrrd import OVERLAP_PRIORITY, SegmentationReadResult, read_seg_nrrd, write_seg_nrrd

__all__ = [
    "DICOM_SUFFIXES",
    "OVERLAP_PRIORITY",
    "SUPPORTED_SUFFIXES",
    "WRITE_SUFFIXES",
    "DicomSeriesCandidate",
    "DicomSeriesInfo",
    "SegmentationReadResult",
    "read_dicom_series",
    "read_image",
    "read_seg_nrrd",
    "write_image",
    "write_labelmap",
    "write_seg_nrrd",
]
