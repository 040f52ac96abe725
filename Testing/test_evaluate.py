"""Evaluation: metrics against hand-computed values, agreement statistics, pairing, ``ichseg evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ichseg.cli import main
from ichseg.errors import InputError
from ichseg.evaluate import evaluate_case
from ichseg.evaluate.agreement import bland_altman, lins_ccc, pearson_r, volume_agreement
from ichseg.evaluate.lesions import detect_lesions
from ichseg.evaluate.loading import read_pair
from ichseg.evaluate.metrics import class_metrics, dice, surface_metrics
from ichseg.evaluate.pairing import case_name, find_label_files, pair_folders
from ichseg.evaluate.summary import describe


def cube(shape: tuple[int, int, int], start: tuple[int, int, int], side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + side) for s in start)] = True
    return mask


# --- Dice and the empty-case conventions -------------------------------------------------


def test_dice_known_overlap():
    pred = np.zeros((1, 1, 10), dtype=bool)
    ref = np.zeros((1, 1, 10), dtype=bool)
    pred[0, 0, 0:4] = True  # 4 voxels
    ref[0, 0, 1:7] = True  # 6 voxels, 3 shared
    assert dice(pred, ref) == pytest.approx(2 * 3 / (4 + 6))
    assert dice(pred, pred) == 1.0
    assert dice(pred, ~pred) == 0.0


def test_empty_conventions():
    empty = np.zeros((4, 5, 6), dtype=bool)
    lesion = cube((4, 5, 6), (1, 1, 1), 2)
    spacing = (1.0, 1.0, 1.0)

    both = class_metrics(empty, empty, spacing)
    assert both["dice_empty1"] == 1.0 and both["dice_pos"] is None
    assert both["hd95_mm"] is None and both["nsd"] is None and both["rvd"] is None
    assert both["lesions"]["sensitivity"] is None and both["lesions"]["false_positives"] == 0

    missed = class_metrics(empty, lesion, spacing)  # empty prediction, non-empty reference
    assert missed["dice_empty1"] == 0.0 and missed["dice_pos"] == 0.0
    assert missed["hd95_mm"] is None and missed["nsd"] is None
    assert missed["rvd"] == -1.0
    assert missed["lesions"]["sensitivity"] == 0.0

    spurious = class_metrics(lesion, empty, spacing)  # non-empty prediction, empty reference
    assert spurious["dice_empty1"] == 0.0 and spurious["dice_pos"] is None
    assert spurious["hd95_mm"] is None and spurious["nsd"] is None and spurious["rvd"] is None
    assert spurious["lesions"]["false_positives"] == 1
    assert spurious["abs_volume_error_ml"] == pytest.approx(8 / 1000)


# --- Surface distances (MONAI) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("axis", "expected_hd95", "expected_nsd"),
    [
        (0, 3 * 5.0, 0.0),  # array axis 0 is z: spacing[2]; distances 10 and 15 mm > 2 mm
        (2, 3 * 0.7, 0.5),  # array axis 2 is x: spacing[0]; distances 1.4 mm (<= 2 mm) and 2.1 mm
    ],
)
def test_hd95_shifted_small_cubes(axis, expected_hd95, expected_nsd):
    # 2x2x2 cubes are all surface; shifted by 3 voxels, half the surface voxels are 2 and half 3 voxels
    # from the other cube's nearest voxel, so the 95th percentile (and the maximum) is 3 voxels.
    start = [2, 2, 2]
    ref = cube((10, 10, 10), tuple(start), 2)
    start[axis] += 3
    pred = cube((10, 10, 10), tuple(start), 2)
    hd95, nsd = surface_metrics(pred, ref, (0.7, 0.5, 5.0))
    assert hd95 == pytest.approx(expected_hd95, rel=1e-6)
    assert nsd == pytest.approx(expected_nsd)


def _brute_force_hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Independent HD95: surface voxels by erosion, distances by an exact EDT, linear-interpolated percentile."""
    edges_p = pred & ~ndimage.binary_erosion(pred)
    edges_r = ref & ~ndimage.binary_erosion(ref)
    d_pr = ndimage.distance_transform_edt(~edges_r, sampling=spacing_zyx)[edges_p]
    d_rp = ndimage.distance_transform_edt(~edges_p, sampling=spacing_zyx)[edges_r]
    return max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))


