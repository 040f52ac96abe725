"""Slicer .seg.nrrd: our files read by slicerio and slicer-core; Slicer-made files read by name/terminology."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from ichseg import labels
from ichseg.errors import InputError, OutputError
from ichseg.io import read_seg_nrrd, write_labelmap, write_seg_nrrd

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
from vtk.util import numpy_support  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def reference() -> sitk.Image:
    """CT grid: anisotropic spacing, 21 degree tilt about x, non-zero origin."""
    a = math.radians(21.0)
    image = sitk.Image(24, 20, 6, sitk.sitkInt16)
    image.SetSpacing((0.45, 0.45, 5.0))
    image.SetOrigin((-120.3, 95.17, -33.3333))
    image.SetDirection((1, 0, 0, 0, math.cos(a), -math.sin(a), 0, math.sin(a), math.cos(a)))
    return image


@pytest.fixture
def label() -> np.ndarray:
    values = np.zeros((6, 20, 24), np.uint8)
    values[2, 4:8, 5:9] = labels.ICH.value  # 16 voxels
    values[3, 10:12, 2:5] = labels.IVH.value  # 6 voxels; PHE stays empty
    values[5, 19, 23] = labels.ICH.value  # last voxel: checks the axis order
    return values


def terminology_codes(tag: str) -> tuple[str, str, str]:
    """(type code, region code, category code) of a Slicer TerminologyEntry string."""
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(tag, entry)
    region = entry.GetRegionObject().GetCodeValue() if entry.GetRegionObject() else ""
    return entry.GetTypeObject().GetCodeValue(), region, entry.GetCategoryObject().GetCodeValue()


def load_with_slicer(path: Path):
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return scene, node


def test_written_file_read_by_slicerio(reference: sitk.Image, label: np.ndarray, tmp_path: Path) -> None:
    path = write_seg_nrrd(label, reference, tmp_path / "case.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    assert [s["id"] for s in seg["segments"]] == ["ICH", "PHE", "IVH"]
    for segment, cls in zip(seg["segments"], labels.CLASSES, strict=True):
        assert segment["name"] == cls.name and segment["labelValue"] == cls.value and segment["layer"] == 0
        np.testing.assert_allclose(segment["color"], cls.color_float)
        assert segment["terminology"]["type"][1] == cls.type.value
        assert segment["terminology"]["anatomicRegion"][1] == cls.region.value
    voxels = seg["voxels"]  # (i, j, k)
    np.testing.assert_array_equal(np.transpose(voxels, (2, 1, 0)), label)
    ijk_to_lps = seg["ijkToLPS"]
    point = ijk_to_lps @ [23, 19, 5, 1]
    np.testing.assert_allclose(point[:3], reference.TransformIndexToPhysicalPoint((23, 19, 5)), atol=1e-9)


def test_written_file_read_by_slicer_core(reference: sitk.Image, label: np.ndarray, tmp_path: Path) -> None:
    path = write_seg_nrrd(label, reference, tmp_path / "case.seg.nrrd")
    _scene, node = load_with_slicer(path)
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == ["ICH", "PHE", "IVH"]
    expected_counts = {"ICH": 17, "PHE": 0, "IVH": 6}
    expected_codes = {
        "ICH": ("50960005", "12738006"),  # hemorrhage in brain
        "PHE": ("79654002", "12738006"),  # edema
        "IVH": ("50960005", "279245009"),  # hemorrhage in ventricular system
    }
    for sid in ids:
        cls = labels.class_by_key(sid)
        segment = segmentation.GetSegment(sid)
        assert segment.GetName() == cls.name
        np.testing.assert_allclose(segment.GetColor(), cls.color_float, atol=1e-6)
        assert segment.GetLabelValue() == cls.value
        type_code, region_code, category_code = terminology_codes(segment.GetTerminology())
        assert (type_code, region_code) == expected_codes[sid]
        assert category_code == "49755003"
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        assert str(tag) == labels.slicer_terminology_string(cls)

        labelmap = segment.GetRepresentation("Binary labelmap")
        scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        assert int(np.count_nonzero(scalars == segment.GetLabelValue())) == expected_counts[sid]

    # geometry: voxel index -> RAS through the labelmap equals the reference's physical point (LPS -> RAS)
    labelmap = segmentation.GetSegment("ICH").GetRepresentation("Binary labelmap")
    assert labelmap.GetExtent() == (0, 23, 0, 19, 0, 5)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    for index in [(0, 0, 0), (23, 19, 5), (7, 5, 2)]:
        ras = matrix.MultiplyPoint((*index, 1.0))[:3]
        lps = reference.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(ras, LPS_TO_RAS @ lps, atol=1e-9)
    dims = labelmap.GetDimensions()
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
    np.testing.assert_array_equal(values, label)  # shared layer: voxel values are the class values

    # the reference image geometry conversion parameter describes the same grid
    geometry = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    grid = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, grid, False)
    grid_matrix = vtk.vtkMatrix4x4()
    grid.GetImageToWorldMatrix(grid_matrix)
    assert grid.GetExtent() == (0, 23, 0, 19, 0, 5)
    np.testing.assert_allclose(grid_matrix.MultiplyPoint((7, 5, 2, 1.0)), matrix.MultiplyPoint((7, 5, 2, 1.0)))


def test_round_trip(reference: sitk.Image, label: np.ndarray, tmp_path: Path) -> None:
    path = write_labelmap(label, reference, tmp_path / "case.seg.nrrd")  # dispatches to write_seg_nrrd
    result = read_seg_nrrd(path)
    assert result.unknown == [] and result.messages == []
    assert [(s["id"], s["class_key"], s["voxels"]) for s in result.segments] == [
        ("ICH", "ICH", 17),
        ("PHE", "PHE", 0),
        ("IVH", "IVH", 6),
    ]
    out = result.label
    assert out.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), label)
    np.testing.assert_allclose(out.GetSpacing(), reference.GetSpacing(), rtol=1e-15)
    np.testing.assert_allclose(out.GetOrigin(), reference.GetOrigin(), rtol=1e-15)
    np.testing.assert_allclose(out.GetDirection(), reference.GetDirection(), atol=1e-15)
    on_reference = read_seg_nrrd(path, reference=reference).label
    assert on_reference.GetOrigin() == reference.GetOrigin()


def test_write_rejects_values_without_class(reference: sitk.Image, label: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[3\]"):
        write_seg_nrrd(label, reference, tmp_path / "x.seg.nrrd", classes=(labels.ICH, labels.PHE))
    assert not (tmp_path / "x.seg.nrrd").exists()
    path = write_seg_nrrd(label * (label == 1), reference, tmp_path / "x.seg.nrrd", classes=(labels.ICH,))
    assert [s["id"] for s in slicerio.read_segmentation(str(path))["segments"]] == ["ICH"]


def test_failed_write_leaves_no_partial_file(
    reference: sitk.Image, label: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_write(path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"NRRD0004\npartial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(slicerio, "write_segmentation", failing_write)
    with pytest.raises(OutputError, match="No space left"):
        write_seg_nrrd(label, reference, tmp_path / "case.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


def oriented_image(values: np.ndarray, reference: sitk.Image):
    """vtkOrientedImageData with the voxels (z, y, x) on the reference grid (RAS)."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reference.GetSize())
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = values.ravel()
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = LPS_TO_RAS @ np.reshape(reference.GetDirection(), (3, 3)) @ np.diag(reference.GetSpacing())
    ijk_to_ras[:3, 3] = LPS_TO_RAS @ reference.GetOrigin()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ijk_to_ras[r, c])
    image.SetImageToWorldMatrix(matrix)
    return image


