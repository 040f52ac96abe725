"""Report of ``inference_speed.py``: speed ratios, the issue's targets, the markdown table, the JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Targets of the inference issue on the 2-core CPU (reported, never asserted).
TARGETS = {
    "fast_a_wall_s_max": 20.0,
    "fast_a_peak_rss_gb_max": 3.0,
    "b_over_a_max": 1.5,
    "speedup_vs_nnunet_default_min": 50.0,
}


def ratios(results: dict) -> dict:
    out: dict[str, Any] = {}
    cases = results["cases"]
    for key, c in cases.items():
        ours, nn = c.get("ichseg", {}), c.get("nnunet", {})
        r: dict[str, Any] = {}
        for mode, m in ours.items():
            for name in ("1fold_noTTA", "1fold_TTA", "5fold_TTA_default"):
                if name in nn:
                    r[f"nnunet_{name}_over_ichseg_{mode}"] = round(nn[name]["wall_s"] / m["wall_s"], 1)
        if "fast" in ours and "accurate" in ours:
            r["ichseg_accurate_over_fast"] = round(ours["accurate"]["wall_s"] / ours["fast"]["wall_s"], 2)
        out[key] = r
    if "a" in cases and "b" in cases:
        ab = {}
        for mode in cases["a"].get("ichseg", {}):
            if mode in cases["b"].get("ichseg", {}):
                ab[f"ichseg_{mode}"] = round(
                    cases["b"]["ichseg"][mode]["wall_s"] / cases["a"]["ichseg"][mode]["wall_s"], 2
                )
        for name in ("1fold_noTTA", "1fold_TTA", "5fold_TTA_default"):
            if name in cases["a"].get("nnunet", {}) and name in cases["b"].get("nnunet", {}):
                ab[f"nnunet_{name}"] = round(
                    cases["b"]["nnunet"][name]["wall_s"] / cases["a"]["nnunet"][name]["wall_s"], 2
                )
        out["b_over_a_wall"] = ab
    return out


def targets(results: dict) -> dict:
    cases = results["cases"]
    t: dict[str, Any] = {"note": "targets of the inference issue on the 2-core CPU; reported, not asserted"}
    fa = cases.get("a", {}).get("ichseg", {}).get("fast")
    if fa:
        t["fast_a_wall_s"] = {"value": fa["wall_s"], "max": TARGETS["fast_a_wall_s_max"]}
        t["fast_a_wall_s"]["met"] = fa["wall_s"] <= TARGETS["fast_a_wall_s_max"]
        gb = fa["peak_rss_mb"] / 1024
        t["fast_a_peak_rss_gb"] = {"value": round(gb, 2), "max": TARGETS["fast_a_peak_rss_gb_max"]}
        t["fast_a_peak_rss_gb"]["met"] = gb <= TARGETS["fast_a_peak_rss_gb_max"]
    ab = results["ratios"].get("b_over_a_wall", {}).get("ichseg_fast")
    if ab is not None:
        t["fast_b_over_a"] = {"value": ab, "max": TARGETS["b_over_a_max"], "met": ab <= TARGETS["b_over_a_max"]}
    for key in cases:
        s = results["ratios"].get(key, {}).get("nnunet_5fold_TTA_default_over_ichseg_fast")
        if s is not None:
            lim = TARGETS["speedup_vs_nnunet_default_min"]
            t[f"speedup_vs_nnunet_default_{key}"] = {"value": s, "min": lim, "met": s >= lim, "extrapolated": True}
    return t


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores_available']} cores, {m['memory_gb']} GB; torch {results['torch']} "
        f"({results['torch_threads']} threads); model `{results['model']['ref']}`; "
        f"load before/after {results['contention']['before']['loadavg_1_5_15'][0]}/"
        f"{results['contention']['after']['loadavg_1_5_15'][0]}.",
        "",
    ]
    if results["smoke"]:
        lines += ["**Smoke run** (small images, tiny nnU-Net budget): checks the machinery, not the benchmark.", ""]
    busy = max(results["contention"][k]["other_processes_cpu_percent"] for k in ("before", "after"))
    if busy > 20:
        lines += [f"**Contended**: other processes used up to {busy:.0f}% CPU around the run: timings inflated.", ""]
    lines += [
        "| case | run | wall (s) | peak RSS (MB) | nnU-Net / ours (fast) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for key, c in results["cases"].items():
        sz, sp = c["case"]["size_xyz"], c["case"]["spacing_xyz_mm"]
        spec = "x".join(str(v) for v in sz) + " at " + "x".join(f"{v:.3g}" for v in sp) + " mm"
        for mode, r in c.get("ichseg", {}).items():
            lines.append(f"| ({key}) {spec} | ichseg {mode} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | |")
        fast = c.get("ichseg", {}).get("fast")
        names = {
            "1fold_noTTA": "nnU-Net 1 fold, no TTA",
            "1fold_TTA": "nnU-Net 1 fold, TTA",
            "5fold_TTA_default": "nnU-Net default 5 folds x TTA",
        }
        for name, label in names.items():
            r = c.get("nnunet", {}).get(name)
            if not r:
                continue
            ext = "" if r["measured"] else " *(extrapolated)*"
            ratio = _times(r["wall_s"] / fast["wall_s"]) if fast else ""
            lines.append(f"| ({key}) {spec} | {label}{ext} | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | {ratio} |")
    for key, c in results["cases"].items():
        plan = c.get("nnunet", {}).get("plan")
        if plan:
            fz = plan["3d_fullres"]
            lines.append(
                f"\nnnU-Net {plan['nnunetv2_version']} default 3d_fullres plan for ({key}): spacing (z, y, x) "
                + ", ".join(f"{v:.3g}" for v in fz["spacing_zyx_mm"])
                + f" mm, patch {'x'.join(str(v) for v in fz['patch_size_zyx'])}, {fz['network'].rsplit('.', 1)[-1]} "
                f"{fz['n_stages']} stages, {fz['parameters'] / 1e6:.1f} M parameters."
            )
    if any("nnunet" in c for c in results["cases"].values()):
        lines.append(
            "\n*Extrapolated*: forward passes beyond the network-time budget are counted at the measured mean; "
            "5 folds x TTA = 1-fold TTA run + 4 more sliding-window passes."
        )
    ab = results["ratios"].get("b_over_a_wall")
    if ab:
        lines += ["", "(b)/(a) wall time: " + ", ".join(f"{k} {v:.2f}" for k, v in ab.items()) + "."]
    ev = results.get("accuracy")
    if ev and "fast" in ev:
        lines += [
            "",
            f"Dice (mean over cases where the class is present) on {ev['n_cases']} held-out synthetic cases:",
            "",
            "| mode | " + " | ".join(ev["fast"]["classes"]) + " |",
            "| --- |" + " ---: |" * len(ev["fast"]["classes"]),
        ]
        for mode in ("fast", "accurate"):
            if mode in ev:
                cl = ev[mode]["classes"]
                lines.append(f"| {mode} | " + " | ".join(_fmt(v["dice_pos_mean"]) for v in cl.values()) + " |")
    return "\n".join(lines) + "\n"


def _times(v: float) -> str:
    return f"{v:.0f}x" if v >= 10 else f"{v:.1f}x"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
