"""Agreement levels as classes: the targets, the map rules, the samples, augmentation and the loss, by hand."""

import numpy as np
import pytest
from helpers import gradient

from common.data.prepared import PreparedCase
from common.strategies import AGREEMENT_RULES, agreement_levels, agreement_maps, strategy
from common.training.augmentation import apply_transforms
from common.training.losses import AgreementLoss, agreement_dice

LEARNER = strategy("agreement-classes")


def row(*values) -> np.ndarray:
    """A 1 x N mask as the prepared cases hold it, ``(1, N, 1)``."""
    return np.array(values, np.float32).reshape(1, -1, 1)


def levels_of(masks, experts) -> list[int]:
    """Each pixel's level: the sum of its nested level masks."""
    return agreement_levels(masks, tuple(experts)).sum(axis=-1).ravel().astype(int).tolist()


# (what, masks by expert, the chosen experts, each pixel's level)
TARGETS = [
    (
        "3 experts: the level is how many marked the pixel",
        {1: row(1, 1, 0, 0), 2: row(1, 0, 1, 0), 3: row(1, 1, 0, 0)},
        (1, 2, 3),
        [3, 2, 1, 0],
    ),
    (
        "--experts 1,3: only the chosen experts count, M = 2",
        {1: row(1, 1, 0, 0), 2: row(1, 1, 1, 1), 3: row(1, 0, 1, 0)},
        (1, 3),
        [2, 1, 1, 0],
    ),
    (
        "6 experts, expert 6 missing: the level nearest 6 x marked / 5",
        {e: row(*(int(p < 6 - e) for p in range(6))) for e in (1, 2, 3, 4, 5)},
        (1, 2, 3, 4, 5, 6),
        [6, 5, 4, 2, 1, 0],  # marked 5, 4, 3, 2, 1, 0 of 5: 6.0, 4.8, 3.6, 2.4, 1.2, 0 rounded
    ),
]


@pytest.mark.parametrize("what, masks, experts, expected", TARGETS, ids=[t[0] for t in TARGETS])
def test_agreement_targets_by_hand(what, masks, experts, expected):
    assert levels_of(masks, experts) == expected
    nested = agreement_levels(masks, experts)
    assert nested.shape == (1, 4 if len(expected) == 4 else 6, len(experts))
    assert np.all(np.diff(nested, axis=-1) <= 0)  # level >= k + 1 lies inside level >= k


def test_missing_expert_levels_agree_with_the_consensus_at_more_thresholds():
    """The stated reason for the nearest level: count the thresholds 0.1 .. 0.9 where level / 6 and the
    5 present experts' mean fall on the same side, for each possible count of 5."""
    thresholds = np.round(np.arange(1, 10) / 10, 1)
    for marked in range(6):
        level = levels_of({e: row(int(e <= marked)) for e in range(1, 6)}, range(1, 7))[0]
        disagree = int(np.sum((marked / 5 >= thresholds) != (level / 6 >= thresholds)))
        assert disagree <= 1
        if marked in (3, 4):
            assert disagree == 0


def test_targets_of_cases():
    cases = [
        PreparedCase(None, np.zeros((1, 4, 1), np.float32), {1: row(1, 1, 0, 0), 2: row(1, 0, 0, 0)}, None, None),
        PreparedCase(None, np.ones((1, 4, 1), np.float32), {3: row(0, 0, 0, 0)}, None, None),
    ]
    (network,) = LEARNER.networks([1, 2], seed=0)
    (images, targets), available = LEARNER.targets(cases, network)  # the second case has neither expert
    assert images.shape == (1, 1, 4, 1) and available is None
    assert targets[0, 0].tolist() == [[1, 1], [1, 0], [0, 0], [0, 0]]
    assert network.saved == ("class0", "class1", "class2") and LEARNER.output_channels(2) == 3


def test_class_targets_survive_augmentation():
    """Nested level masks warped by one transform stay nested, so their sum is again a level (0..M)."""
    rng = np.random.default_rng(0)
    count = rng.integers(0, 4, (3, 16, 16))  # 3 experts' agreement, blotchy
    nested = np.stack([count >= k for k in (1, 2, 3)], axis=-1).astype(np.float32)
    images = rng.normal(size=(3, 16, 16, 1)).astype(np.float32)
    angle, shift = np.deg2rad(17.0), 2.5
    transforms = np.array(
        [[np.cos(angle), -np.sin(angle), shift, np.sin(angle), np.cos(angle), -shift, 0, 0]] * 3, np.float32
    )
    _, warped = apply_transforms(images, nested, transforms)
    assert set(np.unique(warped)) <= {0.0, 1.0}
    assert np.all(np.diff(warped, axis=-1) <= 0)
    assert not np.array_equal(warped, nested)  # it did move
    identity = np.array([[1, 0, 0, 0, 1, 0, 0, 0]] * 3, np.float32)
    assert np.array_equal(apply_transforms(images, nested, identity)[1], nested)


# class probabilities of 3 pixels, M = 3: p0 .. p3 (the third has P(level >= 2) = 1/2 exactly)
PROBABILITIES = [
    np.array([0.1, 0.4, 0.5]),
    np.array([0.5, 0.05, 0.0]),
    np.array([0.0, 0.3, 0.5]),
    np.array([0.4, 0.25, 0.0]),
]


