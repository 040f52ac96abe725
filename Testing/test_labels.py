"""The label scheme and its SNOMED-CT terminology."""

from ichseg import labels
from ichseg.labels import CLASSES, ICH, IVH, NUM_CLASSES, PHE, match_segment, slicer_terminology_string


def test_values_and_order():
    assert [c.value for c in CLASSES] == [1, 2, 3]
    assert [c.key for c in CLASSES] == ["ICH", "PHE", "IVH"]
    assert NUM_CLASSES == 4
    assert labels.class_by_value(0).key == "background"
    assert labels.class_by_key("ivh") is IVH


def test_colours_distinct_and_valid():
    colours = {c.color for c in CLASSES}
    assert len(colours) == 3
    for c in CLASSES:
        assert all(0 <= v <= 255 for v in c.color)
        assert all(0.0 <= v <= 1.0 for v in c.color_float)


def test_snomed_codes():
    # Category: morphologically altered structure for all three.
    for c in CLASSES:
        assert (c.category.scheme, c.category.value) == ("SCT", "49755003")
    # ICH: hemorrhage in the brain -- not the cerebellum (a published extension got this wrong).
    assert (ICH.type.value, ICH.type.meaning) == ("50960005", "Hemorrhage")
    assert (ICH.region.value, ICH.region.meaning) == ("12738006", "Brain")
    # PHE: edema in the brain.
    assert (PHE.type.value, PHE.type.meaning) == ("79654002", "Edema")
    assert PHE.region.value == "12738006"
    # IVH: hemorrhage in the ventricular system.
    assert IVH.type.value == "50960005"
    assert (IVH.region.value, IVH.region.meaning) == ("279245009", "Ventricular system")
    assert "Cerebellum" not in slicer_terminology_string(ICH)


def test_slicer_terminology_string_format():
    s = slicer_terminology_string(ICH)
    parts = s.split("~")
    assert parts[0] == "Segmentation category and type - 3D Slicer General Anatomy list"
    assert parts[1] == "SCT^49755003^Morphologically Altered Structure"
    assert parts[2] == "SCT^50960005^Hemorrhage"
    assert parts[4] == "Anatomic codes - DICOM master list"
    assert parts[5] == "SCT^12738006^Brain"
    assert slicer_terminology_string(IVH).split("~")[5] == "SCT^279245009^Ventricular system"


def test_match_segment_by_terminology_first():
    assert match_segment("whatever", "79654002", "12738006") is PHE
    assert match_segment("ICH", "50960005", "279245009") is IVH  # terminology wins over the name
    assert match_segment("Segment_1", "50960005", "12738006") is ICH


def test_match_segment_by_name():
    assert match_segment("ICH") is ICH
    assert match_segment("  intracerebral  Hemorrhage ") is ICH
    assert match_segment("Perihematomal_edema") is PHE
    assert match_segment("ivh") is IVH
    assert match_segment("Catheter") is None
    assert match_segment(None) is None
