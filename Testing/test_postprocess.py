"""Post-processing: small components and PHE without ICH."""

import numpy as np
import pytest

from ichseg.postprocess import postprocess


def test_small_components_removed_by_physical_size():
    label = np.zeros((10, 40, 40), np.uint8)
    label[2:6, 5:15, 5:15] = 1  # 400 voxels = 400 mm3 at 1 mm: kept
    label[8, 30, 30] = 1  # 1 mm3 speck: removed
    label[8, 2, 2] = 3  # IVH speck: removed
    label[1:4, 30:35, 30:35] = 3  # 75 mm3 IVH: kept
    report = postprocess(label, (1.0, 1.0, 1.0))
    assert report["small_components_1"] == 1
    assert report["small_components_3"] == 1
    assert (label == 1).sum() == 400
    assert (label == 3).sum() == 75


def test_thresholds_scale_with_spacing():
    label = np.zeros((4, 10, 10), np.uint8)
    label[1, 1:3, 1:3] = 1  # 4 voxels
    postprocess(label.copy(), (1, 1, 1))
    big = label.copy()
    postprocess(big, (1.0, 1.0, 5.0))  # 4 voxels x 5 mm3 = 20 mm3 >= 10: kept
    assert (big == 1).sum() == 4
    small = label.copy()
    postprocess(small, (0.5, 0.5, 1.0))  # 4 x 0.25 = 1 mm3: removed
    assert (small == 1).sum() == 0


def test_phe_must_touch_ich():
    label = np.zeros((10, 40, 40), np.uint8)
    label[3:7, 10:20, 10:20] = 2
    label[4:6, 12:18, 12:18] = 1  # PHE around ICH: kept
    label[3:7, 30:38, 30:38] = 2  # PHE far from ICH: removed
    report = postprocess(label, (1.0, 1.0, 1.0))
    assert report["phe_without_ich"] == 4 * 8 * 8
    assert (label[:, 30:, 30:] == 0).all()
    assert (label[3:7, 10:20, 10:20] > 0).all()


def test_rejects_non_uint8():
    with pytest.raises(TypeError):
        postprocess(np.zeros((2, 2, 2), np.int64), (1, 1, 1))


def test_rules_at_the_grid_edges_and_on_an_empty_map():
    """Foreground touching the faces of the grid: the work box is clipped there, the rules still hold."""
    label = np.zeros((6, 30, 30), np.uint8)
    label[0:3, 0:6, 0:6] = 1  # ICH in a corner
    label[0:3, 6:8, 0:6] = 2  # PHE touching it: kept
    label[5, 29, 29] = 2  # PHE speck in the opposite corner: removed (small and without ICH)
    label[3:6, 20:30, 0:4] = 2  # PHE at the edge, far from ICH: removed
    report = postprocess(label, (1.0, 1.0, 1.0))
    assert report["small_components_2"] == 1
    assert report["phe_without_ich"] == 3 * 10 * 4
    assert (label == 1).sum() == 108 and (label == 2).sum() == 36
    empty = np.zeros((3, 4, 5), np.uint8)
    assert set(postprocess(empty, (1.0, 1.0, 1.0)).values()) == {0}
