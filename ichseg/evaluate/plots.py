"""PNG plots of volume agreement: Bland–Altman and predicted-vs-reference scatter, one panel per class.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend), so
this works headless and inside applications that use another backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..fileutil import atomic_output
from ..labels import CLASSES, LabelClass
from .agreement import volume_agreement

__all__ = ["BLAND_ALTMAN_PNG", "SCATTER_PNG", "plot_bland_altman", "plot_volume_scatter", "write_plots"]

BLAND_ALTMAN_PNG = "bland_altman.png"
SCATTER_PNG = "volume_scatter.png"
Volumes = Mapping[str, tuple[Sequence[float], Sequence[float]]]  # class key -> (pred mL, ref mL)


def _figure(n_panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * n_panels, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _save(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _empty_panel(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no cases", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_bland_altman(volumes: Volumes, path: str | Path, classes: Sequence[LabelClass] = CLASSES) -> Path:
    """Bland–Altman plot (difference pred - ref against the mean, mL) with bias and 95% limits."""
    fig, axes = _figure(len(classes))
    for ax, cls in zip(axes, classes, strict=True):
        pred, ref = (np.asarray(v, dtype=np.float64) for v in volumes.get(cls.key, ((), ())))
        if pred.size == 0:
            _empty_panel(ax, cls.key)
            continue
        stats = volume_agreement(pred, ref)["bland_altman"]
        ax.scatter((pred + ref) / 2, pred - ref, s=18, color=cls.color_float, edgecolor="black", linewidth=0.4)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        if stats["mean_diff_ml"] is not None:
            ax.axhline(stats["mean_diff_ml"], color="black", label=f"bias {_fmt(stats['mean_diff_ml'])} mL")
        if stats["loa_lower_ml"] is not None:
            for key in ("loa_lower_ml", "loa_upper_ml"):
                ax.axhline(stats[key], color="black", linestyle="--", linewidth=0.9)
            ax.plot(
                [],
                [],
                "k--",
                linewidth=0.9,
                label=f"95% LoA {_fmt(stats['loa_lower_ml'])} to {_fmt(stats['loa_upper_ml'])} mL",
            )
        ax.set_title(f"{cls.key} (n={pred.size})")
        ax.set_xlabel("mean of predicted and reference volume (mL)")
        ax.set_ylabel("predicted - reference volume (mL)")
        ax.legend(fontsize="small", loc="best")
    return _save(fig, Path(path))


def plot_volume_scatter(volumes: Volumes, path: str | Path, classes: Sequence[LabelClass] = CLASSES) -> Path:
    """Predicted against reference volume (mL) with the identity line, CCC and Pearson r."""
    fig, axes = _figure(len(classes))
    for ax, cls in zip(axes, classes, strict=True):
        pred, ref = (np.asarray(v, dtype=np.float64) for v in volumes.get(cls.key, ((), ())))
        if pred.size == 0:
            _empty_panel(ax, cls.key)
            continue
        stats = volume_agreement(pred, ref)
        top = max(float(pred.max()), float(ref.max()), 1e-3) * 1.05
        ax.plot([0, top], [0, top], color="grey", linewidth=0.9, label="identity")
        ax.scatter(ref, pred, s=18, color=cls.color_float, edgecolor="black", linewidth=0.4)
        ax.set_xlim(-0.03 * top, top)
        ax.set_ylim(-0.03 * top, top)
        ax.set_aspect("equal")
        ax.set_title(f"{cls.key} (n={pred.size}): CCC {_fmt(stats['ccc'], 3)}, r {_fmt(stats['pearson_r'], 3)}")
        ax.set_xlabel("reference volume (mL)")
        ax.set_ylabel("predicted volume (mL)")
        ax.legend(fontsize="small", loc="upper left")
    return _save(fig, Path(path))


def write_plots(volumes: Volumes, out_dir: str | Path, classes: Sequence[LabelClass] = CLASSES) -> list[Path]:
    """Write both plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return [
        plot_bland_altman(volumes, out / BLAND_ALTMAN_PNG, classes),
        plot_volume_scatter(volumes, out / SCATTER_PNG, classes),
    ]
