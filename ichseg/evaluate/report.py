"""Evaluate a prediction folder against a reference folder and write metrics.json, metrics.md and plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import IchsegError, InputError
from ..fileutil import write_json_atomic, write_text_atomic
from ..labels import CLASSES, LabelClass
from ..progress import Progress
from .lesions import CONNECTIVITY
from .loading import read_pair
from .metrics import DEFAULT_TOLERANCE_MM, HD_PERCENTILE, evaluate_case
from .pairing import RULE, pair_folders
from .summary import summarize

__all__ = ["METRICS_JSON", "METRICS_MD", "SCHEMA", "evaluate_folders", "markdown_report"]

log = logging.getLogger(__name__)

SCHEMA = "ichseg.evaluate/1"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"

CONVENTIONS = {
    "dice_empty1": "Dice; empty prediction of an empty reference = 1.0, exactly one empty = 0.0",
    "dice_pos": "Dice of cases with a non-empty reference; null when the reference is empty",
    "hd95_mm": "MONAI symmetric 95th-percentile Hausdorff distance of the surfaces (mm); null if either mask is empty",
    "nsd": "MONAI normalised surface Dice at tolerance_mm; null if either mask is empty",
    "rvd": "relative volume difference (pred - ref) / ref as a fraction; null if the reference is empty",
    "volumes": "voxel count x voxel volume in mL; volume_diff_ml = pred - ref; abs_volume_error_ml = |pred - ref|",
    "lesions": "26-connected components; a reference lesion is detected if any voxel overlaps the prediction of "
    "the same class; a predicted lesion overlapping no reference voxel of the class is a false positive; "
    "sensitivity null when the reference has no lesion",
    "summary": "n, mean, SD (n-1), median, quartiles and IQR over cases with a non-null value",
    "volume_agreement": "over all evaluated cases (empty classes count as 0 mL): Lin's CCC (population moments), "
    "Pearson r, Bland-Altman bias = mean(pred - ref) and 95% limits of agreement = bias +/- 1.96 SD (n-1)",
}


def _evaluate_pair(case: str, pred: Path, ref: Path, tolerance_mm: float, classes: Sequence[LabelClass]) -> dict:
    record: dict = {"case": case, "pred": str(pred), "ref": str(ref), "status": "ok", "error": None}
    try:
        pred_labels, ref_labels, spacing = read_pair(pred, ref)
        record["spacing_mm"] = [float(s) for s in spacing]
        record["shape_zyx"] = list(ref_labels.shape)
        record["classes"] = evaluate_case(pred_labels, ref_labels, spacing, classes=classes, tolerance_mm=tolerance_mm)
    except (IchsegError, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        log.warning("case %s not evaluated: %s", case, message)
        record.update(status="error", error=message)
    return record


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    classes: Sequence[LabelClass] = CLASSES,
    plots: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Pair, evaluate and report; returns the content of ``OUT/metrics.json``.

    Raises InputError when a folder is missing, when no case is in both folders, or when
    no pair could be evaluated (the report is still written then).
    """
    progress = progress or Progress("quiet")
    if not tolerance_mm >= 0:
        raise InputError(f"surface Dice tolerance must be >= 0 mm (got {tolerance_mm})")
    pairing = pair_folders(pred_dir, ref_dir)
    for what, files in (("prediction", pairing.unmatched_pred), ("reference", pairing.unmatched_ref)):
        if files:
            names = ", ".join(p.name for p in files[:5]) + (", ..." if len(files) > 5 else "")
            log.warning("%d %s file(s) without a counterpart: %s", len(files), what, names)
            progress.info(f"{len(files)} unmatched {what} file(s): {names}")

    cases = []
    n = len(pairing.pairs)
    for i, (case, pred, ref) in enumerate(pairing.pairs):
        progress.emit("evaluate", i / n, f"case {i + 1}/{n}: {case}", case=case)
        cases.append(_evaluate_pair(case, pred, ref, tolerance_mm, classes))

    result = {
        "schema": SCHEMA,
        "ichseg_version": __version__,
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "settings": {
            "classes": {c.key: c.value for c in classes},
            "nsd_tolerance_mm": float(tolerance_mm),
            "hd_percentile": HD_PERCENTILE,
            "lesion_connectivity": int(CONNECTIVITY.sum()) - 1,
        },
        "conventions": CONVENTIONS,
        "pairing": {
            "rule": RULE,
            "pairs": n,
            "unmatched_pred": [str(p) for p in pairing.unmatched_pred],
            "unmatched_ref": [str(p) for p in pairing.unmatched_ref],
            "alternates": [str(p) for p in pairing.alternates],
        },
        "summary": summarize(cases, classes),
        "cases": cases,
        "plots": [],
    }
    out = Path(out_dir)
    if plots:
        from .plots import write_plots

        ok = [c for c in cases if c["status"] == "ok"]
        volumes = {
            cls.key: (
                [c["classes"][cls.key]["volume_pred_ml"] for c in ok],
                [c["classes"][cls.key]["volume_ref_ml"] for c in ok],
            )
            for cls in classes
        }
        result["plots"] = [p.name for p in write_plots(volumes, out, classes)]
    write_json_atomic(out / METRICS_JSON, result)
    write_text_atomic(out / METRICS_MD, markdown_report(result))
    n_ok = result["summary"]["n_ok"]
    progress.emit("evaluate", 1.0, f"{n_ok} of {n} case(s) evaluated", outputs=str(out))
    if n_ok == 0:
        raise InputError(f"none of the {n} case(s) could be evaluated (first error: {cases[0]['error']})")
    return result


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _stat(d: dict, digits: int = 3) -> str:
    """``mean ± SD; median [Q1, Q3] (n)``."""
    if not d["n"]:
        return "– (n=0)"
    sd = f" ± {_num(d['std'], digits)}" if d["std"] is not None else ""
    return f"{_num(d['mean'], digits)}{sd}; {_num(d['median'], digits)} [{_num(d['q1'], digits)}, " + (
        f"{_num(d['q3'], digits)}] (n={d['n']})"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def markdown_report(result: dict) -> str:
    """The metrics as markdown tables: summary, volume agreement, per case, errors, unmatched files."""
    summary, pairing = result["summary"], result["pairing"]
    keys = list(summary["classes"])
    tol = result["settings"]["nsd_tolerance_mm"]
    lines = [
        "# Segmentation evaluation (ICH / PHE / IVH)",
        "",
        f"- predictions: `{result['pred_dir']}`",
        f"- references: `{result['ref_dir']}`",
        f"- cases: {summary['n_cases']} paired, {summary['n_ok']} evaluated, {summary['n_errors']} with errors; "
        f"{len(pairing['unmatched_pred'])} prediction and {len(pairing['unmatched_ref'])} reference file(s) unmatched",
        "",
        "## Summary per class",
        "",
        "Cells: mean ± SD; median [Q1, Q3] (n cases with a value).",
        "",
    ]
    metric_rows = [
        ("Dice (empty/empty = 1)", "dice_empty1"),
        ("Dice (non-empty reference)", "dice_pos"),
        ("HD95 (mm)", "hd95_mm"),
        (f"Surface Dice @ {tol:g} mm", "nsd"),
        ("Relative volume difference", "rvd"),
        ("Absolute volume error (mL)", "abs_volume_error_ml"),
        ("Reference volume (mL)", "volume_ref_ml"),
        ("Predicted volume (mL)", "volume_pred_ml"),
    ]
    rows = [[label, *(_stat(summary["classes"][k][m]) for k in keys)] for label, m in metric_rows]
    rows.append(
        ["Lesion sensitivity, pooled (detected/reference)"]
        + [
            f"{_num(les['pooled_sensitivity'])} ({les['detected']}/{les['ref_lesions']})"
            for les in (summary["classes"][k]["lesions"] for k in keys)
        ]
    )
    rows.append(
        ["Lesion sensitivity per case"] + [_stat(summary["classes"][k]["lesions"]["sensitivity"]) for k in keys]
    )
    rows.append(
        ["False-positive lesions, total; per case"]
        + [
            f"{les['false_positives']}; {_stat(les['false_positives_per_case'], 2)}"
            for les in (summary["classes"][k]["lesions"] for k in keys)
        ]
    )
    lines += _table(["Metric", *keys], rows)

    lines += ["", "## Volume agreement (predicted vs reference, mL)", ""]
    rows = []
    for k in keys:
        a = summary["classes"][k]["volume_agreement"]
        ba = a["bland_altman"]
        rows.append(
            [
                k,
                str(a["n"]),
                _num(a["ccc"]),
                _num(a["pearson_r"]),
                _num(ba["mean_diff_ml"], 2),
                _num(ba["sd_diff_ml"], 2),
                f"{_num(ba['loa_lower_ml'], 2)} to {_num(ba['loa_upper_ml'], 2)}",
            ]
        )
    lines += _table(["Class", "n", "Lin's CCC", "Pearson r", "Bias (mL)", "SD of diff. (mL)", "95% LoA (mL)"], rows)
    if result["plots"]:
        lines += ["", *(f"![{name}]({name})" for name in result["plots"])]

    ok = [c for c in result["cases"] if c["status"] == "ok"]
    lines += ["", "## Per case"]
    for k in keys:
        rows = []
        for c in ok:
            m = c["classes"][k]
            les = m["lesions"]
            rows.append(
                [
                    c["case"],
                    _num(m["dice_empty1"]),
                    _num(m["dice_pos"]),
                    _num(m["hd95_mm"], 2),
                    _num(m["nsd"]),
                    _num(m["volume_ref_ml"], 2),
                    _num(m["volume_pred_ml"], 2),
                    _num(m["rvd"]),
                    f"{les['detected']}/{les['ref_lesions']}",
                    str(les["false_positives"]),
                ]
            )
        header = ["Case", "Dice (e=1)", "Dice (pos)", "HD95 mm", "NSD", "Ref mL", "Pred mL", "RVD", "Detected", "FP"]
        lines += ["", f"### {k}", "", *_table(header, rows)]

    errors = [c for c in result["cases"] if c["status"] != "ok"]
    if errors:
        lines += [
            "",
            "## Cases not evaluated",
            "",
            *_table(["Case", "Error"], [[c["case"], c["error"]] for c in errors]),
        ]
    unmatched = [("prediction", p) for p in pairing["unmatched_pred"]] + [
        ("reference", p) for p in pairing["unmatched_ref"]
    ]
    if unmatched:
        lines += ["", "## Unmatched files", "", *_table(["Folder", "File"], [[w, f"`{p}`"] for w, p in unmatched])]
    lines += ["", "## Definitions", "", f"Pairing: {pairing['rule']}.", ""]
    lines += [f"- `{name}`: {text}" for name, text in result["conventions"].items()]
    return "\n".join(lines) + "\n"