def test_map_rules_by_hand():
    maps = agreement_maps(PROBABILITIES)
    assert tuple(maps) == AGREEMENT_RULES
    # argmax: pixel 1 class 1, pixel 2 class 0, pixel 3 a tie of classes 0 and 2: the first
    assert maps["argmax"] == pytest.approx([1 / 3, 0.0, 0.0])
    # expectation: (0.5 + 0 + 1.2) / 3, (0.05 + 0.6 + 0.75) / 3, (0 + 1.0 + 0) / 3
    assert maps["expectation"] == pytest.approx([1.7 / 3, 1.4 / 3, 1 / 3])
    # P(level >= 1, 2, 3): (0.9, 0.4, 0.4) -> median 1; (0.6, 0.55, 0.25) -> 2; (0.5, 0.5, 0) -> 2 (1/2 counts)
    assert maps["median"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_median_rule_is_threshold_consistent():
    """map >= t exactly where P(level >= tM) >= 1/2, at every QUBIQ threshold (M = 3)."""
    rng = np.random.default_rng(1)
    probabilities = list(rng.dirichlet(np.ones(4), size=500).T)
    median = agreement_maps(probabilities)["median"]
    at_least = np.cumsum(np.array(probabilities)[::-1], axis=0)[::-1]  # P(level >= k), k = 0 .. 3
    for t in np.arange(1, 10) / 10:
        k = int(np.ceil(t * 3 - 1e-9))
        assert np.array_equal(median >= t - 1e-9, at_least[k] >= 0.5)


def test_member_map_is_the_chosen_rule_and_the_samples_are_the_nested_levels():
    (network,) = LEARNER.networks([1, 2, 3], seed=0)
    outputs = [p.reshape(1, 3) for p in PROBABILITIES]
    (member,) = LEARNER.member_maps(network, outputs)
    assert member.ravel() == pytest.approx(agreement_maps(outputs)[LEARNER.map_rule].ravel())
    samples = LEARNER.samples(network, outputs)
    assert [s.ravel().tolist() for s in samples] == [[True, True, True], [False, True, True], [False, False, False]]
    assert LEARNER.sample_names(network) == [f"agreement-classes level>={k}" for k in (1, 2, 3)]
    assert not LEARNER.members_are_experts and LEARNER.rule_maps(network, outputs).keys() == set(AGREEMENT_RULES)


def batch(levels, probabilities):
    """One image of 1 x N pixels: nested level masks (N, M) and class probabilities (N, M + 1)."""
    return (
        np.array(levels, np.float32).reshape(1, 1, len(levels), -1),
        np.array(probabilities, np.float32).reshape(1, 1, len(probabilities), -1),
    )


@pytest.mark.backend
def test_agreement_loss_by_hand():
    # 2 pixels, M = 2: pixel 1 level 2, pixel 2 level 0
    y_true, y_pred = batch([[1, 1], [0, 0]], [[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    # P(>=1) = (0.8, 0.4), P(>=2) = (0.5, 0.0); Dice(>=1) = 2 * 0.8 / (1.2 + 1) ; Dice(>=2) = 2 * 0.5 / (0.5 + 1)
    dice = (1 - 1.6 / 2.2 + 1 - 1.0 / 1.5) / 2
    assert float(AgreementLoss(ce_weight=0.0, smooth=0.0)(y_true, y_pred)) == pytest.approx(dice, abs=1e-6)
    # plus the classes' cross-entropy, mean over pixels: -(log 0.5 + log 0.6) / 2
    both = dice - (np.log(0.5) + np.log(0.6)) / 2
    assert float(AgreementLoss(smooth=0.0)(y_true, y_pred)) == pytest.approx(both, abs=1e-6)
    assert float(AgreementLoss(0.5, smooth=0.0)(y_true, y_pred)) == pytest.approx((dice + both) / 2, abs=1e-6)
    # the hard Dice of each level at 0.5: level >= 1 {1} vs {1}: 1; level >= 2 {1} vs {1}: 1
    assert float(agreement_dice(y_true, y_pred)[0]) == pytest.approx(1.0)


@pytest.mark.backend
def test_agreement_loss_is_zero_at_the_target_and_pushes_towards_it():
    y_true, _ = batch([[1, 1], [1, 0], [0, 0]], [[0, 0, 1]] * 3)
    exact = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32).reshape(1, 1, 3, 3)
    assert float(AgreementLoss(smooth=0.0)(y_true, exact)) == pytest.approx(0.0, abs=1e-5)
    blurred = np.full((1, 1, 3, 3), 1 / 3, np.float32)
    grad = gradient(lambda p: AgreementLoss(ce_weight=0.0, smooth=1.0)(y_true, p), blurred).reshape(3, 3)
    assert grad[0, 2] < 0 and grad[2, 0] < grad[2, 2]  # more of the true class lowers the loss


def test_agreement_loss_refuses_wrong_targets_and_names():
    y_true, y_pred = batch([[1, 1, 0]], [[0.2, 0.3, 0.5]])
    with pytest.raises(ValueError, match="one level mask per class above 0 \\(2\\), got 3"):
        AgreementLoss()(y_true, y_pred)
    with pytest.raises(ValueError, match="ce_weight must be >= 0"):
        AgreementLoss(-1.0)
    clone = AgreementLoss.from_config(AgreementLoss(0.25, 0.5).get_config())
    assert (clone.ce_weight, clone.smooth) == (0.25, 0.5)


def test_agreement_classes_refuses_another_loss():
    from common.spec import ConfigError, Settings

    with pytest.raises(ConfigError, match="agreement-classes trains with the soft Dice .* plus the classes' cross"):
        Settings(input_size=16, depth=2, strategy="agreement-classes", loss="dice+bce")
