"""The label scheme as a Slicer colour table: one entry per label value, with SNOMED terminology."""

from __future__ import annotations

import slicer

from ichseg import labels

__all__ = ["COLOR_TABLE_NAME", "SCHEME_ATTRIBUTE", "color_table", "fill_color_table"]

COLOR_TABLE_NAME = "ICHSegmentation labels"
#: Node attribute marking a colour table built by this module (value: the class keys, ``ICH,PHE,IVH``).
SCHEME_ATTRIBUTE = "ICHSegmentation.LabelScheme"


def _scheme_id() -> str:
    return ",".join(cls.key for cls in labels.CLASSES)


def fill_color_table(node: slicer.vtkMRMLColorTableNode) -> slicer.vtkMRMLColorTableNode:
    """Make ``node`` a user colour table: entry = label value; name, colour, terminology from :mod:`ichseg.labels`."""
    was_modifying = node.StartModify()
    try:
        node.SetTypeToUser()
        node.SetNumberOfColors(max(cls.value for cls in labels.CLASSES) + 1)
        node.SetColor(labels.BACKGROUND.value, labels.BACKGROUND.name, 0.0, 0.0, 0.0, 0.0)
        for cls in labels.CLASSES:
            node.SetColor(cls.value, cls.name, *cls.color_float, 1.0)
            # Colour tables carry terminology since Slicer 5.7; older versions just keep names and colours.
            if hasattr(node, "SetTerminologyFromString"):
                node.SetTerminologyFromString(cls.value, labels.slicer_terminology_string(cls))
        node.SetAttribute("Category", "Segmentation")
        node.SetAttribute(SCHEME_ATTRIBUTE, _scheme_id())
    finally:
        node.EndModify(was_modifying)
    return node


def color_table(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """The scheme's colour table in ``scene``: the existing one (refreshed) or a new one."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode")
        if node.GetAttribute(SCHEME_ATTRIBUTE) == _scheme_id():
            return fill_color_table(node)
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
    return fill_color_table(node)
