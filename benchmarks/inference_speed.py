"""Inference speed benchmark: ``ichseg segment`` against nnU-Net v2's default predictor, written as JSON.

    python benchmarks/inference_speed.py --out benchmarks/results/inference_speed.json \\
        [--model PATH] [--cases a,b] [--skip-nnunet] [--repeats N] [--eval-cases DIR] [--smoke]

Cases (synthetic head CT from ``ichseg.phantom``, one seed, so the same head in both):
  (a) 512x512x40 at 0.45x0.45x5 mm and (b) 512x512x160 at 0.45x0.45x1 mm.  The phantom draws
  its own field of view (pixel 0.40-0.50 mm) and slice count, so the case is generated at the
  requested slice thickness, its in-plane spacing is set to 0.45 mm (a rescale of a few per cent)
  and it is padded with air slices (or cropped) to the requested slice count.

Every measurement is one fresh process, timed end to end from the outside (interpreter start,
imports, reading, all outputs written).  Peak memory: the rusage of that process (``os.wait4``:
the largest single process, waited-for children included) and, when it has child processes
(nnU-Net's workers), the proportional set size summed over its process tree, polled every second
(a plain RSS sum, also recorded, counts the pages that forked workers share once per process);
``peak_rss_mb`` is the larger of the two.

ichseg: ``ichseg segment CASE -o DIR --quality fast|accurate --model M --force``, all default
outputs (labelmap, .seg.nrrd, volumes JSON, overlay PNG).

nnU-Net v2 (its own code, from PyPI, installed as ``benchmarks/requirements-nnunet.txt`` says):
for each case nnU-Net's fingerprint extractor and default ``ExperimentPlanner`` plan a one-case
dataset made of that case, the 3d_fullres network of that plan is built with random weights and
saved as a trained-model folder, and ``nnUNetv2_predict_from_modelfolder -device cpu -f 0`` (its
defaults otherwise) runs with and without ``--disable_tta``.  Weights do not change the cost.
Network time is capped by ``--nnunet-budget-s`` per run: forward passes past the cap are
skipped, and the run's time is extrapolated from the mean forward time of those that ran
(labelled ``extrapolated`` with the measured fraction).  nnU-Net's default (5 folds x mirroring
TTA) is always extrapolated: the 1-fold TTA time plus 4 more sliding-window passes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NNUNET_HELPER = HERE / "nnunet_reference.py"
REQUIREMENTS = HERE / "requirements-nnunet.txt"
DEFAULT_NNUNET_PYTHON = ROOT / ".venv-bench" / "bin" / "python"

#: Targets of the inference issue on the 2-core CPU (reported, never asserted).
TARGETS = {
    "fast_a_wall_s_max": 20.0,
    "fast_a_peak_rss_gb_max": 3.0,
    "b_over_a_max": 1.5,
    "speedup_vs_nnunet_default_min": 50.0,
}

INSTALL_HINT = f"""nnU-Net v2 is not importable with {{python}}.
Install it without letting pip replace torch (nnunetv2 would pull a CUDA torch of several GB):

    "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv .venv-bench
    .venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \\
        > "$(.venv-bench/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_project.pth"
    .venv-bench/bin/pip install --no-deps -r {REQUIREMENTS.relative_to(ROOT)}

