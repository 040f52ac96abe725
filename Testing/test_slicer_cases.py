"""ICHTrainingLib.cases against real MRML classes (slicer-core): saving corrected segmentations as training cases."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "ICHSegmentation", ROOT / "ICHTraining"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from conftest import import_slicer_core  # noqa: E402

slicer = import_slicer_core()

import vtk  # noqa: E402
from ICHSegmentationLib import segments  # noqa: E402
from ICHTrainingLib import cases  # noqa: E402
from vtkmodules.util import numpy_support  # noqa: E402

from ichseg import labels  # noqa: E402

SPACING = (0.5, 0.5, 5.0)
ORIGIN = (-7.25, 20.5, -33.0)
DIMS = (36, 28, 10)  # i, j, k
LPS = np.diag([-1.0, -1.0, 1.0])


def tilted_directions() -> np.ndarray:
    t = math.radians(20.0)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]])
    return LPS @ tilt


def make_volume(scene, node_class: str, array_zyx: np.ndarray, name: str, origin=ORIGIN, spacing=SPACING):
    node = scene.AddNewNodeByClass(node_class, name)
    image = vtk.vtkImageData()
    image.SetDimensions(array_zyx.shape[2], array_zyx.shape[1], array_zyx.shape[0])
    image.AllocateScalars(numpy_support.get_vtk_array_type(array_zyx.dtype), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array_zyx.ravel()
    node.SetAndObserveImageData(image)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    d = tilted_directions()
    node.SetIJKToRASDirections(*[d[r, c] for r in range(3) for c in range(3)])
    return node


def phantom_label() -> np.ndarray:
    label = np.zeros((DIMS[2], DIMS[1], DIMS[0]), dtype=np.uint8)
    label[3:7, 6:16, 5:17] = labels.PHE.value
    label[4:6, 8:14, 7:15] = labels.ICH.value
    label[1:3, 20:24, 25:31] = labels.IVH.value
    label[7:9, 3:5, 28:33] = labels.IVH.value
    return label


def oriented(reference, mask_zyx: np.ndarray, pad_i: int = 0):
    """A modifier image on the reference lattice; ``pad_i`` extra columns reach past the reference's last i."""
    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.SetExtent(0, DIMS[0] - 1 + pad_i, 0, DIMS[1] - 1, 0, DIMS[2] - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask_zyx.astype(np.uint8).ravel()
    return image


def paint(logic, node, segment_id: str, mask_zyx: np.ndarray, reference, pad_i: int = 0) -> None:
    """Segment Editor "add" with "Overwrite other segments: All"."""
    segmentation = node.GetSegmentation()
    others = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    others.remove(segment_id)
    image = oriented(reference, mask_zyx, pad_i)
    assert logic.SetBinaryLabelmapToSegment(image, node, segment_id, logic.MODE_MERGE_MASK, None, False, others)


def read_tag(segment, name: str) -> str:
    value = vtk.reference("")
    assert segment.GetTag(name, value)
    return str(value)


@pytest.fixture
def case(mrml):
    scene, logic = mrml
    label = phantom_label()
    rng = np.random.default_rng(1)
    ct = make_volume(scene, "vtkMRMLScalarVolumeNode", rng.integers(-1024, 1500, label.shape).astype(np.int16), "CT")
    node = segments.import_labelmap_as_segments(
        scene, logic, make_volume(scene, "vtkMRMLLabelMapVolumeNode", label, "label"), ct
    )
    return scene, logic, ct, node, label


def edit_like_a_user(logic, ct, node, label: np.ndarray) -> np.ndarray:
    """Reorder, rename and rename back, delete and re-add segments; paint. Returns the expected label."""
    segmentation = node.GetSegmentation()
    segmentation.SetSegmentIndex("IVH", 0)
    segmentation.SetSegmentIndex("ICH", 2)
    phe = segmentation.GetSegment("PHE")
    phe.SetName("edema draft")
    phe.SetName("PHE")  # renamed back; and a generic terminology, so only the name identifies it
    phe.SetTerminology(
        "Segmentation category and type - 3D Slicer General Anatomy list~SCT^85756007^Tissue~SCT^85756007^Tissue"
        "~^^~Anatomic codes - DICOM master list~^^~^^"
    )
    segmentation.RemoveSegment("IVH")
    new_id = segmentation.AddEmptySegment("", "IVH")  # re-added: another ID, default terminology
    assert new_id != "IVH"
    expected = label.copy()
    ivh = np.zeros(label.shape, dtype=bool)
    ivh[1:3, 20:24, 25:31] = True  # one of the two old lesions, redrawn
    ivh[5:7, 22:26, 20:24] = True  # and a new one
    expected[expected == labels.IVH.value] = 0
    expected[ivh] = labels.IVH.value
    paint(logic, node, new_id, ivh, ct)
    more_ich = np.zeros(label.shape, dtype=bool)
    more_ich[4:6, 8:14, 15:17] = True  # over PHE voxels
    expected[more_ich] = labels.ICH.value
    paint(logic, node, "ICH", more_ich, ct)
    return expected


def test_saved_case_reads_back_by_name(case, tmp_path):
    scene, logic, ct, node, label = case
    expected = edit_like_a_user(logic, ct, node, label)
    nodes_before = scene.GetNumberOfNodes()
    paths = cases.save_training_case(scene, logic, ct, node, tmp_path, "case-001", {"annotator": "reader 1"})
    assert scene.GetNumberOfNodes() == nodes_before
    assert paths["folder"] == tmp_path / "case-001"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case-001"]  # no temporary folder left
    assert sorted(p.name for p in paths["folder"].iterdir()) == sorted(cases.CASE_FILES)
    (tmp_path / "plain").mkdir()  # the case folder is as readable as a plainly made one (mkdtemp: 0o700)
    assert paths["folder"].stat().st_mode == (tmp_path / "plain").stat().st_mode

    # 1. slicer-core's storage node, in a fresh scene.
    scene2 = slicer.vtkMRMLScene()
    logic2 = slicer.vtkSlicerSegmentationsModuleLogic()
    logic2.SetMRMLScene(scene2)
    ct2 = scene2.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(paths["ct"]))
    assert storage.ReadData(ct2)
    np.testing.assert_array_equal(segments.volume_array(ct2), segments.volume_array(ct))
    assert segments.volume_array(ct2).dtype == np.int16
    np.testing.assert_allclose(segments.ijk_to_ras(ct2), segments.ijk_to_ras(ct), rtol=0, atol=1e-9)
    seg2 = scene2.AddNewNodeByClass("vtkMRMLSegmentationNode", "saved")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(paths["segmentation"]))
    assert storage.ReadData(seg2)
    segmentation = seg2.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == ["ICH", "PHE", "IVH"]
    for cls in labels.CLASSES:
        segment = segmentation.GetSegment(cls.key)
        assert segment.GetName() == cls.name
        assert segment.GetColor() == pytest.approx(cls.color_float, abs=1e-5)
        tag = read_tag(segment, "TerminologyEntry")
        assert segments.terminology_codes(tag) == segments.terminology_codes(labels.slicer_terminology_string(cls))
    np.testing.assert_array_equal(segments.class_label_array(scene2, logic2, seg2, ct2).label, expected)

    # 2. The file itself: header fields and voxels.
    nrrd = pytest.importorskip("nrrd")
    voxels, header = nrrd.read(str(paths["segmentation"]))
    assert voxels.shape == DIMS  # full CT extent, (i, j, k)
    m = segments.ijk_to_ras(ct)
    np.testing.assert_allclose(header["space directions"], (LPS @ m[:3, :3]).T, atol=1e-6)
    np.testing.assert_allclose(header["space origin"], LPS @ m[:3, 3], atol=1e-6)
    by_name = {header[f"Segment{i}_Name"]: i for i in range(3)}
    for cls in labels.CLASSES:
        i = by_name[cls.name]
        assert header[f"Segment{i}_ID"] == cls.key
        assert int(header[f"Segment{i}_LabelValue"]) == cls.value
        assert int(header[f"Segment{i}_Layer"]) == 0
    np.testing.assert_array_equal(np.transpose(voxels, (2, 1, 0)), expected)
    ct_voxels, ct_header = nrrd.read(str(paths["ct"]))
    np.testing.assert_array_equal(np.transpose(ct_voxels, (2, 1, 0)), segments.volume_array(ct))
    np.testing.assert_allclose(ct_header["space directions"], (LPS @ m[:3, :3]).T, atol=1e-6)

    # 3. The sidecar.
    record = json.loads(paths["sidecar"].read_text())
    assert record["annotator"] == "reader 1"
    assert record["case"] == "case-001"
    assert record["label_values"] == {"ICH": 1, "PHE": 2, "IVH": 3}
    assert {s["class"] for s in record["segments"]} == {"ICH", "PHE", "IVH"}
    voxel_ml = SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
    assert record["volumes_ml"]["IVH"] == pytest.approx(int((expected == 3).sum()) * voxel_ml)


