"""ICHSegmentationLib against real MRML classes (slicer-core): label maps to segments, segments to volumes.

The grid is tilted (20 degrees about x), anisotropic (0.5 x 0.5 x 5 mm), LPS-flipped and
off-origin, so geometry mistakes (axis order, direction, origin) cannot cancel out.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "ICHSegmentation"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from conftest import import_slicer_core  # noqa: E402

slicer = import_slicer_core()

import vtk  # noqa: E402
from ICHSegmentationLib import colors, measure, segments  # noqa: E402
from vtkmodules.util import numpy_support  # noqa: E402

from ichseg import labels, volumes  # noqa: E402

SPACING = (0.5, 0.5, 5.0)
ORIGIN = (12.5, -30.25, 41.0)
DIMS = (40, 32, 12)  # i, j, k
SNOMED = {  # class key -> (type code, region code)
    "ICH": ("50960005", "12738006"),
    "PHE": ("79654002", "12738006"),
    "IVH": ("50960005", "279245009"),
}


def tilted_directions() -> np.ndarray:
    """Columns = RAS directions of the i, j, k axes: LPS-like flip of a 20-degree tilt about x."""
    t = math.radians(20.0)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]])
    return np.diag([-1.0, -1.0, 1.0]) @ tilt


def make_volume(scene, node_class: str, array_zyx: np.ndarray, name: str, origin=ORIGIN):
    """A volume node in ``scene`` with the tilted test geometry and the given voxels."""
    node = scene.AddNewNodeByClass(node_class, name)
    image = vtk.vtkImageData()
    image.SetDimensions(array_zyx.shape[2], array_zyx.shape[1], array_zyx.shape[0])
    image.AllocateScalars(numpy_support.get_vtk_array_type(array_zyx.dtype), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array_zyx.ravel()
    node.SetAndObserveImageData(image)
    node.SetSpacing(*SPACING)
    node.SetOrigin(*origin)
    d = tilted_directions()
    node.SetIJKToRASDirections(*[d[r, c] for r in range(3) for c in range(3)])
    return node


def phantom_label() -> np.ndarray:
    """(z, y, x) label: an ICH blob with a PHE rim, and two separate IVH lesions."""
    z, y, x = np.mgrid[0 : DIMS[2], 0 : DIMS[1], 0 : DIMS[0]]
    label = np.zeros((DIMS[2], DIMS[1], DIMS[0]), dtype=np.uint8)
    r2 = ((x - 14) * 0.5) ** 2 + ((y - 15) * 0.5) ** 2 + ((z - 5) * 5.0) ** 2
    label[r2 <= 9.0**2] = labels.PHE.value
    label[r2 <= 5.5**2] = labels.ICH.value
    label[2:4, 4:7, 30:35] = labels.IVH.value
    label[7:9, 25:28, 30:36] = labels.IVH.value
    return label


@pytest.fixture
def case(mrml):
    """Scene, logic, CT volume, the reference label and its labelmap node."""
    scene, logic = mrml
    label = phantom_label()
    rng = np.random.default_rng(0)
    ct = make_volume(scene, "vtkMRMLScalarVolumeNode", rng.integers(-50, 90, label.shape).astype(np.int16), "CT")
    label_node = make_volume(scene, "vtkMRMLLabelMapVolumeNode", label, "CT_label")
    return scene, logic, ct, label, label_node


def segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_mask(scene, logic, segmentation_node, segment_id: str, reference) -> np.ndarray:
    """One segment exported by Slicer onto the reference grid, as a boolean (z, y, x) array."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert logic.ExportSegmentsToLabelmapNode(segmentation_node, [segment_id], node, reference)
    mask = segments.volume_array(node) > 0
    scene.RemoveNode(node)
    return mask


