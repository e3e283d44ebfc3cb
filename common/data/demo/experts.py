"""The simulated experts: a consistent bias per expert for the whole dataset, and each expert's masks
of a case drawn from the true shapes with that bias and a smooth random boundary deformation.
"""

from __future__ import annotations

import numpy as np

from common.data.demo.shapes import F32, Design, Drawn, per_task, smooth_field
from common.spec import DatasetSpec


def expert_biases(spec: DatasetSpec, rng: np.random.Generator) -> np.ndarray:
    """Each expert's consistent tendency, about -1..1 (negative: draws tighter), for the whole dataset."""
    n = spec.experts
    z = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    z = rng.permutation(z) + rng.normal(0, 0.15, n)
    return np.clip(z, -1.2, 1.2)


def expert_masks(
    drawn: Drawn, design: Design, experts: list[int], z: np.ndarray, rng: np.random.Generator, shape, scale: float
) -> dict[int, dict[int, np.ndarray]]:
    """``{task: {expert: bool mask}}`` from the true shapes, the biases ``z`` and smooth deformations."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for t, truth in enumerate(drawn.truths, start=1):
        bias_px = per_task(design.bias_px, t) * scale
        amp = per_task(design.deform_px, t) * scale * (0.7 + 0.8 * drawn.difficulty)
        out[t] = {}
        for e in experts:
            mask = np.zeros(shape, bool)
            if truth is not None and truth.f.size:
                deform = smooth_field(rng, truth.f.shape, design.deform_k)
                mask[truth.win] = truth.f + F32(bias_px * z[e - 1]) + F32(amp) * deform > 0
            if design.nested and t > 1:
                mask &= out[t - 1][e]
            out[t][e] = mask
    return out
