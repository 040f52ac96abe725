"""Python API: ``train(TrainConfig) -> Path`` (and the pieces fine-tuning reuses).

A run: discover cases → fingerprint (every case read and checked; bad ones reported and
skipped) → plan → cache on the working grid → split (hold-out or k-fold) → train each fold →
write the model package (rank 0).  The work folder (default ``<output>.work``) keeps
``fingerprint.json``, ``plan.json``, ``cases.json``, ``skipped.json``, the cache and
``fold_<i>/checkpoint.pt``; ``resume`` continues from the checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.utils import set_determinism

from .. import __version__
from ..errors import OutputError
from ..fileutil import write_json_atomic
from ..model.card import ModelCard
from ..model.network import build_network
from ..model.package import save_package
from ..preprocess import Normalization, PreprocessConfig
from ..progress import Progress
from .cache import CachedCase, build_cache, cache_dir_for, scan_cases
from .config import TrainConfig
from .crossval import holdout_split, kfold_splits
from .dataset import Skipped, discover_all, summarize_refs
from .ddp import DistInfo, barrier, broadcast_object, cleanup, dist_info, init_distributed, wrap_model
from .fingerprint import build_fingerprint
from .loop import BEST_NAME, CHECKPOINT_NAME, LoopResult, TrainingError, resolve_device, run_loop
from .plan import Plan, PlanOptions, make_plan
from .transforms import train_transforms

__all__ = ["TrainResult", "train", "run_training"]


@dataclass
class TrainResult:
    package: Path | None  # None on ranks other than 0
    plan: Plan | None
    folds: list[int | None]
    results: list[LoopResult]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def states(self) -> list[dict[str, torch.Tensor]]:
        return [r.state_dict for r in self.results]


@dataclass
class Runtime:
    progress: Progress
    info: DistInfo
    device: torch.device
    work: Path


# --------------------------------------------------------------------------- shared helpers


def start_runtime(cfg: TrainConfig) -> Runtime:
    """Progress, distributed setup, device, threads; refuse to clobber outputs unless asked."""
    cfg.validate()
    env = dist_info()
    progress = Progress(cfg.progress if env.is_main else "quiet")  # type: ignore[arg-type]
    device = resolve_device(cfg.device, env)
    info = init_distributed(device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    work = cfg.resolved_work_dir
    out = Path(cfg.output)  # type: ignore[arg-type]
    problem = _output_problem(cfg, out, work) if info.is_main else None
    problem = broadcast_object(problem, info)  # every rank stops, none waits at a barrier
    if problem:
        cleanup(info)
        raise OutputError(problem)
    return Runtime(progress, info, device, work)


def _output_problem(cfg: TrainConfig, out: Path, work: Path) -> str | None:
    """Why the outputs cannot be written (None when fine); clears stale checkpoints with ``overwrite``."""
    old = sorted(work.glob(f"fold_*/{CHECKPOINT_NAME}"))
    if out.exists() and not (cfg.overwrite or (cfg.resume and old)):
        return f"model package {out} exists: use --overwrite to replace it (or a new -o)"
    if old and not cfg.resume:
        if not cfg.overwrite:
            return (
                f"work folder {work} holds checkpoints of an earlier run: add --resume to continue it "
                "or --overwrite to start again"
            )
        for ckpt in old:
            ckpt.unlink()
            (ckpt.parent / BEST_NAME).unlink(missing_ok=True)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create work folder {work}: {exc.strerror or exc}"
    return None


def shared(rt: Runtime, name: str, compute: Callable[[], Any]) -> Any:
    """Rank 0 computes a JSON-able value and writes it to ``work/<name>.json``; the other ranks read it."""
    path = rt.work / f"{name}.json"
    error: BaseException | None = None
    if rt.info.is_main:
        try:
            value = compute()
            write_json_atomic(path, {"value": value})
        except BaseException as exc:  # let the other ranks stop too instead of waiting at the barrier
            error = exc
            if rt.info.enabled:
                write_json_atomic(path, {"error": f"{type(exc).__name__}: {exc}"})
    barrier(rt.info)
    if error is not None:
        raise error
    if not rt.info.is_main:
        d = json.loads(path.read_text())
        if "error" in d:
            raise TrainingError(f"rank 0 failed: {d['error']}")
        value = d["value"]
    return value


def cached_to_dict(c: CachedCase) -> dict[str, Any]:
    return {"name": c.name, "image": str(c.image), "label": str(c.label), "meta": c.meta}


def cached_from_dict(d: dict[str, Any]) -> CachedCase:
    return CachedCase(d["name"], Path(d["image"]), Path(d["label"]), d["meta"])


def report_skipped(progress: Progress, skipped: Sequence[Skipped]) -> None:
    for s in skipped:
        progress.emit("skip", None, f"{s.name}: {s.reason}", case=s.name, path=s.path, reason=s.reason)


def reporter(progress: Progress, stage: str, verb: str) -> Callable[[int, int, str], None]:
    def report(i: int, n: int, name: str) -> None:
        progress.emit(stage, i / max(n, 1), f"{verb} {i}/{n}: {name}", case=name)

    return report


def fold_splits(
    names: Sequence[str], cfg: TrainConfig, present: Mapping[str, set[int]] | None = None
) -> list[tuple[int | None, list[str], list[str]]]:
    """(fold, train names, validation names) for each fold to train (``present``: see ``holdout_split``)."""
    if cfg.folds > 1:
        splits = kfold_splits(names, cfg.folds, cfg.seed)
        chosen = [cfg.fold] if cfg.fold is not None else list(range(cfg.folds))
        return [(i, *splits[i]) for i in chosen]
    train_names, val_names = holdout_split(names, cfg.val_cases, cfg.seed, present)
    return [(None, train_names, val_names)]


def run_signature(
    cfg: TrainConfig, plan: dict[str, Any], fold: int | None, train_names: Sequence[str], extra: str = ""
):
    payload = json.dumps([cfg.signature(), plan, fold, sorted(train_names), extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def train_fold(
    rt: Runtime,
    cfg: TrainConfig,
    *,
    architecture: dict[str, Any],
    patch_zyx: Sequence[int],
    normalization: Normalization,
    anisotropic: bool,
    pools: Sequence[tuple[Sequence[CachedCase], float]],
    val_cases: Sequence[CachedCase],
    fold: int | None,
    fold_index: int,
    n_folds: int,
    lr: float,
    signature: str,
    init_state: dict[str, torch.Tensor] | None = None,
    freeze: Callable[[torch.nn.Module], None] | None = None,
    inference: dict[str, Any] | None = None,
) -> LoopResult:
    """Build the network (seeded), optionally load/freeze, wrap for DDP and run the loop for one fold.

    ``inference`` is the card's inference block; validation mirrors as it says."""
    set_determinism(seed=cfg.seed + (fold or 0), use_deterministic_algorithms=None)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    net = build_network(architecture)
    if init_state is not None:
        net.load_state_dict(init_state, strict=True)
    if freeze is not None:
        freeze(net)
    net.to(rt.device)
    model = wrap_model(net, rt.info, rt.device)
    transform = train_transforms(
        patch_zyx,
        normalization,
        anisotropic=anisotropic,
        class_ratios=cfg.class_ratios,
        negative_hu=cfg.negative_hu,
        augment=cfg.augment,
    )
    ckpt_dir = rt.work / f"fold_{'all' if fold is None else fold}"
    if rt.info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    barrier(rt.info)
    return run_loop(
        model,
        cfg,
        patch_zyx=patch_zyx,
        normalization=normalization,
        transform=transform,
        pools=pools,
        val_cases=val_cases,
        ckpt_dir=ckpt_dir,
        device=rt.device,
        info=rt.info,
        progress=rt.progress,
        lr=lr,
        deep_supervision=bool(architecture.get("deep_supervision")),
        signature=signature,
        fold=fold,
        fraction_range=(fold_index / n_folds, (fold_index + 1) / n_folds),
        val_inference=inference,
    )