(the .pth file makes the project venv's torch, numpy, scipy, SimpleITK visible in .venv-bench;
nothing is installed into .venv) or pass --nnunet-python PATH, or --skip-nnunet."""


@dataclass(frozen=True)
class CaseSpec:
    key: str
    thickness_mm: float
    matrix: int
    slices: int | None  # None: as generated
    pixel_mm: float | None  # None: as generated

    def describe(self) -> str:
        if self.pixel_mm and self.slices:
            px = f"{self.pixel_mm:g}x{self.pixel_mm:g}x{self.thickness_mm:g}"
            return f"{self.matrix}x{self.matrix}x{self.slices} at {px} mm"
        return f"{self.matrix}x{self.matrix} matrix, {self.thickness_mm:g} mm slices, phantom's own FOV and slice count"


CASES = {
    "a": CaseSpec("a", 5.0, 512, 40, 0.45),
    "b": CaseSpec("b", 1.0, 512, 160, 0.45),
}
SMOKE_CASES = {
    "a": CaseSpec("a", 5.0, 64, None, None),
    "b": CaseSpec("b", 2.5, 64, None, None),
}


# --------------------------------------------------------------------------- measuring
def _pss_bytes(pid: int) -> int:
    """Proportional set size of one process (pages shared with other processes split between them)."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def run_measured(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, poll_s: float = 0.05, pss_every_s: float = 1.0
) -> dict:
    """Run ``cmd`` in a fresh process: wall time, exit code and peak memory (rusage; process-tree polling)."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            top = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            top = None
        peak_pss = peak_sum = 0
        max_procs = 1
        next_pss = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - t0
                break
            if top is not None:
                try:
                    procs = [top, *top.children(recursive=True)]
                except psutil.Error:
                    procs = [top]
                rss_sum = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss_sum += p.memory_info().rss  # /proc/PID/statm: cheap enough to poll often
                peak_sum = max(peak_sum, rss_sum)
                max_procs = max(max_procs, len(procs))
                now = time.perf_counter()
                if len(procs) > 1 and now >= next_pss:  # smaps_rollup costs ~10-25 ms per large process
                    pss = 0
                    for p in procs:
                        with contextlib.suppress(OSError, ValueError):
                            pss += _pss_bytes(p.pid)
                    peak_pss = max(peak_pss, pss)
                    next_pss = now + pss_every_s
            time.sleep(poll_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rusage_mb = usage.ru_maxrss / 1024.0  # kB on Linux
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(max(rusage_mb, peak_pss / 2**20), 1),
        "peak_rss_rusage_mb": round(rusage_mb, 1),
        "peak_pss_tree_polled_mb": round(peak_pss / 2**20, 1),
        "peak_rss_tree_sum_polled_mb": round(peak_sum / 2**20, 1),
        "max_processes": max_procs,
        "user_cpu_s": round(usage.ru_utime, 2),
        "system_cpu_s": round(usage.ru_stime, 2),
        "returncode": proc.returncode,
        "log": str(log),
    }


def _check(result: dict, what: str) -> None:
    if result["returncode"] != 0:
        tail = Path(result["log"]).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} failed (exit {result['returncode']}); log {result['log']}:\n{tail}")


def busy_other_processes(seconds: float = 2.0) -> dict:
    """Load average and the processes (other than this one) that used CPU over ``seconds``."""
    import psutil

    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if p.info["pid"] == me:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            pass
    time.sleep(seconds)
    busy = []
    total = 0.0
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 5.0:
            total += pct
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or ""])[:160]
            busy.append({"pid": p.info["pid"], "cpu_percent": round(pct, 1), "cmd": cmd})
    return {
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "other_processes_cpu_percent": round(total, 1),
        "busy_processes": sorted(busy, key=lambda d: -d["cpu_percent"])[:8],
    }


def machine_info() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- cases
def make_case(spec: CaseSpec, seed: int, kind: str, out: Path) -> dict:
    """Write ``out/<key>.nii.gz`` and ``out/<key>_label.nii.gz``; returns what was made."""
    import numpy as np
    import SimpleITK as sitk

    from ichseg.phantom import generate_case

    case = generate_case(seed, kind, spec.thickness_mm, matrix=spec.matrix, name=f"bench_{spec.key}")
    image, label = case.image, case.label
    generated = {"size": list(image.GetSize()), "spacing": [round(v, 4) for v in image.GetSpacing()]}
    if spec.slices:
        n = image.GetSize()[2]
        if n > spec.slices:  # crop evenly from both ends
            lo = (n - spec.slices) // 2
            hi = n - spec.slices - lo
            image = sitk.Crop(image, (0, 0, lo), (0, 0, hi))
            label = sitk.Crop(label, (0, 0, lo), (0, 0, hi))
        elif n < spec.slices:  # add air slices (-1000 HU with the phantom's noise level) at both ends
            lo = (spec.slices - n) // 2
            hi = spec.slices - n - lo
            padded = sitk.ConstantPad(image, (0, 0, lo), (0, 0, hi), -1000)
            arr = sitk.GetArrayFromImage(padded)
            rng = np.random.default_rng(seed)
            sigma = float(case.params.get("noise_sigma_hu") or 5.0)
            for sl in (slice(0, lo), slice(arr.shape[0] - hi, arr.shape[0])):
                arr[sl] = np.round(-1000.0 + rng.normal(0.0, sigma, arr[sl].shape)).astype(arr.dtype)
            new = sitk.GetImageFromArray(arr)
            new.CopyInformation(padded)
            image = new
            label = sitk.ConstantPad(label, (0, 0, lo), (0, 0, hi), 0)
    if spec.pixel_mm:
        spacing = (spec.pixel_mm, spec.pixel_mm, spec.thickness_mm)
        image.SetSpacing(spacing)
        label.SetSpacing(spacing)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": out / f"{spec.key}.nii.gz", "label": out / f"{spec.key}_label.nii.gz"}
    sitk.WriteImage(image, str(paths["image"]), True)
    sitk.WriteImage(label, str(paths["label"]), True)
    return {
        "spec": spec.describe(),
        "seed": seed,
        "kind": kind,
        "phantom_generated": generated,
        "size_xyz": list(image.GetSize()),
        "spacing_xyz_mm": [round(v, 4) for v in image.GetSpacing()],
        "voxels": int(np.prod(image.GetSize())),
        "image": str(paths["image"]),
        "label": str(paths["label"]),
    }


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
        _check(res, f"ichseg segment ({key}, {mode})")
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
    _check(res, f"nnU-Net prepare ({key})")
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
        _check(res, f"nnU-Net predict ({key}, {name})")
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


# --------------------------------------------------------------------------- accuracy
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
        _check(res, f"ichseg segment on the eval cases ({mode})")
        mdir = work / "eval" / f"metrics_{mode}"
        shutil.rmtree(mdir, ignore_errors=True)
        ev = run_measured(
            [args.python, "-m", "ichseg", "evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(mdir)]
            + ["--no-plots"],
            work / "eval" / f"evaluate_{mode}.log",
        )
        _check(ev, f"ichseg evaluate ({mode})")
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


# --------------------------------------------------------------------------- report
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


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--model", help="model package path, id@version or id (default: the current registry model)")
    ap.add_argument("--cases", default="a,b", help="which cases: a, b or a,b (default a,b)")
    ap.add_argument("--modes", default="fast,accurate", help="ichseg quality modes (default fast,accurate)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per ichseg measurement (default 3, smoke 1)")
    ap.add_argument("--threads", type=int, help="pass --threads to ichseg (default: its own, all cores)")
    ap.add_argument("--seed", type=int, default=11, help="phantom seed of the benchmark head (default 11)")
    ap.add_argument("--kind", default="ich_phe_ivh", help="phantom case kind (default ich_phe_ivh)")
    ap.add_argument("--skip-nnunet", action="store_true", help="do not run the nnU-Net v2 reference")
    ap.add_argument("--nnunet-python", default=str(DEFAULT_NNUNET_PYTHON), help="interpreter with nnunetv2")
    ap.add_argument(
        "--nnunet-budget-s",
        type=float,
        default=None,
        help="network seconds per nnU-Net run before the remaining forward passes are extrapolated "
        "(default 300, smoke 3; 0: run everything)",
    )
    ap.add_argument("--eval-cases", type=Path, help="folder of <case>.nii.gz + <case>_label.nii.gz for Dice")
    ap.add_argument("--eval-limit", type=int, help="use only the first N eval cases (by name)")
    ap.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--smoke", action="store_true", help="64x64 images, 1 repeat, tiny nnU-Net budget: a quick check")
    args = ap.parse_args(argv)
    args.python = sys.executable
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for c in args.cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r} (a or b)")
    for m in args.modes:
        if m not in ("fast", "accurate"):
            ap.error(f"unknown mode {m!r} (fast or accurate)")
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 3
    if args.nnunet_budget_s is None:
        args.nnunet_budget_s = 3.0 if args.smoke else 300.0
    if args.smoke and args.eval_cases and not args.eval_limit:
        args.eval_limit = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from ichseg.model.registry import resolve_model

    entry = resolve_model(args.model)
    args.model = str(entry.path)
    specs = SMOKE_CASES if args.smoke else CASES

    nnunet_version = None
    if not args.skip_nnunet:
        nnunet_version = nnunet_available(args.nnunet_python)
        if nnunet_version is None:
            print(INSTALL_HINT.format(python=args.nnunet_python), file=sys.stderr)
            return 2

    own_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="ichseg-bench-")) if own_work else args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}", flush=True)
    before = busy_other_processes()
    if before["other_processes_cpu_percent"] > 20:
        print(
            f"warning: other processes use {before['other_processes_cpu_percent']:.0f}% CPU; "
            "timings will be slower than on an idle machine (recorded under 'contention')",
            file=sys.stderr,
        )
    results: dict[str, Any] = {
        "schema": "ichseg-inference-benchmark/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "smoke": args.smoke,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "torch": torch.__version__,
        "torch_threads": args.threads or torch.get_num_threads(),
        "nnunetv2": nnunet_version,
        "model": {"ref": entry.ref, "path": str(entry.path), "source": entry.source},
        "repeats": args.repeats,
        "nnunet_budget_s": args.nnunet_budget_s,
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "cases": {},
    }

    # warm the page cache of both interpreters' imports so the first timed run is not penalised
    subprocess.run([args.python, "-c", "import torch, monai, SimpleITK, ichseg.infer"], check=False)
    if nnunet_version:
        subprocess.run([args.nnunet_python, "-c", "import nnunetv2.inference.predict_from_raw_data"], check=False)

    try:
        for key in args.cases:
            spec = specs[key]
            print(f"case ({key}): {spec.describe()}", flush=True)
            case = make_case(spec, args.seed, args.kind, work / "cases")
            entry_out: dict[str, Any] = {"case": case, "ichseg": {}}
            for mode in args.modes:
                entry_out["ichseg"][mode] = bench_ichseg(args, case, key, mode, work)
            if nnunet_version:
                entry_out["nnunet"] = bench_nnunet(args, case, key, work)
            results["cases"][key] = entry_out
            results["ratios"] = ratios(results)
            write_json_atomic(args.out, results)  # partial results survive an interruption
        if args.eval_cases:
            print(f"accuracy on {args.eval_cases}", flush=True)
            results["accuracy"] = bench_eval(args, work)
        results["ratios"] = ratios(results)
        results["targets"] = targets(results)
        results["contention"] = {"before": before, "after": busy_other_processes()}
        results["markdown"] = markdown(results)
        write_json_atomic(args.out, results)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    print(results["markdown"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
