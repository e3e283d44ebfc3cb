"""The QUBIQ score on tiny hand-computed cases."""

import numpy as np
import pytest

from common.evaluation.scoring import (
    THRESHOLDS,
    case_score,
    consensus_at,
    dice,
    score_cases,
    score_slices,
    slice_threshold_dice,
    threshold_dice,
)


def stack(*masks):
    """Expert masks written as nested lists -> bool (experts, rows, cols)."""
    return np.array(masks, dtype=bool)


def votes(counts, n):
    """Masks of n experts such that voxel x is marked by counts[x] of them."""
    counts = np.asarray(counts)
    return np.stack([counts > e for e in range(n)])


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([[0, 0], [0, 0]], [[0, 0], [0, 0]], 1.0),  # both empty: right, not NaN
        ([[1, 0], [0, 0]], [[0, 0], [0, 0]], 0.0),
        ([[1, 1], [0, 0]], [[1, 0], [0, 0]], 2 / 3),
        ([[1, 1], [1, 1]], [[1, 1], [1, 1]], 1.0),
        ([[1, 1], [0, 0]], [[0, 0], [1, 1]], 0.0),
    ],
)
def test_dice_table(a, b, expected):
    assert dice(np.array(a), np.array(b)) == pytest.approx(expected)


def test_consensus_is_exact_at_k_over_n():
    masks = votes([[3, 5], [0, 2]], n=5)  # 3/5 = 0.6 exactly
    # the naive float threshold misses it: 0.1 * 6 == 0.6000000000000001 > 0.6
    assert not (masks.mean(axis=0)[0, 0] >= 0.1 * 6)
    assert consensus_at(masks, 6)[0, 0]
    assert not consensus_at(masks, 7)[0, 0]
    assert consensus_at(masks, 4)[1, 1]  # 2/5 = 0.4 at t = 0.4
    assert not consensus_at(masks, 5)[1, 1]


@pytest.mark.parametrize("n", [3, 5, 6, 7, 10])  # float32(0.7) < 0.7 with 10
def test_perfect_prediction_scores_one_even_in_float32(n):
    counts = np.arange(n + 1).reshape(1, -1).repeat(2, axis=0)  # every fraction k/n appears
    masks = votes(counts, n)
    # stored as float32 and read back as float64 (as nibabel's get_fdata does): float32(0.7) < 0.7
    prediction = (counts / n).astype(np.float32).astype(np.float64)
    assert np.array_equal(threshold_dice(prediction, masks), np.ones(9))
    assert case_score(prediction, masks) == 1.0


def test_five_experts_prediction_just_below_boundary():
    # voxel A: 3 of 5 experts (0.6), voxel B: 5 of 5
    masks = votes([[3, 5]], n=5)
    exact = threshold_dice(np.array([[0.6, 1.0]]), masks)
    assert np.array_equal(exact, np.ones(9))
    below = threshold_dice(np.array([[0.55, 1.0]]), masks)
    # t <= 0.5: both {A, B}; t = 0.6: prediction {B}, truth {A, B} -> 2/3; t >= 0.7: both {B}
    expected = [1, 1, 1, 1, 1, 2 / 3, 1, 1, 1]
    assert below == pytest.approx(expected)
    assert case_score(np.array([[0.55, 1.0]]), masks) == pytest.approx((8 + 2 / 3) / 9)


