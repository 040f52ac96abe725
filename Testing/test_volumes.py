"""Volumes, lesion counts, PHE/ICH ratio and ABC/2 against analytic shapes."""

import math

import numpy as np
import pytest

from ichseg.volumes import abc2, count_lesions, measure, measurements_csv, voxel_volume_ml


def ellipsoid(shape, spacing, centre_mm, radii_mm):
    """Binary (z, y, x) ellipsoid; spacing and centre in (x, y, z) mm."""
    z, y, x = np.indices(shape, dtype=np.float64)
    pts = [x * spacing[0], y * spacing[1], z * spacing[2]]
    r2 = sum(((p - c) / r) ** 2 for p, c, r in zip(pts, centre_mm, radii_mm, strict=True))
    return r2 <= 1.0


def test_voxel_volume():
    assert voxel_volume_ml((0.5, 0.5, 5.0)) == pytest.approx(1.25e-3)


def test_sphere_volume_within_two_percent():
    spacing = (0.45, 0.45, 1.0)
    r = 15.0
    mask = ellipsoid((50, 100, 100), spacing, (22.5, 22.5, 25.0), (r, r, r))
    label = mask.astype(np.uint8)  # ICH
    m = measure(label, spacing)
    expected = 4 / 3 * math.pi * r**3 / 1000
    assert m.classes["ICH"].volume_ml == pytest.approx(expected, rel=0.02)
    assert m.classes["ICH"].lesions == 1
    assert m.classes["PHE"].volume_ml == 0.0 and m.classes["PHE"].lesions == 0
    assert m.phe_ich_ratio == 0.0
    assert isinstance(m.classes["ICH"].volume_ml, float)


def test_counts_classes_and_ratio():
    label = np.zeros((10, 20, 20), np.uint8)
    label[2:4, 2:6, 2:6] = 1  # 32 voxels ICH
    label[6:8, 10:14, 10:14] = 1  # second ICH lesion
    label[2:4, 8:10, 2:6] = 2  # 16 PHE
    label[8, 0, 0] = 3
    m = measure(label, (1.0, 2.0, 3.0))
    assert m.classes["ICH"].voxels == 64
    assert m.classes["ICH"].volume_ml == pytest.approx(64 * 6 / 1000)
    assert m.classes["ICH"].lesions == 2
    assert m.classes["PHE"].voxels == 16
    assert m.phe_ich_ratio == pytest.approx(0.25)
    assert m.classes["IVH"].lesions == 1


def test_lesions_26_connected():
    mask = np.zeros((5, 5, 5), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touch at a corner: one lesion
    assert count_lesions(mask) == 1
    mask[4, 4, 4] = True  # not touching
    assert count_lesions(mask) == 2


def test_abc2_on_ellipsoid():
    spacing = (0.5, 0.5, 2.0)
    # diameters A=60 mm (x), B=30 mm (y), C=40 mm (z)
    mask = ellipsoid((40, 100, 160), spacing, (40.0, 25.0, 40.0), (30.0, 15.0, 20.0))
    e = abc2(mask, spacing)
    assert e.a_mm == pytest.approx(60.0, abs=1.5)
    assert e.b_mm == pytest.approx(30.0, abs=1.5)
    assert e.c_mm == pytest.approx(40.0, abs=2 * spacing[2])
    assert e.volume_ml == pytest.approx(e.a_mm * e.b_mm * e.c_mm / 2000)
    true_ml = 4 / 3 * math.pi * 30 * 15 * 20 / 1000
    # ABC/2 = (pi/6 vs 1/2) of the ellipsoid: about 0.95 of the planimetric volume
    assert e.volume_ml / true_ml == pytest.approx(0.5 / (math.pi / 6), rel=0.08)
    assert abc2(np.zeros((2, 2, 2), bool), spacing) is None


def test_abc2_rotated_in_plane():
    """A, B do not depend on the ellipse's orientation in the slice."""
    spacing = (0.5, 0.5, 5.0)
    z, y, x = np.indices((5, 200, 200), dtype=np.float64)
    xm, ym = x * 0.5 - 50, y * 0.5 - 50
    t = math.radians(35)
    u, v = xm * math.cos(t) + ym * math.sin(t), -xm * math.sin(t) + ym * math.cos(t)
    mask = ((u / 25) ** 2 + (v / 10) ** 2 <= 1) & (z >= 1) & (z <= 3)
    e = abc2(mask, spacing)
    assert e.a_mm == pytest.approx(50.0, abs=1.5)
    assert e.b_mm == pytest.approx(20.0, abs=1.5)
    assert e.c_mm == pytest.approx(15.0)


def test_measure_rejects_bad_input():
    with pytest.raises(ValueError):
        measure(np.zeros((4, 4), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError):
        measure(np.zeros((4, 4, 4), np.uint8), (1, 0, 1))


def test_csv_and_json():
    label = np.zeros((4, 8, 8), np.uint8)
    label[1:3, 2:5, 2:5] = 1
    m = measure(label, (1, 1, 1))
    text = measurements_csv([("caseA", m)])
    header, row = text.strip().split("\n")
    assert header.startswith("case,ICH_ml,PHE_ml,IVH_ml")
    assert row.startswith("caseA,0.018,0.000,0.000")
    d = m.to_dict()
    assert d["classes"]["ICH"]["voxels"] == 18
    assert d["ich_abc2"]["slices"] == 2
