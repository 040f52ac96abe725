"""The label scheme: the one place that defines classes, names, colours and terminology.

Every other part of the project (files, Slicer segments, training targets, reports)
reads the scheme from here.  Values: 0 background, 1 ICH, 2 PHE, 3 IVH.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CodedConcept",
    "LabelClass",
    "BACKGROUND",
    "ICH",
    "PHE",
    "IVH",
    "CLASSES",
    "NUM_CLASSES",
    "class_by_value",
    "class_by_key",
    "match_segment",
    "slicer_terminology_string",
]


@dataclass(frozen=True)
class CodedConcept:
    """A coded concept as used in DICOM/Slicer terminologies (scheme, value, meaning)."""

    scheme: str
    value: str
    meaning: str

    def as_slicer(self) -> str:
        """Format as Slicer's ``scheme^value^meaning`` triplet."""
        return f"{self.scheme}^{self.value}^{self.meaning}"

    def as_dict(self) -> dict[str, str]:
        return {"CodingSchemeDesignator": self.scheme, "CodeValue": self.value, "CodeMeaning": self.meaning}


MORPHOLOGICALLY_ALTERED_STRUCTURE = CodedConcept("SCT", "49755003", "Morphologically Altered Structure")
HEMORRHAGE = CodedConcept("SCT", "50960005", "Hemorrhage")
EDEMA = CodedConcept("SCT", "79654002", "Edema")
BRAIN = CodedConcept("SCT", "12738006", "Brain")
VENTRICULAR_SYSTEM = CodedConcept("SCT", "279245009", "Ventricular system")


@dataclass(frozen=True)
class LabelClass:
    """One class of the scheme."""

    value: int
    key: str  # short id used in files, JSON keys and Slicer segment IDs
    name: str  # display name of the Slicer segment
    description: str
    color: tuple[int, int, int]  # RGB 0-255
    category: CodedConcept | None
    type: CodedConcept | None
    region: CodedConcept | None
    aliases: tuple[str, ...] = ()

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]


BACKGROUND = LabelClass(0, "background", "Background", "Background", (0, 0, 0), None, None, None)
ICH = LabelClass(
    1,
    "ICH",
    "ICH",
    "Intracerebral hemorrhage",
    (216, 40, 40),
    MORPHOLOGICALLY_ALTERED_STRUCTURE,
    HEMORRHAGE,
    BRAIN,
    aliases=("intracerebral hemorrhage", "intracerebral haemorrhage", "hematoma", "haematoma", "hemorrhage", "ich"),
)
PHE = LabelClass(
    2,
    "PHE",
    "PHE",
    "Perihematomal edema",
    (250, 200, 40),
    MORPHOLOGICALLY_ALTERED_STRUCTURE,
    EDEMA,
    BRAIN,
    aliases=("perihematomal edema", "perihaematomal oedema", "perihematomal oedema", "edema", "oedema", "phe"),
)
IVH = LabelClass(
    3,
    "IVH",
    "IVH",
    "Intraventricular hemorrhage",
    (40, 120, 240),
    MORPHOLOGICALLY_ALTERED_STRUCTURE,
    HEMORRHAGE,
    VENTRICULAR_SYSTEM,
    aliases=("intraventricular hemorrhage", "intraventricular haemorrhage", "ivh"),
)

#: Foreground classes in label-value order.
CLASSES: tuple[LabelClass, ...] = (ICH, PHE, IVH)
#: Number of output channels of a model, background included.
NUM_CLASSES = len(CLASSES) + 1

_BY_VALUE = {c.value: c for c in (BACKGROUND, *CLASSES)}
_BY_KEY = {c.key.lower(): c for c in CLASSES}


def class_by_value(value: int) -> LabelClass:
    """Return the class with this label value (KeyError if unknown)."""
    return _BY_VALUE[int(value)]


def class_by_key(key: str) -> LabelClass:
    """Return the foreground class with this key, case-insensitive (KeyError if unknown)."""
    return _BY_KEY[key.lower()]


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").lower().split())


def match_segment(name: str | None, type_code: str | None = None, region_code: str | None = None) -> LabelClass | None:
    """Map a segment to a class by terminology first, then by name; never by order.

    ``type_code``/``region_code`` are SNOMED-CT code values (e.g. "50960005").  A
    hemorrhage in the ventricular system is IVH, elsewhere ICH; edema is PHE.
    Returns None when the segment cannot be identified.
    """
    if type_code:
        if type_code == EDEMA.value:
            return PHE
        if type_code == HEMORRHAGE.value:
            return IVH if region_code == VENTRICULAR_SYSTEM.value else ICH
    if name:
        n = _norm(name)
        for cls in CLASSES:
            if n == cls.key.lower() or n in (_norm(a) for a in cls.aliases):
                return cls
    return None


def slicer_terminology_string(cls: LabelClass) -> str:
    """The ``TerminologyEntry`` tag value that 3D Slicer stores in .seg.nrrd files."""
    if cls.category is None or cls.type is None:
        raise ValueError("background has no terminology")
    region = cls.region.as_slicer() if cls.region else "^^"
    return (
        "Segmentation category and type - 3D Slicer General Anatomy list"
        f"~{cls.category.as_slicer()}~{cls.type.as_slicer()}~^^"
        f"~Anatomic codes - DICOM master list~{region}~^^"
    )
