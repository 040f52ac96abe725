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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the speed_* modules beside this script, also when it is loaded by path
    sys.path.insert(0, str(HERE))

from speed_accuracy import bench_eval  # noqa: E402
from speed_cases import CASES, SMOKE_CASES, make_case  # noqa: E402
from speed_measure import busy_other_processes, machine_info  # noqa: E402
from speed_pipelines import bench_ichseg, bench_nnunet, nnunet_available  # noqa: E402
from speed_report import markdown, ratios, targets, write_json_atomic  # noqa: E402

ROOT = HERE.parent
REQUIREMENTS = HERE / "requirements-nnunet.txt"
DEFAULT_NNUNET_PYTHON = ROOT / ".venv-bench" / "bin" / "python"

INSTALL_HINT = f"""nnU-Net v2 is not importable with {{python}}.
Install it without letting pip replace torch (nnunetv2 would pull a CUDA torch of several GB):

    "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv .venv-bench
    .venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \\
        > "$(.venv-bench/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_project.pth"
    .venv-bench/bin/pip install --no-deps -r {REQUIREMENTS.relative_to(ROOT)}

(the .pth file makes the project venv's torch, numpy, scipy, SimpleITK visible in .venv-bench;
nothing is installed into .venv) or pass --nnunet-python PATH, or --skip-nnunet."""


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