def test_saved_case_reads_with_core_reader(case, tmp_path):
    try:
        from ichseg.io import read_seg_nrrd
    except ImportError as exc:
        pytest.skip(f"ichseg.io not importable: {exc}")
    scene, logic, ct, node, label = case
    expected = edit_like_a_user(logic, ct, node, label)
    paths = cases.save_training_case(scene, logic, ct, node, tmp_path, "core", {})
    result = read_seg_nrrd(paths["segmentation"])
    import SimpleITK as sitk

    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label), expected)
    assert result.unknown == []


def test_saved_cases_feed_the_training_loader(case, tmp_path):
    """What "Save as training case" writes is what ichseg train/finetune read, mapped by name."""
    from ichseg.io import read_seg_nrrd
    from ichseg.train.dataset import discover

    scene, logic, ct, node, label = case
    expected = edit_like_a_user(logic, ct, node, label)
    paths = cases.save_training_case(scene, logic, ct, node, tmp_path, "case-a", {"model": "test@1.0.0"})
    found = discover(tmp_path)
    assert [c.name for c in found.cases] == ["case-a"] and not found.skipped
    ref = found.cases[0]
    assert (ref.image, ref.label, ref.sidecar) == (paths["ct"], paths["segmentation"], paths["sidecar"])
    assert ref.label_format == "seg.nrrd"
    import SimpleITK as sitk

    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_seg_nrrd(ref.label).label), expected)