def chosen_state(cfg: TrainConfig, res: LoopResult) -> dict[str, torch.Tensor]:
    if cfg.keep == "best" and res.best_state_dict is not None:
        return res.best_state_dict
    return res.state_dict


def metrics_of(folds: Sequence[int | None], results: Sequence[LoopResult], quality: str = "fast") -> dict[str, Any]:
    out: dict[str, Any] = {
        "validation": f"Dice per class on held-out cases (mean over cases), predicted in {quality} quality"
    }
    per = {}
    for f, r in zip(folds, results, strict=True):
        per["all" if f is None else str(f)] = {
            "final_dice": r.last_dice,
            "best_mean_dice": r.best_score,
            "best_step": r.best_step,
            "final_loss": round(sum(r.losses[-10:]) / max(1, len(r.losses[-10:])), 5) if r.losses else None,
        }
    out["folds"] = per
    return out


# --------------------------------------------------------------------------- training


def plan_options(cfg: TrainConfig) -> PlanOptions:
    return PlanOptions(
        target_spacing_xyz=cfg.target_spacing,
        min_spacing_xyz=cfg.min_spacing,
        patch_size_zyx=cfg.patch_size,
        max_patch_voxels=cfg.max_patch_voxels,
        max_stages=cfg.max_stages,
        base_filters=cfg.base_filters,
        max_filters=cfg.max_filters,
        filters=cfg.filters,
        deep_supervision=cfg.deep_supervision,
        batch_size=cfg.batch_size,
        normalization=cfg.normalization,
        window=cfg.window,
    )


