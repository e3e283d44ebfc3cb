"""The uncertainty line of the printed report: the sample count beside the sample-based figures."""

import numpy as np
import pytest

from common.evaluation.report import format_table, uncertainty_line
from common.evaluation.scoring import score_cases

BASE = {"ece": 0.005, "brier": 0.0005, "soft_dice": 0.63}


@pytest.mark.parametrize(
    "means, shown, reason",
    [
        (
            {**BASE, "ged": 0.16, "ged_u": 0.02, "hungarian_iou": 0.81, "hungarian_iou_n": 0.8, "samples": [3]},
            "GED 0.1600 (3 samples), GED without the diagonal 0.0200 (3 samples), Hungarian IoU 0.8100 (3 samples), "
            "Hungarian IoU of the first n samples 0.8000, ECE 0.0050",
            None,
        ),
        (
            {**BASE, "ged": 0.16, "ged_u": 0.02, "hungarian_iou": 0.81, "hungarian_iou_n": None, "samples": [2]},
            "GED 0.1600 (2 samples)",
            "Hungarian IoU of the first n samples: not computed (fewer samples than the dataset's experts)",
        ),
        (
            {**BASE, "ged": 0.2, "ged_u": 0.1, "hungarian_iou": 0.8, "hungarian_iou_n": 0.8, "samples": [5, 6]},
            "GED 0.2000 (5-6 samples)",
            None,
        ),
        (
            {**BASE, "ged": None, "ged_u": None, "hungarian_iou": None, "hungarian_iou_n": None, "samples": None},
            "ECE 0.0050, Brier 0.0005, soft Dice 0.6300",
            "GED and Hungarian IoU: not applicable (one map, no samples)",
        ),
        (
            {**BASE, "ged": 0.16, "hungarian_iou": 0.81},  # a fold gathered before the common-count figures
            "GED 0.1600, Hungarian IoU 0.8100",
            "GED without the diagonal and Hungarian IoU of the first n samples: not computed (cases gathered before",
        ),
    ],
)
def test_uncertainty_line(means, shown, reason):
    line = uncertainty_line(means)
    assert line.startswith("Uncertainty metrics (mean over the cases): ") and shown in line
    assert (reason in line) if reason else ("not" not in line)


@pytest.mark.parametrize(
    "strategy, member, last",
    [
        ("per-expert", "Each expert's own network against", "ensemble of 2 expert network(s)"),
        (
            "multi-head",
            "Each expert's head of the multi-head network against",
            "mean of 2 expert head(s) of one network",
        ),
        ("soft-label", None, "one network trained on the mean expert mask"),
    ],
)
def test_the_report_says_what_each_strategy_scored(strategy, member, last):
    """The words come from the strategy (common.strategies), not from the report."""
    scores = score_cases({"c": np.ones((2, 2))}, {"c": np.ones((1, 2, 2), bool)})
    experts = {} if member is None else {"seg01": scores, "seg02": scores}
    table = format_table("T", scores, experts, {"all_background": 0.0}, strategy, None)
    assert table.splitlines()[-1] == f"QUBIQ score ({last}): 1.0000"
    assert (member in table) if member else ("Each expert" not in table)
