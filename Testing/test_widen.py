"""Widening a model (``ichseg models widen``): the wider network computes what the narrow one did."""

from __future__ import annotations

import json

import pytest
import torch

from ichseg.cli import main
from ichseg.errors import InputError
from ichseg.model import ModelCard, architecture, build_network, load_package, save_package
from ichseg.model.widen import widen_state, widened_architecture
from ichseg.preprocess import PreprocessConfig

ARCH = architecture(
    kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    filters=[4, 8, 16],
    deep_supervision=True,
)


def _trained_like_state(arch, seed=0) -> dict[str, torch.Tensor]:
    """Random weights everywhere, norms included (a fresh network's norms are all 1 and 0)."""
    torch.manual_seed(seed)
    net = build_network(arch)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 1.0))
    return net.state_dict()


@pytest.mark.parametrize("res_block", [False, True])
def test_the_wider_network_gives_the_same_outputs(res_block):
    arch = dict(ARCH, res_block=res_block)
    state = _trained_like_state(arch)
    wide_arch, wide_state = widen_state(arch, state, [8, 12, 24], seed=1)
    assert wide_arch["filters"] == [8, 12, 24] and wide_arch["kernels"] == arch["kernels"]
    narrow, wide = build_network(arch), build_network(wide_arch)
    narrow.load_state_dict(state)
    wide.load_state_dict(wide_state)
    x = torch.randn(2, 1, 8, 32, 32)
    with torch.no_grad():
        for mode in ("eval", "train"):  # train: the deep-supervision heads too
            narrow.train(mode == "train")
            wide.train(mode == "train")
            expected, got = narrow(x), wide(x)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the new channels are not copies of each other, and they get gradients from the first step
    conv = wide.input_block.conv1.conv.weight
    assert not torch.equal(conv[4], conv[5])
    wide.train()
    wide(x).mean().backward()
    assert wide.input_block.conv2.conv.weight.grad[:4, 4:].abs().sum() > 0


def test_widening_refuses_what_it_cannot_do():
    with pytest.raises(InputError, match="depth"):
        widened_architecture(ARCH, [8, 16])
    with pytest.raises(InputError, match="narrow"):
        widened_architecture(ARCH, [2, 16, 32])
    with pytest.raises(InputError, match="already"):
        widened_architecture(ARCH, [4, 8, 16])
    with pytest.raises(InputError, match="instance"):
        widened_architecture(dict(ARCH, norm="batch"), [8, 16, 32])


def test_widen_command_writes_a_new_version_with_its_parent(tmp_path, capsys):
    card = ModelCard(
        id="test-model",
        version="1.2.0",
        architecture=ARCH,
        preprocessing=PreprocessConfig((1.0, 1.0, 2.5)).to_dict(),
        plan={"patch_size_zyx": [16, 32, 32]},
        training={"data": {"n_cases": 3}, "loss": "dicece", "steps": 5},
        inference={"patch_size_zyx": [16, 32, 32], "overlap": 0.5, "min_component_confidence": {"ICH": 0.9}},
        metrics={"test": {"n_cases": 50}},
    )
    src = save_package(tmp_path / "src", card, [(None, _trained_like_state(ARCH))])
    out = tmp_path / "wide"
    assert main(["models", "widen", str(src), "--filters", "8,16,32", "--version", "1.3.0", "-o", str(out)]) == 0
    wide = load_package(out)  # checksum verified
    assert wide.card.architecture["filters"] == [8, 16, 32]
    assert (wide.card.version, wide.card.parent.version) == ("1.3.0", "1.2.0")
    assert wide.card.training["widened"]["filters_before"] == [4, 8, 16]
    assert wide.card.inference["min_component_confidence"] == {"ICH": 0.9}  # same outputs, same rule
    assert wide.card.metrics == {}
    # every weight is stored once, although a DynUNet names its decoder blocks twice
    n_bytes = sum(p.numel() * 4 for p in build_network(wide.card.architecture).parameters())
    assert (out / "weights.pt").stat().st_size < 1.2 * n_bytes
    saved = json.loads((out / "model.json").read_text())
    assert saved["training"]["widened"]["from"] == "test-model@1.2.0"

    capsys.readouterr()
    narrowing = ["models", "widen", str(src), "--filters", "2,8,16", "--version", "1.3.1", "-o", str(tmp_path / "x")]
    assert main(narrowing) == 2
    assert "cannot narrow" in capsys.readouterr().err
    assert main(["models", "widen", str(src), "--version", "1.3.1", "-o", str(tmp_path / "y")]) == 2
    assert "--filters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