def run_training(cfg: TrainConfig) -> TrainResult:
    """Train (all folds of) a model from scratch and write the package; see :func:`train`."""
    rt = start_runtime(cfg)
    try:
        return _run_training(cfg, rt)
    finally:
        cleanup(rt.info)


def _prepare_data(cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
    progress = rt.progress
    disc = discover_all(cfg.datasets)
    for m in disc.messages:
        progress.info(m)
    progress.info(f"found {len(disc.cases)} cases in {len(cfg.datasets)} dataset(s)")
    refs, infos, samples, skipped = scan_cases(
        disc.cases, rt.work / "fingerprint", workers=cfg.cache_workers, report=reporter(progress, "scan", "checked")
    )
    skipped = disc.skipped + skipped
    report_skipped(progress, skipped)
    fp = build_fingerprint(infos, samples, cfg.window)
    write_json_atomic(rt.work / "fingerprint.json", fp.to_dict())
    plan = make_plan(fp, plan_options(cfg))
    write_json_atomic(rt.work / "plan.json", plan.to_dict())
    progress.emit("plan", None, f"spacing {plan.spacing_xyz} mm, patch {plan.patch_size_zyx}", plan=plan.to_dict())
    pre = plan.preprocess_config()
    cached, skipped2 = build_cache(
        refs, pre, cache_dir_for(rt.work, pre), workers=cfg.cache_workers, report=reporter(progress, "cache", "cached")
    )
    report_skipped(progress, skipped2)
    skipped += skipped2
    write_json_atomic(rt.work / "skipped.json", [s.to_dict() for s in skipped])
    return {
        "plan": plan.to_dict(),
        "cases": [cached_to_dict(c) for c in cached],
        "skipped": [s.to_dict() for s in skipped],
        "fingerprint": fp.summary(),
        "sources": summarize_refs([r for r in refs if r.name in {c.name for c in cached}]),
    }


def _run_training(cfg: TrainConfig, rt: Runtime) -> TrainResult:
    data = shared(rt, "cases", lambda: _prepare_data(cfg, rt))
    plan = Plan.from_dict(data["plan"])
    cached = [cached_from_dict(d) for d in data["cases"]]
    skipped = [Skipped(s["case"], s["path"], s["reason"]) for s in data["skipped"]]
    if len(cached) < 1:
        raise OutputError("no usable training cases after the checks (see the skipped cases above)")
    by_name = {c.name: c for c in cached}
    pre: PreprocessConfig = plan.preprocess_config()
    arch = plan.architecture()
    lr = cfg.lr if cfg.lr is not None else cfg.default_lr
    splits = fold_splits(sorted(by_name), cfg, {n: c.lesion_labels for n, c in by_name.items()})
    anisotropic = plan.anisotropic_stages > 0
    results, folds = [], []
    for i, (fold, train_names, val_names) in enumerate(splits):
        rt.progress.info(
            f"fold {'-' if fold is None else fold}: {len(train_names)} training / {len(val_names)} validation cases"
        )
        res = train_fold(
            rt,
            cfg,
            architecture=arch,
            patch_zyx=plan.patch_size_zyx,
            normalization=pre.normalization,
            anisotropic=anisotropic,
            pools=[([by_name[n] for n in train_names], 1.0)],
            val_cases=[by_name[n] for n in val_names],
            fold=fold,
            fold_index=i,
            n_folds=len(splits),
            lr=lr,
            signature=run_signature(cfg, plan.to_dict(), fold, train_names),
        )
        results.append(res)
        folds.append(fold)
    package = None
    if rt.info.is_main:
        card = ModelCard(
            id=cfg.model_id,
            version=cfg.version or "1.0.0",
            name=cfg.name,
            description=cfg.description or "3D U-Net (MONAI DynUNet, nnU-Net-like plan) trained with ichseg train",
            architecture=arch,
            preprocessing=pre.to_dict(),
            plan=plan.to_dict(),
            training=training_summary(cfg, rt, data, splits, results, lr),
            inference=plan.inference(),
            metrics=metrics_of(folds, results, cfg.val_quality),
        )
        package = write_package(cfg, rt, card, folds, results, "model package written")
    barrier(rt.info)
    return TrainResult(package, plan, folds, results, skipped)


def write_package(
    cfg: TrainConfig,
    rt: Runtime,
    card: ModelCard,
    folds: Sequence[int | None],
    results: Sequence[LoopResult],
    message: str,
) -> Path:
    """Save the chosen weights of every fold with the card (main rank only) and report where."""
    package = save_package(
        cfg.output,  # type: ignore[arg-type]
        card,
        [(f, chosen_state(cfg, r)) for f, r in zip(folds, results, strict=True)],
        overwrite=cfg.overwrite or cfg.resume,
    )
    rt.progress.done(f"{message}: {package}", package=str(package))
    return package


def training_summary(
    cfg: TrainConfig,
    rt: Runtime,
    data: dict[str, Any],
    splits: Sequence[tuple[int | None, list[str], list[str]]],
    results: Sequence[LoopResult],
    lr: float,
) -> dict[str, Any]:
    from .loop import precision

    return {
        "data": {
            **data.get("fingerprint", {}),
            "datasets": [str(p) for p in cfg.datasets],
            "sources": data.get("sources", {}),
            "n_used": len(data["cases"]),
            "n_skipped": len(data["skipped"]),
            "splits": [{"fold": f, "train": len(t), "validation": v} for f, t, v in splits],
        },
        "loss": cfg.loss,
        "steps": int(cfg.steps),
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "lr": lr,
        "lr_schedule": "poly 0.9",
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "folds": cfg.folds,
        "augmentation": cfg.augment,
        "class_ratios": list(cfg.class_ratios),
        "negative_hu": None if cfg.negative_hu is None else list(cfg.negative_hu),
        "keep": cfg.keep,
        "ema": cfg.ema,
        "val_quality": cfg.val_quality,
        "device": str(rt.device),
        "world_size": rt.info.world_size,
        "precision": precision(rt.device, cfg.amp, cfg.bf16)[2],
        "seconds": round(sum(r.seconds for r in results), 1),
        "ichseg_version": __version__,
        "torch_version": torch.__version__,
    }


def train(config: TrainConfig) -> Path:
    """Train a model as configured and return the model package folder (on every rank)."""
    result = run_training(config)
    return result.package or Path(config.output)  # type: ignore[arg-type]
