"""Accuracy check of ``inference_speed.py``: Dice of each ichseg quality mode on labelled cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from speed_measure import check_run, run_measured
from speed_pipelines import ichseg_cmd


def bench_eval(args, work: Path) -> dict:
    from ichseg.batch import collect_cases

    src = Path(args.eval_cases)
    cases = sorted(collect_cases([str(src)]), key=lambda c: c.name)
    if args.eval_limit:
        cases = cases[: args.eval_limit]
    ref = work / "eval" / "ref"
    ref.mkdir(parents=True, exist_ok=True)
    used = []
    for c in cases:
        label = src / f"{c.name}_label.nii.gz"
        if label.is_file():
            (ref / label.name).symlink_to(label.resolve())
            used.append(c)
    if not used:
        raise RuntimeError(f"no <case>.nii.gz with <case>_label.nii.gz in {src}")
    result: dict[str, Any] = {"cases_dir": str(src), "n_cases": len(used), "cases": [c.name for c in used]}
    for mode in args.modes:
        pred = work / "eval" / f"pred_{mode}"
        shutil.rmtree(pred, ignore_errors=True)
        cmd = ichseg_cmd(args.python, [str(c.path) for c in used], pred, args.model, mode, ["--no-overlay"])
        res = run_measured(cmd, work / "eval" / f"segment_{mode}.log")
        check_run(res, f"ichseg segment on the eval cases ({mode})")
        mdir = work / "eval" / f"metrics_{mode}"
        shutil.rmtree(mdir, ignore_errors=True)
        ev = run_measured(
            [args.python, "-m", "ichseg", "evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(mdir)]
            + ["--no-plots"],
            work / "eval" / f"evaluate_{mode}.log",
        )
        check_run(ev, f"ichseg evaluate ({mode})")
        summary = json.loads((mdir / "metrics.json").read_text(encoding="utf-8"))["summary"]
        classes = {}
        for k, c in summary["classes"].items():
            classes[k] = {
                "dice_pos_mean": _round(c["dice_pos"]["mean"]),
                "dice_pos_n": c["dice_pos"]["n"],
                "dice_empty1_mean": _round(c["dice_empty1"]["mean"]),
                "hd95_mm_median": _round((c.get("hd95_mm") or {}).get("median")),
            }
        result[mode] = {
            "n_ok": summary["n_ok"],
            "classes": classes,
            "segment_wall_s_per_case": round(res["wall_s"] / len(used), 2),
        }
        print(f"  eval {mode}: " + ", ".join(f"{k} {v['dice_pos_mean']}" for k, v in classes.items()), flush=True)
    if "fast" in result and "accurate" in result:
        result["dice_pos_accurate_minus_fast"] = {
            k: _round(_sub(result["accurate"]["classes"][k]["dice_pos_mean"], v["dice_pos_mean"]))
            for k, v in result["fast"]["classes"].items()
        }
    return result


def _round(v, n: int = 4):
    return None if v is None else round(float(v), n)


def _sub(a, b):
    return None if a is None or b is None else a - b
