"""Training engine: the loss falls, kill + resume equals an uninterrupted run, fine-tuning, cross-validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ichseg.cli import main as cli_main
from ichseg.errors import InputError, OutputError
from ichseg.infer import cpu_bf16_supported
from ichseg.model import load_package
from ichseg.train import FinetuneConfig, TrainConfig, run_finetune, run_training
from ichseg.train.cache import CachedCase
from ichseg.train.crossval import holdout_split, kfold_splits, merge_fold_packages
from ichseg.train.synthetic import make_blob_dataset

REPO = Path(__file__).resolve().parent.parent
RUNTIME = ["--threads", "1", "--progress", "json", "--val-cases", "1"]
TINY = ["--patch", "16,32,32", "--filters", "4,8,16", *RUNTIME]


def _tiny(datasets, output, **kw) -> TrainConfig:
    base = dict(
        datasets=list(datasets),
        output=output,
        patch_size=(16, 32, 32),
        filters=(4, 8, 16),
        threads=1,
        val_cases=1,
        progress="quiet",
        optimizer="adamw",
        lr=3e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("blobs") / "Dataset001_Blobs", 6)


@pytest.fixture(scope="module")
def trained(blobs, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "model"
    result = run_training(_tiny([blobs], out, steps=40, val_every=20, checkpoint_every=20, version="1.2.0"))
    return result


def test_loss_falls_and_package_is_complete(trained):
    losses = trained.results[0].losses
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    pkg = load_package(trained.package)
    card = pkg.card
    assert card.version == "1.2.0" and card.training["steps"] == 40 and card.training["loss"] == "dicece"
    assert card.training["data"]["n_used"] == 6 and card.training["data"]["splits"][0]["train"] == 5
    assert card.preprocessing["spacing_xyz"] == [4.5, 4.5, 4.0]
    assert card.inference["patch_size_zyx"] == [16, 32, 32]
    assert set(card.metrics["folds"]["all"]["final_dice"]) == {"ICH", "PHE", "IVH", "mean"}
    assert [w.file for w in card.weights] == ["weights.pt"]
    for k, v in pkg.states[0].items():
        assert torch.equal(v, trained.results[0].state_dict[k])


def test_existing_outputs_are_not_clobbered(trained, blobs):
    with pytest.raises(OutputError, match="exists: use --overwrite"):
        run_training(_tiny([blobs], trained.package, steps=2))


def _cli_train(blobs: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(blobs),
        "-o",
        str(out),
        "--steps",
        "20",
        "--checkpoint-every",
        "4",
        "--val-every",
        "100",
        "--log-every",
        "1",
        *TINY,
        *extra,
    ]


@pytest.mark.parametrize("ema", [None, "0.9"], ids=["weights", "weight-average"])
def test_kill_and_resume_equals_uninterrupted_run(blobs, tmp_path, ema):
    extra = [] if ema is None else ["--ema", ema]
    full = tmp_path / "full"
    assert cli_main(_cli_train(blobs, full, *extra)) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ichseg", *_cli_train(blobs, killed, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    seen = None
    try:
        for line in proc.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("stage") == "checkpoint" and event.get("step") == 8:
                seen = event["step"]
                proc.send_signal(signal.SIGKILL)  # a real, unclean kill just after a checkpoint
                break
    finally:
        proc.wait(timeout=120)
    assert seen == 8
    assert proc.returncode == -signal.SIGKILL
    assert not killed.exists()
    ckpt = torch.load(tmp_path / "killed.work" / "fold_all" / "checkpoint.pt", weights_only=True)
    assert 8 <= ckpt["step"] < 20

    assert cli_main([*_cli_train(blobs, killed, *extra), "--resume"]) == 0
    a, b = load_package(full), load_package(killed)
    assert a.states[0].keys() == b.states[0].keys()
    for k in a.states[0]:
        assert torch.equal(a.states[0][k], b.states[0][k]), k
    assert a.card.metrics["folds"]["all"]["final_loss"] == b.card.metrics["folds"]["all"]["final_loss"]
    assert a.card.training["ema"] == (None if ema is None else float(ema))


def test_weight_average_is_what_is_validated_and_packaged(blobs, tmp_path, monkeypatch):
    """--ema: the package holds E_1 = W_1, E_i = d E_(i-1) + (1 - d) W_i; training itself is unchanged."""
    from ichseg.train import loop

    seen: list[dict[str, torch.Tensor]] = []
    update = loop.AveragedModel.update_parameters

    def recording(self, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return update(self, model)

    monkeypatch.setattr(loop.AveragedModel, "update_parameters", recording)
    decay, steps = 0.8, 6
    plain = run_training(_tiny([blobs], tmp_path / "plain", steps=steps, val_every=3))
    averaged = run_training(_tiny([blobs], tmp_path / "avg", steps=steps, val_every=3, ema=decay))
    assert plain.results[0].losses == averaged.results[0].losses  # the average does not touch training
    assert len(seen) == steps
    for k, v in seen[-1].items():
        assert torch.equal(v, plain.results[0].state_dict[k]), k  # W_i are the trained weights
    expected = dict(seen[0])
    for weights in seen[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    pkg = load_package(averaged.package)
    assert pkg.states[0].keys() == plain.results[0].state_dict.keys()
    for k, v in pkg.states[0].items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(pkg.states[0][k], seen[-1][k]) for k in expected)
    assert pkg.card.training["ema"] == decay
    with pytest.raises(InputError, match="--ema must be a decay"):
        _tiny([blobs], tmp_path / "bad", ema=1.0).validate()


def test_finetune_records_parent_uses_replay_and_freezes_encoder(trained, blobs, tmp_path):
    new_cases = make_blob_dataset(tmp_path / "corrected", 3, seed=100, prefix="new")
    out = tmp_path / "ft"
    code = cli_main(
        [
            "finetune",
            str(new_cases),
            "--model",
            str(trained.package),
            "-o",
            str(out),
            "--replay",
            str(blobs),
            "--replay-fraction",
            "0.5",
            "--freeze-encoder",
            "--steps",
            "8",
            "--val-every",
            "4",
            *RUNTIME,
        ]
    )
    assert code == 0
    parent, child = load_package(trained.package), load_package(out)
    card = child.card
    assert card.id == parent.card.id and card.version == "1.3.0"
    assert card.parent.id == parent.card.id and card.parent.version == "1.2.0"
    assert card.parent.sha256 == parent.card.weights[0].sha256
    ft = card.training["finetune"]
    assert ft["freeze_encoder"] is True and ft["replay_fraction"] == 0.5
    assert ft["samples"]["replay"] > 0 and ft["samples"]["new"] > 0
    assert card.training["lr"] == pytest.approx(parent.card.training["lr"] * 0.1)
    assert card.preprocessing == parent.card.preprocessing and card.architecture == parent.card.architecture
    encoder = ("input_block.", "downsamples.", "bottleneck.")
    changed = []
    for k, v in parent.states[0].items():
        if k.startswith(encoder):
            assert torch.equal(v, child.states[0][k]), f"frozen encoder weight changed: {k}"
        elif not torch.equal(v, child.states[0][k]):
            changed.append(k)
    assert changed, "the decoder did not train"


def test_finetune_without_freeze_changes_encoder(trained, tmp_path):
    new_cases = make_blob_dataset(tmp_path / "corrected", 2, seed=200, prefix="new")
    cfg = FinetuneConfig(
        datasets=[new_cases],
        model=trained.package,
        output=tmp_path / "ft2",
        steps=3,
        version="2.0.0",
        val_cases=0,
        threads=1,
        progress="quiet",
        replay_fraction=0.3,
        patch_size=(16, 64, 64),
    )
    res = run_finetune(cfg)
    child = load_package(res.package)
    assert child.card.version == "2.0.0" and child.card.training["finetune"]["samples"]["replay"] == 0
    # a larger window: trained with it and recorded for inference
    assert child.card.inference["patch_size_zyx"] == [16, 64, 64]
    assert load_package(trained.package).card.inference["patch_size_zyx"] == [16, 32, 32]
    with pytest.raises(InputError, match="multiple of the network's stride"):
        run_finetune(replace(cfg, output=tmp_path / "ft3", patch_size=(15, 64, 64)))
    parent = load_package(trained.package)
    assert not torch.equal(
        parent.states[0]["input_block.conv1.conv.weight"], child.states[0]["input_block.conv1.conv.weight"]
    )


def test_crossval_package_has_one_weights_file_per_fold(blobs, tmp_path):
    res = run_training(_tiny([blobs], tmp_path / "cv", steps=3, folds=2, val_every=3))
    pkg = load_package(res.package)
    assert [(w.file, w.fold) for w in pkg.card.weights] == [("weights_fold0.pt", 0), ("weights_fold1.pt", 1)]
    splits = pkg.card.training["data"]["splits"]
    assert sorted(splits[0]["validation"] + splits[1]["validation"]) == sorted(f"blob_{i:03d}" for i in range(6))
    assert len(pkg.build_networks()) == 2


def test_single_fold_packages_merge_into_an_ensemble(blobs, tmp_path):
    parts = []
    for fold in (1, 0):
        res = run_training(_tiny([blobs], tmp_path / f"fold{fold}", steps=2, folds=2, fold=fold, val_cases=0))
        parts.append(res.package)
        assert [w.file for w in load_package(res.package).card.weights] == [f"weights_fold{fold}.pt"]
    merged = load_package(merge_fold_packages(parts, tmp_path / "merged"))
    assert [(w.file, w.fold) for w in merged.card.weights] == [("weights_fold0.pt", 0), ("weights_fold1.pt", 1)]
    assert torch.equal(
        merged.states[1]["bottleneck.conv1.conv.weight"],
        load_package(parts[0]).states[0]["bottleneck.conv1.conv.weight"],
    )
    with pytest.raises(InputError, match="distinct cross-validation folds"):
        merge_fold_packages([parts[0], parts[0]], tmp_path / "bad")


def test_splits_are_deterministic_and_disjoint():
    names = [f"c{i}" for i in range(11)]
    a, b = kfold_splits(names, 5, seed=3), kfold_splits(list(reversed(names)), 5, seed=3)
    assert a == b
    vals = [v for _, val in a for v in val]
    assert sorted(vals) == sorted(names)
    for train, val in a:
        assert not set(train) & set(val)
    assert kfold_splits(names, 5, seed=4) != a
    train, val = holdout_split(names, 2, seed=0)
    assert len(val) == 2 and len(train) == 9 and holdout_split(names, 2, seed=0) == (train, val)


def test_holdout_covers_every_class_that_two_cases_have():
    """40 cases: IVH in 3, PHE in 10, ICH in 30, a lone class 4 in one case; 3 validation cases."""
    names = [f"c{i:02d}" for i in range(40)]
    present = {n: ({1} if i < 30 else set()) | ({2} if i < 10 else set()) for i, n in enumerate(names)}
    for n in ("c35", "c36", "c37"):
        present[n] = {3}
    present["c38"] = {4}
    for seed in range(20):
        train, val = holdout_split(names, 3, seed=seed, present=present)
        assert len(val) == 3 and sorted(train + val) == names
        covered = set().union(*(present[n] for n in val))
        assert {1, 2, 3} <= covered, (seed, val)  # IVH (3 cases) is always validated
        assert "c38" in train  # a class only one case has stays in training
        assert holdout_split(names, 3, seed=seed, present=present) == (train, val)
    train, val = holdout_split(names, 1, seed=0, present=present)
    assert len(val) == 1 and present[val[0]] == {3}  # rarest class first
    cached = CachedCase("c", Path("c_img.npy"), Path("c_seg.npy"), {"class_voxels": [100, 5, 0, 7]})
    assert cached.lesion_labels == {1, 3}


FLOAT32_FALLBACK = "float32 (CPU) — bf16 requested but not supported by this CPU"


def test_bf16_on_cpu_trains_in_bf16_or_says_it_fell_back_to_float32(blobs, tmp_path):
    res = run_training(_tiny([blobs], tmp_path / "bf16", steps=3, bf16=True, val_cases=0))
    assert all(torch.isfinite(torch.tensor(res.results[0].losses)))
    expected = "bf16 autocast (CPU)" if cpu_bf16_supported() else FLOAT32_FALLBACK  # AVX2-only CPUs: the fallback
    assert load_package(res.package).card.training["precision"] == expected


def test_cpu_precision_follows_the_cpu_bf16_support(monkeypatch):
    from ichseg.train import loop

    cpu = torch.device("cpu")
    monkeypatch.setattr(loop, "cpu_bf16_supported", lambda: True)
    assert loop.precision(cpu, True, True) == (torch.bfloat16, False, "bf16 autocast (CPU)")
    assert loop.precision(cpu, True, False) == (None, False, "float32 (CPU)")
    monkeypatch.setattr(loop, "cpu_bf16_supported", lambda: False)
    assert loop.precision(cpu, True, True) == (None, False, FLOAT32_FALLBACK)


def test_validation_in_accurate_quality_keeps_the_best_weights(blobs, tmp_path):
    res = run_training(_tiny([blobs], tmp_path / "acc", steps=4, val_every=2, val_quality="accurate", keep="best"))
    card = load_package(res.package).card
    assert card.training["val_quality"] == "accurate" and card.training["keep"] == "best"
    assert card.metrics["validation"].endswith("predicted in accurate quality")
    fold = card.metrics["folds"]["all"]
    assert fold["best_step"] in (2, 4) and fold["best_mean_dice"] is not None
    with pytest.raises(InputError, match="validation quality must be fast or accurate"):
        _tiny([blobs], tmp_path / "bad", val_quality="slow").validate()
    from ichseg.commands.train import VAL_QUALITIES
    from ichseg.model.card import QUALITY_MODES

    assert VAL_QUALITIES == QUALITY_MODES  # the command line offers what the config accepts


def test_finetune_validation_mirrors_as_the_parent_card_says(trained, tmp_path, monkeypatch):
    """A parent's inference.mirror_axes / class_mirror_axes reach validation (what users will run)."""
    import shutil

    from ichseg.train import loop

    parent_dir = tmp_path / "parent"
    shutil.copytree(trained.package, parent_dir)
    card_path = parent_dir / "model.json"
    card = json.loads(card_path.read_text())
    chosen_on = {"cases": 3}  # evidence for the parent's settings
    card["inference"].update(mirror_axes=[2, 1], class_mirror_axes={"IVH": [2]}, min_component_ml_chosen_on=chosen_on)
    card_path.write_text(json.dumps(card))
    seen: list[dict] = []
    real = loop.window_probabilities

    def recording(*args, **kw):
        seen.append({k: kw[k] for k in ("overlap", "mirror_axes", "class_mirror_axes")})
        return real(*args, **kw)

    monkeypatch.setattr(loop, "window_probabilities", recording)
    new_cases = make_blob_dataset(tmp_path / "corrected", 2, seed=300, prefix="new")
    cfg = FinetuneConfig(
        datasets=[new_cases],
        model=parent_dir,
        output=tmp_path / "ft",
        steps=2,
        val_every=2,
        val_cases=1,
        val_quality="accurate",
        threads=1,
        progress="quiet",
    )
    child = load_package(run_finetune(cfg).package)
    assert child.card.inference["class_mirror_axes"] == {"IVH": [2]}
    chosen = child.card.inference["min_component_ml_chosen_on"]  # the parent's evidence, named as such
    assert chosen == {"cases": 3, "model": f"{card['id']}@{card['version']}"}
    assert seen and all(s == {"overlap": 0.5, "mirror_axes": (2, 1), "class_mirror_axes": {3: (2,)}} for s in seen)
    seen.clear()
    run_finetune(replace(cfg, output=tmp_path / "ft_fast", val_quality="fast"))
    assert seen and all(s["mirror_axes"] == () and s["class_mirror_axes"] == {} for s in seen)