def test_six_experts_half_and_two_thirds():
    # voxel A: 3 of 6 (0.5), voxel B: 4 of 6 (0.667), voxel C: 6 of 6
    masks = votes([[3, 4, 6]], n=6)
    truth_sizes = [int(consensus_at(masks, j).sum()) for j in range(1, 10)]
    assert truth_sizes == [3, 3, 3, 3, 3, 2, 1, 1, 1]
    # a prediction of 0.5 everywhere: foreground for t <= 0.5 only
    flat = threshold_dice(np.full((1, 3), 0.5), masks)
    # t <= 0.5: 3 vs 3 -> 1; t = 0.6: empty vs {B, C} -> 0; t >= 0.7: empty vs {C} -> 0
    assert flat == pytest.approx([1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_empty_prediction_against_a_weak_minority():
    # one voxel marked by 1 of 3 experts: truth non-empty for t <= 1/3, empty above
    masks = votes([[1, 0], [0, 0]], n=3)
    scores = threshold_dice(np.zeros((2, 2)), masks)
    assert scores == pytest.approx([0, 0, 0, 1, 1, 1, 1, 1, 1])
    assert case_score(np.zeros((2, 2)), masks) == pytest.approx(6 / 9)


def test_all_masks_empty():
    masks = np.zeros((3, 2, 2), dtype=bool)
    assert case_score(np.zeros((2, 2)), masks) == 1.0
    # predicting anything at all is wrong at every threshold it reaches
    assert threshold_dice(np.full((2, 2), 0.45), masks) == pytest.approx([0, 0, 0, 0, 1, 1, 1, 1, 1])


def test_all_wrong():
    masks = stack([[1, 1], [0, 0]], [[1, 1], [0, 0]])
    prediction = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert case_score(prediction, masks) == 0.0


def test_uint8_masks_are_accepted():
    masks = votes([[2, 0]], n=2).astype(np.uint8)
    assert case_score(np.array([[1.0, 0.0]]), masks) == 1.0


@pytest.mark.parametrize(
    "prediction, masks, message",
    [
        (np.zeros((2, 2)), np.zeros((1, 2, 3), bool), "differs"),
        (np.zeros((2, 2)), np.zeros((2, 2), bool), "stacked"),
        (np.full((2, 2), 1.5), np.zeros((1, 2, 2), bool), r"\[0, 1\]"),
        (np.full((2, 2), np.nan), np.zeros((1, 2, 2), bool), "NaN"),
        (np.zeros((2, 2)), np.full((1, 2, 2), 255, np.uint8), "binary"),
    ],
)
def test_bad_inputs(prediction, masks, message):
    with pytest.raises(ValueError, match=message):
        threshold_dice(prediction, masks)


def test_score_cases_means():
    masks = {"case01": votes([[1, 0]], n=1), "case02": votes([[1, 0]], n=1)}
    predictions = {"case01": np.array([[1.0, 0.0]]), "case02": np.array([[0.0, 1.0]])}
    result = score_cases(predictions, masks)
    assert result["cases"] == ["case01", "case02"]
    assert result["thresholds"] == list(THRESHOLDS)
    assert result["per_case"] == {"case01": 1.0, "case02": 0.0}
    assert result["per_threshold"] == [0.5] * 9
    assert result["score"] == 0.5


def test_score_cases_needs_the_same_cases():
    with pytest.raises(ValueError, match="missing"):
        score_cases({"case01": np.zeros((1, 1))}, {"case02": np.zeros((1, 1, 1), bool)})


def test_float32_and_float64_copies_score_identically():
    # float32(j/10 - 1e-6) lies just below the float64 threshold for j = 3, 4, 5, 7, 8: numpy 2 compares a
    # float32 array with a Python float in float32 (True) but its float64 copy in float64 (False)
    near = np.array([[np.float32(j / 10 - 1e-6) for j in range(1, 10)]], dtype=np.float32)
    assert (near >= 0.5 - 1e-6)[0, 4] and not (near.astype(np.float64) >= 0.5 - 1e-6)[0, 4]
    masks = votes([[1, 1, 1, 0, 0, 0, 1, 0, 1]], n=1)
    as32 = threshold_dice(near, masks)
    assert np.array_equal(as32, threshold_dice(near.astype(np.float64), masks))
    assert case_score(near, masks) == case_score(near.astype(np.float64), masks)


# --- volumes: one Dice per volume and threshold, and the per-slice figure ------------------------------------------

# Two raters, a volume of 2 slices of 1 x 2 voxels: rater 1 marks both voxels of slice 0, rater 2 the first;
# the consensus is [1, 0.5] in slice 0 and empty in slice 1.
VOLUME_MASKS = np.array([[[[1, 1]], [[0, 0]]], [[[1, 0]], [[0, 0]]]], dtype=bool)
VOLUME_MAP = np.array([[[0.9, 0.3]], [[0.0, 0.2]]])


def test_a_volume_is_scored_with_one_dice_per_threshold_over_all_its_voxels():
    # t 0.1, 0.2: prediction {s0a, s0b, s1b} vs truth {s0a, s0b}: 4/5; t 0.3: 1; t 0.4, 0.5: {s0a} vs
    # {s0a, s0b}: 2/3; t 0.6 .. 0.9: {s0a} vs {s0a}: 1
    expected = [0.8, 0.8, 1.0, 2 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]
    assert np.allclose(threshold_dice(VOLUME_MAP, VOLUME_MASKS), expected)
    assert case_score(VOLUME_MAP, VOLUME_MASKS) == pytest.approx(np.mean(expected))


def test_the_per_slice_figure_is_the_mean_over_slices_of_each_slices_dice():
    # slice 1 is empty in the truth: Dice 0 where the map marks its 0.2 voxel (t <= 0.2), else both empty: 1
    expected = [0.5, 0.5, 1.0, 5 / 6, 5 / 6, 1.0, 1.0, 1.0, 1.0]
    assert np.allclose(slice_threshold_dice(VOLUME_MAP, VOLUME_MASKS), expected)
    scored = score_slices({"v": VOLUME_MAP}, {"v": VOLUME_MASKS})
    assert scored["score"] == pytest.approx(np.mean(expected)) and scored["per_case"]["v"] == pytest.approx(0.85185185)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.0, 1.0),  # an empty volume, an empty map: right at every threshold
        (0.5, 4 / 9),  # marked at t <= 0.5 where nothing is: Dice 0 five times
        (0.95, 0.0),
    ],
)
def test_an_empty_volume(value, expected):
    masks = np.zeros((2, 3, 2, 2), dtype=bool)
    prediction = np.zeros((3, 2, 2))
    prediction[1, 0, 0] = value
    assert case_score(prediction, masks) == pytest.approx(expected)
    assert score_slices({"v": prediction}, {"v": masks})["score"] == pytest.approx(
        1 - (1 - expected) / 3  # the two empty slices score 1 at every threshold
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.5, 1.0),  # the consensus is 1/2 where rater 1 marked: foreground at t <= 0.5 exactly, as the map
        (0.55, 1.0),
        (0.7, 7 / 9),  # marked at t = 0.6 and 0.7, where the consensus (1/2) is not
        (0.45, 8 / 9),  # not marked at t = 0.5, where the consensus is
    ],
)
def test_a_volume_with_one_empty_rater(value, expected):
    masks = np.zeros((2, 2, 3, 3), dtype=bool)
    masks[0, 1, 1, 1] = True  # rater 2 marked nothing in the whole volume
    prediction = np.zeros((2, 3, 3), dtype=np.float32)
    prediction[1, 1, 1] = value
    assert case_score(prediction, masks) == pytest.approx(expected)


def test_the_per_slice_figure_needs_a_volume():
    with pytest.raises(ValueError, match="needs a volume"):
        slice_threshold_dice(np.zeros((2, 2)), np.zeros((1, 2, 2), dtype=bool))
