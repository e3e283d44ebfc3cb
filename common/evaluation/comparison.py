"""Paired comparison of an experiment's variants: is a difference larger than the fold-to-fold noise?

Every variant of an experiment is cross-validated on the same folds with the same seeds, so the scores
of two variants are paired by fold (and by case: each case is held out in exactly one fold). The first
variant is the baseline; every other variant is compared with it fold by fold and case by case.

Pure numpy and the standard library: no TensorFlow, so the comparison can be redone from saved results.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

TIE = 1e-12  # a difference no larger than this (in absolute value) is a tie

BETTER = "better: larger than the fold-to-fold noise"
WORSE = "worse: larger than the fold-to-fold noise"
WITHIN = "within the fold-to-fold noise"
NOT_ASSESSED = "not assessed: needs 2 or more folds"

RULE = (
    "Verdict: better (worse) when the variant beats (trails) the baseline in every fold and the mean "
    "difference exceeds its standard deviation over folds; a description of the folds, not a significance "
    "test. The sign test p-value counts cases the variant scores higher/lower; cases are not independent draws."
)


@dataclass
class VariantResult:
    """The cross-validated result of one variant of an experiment.

    Attributes:
        name: a label, e.g. ``"dropout=standard"`` or ``"baseline"``.
        changes: the settings changed relative to the base preset, e.g. ``{"dropout": "standard"}``.
        fold_scores: the QUBIQ score of each fold, in fold order.
        case_scores: the score of each held-out case, by case id.
        seconds: the training time summed over all folds.
        parameters: the parameters (trainable and non-trainable) of one network.
        networks: the number of networks trained in total (folds x experts).
        metrics: optional means over all cases of further metrics (``"ged"``, ``"ece"`` ...; None where
            one does not apply); shown as extra columns when a variant has them.
    """

    name: str
    changes: dict[str, str]
    fold_scores: list[float]
    case_scores: dict[str, float]
    seconds: float
    parameters: int
    networks: int
    metrics: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.fold_scores) == 0:
            raise ValueError(f"variant {self.name!r} has no fold scores")
        self.fold_scores = [float(score) for score in self.fold_scores]
        self.case_scores = {str(case): float(score) for case, score in self.case_scores.items()}
        scores = [*self.fold_scores, *self.case_scores.values()]
        if not all(math.isfinite(score) for score in scores):
            raise ValueError(f"variant {self.name!r} has a score that is not a finite number")

    @property
    def mean(self) -> float:
        """Mean of the fold scores."""
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof 1) of the fold scores; 0.0 for a single fold."""
        return _std(self.fold_scores)


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _count_signs(differences: list[float]) -> tuple[int, int, int]:
    better = sum(d > TIE for d in differences)
    worse = sum(d < -TIE for d in differences)
    return better, worse, len(differences) - better - worse


