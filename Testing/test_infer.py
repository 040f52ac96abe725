"""Inference pipeline: geometry both ways, a lesion found where it is, TTA, device selection."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import simple_head, tilt_direction

from ichseg.errors import InputError
from ichseg.infer import (
    QUALITY_CHOICES,
    QUALITY_SETTINGS,
    Segmenter,
    choose_window,
    class_mirror_axes_of,
    mirror_axes_of,
    quality_warning,
    resolve_quality,
    select_device,
    window_probabilities,
)
from ichseg.model import MODEL_JSON, load_package
from ichseg.model.card import QUALITY_MODES
from ichseg.preprocess import DEFAULT_WINDOW


class ThresholdNet(torch.nn.Module):
    """Calls voxels between 60 and 95 HU ICH: an exactly known 'model' for geometry tests."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = DEFAULT_WINDOW
        t0, t1 = (60.0 - lo) / (hi - lo), (95.0 - lo) / (hi - lo)
        s = 40.0 * torch.minimum(x - t0, t1 - x)
        off = torch.full_like(x, -50.0)
        return torch.cat([-s, s, off, off], dim=1)


def _blob_truth(img: sitk.Image) -> np.ndarray:
    """The blob: 60-200 HU voxels away from the skull (whose partial-volume rim also crosses 60 HU)."""
    a = sitk.GetArrayFromImage(img)
    skull = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.Cast(img > 300, sitk.sitkUInt8), [3, 3, 1])) > 0
    return (a > 60) & (a < 200) & ~skull


def _near_blob(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    zs, ys, xs = np.nonzero(truth)
    box = np.zeros_like(pred)
    z0, y0, x0 = max(zs.min() - 2, 0), max(ys.min() - 4, 0), max(xs.min() - 4, 0)
    box[z0 : zs.max() + 3, y0 : ys.max() + 5, x0 : xs.max() + 5] = 1
    return pred & box


def _segmenter(package_path, **kw) -> Segmenter:
    seg = Segmenter(load_package(package_path), device="cpu", **kw)
    seg.networks = [ThresholdNet()]
    return seg


def _physical_centroid(img: sitk.Image, mask: np.ndarray) -> np.ndarray:
    zs, ys, xs = np.nonzero(mask)
    idx = [float(xs.mean()), float(ys.mean()), float(zs.mean())]
    return np.array(img.TransformContinuousIndexToPhysicalPoint(idx))


@pytest.mark.parametrize(
    "direction,spacing",
    [(None, (2.4, 2.4, 5.0)), (tilt_direction(20.0), (2.3, 2.5, 5.0)), (tilt_direction(-12.0), (2.4, 2.4, 2.0))],
)
def test_lesion_found_where_it_is_and_geometry_kept(tiny_package, direction, spacing):
    size = (96, 96, 24 if spacing[2] == 5.0 else 60)
    blob = (60.0, 40.0, size[2] * 0.55)
    img = simple_head(size=size, spacing=spacing, direction=direction, blob_index=blob)
    result = _segmenter(tiny_package).segment(img)
    out = result.label
    assert out.GetSize() == img.GetSize()
    assert out.GetSpacing() == img.GetSpacing()
    assert out.GetOrigin() == img.GetOrigin()
    assert out.GetDirection() == img.GetDirection()
    assert out.GetPixelID() == sitk.sitkUInt8
    truth = _blob_truth(img)
    pred = _near_blob(sitk.GetArrayFromImage(out) == 1, truth)
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.8
    c_pred = _physical_centroid(img, pred)
    c_true = np.array(img.TransformContinuousIndexToPhysicalPoint(blob))
    assert np.linalg.norm(c_pred - c_true) < 2.0  # mm
    assert set(result.timings_s) >= {"check", "preprocess", "predict", "resample_back", "postprocess"}


def test_flipped_axes_input(tiny_package):
    """An input stored with flipped/permuted axes (e.g. RAS NIfTI) comes back on its own grid."""
    img = simple_head(blob_index=(30.0, 60.0, 12.0))
    flipped = sitk.Flip(img, [True, False, True])
    result = _segmenter(tiny_package).segment(flipped)
    assert result.label.GetDirection() == flipped.GetDirection()
    truth = _blob_truth(flipped)
    pred = _near_blob(sitk.GetArrayFromImage(result.label) == 1, truth)
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8


def test_accurate_mode_runs_mirrored_passes(tiny_package):
    img = simple_head(blob_index=(50.0, 50.0, 12.0))
    fast = _segmenter(tiny_package, quality="fast").segment(img).label
    accurate = _segmenter(tiny_package, quality="accurate").segment(img).label
    # a symmetric threshold model gives (nearly) the same answer with mirroring
    a, b = sitk.GetArrayFromImage(fast), sitk.GetArrayFromImage(accurate)
    assert (a == b).mean() > 0.999


def test_window_probabilities_average_networks_and_flips():
    torch.manual_seed(0)
    nets = [torch.nn.Conv3d(1, 4, 3, padding=1).eval() for _ in range(2)]
    x = torch.rand(1, 1, 8, 12, 10)
    with torch.inference_mode():
        got = window_probabilities(nets, x, (8, 12, 10), overlap=0.0, mirror_axes=(2,))
        want = (
            sum(torch.softmax(net(x), 1) + torch.flip(torch.softmax(net(torch.flip(x, (4,))), 1), (4,)) for net in nets)
            / 4
        )
    assert got.shape == (1, 4, 8, 12, 10)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.sum(1), torch.ones(1, 8, 12, 10))


