"""Build the segmentation network (MONAI ``DynUNet``) from an architecture config dict.

The config is what the model card stores under ``architecture``; all spatial lists are in array
order (z, y, x)::

    {"name": "DynUNet", "in_channels": 1, "out_channels": 4,
     "kernels": [[1, 3, 3], [3, 3, 3], ...], "strides": [[1, 1, 1], [1, 2, 2], ...],
     "filters": [16, 32, 64, ...], "norm": "instance", "deep_supervision": true, "deep_supr_num": 2,
     "res_block": false}

``kernels``/``strides`` have one entry per resolution stage (the first stride is 1); the
network's depth is their length and its width the ``filters``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import DynUNet

from ..labels import NUM_CLASSES

__all__ = [
    "build_network",
    "architecture",
    "count_parameters",
    "parameter_megabytes",
    "encoder_modules",
    "total_stride",
]

_NORMS = {
    "instance": ("INSTANCE", {"affine": True}),
    "batch": ("BATCH", {}),
    "group": ("GROUP", {"num_groups": 8}),
}


def architecture(
    kernels: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
    filters: Sequence[int],
    *,
    in_channels: int = 1,
    out_channels: int = NUM_CLASSES,
    norm: str = "instance",
    deep_supervision: bool = True,
    deep_supr_num: int | None = None,
    res_block: bool = False,
) -> dict[str, Any]:
    """An architecture config dict (validated by :func:`build_network`)."""
    n_up = len(strides) - 1
    if deep_supr_num is None:
        deep_supr_num = max(1, min(2, n_up - 1))
    return {
        "name": "DynUNet",
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "kernels": [[int(v) for v in k] for k in kernels],
        "strides": [[int(v) for v in s] for s in strides],
        "filters": [int(f) for f in filters],
        "norm": norm,
        "deep_supervision": bool(deep_supervision and n_up >= 2),
        "deep_supr_num": int(deep_supr_num),
        "res_block": bool(res_block),
    }


def _check(arch: Mapping[str, Any]) -> None:
    if arch.get("name", "DynUNet") != "DynUNet":
        raise ValueError(f"unsupported network {arch.get('name')!r} (only DynUNet)")
    kernels, strides, filters = arch.get("kernels"), arch.get("strides"), arch.get("filters")
    if not kernels or not strides or not filters:
        raise ValueError("architecture needs 'kernels', 'strides' and 'filters'")
    if not (len(kernels) == len(strides) == len(filters)):
        raise ValueError(
            f"architecture: kernels ({len(kernels)}), strides ({len(strides)}) and filters ({len(filters)}) "
            "must have one entry per stage"
        )
    if len(kernels) < 2:
        raise ValueError("architecture needs at least 2 stages")
    for name, lists in (("kernels", kernels), ("strides", strides)):
        for item in lists:
            if len(item) != 3 or any(int(v) < 1 for v in item):
                raise ValueError(f"architecture: each of {name} must be 3 positive integers (z, y, x), got {item}")
    if any(int(v) != 1 for v in strides[0]):
        raise ValueError(f"architecture: the first stride must be [1, 1, 1], got {strides[0]}")
    if arch.get("norm", "instance") not in _NORMS:
        raise ValueError(f"architecture: norm must be one of {', '.join(_NORMS)}, got {arch.get('norm')!r}")


def total_stride(arch: Mapping[str, Any]) -> tuple[int, int, int]:
    """Per-axis (z, y, x) product of the network's strides: window and patch sizes must be multiples of it."""
    strides = arch["strides"]
    return tuple(math.prod(int(stage[axis]) for stage in strides) for axis in range(3))  # type: ignore[return-value]


def build_network(arch: Mapping[str, Any]) -> DynUNet:
    """A MONAI DynUNet for ``arch`` (raises ValueError with a clear message on a bad config)."""
    _check(arch)
    strides = [list(s) for s in arch["strides"]]
    deep = bool(arch.get("deep_supervision", False))
    return DynUNet(
        spatial_dims=3,
        in_channels=int(arch.get("in_channels", 1)),
        out_channels=int(arch.get("out_channels", NUM_CLASSES)),
        kernel_size=[list(k) for k in arch["kernels"]],
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=[int(f) for f in arch["filters"]],
        norm_name=_NORMS[arch.get("norm", "instance")],
        deep_supervision=deep,
        deep_supr_num=int(arch.get("deep_supr_num", 1)) if deep else 1,
        res_block=bool(arch.get("res_block", False)),
    )


def encoder_modules(net: torch.nn.Module) -> list[torch.nn.Module]:
    """The contracting path of a DynUNet: input block, down-sampling blocks and bottleneck."""
    net = getattr(net, "module", net)  # unwrap DistributedDataParallel
    return [net.input_block, net.downsamples, net.bottleneck]


def count_parameters(net: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def parameter_megabytes(net: torch.nn.Module) -> float:
    """Size of the float32 weights in MB (10^6 bytes)."""
    return sum(p.numel() * p.element_size() for p in net.parameters()) / 1e6
