"""Volume and labelmap I/O: exact geometry round trips, bad inputs, atomic writes."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ichseg.errors import InputError, OutputError
from ichseg.io import SUPPORTED_SUFFIXES, read_image, write_image, write_labelmap

SPACING = (0.45, 0.45, 5.0)
ORIGIN = (-120.3, 95.17, -33.3333)


def tilted_direction(degrees: float = 21.0) -> tuple[float, ...]:
    a = math.radians(degrees)
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return tuple(rot.ravel())


@pytest.fixture
def ct() -> sitk.Image:
    """A small int16 'CT' with anisotropic spacing, a 21 degree tilt about x and a non-zero origin."""
    rng = np.random.default_rng(7)
    image = sitk.GetImageFromArray(rng.integers(-1024, 2000, size=(6, 20, 24), dtype=np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tilted_direction())
    return image


def assert_same_voxels(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetPixelID() == b.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def assert_one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400, text
    assert "ITK ERROR" not in text and "itk::" not in text, text
    for word in words:
        assert word.lower() in text.lower(), text


def assert_geometry(a: sitk.Image, b: sitk.Image, *, exact: bool) -> None:
    if exact:
        assert a.GetSpacing() == b.GetSpacing()
        assert a.GetOrigin() == b.GetOrigin()
        assert a.GetDirection() == b.GetDirection()
    else:  # equal to the last bit or so (1 ulp ~ 2e-16 relative)
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-15, atol=0)
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=1e-15, atol=0)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_round_trip_exact(ct: sitk.Image, tmp_path: Path, suffix: str) -> None:
    """MetaImage is bit-exact; NRRD stores direction*spacing, so it is exact up to the last bit."""
    write_image(ct, tmp_path / f"a{suffix}")
    back = read_image(tmp_path / f"a{suffix}")
    assert_geometry(back, ct, exact=suffix == ".mha")
    assert back.GetSpacing() == ct.GetSpacing() and back.GetOrigin() == ct.GetOrigin()
    assert_same_voxels(back, ct)
    write_image(back, tmp_path / f"b{suffix}")
    again = read_image(tmp_path / f"b{suffix}")
    assert_geometry(again, ct, exact=suffix == ".mha")
    assert_same_voxels(again, ct)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_round_trip_nifti_float32_geometry(ct: sitk.Image, tmp_path: Path, suffix: str) -> None:
    """NIfTI keeps geometry as float32: equal to float32 precision, voxels exact."""
    write_image(ct, tmp_path / f"a{suffix}")
    back = read_image(tmp_path / f"a{suffix}")
    np.testing.assert_allclose(back.GetSpacing(), ct.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ct.GetOrigin(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), ct.GetDirection(), rtol=0, atol=1e-6)
    assert_same_voxels(back, ct)
    write_image(back, tmp_path / f"b{suffix}")
    again = read_image(tmp_path / f"b{suffix}")
    np.testing.assert_allclose(again.GetOrigin(), back.GetOrigin(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(again.GetDirection(), back.GetDirection(), rtol=0, atol=1e-6)
    assert_same_voxels(again, back)


def test_float_volume_and_compression(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.zeros((4, 40, 40), dtype=np.float32))
    path = write_image(image, tmp_path / "zeros.nrrd")
    assert path == tmp_path / "zeros.nrrd"
    assert path.stat().st_size < 4 * 40 * 40  # compressed
    assert read_image(path).GetPixelID() == sitk.sitkFloat32


def test_write_labelmap_numpy_on_reference_grid(ct: sitk.Image, tmp_path: Path) -> None:
    label = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    label[2, 5, 7] = 1
    label[3, 10:12, 4] = 3
    for suffix in (".nrrd", ".nii.gz", ".nii"):
        out = read_image(write_labelmap(label, ct, tmp_path / f"label{suffix}"))
        assert out.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), label)
        tol = 0 if suffix == ".nrrd" else 1e-5
        np.testing.assert_allclose(out.GetOrigin(), ct.GetOrigin(), rtol=0, atol=tol)
        np.testing.assert_allclose(out.GetSpacing(), ct.GetSpacing(), rtol=tol)
        np.testing.assert_allclose(out.GetDirection(), ct.GetDirection(), rtol=0, atol=max(tol, 1e-15))
        # voxel (x=7, y=5, z=2) is at the reference's physical point
        np.testing.assert_allclose(
            out.TransformIndexToPhysicalPoint((7, 5, 2)), ct.TransformIndexToPhysicalPoint((7, 5, 2)), atol=1e-4
        )


def test_write_labelmap_image_takes_reference_geometry(ct: sitk.Image, tmp_path: Path) -> None:
    label = sitk.Image(ct.GetSize(), sitk.sitkInt32)
    label.CopyInformation(ct)
    label.SetOrigin(tuple(o + 1e-6 for o in ct.GetOrigin()))  # e.g. float32 rounding from NIfTI
    label[3, 4, 1] = 2
    out = read_image(write_labelmap(label, ct, tmp_path / "l.nrrd"))
    assert out.GetOrigin() == ct.GetOrigin() and out.GetSpacing() == ct.GetSpacing()
    assert out.GetPixelID() == sitk.sitkUInt8 and out[3, 4, 1] == 2


def test_write_labelmap_rejects_mismatch(ct: sitk.Image, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_labelmap(np.zeros((6, 20, 23), np.uint8), ct, tmp_path / "x.nii.gz")
    shifted = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    shifted.CopyInformation(ct)
    shifted.SetOrigin(tuple(o + 1.0 for o in ct.GetOrigin()))
    with pytest.raises(ValueError, match="origin"):
        write_labelmap(shifted, ct, tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="0..255"):
        write_labelmap(np.full((6, 20, 24), 300, np.int32), ct, tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


def test_supported_suffixes() -> None:
    assert {".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"} <= set(SUPPORTED_SUFFIXES)


def test_reads_detached_headers(ct: sitk.Image, tmp_path: Path) -> None:
    sitk.WriteImage(ct, str(tmp_path / "d.mhd"))
    sitk.WriteImage(ct, str(tmp_path / "d.nhdr"))
    for name in ("d.mhd", "d.nhdr"):
        back = read_image(tmp_path / name)
        assert back.GetOrigin() == ct.GetOrigin()
        assert_same_voxels(back, ct)


# --- bad inputs -------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "nope.nii.gz")
    assert_one_line(exc, "not found", "nope.nii.gz")


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "scan.png")
    assert_one_line(exc, "unsupported", ".png")


def test_2d_image(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(tmp_path / "slice.nii.gz"))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "slice.nii.gz")
    assert_one_line(exc, "2-D", "slice.nii.gz")


def test_single_slice_volume_is_2d(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(32, 32, 1, sitk.sitkInt16), str(tmp_path / "one.nrrd"))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "one.nrrd")
    assert_one_line(exc, "2-D")


def test_vector_and_4d_images(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorFloat32, 3), str(tmp_path / "vec.nrrd"))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "vec.nrrd")
    assert_one_line(exc, "components")
    sitk.WriteImage(sitk.Image([8, 8, 4, 3], sitk.sitkInt16), str(tmp_path / "four.nii.gz"))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "four.nii.gz")
    assert_one_line(exc, "4-D")


def test_singleton_fourth_axis_is_dropped(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([8, 8, 4, 1], sitk.sitkInt16), str(tmp_path / "t1.nii.gz"))
    assert read_image(tmp_path / "t1.nii.gz").GetSize() == (8, 8, 4)


def test_truncated_and_garbage_files(ct: sitk.Image, tmp_path: Path) -> None:
    write_image(ct, tmp_path / "ok.nii.gz")
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    raw = gzip.decompress(data)
    (tmp_path / "cut_raw.nii").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.nii.gz").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "garbage.nrrd").write_bytes(b"this is not an image\n" * 10)
    (tmp_path / "empty.mha").write_bytes(b"")
    for name in ("cut.nii.gz", "cut_raw.nii", "garbage.nii.gz", "garbage.nrrd", "empty.mha"):
        with pytest.raises(InputError) as exc:
            read_image(tmp_path / name)
        assert_one_line(exc, name)


def test_truncated_compressed_nifti_is_detected(tmp_path: Path) -> None:
    """ITK zero-fills a truncated NIfTI; the reader must refuse it instead."""
    image = sitk.GetImageFromArray(np.random.default_rng(1).integers(0, 4, size=(20, 64, 64), dtype=np.int16))
    write_image(image, tmp_path / "ok.nii.gz")
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "cut.nii.gz")
    assert_one_line(exc, "truncated", "cut.nii.gz")
    assert read_image(tmp_path / "ok.nii.gz").GetSize() == (64, 64, 20)


def test_nan_volume(tmp_path: Path) -> None:
    values = np.zeros((4, 8, 8), np.float32)
    values[1, 2, 3] = np.nan
    values[2, 2, 3] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "nan.nrrd"))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "nan.nrrd")
    assert_one_line(exc, "NaN", "2 ")


def test_folders_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "empty")
    assert_one_line(exc, "no DICOM")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "notes")
    assert_one_line(exc, "no DICOM")


def test_seg_nrrd_is_not_a_ct(tmp_path: Path) -> None:
    (tmp_path / "a.seg.nrrd").write_bytes(b"NRRD0004\n")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "a.seg.nrrd")
    assert_one_line(exc, "segmentation")


# --- writing ----------------------------------------------------------------------------


def test_write_unsupported_suffix_and_no_overwrite(ct: sitk.Image, tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        write_image(ct, tmp_path / "x.png")
    with pytest.raises(OutputError):
        write_image(ct, tmp_path / "x.mhd")  # two-file format cannot be written atomically
    target = write_image(ct, tmp_path / "x.nrrd")
    before = target.read_bytes()
    with pytest.raises(OutputError):
        write_image(ct, target, overwrite=False)
    assert target.read_bytes() == before


def test_failed_write_leaves_no_partial_file(ct: sitk.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = write_image(ct, tmp_path / "keep.nii.gz")
    before = existing.read_bytes()

    def failing_write(image: sitk.Image, path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("ITK ERROR: NiftiImageIO(0x1234): No space left on device\nmore details")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    for target in (tmp_path / "new.nii.gz", existing):
        with pytest.raises(OutputError) as exc:
            write_image(ct, target)
        assert_one_line(exc, "No space left")
    assert not (tmp_path / "new.nii.gz").exists()
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]
