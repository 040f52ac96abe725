"""nnU-Net v2 reference for ``benchmarks/inference_speed.py`` (runs in the interpreter that has ``nnunetv2``).

Two sub-commands, each run by the benchmark in a fresh process:

``prepare``
    Builds a one-case nnU-Net raw dataset from a benchmark case (image + label), runs nnU-Net's own
    fingerprint extractor and default ``ExperimentPlanner`` on it, builds the 3d_fullres network
    of that plan with ``nnUNetTrainer.build_network_architecture`` (random weights, as the trainer
    initialises them) and writes a trained-model folder the real predictor loads unchanged:
    ``MODEL/{dataset.json, plans.json, fold_0/checkpoint_final.pth}``.  Prints a JSON summary of
    the plan.

``predict``
    Runs nnU-Net's own command line ``nnUNetv2_predict_from_modelfolder`` (its defaults:
    ``-step_size 0.5``, Gaussian blending, mirroring TTA on all 3 axes unless ``--disable_tta``,
    3 pre-processing and 3 export processes, ``torch.set_num_threads(cpu_count())`` on the CPU)
    with the network's ``forward`` timed.  With ``--budget-s S`` the forward passes after the first
    S seconds of network time return a cached zero tensor of the right shape instead of running,
    and the stats file records how many were skipped and the mean time of those that ran, so the
    caller can extrapolate the full cost (and must label it as extrapolated).  At least
    ``--min-forwards`` passes always run; the first is slower (one-off allocations), so the caller
    extrapolates with the mean of the others.

Neither sub-command is imported by the project; only the standard library, ``torch`` and
``nnunetv2`` (with its light dependencies, see ``requirements-nnunet.txt``) are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

DATASET_ID = 987
LABELS = {"background": 0, "ICH": 1, "PHE": 2, "IVH": 3}


def _set_nnunet_paths(root: Path) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(root / name)


def prepare(args: argparse.Namespace) -> int:
    root = Path(args.work).resolve()
    if root.exists():
        shutil.rmtree(root)
    _set_nnunet_paths(root)
    dataset_name = f"Dataset{DATASET_ID:03d}_ICHBench"
    raw = root / "nnUNet_raw" / dataset_name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir(parents=True)
    shutil.copyfile(args.image, raw / "imagesTr" / "case_0000.nii.gz")
    shutil.copyfile(args.label, raw / "labelsTr" / "case.nii.gz")
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": LABELS,
        "numTraining": 1,
        "file_ending": ".nii.gz",
        "name": dataset_name,
        "description": "one benchmark case; plan and random weights for timing only",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")

    # nnunetv2 reads the paths above when it is imported
    import torch
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    DatasetFingerprintExtractor(DATASET_ID, num_processes=1).run()
    plans = ExperimentPlanner(DATASET_ID).plan_experiment()

    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(pm, cm, 1, n_out, enable_deep_supervision=True)

    model = Path(args.model).resolve()
    if model.exists():
        shutil.rmtree(model)
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps(plans, indent=2), encoding="utf-8")
    (model / "dataset.json").write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")
    checkpoint = {
        "network_weights": net.state_dict(),
        "trainer_name": "nnUNetTrainer",
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json},
        # what nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size sets for any 3-D plan
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 1000,
    }
    torch.save(checkpoint, model / "fold_0" / "checkpoint_final.pth")

    fullres = plans["configurations"]["3d_fullres"]
    summary = {
        "nnunetv2_version": _version("nnunetv2"),
        "dynamic_network_architectures_version": _version("dynamic_network_architectures"),
        "planner": "ExperimentPlanner (default, 8 GB GPU memory target), nnUNetPlans",
        "configurations": sorted(plans["configurations"]),
        "3d_fullres": {
            "spacing_zyx_mm": fullres["spacing"],
            "patch_size_zyx": fullres["patch_size"],
            "median_image_size_zyx": fullres["median_image_size_in_voxels"],
            "n_stages": fullres["architecture"]["arch_kwargs"]["n_stages"],
            "features_per_stage": fullres["architecture"]["arch_kwargs"]["features_per_stage"],
            "strides": fullres["architecture"]["arch_kwargs"]["strides"],
            "network": fullres["architecture"]["network_class_name"],
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "normalization": fullres["normalization_schemes"],
        },
        "transpose_forward": plans["transpose_forward"],
        "mirror_axes_tta": [0, 1, 2],
        "tta_passes_per_window": 8,
    }
    print(json.dumps(summary))
    return 0


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def predict(args: argparse.Namespace) -> int:
    work = Path(args.stats).resolve().parent / "nnunet_env"
    _set_nnunet_paths(work)
    import torch
    from nnunetv2.inference import predict_from_raw_data as prd

    stats = {
        "forward_calls": 0,
        "forward_skipped": 0,
        "forward_s": 0.0,
        "forward_times_s": [],
        "sliding_window_calls": 0,
        "sliding_window_s": 0.0,
        "window_input_shape": None,
        "budget_s": args.budget_s,
        "torch_threads": None,
    }
    predictor_cls = prd.nnUNetPredictor
    original_init = predictor_cls.initialize_from_trained_model_folder
    original_sw = predictor_cls.predict_sliding_window_return_logits

    def timed_init(self, *a, **kw):
        original_init(self, *a, **kw)
        net = self.network
        forward = net.forward
        cache: dict[str, torch.Tensor] = {}

        def timed_forward(x, *fa, **fkw):
            stats["window_input_shape"] = list(x.shape)
            over = args.budget_s and stats["forward_s"] >= args.budget_s
            if over and stats["forward_calls"] >= args.min_forwards and "out" in cache:
                stats["forward_skipped"] += 1
                return cache["out"]
            t = time.perf_counter()
            y = forward(x, *fa, **fkw)
            dt = time.perf_counter() - t
            stats["forward_s"] += dt
            stats["forward_calls"] += 1
            stats["forward_times_s"].append(round(dt, 4))
            if "out" not in cache and isinstance(y, torch.Tensor):
                cache["out"] = torch.zeros_like(y)
            return y

        net.forward = timed_forward

    def timed_sw(self, *a, **kw):
        stats["torch_threads"] = torch.get_num_threads()
        t = time.perf_counter()
        out = original_sw(self, *a, **kw)
        stats["sliding_window_s"] += time.perf_counter() - t
        stats["sliding_window_calls"] += 1
        return out

    predictor_cls.initialize_from_trained_model_folder = timed_init
    predictor_cls.predict_sliding_window_return_logits = timed_sw

    argv = ["nnUNetv2_predict_from_modelfolder", "-i", args.input, "-o", args.out, "-m", args.model]
    argv += ["-f", *args.folds.split(","), "-device", "cpu", "--disable_progress_bar"]
    if args.disable_tta:
        argv.append("--disable_tta")
    sys.argv = argv
    t0 = time.perf_counter()
    prd.predict_entry_point_modelfolder()
    stats["predict_s"] = time.perf_counter() - t0
    stats["argv"] = argv
    Path(args.stats).write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="plan a one-case dataset and write a random-weight trained-model folder")
    p.add_argument("--image", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--work", required=True, help="scratch folder for nnUNet_raw/preprocessed/results")
    p.add_argument("--model", required=True, help="trained-model folder to write")
    p.set_defaults(func=prepare)
    p = sub.add_parser("predict", help="nnUNetv2_predict_from_modelfolder with timed forward passes")
    p.add_argument("--input", required=True, help="folder with <case>_0000.nii.gz")
    p.add_argument("--out", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--folds", default="0")
    p.add_argument("--disable-tta", action="store_true")
    p.add_argument("--budget-s", type=float, default=0.0, help="network seconds after which forwards are skipped")
    p.add_argument("--min-forwards", type=int, default=4, help="forward passes always run, whatever the budget")
    p.add_argument("--stats", required=True, help="JSON file for the timing stats")
    p.set_defaults(func=predict)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
