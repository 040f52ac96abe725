"""DICOM series reading: HU, geometry, slice order, series choice, gantry tilt, bad series."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ichseg.errors import InputError
from ichseg.io import DicomSeriesInfo, read_dicom_series, read_image

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_series(
    folder: Path,
    hu: np.ndarray,
    positions: np.ndarray,
    *,
    iop: tuple[float, ...] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.6, 0.5),  # (between rows, between columns) as in DICOM
    description: str = "Head 5mm",
    modality: str = "CT",
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    tilt: float | None = None,
    intercept: float = -1024.0,
    slope: float = 1.0,
    seed: int = 0,
) -> str:
    """Write ``hu`` (k, rows, cols) as single-frame CT files with random names and InstanceNumbers."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    order = list(range(hu.shape[0]))
    rng.shuffle(order)
    for k in order:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.Modality = modality
        ds.ImageType = image_type
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesDescription = description
        ds.PatientName, ds.PatientID = "Test^Phantom", "P1"
        ds.InstanceNumber = rng.randint(1, 999)  # deliberately unrelated to the position
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = 5.0
        if tilt is not None:
            ds.GantryDetectorTilt = tilt
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, slope, "HU"
        ds.PixelData = np.round((hu[k] - intercept) / slope).astype(np.uint16).tobytes()
        name = f"{rng.getrandbits(40):010x}" + (".dcm" if rng.random() < 0.5 else "")
        ds.save_as(folder / name, enforce_file_format=True)
    return series_uid


def phantom(k: int = 12, rows: int = 64, cols: int = 64) -> np.ndarray:
    """HU volume whose voxel values encode their slice, row and column."""
    z, y, x = np.meshgrid(np.arange(k), np.arange(rows), np.arange(cols), indexing="ij")
    return (-1000 + 100 * z + 2 * y + (x % 2)).astype(np.float64)


def axial_positions(k: int, origin=(-16.0, -19.2, 30.0), step: float = 5.0) -> np.ndarray:
    return np.array([[origin[0], origin[1], origin[2] + step * i] for i in range(k)])


def tilted_iop(degrees: float) -> tuple[np.ndarray, np.ndarray]:
    t = math.radians(degrees)
    return np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), -math.sin(t)])


def test_axial_series_hu_geometry_and_order(tmp_path: Path) -> None:
    hu = phantom()
    # write the positions top-down so that neither file order nor InstanceNumber gives the sort
    write_series(tmp_path / "s", hu[::-1], axial_positions(12)[::-1])
    image, info = read_dicom_series(tmp_path / "s")
    assert isinstance(info, DicomSeriesInfo)
    assert image.GetSize() == (64, 64, 12)
    assert image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.6, 5.0))
    np.testing.assert_allclose(image.GetOrigin(), (-16.0, -19.2, 30.0))
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), hu)  # HU after rescale, sorted by position
    assert info.num_slices == 12 and info.description == "Head 5mm" and not info.resampled
    assert info.gantry_tilt == pytest.approx(0.0, abs=1e-6)
    assert "picked series 'Head 5mm' (12 slices) of 1 series" in info.message
    # the same volume through read_image, from the folder and from one of its files
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(tmp_path / "s")), hu)
    one_file = sorted((tmp_path / "s").iterdir())[3]
    assert read_image(one_file).GetOrigin() == image.GetOrigin()


def test_rescale_slope(tmp_path: Path) -> None:
    hu = phantom(k=4, rows=8, cols=8)
    hu[0, 0, 0] = -1024.5  # needs a float result
    write_series(tmp_path / "s", hu, axial_positions(4), slope=0.5, intercept=-2048.0)
    image, _ = read_dicom_series(tmp_path / "s")
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(image), hu)


def test_picks_main_axial_series(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    main_uid = write_series(folder, phantom(), axial_positions(12), seed=1)
    # a 3-image localizer (sagittal, flagged LOCALIZER) and a smaller axial series
    write_series(
        folder / "scout",
        np.zeros((3, 64, 64)),
        np.array([[0.0, -100.0, 100.0 - i] for i in range(3)]),
        iop=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        description="Topogram",
        image_type="ORIGINAL\\PRIMARY\\LOCALIZER",
        seed=2,
    )
    write_series(folder, np.zeros((5, 64, 64)), axial_positions(5), description="Dose report axial", seed=3)
    write_series(folder, np.zeros((6, 64, 64)), axial_positions(6), modality="MR", description="T1", seed=4)
    image, info = read_dicom_series(folder)
    assert info.series_uid == main_uid and info.num_slices == 12
    assert info.message.startswith("picked series 'Head 5mm' (12 slices) of 4 series")
    assert len(info.candidates) == 4
    reasons = {c.description: c.reason for c in info.candidates}
    assert reasons["Topogram"] == "localizer" and reasons["T1"] == "modality MR"
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), phantom())


