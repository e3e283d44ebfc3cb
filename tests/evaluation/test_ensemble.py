"""Averaging the experts' maps."""

import numpy as np
import pytest

from common.evaluation.ensemble import MapAverager, binary_entropy_bits


def test_mean_of_maps_per_case():
    averager = MapAverager()
    averager.add("case01", np.array([[0.0, 1.0]]))
    averager.add("case02", np.array([[0.2]]))
    averager.add("case01", np.array([[0.5, 0.0]]))
    averager.add("case02", np.array([[0.6]]))
    mean = averager.mean()
    assert np.allclose(mean["case01"], [[0.25, 0.5]]) and np.allclose(mean["case02"], [[0.4]])
    assert mean["case01"].dtype == np.float32


def test_three_members_of_k_over_n():
    averager = MapAverager()
    for value in (1.0, 1.0, 0.0):
        averager.add("case01", np.full((1, 1), value, np.float32))
    assert averager.mean()["case01"][0, 0] == np.float32(2 / 3)


def test_shape_and_member_mismatches():
    averager = MapAverager()
    averager.add("case01", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(2, 2\)"):
        averager.add("case01", np.zeros((3, 3)))
    averager.add("case01", np.zeros((2, 2)))
    averager.add("case02", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="different numbers of members"):
        averager.mean()


@pytest.mark.parametrize(
    "members, std",
    [
        ([1.0, 0.0], 0.5),  # two members that disagree completely
        ([1.0, 1.0, 0.0], np.sqrt(2 / 9)),  # mean 2/3: ((1/3)^2 * 2 + (2/3)^2) / 3 = 6/27
        ([0.3, 0.3, 0.3], 0.0),  # agreement: exactly 0, never a rounding NaN
        ([0.7], 0.0),
    ],
)
def test_member_spread_is_the_population_std(members, std):
    averager = MapAverager()
    for value in members:
        averager.add("case01", np.full((2, 1), value))
    spread = averager.std()["case01"]
    assert spread.dtype == np.float32 and np.isfinite(spread).all()
    np.testing.assert_allclose(spread, std, atol=1e-7)
    np.testing.assert_allclose(spread, np.std(members, ddof=0), atol=1e-7)


@pytest.mark.parametrize(
    "p, bits",
    [(0.0, 0.0), (1.0, 0.0), (0.5, 1.0), (0.25, 0.8112781244591328), (0.75, 0.8112781244591328)],
)
def test_binary_entropy_in_bits(p, bits):
    # 0.25: -(1/4) log2(1/4) - (3/4) log2(3/4) = 0.5 + 0.75 * 0.41503749927884376
    value = binary_entropy_bits(np.array([[p]], np.float32))
    assert value.dtype == np.float32 and value[0, 0] == pytest.approx(bits, abs=1e-7)


def test_a_case_is_forgotten_once_written():
    averager = MapAverager()
    averager.add("a", np.zeros((1, 1)))
    averager.add("b", np.ones((1, 1)))
    averager.pop("a")
    assert averager.members("a") == 0 and set(averager.mean()) == {"b"}
