"""``improve(ImproveConfig) -> ImproveResult``: the correction loop, end to end.

1. Resolve the current (or given) model and verify its weights.
2. Scan the cases folder (and any held-out folders): check each case, hash it, detect duplicates,
   quarantine what cannot be used, split off held-out cases (:mod:`ichseg.improve.cases`,
   :mod:`ichseg.improve.quarantine`).
3. Stage the training cases and a subset of the original training data for replay
   (:mod:`ichseg.improve.staging`) and fine-tune the model (:func:`ichseg.train.finetune.run_finetune`).
4. Segment the held-out cases with the current and the candidate model and compare them class by
   class (:mod:`ichseg.improve.gate`).
5. Record parent, training cases (by hash), replay data, held-out evaluation and decision in the
   candidate's model card; promote it (install into the user model folder and make it current) or
   keep it as rejected in the run folder, with the reasons (:mod:`ichseg.improve.versions`).

Progress is reported as JSON lines (``ichseg.progress``) with one overall ``fraction``; the
fine-tuning's own events are relayed with ``phase: "finetune"`` and ``stage_fraction``.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError, OutputError
from ..fileutil import write_json_atomic
from ..model.card import ModelCard
from ..model.package import ModelPackage, load_package
from ..model.registry import ModelEntry, resolve_model, set_current
from ..progress import Progress
from .cases import CaseRecord, CaseSelection, scan_folder, select_cases
from .config import ImproveConfig, ImproveResult, same_path
from .gate import decide, evaluate_models
from .quarantine import write_quarantine
from .relay import CACHE_SPAN, EVAL_SPAN, SCAN_SPAN, Relay, span_reporter
from .report import compact, decision_message, problem_summary, record_in_card, scan_report
from .staging import stage_refs, stage_replay
from .versions import (
    RunLock,
    append_history,
    improve_dir,
    install_package,
    next_version,
    version_taken,
)

__all__ = ["ImproveConfig", "ImproveResult", "improve", "auto_replay"]

#: work-folder entries of one run (staged cases, their cache, the checkpoints); kept until the run ends
_TRANSIENT = ("train_cases", "new", "fold_all")


# --------------------------------------------------------------------------- helpers


def auto_replay(card: ModelCard, exclude: list[Path]) -> list[Path]:
    """The training data a model's card records (its own, its fine-tuning replay) that still exists."""
    t = card.training or {}
    candidates: list[str] = []
    candidates += list((t.get("data") or {}).get("datasets") or [])
    candidates += list((t.get("finetune") or {}).get("replay_datasets") or [])
    candidates += list(((t.get("improve") or {}).get("replay") or {}).get("datasets") or [])
    out: list[Path] = []
    for c in candidates:
        p = Path(str(c))
        if p.is_dir() and not any(same_path(p, e) for e in exclude) and not any(same_path(p, o) for o in out):
            out.append(p)
    return out


def _holdout_cases(selection: CaseSelection) -> list[tuple[str, Any]]:
    records = selection.holdout
    names = [r.name for r in records]
    out = []
    for r in records:
        label = r.name if names.count(r.name) == 1 else f"{Path(r.source).name}/{r.name}"
        out.append((label, selection.ref(r)))
    return out


# --------------------------------------------------------------------------- the loop


def improve(config: ImproveConfig) -> ImproveResult:
    """Run the correction loop (see the module docstring); raises InputError/OutputError for bad input."""
    cfg = config
    cfg.validate()
    progress = Progress(cfg.progress)  # type: ignore[arg-type]
    t_start = time.perf_counter()
    parent_entry = resolve_model(cfg.model)
    parent = load_package(parent_entry.path)  # verifies the weights' SHA-256
    parent_ref = parent_entry.ref
    progress.emit("model", 0.0, f"model to improve: {parent_ref}", model=parent_ref, path=str(parent_entry.path))
    root = improve_dir()
    with RunLock(root / "lock"):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        run_dir = Path(cfg.run_dir) if cfg.run_dir else root / "runs" / run_id
        if run_dir.exists() and any(run_dir.iterdir()):
            raise OutputError(f"run folder {run_dir} exists and is not empty")
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            return _run(cfg, progress, parent_entry, parent, run_id, run_dir, t_start)
        except BaseException as exc:
            report = {
                "run_id": run_id,
                "decision": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "parent": parent_ref,
                "cases_dir": str(cfg.cases_dir),
            }
            with contextlib.suppress(OSError):
                if not (run_dir / "improve.json").exists():
                    write_json_atomic(run_dir / "improve.json", report)
                append_history({"time": stamp, **report, "run_dir": str(run_dir)})
            raise


