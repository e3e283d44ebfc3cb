"""Ensembling: the experts' networks' probability maps are averaged, not their masks (as in nnU-Net).

Maps are added one member at a time, so that only one running sum per case is held in memory however
many experts there are.
"""

from __future__ import annotations

import numpy as np


class MapAverager:
    """The per-case mean of the members' probability maps, accumulated member by member."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    def add(self, case_id: str, probability: np.ndarray) -> None:
        probability = np.asarray(probability, dtype=np.float64)
        if case_id not in self._sums:
            self._sums[case_id] = np.zeros_like(probability)
            self._counts[case_id] = 0
        elif self._sums[case_id].shape != probability.shape:
            raise ValueError(
                f"case {case_id}: a map of shape {probability.shape} cannot join maps of shape "
                f"{self._sums[case_id].shape}"
            )
        self._sums[case_id] += probability
        self._counts[case_id] += 1

    def mean(self) -> dict[str, np.ndarray]:
        """Per case the mean map as float32; every case must have the same number of members."""
        counts = set(self._counts.values())
        if len(counts) > 1:
            raise ValueError(f"cases have different numbers of members: {dict(sorted(self._counts.items()))}")
        return {case_id: (total / self._counts[case_id]).astype(np.float32) for case_id, total in self._sums.items()}