def modifier(reference, mask_zyx: np.ndarray):
    """A vtkOrientedImageData on the reference grid, 1 inside ``mask_zyx`` (what a Segment Editor effect makes)."""
    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.SetExtent(0, DIMS[0] - 1, 0, DIMS[1] - 1, 0, DIMS[2] - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask_zyx.astype(np.uint8).ravel()
    return image


def paint(logic, segmentation_node, segment_id: str, mask_zyx: np.ndarray, reference, overwrite: bool = True) -> None:
    """Add ``mask_zyx`` to a segment the way Segment Editor's "add" does (MODE_MERGE_MASK).

    With ``overwrite`` every other segment is overwritable (Segment Editor's default
    "Overwrite other segments: All"); without, overlap is allowed.
    """
    others = [i for i in segment_ids(segmentation_node) if i != segment_id] if overwrite else []
    ok = logic.SetBinaryLabelmapToSegment(
        modifier(reference, mask_zyx), segmentation_node, segment_id, logic.MODE_MERGE_MASK, None, False, others
    )
    assert ok


def read_tag(segment, name: str) -> str:
    value = vtk.reference("")
    assert segment.GetTag(name, value), f"segment '{segment.GetName()}' has no {name} tag"
    return str(value)


# --------------------------------------------------------------------------- import


def test_import_gives_fixed_ids_names_colors_terminology(case):
    scene, logic, ct, _, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    assert segment_ids(node) == ["ICH", "PHE", "IVH"]
    segmentation = node.GetSegmentation()
    for cls in labels.CLASSES:
        segment = segmentation.GetSegment(cls.key)
        assert segment.GetName() == cls.name
        assert segment.GetColor() == pytest.approx(cls.color_float, abs=1e-9)
        tag = read_tag(segment, slicer.vtkSegment.GetTerminologyEntryTagName())
        assert slicer.vtkSegment.GetTerminologyEntryTagName() == "TerminologyEntry"
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(tag, entry)
        type_code, region_code = SNOMED[cls.key]
        assert entry.GetCategoryObject().GetCodeValue() == "49755003"
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == type_code
        assert entry.GetRegionObject().GetCodeValue() == region_code
        assert segments.terminology_codes(tag) == (type_code, region_code)
    assert node.GetLabelmapConversionColorTableNode() is colors.color_table(scene)


def test_import_geometry_round_trip(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)

    # Slicer's own export, mapping segments to values through the scheme's colour table.
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ok = logic.ExportSegmentsToLabelmapNode(
        node, ["IVH", "PHE", "ICH"], exported, ct, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
        colors.color_table(scene),
    )  # fmt: skip
    assert ok
    np.testing.assert_array_equal(segments.volume_array(exported), label)
    np.testing.assert_allclose(segments.ijk_to_ras(exported), segments.ijk_to_ras(ct), rtol=0, atol=1e-9)
    d = tilted_directions() * np.array(SPACING)
    np.testing.assert_allclose(segments.ijk_to_ras(ct)[:3, :3], d, atol=1e-12)

    # The reference image geometry is the CT's.
    geometry = node.GetSegmentation().GetConversionParameter("Reference image geometry")
    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, matrix, extent)
    ref = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(ref, segments.ijk_to_ras(ct), rtol=0, atol=1e-9)
    assert list(extent) == [0, DIMS[0] - 1, 0, DIMS[1] - 1, 0, DIMS[2] - 1]

    # Each segment on its own: exactly its class's voxels.
    for cls in labels.CLASSES:
        np.testing.assert_array_equal(segment_mask(scene, logic, node, cls.key, ct), label == cls.value)


def test_empty_class_still_gets_a_segment(case):
    scene, logic, ct, label, _ = case
    no_ivh = np.where(label == labels.IVH.value, 0, label).astype(np.uint8)
    node = segments.import_labelmap_as_segments(
        scene, logic, make_volume(scene, "vtkMRMLLabelMapVolumeNode", no_ivh, "no_ivh"), ct
    )
    assert segment_ids(node) == ["ICH", "PHE", "IVH"]
    assert not segment_mask(scene, logic, node, "IVH", ct).any()
    m = measure.segment_volumes(scene, logic, node, ct)
    assert m.classes["IVH"].voxels == 0 and m.classes["IVH"].volume_ml == 0.0
    assert m.classes["ICH"].voxels == int((label == 1).sum())