def test_refuses_to_overwrite(case, tmp_path):
    scene, logic, ct, node, _ = case
    paths = cases.save_training_case(scene, logic, ct, node, tmp_path, "c1", {"n": 1})
    before = {p.name: p.read_bytes() for p in paths["folder"].iterdir()}
    with pytest.raises(cases.CaseExistsError, match="already exists"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "c1", {"n": 2})
    assert {p.name: p.read_bytes() for p in paths["folder"].iterdir()} == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(cases.CaseExistsError):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "empty", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1", "empty"]


def test_refuses_segmentation_of_another_grid(mrml, tmp_path):
    scene, logic = mrml
    label = phantom_label()
    ct = make_volume(scene, "vtkMRMLScalarVolumeNode", np.zeros(label.shape, np.int16), "CT")
    shifted_origin = (ORIGIN[0], ORIGIN[1] + 0.2, ORIGIN[2])
    other = make_volume(scene, "vtkMRMLScalarVolumeNode", np.zeros(label.shape, np.int16), "other", shifted_origin)
    label_node = make_volume(scene, "vtkMRMLLabelMapVolumeNode", label, "label", shifted_origin)
    node = segments.import_labelmap_as_segments(scene, logic, label_node, other)
    with pytest.raises(ValueError, match="made on another image"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {})
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct)  # geometry claims the CT, voxels are elsewhere
    with pytest.raises(ValueError, match="does not lie on the voxel grid"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {})
    finer = make_volume(
        scene, "vtkMRMLScalarVolumeNode", np.zeros(label.shape, np.int16), "finer", spacing=(0.5, 0.5, 2.5)
    )
    node2 = segments.import_labelmap_as_segments(
        scene, logic, make_volume(scene, "vtkMRMLLabelMapVolumeNode", label, "l2", spacing=(0.5, 0.5, 2.5)), finer
    )
    with pytest.raises(ValueError, match="spacing"):
        cases.save_training_case(scene, logic, ct, node2, tmp_path, "x", {})
    assert list(tmp_path.iterdir()) == []


def test_refuses_content_outside_the_ct(case, tmp_path):
    scene, logic, ct, node, _ = case
    mask = np.zeros((DIMS[2], DIMS[1], DIMS[0] + 3), dtype=bool)
    mask[2:4, 2:4, DIMS[0] - 2 : DIMS[0] + 3] = True  # 3 columns past the CT's edge
    paint(logic, node, "PHE", mask, ct, pad_i=3)
    with pytest.raises(ValueError, match="outside 'CT'"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {})
    assert list(tmp_path.iterdir()) == []