def _sign_test(better: int, worse: int) -> float:
    """Exact two-sided binomial sign test (p = 1/2) on ``better`` positive and ``worse`` negative signs."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_comparison(baseline: VariantResult, other: VariantResult) -> dict:
    """Compare ``other`` with ``baseline`` fold by fold and case by case.

    Returns a dict with ``fold_differences`` (other - baseline, per fold), ``mean_difference``,
    ``std_difference`` (ddof 1), ``folds_better``/``folds_worse``/``folds_tied``,
    ``cases_better``/``cases_worse``/``cases_tied`` (a tie is ``|difference| <= 1e-12``), ``sign_test_p``
    and ``verdict``.

    The verdict rule: "better" when every fold difference is positive and the mean difference exceeds the
    standard deviation of the fold differences; "worse" symmetrically; otherwise "within the fold-to-fold
    noise"; "not assessed" with a single fold. With K folds a paired t-test would have only K - 1 degrees
    of freedom (2 for 3 folds), so the rule describes the folds and is not a significance test.

    Beside it, ``sign_test_p`` is the exact two-sided binomial sign test on the untied per-case
    differences: ``p = min(1, 2 * sum_{i <= min(b, w)} C(n, i) / 2^n)`` with ``n = b + w`` (1.0 when
    ``n = 0``). The cases are not independent draws either (those of one fold share the same networks),
    so this p-value is a guide, not a guarantee.

    Raises:
        ValueError: if the two variants have different numbers of folds or different case ids.
    """
    if len(baseline.fold_scores) != len(other.fold_scores):
        raise ValueError(
            f"{other.name!r} has {len(other.fold_scores)} folds but baseline {baseline.name!r} has "
            f"{len(baseline.fold_scores)}: a paired comparison needs the same folds"
        )
    missing_other = sorted(set(baseline.case_scores) - set(other.case_scores))
    missing_baseline = sorted(set(other.case_scores) - set(baseline.case_scores))
    if missing_other or missing_baseline:
        raise ValueError(
            f"the case ids differ: missing from {other.name!r}: {missing_other}; "
            f"missing from baseline {baseline.name!r}: {missing_baseline}"
        )

    differences = [o - b for b, o in zip(baseline.fold_scores, other.fold_scores, strict=True)]
    mean, std = float(np.mean(differences)), _std(differences)
    folds_better, folds_worse, folds_tied = _count_signs(differences)
    case_differences = [other.case_scores[case] - baseline.case_scores[case] for case in sorted(baseline.case_scores)]
    cases_better, cases_worse, cases_tied = _count_signs(case_differences)

    if len(differences) < 2:
        verdict = NOT_ASSESSED
    elif folds_better == len(differences) and mean > std:
        verdict = BETTER
    elif folds_worse == len(differences) and -mean > std:
        verdict = WORSE
    else:
        verdict = WITHIN
    return {
        "fold_differences": differences,
        "mean_difference": mean,
        "std_difference": std,
        "folds_better": folds_better,
        "folds_worse": folds_worse,
        "folds_tied": folds_tied,
        "cases_better": cases_better,
        "cases_worse": cases_worse,
        "cases_tied": cases_tied,
        "sign_test_p": _sign_test(cases_better, cases_worse),
        "verdict": verdict,
    }


def _comparisons(variants: list[VariantResult]) -> list[dict | None]:
    """The paired comparison of each variant with the first (``None`` for the baseline itself)."""
    if not variants:
        raise ValueError("no variants to compare: expected the baseline first, then the other variants")
    baseline = variants[0]
    return [None] + [paired_comparison(baseline, variant) for variant in variants[1:]]


def _format_duration(seconds: float) -> str:
    """``52 s``, ``4 min 12 s`` or ``2 h 05 min``."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def _format_p(p: float) -> str:
    return f"p={p:.2f}" if p >= 0.01 else f"p={p:.1e}"


def format_comparison(variants: list[VariantResult], title: str) -> str:
    """A Markdown table comparing every variant with the first (the baseline), headed by ``title``.

    Columns: the QUBIQ score (mean ± std over folds) and per fold, the difference from the baseline (mean
    and per fold), the folds better/worse/tied, the cases better/worse with the sign test p-value, the
    verdict, the training time, the networks trained and the parameters of one network. A line after the
    table states the verdict rule.
    """
    comparisons = _comparisons(variants)
    header = [
        "variant",
        "QUBIQ (mean ± std)",
        "per fold",
        "Δ vs baseline (per fold)",
        "folds +/−/=",
        "cases +/− (sign p)",
        "verdict",
        *[_column(key) for key in _metric_keys(variants)],
        "training time",
        "networks",
        "parameters",
    ]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, comparison in zip(variants, comparisons, strict=True):
        if comparison is None:
            delta, folds, cases, verdict = "—", "—", "—", "baseline"
        else:
            per_fold = " / ".join(f"{d:+.4f}" for d in comparison["fold_differences"])
            delta = f"{comparison['mean_difference']:+.4f} ({per_fold})"
            folds = f"{comparison['folds_better']}/{comparison['folds_worse']}/{comparison['folds_tied']}"
            p = _format_p(comparison["sign_test_p"])
            cases = f"{comparison['cases_better']}/{comparison['cases_worse']} ({p})"
            verdict = comparison["verdict"]
        cells = [
            variant.name,
            f"{variant.mean:.4f} ± {variant.std:.4f}",
            " / ".join(f"{score:.4f}" for score in variant.fold_scores),
            delta,
            folds,
            cases,
            verdict,
            *[_format_metric(variant.metrics.get(key)) for key in _metric_keys(variants)],
            _format_duration(variant.seconds),
            str(variant.networks),
            f"{variant.parameters:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", RULE]
    return "\n".join(lines) + "\n"


