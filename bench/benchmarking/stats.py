"""The benchmark's arithmetic on measured figures: summaries, ratios, orders, learning rates, throughput.

Pure functions of numbers (tested in tests/test_benchmark.py), used by the workers and the parent alike.
"""

from __future__ import annotations

import math
import statistics

from bench.benchmarking.settings import LR_REFERENCE


def summarise(samples: list[float]) -> dict:
    """Median, min, max, spread (max - min) and relative spread of a list of figures."""
    values = [float(v) for v in samples if v is not None and math.isfinite(v)]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None, "relative_spread": None}
    median = statistics.median(values)
    low, high = min(values), max(values)
    return {
        "n": len(values),
        "median": median,
        "min": low,
        "max": high,
        "spread": high - low,
        "relative_spread": (high - low) / median if median else None,
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def interleaved_order(variants: list[str], repeats: int) -> list[tuple[int, str]]:
    """Round-robin: repeat 0 of every variant, then repeat 1 of every variant, and so on."""
    return [(r, v) for r in range(repeats) for v in variants]


def scaled_learning_rate(batch: int, rule: str, reference: tuple[int, float] = LR_REFERENCE) -> float:
    """The learning rate for ``batch``: ``lr_ref * (batch / batch_ref)`` (linear) or its square root (sqrt)."""
    ref_batch, ref_lr = reference
    factor = batch / ref_batch
    if rule == "linear":
        return ref_lr * factor
    if rule == "sqrt":
        return ref_lr * math.sqrt(factor)
    raise ValueError(f"unknown learning-rate scaling rule {rule!r}; use 'sqrt' or 'linear'")


def batch_sizes(count: int, batch: int, steps: int) -> list[int]:
    """Sizes of the first ``steps`` batches of a stream of epochs of ``count`` samples (last batch may be short)."""
    per_epoch = [min(batch, count - start) for start in range(0, count, batch)]
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


def segment_throughput(stamps: list[float], sizes: list[int]) -> float | None:
    """Images per second between the end of the first step and the end of the last one."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None
    return sum(sizes[1 : len(stamps)]) / (stamps[-1] - stamps[0])
