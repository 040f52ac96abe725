"""Model package: save/load round trip, weights_only loading, checksum refusal, card validation; average,
derive and widen."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch

from ichseg.cli import main
from ichseg.errors import InputError, OutputError
from ichseg.model import (
    CardError,
    ModelCard,
    ParentRef,
    architecture,
    build_network,
    bump_version,
    count_parameters,
    load_package,
    save_package,
    zip_package,
)
from ichseg.model.widen import widen_state, widened_architecture
from ichseg.preprocess import PreprocessConfig

ARCH = architecture(
    kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    filters=[4, 8, 16],
    deep_supervision=True,
)


def _card(**over) -> ModelCard:
    kw = dict(
        id="test-model",
        version="1.0.0",
        architecture=ARCH,
        preprocessing=PreprocessConfig((1.0, 1.0, 2.5)).to_dict(),
        plan={"patch_size_zyx": [16, 32, 32]},
        training={"data": {"n_cases": 3}, "loss": "dicece", "steps": 5},
        inference={"patch_size_zyx": [16, 32, 32], "overlap": 0.5},
    )
    kw.update(over)
    return ModelCard(**kw)


def _states(n=1):
    out = []
    for i in range(n):
        torch.manual_seed(i)
        out.append((None if n == 1 else i, build_network(ARCH).state_dict()))
    return out


def test_network_builds_and_runs():
    net = build_network(ARCH)
    assert count_parameters(net) > 0
    net.eval()
    with torch.no_grad():
        y = net(torch.zeros(1, 1, 16, 32, 32))
    assert y.shape == (1, 4, 16, 32, 32)
    net.train()
    y = net(torch.zeros(2, 1, 16, 32, 32))
    assert y.shape == (2, 2, 4, 16, 32, 32)  # deep supervision heads stacked on dim 1


def test_round_trip_single_and_zip(tmp_path):
    states = _states(1)
    out = save_package(tmp_path / "pkg", _card(), states)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.pt"]
    pkg = load_package(out)
    assert pkg.card.id == "test-model" and pkg.card.version == "1.0.0"
    assert pkg.card.weights[0].fold is None and len(pkg.card.weights[0].sha256) == 64
    for k, v in states[0][1].items():
        assert torch.equal(pkg.states[0][k], v)
    net = pkg.build_networks()[0]
    assert not net.training
    z = zip_package(out, tmp_path / "pkg.zip")
    pkg2 = load_package(z)
    assert pkg2.card.to_dict() == pkg.card.to_dict()
    assert all(torch.equal(pkg2.states[0][k], v) for k, v in pkg.states[0].items())
    with pytest.raises(OutputError, match="refusing to overwrite"):
        save_package(out, _card(), states)


def test_kfold_package_is_an_ensemble(tmp_path):
    out = save_package(tmp_path / "cv", _card(), _states(3))
    pkg = load_package(out)
    assert [w.file for w in pkg.card.weights] == ["weights_fold0.pt", "weights_fold1.pt", "weights_fold2.pt"]
    assert pkg.card.folds == [0, 1, 2]
    assert len(pkg.build_networks()) == 3


def test_weights_only_loading_refuses_pickled_objects(tmp_path, monkeypatch):
    out = save_package(tmp_path / "pkg", _card(), _states(1))
    calls = []
    real = torch.load

    def spy(*a, **k):
        calls.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    load_package(out)
    assert calls == [True]
    monkeypatch.setattr(torch, "load", real)

    # a weights file holding an arbitrary pickled object (code execution risk) is refused
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = out / "weights.pt"
    torch.save({"x": Evil()}, evil)
    import hashlib

    card = json.loads((out / "model.json").read_text())
    card["weights"][0]["sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()
    (out / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="weights.pt cannot be loaded as a state_dict"):
        load_package(out)
    assert pickle  # keep import used


def test_wrong_checksum_refused_with_file_name(tmp_path):
    out = save_package(tmp_path / "pkg", _card(), _states(2))
    f = out / "weights_fold1.pt"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        load_package(out)
    msg = str(e.value)
    assert "weights_fold1.pt" in msg and "SHA-256" in msg and "\n" not in msg
    # the card alone still loads
    assert load_package(out, load_weights=False).card.id == "test-model"


def test_missing_weights_file_and_bad_zip(tmp_path):
    out = save_package(tmp_path / "pkg", _card(), _states(1))
    (out / "weights.pt").unlink()
    with pytest.raises(InputError, match="weights.pt is missing"):
        load_package(out)
    bad = tmp_path / "x.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("readme.txt", "no model")
    with pytest.raises(InputError, match="holds no model.json"):
        load_package(bad)
    with pytest.raises(InputError, match="not found"):
        load_package(tmp_path / "nope")


def test_card_round_trip_with_parent():
    card = _card(parent=ParentRef("base-model", "1.0.0", "a" * 64, "weights.pt"), metrics={"dice": {"ICH": 0.9}})
    d = json.loads(json.dumps(card.to_dict()))
    again = ModelCard.from_dict(d)
    assert again.to_dict() == card.to_dict()
    assert again.parent.version == "1.0.0"
    assert [c["key"] for c in again.classes] == ["ICH", "PHE", "IVH"]
    assert again.classes[0]["terminology"]["type"]["CodeValue"] == "50960005"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version": "1.2"}, "'version' must be a semantic version like 1.2.0, got '1.2'"),
        ({"id": "Bad Id"}, "'id' must be lower-case"),
        ({"created": "yesterday"}, "'created' must be an ISO 8601"),
        ({"training": {"data": {}, "loss": "dicece", "steps": -1}}, "training.steps must be a non-negative integer"),
        ({"training": {"loss": "dicece", "steps": 1}}, "training.data"),
        ({"preprocessing": {"spacing_xyz": [1, 1]}}, "preprocessing: spacing_xyz"),
        ({"parent": {"id": "x", "version": "1.0.0"}}, "'parent' must be an object with id, version and sha256"),
        ({"weights": [{"file": "../evil.pt", "sha256": "0" * 64}]}, "must be a plain file name"),
        ({"weights": [{"file": "w.pt", "sha256": "xyz"}]}, "sha256 must be 64"),
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        ({"inference": {"quality": "turbo"}}, "inference.quality (the recommended quality) must be one of fast"),
        ({"inference": [32, 96, 96]}, "'inference' must be an object"),
        ({"inference": {"min_component_confidence": {"SDH": 0.5}}}, "min_component_confidence: unknown class 'SDH'"),
        ({"inference": {"min_component_confidence": {"ICH": 1.5}}}, "min_component_confidence[ICH] must be in [0, 1)"),
        ({"inference": {"min_component_confidence": [0.5]}}, "must map class keys to thresholds"),
        ({"inference": {"min_component_ml": {"SDH": 0.5}}}, "min_component_ml: unknown class 'SDH'"),
        ({"inference": {"min_component_ml": {"PHE": 0.01}}}, "min_component_ml[PHE] must be between 0.03 and 10 mL"),
        ({"inference": {"mirror_axes": [3]}}, "inference.mirror_axes must be a list of distinct axes"),
        ({"inference": {"mirror_axes": [2, 2]}}, "inference.mirror_axes must be a list of distinct axes"),
        ({"inference": {"mirror_axes": ["x"]}}, "inference.mirror_axes must be a list of distinct axes"),
        ({"inference": {"mirror_axes": 2}}, "inference.mirror_axes must be a list of distinct axes"),
        ({"inference": {"class_mirror_axes": [2]}}, "inference.class_mirror_axes must map class keys"),
        ({"inference": {"class_mirror_axes": {"SDH": [2]}}}, "inference.class_mirror_axes: unknown class 'SDH'"),
        ({"inference": {"class_mirror_axes": {"IVH": [5]}}}, "inference.class_mirror_axes[IVH] must be a list"),
        ({"inference": {"class_mirror_axes": {"IVH": [2], "ivh": [1]}}}, "class 'ivh' is given twice"),
    ],
)
def test_card_validation_messages(change, expected):
    d = _card().to_dict()
    d.update(change)
    with pytest.raises(CardError) as e:
        ModelCard.from_dict(d, source="pkg/model.json")
    assert expected in str(e.value)
    assert str(e.value).startswith("model card pkg/model.json: ")


def test_card_missing_fields_and_class_mismatch():
    d = _card().to_dict()
    del d["plan"], d["architecture"]
    with pytest.raises(CardError, match="missing field 'architecture'; missing field 'plan'"):
        ModelCard.from_dict(d)
    d = _card().to_dict()
    d["classes"][0]["key"], d["classes"][1]["key"] = "PHE", "ICH"
    with pytest.raises(CardError, match="value 1 is 'PHE' in the card but 'ICH'"):
        ModelCard.from_dict(d)
    d = _card().to_dict()
    d["architecture"] = dict(d["architecture"], out_channels=3)
    with pytest.raises(CardError, match="out_channels must be 4"):
        ModelCard.from_dict(d)


def test_bump_version():
    assert bump_version("1.2.3") == "1.3.0"
    assert bump_version("1.2.3", "major") == "2.0.0"
    assert bump_version("1.2.3", "patch") == "1.2.4"
    with pytest.raises(ValueError):
        bump_version("v1")


def test_average_is_the_weighted_mean_with_members_recorded(tmp_path):
    from ichseg.model.average import average_packages

    a = save_package(tmp_path / "a", _card(version="1.0.0"), _states(1))
    torch.manual_seed(5)
    b = save_package(tmp_path / "b", _card(version="1.1.0"), [(None, build_network(ARCH).state_dict())])
    out = average_packages([a, b], tmp_path / "soup", "1.1.1", [1.0, 3.0])
    pa, pb, soup = load_package(a), load_package(b), load_package(out)
    for key, value in soup.states[0].items():
        expected = 0.25 * pa.states[0][key].double() + 0.75 * pb.states[0][key].double()
        assert torch.allclose(value.double(), expected, atol=1e-6), key
    card = soup.card
    assert card.version == "1.1.1" and card.metrics == {}
    assert (card.parent.version, card.parent.sha256) == ("1.0.0", pa.card.weights[0].sha256)
    members = card.training["weight_average"]
    assert [(m["version"], m["weight"]) for m in members] == [("1.0.0", 0.25), ("1.1.0", 0.75)]
    assert card.training["steps"] == pb.card.training["steps"]


def test_average_inference_settings_and_the_evidence_behind_them(tmp_path):
    from ichseg.model.average import average_packages

    a = save_package(tmp_path / "a", _card(version="1.0.0"), _states(1))
    card_b = _card(version="1.1.0")
    card_b.inference.update(min_component_ml={"ICH": 0.25}, min_component_ml_chosen_on={"cases": 30})
    b = save_package(tmp_path / "b", card_b, _states(1))
    mirroring = {"class_mirror_axes": {"IVH": [2]}}
    kept = load_package(average_packages([a, b], tmp_path / "kept", "1.1.1", inference=mirroring))
    assert kept.card.inference["class_mirror_axes"] == {"IVH": [2]}
    assert kept.card.inference["min_component_ml_chosen_on"] == {"cases": 30, "model": f"{card_b.id}@1.1.0"}
    limit = {"min_component_ml": {"ICH": 0.5}}
    changed = load_package(average_packages([a, b], tmp_path / "changed", "1.1.2", inference=limit))
    assert changed.card.inference["min_component_ml"] == {"ICH": 0.5}
    assert "min_component_ml_chosen_on" not in changed.card.inference  # that evidence was for 0.25 mL
    same = {"min_component_ml": {"ICH": 0.25}}  # restating the inherited value keeps its evidence
    restated = load_package(average_packages([a, b], tmp_path / "same", "1.1.4", inference=same))
    assert restated.card.inference["min_component_ml_chosen_on"]["cases"] == 30
    with pytest.raises(InputError, match="min_component_ml\\[ICH\\] must be between"):
        average_packages([a, b], tmp_path / "bad", "1.1.3", inference={"min_component_ml": {"ICH": 50}})
    assert not (tmp_path / "bad").exists()


def test_derive_keeps_the_weights_and_changes_only_the_inference_settings(tmp_path):
    from ichseg.model.derive import derive_package

    card = _card(version="1.6.0")
    card.inference.update(min_component_ml={"ICH": 0.25}, min_component_ml_chosen_on={"cases": 30})
    card.metrics = {"test": {"n_cases": 50}}
    source = load_package(save_package(tmp_path / "src", card, _states(2)))  # a 2-fold ensemble
    rule = {"min_component_confidence": {"ICH": 0.8}, "min_component_ml": {"ICH": 0.3}}
    derived = load_package(derive_package(tmp_path / "src", tmp_path / "new", "1.6.1", rule))
    assert [w.sha256 for w in derived.card.weights] == [w.sha256 for w in source.card.weights]
    assert [w.fold for w in derived.card.weights] == [0, 1]
    assert (derived.card.version, derived.card.parent.version) == ("1.6.1", "1.6.0")
    assert derived.card.metrics == {}  # measured with the old settings
    assert derived.card.inference["min_component_confidence"] == {"ICH": 0.8}
    assert "min_component_ml_chosen_on" not in derived.card.inference  # that evidence was for 0.25 mL
    assert derived.card.training["derived"]["inference_changed"] == ["min_component_confidence", "min_component_ml"]
    assert derived.card.training["steps"] == 5
    with pytest.raises(InputError, match="unchanged"):
        derive_package(tmp_path / "src", tmp_path / "same", "1.6.2", {"min_component_ml": {"ICH": 0.25}})
    with pytest.raises(InputError, match="patch size"):
        derive_package(tmp_path / "src", tmp_path / "patch", "1.6.2", {"patch_size_zyx": [8, 8, 8]})
    with pytest.raises(InputError, match="semantic version"):
        derive_package(tmp_path / "src", tmp_path / "bad", "next", rule)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "src"]


def test_inherited_inference_names_whose_validation_chose_a_setting():
    from ichseg.model.card import inherited_inference

    parent = _card(version="1.4.2")
    parent.inference.update(
        min_component_ml={"ICH": 0.25},
        min_component_ml_chosen_on={"cases": 30},
        min_component_confidence_chosen_on={"cases": 8, "model": "ichseg-x@1.0.0"},  # already named: kept
    )
    child = inherited_inference(parent)
    assert child["min_component_ml"] == {"ICH": 0.25}
    assert child["min_component_ml_chosen_on"] == {"cases": 30, "model": f"{parent.id}@1.4.2"}
    assert child["min_component_confidence_chosen_on"]["model"] == "ichseg-x@1.0.0"
    assert "model" not in parent.inference["min_component_ml_chosen_on"]  # the parent's card is not changed


def test_average_refuses_what_cannot_be_averaged(tmp_path):
    from ichseg.model.average import average_packages

    a = save_package(tmp_path / "a", _card(), _states(1))
    other = architecture(kernels=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], filters=[4, 8, 16])
    torch.manual_seed(0)
    b = save_package(tmp_path / "b", _card(architecture=other), [(None, build_network(other).state_dict())])
    folds = save_package(tmp_path / "cv", _card(), _states(2))
    with pytest.raises(InputError, match="architecture differ"):
        average_packages([a, b], tmp_path / "x", "1.0.1")
    with pytest.raises(InputError, match="2 weights files"):
        average_packages([a, folds], tmp_path / "x", "1.0.1")
    with pytest.raises(InputError, match="non-negative"):
        average_packages([a, a], tmp_path / "x", "1.0.1", [1.0, -1.0])
    with pytest.raises(InputError, match="semantic version"):
        average_packages([a, a], tmp_path / "x", "one")
    with pytest.raises(InputError, match="at least two"):
        average_packages([a], tmp_path / "x", "1.0.1")
    assert not (tmp_path / "x").exists()


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
    card = _card(version="1.2.0", metrics={"test": {"n_cases": 50}})
    card.inference["min_component_confidence"] = {"ICH": 0.9}
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
