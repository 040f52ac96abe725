"""benchmarks/network_width.py: one run writes the shipped width's cost and each wider one's ratio to it."""

from __future__ import annotations

import json
import sys

from conftest import load_benchmark

FALLBACK = " — bf16 requested but not supported by this CPU"


def test_writes_parameters_sizes_and_ratios_for_each_width(tmp_path, monkeypatch):
    out = tmp_path / "width.json"
    argv = ["network_width.py", "--out", str(out), "--widths", "16,32,64,128,256"]
    monkeypatch.setattr(sys, "argv", [*argv, "--patch", "8,32,32", "--repeats", "1", "--threads", "1"])
    assert load_benchmark("network_width").main() == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["filters"] for r in rows] == [[8, 16, 32, 64, 128], [16, 32, 64, 128, 256]]  # the shipped width first
    assert rows[0]["forward_ratio"] == 1.0 and rows[0]["train_ratio"] == 1.0
    assert (rows[0]["parameters_M"], rows[0]["float32_MB"]) == (1.41, 5.6)  # the shipped width, 4 bytes a parameter
    assert rows[1]["parameters_M"] > 3 * rows[0]["parameters_M"]  # ~4x: convolutions scale with width squared
    assert all(r["forward_window_s"] > 0 and r["train_step_batch2_s"] > 0 for r in rows)
    assert json.loads(out.read_text())["train_precision"] in ("bf16 autocast (CPU)", "float32 (CPU)" + FALLBACK)
