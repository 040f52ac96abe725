"""The correction loop (``ichseg improve``) with a tiny model: promotion, refusal, rollback, provenance, data guards."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ichseg import labels
from ichseg.cli import main as cli_main
from ichseg.errors import InputError
from ichseg.fileutil import sha256_file
from ichseg.improve import CaseRecord, FolderScan, ImproveConfig, decide, improve, read_history, select_cases
from ichseg.improve.cases import holdout_key
from ichseg.improve.versions import next_version
from ichseg.io import write_seg_nrrd
from ichseg.model import load_package
from ichseg.model.registry import current_model, list_models
from ichseg.train import TrainConfig, run_training
from ichseg.train.synthetic import blob_case, make_blob_dataset

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TUMOR = labels.LabelClass(
    2,
    "Tumor",
    "Tumor",
    "not in the scheme",
    (0, 200, 0),
    labels.MORPHOLOGICALLY_ALTERED_STRUCTURE,
    labels.CodedConcept("SCT", "108369006", "Neoplasm"),
    labels.BRAIN,
)


# --------------------------------------------------------------------------- helpers and fixtures


def save_case(
    folder: Path, name: str, seed: int, *, label_map=None, saved_minutes: int = 0, classes=labels.CLASSES
) -> Path:
    """A training case as the Slicer module saves it: <name>/ct.nrrd, segmentation.seg.nrrd, case.json."""
    image, label = blob_case(seed)
    arr = sitk.GetArrayFromImage(label)
    if label_map is not None:
        arr = label_map(arr)
    case = folder / name
    case.mkdir(parents=True)
    sitk.WriteImage(image, str(case / "ct.nrrd"), True)
    write_seg_nrrd(arr, image, case / "segmentation.seg.nrrd", classes=classes)
    sidecar = {
        "case": name,
        "saved": (T0 + timedelta(minutes=saved_minutes)).isoformat(),
        "geometry": {"size": list(image.GetSize()), "spacing": list(image.GetSpacing())},
    }
    (case / "case.json").write_text(json.dumps(sidecar))
    return case


def swap_ich_ivh(arr: np.ndarray) -> np.ndarray:
    """Deliberately wrong 'corrections': hematoma called IVH, edema erased."""
    out = np.zeros_like(arr)
    out[arr == labels.ICH.value] = labels.IVH.value
    out[arr == labels.IVH.value] = labels.ICH.value
    return out


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: SHA-256 and modification time (to prove nothing was touched)."""
    return {
        str(p.relative_to(folder)): (sha256_file(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def progress_events(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line must be a JSON progress event


@pytest.fixture(scope="module")
def parent_package(tmp_path_factory) -> Path:
    """A tiny model trained briefly on blob cases: clearly better than chance on ICH."""
    root = tmp_path_factory.mktemp("improve_parent")
    data = make_blob_dataset(root / "Dataset001_Blobs", 6)
    cfg = TrainConfig(
        datasets=[data],
        output=root / "tiny-1.0.0",
        target_spacing=(4.5, 4.5, 4.0),
        patch_size=(16, 32, 32),
        filters=(4, 8, 16),
        deep_supervision=False,
        augment=False,
        optimizer="adamw",
        lr=2e-2,
        steps=60,
        val_cases=0,
        threads=1,
        progress="quiet",
        model_id="tiny-improve",
        version="1.0.0",
    )
    return run_training(cfg).package


@pytest.fixture
def env(tmp_path, monkeypatch, parent_package):
    """The trained tiny model shipped as the default; an empty user model folder; held-out cases."""
    res = tmp_path / "Resources"
    shutil.copytree(parent_package, res / "Models" / "tiny-improve-1.0.0")
    (res / "Models" / "registry.json").write_text(
        json.dumps({"default": "tiny-improve@1.0.0", "models": [{"path": "tiny-improve-1.0.0"}]})
    )
    monkeypatch.setenv("ICHSEG_RESOURCES", str(res))
    monkeypatch.setenv("ICHSEG_MODELS_DIR", str(tmp_path / "user_models"))
    holdout = tmp_path / "holdout"
    for i in range(3):
        save_case(holdout, f"held{i}", 300 + i)
    return tmp_path, holdout


def run_quietly(cfg: ImproveConfig):
    out = io.StringIO()
    with redirect_stdout(out):
        result = improve(cfg)
    return result, progress_events(out.getvalue())


# --------------------------------------------------------------------------- the decision rule


def _summary(ich, phe, ivh, field="dice"):
    values = dict(zip(("ICH", "PHE", "IVH"), (ich, phe, ivh), strict=True))
    return {"classes": {k: {"dice": None, "dice_pos": None, field: v} for k, v in values.items()}}


def test_gate_refuses_a_class_worse_than_the_tolerance():
    current = _summary(0.80, 0.60, 0.40)
    ok = decide(current, _summary(0.79, 0.61, 0.85), tolerance=0.02)
    assert ok.promote and ok.reasons == []
    assert ok.classes["IVH"]["delta"] == pytest.approx(0.45)
    bad = decide(current, _summary(0.77, 0.70, 0.90), tolerance=0.02)
    assert not bad.promote
    assert len(bad.reasons) == 1 and bad.reasons[0].startswith("ICH dice_empty1 0.770 is worse")
    assert bad.classes["ICH"]["ok"] is False and bad.classes["PHE"]["ok"] is True
    # a negative tolerance demands a gain in every class
    assert not decide(current, _summary(0.81, 0.61, 0.90), tolerance=-0.05).promote
    assert decide(current, _summary(0.86, 0.66, 0.46), tolerance=-0.05).promote


def test_gate_with_dice_pos_skips_absent_classes_but_needs_one():
    current = _summary(0.8, 0.6, None, field="dice_pos")
    d = decide(current, _summary(0.8, 0.6, 0.9, field="dice_pos"), metric="dice_pos")
    assert d.promote and d.classes["IVH"]["ok"] is None and "not assessed" in d.classes["IVH"]["note"]
    none = decide(_summary(None, None, None, "dice_pos"), _summary(None, None, None, "dice_pos"), metric="dice_pos")
    assert not none.promote and "no class could be compared" in none.reasons[0]


def test_holdout_split_is_stable_as_the_folder_grows():
    def scan(n):
        records = [
            CaseRecord(f"c{i:03d}", "/x", "/x", "ok", ct_content_sha256=hashlib.sha256(str(i).encode()).hexdigest())
            for i in range(n)
        ]
        return FolderScan(Path("/x"), "slicer", records)

    small = {r.name: r.status for r in select_cases(scan(40), fraction=0.25).cases.records}
    large = {r.name: r.status for r in select_cases(scan(120), fraction=0.25).cases.records}
    assert all(large[name] == status for name, status in small.items())
    held = sum(s == "holdout" for s in large.values())
    assert 10 <= held <= 50, held  # about a quarter
    assert all((holdout_key(hashlib.sha256(str(i).encode()).hexdigest()) < 0.25) == (large[f"c{i:03d}"] == "holdout")
               for i in range(120))  # fmt: skip
    tiny = select_cases(scan(2), fraction=0.1).cases.records  # a positive fraction holds out at least one case
    assert sorted(r.status for r in tiny) == ["holdout", "train"]
    only = select_cases(scan(1), fraction=0.5).cases.records  # but always leaves one to train on
    assert [r.status for r in only] == ["train"]


# --------------------------------------------------------------------------- the loop


def test_promotion_provenance_and_rollback(env, capsys):
    tmp, holdout = env
    cases = tmp / "corrected"
    for i in range(4):
        save_case(cases, f"case{i}", 100 + i)
    before = snapshot(cases)
    parent = load_package(current_model().path)
    result, events = run_quietly(
        ImproveConfig(cases, holdout_dirs=[holdout], tolerance=1.0, steps=4, threads=1, device="cpu")
    )
    # promoted: registered in the user folder and current
    assert result.decision == "promoted" and result.promoted and result.reasons == []
    assert result.parent == "tiny-improve@1.0.0" and result.candidate == "tiny-improve@1.1.0"
    assert current_model().ref == "tiny-improve@1.1.0" == result.current
    assert result.candidate_path == tmp / "user_models" / "tiny-improve-1.1.0"
    assert [(e.ref, e.source) for e in list_models()] == [
        ("tiny-improve@1.0.0", "shipped"),
        ("tiny-improve@1.1.0", "user"),
    ]
    # provenance in the card: parent, training cases by hash, replay, held-out evaluation
    card = load_package(result.candidate_path).card
    assert card.parent.id == "tiny-improve" and card.parent.version == "1.0.0"
    assert card.parent.sha256 == parent.card.weights[0].sha256
    info = card.training["improve"]
    assert info["decision"] == "promoted" and info["cases_dir"] == str(cases.resolve())
    hashes = {c["case"]: (c["ct_sha256"], c["segmentation_sha256"]) for c in info["training_cases"]}
    assert hashes == {
        f"case{i}": (
            sha256_file(cases / f"case{i}" / "ct.nrrd"),
            sha256_file(cases / f"case{i}" / "segmentation.seg.nrrd"),
        )
        for i in range(4)
    }
    assert info["replay"]["datasets"] == [str(parent.card.training["data"]["datasets"][0])]  # found in the card
    assert info["replay"]["cases_per_dataset"] == {info["replay"]["datasets"][0]: 6}
    assert sorted(c["case"] for c in info["holdout"]["cases"]) == ["held0", "held1", "held2"]
    assert card.training["finetune"]["samples"]["replay"] > 0
    hold = card.metrics["holdout"]
    assert hold["n_cases"] == 3 and hold["current"]["model"] == "tiny-improve@1.0.0"
    for key in ("ICH", "PHE", "IVH"):
        row = hold["comparison"][key]
        assert row["ok"] is True
        assert row["current"] == pytest.approx(hold["current"]["classes"][key]["dice"])
        assert row["candidate"] == pytest.approx(hold["candidate"]["classes"][key]["dice"])
        assert hold["candidate"]["classes"][key]["abs_volume_error_ml"] is not None
    assert hold["current"]["classes"]["ICH"]["dice"] > 0.2  # the parent really segments (the gate compares something)
    # the user's cases were only read
    assert snapshot(cases) == before
    # progress: JSON lines, one overall fraction that never goes back, the decision last
    fractions = [e["fraction"] for e in events if e["fraction"] is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"scan", "cache", "train", "evaluate"} <= {e["stage"] for e in events}
    assert events[-1]["stage"] == "done" and events[-1]["decision"] == "promoted"
    report = json.loads(result.report.read_text())
    assert report["candidate"] == "tiny-improve@1.1.0" and report["timings_s"]["finetune_s"] > 0
    assert read_history()[-1]["decision"] == "promoted"
    # rollback with `ichseg models`, then the next candidate gets a new number
    capsys.readouterr()
    assert cli_main(["models", "rollback", "1.0.0"]) == 0
    assert capsys.readouterr().out == "rolled back to tiny-improve@1.0.0\n"
    assert current_model().ref == "tiny-improve@1.0.0"
    assert cli_main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["ref"], r["current"]) for r in rows] == [("tiny-improve@1.0.0", True), ("tiny-improve@1.1.0", False)]
    assert rows[1]["training_cases"] == 4 and rows[1]["holdout_dice"] == pytest.approx(hold["dice_mean"])
    assert next_version("tiny-improve", "1.0.0") == "1.2.0"


def test_worse_candidate_is_refused_and_kept_as_rejected(env, capsys):
    tmp, holdout = env
    cases = tmp / "bad_corrections"
    for i in range(4):
        save_case(cases, f"bad{i}", 100 + i, label_map=swap_ich_ivh)
    result, events = run_quietly(
        ImproveConfig(cases, holdout_dirs=[holdout], replay=[], steps=12, lr=0.03, threads=1, device="cpu")
    )
    assert result.decision == "rejected" and not result.promoted
    assert any(r.startswith("ICH dice_empty1") and "worse than the current model" in r for r in result.reasons)
    assert current_model().ref == "tiny-improve@1.0.0" == result.current
    assert [e.ref for e in list_models()] == ["tiny-improve@1.0.0"]  # not registered
    assert not (tmp / "user_models" / "tiny-improve-1.1.0").exists()
    card = load_package(result.candidate_path).card  # kept, verifiable, marked rejected
    assert result.candidate_path.parent == result.run_dir
    assert card.version == "1.1.0" and card.training["improve"]["decision"] == "rejected"
    assert card.training["improve"]["reasons"] == result.reasons
    assert card.metrics["holdout"]["comparison"]["ICH"]["ok"] is False
    assert card.metrics["holdout"]["comparison"]["ICH"]["delta"] < -0.2  # clearly worse, not a borderline call
    assert events[-1]["decision"] == "rejected" and "refused tiny-improve@1.1.0" in events[-1]["message"]
    assert read_history()[-1]["decision"] == "rejected"
    assert next_version("tiny-improve", "1.0.0") == "1.2.0"  # a rejected number is never reused
    capsys.readouterr()
    assert cli_main(["models", "history"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "tiny-improve@1.0.0 -> tiny-improve@1.1.0  rejected: ICH dice_empty1" in line


def test_cli_refusal_exit_code_and_bad_input(env, capsys):
    tmp, holdout = env
    cases = tmp / "corrected"
    for i in range(2):
        save_case(cases, f"case{i}", 100 + i)
    code = cli_main(
        ["improve", str(cases), "--holdout", str(holdout), "--tolerance", "-1", "--steps", "2", "--no-replay",
         "--threads", "1", "--device", "cpu", "--progress", "json", "--fail-if-refused"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 4
    assert err.startswith("ichseg improve: refused: ICH dice_empty1") and len(err.strip().splitlines()) == 1
    assert progress_events(out)[-1]["decision"] == "rejected"
    assert current_model().ref == "tiny-improve@1.0.0"
    # bad input: one line, exit 2, nothing trained
    assert cli_main(["improve", str(tmp / "missing"), "--progress", "json"]) == 2
    assert capsys.readouterr().err.strip() == f"ichseg improve: error: cases folder not found: {tmp / 'missing'}"
    with pytest.raises(SystemExit) as exc:  # argparse: usage error
        cli_main(["improve", str(cases), "--holdout", "1.5"])
    assert exc.value.code == 2
    capsys.readouterr()
    broken = tmp / "broken"
    (broken / "only_ct").mkdir(parents=True)
    shutil.copy2(cases / "case0" / "ct.nrrd", broken / "only_ct" / "ct.nrrd")
    assert cli_main(["improve", str(broken), "--progress", "json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ichseg improve: error: not enough usable training cases") and "quarantine.json" in err
    assert "only_ct: quarantined (incomplete case folder: missing segmentation.seg.nrrd)" in err
    assert len(err.splitlines()) == 1
    assert cli_main(["improve", str(broken), "--dry-run", "--progress", "json"]) == 0  # a preview reports instead
    done = progress_events(capsys.readouterr().out)[-1]
    same = err.removeprefix("ichseg improve: error: ").split(" (see ")[0]  # each run has its own folder
    assert done["ready"] is False and done["problems"][0].split(" (see ")[0] == same


def test_a_stopped_run_resumes_from_its_checkpoint(env, monkeypatch):
    import ichseg.improve.loop as loop_module

    tmp, holdout = env
    cases, work = tmp / "corrected", tmp / "work"
    for i in range(2):
        save_case(cases, f"case{i}", 100 + i)
    cfg = dict(
        holdout_dirs=[holdout], tolerance=1.0, steps=4, checkpoint_every=2, threads=1, device="cpu", work_dir=work
    )
    evaluate = loop_module.evaluate_models

    def stop_after_finetuning():
        def stopped(*args, **kwargs):
            raise KeyboardInterrupt  # as if Stop was pressed once the fine-tuning was over

        monkeypatch.setattr(loop_module, "evaluate_models", stopped)
        with pytest.raises(KeyboardInterrupt), redirect_stdout(io.StringIO()):
            improve(ImproveConfig(cases, **cfg))
        monkeypatch.setattr(loop_module, "evaluate_models", evaluate)

    stop_after_finetuning()
    assert (work / "fold_all" / "checkpoint.pt").is_file()  # left for --resume
    assert read_history()[-1]["decision"] == "failed" and current_model().ref == "tiny-improve@1.0.0"
    result, events = run_quietly(ImproveConfig(cases, resume=True, **cfg))
    assert any(e["stage"] == "train" and e["message"] == "resumed at step 4" for e in events)
    assert result.decision == "promoted" and result.candidate == "tiny-improve@1.1.0"  # the stopped one had no number
    assert load_package(result.candidate_path).card.training["improve"]["resumed_from_step"] == 4
    assert not (work / "fold_all").exists() and not (work / "train_cases").exists()  # nothing left to resume
    # a stopped run cannot be resumed on other cases
    stop_after_finetuning()
    save_case(cases, "case2", 102)
    with pytest.raises(InputError, match="cannot be resumed"), redirect_stdout(io.StringIO()):
        improve(ImproveConfig(cases, resume=True, **cfg))
    assert current_model().ref == "tiny-improve@1.1.0"


def test_duplicates_and_quarantine_leave_the_cases_untouched(env):
    tmp, holdout = env
    cases = tmp / "cases"
    save_case(cases, "a", 100)
    save_case(cases, "b", 101)
    shutil.copytree(cases / "a", cases / "a_copy")  # the same case saved twice
    save_case(cases, "b_early", 101, saved_minutes=-5, label_map=lambda a: np.where(a == 2, 0, a).astype(np.uint8))
    save_case(cases, "tumor", 102, classes=(labels.ICH, TUMOR, labels.IVH))  # a segment that is not ICH/PHE/IVH
    save_case(cases, "corrupt", 103)
    data = (cases / "corrupt" / "ct.nrrd").read_bytes()
    (cases / "corrupt" / "ct.nrrd").write_bytes(data[: len(data) // 2])  # truncated
    save_case(cases, "mismatch", 104)
    other, _ = blob_case(105, spacing_xyz=(4.0, 4.0, 4.0))  # the segmentation belongs to another image
    write_seg_nrrd(np.zeros((24, 48, 48), np.uint8), other, cases / "mismatch" / "segmentation.seg.nrrd")
    (cases / "no_seg").mkdir()
    shutil.copy2(cases / "a" / "ct.nrrd", cases / "no_seg" / "ct.nrrd")
    save_case(cases, "leak", 300)  # the same CT as held-out case held0
    save_case(cases, "skip_me", 106)
    sidecar = json.loads((cases / "skip_me" / "case.json").read_text())
    (cases / "skip_me" / "case.json").write_text(json.dumps({**sidecar, "exclude": True}))  # the user's choice
    before = snapshot(cases)

    result, events = run_quietly(ImproveConfig(cases, holdout_dirs=[holdout], dry_run=True))
    assert result.decision == "scanned" and result.candidate is None and result.reasons == []
    assert events[-1]["stage"] == "done" and events[-1]["ready"] is True and events[-1]["counts"]["train"] == 2
    assert snapshot(cases) == before  # nothing moved, changed, added or deleted
    records = {r["name"]: r for r in json.loads((result.run_dir / "cases.json").read_text())["cases"]}
    status = {name: r["status"] for name, r in records.items() if r["source"] == str(cases)}
    assert {n for n, s in status.items() if s == "train"} == {"a", "b"}  # a held-out folder is given: no fraction
    assert status["a_copy"] == "duplicate" and records["a_copy"]["duplicate_of"] == "a"
    assert records["a_copy"]["conflict"] is False
    assert status["b_early"] == "duplicate" and records["b_early"]["duplicate_of"] == "b"
    assert records["b_early"]["conflict"] is True  # same CT, different segmentation: the later one is used
    assert status["leak"] == "overlap" and records["leak"]["duplicate_of"] == "held0"
    for name, kind in (
        ("tumor", "unknown_segments"),
        ("corrupt", "corrupt"),
        ("mismatch", "mismatch"),
        ("no_seg", "incomplete"),
    ):
        assert status[name] == "quarantined" and records[name]["kind"] == kind, (name, records[name])
    assert "'Tumor'" in records["tumor"]["reason"]
    assert status["skip_me"] == "excluded" and records["skip_me"]["reason"] == "excluded by its case.json"
    assert records["a"]["ct_sha256"] == sha256_file(cases / "a" / "ct.nrrd")

    q = json.loads(result.quarantine.read_text())
    assert q["counts"] == {"quarantined": 4, "duplicate": 2, "overlap": 1}
    assert {e["case"] for e in q["cases"] if e["status"] == "excluded"} == {"skip_me"}
    entries = {e["case"]: e for e in q["cases"]}
    corrupt = Path(entries["corrupt"]["copy"])
    assert corrupt == result.run_dir / "quarantine" / "corrupt"
    assert sha256_file(corrupt / "ct.nrrd") == sha256_file(cases / "corrupt" / "ct.nrrd")  # evidence kept as it was
    assert entries["b_early"]["copy"] is None  # duplicates are reported, not copied
    reported = {e["case"] for e in events if e["stage"] in ("quarantined", "duplicate", "overlap")}
    assert reported == {"tumor", "corrupt", "mismatch", "no_seg", "a_copy", "b_early", "leak"}
    assert [e["case"] for e in events if e["stage"] == "excluded"] == ["skip_me"]


def test_config_is_checked_before_anything_runs(env):
    tmp, holdout = env
    with pytest.raises(InputError, match="held-out folder is the cases folder"):
        improve(ImproveConfig(holdout, holdout_dirs=[holdout]))
    with pytest.raises(InputError, match="both replay"):
        improve(ImproveConfig(tmp, replay=[holdout], holdout_dirs=[holdout]))
    with pytest.raises(InputError, match="--metric"):
        improve(ImproveConfig(holdout, metric="hd95"))
    assert not (tmp / "user_models").exists()  # refused before a run folder was made
