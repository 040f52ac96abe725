"""Post-processing: small components, PHE without ICH, unconfident components."""

import numpy as np
import pytest

from ichseg.postprocess import (
    DEFAULT_MIN_COMPONENT_MM3,
    drop_unconfident_components,
    parse_min_component_ml,
    parse_min_confidence,
    postprocess,
)


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


def test_unconfident_components_are_given_up_to_the_next_class():
    probs = np.zeros((4, 8, 20, 20), np.float32)
    probs[0] = 1.0
    probs[:, 1:4, 2:6, 2:6] = np.array([0.1, 0.9, 0.0, 0.0])[:, None, None, None]  # confident ICH
    probs[:, 5:7, 12:16, 12:16] = np.array([0.35, 0.55, 0.1, 0.0])[:, None, None, None]  # hesitant ICH
    probs[:, 5:7, 2:4, 14:18] = np.array([0.3, 0.0, 0.0, 0.7])[:, None, None, None]  # IVH, no rule for it
    probs[1, 2, 3, 3] = 0.95  # the confident one's peak
    report = drop_unconfident_components(probs, parse_min_confidence({"ICH": 0.8}))
    assert report == {"unconfident_components_1": 2 * 4 * 4}
    winner = probs.argmax(axis=0)
    assert (winner[1:4, 2:6, 2:6] == 1).all()
    assert (winner[5:7, 12:16, 12:16] == 0).all()  # background was next most likely
    assert (winner[5:7, 2:4, 14:18] == 3).all()
    assert drop_unconfident_components(probs, {}) == {}


def test_min_confidence_spec_uses_class_keys():
    assert parse_min_confidence({"ich": 0.8, "IVH": 0.5}) == {1: 0.8, 3: 0.5}
    assert parse_min_confidence(None) == {}
    with pytest.raises(ValueError, match="unknown class"):
        parse_min_confidence({"background": 0.5})


def test_a_card_may_raise_a_class_component_limit():
    assert parse_min_component_ml(None) == DEFAULT_MIN_COMPONENT_MM3
    limits = parse_min_component_ml({"ICH": 0.25})
    assert limits == {**DEFAULT_MIN_COMPONENT_MM3, 1: 250.0}
    label = np.zeros((10, 40, 40), np.uint8)
    label[1:9, 2:12, 2:12] = 1  # 800 mm3 at 1 mm: kept
    label[2:4, 20:30, 20:30] = 1  # 200 mm3: below 0.25 mL, removed
    label[2:4, 20:30, 30:32] = 2  # 40 mm3 PHE touching only that small ICH: removed with it
    label[6:9, 30:35, 30:35] = 3  # 75 mm3 IVH: its limit is unchanged, kept
    report = postprocess(label, (1.0, 1.0, 1.0), limits)
    assert report["small_components_1"] == 200 and report["phe_without_ich"] > 0
    assert (label == 1).sum() == 800 and (label == 2).sum() == 0 and (label == 3).sum() == 75
    with pytest.raises(ValueError, match="unknown class"):
        parse_min_component_ml({"SDH": 1.0})
    with pytest.raises(ValueError, match=r"min_component_ml\[ICH\] must be between 0.01 and 10 mL"):
        parse_min_component_ml({"ICH": 0.001})  # below what the label scheme allows anyway
    with pytest.raises(ValueError, match="must be a volume in mL"):
        parse_min_component_ml({"ICH": "big"})
    with pytest.raises(ValueError, match="must map class keys"):
        parse_min_component_ml([0.25])


def test_a_dropped_component_handed_to_another_class_is_checked_again():
    probs = np.zeros((4, 6, 10, 10), np.float32)
    probs[0] = 1.0
    probs[:, 2:4, 2:6, 2:6] = np.array([0.1, 0.5, 0.0, 0.4])[:, None, None, None]  # hesitant ICH, IVH next
    report = drop_unconfident_components(probs, {1: 0.8, 3: 0.8})
    assert (probs.argmax(axis=0) == 0).all()  # neither ICH nor a hesitant IVH blob is left
    assert report == {"unconfident_components_1": 32, "unconfident_components_3": 32}
    probs[:, 2:4, 2:6, 2:6] = np.array([0.05, 0.5, 0.0, 0.45])[:, None, None, None]
    drop_unconfident_components(probs, {1: 0.8})  # no rule for IVH: the runner-up keeps the voxels
    assert (probs.argmax(axis=0)[2:4, 2:6, 2:6] == 3).all()
