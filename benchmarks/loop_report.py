"""Report of ``correction_loop.py``: the before/after overlay picture and the markdown tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ichseg import labels


def overlay(image: sitk.Image, truth: np.ndarray, before: np.ndarray, after: np.ndarray, titles, path: Path) -> Path:
    """Ground truth, before and after on the same axial slices, one row each."""
    from PIL import Image

    from ichseg.overlay import choose_slices, render_montage

    def as_image(arr: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(arr.astype(np.uint8))
        im.CopyInformation(image)
        return im

    oriented = sitk.DICOMOrient(as_image(truth), "LPS")  # kept alive: the view below does not own its buffer
    lps_truth = sitk.GetArrayViewFromImage(oriented)
    focus = lps_truth == labels.IVH.value if (lps_truth == labels.IVH.value).any() else lps_truth > 0
    area = focus.reshape(focus.shape[0], -1).sum(axis=1)
    slices: list[int] = []
    gap = max(1, focus.shape[0] // 25)
    for k in np.argsort(-area, kind="stable"):  # the slices with the most of it, not next to each other
        if area[k] == 0 or len(slices) == 4:
            break
        if all(abs(int(k) - s) > gap for s in slices):
            slices.append(int(k))
    slices = sorted(slices) or choose_slices(np.asarray(lps_truth), max_slices=4)
    rows = [
        render_montage(image, as_image(lab), slices=slices, columns=4, tile=256, title=title)
        for lab, title in zip((truth, before, after), titles, strict=True)
    ]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)
    return path


def fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    lines = [
        f"# Correction loop benchmark ({result['scenario']})",
        "",
        f"Weak model: `{result['weak_model']['ref']}` ({result['weak_model']['how']}). Held-out: "
        f"{result['data']['holdout']} cases ({result['data']['holdout_with_ivh']} with IVH), never trained on. "
        f"Gate: {result['gate']['metric']}, tolerance {result['gate']['tolerance']}. "
        f"Machine: {result['machine']['cpu']}, {result['machine']['threads']} threads.",
        "",
        "| corrected cases | class | Dice before | Dice after | Dice (cases with class) before | after "
        "| abs. volume error mL before | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for key, c in run["classes"].items():
            lines.append(
                f"| {run['n_cases']} | {key} | {fmt(c['dice_before'])} | {fmt(c['dice_after'])} | "
                f"{fmt(c['dice_pos_before'])} | {fmt(c['dice_pos_after'])} | "
                f"{fmt(c['abs_volume_error_ml_before'], 2)} | {fmt(c['abs_volume_error_ml_after'], 2)} |"
            )
    lines += [
        "",
        "| corrected cases | decision | fine-tuning wall time | steps | evaluation |",
        "|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        decision = run["decision"] + (f" ({'; '.join(run['reasons'])})" if run["reasons"] else "")
        lines.append(
            f"| {run['n_cases']} | {decision} | {run['finetune_s']:.0f} s ({run['training_s']:.0f} s training) | "
            f"{run['steps']} | {run['evaluate_s']:.0f} s |"
        )
    return "\n".join(lines) + "\n"
