"""Averaging the experts' maps."""

import numpy as np
import pytest

from common.evaluation.ensemble import MapAverager


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
