"""What a wider network would cost on this machine: the shipped model's DynUNet at several widths.

For each width it measures one forward pass of one inference window (float32, eval mode, no
gradients: what ``ichseg segment`` runs per window) and one training step of batch 2 (forward,
backward, AdamW) in the precision ``ichseg train --bf16`` would use here (bf16 autocast where the CPU
has it natively, else float32: emulated bf16 is many times slower), and writes parameters, float32
package size, seconds and the ratios to the shipped width as JSON (depth, kernels, strides and
window: the shipped default model's card).
The 20 MB package limit and the fast-mode time target bound how wide the next network can be; this
gives both numbers in one run.

    python benchmarks/network_width.py --out benchmarks/results/network_width.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent, HERE):  # the project, and speed_measure beside this script (also when loaded by path)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from speed_measure import machine_info  # noqa: E402

from ichseg.fileutil import write_json_atomic  # noqa: E402
from ichseg.model.network import architecture, build_network, count_parameters  # noqa: E402
from ichseg.model.registry import resolve_model  # noqa: E402
from ichseg.train.loop import precision  # noqa: E402

WIDER = ["16,32,64,128,192", "16,32,64,128,256", "24,48,96,192,320", "32,64,128,256,320"]


def seconds_per_call(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after two warm-up calls (the median: a
    shared 2-core machine stalls now and then, and a stall is not the network's cost)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(shipped: dict, filters: list[int], patch: tuple[int, ...], repeats: int, dtype: torch.dtype | None) -> dict:
    """Cost of ``shipped`` (an architecture config) with other ``filters``; training under autocast to
    ``dtype`` (None: float32)."""
    net = build_network(architecture(shipped["kernels"], shipped["strides"], filters))
    window = torch.randn(1, 1, *patch)
    net.eval()
    with torch.no_grad():
        forward_s = seconds_per_call(lambda: net(window), repeats)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    batch = torch.randn(2, 1, *patch)

    def train_step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = net(batch).float().square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_s = seconds_per_call(train_step, max(1, repeats // 2))
    parameters = count_parameters(net)
    return {
        "filters": filters,
        "parameters_M": round(parameters / 1e6, 2),
        "float32_MB": round(parameters * 4 / 1e6, 1),
        "forward_window_s": round(forward_s, 3),
        "train_step_batch2_s": round(train_s, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--widths", nargs="+", default=WIDER, help="filters per stage to compare, e.g. 16,32,64,128,192"
    )
    parser.add_argument("--patch", help="window Z,Y,X in voxels (default: the shipped model's)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    card = resolve_model("default").card
    shipped = card.architecture
    patch = tuple(int(v) for v in args.patch.split(",")) if args.patch else tuple(card.inference["patch_size_zyx"])
    dtype, _, train_precision = precision(torch.device("cpu"), False, True)  # what ichseg train --bf16 uses here
    rows = []
    for filters in [shipped["filters"], *([int(v) for v in width.split(",")] for width in args.widths)]:
        rows.append(measure(shipped, list(filters), patch, args.repeats, dtype))
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        row["forward_ratio"] = round(row["forward_window_s"] / rows[0]["forward_window_s"], 2)
        row["train_ratio"] = round(row["train_step_batch2_s"] / rows[0]["train_step_batch2_s"], 2)
    result = {
        "what": "one inference window (float32, no_grad) and one training step of batch 2, per DynUNet width",
        "train_precision": train_precision,
        "shipped_model": f"{card.id}@{card.version}",
        "patch_zyx": list(patch),
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