def test_hd95_large_cubes_anisotropic_matches_brute_force():
    ref = cube((16, 24, 24), (4, 5, 5), 8)
    pred = cube((16, 24, 24), (6, 5, 7), 8)  # shifted 2 voxels in z and 2 in x
    spacing = (0.45, 0.6, 2.5)  # x, y, z
    hd95, _ = surface_metrics(pred, ref, spacing)
    assert hd95 == pytest.approx(_brute_force_hd95(pred, ref, spacing[::-1]), rel=1e-5)
    # Cropping to the union box must not change anything: same result in a much larger volume.
    big_pred = np.zeros((40, 60, 60), dtype=bool)
    big_ref = np.zeros((40, 60, 60), dtype=bool)
    big_pred[10:26, 20:44, 30:54] = pred
    big_ref[10:26, 20:44, 30:54] = ref
    assert surface_metrics(big_pred, big_ref, spacing)[0] == pytest.approx(hd95, rel=1e-6)


def test_surface_dice_identical_far_and_tolerance_in_mm():
    ref = cube((20, 20, 20), (5, 5, 5), 6)
    assert surface_metrics(ref, ref, (1.0, 1.0, 1.0)) == (0.0, 1.0)
    far = cube((20, 20, 20), (5, 5, 13), 6)  # 8 voxels away along x: nearest surfaces 3 mm apart
    assert surface_metrics(far, ref, (1.0, 1.0, 1.0))[1] == 0.0
    shifted = cube((20, 20, 20), (6, 5, 5), 6)  # one voxel along z
    assert surface_metrics(shifted, ref, (1.0, 1.0, 1.0), tolerance_mm=2.0)[1] == 1.0  # 1 mm <= 2 mm
    nsd_thick = surface_metrics(shifted, ref, (1.0, 1.0, 3.0), tolerance_mm=2.0)[1]  # 3 mm slices
    assert 0.0 < nsd_thick < 1.0


# --- Volumes ---------------------------------------------------------------------------------


def test_volumes_and_rvd():
    spacing = (0.5, 0.5, 2.0)  # 0.5 mm^3 per voxel
    ref = np.zeros((3, 4, 5), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[1, 0:2, 0:4] = 1  # 8 voxels of ICH
    pred[1, 0:2, 0:5] = 1  # 10 voxels
    pred[2, 0, 0] = 3  # IVH only in the prediction
    m = evaluate_case(pred, ref, spacing)
    ich = m["ICH"]
    assert ich["volume_ref_ml"] == pytest.approx(8 * 0.5 / 1000)
    assert ich["volume_pred_ml"] == pytest.approx(10 * 0.5 / 1000)
    assert ich["rvd"] == pytest.approx((10 - 8) / 8)
    assert ich["abs_volume_error_ml"] == pytest.approx(2 * 0.5 / 1000)
    assert ich["dice_empty1"] == pytest.approx(2 * 8 / 18)
    assert m["PHE"]["dice_empty1"] == 1.0 and m["PHE"]["dice_pos"] is None
    assert m["IVH"]["rvd"] is None and m["IVH"]["volume_pred_ml"] == pytest.approx(0.5 / 1000)
    assert isinstance(ich["volume_ref_ml"], float)


def test_evaluate_case_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8), (1, 1))


# --- Lesion-level detection -----------------------------------------------------------------


def test_lesion_detection_one_missed_one_false_positive():
    shape = (10, 20, 20)
    ref = cube(shape, (1, 1, 1), 3) | cube(shape, (1, 12, 12), 3)  # two reference lesions
    pred = cube(shape, (2, 2, 2), 2)  # overlaps the first lesion only
    pred |= cube(shape, (7, 1, 14), 2)  # a false positive far from both
    result = detect_lesions(pred, ref)
    assert (result.ref_lesions, result.pred_lesions, result.detected, result.false_positives) == (2, 2, 1, 1)
    assert result.sensitivity == 0.5


def test_lesions_are_26_connected():
    ref = np.zeros((3, 3, 3), dtype=bool)
    ref[0, 0, 0] = ref[1, 1, 1] = ref[2, 2, 2] = True  # corner-touching voxels: one lesion
    assert detect_lesions(np.zeros_like(ref), ref).ref_lesions == 1


# --- Agreement --------------------------------------------------------------------------------


