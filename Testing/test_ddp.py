"""DDP: two CPU ranks (gloo) train together and end with identical, trained weights; only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from monai.utils import set_determinism

from ichseg.model import build_network, load_package
from ichseg.train import TrainConfig, run_training
from ichseg.train.plan import Plan
from ichseg.train.synthetic import make_blob_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp: Path) -> TrainConfig:
    return TrainConfig(
        datasets=[tmp / "ds"],
        output=tmp / "model",
        patch_size=(16, 32, 32),
        filters=(4, 8, 16),
        steps=6,
        val_cases=1,
        val_every=3,
        checkpoint_every=3,
        threads=1,
        progress="quiet",
        device="cpu",
    )


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    result = run_training(_config(Path(tmp)))
    torch.save(result.states[0], Path(tmp) / f"rank{rank}.pt")
    with open(Path(tmp) / f"rank{rank}.json", "w") as f:
        json.dump({"package": str(result.package) if result.package else None, "losses": result.results[0].losses}, f)


def test_two_cpu_ranks_end_identical_and_trained(tmp_path):
    make_blob_dataset(tmp_path / "ds", 5)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    info0 = json.loads((tmp_path / "rank0.json").read_text())
    info1 = json.loads((tmp_path / "rank1.json").read_text())
    assert info0["package"] and info1["package"] is None  # only rank 0 writes the package
    assert info0["losses"] == info1["losses"] and len(info0["losses"]) == 6  # averaged over the ranks
    pkg = load_package(info0["package"])
    assert pkg.card.training["world_size"] == 2
    assert all(torch.equal(pkg.states[0][k], s0[k]) for k in s0)
    # it trained: the weights moved away from the (seeded) initialisation
    plan = Plan.from_dict(json.loads((tmp_path / "model.work" / "plan.json").read_text()))
    set_determinism(seed=0)
    init = build_network(plan.architecture()).state_dict()
    assert any(not torch.equal(init[k], s0[k]) for k in s0)
