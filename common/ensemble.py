"""Ensembling: the experts' networks' probability maps are averaged, not their masks (as in nnU-Net)."""

from __future__ import annotations

import numpy as np


def average_maps(maps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per case, the mean of the members' probability maps.

    Args:
        maps: one ``{case_id: map}`` per member; every member must cover the same cases with maps of
            the same shape.
    """
    if not maps:
        raise ValueError("no member to average")
    cases = list(maps[0])
    for index, member in enumerate(maps[1:], start=2):
        if set(member) != set(cases):
            raise ValueError(f"member {index} covers cases {sorted(member)}, member 1 covers {sorted(cases)}")
    averaged = {}
    for case in cases:
        shapes = {m[case].shape for m in maps}
        if len(shapes) != 1:
            raise ValueError(f"case {case}: members' maps have different shapes {sorted(shapes)}")
        averaged[case] = np.mean([m[case] for m in maps], axis=0, dtype=np.float64).astype(np.float32)
    return averaged
