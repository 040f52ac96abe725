"""Losses: every name builds and is finite; the focal term is softmax-based; perfect prediction ≈ 0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss, DiceLoss

from ichseg.train.losses import LOSSES, TopKCrossEntropy, build_loss


def _data(seed=0, shape=(2, 4, 4, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits, target


def _hand_softmax_focal(logits, target, gamma=2.0):
    p = torch.softmax(logits.double(), dim=1)
    pt = p.gather(1, target.long())  # probability of the true class
    per_voxel = -((1 - pt) ** gamma) * torch.log(pt)
    # MONAI's mean reduction averages over classes too (non-target channels contribute 0)
    return per_voxel.sum() / (per_voxel.numel() * logits.shape[1])


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("deep", [False, True])
def test_each_loss_builds_and_is_finite_with_gradient(name, deep):
    logits, target = _data()
    loss_fn = build_loss(name, deep_supervision=deep)
    out = logits.clone().requires_grad_(True)
    inp = torch.stack([out, out * 0.5], dim=1) if deep else out
    value = loss_fn(inp, target)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_gives_small_loss(name):
    _, target = _data(1)
    logits = 30.0 * F.one_hot(target[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    assert float(build_loss(name)(logits, target)) < 1e-3


def test_dice_of_perfect_prediction_is_zero():
    _, target = _data(2)
    logits = 30.0 * F.one_hot(target[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert float(dice(logits, target)) == pytest.approx(0.0, abs=1e-5)


def test_focal_is_softmax_focal_against_hand_computation():
    logits, target = _data(3, shape=(1, 4, 3, 3, 2))
    ours = build_loss("focal")(logits, target)
    assert float(ours) == pytest.approx(float(_hand_softmax_focal(logits, target)), rel=1e-5)


def test_dicefocal_focal_term_is_softmax_not_monai_sigmoid():
    logits, target = _data(4, shape=(1, 4, 3, 3, 2))
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)(logits, target)
    ours = build_loss("dicefocal")(logits, target)
    hand = _hand_softmax_focal(logits, target)
    assert float(ours - dice) == pytest.approx(float(hand), rel=1e-5)
    # MONAI 1.6.1's DiceFocalLoss uses a sigmoid focal term: a different value
    monai_df = DiceFocalLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)(logits, target)
    assert abs(float(monai_df - dice) - float(hand)) > 1e-3


def test_topk_cross_entropy_hand():
    logits, target = _data(5, shape=(1, 4, 2, 5, 5))
    ce = F.cross_entropy(logits, target[:, 0], reduction="none").flatten()
    k = int(round(ce.numel() * 0.1))
    expected = ce.sort(descending=True).values[:k].mean()
    assert float(TopKCrossEntropy(10)(logits, target)) == pytest.approx(float(expected), rel=1e-6)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown loss 'dice'; choose one of dicece, focal"):
        build_loss("dice")