def test_read_slicer_made_file_by_name_and_terminology(reference: sitk.Image, tmp_path: Path) -> None:
    """Segments in another order, other label values, renamed, an unknown one, overlaps in a second layer."""
    shape = (6, 20, 24)
    layer0 = np.zeros(shape, np.uint8)
    layer0[1, 2:4, 2:4] = 1  # "IVH" by name, label value 1
    layer0[2, 5:7, 5:7] = 3  # "Intracerebral hemorrhage" (renamed ICH), value 3
    layer0[4, 0, 0] = 7  # "Catheter": unknown
    layer0[3, 8, 8] = 2  # "Segment_5": no recognisable name, IVH by terminology
    layer1 = np.zeros(shape, np.uint8)
    layer1[2, 4:8, 4:8] = 1  # "Oedema" overlapping the ICH: a second layer
    layer2 = np.zeros(shape, np.uint8)
    layer2[5, 10, 10] = 4  # named "ICH" but tagged as edema: terminology wins -> PHE

    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    segmentation = node.GetSegmentation()
    images = [oriented_image(v, reference) for v in (layer0, layer1, layer2)]
    specs = [
        ("s1", "IVH", 1, 0, None),
        ("s2", "Intracerebral hemorrhage", 3, 0, None),
        ("s3", "Catheter", 7, 0, None),
        ("s4", "Oedema", 1, 1, None),
        ("s5", "Segment_5", 2, 0, labels.IVH),
        ("s6", "ICH", 4, 2, labels.PHE),
    ]
    for sid, name, value, layer, tagged in specs:
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.SetLabelValue(value)
        segment.AddRepresentation("Binary labelmap", images[layer])
        if tagged is not None:
            segment.SetTerminology(labels.slicer_terminology_string(tagged))
        segmentation.AddSegment(segment, sid)
    assert segmentation.GetNumberOfLayers() == 3
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    path = tmp_path / "edited.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    assert slicerio.read_segmentation(str(path))["voxels"].ndim == 4  # layers

    result = read_seg_nrrd(path, reference=reference)
    mapped = {s["name"]: s["class_key"] for s in result.segments}
    assert mapped == {
        "IVH": "IVH",
        "Intracerebral hemorrhage": "ICH",
        "Catheter": None,
        "Oedema": "PHE",
        "Segment_5": "IVH",
        "ICH": "PHE",
    }
    assert result.unknown == ["Catheter"]
    assert any("Catheter" in m for m in result.messages)
    assert any("both ICH and PHE" in m for m in result.messages)
    assert any("sub-box" in m for m in result.messages)  # Slicer cropped the saved grid

    expected = np.zeros(shape, np.uint8)
    expected[2, 4:8, 4:8] = labels.PHE.value
    expected[2, 5:7, 5:7] = labels.ICH.value  # overlap: blood wins over edema
    expected[1, 2:4, 2:4] = labels.IVH.value
    expected[3, 8, 8] = labels.IVH.value
    expected[5, 10, 10] = labels.PHE.value
    label = result.label
    assert label.GetSize() == reference.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(label), expected)

    # without a reference the label is on the file's grid (Slicer may crop it to the segments' extent)
    cropped = read_seg_nrrd(path).label
    counts = np.bincount(sitk.GetArrayViewFromImage(cropped).ravel(), minlength=4)
    np.testing.assert_array_equal(counts[1:], np.bincount(expected.ravel(), minlength=4)[1:])
    first = np.argwhere(sitk.GetArrayViewFromImage(cropped) == labels.IVH.value)[0][::-1]
    np.testing.assert_allclose(
        cropped.TransformIndexToPhysicalPoint(first.tolist()), reference.TransformIndexToPhysicalPoint((2, 2, 1))
    )


