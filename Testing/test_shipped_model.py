"""The model shipped in Resources/Models: registry default, checksum, size, held-out evaluation in its card."""

from __future__ import annotations

import json
from pathlib import Path

from ichseg.model import load_package

MODELS = Path(__file__).resolve().parent.parent / "Resources" / "Models"


def _default_package_dir() -> Path:
    registry = json.loads((MODELS / "registry.json").read_text())
    for entry in registry["models"]:
        card = json.loads((MODELS / entry["path"] / "model.json").read_text())
        if f"{card['id']}@{card['version']}" == registry["default"]:
            return MODELS / entry["path"]
    raise AssertionError(f"registry default {registry['default']} is not among its models")


def test_the_registry_default_is_a_verified_package_under_20_mb_with_its_test_evaluation():
    folder = _default_package_dir()
    package = load_package(folder)  # verifies the SHA-256 of the weights
    card = package.card
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    test = card.metrics["test"]
    assert test["n_cases"] >= 40
    assert set(test["classes"]) == {"ICH", "PHE", "IVH"}
    assert all(0.0 <= c["dice_pos_mean"] <= 1.0 for c in test["classes"].values())
    assert (folder / "evaluation" / "metrics.md").is_file()
    assert card.training["steps"] > 0 and card.parent is not None  # traceable to its parent
    recommended = card.inference.get("quality", "fast")
    if recommended != "fast":  # a recommendation (used by --quality auto) is backed by its evaluation
        backing = card.metrics[f"test_{recommended}"]
        assert backing["n_cases"] == test["n_cases"]
        assert backing["classes"]["ICH"]["dice_pos_mean"] >= test["classes"]["ICH"]["dice_pos_mean"]
    if card.inference.get("min_component_confidence"):  # a confidence rule says how it was chosen
        chosen = card.inference["min_component_confidence_chosen_on"]
        assert chosen["cases"] >= 20 and chosen["quality"] == recommended and chosen["sweep"]
    (net,) = package.build_networks("cpu")
    assert sum(p.numel() for p in net.parameters()) > 100_000  # a real network, not a stub


def test_the_shipped_model_finds_the_sample_hematoma():
    """End to end on the bundled sample, in the quality users get (auto).

    Measured at release of 1.3.0: ICH Dice 0.90, 72.9 vs 75.5 mL (accurate); 0.89 in fast mode.
    """
    import numpy as np
    import SimpleITK as sitk

    from ichseg.infer import Segmenter
    from ichseg.resources import sample_path

    sample = sample_path()
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample.with_name("ICH-sample_label.nii.gz"))))
    segmenter = Segmenter(load_package(_default_package_dir()), quality="auto")
    label = sitk.GetArrayFromImage(segmenter.segment(sitk.ReadImage(str(sample))).label)
    assert label.shape == reference.shape
    ich, ref = label == 1, reference == 1
    assert 2 * np.logical_and(ich, ref).sum() / (ich.sum() + ref.sum()) >= 0.85
