"""The ICHSegmentation model selector's entries come from the registry (no Slicer needed)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "ICHSegmentation") not in sys.path:
    sys.path.insert(0, str(ROOT / "ICHSegmentation"))

from conftest import make_tiny_package  # noqa: E402
from ICHSegmentationLib.models import model_choices  # noqa: E402

from ichseg.model import registry  # noqa: E402


def test_user_versions_listed_newest_first_with_current_marked(tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    monkeypatch.setenv("ICHSEG_MODELS_DIR", str(models_dir))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "no-shipped-models")
    assert model_choices() == []  # nothing installed: an empty selector, no exception

    first = make_tiny_package(models_dir / "tiny-test-0.0.1")
    second = models_dir / "tiny-test-0.0.2"
    shutil.copytree(first, second)
    text = (second / "model.json").read_text().replace('"version": "0.0.1"', '"version": "0.0.2"')
    (second / "model.json").write_text(text)
    registry.set_current("tiny-test@0.0.1")

    choices = model_choices()
    assert [c.ref for c in choices] == ["tiny-test@0.0.2", "tiny-test@0.0.1"]
    assert [c.current for c in choices] == [False, True]
    assert "[current]" in choices[1].label and "(fine-tuned)" in choices[0].label
    assert "0.0.1" in choices[1].summary and "Research use only" in choices[1].summary
    assert "Recommended quality: fast" in choices[1].summary and "Dice: not recorded" in choices[1].summary


def test_summary_shows_the_recommended_quality_its_test_dice_and_confidence_rule(tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    monkeypatch.setenv("ICHSEG_MODELS_DIR", str(models_dir))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "no-shipped-models")
    package = make_tiny_package(models_dir / "tiny-test-0.0.1")
    card = json.loads((package / "model.json").read_text())

    def test_metrics(ich: float) -> dict:
        return {"n_cases": 50, "classes": {"ICH": {"dice_pos_mean": ich}, "PHE": {"dice_pos_mean": None}}}

    card["metrics"] = {"test": test_metrics(0.58), "test_accurate": test_metrics(0.73)}
    card["inference"]["quality"] = "accurate"
    card["inference"]["min_component_confidence"] = {"ICH": 0.99, "IVH": 0.9}
    card["inference"]["min_component_ml"] = {"ICH": 0.25}
    (package / "model.json").write_text(json.dumps(card))
    (choice,) = model_choices()
    assert "Recommended quality: accurate" in choice.summary
    assert "Test Dice (50 cases, accurate): ICH 0.73" in choice.summary and "0.58" not in choice.summary
    assert "Drops findings whose peak probability stays below: ICH 0.99, IVH 0.9" in choice.summary
    assert "Drops findings smaller than: ICH 0.25 mL" in choice.summary


def test_bundled_sample_is_registered_with_its_checksum():
    from ICHSegmentationLib import sampledata

    from ichseg.fileutil import sha256_file

    calls = []

    class FakeSampleDataLogic:  # records what Slicer's SampleDataLogic would receive
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):
            calls.append(kwargs)

    assert sampledata.register_sample_data(FakeSampleDataLogic) == ["ICH-sample"]
    (call,) = calls
    assert call["category"] == sampledata.CATEGORY and call["loadFileTypes"] == ["VolumeFile"]
    path = Path(call["uris"][0].removeprefix("file://"))
    assert path.is_file() and path.name == call["fileNames"][0]
    assert call["checksums"] == [f"SHA256:{sha256_file(path)}"]
    assert sampledata.ICON.is_file()  # the thumbnail register_in_slicer passes