def test_import_from_files(case, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    scene, logic, ct, label, _ = case
    image = sitk.GetImageFromArray(label)
    image.SetSpacing(SPACING)
    lps = np.diag([-1.0, -1.0, 1.0])
    image.SetDirection((lps @ tilted_directions()).ravel().tolist())
    image.SetOrigin((lps @ np.array(ORIGIN)).tolist())
    for name in ("label.nii.gz", "label.nrrd"):
        sitk.WriteImage(image, str(tmp_path / name))
        node = segments.import_labelmap_as_segments(scene, logic, tmp_path / name, ct)
        assert segment_ids(node) == ["ICH", "PHE", "IVH"]
        flat = segments.class_label_array(scene, logic, node, ct)
        np.testing.assert_array_equal(flat.label, label)


def test_import_seg_nrrd_maps_by_name_and_terminology(case, tmp_path):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    segmentation = node.GetSegmentation()
    segmentation.SetSegmentIndex("IVH", 0)  # reordered
    segmentation.GetSegment("PHE").SetName("Perihematomal oedema")  # renamed; terminology still says edema
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "edited.seg.nrrd"))
    assert storage.WriteData(node)
    again = segments.import_labelmap_as_segments(scene, logic, tmp_path / "edited.seg.nrrd", ct)
    assert segment_ids(again) == ["ICH", "PHE", "IVH"]
    np.testing.assert_array_equal(segments.class_label_array(scene, logic, again, ct).label, label)


def test_import_refuses_foreign_values_and_grids(case):
    scene, logic, ct, label, _ = case
    bad = label.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        segments.import_labelmap_as_segments(
            scene, logic, make_volume(scene, "vtkMRMLLabelMapVolumeNode", bad, "b"), ct
        )
    shifted_origin = (ORIGIN[0] + 0.25, ORIGIN[1], ORIGIN[2])
    shifted = make_volume(scene, "vtkMRMLLabelMapVolumeNode", label, "shifted", origin=shifted_origin)
    with pytest.raises(ValueError, match="origin differs"):
        segments.import_labelmap_as_segments(scene, logic, shifted, ct)
    with pytest.raises(FileNotFoundError):
        segments.import_labelmap_as_segments(scene, logic, "/nonexistent/label.nii.gz", ct)


def test_import_places_segmentation_in_the_volume_study(case):
    scene, logic, ct, _, label_node = case
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "Head CT")
    ct_item = sh.GetItemByDataNode(ct)
    if ct_item == sh.GetInvalidItemID():
        ct_item = sh.CreateItem(study, ct)
    else:
        sh.SetItemParent(ct_item, study)
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study


def test_import_follows_the_ct_transform(case):
    scene, logic, ct, label, label_node = case
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 17.3)
    matrix.SetElement(2, 3, -4.1)
    transform.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(transform.GetID())
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(segments.class_label_array(scene, logic, node, ct).label, label)
    assert measure.segment_volumes(scene, logic, node, ct).to_dict() == volumes.measure(label, SPACING).to_dict()


