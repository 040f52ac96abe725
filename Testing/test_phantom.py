"""Tests of the synthetic head-CT generator (ichseg.phantom)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ichseg.phantom import (
    CASE_KINDS,
    SLICE_THICKNESSES,
    PhantomCase,
    draw_ich_volume,
    draw_ivh_volume,
    generate_case,
    write_case,
)
from ichseg.phantom.generator import drawn_ich_pattern, drawn_kind_and_thickness

CLASS_NAMES = {1: "ICH", 2: "PHE", 3: "IVH"}


def arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def voxel_ml(case: PhantomCase) -> float:
    sx, sy, sz = case.image.GetSpacing()
    return sx * sy * sz / 1000.0


@pytest.fixture(scope="module")
def full_case() -> PhantomCase:
    """One full-size case (512 × 512 × ~32 slices of 5 mm, gantry tilt) with all three classes."""
    return generate_case(21, "ich_phe_ivh", 5.0)


@pytest.fixture(scope="module")
def small_cases() -> dict[str, PhantomCase]:
    """One small (128 × 128) case of every kind."""
    seeds = {"negative": 11, "ich": 12, "ich_phe": 13, "ich_phe_ivh": 14, "ivh": 15}
    return {k: generate_case(s, k, 5.0, matrix=128) for k, s in seeds.items()}


# ---------------------------------------------------------------- geometry


def test_full_case_geometry(full_case: PhantomCase) -> None:
    img, lab = full_case.image, full_case.label
    assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
    nx, ny, nz = img.GetSize()
    assert (nx, ny) == (512, 512) and 24 <= nz <= 45
    sx, sy, sz = img.GetSpacing()
    assert 0.40 <= sx <= 0.50 and sx == sy and sz == 5.0
    for other in (lab, full_case.ventricles, full_case.brain):
        assert other.GetSize() == img.GetSize()
        assert other.GetSpacing() == img.GetSpacing()
        assert other.GetOrigin() == img.GetOrigin()
        assert other.GetDirection() == img.GetDirection()
    d = np.array(img.GetDirection()).reshape(3, 3)
    assert np.allclose(d @ d.T, np.eye(3), atol=1e-9)
    assert np.linalg.norm(img.GetOrigin()) > 50  # a realistic, non-zero origin
    p = full_case.params
    assert p["size"] == [nx, ny, nz] and np.allclose(p["spacing"], img.GetSpacing())
    assert np.allclose(p["direction"], img.GetDirection()) and np.allclose(p["origin"], img.GetOrigin())
    assert full_case.name == "synth_000021" and p["seed"] == 21 and p["kind"] == "ich_phe_ivh"
    json.dumps(p)  # serialisable


def test_gantry_tilt_direction_like_real_scan() -> None:
    tilted = None
    for seed in range(40):
        case = generate_case(seed, "negative", 5.0, matrix=48)
        d = np.array(case.image.GetDirection()).reshape(3, 3)
        assert np.allclose(d @ d.T, np.eye(3), atol=1e-9)
        t = case.params["gantry_tilt_deg"]
        assert 0.0 <= t <= 25.0
        if t > 5:
            tilted = (d, t)
            break
    assert tilted is not None, "no gantry-tilted case among 40 seeds"
    d, t = tilted
    c, s = np.cos(np.radians(t)), np.sin(np.radians(t))
    assert np.allclose(d, [[1, 0, 0], [0, -c, s], [0, s, c]], atol=1e-9)


def test_anatomy_sizes(full_case: PhantomCase) -> None:
    img = arr(full_case.image).astype(np.float32)
    brain = arr(full_case.brain).astype(bool)
    sx, sy, _ = full_case.image.GetSpacing()
    cm2 = sx * sy / 100.0
    k = int(np.argmax(brain.sum(axis=(1, 2))))
    head = ndimage.binary_fill_holes(img[k] > -300)
    skull = (img[k] > 300) & head
    cavity = ndimage.binary_fill_holes(skull) & ~skull
    assert 180 <= head.sum() * cm2 <= 250
    assert 25 <= skull.sum() * cm2 <= 45
    assert 120 <= cavity.sum() * cm2 <= 185
    assert 1200 <= full_case.params["lesions"]["intracranial_volume_ml"] <= 1750
    assert 900 <= brain.sum() * voxel_ml(full_case) <= 1500


# ------------------------------------------------------------- HU realism


def test_tissue_hu_statistics(full_case: PhantomCase) -> None:
    img = arr(full_case.image).astype(np.float32)
    lab = arr(full_case.label)
    brain = arr(full_case.brain).astype(bool)
    vent = arr(full_case.ventricles).astype(bool)
    near = ndimage.binary_dilation(lab > 0, iterations=6)
    par = ndimage.binary_erosion(brain, iterations=2) & ~near
    p5, p50, p95 = np.percentile(img[par], [5, 50, 95])
    assert 18 <= p5 <= 30 and 31 <= p50 <= 40 and 38 <= p95 <= 55
    csf = ndimage.binary_erosion(vent, iterations=1) & (lab == 0)
    assert -5 <= np.median(img[csf]) <= 15
    skull = img > 300
    s50, s95 = np.percentile(img[skull], [50, 95])
    assert 700 <= s50 <= 1300 and 1200 <= s95 <= 2000
    assert img.min() >= -1024 and img.max() <= 3071
    air = img < -900
    assert abs(np.median(img[air]) + 1000) < 30


def test_lesion_hu_statistics(full_case: PhantomCase) -> None:
    img = arr(full_case.image).astype(np.float32)
    lab = arr(full_case.label)
    ich, phe, ivh = img[lab == 1], img[lab == 2], img[lab == 3]
    assert 52 <= ich.mean() <= 72 and 5 <= ich.std() <= 14
    assert 50 <= np.percentile(ich, 75) <= 80
    assert 22 <= phe.mean() <= 40
    assert 45 <= ivh.mean() <= 75
    # oedema is darker than the haematoma and than normal white/grey matter around it
    assert phe.mean() < ich.mean() - 15
    assert -10.0 <= _phe_contrast(full_case)[0] <= -4.0


def _phe_contrast(case: PhantomCase) -> tuple[float, float]:
    """(median HU of the oedema core, more than 2 mm from the haematoma, minus that of the parenchyma
    4–8 mm outside the lesion; the fraction of oedema voxels in that core)."""
    img = arr(case.image).astype(np.float32)
    lab = arr(case.label)
    sampling = case.image.GetSpacing()[::-1]
    from_ich = ndimage.distance_transform_edt(lab != 1, sampling=sampling)
    from_lesion = ndimage.distance_transform_edt((lab != 1) & (lab != 2), sampling=sampling)
    core = (lab == 2) & (from_ich > 2.0)
    around = (lab == 0) & (from_lesion > 4.0) & (from_lesion < 8.0) & (img > 15) & (img < 60)
    return float(np.median(img[core]) - np.median(img[around])), float(core.sum() / (lab == 2).sum())


@pytest.mark.parametrize("seed", [88])
def test_oedema_around_a_small_bleed_is_a_visible_rim(seed: int) -> None:
    # real PHE: an irregular rim 2–10 mm wide, 5–10 HU darker than the parenchyma around it.  Seed 88
    # (2.6 mL ICH, 2.5 mm slices) once drew PHE at half the ICH volume: a rim of about 1 mm (12% of it
    # more than 2 mm from the bleed) that blur left 2 HU *brighter* than the tissue around it
    case = generate_case(seed, "ich_phe", 2.5)
    contrast, core_fraction = _phe_contrast(case)
    assert -10.0 <= contrast <= -4.0
    assert core_fraction >= 0.3


def test_noise_level(full_case: PhantomCase) -> None:
    assert 3.0 <= full_case.params["noise_sigma_hu"] <= 8.0
    img = arr(full_case.image).astype(np.float32)
    brain = arr(full_case.brain).astype(bool)
    lab = arr(full_case.label)
    core = ndimage.binary_erosion(brain, iterations=6) & ~ndimage.binary_dilation(lab > 0, iterations=6)
    w = int(round(3.5 / full_case.image.GetSpacing()[0]))
    m1 = ndimage.uniform_filter(img, (1, w, w))
    m2 = ndimage.uniform_filter(img * img, (1, w, w))
    local_sd = np.sqrt(np.maximum(m2 - m1 * m1, 0))[core]
    assert 1.5 <= np.median(local_sd) <= 6.0


# ------------------------------------------------------------- labels


def test_label_consistency(full_case: PhantomCase) -> None:
    lab = arr(full_case.label)
    brain = arr(full_case.brain).astype(bool)
    vent = arr(full_case.ventricles).astype(bool)
    grow = np.ones((3, 3, 3), bool)
    assert set(np.unique(lab)) <= {0, 1, 2, 3}
    ivh = lab == 3
    assert ivh.any()
    # IVH only inside the ventricles; ICH/PHE only inside the brain (up to partial volume at the edges:
    # a voxel is labelled by the class with the largest fraction, a mask needs half of the voxel)
    assert (ivh & ~ndimage.binary_dilation(vent, grow)).sum() <= 0.002 * ivh.sum()
    assert (ivh & vent).sum() >= 0.9 * ivh.sum()
    les = (lab == 1) | (lab == 2)
    assert (les & ~ndimage.binary_dilation(brain, grow)).sum() <= 0.002 * les.sum()
    assert (les & brain).sum() >= 0.95 * les.sum()
    assert not (ivh & brain & ~vent).sum() > 0.05 * ivh.sum()


def test_phe_adjacent_to_ich(full_case: PhantomCase) -> None:
    lab = arr(full_case.label)
    sx, sy, sz = full_case.image.GetSpacing()
    dist = ndimage.distance_transform_edt(lab != 1, sampling=(sz, sy, sx))
    comps, n = ndimage.label(lab == 2, structure=np.ones((3, 3, 3)))
    assert n >= 1
    for i in range(1, n + 1):
        assert dist[comps == i].min() <= max(sz, sx) + 0.5


def test_calcifications_and_catheters_not_blood(full_case: PhantomCase) -> None:
    img = arr(full_case.image)
    lab = arr(full_case.label)
    bright = (img > 140) & (lab > 0)
    assert bright.sum() <= 0.01 * (lab > 0).sum()


def test_volumes_match_labels(full_case: PhantomCase) -> None:
    lab = arr(full_case.label)
    les = full_case.params["lesions"]
    for value, key in ((1, "ich"), (2, "phe"), (3, "ivh")):
        model = les[key]["volume_ml"]
        counted = np.count_nonzero(lab == value) * voxel_ml(full_case)
        assert abs(counted - model) <= 0.25 * model + 0.5, (key, counted, model)
        assert abs(full_case.params["label_volumes_ml"][CLASS_NAMES[value]] - counted) < 1e-6


def test_each_kind_has_its_classes(small_cases: dict[str, PhantomCase]) -> None:
    expect = {
        "negative": set(),
        "ich": {1},
        "ich_phe": {1, 2},
        "ich_phe_ivh": {1, 2, 3},
        "ivh": {3},
    }
    assert set(small_cases) == set(CASE_KINDS)
    for kind, case in small_cases.items():
        present = set(np.unique(arr(case.label))) - {0}
        assert present == expect[kind], (kind, present)
        les = case.params["lesions"]
        for value, key in ((1, "ich"), (2, "phe"), (3, "ivh")):
            assert (key in les) == (value in expect[kind])
            if key in les:
                counted = np.count_nonzero(arr(case.label) == value) * voxel_ml(case)
                assert abs(counted - les[key]["volume_ml"]) <= 0.35 * les[key]["volume_ml"] + 0.8
        assert case.image.GetSize()[:2] == (128, 128)


def test_lesion_parameters(small_cases: dict[str, PhantomCase]) -> None:
    ich = small_cases["ich_phe"].params["lesions"]["ich"]
    assert ich["site"] in {"putamen", "lobar", "thalamus", "cerebellum", "brainstem", "caudate"}
    assert 0.5 <= ich["volume_ml"] <= 150 and 50 <= ich["hu_mean"] <= 90
    ivh = small_cases["ivh"].params["lesions"]["ivh"]
    assert ivh["pattern"] in {"layering", "cast", "mixed"} and ivh["volume_ml"] > 0


# ------------------------------------------------------------- distributions


def test_ich_volume_distribution() -> None:
    rng = np.random.default_rng(0)
    v = np.array([draw_ich_volume(rng) for _ in range(20000)])
    assert v.min() >= 0.5 and v.max() <= 150
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    assert 10.5 <= q50 <= 13.5
    assert 4.0 <= q25 <= 6.5 and 22 <= q75 <= 33
    assert (v > 60).mean() > 0.03 and (v < 2).mean() > 0.03


def test_ivh_volume_distribution() -> None:
    rng = np.random.default_rng(1)
    v = np.array([draw_ivh_volume(rng) for _ in range(20000)])
    assert 4.5 <= np.median(v) <= 6.5 and v.max() <= 80


def test_kind_and_thickness_proportions() -> None:
    draws = [drawn_kind_and_thickness(s) for s in range(3000)]
    kinds = Counter(k for k, _ in draws)
    assert set(kinds) == set(CASE_KINDS)
    assert 0.35 <= kinds["ich_phe"] / 3000 <= 0.55 and 0.05 <= kinds["negative"] / 3000 <= 0.15
    ivh_with_ich = kinds["ich_phe_ivh"] / (kinds["ich"] + kinds["ich_phe"] + kinds["ich_phe_ivh"])
    assert 0.2 <= ivh_with_ich <= 0.4
    thick = Counter(t for _, t in draws)
    assert set(thick) == set(SLICE_THICKNESSES) and thick[5.0] == max(thick.values())


# ------------------------------------------------------------- reproducibility and I/O


def test_deterministic_by_seed() -> None:
    a = generate_case(21, "ich_phe", 5.0, matrix=64)
    b = generate_case(21, "ich_phe", 5.0, matrix=64)
    c = generate_case(22, "ich_phe", 5.0, matrix=64)
    assert np.array_equal(arr(a.image), arr(b.image)) and np.array_equal(arr(a.label), arr(b.label))
    assert a.params == b.params
    assert a.image.GetOrigin() == b.image.GetOrigin()
    assert arr(a.image).shape != arr(c.image).shape or not np.array_equal(arr(a.image), arr(c.image))


def test_drawn_kind_and_thin_slices() -> None:
    case = generate_case(5, None, 1.0, matrix=48)
    kind, _ = drawn_kind_and_thickness(5)
    assert case.params["kind"] == kind
    nz = case.image.GetSize()[2]
    assert case.image.GetSpacing()[2] == 1.0 and 120 <= nz <= 230


def test_drawn_ich_pattern_is_the_generated_one() -> None:
    """The cheap pattern draw (used to pick hard training seeds) agrees with the case the seed makes."""
    for seed, kind in ((3, None), (29, None), (36, "ich_phe"), (8, "ivh")):
        case = generate_case(seed, kind, 5.0, matrix=48)
        ich = case.params["lesions"].get("ich")
        assert drawn_ich_pattern(seed, kind) == (ich["pattern"] if ich else None)
    assert drawn_ich_pattern(29) == "fluid_level" and drawn_ich_pattern(36) == "hyperacute"
    assert drawn_ich_pattern(8, "ivh") is None
    with pytest.raises(ValueError, match="kind"):
        drawn_ich_pattern(1, "sah")


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        generate_case(1, "sah")
    with pytest.raises(ValueError, match="thickness"):
        generate_case(1, "ich", 3.0)
    with pytest.raises(ValueError, match="matrix"):
        generate_case(1, "ich", 5.0, matrix=8)


def test_write_case_roundtrip(tmp_path, small_cases: dict[str, PhantomCase]) -> None:
    case = small_cases["ich_phe_ivh"]
    paths = write_case(case, tmp_path / "out")
    assert set(paths) == {"image", "label", "params"}
    assert paths["image"].name == f"{case.name}.nii.gz"
    assert paths["label"].name == f"{case.name}_label.nii.gz"
    assert paths["params"].name == f"{case.name}.json"
    img = sitk.ReadImage(str(paths["image"]))
    lab = sitk.ReadImage(str(paths["label"]))
    for read, orig in ((img, case.image), (lab, case.label)):
        assert read.GetSize() == orig.GetSize()
        assert np.allclose(read.GetSpacing(), orig.GetSpacing(), atol=1e-5)
        assert np.allclose(read.GetOrigin(), orig.GetOrigin(), atol=1e-4)
        assert np.allclose(read.GetDirection(), orig.GetDirection(), atol=1e-5)
        assert np.array_equal(arr(read), arr(orig))
    assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
    assert json.loads(paths["params"].read_text()) == case.params
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_the_bundled_sample_is_what_the_generator_makes() -> None:
    """Resources/Samples/ICH-sample is a phantom case; when the generator changes, regenerate it
    (``ichseg phantom`` with the seed, kind and thickness of ``samples.json``) and update its SHA-256."""
    from ichseg.resources import sample_path

    sample = sample_path()
    recipe = json.loads(sample.with_name("samples.json").read_text())["ICH-sample"]["generator"]
    case = generate_case(recipe["seed"], recipe["kind"], recipe["slice_thickness"])
    assert np.array_equal(arr(case.image), arr(sitk.ReadImage(str(sample))))
    assert np.array_equal(arr(case.label), arr(sitk.ReadImage(str(sample.with_name("ICH-sample_label.nii.gz")))))
