"""benchmarks/ship_model.py: a package is shipped with its test evaluation and validated inference settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark, write_label_file

from ichseg.evaluate import evaluate_folders
from ichseg.model import load_package


def _script():
    return load_benchmark("ship_model")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> Path:
    """An ``ichseg evaluate`` output of two small cases."""
    root = tmp_path_factory.mktemp("eval")
    ref = np.zeros((12, 24, 24), np.uint8)
    ref[2:8, 4:14, 4:14] = 1
    ref[2:8, 14:18, 4:14] = 2
    pred = ref.copy()
    pred[2:8, 4:6, 4:14] = 0
    for case in ("a", "b"):
        write_label_file(root / "pred", f"{case}_labels", pred)
        write_label_file(root / "ref", case, ref)
    evaluate_folders(root / "pred", root / "ref", root / "out", plots=False)
    return root / "out"


def _choice(model: str | None, limits: dict, quality: str = "accurate") -> dict:
    """What choose_min_component.py writes (its fields that shipping reads)."""
    return {
        "model": model,
        "quality": quality,
        "cases": ["a", "b", "c"],
        "criterion": "mean Dice over all validation cases",
        "min_component_ml": limits,
        "sweep": {"ICH": [{"limit_ml": None, "dice_all": 0.7}, {"limit_ml": 0.25, "dice_all": 0.8}]},
    }


def test_shipping_writes_the_card_the_registry_and_the_chosen_limit(tmp_path, tiny_package, evaluation):
    choice = tmp_path / "limits.json"
    choice.write_text(json.dumps(_choice("tiny-test@0.0.1", {"ICH": 0.25})))
    models = tmp_path / "Models"
    argv = [str(tiny_package), str(evaluation), "--test-description", "2 cases", "--dest", str(models)]
    assert _script().main([*argv, "--min-component", str(choice)]) == 0

    shipped = load_package(models / "tiny-test-0.0.1")  # checksums still verify
    card = shipped.card
    assert card.metrics["test"]["description"] == "2 cases"
    assert card.metrics["test"]["n_cases"] == 2
    assert 0.0 < card.metrics["test"]["classes"]["ICH"]["dice_pos_mean"] < 1.0
    assert card.inference["min_component_ml"] == {"ICH": 0.25}
    record = card.inference["min_component_ml_chosen_on"]
    assert record["model"] == "tiny-test@0.0.1" and record["cases"] == 3 and record["quality"] == "accurate"
    assert card.inference["overlap"] == 0.25  # the package's own settings are kept
    assert (models / "tiny-test-0.0.1" / "evaluation" / "metrics.md").is_file()
    assert json.loads((models / "registry.json").read_text()) == {
        "default": "tiny-test@0.0.1",
        "models": [{"path": "tiny-test-0.0.1"}],
    }
    assert "min_component_ml" not in load_package(tiny_package).card.inference  # the source is not changed
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []  # no partial copy left


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("other@1.0.0", "predictions of other@1.0.0, not of tiny-test@0.0.1"),
        (None, "predictions without <case>_volumes.json"),
    ],
)
def test_limits_chosen_on_another_models_predictions_are_refused(
    tmp_path, tiny_package, evaluation, model, message, capsys
):
    choice = tmp_path / "limits.json"
    choice.write_text(json.dumps(_choice(model, {"ICH": 0.25})))
    models = tmp_path / "Models"
    with pytest.raises(SystemExit) as exc:
        _script().main([str(tiny_package), str(evaluation), "--dest", str(models), "--min-component", str(choice)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not models.exists()  # nothing written


def test_a_limit_below_the_one_the_predictions_were_made_with_is_refused(tiny_package):
    card = load_package(tiny_package).card
    card = replace(card, inference={**card.inference, "min_component_ml": {"ICH": 0.25}})
    settings = _script().min_component_settings
    with pytest.raises(ValueError, match="0.1 mL cannot be judged from predictions already made with 0.25 mL"):
        settings(card, _choice("tiny-test@0.0.1", {"ICH": 0.1}))
    raised = settings(card, _choice("tiny-test@0.0.1", {"ICH": 0.5}))
    assert raised["min_component_ml"] == {"ICH": 0.5}
    kept = settings(card, _choice("tiny-test@0.0.1", {}))  # no raise gained: the card's limit stays
    assert kept["min_component_ml"] == {"ICH": 0.25}


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, tiny_package, evaluation, capsys):
    models = tmp_path / "Models"
    script = _script()
    with pytest.raises(SystemExit):
        script.main([str(tiny_package), str(tmp_path / "no_eval"), "--dest", str(models)])
    assert "metrics.json" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SystemExit):
        script.main([str(tiny_package), str(evaluation), "--dest", str(models), "--min-component", str(broken)])
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(tiny_package), str(evaluation), "--dest", str(models), "--recommend-quality", "accurate"])
    assert "needs --accurate-eval" in capsys.readouterr().err
    assert not models.exists()


def test_a_confidence_rule_is_taken_only_for_the_weights_it_was_chosen_for(tiny_package):
    card = load_package(tiny_package).card
    chosen = {
        "model": "tiny-test@0.0.1",
        "weights_sha256": [w.sha256 for w in card.weights],
        "quality": "accurate",
        "cases": ["a", "b"],
        "criterion": "mean Dice over all validation cases",
        "min_component_confidence": {"ICH": 0.85},
        "sweep": {"ICH": []},
    }
    settings = _script().confidence_settings(card, chosen, Path("pp.json"))
    assert settings["min_component_confidence"] == {"ICH": 0.85}
    assert settings["min_component_confidence_chosen_on"] == {
        "model": "tiny-test@0.0.1",
        "quality": "accurate",
        "criterion": "mean Dice over all validation cases",
        "sweep": {"ICH": []},
        "cases": 2,
    }
    with pytest.raises(ValueError, match="pp.json was chosen for other weights"):
        _script().confidence_settings(card, {**chosen, "weights_sha256": ["0" * 64]}, Path("pp.json"))
