"""The pipelines ``inference_speed.py`` times: ``ichseg segment`` and the nnU-Net v2 reference predictor."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from pathlib import Path

from speed_measure import check_run, run_measured

NNUNET_HELPER = Path(__file__).resolve().parent / "nnunet_reference.py"


# --------------------------------------------------------------------------- ichseg
def ichseg_cmd(python: str, inputs: list[str], out: Path, model: str | None, quality: str, extra=()) -> list[str]:
    cmd = [python, "-m", "ichseg", "segment", *inputs, "-o", str(out), "--quality", quality, "--force"]
    cmd += ["--progress", "quiet", "--device", "cpu", *extra]
    if model:
        cmd += ["--model", model]
    return cmd


def bench_ichseg(args, case: dict, key: str, mode: str, work: Path) -> dict:
    runs = []
    for r in range(args.repeats):
        out = work / "ichseg" / f"{key}_{mode}_{r}"
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--threads", str(args.threads)] if args.threads else []
        res = run_measured(ichseg_cmd(args.python, [case["image"]], out, args.model, mode, extra), out / "run.log")
        check_run(res, f"ichseg segment ({key}, {mode})")
        vols = json.loads((out / f"{key}_volumes.json").read_text(encoding="utf-8"))
        res["stage_timings_s"] = vols.get("timings_s", {})
        res["warnings"] = vols.get("warnings", [])
        runs.append(res)
        print(f"  ichseg {mode:8s} ({key}) run {r + 1}: {res['wall_s']:.2f} s, {res['peak_rss_mb']:.0f} MB", flush=True)
    walls = [r["wall_s"] for r in runs]
    return {
        "command": " ".join(ichseg_cmd("python", ["CASE"], Path("OUT"), args.model, mode)),
        "wall_s": round(statistics.median(walls), 3),
        "wall_s_min": min(walls),
        "wall_s_all": walls,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "measured": True,
        "runs": runs,
    }


# --------------------------------------------------------------------------- nnU-Net
def nnunet_available(python: str) -> str | None:
    """nnunetv2's version if ``python`` can import its predictor, else None."""
    if not Path(python).exists() and shutil.which(python) is None:
        return None
    code = (
        "import nnunetv2.inference.predict_from_raw_data, nnunetv2.experiment_planning.experiment_planners."
        "default_experiment_planner; from importlib.metadata import version; print(version('nnunetv2'))"
    )
    p = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None


def bench_nnunet(args, case: dict, key: str, work: Path) -> dict:
    base = work / "nnunet" / key
    shutil.rmtree(base, ignore_errors=True)
    model = base / "model"
    log = base / "prepare.log"
    cmd = [args.nnunet_python, str(NNUNET_HELPER), "prepare", "--image", case["image"], "--label", case["label"]]
    cmd += ["--work", str(base / "env"), "--model", str(model)]
    res = run_measured(cmd, log)
    check_run(res, f"nnU-Net prepare ({key})")
    plan = json.loads([ln for ln in log.read_text().splitlines() if ln.startswith("{")][-1])
    inp = base / "input"
    inp.mkdir()
    shutil.copyfile(case["image"], inp / "case_0000.nii.gz")
    fz = plan["3d_fullres"]
    print(f"  nnU-Net plan ({key}): spacing {fz['spacing_zyx_mm']} patch {fz['patch_size_zyx']}", flush=True)

    runs: dict[str, dict] = {}
    for name, tta in (("1fold_noTTA", False), ("1fold_TTA", True)):
        out = base / f"out_{name}"
        stats_file = base / f"stats_{name}.json"
        cmd = [args.nnunet_python, str(NNUNET_HELPER), "predict", "--input", str(inp), "--out", str(out)]
        cmd += ["--model", str(model), "--stats", str(stats_file), "--budget-s", str(args.nnunet_budget_s)]
        if not tta:
            cmd.append("--disable-tta")
        res = run_measured(cmd, base / f"predict_{name}.log")
        check_run(res, f"nnU-Net predict ({key}, {name})")
        st = json.loads(stats_file.read_text(encoding="utf-8"))
        calls, skipped = st["forward_calls"], st["forward_skipped"]
        times = st["forward_times_s"]
        steady = times[1:] if len(times) > 1 else times  # the first pass pays one-off allocations
        mean_fwd = sum(steady) / max(len(steady), 1)
        add = skipped * mean_fwd
        entry = {
            "command": "nnUNetv2_predict_from_modelfolder -i IN -o OUT -m MODEL -f 0 -device cpu --disable_progress_bar"
            + (" --disable_tta" if not tta else ""),
            "tta_mirror_axes": [0, 1, 2] if tta else [],
            "measured_wall_s": res["wall_s"],
            "wall_s": round(res["wall_s"] + add, 2),
            "peak_rss_mb": res["peak_rss_mb"],
            "measured": skipped == 0,
            "forward_passes": calls + skipped,
            "forward_passes_run": calls,
            "forward_mean_s": round(mean_fwd, 3),
            "forward_first_s": times[0] if times else None,
            "sliding_window_s": round(st["sliding_window_s"] + add, 2),
            "non_network_s": round(res["wall_s"] - st["forward_s"], 2),
            "window_input_shape": st["window_input_shape"],
            "torch_threads": st["torch_threads"],
            "run": res,
        }
        if skipped:
            entry["label"] = (
                f"extrapolated: {calls} of {calls + skipped} forward passes run "
                f"({args.nnunet_budget_s:g} s network budget), the rest at the mean of the runs after the first, "
                f"{mean_fwd:.2f} s"
            )
        runs[name] = entry
        print(
            f"  nnU-Net {name:11s} ({key}): {entry['wall_s']:.1f} s"
            f"{' (extrapolated)' if skipped else ''}, {entry['peak_rss_mb']:.0f} MB, "
            f"{calls + skipped} forward passes x {mean_fwd:.2f} s",
            flush=True,
        )
    tta = runs["1fold_TTA"]
    runs["5fold_TTA_default"] = {
        "wall_s": round(tta["wall_s"] + 4 * tta["sliding_window_s"], 1),
        "peak_rss_mb": tta["peak_rss_mb"],
        "measured": False,
        "label": "extrapolated: 1-fold TTA time + 4 x its sliding-window time (nnU-Net's default: 5 folds x 8 mirrors)",
    }
    return {"plan": plan, **runs}
