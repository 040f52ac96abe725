"""benchmarks/choose_postprocessing.py: the confidence threshold is chosen on validation cases."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from conftest import load_benchmark

from ichseg.preprocess import PreprocessConfig, prepare_image


def _script():
    return load_benchmark("choose_postprocessing")


def _case(module, name: str, hesitant_peak: float, with_lesion: bool, lesion_peak: float = 0.95):
    """A 2 mm grid; a true ICH blob (when ``with_lesion``) and a hesitant false one."""
    image = sitk.GetImageFromArray(np.full((20, 40, 40), 30, np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    prepared = prepare_image(image, PreprocessConfig(spacing_xyz=(2.0, 2.0, 2.0), crop=False))
    probs = np.zeros((4, 20, 40, 40), np.float32)
    probs[0] = 1.0
    reference = np.zeros((20, 40, 40), np.uint8)
    if with_lesion:
        probs[:2, 4:10, 5:15, 5:15] = np.array([1 - lesion_peak, lesion_peak])[:, None, None, None]
        reference[4:10, 5:15, 5:15] = 1
    probs[:2, 12:16, 25:32, 25:32] = np.array([1 - hesitant_peak, hesitant_peak])[:, None, None, None]
    return module.ValidationCase(name, probs, prepared, image.GetSpacing(), reference)


def test_threshold_between_hesitant_false_positives_and_confident_lesions():
    module = _script()
    module._CASES[:] = [
        _case(module, "a", 0.6, True),
        _case(module, "b", 0.7, True),
        _case(module, "c", 0.65, False),  # a case without ICH: only the false positive
    ]
    logged = []
    result = module.choose(
        map, [module.class_by_key("ICH"), module.class_by_key("IVH")], [0.5, 0.8, 0.99], 0.002, logged.append
    )
    assert result["rules"] == {1: 0.8}  # 0.5 keeps the false positives, 0.99 drops the lesions too
    rows = {r["threshold"]: r for r in result["sweep"]["ICH"]}
    assert rows[0.8]["dice_all"] == 1.0 and rows[None]["dice_all"] < 0.9
    assert rows[0.99]["dice_positive"] == 0.0 and rows[0.99]["lost"] == 2 and rows[0.8]["lost"] == 0
    assert 3 not in result["rules"]  # no IVH anywhere: no rule brings a gain
    assert any("threshold 0.8" in line for line in logged)


def test_a_threshold_that_deletes_a_found_lesion_is_not_chosen():
    module = _script()
    module._CASES[:] = [
        _case(module, "found-but-hesitant", 0.78, True, lesion_peak=0.75),
        *(_case(module, f"negative-{i}", 0.78, False) for i in range(4)),  # false positives above the lesion
    ]
    ich = [module.class_by_key("ICH")]
    safe = module.choose(map, ich, [0.7, 0.8], 0.002, lambda line: None)
    assert safe["rules"] == {}  # 0.8 would clear the negatives but miss the lesion
    assert [r["lost"] for r in safe["sweep"]["ICH"]] == [0, 0, 1]
    risky = module.choose(map, ich, [0.7, 0.8], 0.002, lambda line: None, max_lost=1)
    assert risky["rules"] == {1: 0.8}


def test_cached_probabilities_score_what_segment_writes(tmp_path):
    """A near-tie (ICH 0.5001 against background 0.4999) is ICH for ``ichseg segment``; the cache must
    not round it away (float16 made it a tie, i.e. background)."""
    from types import SimpleNamespace

    from ichseg.infer import find_cavity, finish_label

    module = _script()
    images, refs = tmp_path / "images", tmp_path / "refs"
    images.mkdir()
    refs.mkdir()
    image = sitk.GetImageFromArray(np.full((20, 40, 40), 30, np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(images / "a.nii.gz"))
    reference = sitk.GetImageFromArray(np.zeros((20, 40, 40), np.uint8))
    reference.CopyInformation(image)
    sitk.WriteImage(reference, str(refs / "a.nii.gz"))

    class Segmenter:
        card = SimpleNamespace(weights=[SimpleNamespace(sha256="0" * 64)])
        quality = "accurate"
        config = PreprocessConfig(spacing_xyz=(2.0, 2.0, 2.0), crop=False)
        min_component_mm3 = None

        def predict_probabilities(self, prepared):
            probs = np.zeros((4, *prepared.hu.shape), np.float32)
            probs[0] = 1.0
            probs[:2, 4:10, 5:15, 5:15] = np.array([0.4999, 0.5001], np.float32)[:, None, None, None]
            return probs, None

    segmenter = Segmenter()
    for _ in range(2):  # computed, then read back from the cache
        (case,) = module.predict_cases(segmenter, images, refs, tmp_path / "cache", lambda line: None)
        probs, _ = segmenter.predict_probabilities(case.prepared)
        expected, _ = finish_label(
            probs, case.prepared, image.GetSpacing(), min_confidence={}, cavity=find_cavity(case.prepared)
        )
        assert (expected == 1).sum() == 600
        assert np.array_equal(case.label({}), expected)
