"""What a run prints and writes about its scores: the Dice table, ``dice_matrix.csv``, versions."""

from __future__ import annotations

import csv
import io
import platform
import sys

import numpy as np

from common.evaluation.scoring import THRESHOLDS
from common.strategies import strategy as _strategy

#: The packages whose versions a run records, by the name it records them under.
VERSIONED = {
    "numpy": "numpy",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "torch": "torch",
    "keras": "keras",
    "nibabel": "nibabel",
    "skimage": "scikit-image",
}


def versions() -> dict[str, str]:
    """Versions worth recording next to results: the Keras backend the run trains on, and the packages
    installed (read from the package metadata, so a run records them in its ``config.json`` before
    anything imports a backend)."""
    from importlib import metadata

    from common.training.backend import requested

    found = {"python": platform.python_version(), "platform": platform.platform(), "keras_backend": requested()}
    for name, distribution in VERSIONED.items():
        module = sys.modules.get(name)
        try:
            found[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            if module is not None:  # imported from a source tree, not installed
                found[name] = getattr(module, "__version__", "unknown")
    return found


def dice_matrix_csv(scores: dict) -> str:
    """Held-out cases x thresholds, a per-case mean column and a final ``mean`` row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["case", *[f"t={t:.1f}" for t in THRESHOLDS], "mean"])
    for case_id, row in zip(scores["cases"], scores["dice"], strict=True):
        writer.writerow([case_id, *[f"{v:.6f}" for v in row], f"{np.mean(row):.6f}"])
    writer.writerow(["mean", *[f"{v:.6f}" for v in scores["per_threshold"]], f"{scores['score']:.6f}"])
    return out.getvalue()


UNCERTAINTY_LABELS = {
    "ged": "GED",
    "ged_u": "GED without the diagonal",
    "hungarian_iou": "Hungarian IoU",
    "hungarian_iou_n": "Hungarian IoU of the first n samples",
    "ece": "ECE",
    "brier": "Brier",
    "soft_dice": "soft Dice",
}


def _counted(values: list[int] | None, noun: str) -> str:
    if not values:
        return ""
    return f"{values[0]} {noun}" if len(values) == 1 else f"{values[0]}-{values[-1]} {noun}"


def uncertainty_line(means: dict) -> str:
    """The uncertainty metrics' means in one line, the sample count beside the sample-based ones; a metric
    that does not apply says why."""
    samples = _counted(means.get("samples"), "samples")
    beside = {"ged": samples, "ged_u": samples, "hungarian_iou": samples}
    shown = [
        f"{label} {means[key]:.4f}" + (f" ({beside[key]})" if beside.get(key) else "")
        for key, label in UNCERTAINTY_LABELS.items()
        if means.get(key) is not None
    ]
    line = "Uncertainty metrics (mean over the cases): " + ", ".join(shown)
    if means.get("ged") is None and means.get("hungarian_iou") is None:
        return line + "; GED and Hungarian IoU: not applicable (one map, no samples)"
    absent = [UNCERTAINTY_LABELS[k] for k in ("ged_u", "hungarian_iou_n") if means.get(k) is None]
    if absent:
        why = (
            "fewer samples than the dataset's experts" if means.get("samples") else "cases gathered before they existed"
        )
        line += f"; {' and '.join(absent)}: not computed ({why})"
    return line


def format_table(
    title: str,
    ensemble: dict,
    experts: dict[str, dict],
    references: dict[str, float],
    strategy: str,
    uncertainty: dict[str, float | None] | None = None,
    rules: dict[str, float] | None = None,
) -> str:
    """The printed report; its last line is the overall score (``strategy``, a name, says what it is of).

    ``rules``: the score of each way the strategy reads its outputs as a map (agreement classes: argmax,
    expectation, median), printed on one line with the rule the map uses."""
    lines = [
        title,
        "Dice of the ensemble at each threshold (prediction >= t vs. expert consensus >= t):",
        *dice_table_lines(ensemble),
    ]
    lines.append("")
    learner = _strategy(strategy)
    if experts:
        lines.append(f"Each expert's {learner.member_kind} against the consensus:")
        for name, result in experts.items():
            lines.append(f"  {name}: {result['score']:.4f}")
    lines.append(
        "Trivial predictions on the same cases, for reference: "
        + ", ".join(f"{name.replace('_', '-')} {value:.4f}" for name, value in references.items())
    )
    if rules:
        lines.append(
            f"QUBIQ score by map rule (the map: {learner.map_rule}): "
            + ", ".join(f"{rule} {score:.4f}" for rule, score in rules.items())
        )
    if uncertainty is not None:
        lines.append(uncertainty_line(uncertainty))
    lines.append("")
    lines.append(f"QUBIQ score ({learner.ensemble_label(len(experts))}): {ensemble['score']:.4f}")
    return "\n".join(lines)


def dice_table_lines(scores: dict) -> list[str]:
    """The cases x thresholds Dice table with a mean column and a final ``mean`` row.

    ``scores`` as returned by :func:`common.evaluation.scoring.score_cases` (``per_threshold`` a list). The same
    layout as the table in :func:`format_table`.
    """
    case_width = max(8, *(len(c) for c in scores["cases"]))
    header = f"{'case':<{case_width}} " + " ".join(f"{t:>5.1f}" for t in THRESHOLDS) + "   mean"
    rule = "-" * len(header)
    lines = [rule, header, rule]
    for case_id, row in zip(scores["cases"], scores["dice"], strict=True):
        lines.append(f"{case_id:<{case_width}} " + " ".join(f"{v:5.3f}" for v in row) + f"  {np.mean(row):5.3f}")
    lines.append(rule)
    means = " ".join(f"{v:5.3f}" for v in scores["per_threshold"])
    lines.append(f"{'mean':<{case_width}} {means}  {scores['score']:5.3f}")
    return lines