def test_refuses_unknown_segments_and_bad_arguments(case, tmp_path):
    scene, logic, ct, node, _ = case
    node.GetSegmentation().AddEmptySegment("skull", "Skull")
    with pytest.raises(ValueError, match="'Skull'"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {})
    node.GetSegmentation().RemoveSegment("skull")
    for bad in ("", ".hidden", "a/b", "../up", "with space", "x" * 200):
        with pytest.raises(ValueError, match="invalid case name"):
            cases.save_training_case(scene, logic, ct, node, tmp_path, bad, {})
    with pytest.raises(ValueError, match="reserved"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {"case": "other"})
    with pytest.raises(TypeError):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {"bad": object()})
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    ct.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="different transforms"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {})
    ct.SetAndObserveTransformNodeID(None)
    for segment_id in ("ICH", "PHE", "IVH"):
        node.GetSegmentation().RemoveSegment(segment_id)
    with pytest.raises(ValueError, match="no ICH, PHE or IVH"):
        cases.save_training_case(scene, logic, ct, node, tmp_path, "x", {})
    assert list(tmp_path.iterdir()) == []


def test_saves_ct_and_segmentation_sharing_a_transform(case, tmp_path):
    scene, logic, ct, node, label = case
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 9.5)
    transform.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(transform.GetID())
    node.SetAndObserveTransformNodeID(transform.GetID())
    paths = cases.save_training_case(scene, logic, ct, node, tmp_path, "moved", {})
    nrrd = pytest.importorskip("nrrd")
    voxels, header = nrrd.read(str(paths["segmentation"]))
    np.testing.assert_array_equal(np.transpose(voxels, (2, 1, 0)), label)  # in the CT's own frame
    ct_voxels, ct_header = nrrd.read(str(paths["ct"]))
    np.testing.assert_allclose(header["space origin"], ct_header["space origin"], atol=1e-6)


def test_list_training_cases(case, tmp_path):
    scene, logic, ct, node, _ = case
    cases.save_training_case(scene, logic, ct, node, tmp_path, "b", {"source": "test"})
    cases.save_training_case(scene, logic, ct, node, tmp_path, "a", {})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / cases.CT_FILE).write_bytes(b"")
    (tmp_path / ".d.tmp").mkdir()
    found = cases.list_training_cases(tmp_path)
    assert [c.name for c in found] == ["a", "b", "c"]
    assert found[0].complete and found[1].complete and not found[2].complete
    assert found[1].metadata["source"] == "test"
    assert "missing" in found[2].problem
    assert cases.list_training_cases(tmp_path / "nothing") == []


def test_module_logic_imports_measures_and_saves_without_slicer(mrml, tmp_path):
    """``ICHSegmentationLib.logic.SegmentationLogic`` (``ICHSegmentationLogic`` without the application)."""
    from ICHSegmentationLib import editing, selftest
    from ICHSegmentationLib.logic import SegmentationLogic

    scene, logic = mrml
    label = phantom_label()
    ct = make_volume(scene, "vtkMRMLScalarVolumeNode", np.zeros(label.shape, dtype=np.int16), "CT 1/2")
    module_logic = SegmentationLogic(scene, logic)
    node = module_logic.importLabelmap(make_volume(scene, "vtkMRMLLabelMapVolumeNode", label, "label"), ct)
    assert selftest.segment_ids(node) == [cls.key for cls in labels.CLASSES]
    measurements = module_logic.computeVolumes(node, ct)
    rows = selftest.table_rows(module_logic.updateVolumesTable(measurements))
    voxel_ml = SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
    for (name, volume_ml, lesions, voxels), cls in zip(rows, labels.CLASSES, strict=True):
        assert (
            name == cls.name and voxels == int((label == cls.value).sum()) and lesions == (2 if cls.key == "IVH" else 1)
        )
        assert volume_ml == pytest.approx(voxels * voxel_ml)

    case_name = editing.safe_name(ct.GetName())
    assert case_name == "CT_1_2"
    module_logic.writeCsv(str(tmp_path / f"{case_name}.csv"), case_name, measurements)
    assert (tmp_path / "CT_1_2.csv").read_text(encoding="utf-8").splitlines()[1].startswith("CT_1_2,")
    sidecar = editing.training_sidecar(ct, node, "5.10.0")
    paths = module_logic.saveTrainingCase(ct, node, tmp_path / "cases", case_name, sidecar)
    record = json.loads(paths["sidecar"].read_text())
    assert record["source"] == "ICHSegmentation" and record["ct_name"] == "CT 1/2"
    assert record["segmentation_name"] == node.GetName() and record["slicer_version"] == "5.10.0"
    assert record["draft_model"] is None and record["editing"] is None  # imported, not drafted by a model here
