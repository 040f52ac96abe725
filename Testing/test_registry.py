"""Model registry: shipped + user models, current version, rollback, ``ichseg models``."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import make_tiny_package

from ichseg.cli import main
from ichseg.errors import InputError
from ichseg.model.registry import current_model, list_models, resolve_model, set_current, version_key


@pytest.fixture
def env(tmp_path, monkeypatch):
    res = tmp_path / "Resources"
    shipped = res / "Models"
    make_tiny_package(shipped / "tiny-test-0.0.1")
    (shipped / "registry.json").write_text(
        json.dumps({"default": "tiny-test@0.0.1", "models": [{"path": "tiny-test-0.0.1"}]})
    )
    user = tmp_path / "user_models"
    monkeypatch.setenv("ICHSEG_RESOURCES", str(res))
    monkeypatch.setenv("ICHSEG_MODELS_DIR", str(user))
    return shipped, user


def _user_version(user, version: str):
    path = make_tiny_package(user / f"tiny-test-{version}", seed=1)
    card = json.loads((path / "model.json").read_text())
    card["version"] = version
    (path / "model.json").write_text(json.dumps(card))
    return path


def test_shipped_default_is_current(env):
    assert current_model().ref == "tiny-test@0.0.1"
    assert [e.ref for e in list_models()] == ["tiny-test@0.0.1"]


def test_user_versions_use_and_rollback(env, capsys):
    _, user = env
    _user_version(user, "0.1.0")
    _user_version(user, "0.2.0")
    assert resolve_model("tiny-test").version == "0.2.0"  # newest of an id
    set_current("tiny-test@0.2.0")
    assert current_model().version == "0.2.0"
    assert main(["models", "rollback", "0.1.0"]) == 0
    assert current_model().version == "0.1.0"
    assert "rolled back to tiny-test@0.1.0" in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == ["0.0.1", "0.1.0", "0.2.0"]
    assert [r["current"] for r in rows] == [False, True, False]


def test_unknown_model_and_bad_path(env, tmp_path):
    with pytest.raises(InputError, match="unknown model"):
        resolve_model("nope@9.9.9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a model package"):
        resolve_model(str(tmp_path / "empty"))


def test_no_models_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("ICHSEG_RESOURCES", str(tmp_path / "none"))
    monkeypatch.setenv("ICHSEG_MODELS_DIR", str(tmp_path / "none2"))
    with pytest.raises(InputError, match="no model installed"):
        current_model()


def test_path_resolution(env):
    shipped, _ = env
    copy = shipped.parent / "elsewhere"
    shutil.copytree(shipped / "tiny-test-0.0.1", copy)
    assert resolve_model(str(copy)).source == "path"


def test_version_key():
    assert version_key("1.10.0") > version_key("1.9.3")


def test_models_average_command(env, tmp_path, capsys):
    _, user = env
    _user_version(user, "0.1.0")
    out = tmp_path / "soup"
    assert main(["models", "average", "tiny-test@0.0.1", "tiny-test@0.1.0", "-o", str(out), "--version", "0.1.1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = json.loads((out / "model.json").read_text())
    assert card["version"] == "0.1.1"
    assert [m["weight"] for m in card["training"]["weight_average"]] == [0.5, 0.5]
    assert main(["models", "average", "tiny-test@0.0.1", "-o", str(tmp_path / "x"), "--version", "0.1.2"]) != 0
    assert "at least two" in capsys.readouterr().err
    assert main(["models", "show", "tiny-test@0.0.1", "tiny-test@0.1.0"]) != 0


def test_models_derive_writes_a_new_version_with_the_given_settings(env, tmp_path, capsys):
    settings = '{"min_component_confidence": {"ICH": 0.8}}'
    base = ["models", "derive", "tiny-test@0.0.1", "--version", "0.0.2", "-o"]
    assert main([*base, str(tmp_path / "rule"), "--inference", settings]) == 0
    card = json.loads((tmp_path / "rule" / "model.json").read_text())
    assert card["version"] == "0.0.2" and card["parent"]["version"] == "0.0.1"
    assert card["inference"]["min_component_confidence"] == {"ICH": 0.8}
    capsys.readouterr()
    assert main([*base, str(tmp_path / "bad")]) != 0  # no --inference
    assert "needs one model" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_models_average_sets_the_inference_settings_of_the_new_card(env, tmp_path, capsys):
    _, user = env
    _user_version(user, "0.1.0")
    base = ["models", "average", "tiny-test@0.0.1", "tiny-test@0.1.0", "--version", "0.1.1", "-o"]
    settings = '{"class_mirror_axes": {"IVH": [2]}, "min_component_ml": {"ICH": 0.25}, "quality": null}'
    assert main([*base, str(tmp_path / "soup"), "--inference", settings]) == 0
    inference = json.loads((tmp_path / "soup" / "model.json").read_text())["inference"]
    assert inference["class_mirror_axes"] == {"IVH": [2]} and inference["min_component_ml"] == {"ICH": 0.25}
    assert "quality" not in inference and inference["patch_size_zyx"]  # removed / kept from the last model
    capsys.readouterr()
    assert main([*base, str(tmp_path / "bad"), "--inference", '{"min_component_ml": {"PHE": 0.001}}']) != 0
    assert "min_component_ml[PHE] must be between" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "bad"), "--inference", '{"patch_size_zyx": [8, 8, 8]}']) != 0
    assert "patch size is the one the weights were trained with" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main([*base, str(tmp_path / "bad"), "--inference", "[2]"])
    assert "must be a JSON object" in capsys.readouterr().err
