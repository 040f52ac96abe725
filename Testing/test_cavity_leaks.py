"""benchmarks/cavity_leaks.py: the cranial cavity against a phantom's true intracranial volume."""

from __future__ import annotations

import json

from conftest import load_benchmark

cavity_leaks = load_benchmark("cavity_leaks")


def test_summary_names_the_leaking_and_missing_cavities():
    def cell(ratio, found=True, outside=0):
        return {"found": found, "ratio": ratio, "lesion_voxels_outside": outside, "lesion_voxels": 10}

    rows = [
        {"case": "a", "4": cell(1.2), "5": cell(0.9)},
        {"case": "b", "4": cell(0.9, outside=3), "5": cell(0.88, outside=3)},
        {"case": "c", "4": cell(0.0, found=False), "5": cell(0.0, found=False)},
    ]
    s = cavity_leaks.summarize(rows, [4.0, 5.0])
    assert s["4"]["leaked"] == ["a"] and s["5"]["leaked"] == []
    assert s["4"]["not_found"] == ["c"] == s["5"]["not_found"]
    assert s["4"]["ratio_min_median_max"] == [0.9, 1.2, 1.2]
    assert s["5"]["lesion_voxels_outside"] == 3


def test_a_phantom_cavity_matches_its_intracranial_volume(tmp_path, capsys):
    from ichseg.train.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "Dataset500_Phantom", [11], matrix=128)
    out = tmp_path / "leaks.json"
    assert cavity_leaks.main([str(ds), "--erosions", "5", "--workers", "1", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["cases"] == 1
    cell = result["per_case"][0]["5"]
    assert cell["found"] and 0.8 < cell["ratio"] <= 1.0
    assert cell["lesion_voxels_outside"] <= 0.05 * cell["lesion_voxels"]
    assert "5 mm: 0 of 1 leaked" in capsys.readouterr().out
