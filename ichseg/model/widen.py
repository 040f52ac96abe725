"""A wider copy of a model that computes the same function (Net2Net-style widening, Chen et al. 2016).

Fine-tuning a small network can level off because the network is too small; training a wider
one from scratch costs many times the steps.  Widening starts the wider network where the small
one is: every old weight is copied to its place, each new channel gets a fresh random input
weight (so the new channels differ from each other) and a zero output weight (so nothing
downstream sees them yet).  With per-channel normalisation (instance norm) the wider network's
output is then the small network's output, and fine-tuning the wider one continues from there
with room to learn more; the new channels' output weights receive gradients from the first step.

In a DynUNet the decoder blocks take ``cat(upsampled, skip)`` as input, so their first
convolution's input channels are two halves, each widened at its end.  Only widening is
supported: same depth, kernels and strides, every stage at least as wide as before, and a
normalisation that works per channel (instance norm; batch norm statistics would mix).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .card import ParentRef, inherited_inference, utc_now
from .network import build_network
from .package import load_package, save_package

__all__ = ["widen_package", "widen_state", "widened_architecture"]

_CONVS = (nn.Conv3d, nn.ConvTranspose3d)


def widened_architecture(arch: Mapping[str, Any], filters: Sequence[int]) -> dict[str, Any]:
    """``arch`` with the wider ``filters`` (InputError unless every stage keeps or grows its width)."""
    old = [int(f) for f in arch["filters"]]
    new = [int(f) for f in filters]
    if len(new) != len(old):
        raise InputError(f"widening keeps the depth: {len(old)} filters needed (the model has {old}), got {new}")
    if any(n < o for n, o in zip(new, old, strict=True)):
        raise InputError(f"widening cannot narrow a stage: the model has filters {old}, asked for {new}")
    if new == old:
        raise InputError(f"the model already has filters {old}")
    if arch.get("norm", "instance") != "instance":
        raise InputError(f"widening needs per-channel (instance) normalisation; the model has {arch.get('norm')!r}")
    wide = copy.deepcopy(dict(arch))
    wide["filters"] = new
    return wide


def _old_positions(old: int, new: int, *, halves: bool) -> torch.Tensor:
    """Where the ``old`` channels go among ``new``: the first ones, or the first ones of each half."""
    if not halves:
        return torch.arange(old)
    return torch.cat([torch.arange(old // 2), new // 2 + torch.arange(old // 2)])


def _widen_conv(name: str, old: torch.Tensor, new: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``new`` (freshly initialised) with ``old`` copied in and the old outputs blind to the new inputs."""
    out = new.clone()
    view_old, view_out = (old.transpose(0, 1), out.transpose(0, 1)) if transposed else (old, out)  # (out, in, ...)
    concatenated = ".conv_block." in name and view_old.shape[1] == 2 * view_old.shape[0]  # decoder: cat(up, skip)
    rows = _old_positions(view_old.shape[0], view_out.shape[0], halves=False)
    cols = _old_positions(view_old.shape[1], view_out.shape[1], halves=concatenated)
    new_cols = torch.ones(view_out.shape[1], dtype=torch.bool)
    new_cols[cols] = False
    block = view_out[rows]
    block[:, new_cols] = 0  # the old outputs do not see the new channels yet
    block[:, cols] = view_old.to(out.dtype)
    view_out[rows] = block
    return out


def widen_state(
    arch: Mapping[str, Any], state: Mapping[str, torch.Tensor], filters: Sequence[int], *, seed: int = 0
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(wider architecture, its state dict computing what ``state`` computes); new channels drawn with ``seed``."""
    wide_arch = widened_architecture(arch, filters)
    narrow = build_network(arch)
    narrow.load_state_dict(dict(state))
    torch.manual_seed(seed)
    wide = build_network(wide_arch)
    wide_modules = dict(wide.named_modules(remove_duplicate=False))  # DynUNet registers blocks twice
    result: dict[str, torch.Tensor] = {}
    for name, old_module in narrow.named_modules(remove_duplicate=False):
        new_module = wide_modules[name]
        for pname, old_param in old_module.named_parameters(recurse=False):
            new_param = getattr(new_module, pname).detach()
            if isinstance(old_module, _CONVS) and pname == "weight":
                value = _widen_conv(name, old_param.detach(), new_param, isinstance(old_module, nn.ConvTranspose3d))
            else:  # norm weight/bias and conv bias: one value per output channel, the old ones first
                value = new_param.clone()
                value[: old_param.shape[0]] = old_param.detach()
            result[f"{name}.{pname}" if name else pname] = value
    expected = wide.state_dict().keys()
    if result.keys() != expected:
        raise InputError(f"cannot widen this network: unhandled tensors {sorted(set(expected) - result.keys())}")
    wide.load_state_dict(result)
    return wide_arch, wide.state_dict()  # names of one module share its tensors (saved once)


def widen_package(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    version: str,
    filters: Sequence[int],
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``source`` widened to ``filters`` as version ``version`` in ``out_dir``; returns it.

    The new card keeps the source's preprocessing, classes and inference settings (the outputs are
    the same), records the widening under ``training.widened`` and has no metrics.
    """
    package = load_package(source)
    card = copy.deepcopy(package.card)
    states = []
    for state in package.states:
        wide_arch, wide_state = widen_state(package.card.architecture, state, filters, seed=seed)
        states.append(wide_state)
    card.architecture = wide_arch
    card.inference = inherited_inference(package.card)
    card.version = version
    card.created = utc_now()
    card.metrics = {}
    card.parent = ParentRef.of(package.card)
    card.training["widened"] = {
        "from": f"{package.card.id}@{package.card.version}",
        "filters_before": list(package.card.architecture["filters"]),
        "filters": list(wide_arch["filters"]),
        "seed": seed,
    }
    card.description = (
        f"{package.card.version} widened to filters {wide_arch['filters']} (same outputs; train it further). "
        + (package.card.description or "")
    )
    folds = [w.fold for w in package.card.weights]
    return save_package(out_dir, card, list(zip(folds, states, strict=True)), overwrite=overwrite)
