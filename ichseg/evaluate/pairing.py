"""Find label files in a prediction and a reference folder and pair them by case name.

The rule (the same for both folders):

* label files are ``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` and ``.seg.nrrd``
  files at the top of the folder, and in its ``labelsTr/`` and ``labelsTs/`` sub-folders
  (nnU-Net / Medical Segmentation Decathlon layout);
* the case name is the file name without its suffix and without one trailing tag out of
  :data:`TAGS` (``_labels``, ``_label``, ``_pred``, ...): ``case1_labels.nii.gz``,
  ``case1_pred.nii.gz``, ``case1.seg.nrrd`` and ``labelsTr/case1.nii.gz`` are all ``case1``;
* when a folder holds several files of one case, one is used, by preference: a tagged file
  (in the order of :data:`TAGS`), then an untagged ``.seg.nrrd``, then an untagged file in
  ``labelsTr/``/``labelsTs/``, then an untagged file at the top.  So ``case1_label.nii.gz``
  is used and ``case1.nii.gz`` (the CT written beside it by the synthetic generator) is not;
  among files of equal rank a labelmap is preferred to a ``.seg.nrrd``.  The others are
  listed as ``alternates``;
* cases present in one folder only are listed as unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..fileutil import full_suffix, stem

__all__ = ["LABEL_SUFFIXES", "LABEL_SUBFOLDERS", "TAGS", "Pairing", "case_name", "find_label_files", "pair_folders"]

LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
LABEL_SUBFOLDERS = ("labelsTr", "labelsTs")
#: Trailing name tags stripped to get the case name, in order of preference.
TAGS = ("_labels", "_label", "_pred", "_prediction", "_seg", "_segmentation", "_gt", "_mask")

RULE = (
    "case name = file name without suffix and without one trailing tag "
    f"({', '.join(TAGS)}); files at the folder top and in {'/, '.join(LABEL_SUBFOLDERS)}/; "
    "per case a tagged file is preferred, then .seg.nrrd, then labelsTr/labelsTs, then an untagged file"
)


@dataclass(frozen=True)
class LabelFile:
    case: str
    path: Path
    rank: tuple[int, int, int]


@dataclass
class Pairing:
    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)  # (case, prediction, reference)
    unmatched_pred: list[Path] = field(default_factory=list)
    unmatched_ref: list[Path] = field(default_factory=list)
    alternates: list[Path] = field(default_factory=list)  # further files of a paired or unmatched case, unused


def case_name(path: str | Path) -> tuple[str, str | None]:
    """``(case, tag)`` of a label file: the stem without one trailing tag of :data:`TAGS`."""
    name = stem(path)
    for tag in TAGS:
        if name.lower().endswith(tag) and len(name) > len(tag):
            return name[: -len(tag)], tag
    return name, None


def _rank(path: Path, tag: str | None, in_subfolder: bool) -> tuple[int, int, int]:
    segnrrd = int(full_suffix(path) == ".seg.nrrd")
    if tag is not None:
        return 0, TAGS.index(tag), segnrrd
    if segnrrd:
        return 1, 0, 0
    return (2 if in_subfolder else 3), 0, 0


def find_label_files(folder: str | Path, what: str = "label") -> tuple[dict[str, Path], list[Path]]:
    """``({case: chosen file}, alternates)`` of a folder (see the module docstring)."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{what} folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"{what} folder is not a folder: {root}")
    candidates: dict[str, list[LabelFile]] = {}
    places = [(root, False)] + [(root / sub, True) for sub in LABEL_SUBFOLDERS if (root / sub).is_dir()]
    for place, in_subfolder in places:
        for path in sorted(place.iterdir()):
            if path.name.startswith(".") or not path.is_file() or full_suffix(path) not in LABEL_SUFFIXES:
                continue
            case, tag = case_name(path)
            candidates.setdefault(case, []).append(LabelFile(case, path, _rank(path, tag, in_subfolder)))
    chosen: dict[str, Path] = {}
    alternates: list[Path] = []
    for case, files in sorted(candidates.items()):
        files.sort(key=lambda f: (f.rank, str(f.path)))
        chosen[case] = files[0].path
        alternates.extend(f.path for f in files[1:])
    return chosen, alternates


def pair_folders(pred_dir: str | Path, ref_dir: str | Path) -> Pairing:
    """Pair prediction and reference files by case name; InputError when no case is in both."""
    preds, pred_alternates = find_label_files(pred_dir, "prediction")
    refs, ref_alternates = find_label_files(ref_dir, "reference")
    common = sorted(set(preds) & set(refs))
    if not common:
        raise InputError(
            f"no case is in both folders: {len(preds)} prediction case(s) in {pred_dir}, "
            f"{len(refs)} reference case(s) in {ref_dir} (pairing rule: {RULE})"
        )
    return Pairing(
        pairs=[(case, preds[case], refs[case]) for case in common],
        unmatched_pred=[preds[c] for c in sorted(set(preds) - set(refs))],
        unmatched_ref=[refs[c] for c in sorted(set(refs) - set(preds))],
        alternates=pred_alternates + ref_alternates,
    )