def test_a_class_can_be_averaged_over_fewer_flips():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 4, 3, padding=1).eval()
    x = torch.rand(1, 1, 8, 12, 10)
    with torch.inference_mode():
        got = window_probabilities([net], x, (8, 12, 10), overlap=0.0, mirror_axes=(2, 1), class_mirror_axes={3: (2,)})

        def pass_(flip):
            return torch.flip(torch.softmax(net(torch.flip(x, flip)), 1), flip) if flip else torch.softmax(net(x), 1)

        every = sum(pass_(f) for f in [(), (4,), (3,), (4, 3)]) / 4
        x_only = (pass_(()) + pass_((4,))) / 2
    torch.testing.assert_close(got[:, :3], every[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[:, 3], x_only[:, 3], atol=1e-5, rtol=1e-5)


def test_random_network_runs_end_to_end(tiny_package):
    img = simple_head(blob_index=(50.0, 50.0, 12.0))
    seg = Segmenter(load_package(tiny_package), device="cpu")
    result = seg.segment(img)
    assert result.label.GetSize() == img.GetSize()
    assert sitk.GetArrayViewFromImage(result.label).max() <= 3


def test_bf16_only_where_the_cpu_has_it(tiny_package, monkeypatch):
    """Emulated bfloat16 is many times slower than float32: a CPU without it segments in float32."""
    import ichseg.infer

    package = load_package(tiny_package)
    monkeypatch.setattr(ichseg.infer, "cpu_bf16_supported", lambda: False)
    assert not Segmenter(package, device="cpu", bf16=True).bf16
    monkeypatch.setattr(ichseg.infer, "cpu_bf16_supported", lambda: True)
    assert Segmenter(package, device="cpu", bf16=True).bf16
    assert not Segmenter(package, device="cpu").bf16


def test_window_choice():
    assert choose_window((30, 100, 90), (16, 32, 32), (2, 4, 4), 10**7) == (30, 100, 92)
    assert choose_window((30, 100, 90), (16, 32, 32), (2, 4, 4), 1000) == (16, 32, 32)
    assert choose_window((8, 20, 20), (16, 32, 32), (2, 4, 4), 10**7) == (16, 32, 32)


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            select_device("cuda")


def test_auto_quality_is_what_the_card_recommends(tiny_package, tmp_path):
    inference = {"patch_size_zyx": [16, 32, 32]}
    assert resolve_quality("auto", inference) == "fast"  # no recommendation
    assert resolve_quality("auto", {**inference, "quality": "accurate"}) == "accurate"
    assert resolve_quality("fast", {**inference, "quality": "accurate"}) == "fast"  # the user's choice wins
    with pytest.raises(ValueError, match="quality"):
        resolve_quality("best", inference)
    assert tuple(QUALITY_SETTINGS) == QUALITY_MODES and ("auto", *QUALITY_MODES) == QUALITY_CHOICES

    recommending = tmp_path / "recommends-accurate"
    shutil.copytree(tiny_package, recommending)
    card = json.loads((recommending / MODEL_JSON).read_text())
    card["inference"]["quality"] = "accurate"
    (recommending / MODEL_JSON).write_text(json.dumps(card))
    auto = Segmenter(load_package(recommending), device="cpu")
    assert auto.quality == "accurate" and auto.settings["mirror_axes"] == (2, 1)
    assert Segmenter(load_package(recommending), device="cpu", quality="fast").settings["mirror_axes"] == ()
    assert Segmenter(load_package(tiny_package), device="cpu").quality == "fast"
    result = _segmenter(recommending).segment(simple_head(blob_index=(50.0, 50.0, 12.0)))
    assert result.quality == "accurate"


def test_mirroring_follows_the_card(tiny_package, tmp_path):
    assert mirror_axes_of("fast", {"mirror_axes": [2, 1]}) == ()  # fast never mirrors
    assert mirror_axes_of("accurate", {}) == (2, 1)  # a card that does not say: x and y
    assert mirror_axes_of("accurate", {"mirror_axes": []}) == ()
    assert mirror_axes_of("accurate", {"mirror_axes": [2]}) == (2,)
    per_class = {"class_mirror_axes": {"IVH": [2]}}
    assert class_mirror_axes_of("accurate", per_class) == {3: (2,)}
    assert class_mirror_axes_of("fast", per_class) == {}  # nothing mirrored
    assert class_mirror_axes_of("accurate", {"class_mirror_axes": {"ivh": [2]}}) == {3: (2,)}  # keys as the card check
    assert class_mirror_axes_of("accurate", {**per_class, "mirror_axes": [1]}) == {3: ()}  # within the mode's axes
    for axes, expected in (([], ()), ([2], (2,))):
        folder = tmp_path / f"axes{len(axes)}"
        shutil.copytree(tiny_package, folder)
        card = json.loads((folder / MODEL_JSON).read_text())
        card["inference"]["mirror_axes"] = axes
        (folder / MODEL_JSON).write_text(json.dumps(card))
        assert Segmenter(load_package(folder), device="cpu", quality="accurate").settings["mirror_axes"] == expected


def test_a_quality_other_than_the_recommended_one_is_warned_about(tiny_package):
    card = load_package(tiny_package).card
    assert quality_warning(card, "fast") is None and quality_warning(card, "accurate") is None  # no recommendation
    card.inference["quality"] = "accurate"
    assert quality_warning(card, "accurate") is None
    assert quality_warning(card, "fast") == f"model {card.id}@{card.version} is meant to run with --quality accurate"

    def summary(dice):
        return {"n_cases": 50, "classes": {"ICH": {"dice_pos_mean": dice}}}

    card.metrics = {**card.metrics, "test": summary(0.3), "test_accurate": summary(0.76)}
    assert quality_warning(card, "fast").endswith("(held-out ICH Dice 0.76; with fast: 0.30)")


class HesitantNet(ThresholdNet):
    """ThresholdNet with logits shrunk tenfold: the blob is ICH, but with a peak probability below 0.9."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) / 10.0


def test_card_confidence_rule_gives_up_hesitant_components(tiny_package, tmp_path):
    img = simple_head(blob_index=(50.0, 50.0, 12.0))
    plain = _segmenter(tiny_package)
    plain.networks = [HesitantNet()]
    kept = plain.segment(img)
    assert (sitk.GetArrayFromImage(kept.label) == 1).sum() > 100
    assert "unconfident_components_1" not in kept.postprocess

    strict = tmp_path / "strict"
    shutil.copytree(tiny_package, strict)
    card = json.loads((strict / MODEL_JSON).read_text())
    card["inference"]["min_component_confidence"] = {"ICH": 0.95}
    (strict / MODEL_JSON).write_text(json.dumps(card))
    seg = _segmenter(strict)
    assert seg.min_confidence == {1: 0.95}
    seg.networks = [HesitantNet()]
    dropped = seg.segment(img)
    assert not (sitk.GetArrayFromImage(dropped.label) == 1).any()
    assert dropped.postprocess["unconfident_components_1"] > 0


def test_card_component_limit_reaches_the_post_processing(tiny_package, tmp_path):
    img = simple_head(blob_index=(50.0, 50.0, 12.0), blob_radius_mm=8.0)
    plain = _segmenter(tiny_package)
    plain.networks = [HesitantNet()]
    ich_ml = (sitk.GetArrayFromImage(plain.segment(img).label) == 1).sum() * np.prod(img.GetSpacing()) / 1000
    assert 0.02 < ich_ml < 5.0

    strict = tmp_path / "big-only"
    shutil.copytree(tiny_package, strict)
    card = json.loads((strict / MODEL_JSON).read_text())
    card["inference"]["min_component_ml"] = {"ICH": round(float(ich_ml) * 1.5 + 0.01, 3)}  # above the blob
    (strict / MODEL_JSON).write_text(json.dumps(card))
    seg = _segmenter(strict)
    seg.networks = [HesitantNet()]
    result = seg.segment(img)
    assert not (sitk.GetArrayFromImage(result.label) == 1).any()
    assert result.postprocess["small_components_1"] > 0