def test_prefers_axial_over_more_slices(tmp_path: Path) -> None:
    write_series(tmp_path, phantom(k=8), axial_positions(8), description="Axial", seed=1)
    coronal = np.array([[-16.0, -50.0 + 2 * i, 90.0] for i in range(20)])
    write_series(tmp_path, np.zeros((20, 64, 64)), coronal, iop=(1, 0, 0, 0, 0, -1), description="Cor", seed=2)
    _, info = read_dicom_series(tmp_path)
    assert info.description == "Axial"


def test_gantry_tilt_sheared_stack_is_resampled(tmp_path: Path) -> None:
    """Tilted slices stepping along the scanner z: the marker must land at its acquired physical point."""
    k, rows, cols, tilt = 12, 48, 40, 20.0
    row_dir, col_dir = tilted_iop(tilt)
    dx, dy = 0.5, 0.6  # column and row spacing
    origin = np.array([-10.0, -14.0, 40.0])
    positions = np.array([origin + [0.0, 0.0, 5.0 * i] for i in range(k)])
    hu = np.full((k, rows, cols), 20.0)
    mk, mj, mi = 8, 20, 17  # marker: slice, row, column
    hu[mk, mj - 1 : mj + 2, mi - 1 : mi + 2] = 1500.0
    write_series(tmp_path, hu, positions, iop=(*row_dir, *col_dir), pixel_spacing=(dy, dx), tilt=tilt)
    marker = positions[mk] + mi * dx * row_dir + mj * dy * col_dir

    image, info = read_dicom_series(tmp_path)
    assert info.resampled and info.gantry_tilt == pytest.approx(tilt, abs=0.01)
    assert info.gantry_tilt_tag == pytest.approx(tilt)
    assert "gantry tilt 20.0 deg" in info.message
    direction = np.reshape(image.GetDirection(), (3, 3))
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)  # orthonormal
    np.testing.assert_allclose(direction[:, 0], row_dir, atol=1e-7)  # tilted orientation kept
    np.testing.assert_allclose(direction[:, 1], col_dir, atol=1e-7)
    spacing = np.array(image.GetSpacing())
    np.testing.assert_allclose(spacing, (dx, dy, 5.0 * math.cos(math.radians(tilt))), rtol=1e-6)
    values = sitk.GetArrayFromImage(image)
    assert values.shape[0] == k and values.shape[1] > rows  # field of view enlarged to keep all voxels
    bright = np.argwhere(values > 800)
    weights = values[values > 800]
    centre_zyx = (bright * weights[:, None]).sum(0) / weights.sum()
    found = np.array(image.TransformContinuousIndexToPhysicalPoint(centre_zyx[::-1].tolist()))
    assert np.linalg.norm(found - marker) < 0.5 * spacing[:2].min()
    # the acquired slices are exactly the output slices: marker's slice index is unchanged
    assert set(bright[:, 0]) == {mk}
    # the corner of the first slice (no shift) is still at the first slice's position
    assert values.min() == pytest.approx(20.0)


def test_tilted_orientation_along_normal_is_kept(tmp_path: Path) -> None:
    k, tilt = 10, 20.0
    row_dir, col_dir = tilted_iop(tilt)
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-10.0, -14.0, 40.0])
    positions = np.array([origin + 4.0 * i * normal for i in range(k)])
    hu = phantom(k=k, rows=32, cols=32)
    write_series(tmp_path, hu, positions, iop=(*row_dir, *col_dir), tilt=tilt)
    image, info = read_dicom_series(tmp_path)
    assert not info.resampled and info.gantry_tilt == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), np.column_stack([row_dir, col_dir, normal]))
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.6, 4.0), rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), hu)
    physical = image.TransformIndexToPhysicalPoint((3, 5, 7))
    np.testing.assert_allclose(physical, positions[7] + 3 * 0.5 * row_dir + 5 * 0.6 * col_dir, atol=1e-5)


def test_missing_slice_and_duplicates(tmp_path: Path) -> None:
    positions = axial_positions(10)
    write_series(tmp_path / "gap", phantom(k=9), np.delete(positions, 4, axis=0))
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path / "gap")
    dup = positions.copy()
    dup[5] = dup[4]
    write_series(tmp_path / "dup", phantom(k=10), dup)
    with pytest.raises(InputError, match="duplicate slice position"):
        read_dicom_series(tmp_path / "dup")


def test_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM files"):
        read_dicom_series(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 20)
    with pytest.raises(InputError, match="none holds an image"):
        read_dicom_series(tmp_path / "junk")
    write_series(tmp_path / "mr", phantom(k=4, rows=8, cols=8), axial_positions(4), modality="MR", description="T2")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "mr")
    assert "no usable CT volume" in str(exc.value) and "modality MR" in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        read_dicom_series(tmp_path / "missing")


def test_files_are_valid_dicom(tmp_path: Path) -> None:
    """Sanity check of the generator: pydicom reads what it wrote and the HU are as intended."""
    write_series(tmp_path, phantom(k=3, rows=8, cols=8), axial_positions(3))
    ds = pydicom.dcmread(next(tmp_path.iterdir()))
    assert ds.Modality == "CT" and float(ds.RescaleIntercept) == -1024.0