def test_ccc_perfect_and_known_example():
    x = [1.0, 5.0, 12.0, 30.0]
    assert lins_ccc(x, x) == pytest.approx(1.0)
    pred = np.array([2.0, 4.0, 7.0, 9.0, 15.0])
    ref = np.array([1.0, 5.0, 6.0, 10.0, 12.0])
    mx, my = pred.mean(), ref.mean()
    sxy = ((pred - mx) * (ref - my)).sum() / len(pred)
    expected = 2 * sxy / (pred.var() + ref.var() + (mx - my) ** 2)
    assert lins_ccc(pred, ref) == pytest.approx(expected)
    assert pearson_r(pred, ref) == pytest.approx(np.corrcoef(pred, ref)[0, 1])
    # A constant offset keeps r = 1 but lowers the CCC.
    assert pearson_r(ref + 5, ref) == pytest.approx(1.0)
    assert lins_ccc(ref + 5, ref) < 0.9
    assert lins_ccc([1.0], [1.0]) is None and pearson_r([2.0, 2.0], [1.0, 3.0]) is None


def test_bland_altman_small_list():
    ba = bland_altman([1.0, 2.0, 3.0, 4.0], [1.5, 1.5, 2.5, 5.0])
    # differences -0.5, 0.5, 0.5, -1.0: mean -0.125, SD sqrt(1.6875 / 3) = 0.75
    assert ba["n"] == 4
    assert ba["mean_diff"] == pytest.approx(-0.125)
    assert ba["sd_diff"] == pytest.approx(0.75)
    assert ba["loa_lower"] == pytest.approx(-0.125 - 1.96 * 0.75)
    assert ba["loa_upper"] == pytest.approx(-0.125 + 1.96 * 0.75)
    agreement = volume_agreement([1.0, 2.0, 3.0, 4.0], [1.5, 1.5, 2.5, 5.0])
    assert agreement["n"] == 4 and agreement["bland_altman"]["sd_diff_ml"] == pytest.approx(0.75)


def test_describe():
    d = describe([1.0, None, 2.0, 3.0, 4.0])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["median"] == 2.5
    assert (d["q1"], d["q3"], d["iqr"]) == (1.75, 3.25, 1.5)
    assert describe([None])["mean"] is None


# --- Pairing and grids ----------------------------------------------------------------------


def test_case_names():
    assert case_name("a/case1_labels.nii.gz") == ("case1", "_labels")
    assert case_name("case1.seg.nrrd") == ("case1", None)
    assert case_name("case1_pred.nii.gz") == ("case1", "_pred")
    assert case_name("labelsTr/case1.nii.gz") == ("case1", None)
    assert case_name("_label.nii.gz") == ("_label", None)


