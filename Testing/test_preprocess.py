"""Preprocessing: working grid and back (tilted, anisotropic, permuted input), head crop, normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from ichseg.preprocess import (
    Grid,
    Normalization,
    PreprocessConfig,
    crop,
    head_bbox,
    label_to_working,
    labels_to_original,
    normalize,
    orient_axial,
    prepare_image,
    uncrop,
    working_grid,
)


def _tilt_direction(deg: float) -> tuple[float, ...]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return (1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c)


def _head(size_xyz, spacing, direction, origin, blob_center_lps, blob_radius=12.0, table=True):
    """A head-like CT (air, skull shell, brain) with a spherical 'hematoma' centred at a physical point."""
    img = sitk.Image([int(s) for s in size_xyz], sitk.sitkInt16)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    g = Grid.of(img)
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape_zyx), indexing="ij")
    idx = np.stack([i, j, k], -1).reshape(-1, 3).astype(float)
    pts = np.asarray(origin) + (idx * np.asarray(spacing)) @ g.matrix.T
    center = g.index_to_point((np.asarray(size_xyz) - 1) / 2)
    rel = pts - center
    r = np.sqrt((rel[:, 0] / 70) ** 2 + (rel[:, 1] / 85) ** 2 + (rel[:, 2] / 60) ** 2)
    hu = np.full(len(pts), -1000.0)
    hu[r < 1.0] = 1000.0
    hu[r < 0.93] = 35.0
    if table:  # a table plate below the head (posterior = +y in LPS), linked by a thin strut
        hu[(rel[:, 1] > 95) & (rel[:, 1] < 105) & (np.abs(rel[:, 0]) < 120)] = 300.0
        hu[(rel[:, 1] > 80) & (rel[:, 1] <= 95) & (np.abs(rel[:, 0]) < 1.0)] = 300.0
    blob = np.linalg.norm(pts - np.asarray(blob_center_lps), axis=1) < blob_radius
    hu[blob] = 70.0
    arr = hu.reshape(g.shape_zyx).astype(np.int16)
    lab = blob.reshape(g.shape_zyx).astype(np.uint8)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    label = sitk.GetImageFromArray(lab)
    label.CopyInformation(img)
    return out, label


def _centroid_lps(label_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    k, j, i = np.nonzero(label_zyx)
    return grid.index_to_point([i.mean(), j.mean(), k.mean()])


@pytest.mark.parametrize(
    "direction",
    [
        _tilt_direction(21.0),  # gantry tilt
        (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0),  # axes permuted and flipped (stored "sideways")
    ],
)
def test_round_trip_geometry_and_blob_position(direction):
    spacing = (0.9, 0.9, 5.0)
    size = (220, 240, 36)
    origin = (-95.0, -110.0, 20.0)
    grid0 = Grid(size, spacing, origin, direction)
    blob = grid0.index_to_point((125, 100, 18))
    image, label = _head(size, spacing, direction, origin, blob)
    cfg = PreprocessConfig(spacing_xyz=(1.5, 1.5, 2.5))
    prep = prepare_image(image, cfg)

    # the working grid keeps the (oriented) direction and changes only the spacing
    oriented = orient_axial(image)
    assert prep.working.direction == tuple(oriented.GetDirection())
    assert prep.working.spacing == (1.5, 1.5, 2.5)
    assert np.array_equal(np.argmax(np.abs(prep.working.matrix), axis=0), [0, 1, 2])
    # the cropped array matches the cropped grid
    assert prep.hu.shape == prep.grid.shape_zyx

    # the blob stays at its physical position on the working grid
    lab_w = crop(label_to_working(label, prep.working), prep.box)
    assert lab_w.sum() > 0
    assert np.linalg.norm(_centroid_lps(lab_w, prep.grid) - blob) < 1.0
    # HU are preserved inside the blob and the brain
    assert abs(float(np.median(prep.hu[lab_w > 0])) - 70.0) < 3.0

    # back to the original grid via one-hot probabilities: exact geometry, blob in place
    probs = np.stack([1.0 - lab_w, lab_w.astype(np.float32)]).astype(np.float32)
    back = labels_to_original(probs, prep)
    assert back.GetSize() == image.GetSize()
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()
    assert back.GetPixelID() == sitk.sitkUInt8
    a = sitk.GetArrayViewFromImage(back)
    b = sitk.GetArrayViewFromImage(label)
    dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    assert dice > 0.9
    assert np.linalg.norm(_centroid_lps(a, grid0) - blob) < 1.0


def test_working_grid_keeps_box_and_direction():
    g = Grid((100, 80, 30), (0.45, 0.45, 5.0), (10.0, -20.0, 5.0), _tilt_direction(15.0))
    w = working_grid(g, (1.0, 1.0, 2.5))
    assert w.direction == g.direction
    assert w.size == (45, 36, 60)
    # same physical centre
    c0 = g.index_to_point((np.asarray(g.size) - 1) / 2)
    c1 = w.index_to_point((np.asarray(w.size) - 1) / 2)
    assert np.allclose(c0, c1, atol=1e-9)


def test_head_crop_removes_table_and_inverts():
    spacing = (1.0, 1.0, 2.5)
    image, _ = _head((240, 260, 70), spacing, (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), (120, 120, 90))
    hu = sitk.GetArrayFromImage(image)
    box = head_bbox(hu, spacing, margin_mm=5.0)
    # the table is at rel_y > 95 mm from the centre (y index ~ 130 + 95); the head ends at 85 mm
    cy = (260 - 1) / 2
    assert box[1].stop <= int(cy + 85 + 5 + 2)
    assert box[1].start >= int(cy - 85 - 5 - 2)
    cropped = crop(hu, box)
    assert (cropped > 500).any()
    restored = uncrop(cropped, box, hu.shape, fill=-1000)
    assert np.array_equal(restored[box], cropped)
    probs = np.random.default_rng(0).random((3, *cropped.shape)).astype(np.float32)
    full = uncrop(probs, box, hu.shape, fill=[1.0, 0.0, 0.0])
    assert full.shape == (3, *hu.shape)
    assert full[0, 0, 0, 0] == 1.0 and full[1, 0, 0, 0] == 0.0


def test_head_crop_no_tissue_returns_full():
    hu = np.full((5, 6, 7), -1000.0)
    box = head_bbox(hu, (1, 1, 1))
    assert [(s.start, s.stop) for s in box] == [(0, 5), (0, 6), (0, 7)]


def test_normalize_unit_and_zscore_numpy_and_torch():
    torch = pytest.importorskip("torch")
    hu = np.array([-1000.0, -15.0, 42.5, 100.0, 1500.0], dtype=np.float32)
    unit = normalize(hu, Normalization())
    assert np.allclose(unit, [0, 0, 0.5, 1, 1])
    z = normalize(hu, {"method": "ct_window", "window": [-15, 100], "mode": "zscore", "mean": 40.0, "std": 10.0})
    assert np.allclose(z, [-5.5, -5.5, 0.25, 6.0, 6.0])
    t = normalize(torch.tensor(hu), Normalization())
    assert torch.allclose(t, torch.tensor(unit))


def test_config_round_trip_and_errors():
    cfg = PreprocessConfig((1.0, 1.0, 2.5), Normalization((-15, 100), "zscore", 40.0, 12.0))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="low < high"):
        Normalization((100, -15))
    with pytest.raises(ValueError, match="mode"):
        Normalization(mode="minmax")
    with pytest.raises(ValueError, match="spacing"):
        PreprocessConfig.from_dict({"spacing_xyz": [1, 1]})


@pytest.mark.parametrize("direction", [_tilt_direction(21.0), (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)])
def test_resampling_only_the_foreground_box_equals_the_full_resample(direction):
    """labels_to_original resamples a box around possible foreground: same labels as the whole grid."""
    from ichseg.preprocess import probabilities_to_original

    spacing, size, origin = (0.9, 0.9, 5.0), (220, 240, 36), (-95.0, -110.0, 20.0)
    grid0 = Grid(size, spacing, origin, direction)
    image, _ = _head(size, spacing, direction, origin, grid0.index_to_point((125, 100, 18)))
    prep = prepare_image(image, PreprocessConfig(spacing_xyz=(1.5, 1.5, 2.5)))
    rng = np.random.default_rng(0)
    shape = prep.hu.shape
    fg = rng.uniform(0.0, 0.19, (3, *shape)).astype(np.float32)  # noise below the floor everywhere...
    fg[0, 10:14, 40:50, 30:45] = 0.9  # ...and two lesions, one touching the crop border
    fg[2, :3, 0:6, 60:70] = 0.7
    probs = np.concatenate([np.clip(1.0 - fg.sum(0, keepdims=True), 0, 1), fg]).astype(np.float32)
    full = np.stack([probabilities_to_original(probs, prep, c) for c in range(4)]).argmax(0).astype(np.uint8)
    fast = sitk.GetArrayFromImage(labels_to_original(probs, prep))
    assert (full > 0).sum() > 100 and set(np.unique(full)) == {0, 1, 3}
    np.testing.assert_array_equal(fast, full)
    empty = np.concatenate([np.ones((1, *shape), np.float32), np.zeros((3, *shape), np.float32)])
    assert not sitk.GetArrayFromImage(labels_to_original(empty, prep)).any()
