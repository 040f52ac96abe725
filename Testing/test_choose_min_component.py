"""benchmarks/choose_min_component.py: the smallest kept finding is chosen on validation outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_benchmark, write_label_file


def _script():
    return load_benchmark("choose_min_component")


def test_the_largest_limit_that_loses_no_found_lesion_is_chosen(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    big = np.zeros((20, 40, 40), np.uint8)
    big[2:10, 5:15, 5:15] = 1  # 800 mm3, found
    with_speck = big.copy()
    with_speck[15:18, 30:34, 30:35] = 1  # 60 mm3 false positive
    write_label_file(pred, "a_labels", with_speck)
    write_label_file(ref, "a", big)
    speck_only = np.zeros_like(big)
    speck_only[15:18, 30:34, 30:35] = 1  # a case without ICH: the speck is its only finding
    write_label_file(pred, "b_labels", speck_only)
    write_label_file(ref, "b", np.zeros_like(big))
    small = np.zeros_like(big)
    small[4:9, 10:16, 10:15] = 1  # 150 mm3 true bleed, found: a 0.2 mL limit would delete it
    write_label_file(pred, "c_labels", small)
    write_label_file(ref, "c", small)

    out = tmp_path / "choice.json"
    module = _script()
    assert module.main([str(pred), str(ref), "-o", str(out), "--limits", "0.1,0.2", "--max-ml", "ICH=0.25"]) == 0
    result = json.loads(out.read_text())
    assert result["min_component_ml"] == {"ICH": 0.1}
    rows = {row["limit_ml"]: row for row in result["sweep"]["ICH"]}
    assert rows[None]["dice_all"] < rows[0.1]["dice_all"] == 1.0
    assert rows[0.2]["lost"] == 1  # inadmissible although it also removes the specks
    assert result["cases"] == ["a", "b", "c"]

    capped = tmp_path / "capped.json"
    assert module.main([str(pred), str(ref), "-o", str(capped), "--limits", "0.1", "--max-ml", "ICH=0.05"]) == 0
    assert json.loads(capped.read_text())["min_component_ml"] == {}  # above the cap: not tried


def test_the_choice_records_the_model_that_made_the_predictions(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    lesion = np.zeros((10, 20, 20), np.uint8)
    lesion[2:8, 4:14, 4:14] = 1
    for case in ("a", "b"):
        write_label_file(pred, f"{case}_labels", lesion)
        write_label_file(ref, case, lesion)
        record = {"case": case, "model": {"ref": "ichseg-x@1.2.0", "id": "ichseg-x", "version": "1.2.0"}}
        (pred / f"{case}_volumes.json").write_text(json.dumps({**record, "quality": "accurate"}))
    module = _script()
    out = tmp_path / "choice.json"
    assert module.main([str(pred), str(ref), "-o", str(out), "--limits", "0.1"]) == 0
    result = json.loads(out.read_text())
    assert (result["model"], result["quality"]) == ("ichseg-x@1.2.0", "accurate")

    (pred / "b_volumes.json").write_text(json.dumps({**record, "quality": "fast"}))  # b segmented in another quality
    with pytest.raises(SystemExit, match="not all made by one model in one quality"):
        module.main([str(pred), str(ref), "-o", str(tmp_path / "mixed.json"), "--limits", "0.1"])
    (pred / "b_volumes.json").unlink()  # b's record missing: unknown origin
    with pytest.raises(SystemExit, match="unknown"):
        module.main([str(pred), str(ref), "-o", str(tmp_path / "mixed.json"), "--limits", "0.1"])
    assert not (tmp_path / "mixed.json").exists()
