"""Segmentation losses by name, all multi-class softmax, plus a deep-supervision wrapper.

Names: ``dicece`` (nnU-Net's default: soft Dice + cross-entropy), ``focal`` (softmax focal loss,
as in Kok et al. 2022), ``dicefocal``, ``tversky``, ``focaltversky``, ``dicetopk`` (Dice + cross-entropy
over the hardest 10 % of voxels, nnU-Net's TopK10).

Note on MONAI 1.6.1: ``monai.losses.DiceFocalLoss`` builds its ``FocalLoss`` without
``use_softmax``, i.e. its focal term is *sigmoid* (one-vs-rest) even with ``softmax=True``.  We
therefore compose ``DiceLoss(softmax=True)`` with ``FocalLoss(use_softmax=True)`` ourselves.  The
Dice terms exclude the background channel and are computed over the whole batch (nnU-Net's batch
Dice), which is stable for rare classes (IVH) in small batches.

All losses take logits (B, C, z, y, x) and an integer label map (B, 1, z, y, x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, FocalLoss, TverskyLoss
from torch import nn

__all__ = ["LOSSES", "build_loss", "TopKCrossEntropy", "FocalTversky", "SumLoss", "DeepSupervision"]

LOSSES = ("dicece", "focal", "dicefocal", "tversky", "focaltversky", "dicetopk")


class TopKCrossEntropy(nn.Module):
    """Cross-entropy averaged over the ``k`` percent of voxels with the highest loss."""

    def __init__(self, k: float = 10.0):
        super().__init__()
        if not 0 < k <= 100:
            raise ValueError(f"top-k percentage must be in (0, 100], got {k}")
        self.k = k

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target[:, 0].long(), reduction="none").flatten()
        n = max(1, int(round(ce.numel() * self.k / 100.0)))
        return ce.topk(n, sorted=False).values.mean()


class FocalTversky(nn.Module):
    """Focal Tversky loss (Abraham & Khan 2019): mean over classes of (1 − Tversky index)^gamma."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75):
        super().__init__()
        self.tversky = TverskyLoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            alpha=alpha,
            beta=beta,
            batch=True,
            reduction="none",
        )
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_class = self.tversky(logits.float(), target).clamp_min(0)
        return per_class.pow(self.gamma).mean()


class SumLoss(nn.Module):
    """Weighted sum of named loss terms (each evaluated in float32)."""

    def __init__(self, **terms: tuple[nn.Module, float]):
        super().__init__()
        self.terms = nn.ModuleDict({k: m for k, (m, _) in terms.items()})
        self.weights = {k: w for k, (_, w) in terms.items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return sum(self.weights[k] * m(logits, target) for k, m in self.terms.items())  # type: ignore[return-value]


class DeepSupervision(nn.Module):
    """Apply a loss to every deep-supervision head (weights 1, ½, ¼, … normalised to sum 1).

    Accepts a DynUNet training output stacked on dim 1 (B, heads, C, ...), a list of tensors, or a
    single (B, C, ...) tensor.
    """

    def __init__(self, loss: nn.Module, max_heads: int = 8):
        super().__init__()
        raw = [0.5**i for i in range(max_heads)]
        self.weight_lists = {n: [w / sum(raw[:n]) for w in raw[:n]] for n in range(1, max_heads + 1)}
        self.loss = loss
        self.ds = DeepSupervisionLoss(loss)

    def forward(self, output: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor) and output.dim() == target.dim() + 1:
            output = list(torch.unbind(output, dim=1))
        if isinstance(output, (list, tuple)):
            self.ds.weights = self.weight_lists[len(output)]
            return self.ds(list(output), target.float())
        return self.loss(output.float(), target)


def build_loss(name: str, *, deep_supervision: bool = False, **options: float) -> nn.Module:
    """The loss called ``name`` (see :data:`LOSSES`); ``options``: gamma, alpha, beta, k."""
    key = name.lower().replace("_", "").replace("-", "").replace("+", "")
    dice = dict(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    gamma = float(options.get("gamma", 2.0))
    if key == "dicece":
        loss: nn.Module = DiceCELoss(**dice)
    elif key == "focal":
        loss = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma)
    elif key == "dicefocal":
        loss = SumLoss(
            dice=(DiceLoss(**dice), 1.0), focal=(FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma), 1.0)
        )
    elif key == "tversky":
        loss = TverskyLoss(alpha=float(options.get("alpha", 0.3)), beta=float(options.get("beta", 0.7)), **dice)
    elif key == "focaltversky":
        loss = FocalTversky(
            alpha=float(options.get("alpha", 0.3)),
            beta=float(options.get("beta", 0.7)),
            gamma=float(options.get("gamma", 0.75)),
        )
    elif key == "dicetopk":
        loss = SumLoss(dice=(DiceLoss(**dice), 1.0), topk=(TopKCrossEntropy(float(options.get("k", 10.0))), 1.0))
    else:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return DeepSupervision(loss) if deep_supervision else _Float(loss)


class _Float(nn.Module):
    """Evaluate a loss in float32 (outputs of autocast regions may be half precision)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(output.float(), target)