def test_read_legacy_one_segment_per_component(reference: sitk.Image, tmp_path: Path) -> None:
    """Slicer < 4.11 wrote each segment as a 4-D component with value 1 and no Layer/LabelValue fields."""
    import nrrd

    components = np.zeros((2, 24, 20, 6), np.uint8)  # (segment, i, j, k)
    components[0, 3, 4, 2] = 1  # "Hematoma" -> ICH
    components[1, 3, 4, 2] = 1  # "IVH" overlapping it -> ICH wins
    components[1, 5, 6, 1] = 1
    directions = np.reshape(reference.GetDirection(), (3, 3)) @ np.diag(reference.GetSpacing())
    header = {
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": np.vstack([[np.nan] * 3, directions.T]),
        "space origin": np.array(reference.GetOrigin()),
        "Segment0_ID": "Segment_1",
        "Segment0_Name": "Hematoma",
        "Segment1_ID": "Segment_2",
        "Segment1_Name": "IVH",
    }
    nrrd.write(str(tmp_path / "old.seg.nrrd"), components, header)
    result = read_seg_nrrd(tmp_path / "old.seg.nrrd", reference=reference)
    values = sitk.GetArrayViewFromImage(result.label)
    assert values[2, 4, 3] == labels.ICH.value and values[1, 6, 5] == labels.IVH.value
    assert int(np.count_nonzero(values)) == 2
    assert [s["layer"] for s in result.segments] == [0, 1]


def test_read_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_seg_nrrd(tmp_path / "missing.seg.nrrd")
    (tmp_path / "bad.seg.nrrd").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(InputError) as exc:
        read_seg_nrrd(tmp_path / "bad.seg.nrrd")
    assert "\n" not in str(exc.value) and "bad.seg.nrrd" in str(exc.value)
    (tmp_path / "x.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="not a Slicer segmentation"):
        read_seg_nrrd(tmp_path / "x.nii.gz")
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(tmp_path / "plain.nrrd"))
    with pytest.raises(InputError, match="no segment information"):
        read_seg_nrrd(tmp_path / "plain.nrrd")


def test_read_onto_other_grid_reports_dropped_voxels(reference: sitk.Image, label: np.ndarray, tmp_path: Path) -> None:
    path = write_seg_nrrd(label, reference, tmp_path / "case.seg.nrrd")
    smaller = sitk.Image(10, 10, 4, sitk.sitkInt16)
    smaller.SetSpacing(reference.GetSpacing())
    smaller.SetOrigin(reference.GetOrigin())
    smaller.SetDirection(reference.GetDirection())
    result = read_seg_nrrd(path, reference=smaller)
    assert result.label.GetSize() == (10, 10, 4)
    assert any("outside the reference grid" in m for m in result.messages)
    shifted = sitk.Image(reference)
    shifted.SetOrigin(tuple(np.add(reference.GetOrigin(), (0.2, 0.0, 0.0))))
    result = read_seg_nrrd(path, reference=shifted)
    assert any("resampled (nearest neighbour)" in m for m in result.messages)