def write_label(path: Path, labels: np.ndarray, spacing=(0.5, 0.5, 3.0), origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def test_find_label_files_prefers_label_over_ct(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint8)
    write_label(tmp_path / "c1.nii.gz", labels)  # the CT beside the label (synthetic generator layout)
    write_label(tmp_path / "c1_label.nii.gz", labels)
    write_label(tmp_path / "labelsTr" / "c2.nii.gz", labels)
    (tmp_path / "c1.json").write_text("{}")
    chosen, alternates = find_label_files(tmp_path)
    assert chosen == {"c1": tmp_path / "c1_label.nii.gz", "c2": tmp_path / "labelsTr" / "c2.nii.gz"}
    assert alternates == [tmp_path / "c1.nii.gz"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no case is in both"):
        pair_folders(tmp_path, tmp_path / "empty")
    with pytest.raises(InputError, match="reference folder not found"):
        pair_folders(tmp_path, tmp_path / "missing")


def test_cropped_seg_nrrd_is_padded(tmp_path):
    from ichseg.io import write_seg_nrrd

    ref = np.zeros((6, 10, 12), np.uint8)
    ref[2:4, 3:6, 4:8] = 1
    ref_path = write_label(tmp_path / "c_label.nii.gz", ref, origin=(-3.0, 4.0, 10.0))
    reference = sitk.ReadImage(str(ref_path))
    sub = reference[2:10, 1:8, 1:5]  # x, y, z sub-box, physically aligned with the reference grid
    write_seg_nrrd(ref[1:5, 1:8, 2:10], sub, tmp_path / "c.seg.nrrd")
    pred, ref_read, spacing = read_pair(tmp_path / "c.seg.nrrd", ref_path)
    np.testing.assert_array_equal(pred, ref)
    assert spacing == pytest.approx((0.5, 0.5, 3.0))
    shifted = write_label(tmp_path / "s_pred.nii.gz", ref, origin=(-2.0, 4.0, 10.0))
    with pytest.raises(InputError, match="origin differs"):
        read_pair(shifted, ref_path)


# --- ichseg evaluate ------------------------------------------------------------------------


def make_study(tmp_path: Path) -> tuple[Path, Path]:
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    rng = np.random.default_rng(3)
    for i, case in enumerate(["alpha", "beta", "gamma"]):
        ref = np.zeros((8, 32, 32), np.uint8)
        ref[2:6, 8 + i : 20 + i, 8:20] = 2
        ref[3:5, 10 + i : 18 + i, 10:18] = 1
        if i != 1:
            ref[4:6, 24:28, 24:28] = 3
        pred = np.roll(ref, i, axis=2)
        if i == 2:
            pred[0, 0:2, 0:2] = 1  # a false-positive lesion
        write_label(ref_dir / (f"{case}_label.nii.gz" if i < 2 else f"labelsTr/{case}.nii.gz"), ref)
        write_label(pred_dir / f"{case}{['_labels', '_pred', ''][i]}.nii.gz", pred)
    ct = rng.integers(-1000, 1000, size=(8, 32, 32)).astype(np.int16)
    write_label(ref_dir / "alpha.nii.gz", ct)  # the CT beside alpha's label: must not be used
    write_label(pred_dir / "orphan_labels.nii.gz", np.zeros((8, 32, 32), np.uint8))  # unmatched
    write_label(pred_dir / "delta_labels.nii.gz", np.zeros((8, 32, 30), np.uint8))  # grid mismatch
    write_label(ref_dir / "delta_label.nii.gz", np.zeros((8, 32, 32), np.uint8))
    return pred_dir, ref_dir


def test_evaluate_command_end_to_end(tmp_path, capsys, caplog):
    pred_dir, ref_dir = make_study(tmp_path)
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.md", "bland_altman.png", "volume_scatter.png"}
    for png in ("bland_altman.png", "volume_scatter.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = json.loads((out / "metrics.json").read_text())
    assert result["pairing"]["pairs"] == 4
    assert [Path(p).name for p in result["pairing"]["unmatched_pred"]] == ["orphan_labels.nii.gz"]
    assert [Path(p).name for p in result["pairing"]["alternates"]] == ["alpha.nii.gz"]
    cases = {c["case"]: c for c in result["cases"]}
    assert set(cases) == {"alpha", "beta", "gamma", "delta"}
    assert cases["delta"]["status"] == "error" and "size" in cases["delta"]["error"]
    assert Path(cases["alpha"]["ref"]).name == "alpha_label.nii.gz"
    assert cases["alpha"]["classes"]["ICH"]["dice_empty1"] == 1.0
    assert cases["alpha"]["classes"]["ICH"]["hd95_mm"] == 0.0
    assert cases["beta"]["classes"]["IVH"]["dice_pos"] is None
    assert cases["beta"]["classes"]["ICH"]["hd95_mm"] == pytest.approx(0.5)  # one voxel along x
    assert cases["gamma"]["classes"]["ICH"]["lesions"]["false_positives"] == 1

    summary = result["summary"]
    assert (summary["n_cases"], summary["n_ok"], summary["n_errors"]) == (4, 3, 1)
    ich = summary["classes"]["ICH"]
    assert ich["dice_pos"]["n"] == 3 and ich["lesions"]["false_positives"] == 1
    assert summary["classes"]["IVH"]["dice_pos"]["n"] == 2 and summary["classes"]["IVH"]["dice_empty1"]["n"] == 3
    assert ich["volume_agreement"]["n"] == 3 and not math.isnan(ich["volume_agreement"]["ccc"])
    assert result["settings"]["nsd_tolerance_mm"] == 2.0

    md = (out / "metrics.md").read_text()
    assert "| ICH | PHE | IVH |" in md and "orphan_labels.nii.gz" in md and "delta" in md
    assert "orphan_labels.nii.gz" in caplog.text  # unmatched files are warned about (stderr via logging)
    assert "3 of 4 case(s) evaluated" in capsys.readouterr().out


def test_evaluate_command_missing_folder(tmp_path, capsys):
    code = main(["evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path), "-o", str(tmp_path / "o")])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "prediction folder not found" in err
    assert not (tmp_path / "o").exists()


def test_evaluate_command_no_pairs(tmp_path, capsys):
    write_label(tmp_path / "p" / "a_labels.nii.gz", np.zeros((2, 3, 4), np.uint8))
    write_label(tmp_path / "r" / "b_label.nii.gz", np.zeros((2, 3, 4), np.uint8))
    code = main(["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "-o", str(tmp_path / "o")])
    assert code != 0
    assert "no case is in both folders" in capsys.readouterr().err
