"""Patch-centre sampling: lesion classes by label, background on hard negatives (blood-like HU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ichseg.commands.train import _negative_hu
from ichseg.errors import InputError
from ichseg.preprocess import Normalization
from ichseg.train.config import TrainConfig
from ichseg.train.transforms import INDICES_KEY, PatchCentresd, train_transforms


def _head(shape=(12, 40, 40)) -> dict[str, torch.Tensor]:
    """Air around a head of 'white matter' (28 HU), a bright 'cerebellum' block (48 HU), bone and an ICH."""
    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    image[:, 4:36, 4:36] = 1000.0  # skull
    image[:, 6:34, 6:34] = 28.0  # parenchyma: not blood-like
    image[2:6, 24:32, 24:32] = 48.0  # hard negatives
    image[4:8, 8:14, 8:14] = 65.0  # hematoma
    label[4:8, 8:14, 8:14] = 1
    return {"image": torch.as_tensor(image[None]), "label": torch.as_tensor(label[None])}


def _voxels(indices, shape) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in np.unravel_index(int(i), shape)) for i in np.asarray(indices)}


def test_background_centres_are_the_blood_like_non_lesion_voxels():
    item = _head()
    shape = tuple(item["image"].shape[1:])
    out = PatchCentresd((40.0, 150.0))(item)
    indices = out[INDICES_KEY]
    assert _voxels(indices[0], shape) == {(z, y, x) for z in range(2, 6) for y in range(24, 32) for x in range(24, 32)}
    assert _voxels(indices[1], shape) == {(z, y, x) for z in range(4, 8) for y in range(8, 14) for x in range(8, 14)}
    assert len(indices[2]) == 0 and len(indices[3]) == 0


def test_without_a_range_or_without_hard_negatives_any_head_voxel_is_a_background_centre():
    item = _head()
    n_head = int(((item["image"] > -500) & (item["label"] == 0)).sum())
    assert len(PatchCentresd(None)(item)[INDICES_KEY][0]) == n_head
    # no voxel in 200..300 HU: fall back to the whole head rather than dropping background patches
    assert len(PatchCentresd((200.0, 300.0))(item)[INDICES_KEY][0]) == n_head


def test_background_patches_are_centred_on_hard_negatives():
    item = _head()
    transform = train_transforms(
        (4, 8, 8),
        Normalization(),
        anisotropic=True,
        class_ratios=(1, 0, 0, 0),
        negative_hu=(40.0, 150.0),
        augment=False,
    )
    transform.set_random_state(3)
    for _ in range(10):
        patch = transform(item)[0]
        assert set(patch) == {"image", "label"}  # the centre indices do not leak into the batch
        centre_hu = float(patch["image"][0, 2, 4, 4]) * 115.0 - 15.0  # unit window [-15, 100]
        assert centre_hu == pytest.approx(48.0, abs=0.01)
        assert int(patch["label"].sum()) == 0


def test_negative_hu_option_and_config_validation():
    assert _negative_hu("40,150") == (40.0, 150.0)
    assert _negative_hu("any") == "any"
    with pytest.raises(Exception, match="LO must be below HI"):
        _negative_hu("150,40")
    with pytest.raises(InputError, match="negative HU range"):
        TrainConfig(datasets=[Path("d")], output=Path("m"), negative_hu=(100.0, 50.0)).validate()