def _run(
    cfg: ImproveConfig,
    progress: Progress,
    parent_entry: ModelEntry,
    parent: ModelPackage,
    run_id: str,
    run_dir: Path,
    t_start: float,
) -> ImproveResult:
    timings: dict[str, float] = {}
    parent_ref = parent_entry.ref
    pc = parent.card

    # ---------------------------------------------------------------- scan
    t = time.perf_counter()
    n_dirs = 1 + len(cfg.holdout_dirs)
    scans = []
    for i, folder in enumerate([Path(cfg.cases_dir), *cfg.holdout_dirs]):
        lo = SCAN_SPAN[0] + (SCAN_SPAN[1] - SCAN_SPAN[0]) * i / n_dirs
        hi = SCAN_SPAN[0] + (SCAN_SPAN[1] - SCAN_SPAN[0]) * (i + 1) / n_dirs
        what = "checked case" if i == 0 else "checked held-out case"
        scans.append(scan_folder(folder, report=span_reporter(progress, "scan", (lo, hi), what)))
    selection = select_cases(scans[0], scans[1:], cfg.resolved_holdout_fraction)
    write_json_atomic(run_dir / "cases.json", scan_report(selection))
    quarantine_path, entries = write_quarantine(
        selection, run_dir, copy_limit_bytes=int(cfg.quarantine_copy_limit_mb * 2**20)
    )
    for e in entries:
        progress.emit(
            e["status"], None, f"{e['case']}: {e['reason']}", case=e["case"], path=e["path"], reason=e["reason"]
        )
    train, holdout = selection.train, selection.holdout
    counts = selection.counts()
    timings["scan_s"] = round(time.perf_counter() - t, 2)
    progress.emit(
        "scan",
        SCAN_SPAN[1],
        f"{len(train)} training case(s), {len(holdout)} held-out, {counts.get('quarantined', 0)} quarantined, "
        f"{counts.get('duplicate', 0)} duplicate(s)",
        counts=counts,
        quarantine=str(quarantine_path),
    )
    problems = []
    if len(train) < cfg.min_train_cases:
        problems.append(
            f"not enough usable training cases in {cfg.cases_dir}: {len(train)} (need {cfg.min_train_cases}); "
            f"{problem_summary(selection)} (see {quarantine_path})"
        )
    if not holdout:
        problems.append(
            "no held-out cases to compare the models on: give --holdout FRACTION (of the cases folder) "
            "or --holdout DIR (a folder of cases)"
        )
    common = dict(parent=parent_ref, run_dir=run_dir, quarantine=quarantine_path, counts=counts)
    if cfg.dry_run:  # a preview: report what a run would use, and what would stop it
        report = {
            "run_id": run_id,
            "decision": "scanned",
            "ready": not problems,
            "problems": problems,
            "parent": parent_ref,
            "scan": scan_report(selection),
        }
        report_path = write_json_atomic(run_dir / "improve.json", report)
        timings["total_s"] = round(time.perf_counter() - t_start, 2)
        progress.done(
            "scanned (dry run): nothing trained" + (f"; {problems[0]}" if problems else ""),
            decision="scanned",
            ready=not problems,
            problems=problems,
            report=str(report_path),
            quarantine=str(quarantine_path),
            counts=counts,
        )
        return ImproveResult(
            "scanned", current=parent_ref, report=report_path, reasons=problems, timings_s=timings, **common
        )
    if problems:
        raise InputError(problems[0])

    # ---------------------------------------------------------------- fine-tune
    from ..train.config import FinetuneConfig
    from ..train.finetune import run_finetune
    from ..train.loop import TrainingError

    t = time.perf_counter()
    if cfg.version:
        if version_taken(pc.id, cfg.version):
            raise OutputError(f"version {cfg.version} of {pc.id} is already used; choose another --version")
        version = cfg.version
    else:
        version = next_version(pc.id, pc.version)
    candidate_ref = f"{pc.id}@{version}"
    work = Path(cfg.work_dir) if cfg.work_dir else improve_dir() / "work"
    if not cfg.resume:  # a fresh start: forget the cache and checkpoints of an earlier (stopped) run
        for stale in _TRANSIENT:
            shutil.rmtree(work / stale, ignore_errors=True)
    # staged at a fixed place, so that a resumed run has the same inputs (and checkpoint signature)
    staged = stage_refs(
        [selection.ref(r) for r in train], selection.cases.root, work / "train_cases",
        extra_files=selection.cases.extra_files,
    )  # fmt: skip
    exclude = [Path(cfg.cases_dir), *cfg.holdout_dirs]
    replay_sources = auto_replay(pc, exclude) if cfg.replay is None else [Path(p) for p in cfg.replay]
    if cfg.replay is None:
        if replay_sources:
            progress.info(f"replay of the model's original training data: {', '.join(map(str, replay_sources))}")
        else:
            progress.info("the model's original training data was not found: fine-tuning without replay (--replay)")
    replay_dirs, replay_counts = (
        stage_replay(replay_sources, work / "replay_cases", max_cases=cfg.replay_cases, seed=cfg.seed)
        if replay_sources
        else ([], {})
    )
    ft_kwargs: dict[str, Any] = dict(
        datasets=[staged],
        model=Path(parent_entry.path),
        output=run_dir / "candidate",
        work_dir=work,
        replay=replay_dirs,
        replay_fraction=cfg.replay_fraction if replay_dirs else 0.0,
        freeze_encoder=cfg.freeze_encoder,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_factor=cfg.lr_factor,
        augment=cfg.augment,
        loss=cfg.loss,
        val_cases=0,  # the held-out cases judge the candidate; all corrected cases train
        keep="last",
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        bf16=cfg.bf16,
        cache_workers=cfg.cache_workers,
        checkpoint_every=cfg.checkpoint_every,
        resume=cfg.resume,
        overwrite=True,
        version=version,
        description=cfg.description
        or f"{parent_ref} improved by `ichseg improve` on {len(train)} corrected case(s) from {cfg.cases_dir}",
    )
    if cfg.class_ratios is not None:
        ft_kwargs["class_ratios"] = tuple(cfg.class_ratios)
    relay = cfg.progress == "json"
    ft_kwargs["progress"] = "json" if relay else cfg.progress
    progress.emit("finetune", CACHE_SPAN[0], f"fine-tuning {parent_ref} -> {candidate_ref} for {cfg.steps} steps")
    ft_cfg = FinetuneConfig(**ft_kwargs)
    try:
        with contextlib.redirect_stdout(Relay(progress)) if relay else contextlib.nullcontext():
            ft = run_finetune(ft_cfg)
    except TrainingError as exc:
        if cfg.resume and "different configuration" in str(exc):
            raise InputError(
                f"the stopped run in {work} used other cases or settings; it cannot be resumed: "
                "run again without --resume to start over"
            ) from exc
        raise
    candidate_dir = Path(ft.package or run_dir / "candidate")
    resumed_from = max((r.resumed_from for r in ft.results), default=0)
    timings["finetune_s"] = round(time.perf_counter() - t, 2)
    timings["training_s"] = round(sum(r.seconds for r in ft.results), 2)

    # ---------------------------------------------------------------- evaluate and decide
    candidate = load_package(candidate_dir)
    cases = _holdout_cases(selection)
    progress.emit(
        "evaluate", EVAL_SPAN[0], f"segmenting {len(cases)} held-out case(s) with {parent_ref} and the candidate"
    )
    summaries, eval_s = evaluate_models(
        {"current": parent, "candidate": candidate},
        cases,
        device=cfg.device,
        threads=cfg.threads,
        quality=cfg.quality,
        bf16=cfg.bf16,
        report=span_reporter(progress, "evaluate", EVAL_SPAN, "evaluated held-out case"),
    )
    timings["evaluate_s"] = round(eval_s, 2)
    decision = decide(summaries["current"], summaries["candidate"], cfg.tolerance, cfg.metric)
    outcome = "promoted" if decision.promote else "rejected"

    # ---------------------------------------------------------------- record
    by_status: dict[str, list[CaseRecord]] = {}
    for r in selection.records():
        by_status.setdefault(r.status, []).append(r)
    improve_info = {
        "run_id": run_id,
        "ichseg_version": __version__,
        "cases_dir": str(Path(cfg.cases_dir).resolve()),
        "parent": {"ref": parent_ref, "weights_sha256": [w.sha256 for w in pc.weights]},
        "training_cases": [r.provenance() for r in train],
        "replay": {
            "datasets": [str(p) for p in replay_sources],
            "cases_per_dataset": replay_counts,
            "fraction": cfg.replay_fraction if replay_dirs else 0.0,
        },
        "holdout": {
            "fraction": selection.fraction,
            "dirs": [str(Path(d).resolve()) for d in cfg.holdout_dirs],
            "cases": [{**r.provenance(), "source": r.source} for r in holdout],
        },
        "left_out": [
            {"case": r.name, "status": r.status, "reason": r.reason, "ct_sha256": r.ct_sha256}
            for s in ("duplicate", "overlap", "quarantined", "excluded")
            for r in by_status.get(s, [])
        ],
        "gate": {"metric": cfg.metric, "tolerance": cfg.tolerance},
        "resumed_from_step": resumed_from,
        "decision": outcome,
        "reasons": decision.reasons,
        "timings_s": timings,
    }
    holdout_eval = {
        "description": f"held-out cases of `ichseg improve` run {run_id}, compared with {parent_ref}",
        "metric": cfg.metric,
        "tolerance": cfg.tolerance,
        "n_cases": len(cases),
        "dice_mean": summaries["candidate"]["dice_mean"],
        "candidate": summaries["candidate"],
        "current": {"model": parent_ref, **summaries["current"]},
        "comparison": decision.classes,
        "decision": outcome,
        "reasons": decision.reasons,
    }
    training_update = {
        "data": {"datasets": [str(Path(cfg.cases_dir).resolve())], "n_used": len(train)},
        "finetune": {"replay_datasets": [str(p) for p in replay_sources]},
    }
    record_in_card(candidate_dir, training_update, improve_info, holdout_eval)
    if decision.promote:
        final_path = install_package(candidate_dir, pc.id, version)
        current = set_current(candidate_ref).ref
    else:
        final_path = candidate_dir
        current = parent_ref
        with contextlib.suppress(InputError):  # the parent was given by path: the current model is unchanged
            current = resolve_model("current").ref
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    evaluation = {
        "metric": cfg.metric,
        "tolerance": cfg.tolerance,
        "current": compact(summaries["current"]),
        "candidate": compact(summaries["candidate"]),
        "comparison": decision.classes,
    }
    report = {
        "run_id": run_id,
        "decision": outcome,
        "reasons": decision.reasons,
        "parent": parent_ref,
        "candidate": candidate_ref,
        "candidate_path": str(final_path),
        "current": current,
        "counts": counts,
        "timings_s": timings,
        "finetune": {
            "steps": cfg.steps,
            "resumed_from_step": resumed_from,
            "replay": improve_info["replay"],
            "freeze_encoder": cfg.freeze_encoder,
        },
        "evaluation": {**evaluation, "current": summaries["current"], "candidate": summaries["candidate"]},
        "quarantine": str(quarantine_path),
    }
    report_path = write_json_atomic(run_dir / "improve.json", report)
    append_history(
        {
            "time": run_id.split("-")[0],
            "run_id": run_id,
            "run_dir": str(run_dir),
            "parent": parent_ref,
            "candidate": candidate_ref,
            "decision": outcome,
            "reasons": decision.reasons,
            "path": str(final_path),
            "n_train": len(train),
            "n_holdout": len(cases),
        }
    )
    for stale in _TRANSIENT:  # done: nothing to resume (the replay cache is kept for the next run)
        shutil.rmtree(work / stale, ignore_errors=True)
    message = decision_message(decision, parent_ref, candidate_ref, summaries["current"], summaries["candidate"])
    progress.done(
        message,
        decision=outcome,
        promoted=decision.promote,
        candidate=candidate_ref,
        current=current,
        reasons=decision.reasons,
        comparison=decision.classes,
        report=str(report_path),
        quarantine=str(quarantine_path),
        timings_s=timings,
    )
    return ImproveResult(
        outcome,
        current=current,
        report=report_path,
        candidate=candidate_ref,
        candidate_path=final_path,
        reasons=decision.reasons,
        evaluation=evaluation,
        timings_s=timings,
        **common,
    )
