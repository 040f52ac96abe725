"""Fine-tune an existing model package on new (e.g. corrected-in-Slicer) cases.

* The parent's card fixes everything that must not change: working spacing, normalisation, crop,
  architecture and patch size (the new cases are cached with the parent's preprocessing).
* Lower learning rate: ``lr`` or the parent's learning rate × ``lr_factor`` (default 0.1), poly decay.
* Optional frozen encoder (input block, down-sampling path and bottleneck): only the decoder and
  output heads learn, so the encoder weights stay bit-identical to the parent's.
* Replay: a share ``replay_fraction`` of the training samples is drawn from the original training
  data (``replay`` datasets), so the model does not forget what it knew.
* The new package gets a new version (the parent's minor version + 1 unless given), keeps the
  parent's id unless given, and records its parent (id, version, SHA-256 of the weights it
  started from).  A k-fold parent is fine-tuned fold by fold and stays an ensemble.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..model.card import ModelCard, ParentRef, bump_version, inherited_inference
from ..model.network import encoder_modules, total_stride
from ..model.package import ModelPackage, load_package
from .api import (
    Runtime,
    TrainResult,
    cached_from_dict,
    cached_to_dict,
    metrics_of,
    report_skipped,
    reporter,
    run_signature,
    shared,
    start_runtime,
    train_fold,
    training_summary,
    write_package,
)
from .cache import build_cache, cache_dir_for
from .config import FinetuneConfig
from .crossval import holdout_split
from .dataset import Skipped, discover_all
from .ddp import barrier, cleanup
from .plan import Plan

__all__ = ["finetune", "run_finetune", "freeze_encoder"]


def freeze_encoder(net: torch.nn.Module) -> int:
    """Set ``requires_grad=False`` on the encoder; returns the number of frozen parameters."""
    n = 0
    for module in encoder_modules(net):
        for p in module.parameters():
            p.requires_grad_(False)
            n += p.numel()
    return n


def _parent_lr(card: ModelCard) -> float:
    try:
        return float(card.training.get("lr", 0.01))
    except (TypeError, ValueError):
        return 0.01


def run_finetune(cfg: FinetuneConfig) -> TrainResult:
    """Fine-tune and write the new package; see the module docstring."""
    parent = load_package(cfg.model)  # type: ignore[arg-type]
    pc = parent.card
    if cfg.loss is None:
        cfg.loss = str(pc.training.get("loss", "dicece"))
    if cfg.optimizer is None:
        cfg.optimizer = str(pc.training.get("optimizer", "sgd"))
    if cfg.model_id is None:
        cfg.model_id = pc.id
    rt = start_runtime(cfg)
    try:
        return _run(cfg, rt, parent)
    finally:
        cleanup(rt.info)


def _prepare(cfg: FinetuneConfig, rt: Runtime, parent: ModelPackage) -> dict[str, Any]:
    pre = parent.card.preprocess_config()
    progress = rt.progress
    out: dict[str, Any] = {"skipped": []}
    for group, paths in (("new", cfg.datasets), ("replay", cfg.replay)):
        if not paths:
            out[group] = []
            continue
        disc = discover_all(paths)
        report_skipped(progress, disc.skipped)
        cached, skipped = build_cache(
            disc.cases,
            pre,
            cache_dir_for(rt.work / group, pre),  # separate folders: corrected cases may reuse replay names
            workers=cfg.cache_workers,
            report=reporter(progress, "cache", f"cached {group}"),
        )
        report_skipped(progress, skipped)
        out[group] = [cached_to_dict(c) for c in cached]
        out["skipped"] += [s.to_dict() for s in disc.skipped + skipped]
    if not out["new"]:
        raise InputError("no usable new cases to fine-tune on (see the skipped cases above)")
    return out


def _run(cfg: FinetuneConfig, rt: Runtime, parent: ModelPackage) -> TrainResult:
    pc = parent.card
    data = shared(rt, "cases", lambda: _prepare(cfg, rt, parent))
    new = [cached_from_dict(d) for d in data["new"]]
    replay = [cached_from_dict(d) for d in data["replay"]]
    skipped = [Skipped(s["case"], s["path"], s["reason"]) for s in data["skipped"]]
    by_name = {c.name: c for c in new}
    replay_names = {c.name for c in replay}
    if replay_names & set(by_name):
        rt.progress.info("some new cases share names with replay cases; the new versions are used for both")
    fraction = cfg.replay_fraction if replay else 0.0
    if cfg.replay_fraction > 0 and not replay:
        rt.progress.info("no replay data given: the model may forget what it learnt before (use --replay)")
    pre = pc.preprocess_config()
    plan = Plan.from_dict(pc.plan) if pc.plan else None
    patch = cfg.patch_size or pc.inference.get("patch_size_zyx") or (plan.patch_size_zyx if plan else None)
    if not patch:
        raise InputError(f"model package {parent.source}: its card has no patch size (inference.patch_size_zyx)")
    divisor = total_stride(pc.architecture)
    if any(int(size) % d for size, d in zip(patch, divisor, strict=True)):
        raise InputError(f"--patch {tuple(patch)}: each axis must be a multiple of the network's stride {divisor}")
    inference = {**inherited_inference(pc), "patch_size_zyx": [int(v) for v in patch]}
    anisotropic = any(min(k) == 1 for k in pc.architecture["kernels"])
    lr = cfg.lr if cfg.lr is not None else _parent_lr(pc) * cfg.lr_factor
    present = {n: c.lesion_labels for n, c in by_name.items()}
    train_names, val_names = holdout_split(sorted(by_name), cfg.val_cases, cfg.seed, present)
    splits = [(None, train_names, val_names)]
    pools = [([by_name[n] for n in train_names], 1.0 - fraction), (replay, fraction)]
    results, folds = [], []
    weights = list(zip(pc.weights, parent.states, strict=True))
    freeze = (
        (lambda net: rt.progress.info(f"frozen encoder: {freeze_encoder(net)} parameters"))
        if cfg.freeze_encoder
        else None
    )
    for i, (w, state) in enumerate(weights):
        res = train_fold(
            rt,
            cfg,
            architecture=pc.architecture,
            patch_zyx=patch,
            normalization=pre.normalization,
            anisotropic=anisotropic,
            pools=pools,
            val_cases=[by_name[n] for n in val_names],
            fold=w.fold,
            fold_index=i,
            n_folds=len(weights),
            lr=lr,
            signature=run_signature(cfg, pc.to_dict(), w.fold, train_names, w.sha256),
            init_state=state,
            freeze=freeze,
            inference=inference,
        )
        results.append(res)
        folds.append(w.fold)
    package = None
    if rt.info.is_main:
        summary = training_summary(cfg, rt, {"cases": data["new"], "skipped": data["skipped"]}, splits, results, lr)
        counts = [sum(r.pool_counts[k] for r in results) for k in range(2)]
        summary["data"]["replay_cases"] = len(replay)
        summary["finetune"] = {
            "parent": f"{pc.id} {pc.version}",
            "parent_weights": [{"file": w.file, "sha256": w.sha256, "fold": w.fold} for w in pc.weights],
            "replay_fraction": fraction,
            "replay_datasets": [str(p) for p in cfg.replay],
            "samples": {"new": counts[0], "replay": counts[1]},
            "freeze_encoder": cfg.freeze_encoder,
            "lr_factor": cfg.lr_factor if cfg.lr is None else None,
        }
        card = ModelCard(
            id=cfg.model_id or pc.id,
            version=cfg.version or bump_version(pc.version, "minor"),
            name=cfg.name or pc.name,
            description=cfg.description or f"{pc.id} {pc.version} fine-tuned on {len(new)} new case(s)",
            architecture=pc.architecture,
            preprocessing=pc.preprocessing,
            plan=pc.plan,
            training=summary,
            inference=inference,
            metrics=metrics_of(folds, results, cfg.val_quality),
            parent=ParentRef.of(pc),
        )
        package = write_package(cfg, rt, card, folds, results, "fine-tuned model package written")
    barrier(rt.info)
    return TrainResult(package, plan, folds, results, skipped)


def finetune(config: FinetuneConfig) -> Path:
    """Fine-tune as configured and return the new model package folder."""
    result = run_finetune(config)
    return result.package or Path(config.output)  # type: ignore[arg-type]
