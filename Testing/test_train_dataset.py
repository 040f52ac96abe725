"""Training-case discovery and checks: Slicer .seg.nrrd segments mapped by name/terminology, bad cases skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from slicerio.segmentation import terminology_entry_from_string

from ichseg import labels
from ichseg.errors import InputError
from ichseg.preprocess import PreprocessConfig
from ichseg.train.cache import build_cache, scan_cases
from ichseg.train.dataset import discover, discover_all, load_case
from ichseg.train.synthetic import blob_case, make_blob_dataset


def _ijk_to_lps(image: sitk.Image) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return m


def _write_seg(path: Path, image: sitk.Image, masks: list[tuple[dict, np.ndarray]]) -> None:
    """A .seg.nrrd with the given segments (dict: name, labelValue, optional terminology string), one layer."""
    voxels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    segments = []
    for i, (seg, mask) in enumerate(masks):
        voxels[mask] = seg["labelValue"]
        entry = {
            "id": f"Segment_{i + 1}",
            "name": seg["name"],
            "color": [0.5, 0.5, 0.5],
            "labelValue": seg["labelValue"],
            "layer": 0,
            "extent": [0, voxels.shape[2] - 1, 0, voxels.shape[1] - 1, 0, voxels.shape[0] - 1],
        }
        if seg.get("terminology"):
            entry["terminology"] = terminology_entry_from_string(seg["terminology"])
        segments.append(entry)
    slicerio.write_segmentation(
        str(path),
        {
            "voxels": np.transpose(voxels, (2, 1, 0)),
            "ijkToLPS": _ijk_to_lps(image),
            "segments": segments,
            "containedRepresentationNames": ["Binary labelmap"],
            "masterRepresentation": "Binary labelmap",
            "referenceImageExtentOffset": [0, 0, 0],
        },
    )


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def slicer_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slicer_cases")
    for seed, name in enumerate(["reordered", "missing", "unknown", "grid", "mr", "subbox", "noseg"]):
        image, label = blob_case(seed, ivh_probability=1.0)
        lab = sitk.GetArrayFromImage(label)
        img = image
        if name == "mr":  # MR-like: no air below -500 HU
            img = sitk.Cast(sitk.Abs(sitk.Cast(image, sitk.sitkInt32)) // 2, sitk.sitkInt16)
        sitk.WriteImage(img, str(root / f"{name}.nrrd"))
        ich, phe, ivh = (lab == labels.ICH.value), (lab == labels.PHE.value), (lab == labels.IVH.value)
        if name == "reordered":
            # other order, other label values, names/aliases and terminology instead of our keys
            _write_seg(
                root / f"{name}.seg.nrrd",
                image,
                [
                    ({"name": "IVH", "labelValue": 1}, ivh),
                    ({"name": "Intracerebral hemorrhage", "labelValue": 2}, ich),
                    (
                        {
                            "name": "Segment_3",
                            "labelValue": 3,
                            "terminology": labels.slicer_terminology_string(labels.PHE),
                        },
                        phe,
                    ),
                ],
            )
        elif name == "missing":
            _write_seg(root / f"{name}.seg.nrrd", image, [({"name": "hematoma", "labelValue": 7}, ich)])
        elif name == "unknown":
            _write_seg(
                root / f"{name}.seg.nrrd",
                image,
                [({"name": "ICH", "labelValue": 1}, ich), ({"name": "Tumor", "labelValue": 2}, phe)],
            )
        elif name == "grid":
            other = sitk.Image(image.GetSize(), sitk.sitkInt16)
            other.SetSpacing([s * 1.1 for s in image.GetSpacing()])
            other.SetOrigin(image.GetOrigin())
            _write_seg(root / f"{name}.seg.nrrd", other, [({"name": "ICH", "labelValue": 1}, ich)])
        elif name == "mr":
            _write_seg(root / f"{name}.seg.nrrd", image, [({"name": "ICH", "labelValue": 1}, ich)])
        elif name == "subbox":  # Slicer may save a segmentation cropped to a sub-box of the CT grid
            sub = image[4:40, 6:44, 2:22]
            _write_seg(root / f"{name}.seg.nrrd", sub, [({"name": "ICH", "labelValue": 1}, ich[2:22, 6:44, 4:40])])
    (root / "orphan.seg.nrrd").write_bytes((root / "missing.seg.nrrd").read_bytes())
    (root / "reordered.json").write_text(json.dumps({"source": "unit test"}))
    return root


def test_discovery_pairs_by_stem_and_reports_unpaired(slicer_folder):
    d = discover(slicer_folder)
    assert d.formats == ["slicer"]
    assert sorted(c.name for c in d.cases) == ["grid", "missing", "mr", "reordered", "subbox", "unknown"]
    reasons = {s.name: s.reason for s in d.skipped}
    assert "no segmentation noseg.seg.nrrd" in reasons["noseg"]
    assert "without a CT" in reasons["orphan"]
    ref = next(c for c in d.cases if c.name == "reordered")
    assert ref.label_format == "seg.nrrd" and ref.sidecar is not None


def test_segments_mapped_by_name_and_terminology_not_order(slicer_folder):
    refs = {c.name: c for c in discover(slicer_folder).cases}
    image, label = blob_case(0, ivh_probability=1.0)
    expected = sitk.GetArrayFromImage(label)
    got = sitk.GetArrayFromImage(load_case(refs["reordered"]).label)
    assert set(np.unique(expected)) == {0, 1, 2, 3}
    assert np.array_equal(got, expected)
    _, label1 = blob_case(1, ivh_probability=1.0)
    only_ich = (sitk.GetArrayFromImage(label1) == labels.ICH.value).astype(np.uint8)
    assert np.array_equal(sitk.GetArrayFromImage(load_case(refs["missing"]).label), only_ich)
    # a segmentation saved on a sub-box of the CT grid is placed exactly on the full grid
    _, label5 = blob_case(5, ivh_probability=1.0)
    ich5 = sitk.GetArrayFromImage(label5) == labels.ICH.value
    sub = np.zeros_like(ich5)
    sub[2:22, 6:44, 4:40] = ich5[2:22, 6:44, 4:40]
    loaded = load_case(refs["subbox"])
    assert loaded.label.GetSize() == loaded.image.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(loaded.label), sub.astype(np.uint8))
    assert any("sub-box" in m for m in loaded.messages)


def test_bad_cases_are_reported_and_skipped_inputs_unchanged(slicer_folder, tmp_path):
    before = _hashes(slicer_folder)
    names_before = sorted(p.name for p in slicer_folder.iterdir())
    d = discover_all([slicer_folder])
    refs, infos, _, skipped = scan_cases(d.cases, tmp_path / "scan")
    reasons = {s.name: s.reason for s in skipped}
    assert sorted(reasons) == ["grid", "mr", "unknown"]
    assert "unknown segment(s) 'Tumor'" in reasons["unknown"]
    assert "label grid does not match the CT" in reasons["grid"]
    assert "not usable as a head CT" in reasons["mr"] and "-500" in reasons["mr"]
    assert all("\n" not in r for r in reasons.values())
    assert sorted(r.name for r in refs) == ["missing", "reordered", "subbox"]
    cached, skipped2 = build_cache(refs, PreprocessConfig((4.5, 4.5, 4.0)), tmp_path / "cache")
    assert not skipped2 and len(cached) == 3
    img, seg = cached[0].arrays()
    assert img.dtype == np.int16 and seg.dtype == np.uint8 and img.shape == seg.shape
    # inputs are only read
    assert _hashes(slicer_folder) == before
    assert sorted(p.name for p in slicer_folder.iterdir()) == names_before
    # a second scan is served from the cache (same reasons)
    _, _, _, again = scan_cases(d.cases, tmp_path / "scan")
    assert {s.name: s.reason for s in again} == reasons


def test_nnunet_dataset_json_labels_remapped_by_name(tmp_path):
    ds = make_blob_dataset(tmp_path / "ds", 1)
    meta = json.loads((ds / "dataset.json").read_text())
    # relabel the file: IVH=1, ICH=2, PHE=3 and say so in dataset.json
    path = ds / "labelsTr" / "blob_000.nii.gz"
    lab = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(lab)
    swapped = np.choose(arr, [0, 2, 3, 1]).astype(np.uint8)
    out = sitk.GetImageFromArray(swapped)
    out.CopyInformation(lab)
    sitk.WriteImage(out, str(path))
    meta["labels"] = {"background": 0, "IVH": 1, "ICH": 2, "PHE": 3}
    (ds / "dataset.json").write_text(json.dumps(meta))
    ref = discover(ds).cases[0]
    assert np.array_equal(sitk.GetArrayFromImage(load_case(ref).label), arr)
    meta["labels"] = {"background": 0, "ICH": 1, "SAH": 2}
    (ds / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="label 'SAH' .* is not recognised"):
        discover(ds)


def test_nnunet_missing_label_and_no_cases(tmp_path):
    ds = make_blob_dataset(tmp_path / "ds", 2)
    (ds / "labelsTr" / "blob_001.nii.gz").unlink()
    d = discover(ds)
    assert [c.name for c in d.cases] == ["blob_000"]
    assert "no label file" in d.skipped[0].reason
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no usable training cases"):
        discover_all([empty])
    with pytest.raises(InputError, match="not found"):
        discover(tmp_path / "nope")


def test_synthetic_phantom_dataset_passes_the_checks(tmp_path):
    from ichseg.train.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "Dataset500_Phantom", [11], matrix=128)
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["numTraining"] == 1 and meta["seeds"] == [11]
    assert meta["labels"] == {"background": 0, "ICH": 1, "PHE": 2, "IVH": 3}
    d = discover(ds)
    assert d.formats == ["nnunet"] and len(d.cases) == 1 and not d.skipped
    loaded = load_case(d.cases[0])
    assert loaded.label.GetSize() == loaded.image.GetSize()
    # a second call reuses the written case (resumable generation)
    stamp = (ds / "imagesTr" / f"{d.cases[0].name}_0000.nii.gz").stat().st_mtime_ns
    make_synthetic_dataset(ds, [11], matrix=128)
    assert (ds / "imagesTr" / f"{d.cases[0].name}_0000.nii.gz").stat().st_mtime_ns == stamp


def test_select_seeds_by_ich_pattern(tmp_path, capsys):
    from ichseg.phantom.generator import drawn_ich_pattern
    from ichseg.train.synthetic import main, select_seeds

    seeds = select_seeds(range(1, 200), ["fluid_level", "hyperacute"], count=5)
    assert len(seeds) == 5 and seeds == sorted(seeds) and 29 in seeds
    assert all(drawn_ich_pattern(s) in ("fluid_level", "hyperacute") for s in seeds)
    skipped = [s for s in range(1, seeds[-1]) if s not in seeds]
    assert skipped and all(drawn_ich_pattern(s) not in ("fluid_level", "hyperacute") for s in skipped)
    with pytest.raises(ValueError, match="unknown ICH pattern"):
        select_seeds(range(10), ["clotted"])
    for argv, message in (
        (["--seeds", "1:20", "--ich-patterns", "fluid_level", "--count", "9"], "only 0 of the seeds"),
        (["--seeds", "1:20", "--ich-patterns", "swirl"], "unknown ICH pattern"),
        (["--seeds", "1:20", "--count", "3"], "--count needs --ich-patterns"),
        (["--seeds", "1:20", "--ich-patterns", "hyperacute", "--count", "0"], "--count must be at least 1"),
    ):
        with pytest.raises(SystemExit) as e:
            main([str(tmp_path / "ds"), *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
    # the selection is recorded with the seeds it chose
    argv = ["--seeds", "1:200", "--ich-patterns", "fluid_level", "--count", "1", "--matrix", "48"]
    assert main([str(tmp_path / "ds"), *argv]) == 0
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["seeds"] == select_seeds(range(1, 200), ["fluid_level"], count=1)
    assert meta["selection"] == {"from_seeds": "1:200", "ich_patterns": ["fluid_level"], "count": 1}
