"""Ensembling: the members' probability maps are averaged, not their masks nor their logits.

One mechanism for every ensemble this project builds: the gather step averages a run's networks (each
expert's network, each head), and ``python -m common.predict`` averages the same networks, or every
fold's, on new images. Probabilities, not logits, for two reasons. A QUBIQ map is read at thresholds
0.1 ... 0.9 against the fraction of experts who marked a pixel, and the mean of the members'
probabilities is the fraction of "votes" the ensemble gives; the sigmoid of the mean logit is not
(for two members at 0.99 and 0.01 it is 0.5 either way, but for 0.9, 0.9 and 0.01, two votes of
three, the mean is 0.60 and the sigmoid of the mean logit 0.48: one confident member outvotes two),
so it moves maps across exactly the thresholds the score reads. And a member's map is all that the
gather step has on disk. (nnU-Net averages logits within one prediction and probabilities when it
ensembles folders; here there is one rule.)

Maps are added one member at a time, so that only running sums per case are held in memory however
many members there are.
"""

from __future__ import annotations

import numpy as np


class MapAverager:
    """The per-case mean of the members' probability maps, and their spread, accumulated member by member."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._squares: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    def add(self, case_id: str, probability: np.ndarray) -> None:
        probability = np.asarray(probability, dtype=np.float64)
        if case_id not in self._sums:
            self._sums[case_id] = np.zeros_like(probability)
            self._squares[case_id] = np.zeros_like(probability)
            self._counts[case_id] = 0
        elif self._sums[case_id].shape != probability.shape:
            raise ValueError(
                f"case {case_id}: a map of shape {probability.shape} cannot join maps of shape "
                f"{self._sums[case_id].shape}"
            )
        self._sums[case_id] += probability
        self._squares[case_id] += probability * probability
        self._counts[case_id] += 1

    def _check_counts(self) -> None:
        counts = set(self._counts.values())
        if len(counts) > 1:
            raise ValueError(f"cases have different numbers of members: {dict(sorted(self._counts.items()))}")

    def mean(self) -> dict[str, np.ndarray]:
        """Per case the mean map as float32; every case must have the same number of members."""
        self._check_counts()
        return {case_id: (total / self._counts[case_id]).astype(np.float32) for case_id, total in self._sums.items()}

    def std(self) -> dict[str, np.ndarray]:
        """Per case the members' per-pixel standard deviation (population, ``ddof=0``) as float32.

        From the running sums, ``sqrt(E[p^2] - E[p]^2)`` in float64; rounding can make the difference a
        hair below zero where all members agree, so it is clipped at 0.
        """
        self._check_counts()
        spread = {}
        for case_id, total in self._sums.items():
            count = self._counts[case_id]
            mean = total / count
            spread[case_id] = np.sqrt(np.maximum(self._squares[case_id] / count - mean * mean, 0.0)).astype(np.float32)
        return spread

    def members(self, case_id: str) -> int:
        return self._counts.get(case_id, 0)

    def pop(self, case_id: str) -> None:
        """Forget a case (a prediction loop that has written its maps)."""
        for table in (self._sums, self._squares, self._counts):
            table.pop(case_id, None)


def binary_entropy_bits(probability: np.ndarray) -> np.ndarray:
    """``-p log2 p - (1 - p) log2 (1 - p)`` per pixel as float32, with ``0 log 0 = 0``: 0 where the map is
    certain (0 or 1), 1 bit at 0.5."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0) + np.where(
            q > 0, -q * np.log2(np.where(q > 0, q, 1.0)), 0.0
        )
    return terms.astype(np.float32)
