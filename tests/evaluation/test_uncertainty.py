"""Uncertainty and calibration metrics on tiny hand-computed cases."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.evaluation.uncertainty import (
    LOWER_IS_BETTER,
    METRICS,
    brier_score,
    case_metrics,
    expected_calibration_error,
    generalised_energy_distance,
    hungarian_iou,
    iou,
    mean_metrics,
    soft_dice,
)

PROJECT = Path(__file__).resolve().parents[2]

# 2 x 2 masks, pixels numbered  0 1
#                               2 3
A = [[1, 1], [0, 0]]  # {0, 1}
B = [[1, 0], [0, 0]]  # {0}
C = [[0, 0], [1, 1]]  # {2, 3}
E = [[0, 0], [0, 0]]  # empty
# IoU: A,B = 1/2 ({0} / {0, 1});  A,C = 0;  B,C = 0;  E with anything non-empty = 0;  E,E = 1 (d = 0)


def stack(*masks):
    """Masks written as nested lists -> bool (count, rows, cols)."""
    return np.array(masks, dtype=bool)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (A, C, 0.0),  # disjoint: 0 / 4
        (A, A, 1.0),  # identical: 2 / 2
        ([[1, 1, 0, 0]], [[0, 1, 1, 0]], 1 / 3),  # overlap {1}, union {0, 1, 2}
        ([[1, 1, 1, 0]], [[0, 1, 1, 1]], 1 / 2),  # 2 of 4 pixels overlap: {1, 2} / {0, 1, 2, 3}
        (A, B, 1 / 2),  # {0} / {0, 1}
        (E, E, 1.0),  # both empty: they agree, not NaN
        (E, A, 0.0),  # one empty: 0 / 2
        (A, E, 0.0),
    ],
)
def test_iou_table(a, b, expected):
    assert iou(np.array(a), np.array(b)) == pytest.approx(expected)  # 0/1 ints
    assert iou(np.array(a, dtype=bool), np.array(b, dtype=bool)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "references, samples, expected",
    [
        # identical sets (in another order): d(S, Y) over {A, B} x {B, A} = (1/2 + 0 + 0 + 1/2) / 4 = 1/4,
        # d(S, S') = d(Y, Y') = (0 + 1/2 + 1/2 + 0) / 4 = 1/4  ->  2/4 - 1/4 - 1/4 = 0
        ((A, B), (B, A), 0.0),
        # {A} vs {C}, disjoint and non-empty: 2 * 1 - 0 - 0 = 2 (the squared distance, not sqrt(2))
        ((A,), (C,), 2.0),
        # references {A, B}, samples {A, C}:
        #   S x Y: d(A, A) = 0, d(A, B) = 1/2, d(C, A) = 1, d(C, B) = 1  -> mean 5/8, times 2 = 5/4
        #   S x S': 0, 1, 1, 0 -> mean 1/2;   Y x Y': 0, 1/2, 1/2, 0 -> mean 1/4
        #   5/4 - 1/2 - 1/4 = 1/2   (without the pairs of a mask with itself: 5/4 - 1 - 1/2 = -1/4)
        ((A, B), (A, C), 0.5),
        # all empty: every d = 0
        ((E, E), (E,), 0.0),
        # empty expert, non-empty sample: d = 1 - 0 = 1  ->  2 * 1 - 0 - 0 = 2
        ((E,), (A,), 2.0),
        # references {E, A}, samples {E}: S x Y: d(E, E) = 0, d(E, A) = 1 -> mean 1/2, times 2 = 1;
        #   S x S': 0;  Y x Y': 0, 1, 1, 0 -> 1/2   ->  1 - 0 - 1/2 = 1/2
        ((E, A), (E,), 0.5),
        # references {A, C}, samples {A}: S x Y: 0, 1 -> 1/2, times 2 = 1;  S x S': 0;  Y x Y': 1/2  ->  1/2
        ((A, C), (A,), 0.5),
    ],
)
def test_generalised_energy_distance_table(references, samples, expected):
    assert generalised_energy_distance(stack(*references), stack(*samples)) == pytest.approx(expected)


def test_generalised_energy_distance_accepts_01_ints_and_3d_images():
    references = np.array([[A, A], [B, B]], dtype=np.int64)  # two experts, 2 x 2 x 2 volumes
    samples = np.array([[A, A], [C, C]], dtype=np.uint8)
    # per-volume IoU as for the 2 x 2 masks (every count doubles): the (A, B) vs (A, C) case -> 1/2
    assert generalised_energy_distance(references, samples) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "references, samples, expected",
    [
        # the same three masks permuted: the matching undoes the permutation (pairing in order gives 0)
        ((A, B, C), (C, A, B), 1.0),
        ((A, C), (C, A), 1.0),
        # 2 experts {A, C} vs 1 sample {B}: lcm 2, the sample appears twice:
        #   IoU(A, B) = 1/2, IoU(C, B) = 0  ->  (1/2 + 0) / 2 = 1/4   (matching B with A only would give 1/2)
        ((A, C), (B,), 0.25),
        # 3 experts {A, B, C} vs 2 samples {A, C}: lcm 6, experts A A B B C C, samples A A A C C C.
        #   Best: A-A twice (1 + 1), C-C twice (1 + 1), the two Bs take the last A (1/2) and the last C (0):
        #   (4 + 1/2) / 6 = 3/4   (no duplication: A-A, C-C -> 1;  samples padded to 3 as A C A -> 5/6)
        ((A, B, C), (A, C), 0.75),
        # empty masks: E-E has IoU 1, E-A has 0:  {E, A} vs {A, E} -> 1
        ((E, A), (A, E), 1.0),
    ],
)
def test_hungarian_iou_table(references, samples, expected):
    assert hungarian_iou(stack(*references), stack(*samples)) == pytest.approx(expected)


def test_hungarian_iou_is_symmetric_in_the_counts():
    # 2 samples vs 3 experts gives the same as 3 vs 2 (lcm 6 either way): 3/4 as above
    assert hungarian_iou(stack(A, C), stack(A, B, C)) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "prediction, target, bins, expected",
    [
        # perfectly calibrated: every bin's mean prediction equals its mean target
        ([0.0, 0.25, 0.5, 1.0], [0.0, 0.25, 0.5, 1.0], 10, 0.0),
        ([0.05, 0.35, 0.65, 0.95], [0.05, 0.35, 0.65, 0.95], 2, 0.0),
        # 4 pixels, 2 bins [0, 1/2) and [1/2, 1]:
        #   bin 0: p {0.1, 0.4} mean 0.25, g {0, 1} mean 0.5  -> 2/4 * 0.25 = 0.125
        #   bin 1: p {0.6, 0.9} mean 0.75, g {0, 1} mean 0.5  -> 2/4 * 0.25 = 0.125      ECE = 0.25
        ([0.1, 0.4, 0.6, 0.9], [0.0, 1.0, 0.0, 1.0], 2, 0.25),
        # the same with one bin: |mean p - mean g| = |0.5 - 0.5| = 0
        ([0.1, 0.4, 0.6, 0.9], [0.0, 1.0, 0.0, 1.0], 1, 0.0),
        # p = 1.0 lands in the last bin with 0.6: p mean 0.8, g mean 0.5 -> 2/2 * 0.3 = 0.3
        #   (a bin of its own would give 1/2 * 1 + 1/2 * 0.4 = 0.7; dropping it 1/2 * 0.4 = 0.2)
        ([1.0, 0.6], [0.0, 1.0], 2, 0.3),
        # a left edge belongs to the bin it opens: 0.5 is in bin 1, apart from 0.4:
        #   1/2 * |0.4 - 1| + 1/2 * |0.5 - 0| = 0.3 + 0.25 = 0.55   (together: |0.45 - 0.5| = 0.05)
        ([0.4, 0.5], [1.0, 0.0], 2, 0.55),
        # 10 bins: 0.3 is in bin 3, 0.25 in bin 2:  1/2 * |0.3 - 0| + 1/2 * |0.25 - 1| = 0.15 + 0.375 = 0.525
        ([0.3, 0.25], [0.0, 1.0], 10, 0.525),
        # all background, predicted 0: 0
        ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], 10, 0.0),
    ],
)
def test_expected_calibration_error_table(prediction, target, bins, expected):
    assert expected_calibration_error(np.array(prediction), np.array(target), bins=bins) == pytest.approx(expected)


F32_07, F32_01 = float(np.float32(0.7)), float(np.float32(0.1))  # 0.699999988..., 0.100000001...


@pytest.mark.parametrize(
    "prediction, target, expected",
    [
        # float32(0.7) = 0.699999988 is "at or above 0.7" for the score, so it joins 0.75 in [0.7, 0.8):
        #   |(0.7 + 0.75) - (1 + 0)| / 2 = 0.225   (in [0.6, 0.7) apart from 0.75: (0.3 + 0.75) / 2 = 0.525)
        ([F32_07, 0.75], [1.0, 0.0], 0.225),
        # float32(0.1) = 0.100000001 is in [0.1, 0.2) with 0.15:  |0.25 - 1| / 2 = 0.375   (apart: 0.525)
        ([F32_01, 0.15], [1.0, 0.0], 0.375),
        # 0.3 exactly (the float64 nearest 0.3, equal to the edge 3 / 10) is in [0.3, 0.4) with 0.35:
        #   |0.65 - 1| / 2 = 0.175   (apart: (0.7 + 0.35) / 2 = 0.525)
        ([0.3, 0.35], [1.0, 0.0], 0.175),
        # 1.0 is in the last bin with 0.95:  |1.95 - 1| / 2 = 0.475   (a bin of its own: (1 + 0.05) / 2 = 0.525)
        ([1.0, 0.95], [0.0, 1.0], 0.475),
        # 0.0 is in the first bin with 0.05:  |0.05 - 1| / 2 = 0.475   (apart: (1 + 0.05) / 2 = 0.525)
        ([0.0, 0.05], [1.0, 0.0], 0.475),
        # 2e-6 below the edge 0.7 is beyond the tolerance (1e-6): it stays in [0.6, 0.7), apart from 0.75:
        #   (|0.699998 - 1| + |0.75 - 0|) / 2 = (0.300002 + 0.75) / 2 = 0.525001
        ([0.7 - 2e-6, 0.75], [1.0, 0.0], 0.525001),
        # 5e-7 below the edge is within it: [0.7, 0.8) with 0.75:  |1.4499995 - 1| / 2 = 0.22499975
        ([0.7 - 5e-7, 0.75], [1.0, 0.0], 0.22499975),
        # 5e-7 below 1.0 is in the last bin as 1.0 is (there is no bin above it):  |1.9499995 - 1| / 2
        ([1.0 - 5e-7, 0.95], [0.0, 1.0], 0.47499975),
    ],
)
def test_expected_calibration_error_bins_stored_values_as_the_score_reads_them(prediction, target, expected):
    ece = expected_calibration_error(np.array(prediction), np.array(target))
    assert ece == pytest.approx(expected, rel=0, abs=1e-7)  # float32 inputs are off by ~1e-8


def test_calibration_bin_is_the_number_of_thresholds_the_score_reaches():
    """With 10 bins, a stored float32 value's bin is the count of the score's thresholds t it reaches
    (``p >= t - PREDICTION_TOLERANCE``, the comparison of :func:`common.evaluation.scoring.threshold_dice`)."""
    from common.evaluation.scoring import PREDICTION_TOLERANCE, TENTHS
    from common.evaluation.uncertainty import _calibration_bins

    stored = np.array(
        [j / 10 + d for j in range(11) for d in (-2e-6, -5e-7, -1e-7, 0.0, 1e-7, 0.05) if 0 <= j / 10 + d <= 1],
        np.float32,
    )
    reached = sum((stored >= j / 10 - PREDICTION_TOLERANCE).astype(int) for j in TENTHS)
    assert _calibration_bins(stored.astype(np.float64), 10).tolist() == reached.tolist()


def test_expected_calibration_error_default_is_ten_bins():
    # 0.3 (bin 3) and 0.25 (bin 2) are apart with 10 bins (0.525, above); with 5 bins both are in bin 1 -> 0.225
    p, g = np.array([0.3, 0.25]), np.array([0.0, 1.0])
    assert expected_calibration_error(p, g) == pytest.approx(0.525)
    assert expected_calibration_error(p, g, bins=5) == pytest.approx(0.225)


@pytest.mark.parametrize(
    "prediction, target, expected",
    [
        # (0.5 - 0)^2 + (1 - 1)^2 + (0 - 0.5)^2 + (0.25 - 0.25)^2 = 0.25 + 0 + 0.25 + 0, over 4 -> 0.125
        ([0.5, 1.0, 0.0, 0.25], [0.0, 1.0, 0.5, 0.25], 0.125),
        ([0.0, 0.0], [0.0, 0.0], 0.0),  # both empty
        ([1.0, 0.0], [0.0, 1.0], 1.0),  # (1 + 1) / 2
        ([0.2, 0.7], [0.2, 0.7], 0.0),
    ],
)
def test_brier_score_table(prediction, target, expected):
    assert brier_score(np.array(prediction), np.array(target)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction, target, expected",
    [
        # sum pg = 0 + 1 + 0 + 0.0625 = 1.0625; sum p = sum g = 1.75  ->  2.125 / 3.5 = 17/28
        ([0.5, 1.0, 0.0, 0.25], [0.0, 1.0, 0.5, 0.25], 17 / 28),
        ([0.0, 0.0], [0.0, 0.0], 1.0),  # both empty: they agree, not NaN
        ([0.0, 0.0], [0.0, 1.0], 0.0),  # 0 / 1
        ([1.0, 0.0], [1.0, 0.0], 1.0),
        ([0.5, 0.5], [1.0, 0.0], 0.5),  # 2 * 0.5 / (1 + 1)
    ],
)
def test_soft_dice_table(prediction, target, expected):
    assert soft_dice(np.array(prediction), np.array(target)) == pytest.approx(expected)


def test_case_metrics_by_hand():
    # experts A and B -> target [[1, 1/2], [0, 0]];  prediction [[0.8, 0.5], [0.2, 0]]
    #   brier: (0.04 + 0 + 0.04 + 0) / 4 = 0.02
    #   ece (10 bins, each pixel alone): (0.2 + 0 + 0.2 + 0) / 4 = 0.1
    #   soft dice: sum pg = 0.8 + 0.25 = 1.05, sum p = sum g = 1.5 -> 2.1 / 3 = 0.7
    #   samples {A, C}: ged 1/2 (the GED table); hungarian: A-A 1 + B-C 0 beats A-C 0 + B-A 1/2 -> 1/2
    #   without the diagonal: cross 5/8 as for ged; within samples d(A, C) = 1 over 2 pairs -> 1, within
    #   experts d(A, B) = 1/2 -> 1/2: 5/4 - 1 - 1/2 = -1/4; the first n = 2 samples are both samples: 1/2
    prediction = np.array([[0.8, 0.5], [0.2, 0.0]])
    metrics = case_metrics(prediction, np.array([A, B]), np.array([A, C]))
    assert list(metrics) == [*METRICS, "samples", "experts"]
    assert metrics == pytest.approx(
        {
            "ged": 0.5,
            "ged_u": -0.25,
            "hungarian_iou": 0.5,
            "hungarian_iou_n": 0.5,
            "ece": 0.1,
            "brier": 0.02,
            "soft_dice": 0.7,
            "samples": 2,
            "experts": 2,
        }
    )


def test_case_metrics_perfect_prediction():
    # prediction = mean of {A, B} = [[1, 1/2], [0, 0]], samples = {B, A}: ged 0, hungarian 1, ece 0, brier 0;
    # soft Dice is below 1 on a soft target even for the perfect map: 2 (1 + 1/4) / (3/2 + 3/2) = 5/6
    # without the diagonal two identical sets of two masks at distance 1/2 give -1/2 (an unbiased estimate)
    metrics = case_metrics(np.array([[1.0, 0.5], [0.0, 0.0]]), stack(A, B), stack(B, A))
    assert metrics == pytest.approx(
        {
            "ged": 0.0,
            "ged_u": -0.5,
            "hungarian_iou": 1.0,
            "hungarian_iou_n": 1.0,
            "ece": 0.0,
            "brier": 0.0,
            "soft_dice": 5 / 6,
            "samples": 2,
            "experts": 2,
        }
    )


def test_case_metrics_without_samples_gives_none_for_the_sample_metrics():
    prediction = np.array([[0.8, 0.5], [0.2, 0.0]])
    metrics = case_metrics(prediction, stack(A, B), None)
    assert metrics["ged"] is None and metrics["ged_u"] is None
    assert metrics["hungarian_iou"] is None and metrics["hungarian_iou_n"] is None
    assert metrics["samples"] is None and metrics["experts"] == 2
    assert metrics["ece"] == pytest.approx(0.1)  # as in test_case_metrics_by_hand
    assert metrics["brier"] == pytest.approx(0.02)
    assert metrics["soft_dice"] == pytest.approx(0.7)


def test_lower_is_better_covers_every_metric():
    assert set(LOWER_IS_BETTER) == set(METRICS)
    assert [name for name in METRICS if LOWER_IS_BETTER[name]] == ["ged", "ged_u", "ece", "brier"]


def test_mean_metrics():
    per_case = {
        "case01": {"ged": 0.5, "hungarian_iou": 1.0, "ece": 0.1, "brier": 0.02, "soft_dice": 0.7},
        "case02": {"ged": 0.0, "hungarian_iou": 0.5, "ece": 0.3, "brier": 0.04, "soft_dice": 0.9},
    }
    means = mean_metrics(per_case)  # cases gathered before ged_u, hungarian_iou_n and the counts: those are None
    assert {k: v for k, v in means.items() if v is not None} == pytest.approx(
        {"ged": 0.25, "hungarian_iou": 0.75, "ece": 0.2, "brier": 0.03, "soft_dice": 0.8}
    )
    assert [k for k, v in means.items() if v is None] == ["ged_u", "hungarian_iou_n", "samples", "experts"]


def test_mean_metrics_keeps_none_when_no_case_has_samples():
    per_case = {
        "case01": {"ged": None, "hungarian_iou": None, "ece": 0.1, "brier": 0.02, "soft_dice": 0.7},
        "case02": {"ged": None, "hungarian_iou": None, "ece": 0.3, "brier": 0.04, "soft_dice": 0.9},
    }
    means = mean_metrics(per_case)
    assert means["ged"] is None
    assert means["hungarian_iou"] is None
    assert means["ece"] == pytest.approx(0.2)
    assert means["brier"] == pytest.approx(0.03)
    assert means["soft_dice"] == pytest.approx(0.8)


def test_mean_metrics_rejects_none_in_some_cases_only():
    per_case = {
        "case01": {"ged": 0.5, "hungarian_iou": 1.0, "ece": 0.1, "brier": 0.02, "soft_dice": 0.7},
        "case02": {"ged": None, "hungarian_iou": 0.5, "ece": 0.3, "brier": 0.04, "soft_dice": 0.9},
    }
    with pytest.raises(ValueError, match=r"ged is None in cases \['case02'\] but not in the others"):
        mean_metrics(per_case)


def test_mean_metrics_rejects_no_case_and_wrong_keys():
    with pytest.raises(ValueError, match="no case"):
        mean_metrics({})
    with pytest.raises(ValueError, match="case 'case01' has unknown metrics \\['ged2'\\]"):
        mean_metrics({"case01": {"ece": 0.1, "ged2": 0.3}})


MAP = np.full((2, 2), 0.5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: iou(np.zeros((2, 2)), np.zeros((1, 4))), r"a of shape \(2, 2\) differs from b of shape \(1, 4\)"),
        (
            lambda: generalised_energy_distance(np.zeros((1, 2, 2)), np.zeros((1, 1, 4))),
            r"references of image shape \(2, 2\).*samples of image shape \(1, 4\)",
        ),
        (
            lambda: hungarian_iou(np.zeros((1, 2, 2)), np.zeros((3, 4))),
            r"references of image shape \(2, 2\).*samples of image shape \(4,\)",
        ),
        (
            lambda: expected_calibration_error(MAP, np.zeros((1, 4))),
            r"prediction of shape \(2, 2\) differs from target of shape \(1, 4\)",
        ),
        (lambda: brier_score(MAP, np.zeros(3)), r"prediction of shape \(2, 2\) differs from target of shape \(3,\)"),
        (lambda: soft_dice(MAP, np.zeros(3)), r"prediction of shape \(2, 2\) differs from target of shape \(3,\)"),
        (
            lambda: case_metrics(MAP, np.zeros((2, 3, 3)), None),
            r"prediction of shape \(2, 2\) differs from the references' image shape \(3, 3\)",
        ),
        (lambda: case_metrics(MAP, stack(A), np.zeros((1, 3, 3))), r"samples of image shape \(3, 3\)"),
        # probability maps outside [0, 1], NaN, infinite
        (lambda: expected_calibration_error(np.array([0.5, 1.1]), np.zeros(2)), r"prediction must be in \[0, 1\]"),
        (lambda: brier_score(np.array([-0.1, 0.5]), np.zeros(2)), r"prediction must be in \[0, 1\]"),
        (lambda: soft_dice(np.zeros(2), np.array([0.5, 2.0])), r"target must be in \[0, 1\]"),
        (lambda: case_metrics(MAP + 0.6, stack(A), None), r"prediction must be in \[0, 1\]"),
        (lambda: brier_score(np.array([np.nan, 0.5]), np.zeros(2)), "prediction holds NaN"),
        (lambda: soft_dice(np.zeros(2), np.array([np.inf, 0.5])), "target holds NaN or infinite"),
        (lambda: case_metrics(np.array([[np.nan, 0], [0, 0]]), stack(A), None), "prediction holds NaN"),
        # no reference, no sample
        (lambda: generalised_energy_distance(np.zeros((0, 2, 2)), stack(A)), "references must be stacked"),
        (lambda: hungarian_iou(stack(A), np.zeros((0, 2, 2))), "samples must be stacked"),
        (lambda: case_metrics(MAP, np.zeros((0, 2, 2)), None), "references must be stacked"),
        (lambda: case_metrics(MAP, stack(A), np.zeros((0, 2, 2))), "samples must be stacked"),
        # masks that are not binary
        (lambda: iou(np.array([0.5, 1.0]), np.zeros(2)), "a must be binary"),
        (lambda: generalised_energy_distance(np.full((1, 2, 2), 2), stack(A)), "references must be binary"),
        (lambda: case_metrics(MAP, stack(A), np.full((1, 2, 2), 0.3)), "samples must be binary"),
        # bins
        (lambda: expected_calibration_error(MAP, MAP, bins=0), "bins must be an integer >= 1, got 0"),
        (lambda: expected_calibration_error(MAP, MAP, bins=-3), "bins must be an integer >= 1, got -3"),
        (lambda: expected_calibration_error(MAP, MAP, bins=2.5), "bins must be an integer >= 1, got 2.5"),
        (lambda: expected_calibration_error(MAP, MAP, bins=True), "bins must be an integer >= 1, got True"),
        # no pixel to average over
        (lambda: expected_calibration_error(np.zeros(0), np.zeros(0)), "no pixel"),
        (lambda: brier_score(np.zeros(0), np.zeros(0)), "no pixel"),
    ],
)
def test_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_does_not_import_tensorflow():
    code = (
        "import sys, common.evaluation.uncertainty; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True)


# --- GED and Hungarian IoU at a common sample count -----------------------------------------------------------


def test_ged_without_the_diagonal_by_hand():
    # experts {A, B}, samples {A, C, C}: cross (0 + 1/2 + 1 + 1 + 1 + 1) / 6 = 3/4;
    # within samples: d(A, C) = 1 in 4 ordered pairs, d(C, C) = 0 -> 4 / 9 with, 4 / 6 without the diagonal;
    # within experts: d(A, B) = 1/2 in 2 ordered pairs -> 1/4 with, 1/2 without
    experts, samples = stack(A, B), stack(A, C, C)
    assert generalised_energy_distance(experts, samples) == pytest.approx(3 / 2 - 4 / 9 - 1 / 4)
    assert generalised_energy_distance(experts, samples, diagonal=False) == pytest.approx(3 / 2 - 2 / 3 - 1 / 2)
    # one sample has no pair: its within term is 0; cross d(A, A) = 0, d(A, B) = 1/2 -> 1/4
    assert generalised_energy_distance(experts, stack(A), diagonal=False) == pytest.approx(1 / 2 - 0 - 1 / 2)


def pixels(*indices):
    """Masks of 16 pixels (4 x 4), each marking the one pixel named."""
    masks = np.zeros((len(indices), 16), dtype=bool)
    masks[np.arange(len(indices)), list(indices)] = True
    return masks.reshape(len(indices), 4, 4)


@pytest.mark.parametrize("count", [2, 3, 8])
def test_the_published_ged_depends_on_the_sample_count_and_the_u_statistic_does_not(count):
    """Every mask one pixel of its own (all distances 1), 3 experts: the model is the same whatever it
    draws, but the V-statistic's zero diagonal is 1/m of the samples' diversity term, so its GED is
    2 - (1 - 1/m) - (1 - 1/3) = 1/m + 1/3; without the diagonal 2 - 1 - 1 = 0 for every count."""
    experts, samples = pixels(8, 9, 10), pixels(*range(count))
    assert generalised_energy_distance(experts, samples) == pytest.approx(1 / count + 1 / 3)
    assert generalised_energy_distance(experts, samples, diagonal=False) == pytest.approx(0.0, abs=1e-12)


def test_hungarian_iou_of_the_first_n_samples():
    # experts {A, B}; samples {A, B, C}: the first 2 samples match the experts exactly -> 1;
    # all three against the experts (lcm 6) must also match C -> lower
    metrics = case_metrics(np.full((2, 2), 0.5), stack(A, B), stack(A, B, C))
    assert metrics["hungarian_iou_n"] == pytest.approx(1.0)
    assert metrics["hungarian_iou"] < 1.0 and metrics["samples"] == 3 and metrics["experts"] == 2
    fewer = case_metrics(np.full((2, 2), 0.5), stack(A, B, C), stack(A, B))  # 2 samples, 3 experts
    assert fewer["hungarian_iou_n"] is None and fewer["hungarian_iou"] is not None
    # the common count is the dataset's experts: a case that lacks one (prostate case09) still matches 3
    lacking = case_metrics(np.full((2, 2), 0.5), stack(A, B), stack(A, B, C), common_count=3)
    assert lacking["hungarian_iou_n"] == pytest.approx(lacking["hungarian_iou"]) and lacking["experts"] == 2
    short = case_metrics(np.full((2, 2), 0.5), stack(A, B), stack(A, B), common_count=3)
    assert short["hungarian_iou_n"] is None


def test_mean_metrics_records_the_counts_and_tolerates_folds_made_before_them():
    full = case_metrics(np.full((2, 2), 0.5), stack(A, B), stack(A, C))
    five = {**full, "experts": 5, "samples": 6}
    means = mean_metrics({"case01": full, "case09": five})
    assert means["samples"] == [2, 6] and means["experts"] == [2, 5]
    legacy = {k: v for k, v in full.items() if k in ("ged", "hungarian_iou", "ece", "brier", "soft_dice")}
    mixed = mean_metrics({"case01": full, "case02": legacy})
    assert mixed["ged_u"] is None and mixed["samples"] is None and mixed["ged"] == pytest.approx(full["ged"])