#: Extra columns, in this order, when the variants carry these metrics (see :mod:`common.evaluation.uncertainty`).
#: ``ged_u`` and ``hungarian_iou_n`` are the figures at a common sample count (GED without the diagonal, the first
#: n samples), so that variants with different numbers of samples compare; ``samples`` the counts behind ``ged``.
METRIC_COLUMNS = {
    "ged": "GED ↓",
    "ged_u": "GED, no diagonal ↓",
    "hungarian_iou": "Hungarian IoU ↑",
    "hungarian_iou_n": "Hungarian IoU, first n ↑",
    "samples": "samples",
    "ece": "ECE ↓",
    "brier": "Brier ↓",
}


#: A metric key ``rule:<name>`` is the QUBIQ score of a strategy's map read by rule ``<name>`` (agreement classes:
#: argmax, expectation, median); those columns come first, in the order met.
RULE_PREFIX = "rule:"


def _metric_keys(variants: list[VariantResult]) -> list[str]:
    rules = list(dict.fromkeys(k for v in variants for k in v.metrics if k.startswith(RULE_PREFIX)))
    return rules + [key for key in METRIC_COLUMNS if any(key in v.metrics for v in variants)]


def _column(key: str) -> str:
    return f"QUBIQ, {key.removeprefix(RULE_PREFIX)} map ↑" if key.startswith(RULE_PREFIX) else METRIC_COLUMNS[key]


def _format_metric(value: float | list[int] | None) -> str:
    if isinstance(value, list):  # a count: the distinct values over the cases
        return "-".join(map(str, (value[0], value[-1]) if len(value) > 1 else value))
    return "n/a" if value is None else f"{value:.4f}"


def comparison_rows(variants: list[VariantResult]) -> list[dict]:
    """One flat dict per variant with the table's fields as numbers (``None`` where the baseline has none).

    Keys: ``variant``, ``changes`` (``"key=value;key=value"``), ``mean``, ``std``, ``fold_1`` ...
    ``fold_K``, ``delta_mean``, ``delta_std``, ``delta_fold_1`` ... ``delta_fold_K``, ``folds_better``,
    ``folds_worse``, ``folds_tied``, ``cases_better``, ``cases_worse``, ``cases_tied``, ``sign_test_p``,
    ``verdict``, ``seconds``, ``networks``, ``parameters``.
    """
    comparisons = _comparisons(variants)
    rows = []
    for variant, comparison in zip(variants, comparisons, strict=True):
        folds = len(variant.fold_scores)
        c = comparison or {}
        differences = c.get("fold_differences", [None] * folds)
        row = {
            "variant": variant.name,
            "changes": ";".join(f"{key}={value}" for key, value in variant.changes.items()),
            "mean": variant.mean,
            "std": variant.std,
            **{f"fold_{k + 1}": score for k, score in enumerate(variant.fold_scores)},
            "delta_mean": c.get("mean_difference"),
            "delta_std": c.get("std_difference"),
            **{f"delta_fold_{k + 1}": d for k, d in enumerate(differences)},
        }
        for key in ("folds_better", "folds_worse", "folds_tied", "cases_better", "cases_worse", "cases_tied"):
            row[key] = c.get(key)
        row["sign_test_p"] = c.get("sign_test_p")
        row["verdict"] = c.get("verdict", "baseline")
        for key in _metric_keys(variants):
            value = variant.metrics.get(key)
            row[key] = _format_metric(value) if isinstance(value, list) else value
        row.update(seconds=float(variant.seconds), networks=variant.networks, parameters=variant.parameters)
        rows.append(row)
    return rows


def comparison_csv(variants: list[VariantResult]) -> str:
    """:func:`comparison_rows` as CSV: header first, ``\\n`` line endings, floats at full precision."""
    rows = comparison_rows(variants)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
