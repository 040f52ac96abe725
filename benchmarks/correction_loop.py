"""Benchmark of the correction loop (issue 6): a weakened model, corrected drafts, ``ichseg improve``, before/after.

    python benchmarks/correction_loop.py --out OUT [--scenario no-ivh|thick-only] [--counts 10,30] ...
    python benchmarks/correction_loop.py --out /tmp/cl-smoke --tiny          # minutes: checks the mechanics only

Scenario (all synthetic, from ``ichseg.phantom``):

1. **Weak model.**  ``no-ivh``: trained on cases without intraventricular blood, so it has never
   seen IVH; ``thick-only``: trained on 5 mm scans only, then asked about thin-slice scans.  The
   model is trained from scratch on the base data (``--weak-steps``), made by forgetting from a
   given model (``--base-model``: fine-tuned on the base data for ``--weaken-steps``), or given
   (``--weak-model``).  Its training data is the replay data of the loop.
2. **Corrections.**  New synthetic cases (with IVH / thin slices) are segmented by the weak model
   (the drafts; their Dice is recorded), and their ground truth plays the radiologist's corrected
   segmentation: each is saved as a Slicer training case (``<case>/ct.nrrd``,
   ``segmentation.seg.nrrd``, ``case.json``).
3. **Loop.**  For each count in ``--counts`` (default 10 and 30) the first N corrected cases go
   through ``ichseg.improve.improve`` -- fine-tuning with replay, then the weak and the new model
   segment the same held-out cases (a separate folder, never trained on) and the gate decides.
4. **Report.**  Per class: Dice (all held-out cases, empty+empty = 1), Dice over the cases that have
   the class, and mean absolute volume error, before and after; the gate's decision; the wall time
   of the fine-tuning (caching + training) on this machine.  Written to ``OUT/correction_loop.json``
   and ``OUT/correction_loop.md``, with ``OUT/correction_loop_overlay.png``: ground truth, before
   and after on the held-out case with the most IVH (or thin slices).

Everything is written under ``OUT`` (the user model folder of the runs is ``OUT/models``; nothing
touches ``~/.ichseg``).  Generated data is reused when the script is run again with the same OUT.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import sys
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the loop_* modules beside this script, also when it is loaded by path
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from loop_cases import SCENARIOS, generate, save_slicer_case, to_nnunet  # noqa: E402
from loop_models import dice_per_class, log, segment_all, weak_model  # noqa: E402
from loop_report import fmt, markdown, overlay  # noqa: E402

from ichseg import labels  # noqa: E402
from ichseg.fileutil import write_json_atomic, write_text_atomic  # noqa: E402

# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    def floats(text: str) -> tuple[float, ...]:
        return tuple(float(v) for v in text.split(","))

    def ints(text: str) -> tuple[int, ...]:
        return tuple(int(v) for v in text.split(","))

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (data, models, runs, results)")
    p.add_argument("--scenario", choices=SCENARIOS, default="no-ivh")
    p.add_argument("--counts", default="10,30", help="numbers of corrected cases, comma-separated")
    p.add_argument("--holdout-cases", type=int, default=12)
    p.add_argument("--base-cases", type=int, default=40, help="training cases of the weak model (replay data)")
    p.add_argument("--matrix", type=int, default=512, help="in-plane matrix of the synthetic cases")
    p.add_argument("--weak-model", help="use this package as the weak model")
    p.add_argument("--base-model", help="weaken this package by fine-tuning on the base data")
    p.add_argument("--weak-steps", type=int, default=1500, help="steps when training the weak model from scratch")
    p.add_argument("--weak-lr", type=float, default=1e-3)
    p.add_argument("--weaken-steps", type=int, default=400)
    p.add_argument("--weaken-lr", type=float, default=1e-3)
    p.add_argument("--filters", type=ints, help="DynUNet filters per stage of a weak model trained from scratch")
    p.add_argument("--spacing", type=floats, help="working spacing x,y,z of a weak model trained from scratch")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps of the loop")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the parent's x 0.1)")
    p.add_argument("--replay-fraction", type=float, default=0.3)
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--metric", default="dice_empty1", choices=("dice_empty1", "dice_pos"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=1, help="processes generating phantom cases")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-drafts", action="store_true", help="do not segment the corrected cases with the weak model")
    p.add_argument("--tiny", action="store_true", help="smoke test: tiny cases, tiny model, few steps")
    args = p.parse_args(argv)
    args.counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if args.tiny:
        args.matrix = min(args.matrix, 96)
        args.base_cases = min(args.base_cases, 4)
        args.holdout_cases = min(args.holdout_cases, 2)
        args.counts = [2, 3]
        args.weak_steps = min(args.weak_steps, 10)
        args.steps = min(args.steps, 3)
        args.weak_lr = 3e-3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "models", ignore_errors=True)  # each benchmark starts with an empty model folder
    os.environ["ICHSEG_MODELS_DIR"] = str(out / "models")  # never ~/.ichseg
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ichseg.improve import ImproveConfig, improve
    from ichseg.model import load_package
    from ichseg.model.registry import set_current
    from ichseg.train.dataset import discover, load_case

    t_all = time.perf_counter()
    n_max = max(args.counts)
    data = out / "data"
    log(f"generating data ({args.scenario}, matrix {args.matrix}) in {data}")
    t = time.perf_counter()
    base_rows = generate(
        args.scenario, "base", args.base_cases, data / "pool_base", args.matrix, args.seed, args.workers
    )
    corr_rows = generate(
        args.scenario, "corrections", n_max, data / "pool_corrections", args.matrix, args.seed, args.workers
    )
    hold_rows = generate(
        args.scenario, "holdout", args.holdout_cases, data / "pool_holdout", args.matrix, args.seed, args.workers
    )
    if args.scenario == "no-ivh" and any(r["ivh"] for r in base_rows):
        raise SystemExit("the base data of the no-ivh scenario holds IVH (phantom kinds changed?)")
    base = to_nnunet(data / "pool_base", base_rows, data / "base_nnunet")
    log(f"data ready in {time.perf_counter() - t:.0f} s")

    weak_path = weak_model(args, base, out)
    weak_pkg = load_package(weak_path)
    card = weak_pkg.card
    installed = out / "models" / f"{card.id}-{card.version}"
    if not installed.exists():
        shutil.copytree(weak_path, installed)
    weak_ref = set_current(f"{card.id}@{card.version}").ref
    how = "given" if args.weak_model else ("weakened from " + str(args.base_model) if args.base_model else "trained")
    how += f" on {len(base_rows)} {'no-IVH' if args.scenario == 'no-ivh' else '5 mm'} cases"

    # drafts by the weak model and the "radiologist's" corrections (= ground truth), as Slicer cases
    corrected = data / "corrected"
    images, truths = [], []
    for r in corr_rows:
        images.append(sitk.ReadImage(str(data / "pool_corrections" / f"{r['case']}.nii.gz")))
        truths.append(
            sitk.GetArrayFromImage(sitk.ReadImage(str(data / "pool_corrections" / f"{r['case']}_label.nii.gz")))
        )
    draft_dice: list[dict] = []
    if not args.no_drafts:
        t = time.perf_counter()
        drafts = segment_all(weak_pkg, images, args)
        draft_dice = [dice_per_class(d, g) for d, g in zip(drafts, truths, strict=True)]
        log(f"drafts of {len(images)} cases by the weak model in {time.perf_counter() - t:.0f} s")
    for i, r in enumerate(corr_rows):
        extra = {"draft": {"model": weak_ref, "dice": draft_dice[i]}} if draft_dice else {}
        save_slicer_case(corrected, r["case"], images[i], truths[i], extra)
    holdout = data / "holdout"
    for r in hold_rows:
        img = sitk.ReadImage(str(data / "pool_holdout" / f"{r['case']}.nii.gz"))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "pool_holdout" / f"{r['case']}_label.nii.gz")))
        save_slicer_case(holdout, r["case"], img, lab, {})

    runs, results = [], {}
    for n in args.counts:
        cases_n = out / f"cases_{n}"
        shutil.rmtree(cases_n, ignore_errors=True)
        for r in corr_rows[:n]:
            shutil.copytree(corrected / r["case"], cases_n / r["case"], copy_function=os.link)
        run_dir = out / "runs" / f"n{n}"
        shutil.rmtree(run_dir, ignore_errors=True)
        log(f"ichseg improve on {n} corrected cases ({args.steps} steps)")
        cfg = ImproveConfig(
            cases_n,
            model=weak_ref,
            replay=[base],
            replay_fraction=args.replay_fraction,
            holdout_dirs=[holdout],
            holdout_fraction=0.0,
            tolerance=args.tolerance,
            metric=args.metric,
            steps=args.steps,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            bf16=args.bf16,
            run_dir=run_dir,
            work_dir=out / "improve_work",
        )
        buffer = io.StringIO()
        try:
            with redirect_stdout(buffer):
                res = improve(cfg)
        finally:
            write_text_atomic(out / "runs" / f"n{n}.jsonl", buffer.getvalue())
        results[n] = res
        ev = res.evaluation
        classes = {}
        for c in labels.CLASSES:
            before, after = ev["current"]["classes"][c.key], ev["candidate"]["classes"][c.key]
            classes[c.key] = {
                "dice_before": before["dice"],
                "dice_after": after["dice"],
                "dice_pos_before": before["dice_pos"],
                "dice_pos_after": after["dice_pos"],
                "n_positive": before["n_positive"],
                "abs_volume_error_ml_before": before["abs_volume_error_ml"],
                "abs_volume_error_ml_after": after["abs_volume_error_ml"],
                "volume_diff_ml_before": before["volume_diff_ml"],
                "volume_diff_ml_after": after["volume_diff_ml"],
            }
        runs.append(
            {
                "n_cases": n,
                "decision": res.decision,
                "reasons": res.reasons,
                "candidate": res.candidate,
                "candidate_path": str(res.candidate_path),
                "steps": args.steps,
                "finetune_s": res.timings_s["finetune_s"],
                "training_s": res.timings_s["training_s"],
                "s_per_step": res.timings_s["training_s"] / args.steps,
                "evaluate_s": res.timings_s["evaluate_s"],
                "classes": classes,
                "report": str(res.report),
            }
        )
        summary = ", ".join(f"{k} {fmt(v['dice_before'])}->{fmt(v['dice_after'])}" for k, v in classes.items())
        log(f"n={n}: {res.decision}; Dice {summary}; fine-tuning {res.timings_s['finetune_s']:.0f} s")
        set_current(weak_ref)  # each count starts from the weak model

    # the picture: held-out case with the most IVH (no-ivh) or the thinnest slices (thick-only)
    last = results[max(args.counts)]
    refs = {r.name: r for r in discover(holdout).cases}
    if args.scenario == "no-ivh":
        vols = {r["case"]: 0 for r in hold_rows}
        for name in vols:
            lab = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "pool_holdout" / f"{name}_label.nii.gz")))
            vols[name] = int((lab == labels.IVH.value).sum())
        pick = max(vols, key=vols.get)
    else:
        pick = min(refs, key=lambda n: load_case(refs[n]).image.GetSpacing()[2])
    case = load_case(refs[pick])
    truth = sitk.GetArrayFromImage(case.label)
    before = segment_all(weak_pkg, [case.image], args)[0]
    after = segment_all(load_package(last.candidate_path), [case.image], args)[0]
    d0, d1 = dice_per_class(before, truth), dice_per_class(after, truth)

    def dice_text(d: dict) -> str:
        return ", ".join(f"{k} {fmt(v, 2)}" for k, v in d.items())

    png = overlay(
        case.image,
        truth,
        before,
        after,
        (
            f"{pick}: ground truth (the radiologist's correction)",
            f"before: {weak_ref} -- Dice {dice_text(d0)}",
            f"after {max(args.counts)} corrected cases: {last.candidate} ({last.decision}) -- Dice {dice_text(d1)}",
        ),
        out / "correction_loop_overlay.png",
    )
    import torch

    result = {
        "scenario": args.scenario,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tiny_smoke_test": bool(args.tiny),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": args.device,
            "bf16": args.bf16,
        },
        "weak_model": {"ref": weak_ref, "path": str(weak_path), "how": how, "card_training": card.training.get("data")},
        "data": {
            "matrix": args.matrix,
            "base": len(base_rows),
            "corrections": n_max,
            "corrections_with_ivh": sum(r["ivh"] for r in corr_rows),
            "holdout": len(hold_rows),
            "holdout_with_ivh": sum(r["ivh"] for r in hold_rows),
            "draft_dice_mean": {
                c.key: (float(np.mean(v)) if (v := [d[c.key] for d in draft_dice if d[c.key] is not None]) else None)
                for c in labels.CLASSES
            }
            if draft_dice
            else None,
        },
        "gate": {"metric": args.metric, "tolerance": args.tolerance},
        "loop": {"steps": args.steps, "lr": args.lr, "replay_fraction": args.replay_fraction},
        "runs": runs,
        "overlay": {"path": str(png), "case": pick, "dice_before": d0, "dice_after": d1},
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    write_json_atomic(out / "correction_loop.json", result)
    md = markdown(result)
    write_text_atomic(out / "correction_loop.md", md)
    print(md)
    log(f"done in {result['total_s']:.0f} s: {out / 'correction_loop.json'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