def test_reimport_replaces_classes_and_keeps_other_segments(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    segmentation = node.GetSegmentation()
    segmentation.AddEmptySegment("skull", "Skull")
    smaller = np.where(label == labels.PHE.value, 0, label).astype(np.uint8)
    before = scene.GetNumberOfNodes()
    again = segments.import_labelmap_as_segments(
        scene, logic, make_volume(scene, "vtkMRMLLabelMapVolumeNode", smaller, "smaller"), ct, node
    )
    assert again is node
    assert scene.GetNumberOfNodes() == before + 1  # the "smaller" labelmap: no scratch or colour nodes left
    assert set(segment_ids(node)) == {"ICH", "PHE", "IVH", "skull"}
    assert not segment_mask(scene, logic, node, "PHE", ct).any()
    before = scene.GetNumberOfNodes()
    measure.segment_volumes(scene, logic, node, ct)
    assert scene.GetNumberOfNodes() == before


# --------------------------------------------------------------------------- volumes


def test_segment_volumes_equal_core_measure(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    notes: list[str] = []
    got = measure.segment_volumes(scene, logic, node, ct, notes)
    expected = volumes.measure(label, SPACING)
    assert got.to_dict() == expected.to_dict()
    assert notes == []
    assert got.classes["IVH"].lesions == 2

    table = measure.volumes_table(scene, got)
    assert table.GetNumberOfRows() == 3
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == list(measure.TABLE_COLUMNS)
    for row, cls in enumerate(labels.CLASSES):
        cm = expected.classes[cls.key]
        assert table.GetCellText(row, 0) == cls.name
        assert float(table.GetCellText(row, 1)) == pytest.approx(cm.volume_ml, rel=1e-12)
        assert int(table.GetCellText(row, 2)) == cm.lesions
        assert int(table.GetCellText(row, 3)) == cm.voxels
    assert float(table.GetAttribute(measure.RATIO_ATTRIBUTE)) == pytest.approx(expected.phe_ich_ratio)
    assert float(table.GetAttribute(measure.ABC2_ATTRIBUTE)) == pytest.approx(expected.ich_abc2.volume_ml)
    assert measure.volumes_table(scene, got, table) is table and table.GetNumberOfRows() == 3

    text = measure.csv_text("case1", got)
    assert text == volumes.measurements_csv([("case1", expected)])
    assert "ICH" in measure.summary_text(got)


def test_adding_phe_voxels_changes_volume_by_voxel_count(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    before = measure.segment_volumes(scene, logic, node, ct)
    added = np.zeros(label.shape, dtype=bool)
    added[9:11, 2:5, 2:9] = True  # background only
    assert not label[added].any()
    paint(logic, node, "PHE", added, ct)
    after = measure.segment_volumes(scene, logic, node, ct)
    n = int(added.sum())
    voxel_ml = SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
    assert after.classes["PHE"].voxels == before.classes["PHE"].voxels + n
    assert after.classes["PHE"].volume_ml == pytest.approx(before.classes["PHE"].volume_ml + n * voxel_ml, rel=1e-12)
    assert after.classes["PHE"].lesions == before.classes["PHE"].lesions + 1
    for key in ("ICH", "IVH"):
        assert after.classes[key] == before.classes[key]


def test_painting_ich_over_phe_moves_voxels(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    before = measure.segment_volumes(scene, logic, node, ct)
    stroke = (label == labels.PHE.value) & (np.arange(DIMS[0])[None, None, :] < 12)
    n = int(stroke.sum())
    assert n > 0
    paint(logic, node, "ICH", stroke, ct, overwrite=True)
    after = measure.segment_volumes(scene, logic, node, ct)
    assert after.classes["ICH"].voxels == before.classes["ICH"].voxels + n
    assert after.classes["PHE"].voxels == before.classes["PHE"].voxels - n
    assert after.classes["IVH"] == before.classes["IVH"]
    assert not (segment_mask(scene, logic, node, "PHE", ct) & stroke).any()


def test_overlapping_segments_counted_once_with_priority(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    stroke = (label == labels.PHE.value) & (np.arange(DIMS[0])[None, None, :] < 12)
    n = int(stroke.sum())
    paint(logic, node, "ICH", stroke, ct, overwrite=False)  # "allow overlap"
    assert node.GetSegmentation().GetNumberOfLayers() == 2
    assert int(segment_mask(scene, logic, node, "PHE", ct).sum()) == int((label == 2).sum())  # PHE kept its voxels
    notes: list[str] = []
    after = measure.segment_volumes(scene, logic, node, ct, notes)
    assert after.classes["ICH"].voxels == int((label == 1).sum()) + n
    assert after.classes["PHE"].voxels == int((label == 2).sum()) - n
    assert any(f"{n} voxel(s) are in both ICH and PHE" in note for note in notes)


def test_segments_found_by_terminology_and_name_not_order(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    expected = measure.segment_volumes(scene, logic, node, ct)
    segmentation = node.GetSegmentation()
    segmentation.SetSegmentIndex("IVH", 0)
    segmentation.SetSegmentIndex("ICH", 2)
    phe = segmentation.GetSegment("PHE")
    phe.SetName("Segment_7")  # unknown name, terminology still says edema
    ivh = segmentation.GetSegment("IVH")
    ivh.SetTerminology("")  # no terminology, name says IVH
    got = measure.segment_volumes(scene, logic, node, ct)
    assert got.to_dict() == expected.to_dict()
    classes = segments.classify_segments(node)
    assert classes.by_class == {"ICH": ["ICH"], "PHE": ["PHE"], "IVH": ["IVH"]}

    segmentation.AddEmptySegment("bone", "Bone")
    notes: list[str] = []
    measure.segment_volumes(scene, logic, node, ct, notes)
    assert any("'Bone'" in note for note in notes)


def test_terminology_codes_forms():
    ich = labels.slicer_terminology_string(labels.ICH)
    assert segments.terminology_codes(ich) == ("50960005", "12738006")
    as_json = '{"category": ["SCT", "49755003", "x"], "type": ["SCT", "79654002", "Edema"]}'
    assert segments.terminology_codes(as_json) == ("79654002", None)
    as_dicts = '{"type": {"CodingSchemeDesignator": "SCT", "CodeValue": "50960005"}, "anatomicRegion": '
    as_dicts += '{"CodingSchemeDesignator": "SCT", "CodeValue": "279245009"}}'
    assert segments.terminology_codes(as_dicts) == ("50960005", "279245009")
    assert segments.terminology_codes("") == (None, None)
    assert segments.terminology_codes("{broken") == (None, None)


def test_overlap_priority_matches_core_reader():
    try:
        from ichseg.io import segnrrd
    except ImportError as exc:  # the core reader needs slicerio/SimpleITK
        pytest.skip(f"ichseg.io.segnrrd not importable: {exc}")
    assert segments.OVERLAP_PRIORITY == segnrrd.OVERLAP_PRIORITY


def test_color_table_from_scheme(mrml):
    scene, _ = mrml
    table = colors.color_table(scene)
    assert colors.color_table(scene) is table  # reused, not duplicated
    assert table.GetNumberOfColors() == 4
    for cls in labels.CLASSES:
        rgba = [0.0] * 4
        table.GetColor(cls.value, rgba)
        assert rgba[:3] == pytest.approx(cls.color_float, abs=1e-6)
        assert table.GetColorName(cls.value) == cls.name
        if hasattr(table, "GetTerminologyAsString"):
            assert segments.terminology_codes(table.GetTerminologyAsString(cls.value)) == SNOMED[cls.key]


def test_editing_record_counts_the_corrections_exactly(case):
    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    draft = segments.class_label_array(scene, logic, node, ct).label
    np.testing.assert_array_equal(draft, label)
    untouched = measure.editing_record(scene, logic, node, ct, draft, "m@1.0.0")
    assert untouched["draft_model"] == "m@1.0.0" and untouched["editing"]["edited"] is False

    add = np.zeros_like(label, dtype=bool)
    add[9:11, 2:6, 2:8] = True  # 2 x 4 x 6 = 48 new IVH voxels in background
    assert not label[add].any()
    paint(logic, node, "IVH", add, ct)
    record = measure.editing_record(scene, logic, node, ct, draft, "m@1.0.0")["editing"]
    voxel_ml = 0.5 * 0.5 * 5.0 / 1000.0
    assert record["edited"] and record["changed_voxels"] == 48
    assert record["classes"]["IVH"]["added_voxels"] == 48 and record["classes"]["IVH"]["removed_voxels"] == 0
    assert record["classes"]["IVH"]["added_ml"] == pytest.approx(48 * voxel_ml)
    assert record["classes"]["ICH"]["dice_draft_final"] == 1.0
    n_ivh = int((label == labels.IVH.value).sum())
    assert record["classes"]["IVH"]["dice_draft_final"] == pytest.approx(2 * n_ivh / (2 * n_ivh + 48))
    assert measure.editing_record(scene, logic, node, ct, None, None) == {"draft_model": None, "editing": None}


def test_scene_access_uses_the_injected_scene_and_logic(mrml):
    from ICHSegmentationLib.sceneaccess import SceneAccess

    scene, logic = mrml

    class Logic(SceneAccess):
        def __init__(self, scene=None, segmentationsLogic=None):
            self.initSceneAccess(scene, segmentationsLogic)

    injected = Logic(scene, logic)
    assert injected.scene is scene and injected.segmentationsLogic is logic
    node = injected.segmentationsLogic.GetMRMLScene().AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert injected.scene.GetNodeByID(node.GetID()) is node


def test_safe_name():
    from ICHSegmentationLib.editing import safe_name

    assert safe_name("Head CT: 2024/01 (axial)") == "Head_CT_2024_01_axial"
    assert safe_name("..") == safe_name("") == "case"


def test_segmentation_events_report_edits_of_the_node(case):
    from ICHSegmentationLib import editing

    scene, logic, ct, label, label_node = case
    node = segments.import_labelmap_as_segments(scene, logic, label_node, ct)
    events = editing.segmentation_events()
    seen = []
    for event in events:
        node.AddObserver(event, lambda caller, name, event=event: seen.append(event))
    node.GetSegmentation().RemoveSegment("IVH")
    assert slicer.vtkSegmentation.SegmentRemoved in seen
    seen.clear()
    node.GetSegmentation().AddEmptySegment("", "IVH")
    assert slicer.vtkSegmentation.SegmentAdded in seen
    seen.clear()
    add = np.zeros_like(label, dtype=bool)
    add[9:11, 2:6, 2:8] = True
    paint(logic, node, "ICH", add, ct)
    assert seen and set(seen) <= set(events)
