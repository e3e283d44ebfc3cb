"""Metrics of a predicted distribution against several experts' masks, beside the QUBIQ score.

The QUBIQ score (:mod:`common.evaluation.scoring`) thresholds the mean of the experts' masks and the predicted
map at nine levels and averages Dice. It judges one map against the consensus, but not whether a
model that draws *samples* reproduces the experts as a set, nor whether its probabilities mean what
they say. The metrics here fill those gaps:

- **Generalised energy distance** (:func:`generalised_energy_distance`), as reported by Kohl et al.
  2018 and Baumgartner et al. 2019, with ``d = 1 - IoU``. It compares the *set* of model samples with
  the *set* of expert masks: it grows when samples are far from the experts (fidelity) and shrinks
  when the samples differ from each other as much as the experts do (diversity), so a model that
  always draws the consensus is penalised on an ambiguous case. Lower is better; 0 for identical sets.
- **Hungarian-matched IoU** (:func:`hungarian_iou`), usually attributed to Kohl et al. 2019 (the
  Hierarchical Probabilistic U-Net) and used e.g. by Kassapis et al. 2021: the mean IoU of an optimal
  one-to-one matching between samples and experts. It rewards covering every expert's opinion with
  some sample. Higher is better; 1 for sets that are permutations of each other. (PHiSeg, Baumgartner
  et al. 2019, reports the GED and a sample-variance NCC; its code holds no Hungarian matching.)
- **Expected calibration error** (:func:`expected_calibration_error`, Guo et al. 2017) and the
  **Brier score** (:func:`brier_score`, Brier 1950) judge the predicted map against the mean expert
  mask, read as the probability that an expert marks the pixel: are pixels predicted at 0.3 marked
  by about 30 % of the experts? Lower is better.
- **Soft Dice** (:func:`soft_dice`) compares the predicted map with the mean expert mask without any
  threshold. Higher is better, but it reaches 1 only where the experts all agree: a perfect map of a
  case with disagreement scores below 1.

**Sample counts.** GED and the Hungarian IoU depend on how many samples a model gives, not only on
how good they are: with the published estimator (every ordered pair, self-pairs included) the diversity
term of a 3-sample ensemble has a zero diagonal that is a third of it, so its GED is higher than a
16-sample model's drawn from the same distribution. So each case records its sample count ``m`` and its
experts ``n``, and both figures are also given at a count that does not favour either method:

- ``ged_u``: GED **without the diagonal** (the U-statistic: the within-set means over pairs ``i != j``,
  :func:`generalised_energy_distance` with ``diagonal=False``), an unbiased estimate whatever ``m`` is
  (a set of one mask has no pair, and its within-set term is 0; being unbiased, it can be slightly
  below 0 for close sets);
- ``hungarian_iou_n``: the Hungarian IoU of the **first n samples**, ``n`` the dataset's experts (the
  caller's ``common_count``; by default the case's), so every method is matched with the same number of
  samples; ``None`` for a model with fewer samples than that.

:func:`case_metrics` computes all of :data:`METRICS` for one case; those that need samples are ``None``
for a model that gives a single map and no samples (e.g. a network trained on soft labels): they do not
apply, and no samples are invented for them. :func:`mean_metrics` averages over cases.

Conventions:

- masks (experts' and samples) may be bool or 0/1 numbers, converted with ``!= 0``; any other value
  is rejected (a soft map passed as a mask would otherwise be silently binarised);
- probability maps must be finite and in [0, 1]; everything is computed in float64;
- the IoU of two empty masks is 1 (they agree), so their distance ``1 - IoU`` is 0, never NaN.

References:

- S. Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018,
  arXiv:1806.05034.
- S. Kohl et al., "A Hierarchical Probabilistic U-Net for Modeling Multi-Scale Ambiguities",
  arXiv:1905.13077, 2019.
- C. F. Baumgartner et al., "PHiSeg: Capturing Uncertainty in Medical Image Segmentation",
  MICCAI 2019, arXiv:1906.04045 (code: github.com/baumgach/PHiSeg-code).
- E. Kassapis et al., "Calibrated Adversarial Refinement for Stochastic Semantic Segmentation",
  ICCV 2021, arXiv:2006.13144 (code: github.com/EliasKassapis/CARSSS).
- C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
- G. W. Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
  Review 78(1), 1950.

This module needs numpy and scipy only (no TensorFlow).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from common.evaluation.scoring import PREDICTION_TOLERANCE

#: The metrics of :func:`case_metrics`, in report order.
METRICS: tuple[str, ...] = ("ged", "ged_u", "hungarian_iou", "hungarian_iou_n", "ece", "brier", "soft_dice")
#: The counts :func:`case_metrics` records beside the metrics: the model's samples ``m`` and the case's experts ``n``.
COUNTS: tuple[str, ...] = ("samples", "experts")
#: Whether a smaller value of each metric is better.
LOWER_IS_BETTER: dict[str, bool] = {
    "ged": True,
    "ged_u": True,
    "hungarian_iou": False,
    "hungarian_iou_n": False,
    "ece": True,
    "brier": True,
    "soft_dice": False,
}
#: How the figures at a common sample count are made (also in ``results.json``).
COMMON_COUNT_RULES: dict[str, str] = {
    "ged_u": "GED without the diagonal: the within-set means over pairs i != j (unbiased for any sample count)",
    "hungarian_iou_n": "Hungarian IoU of the first n samples, n = the dataset's experts (none if fewer samples)",
}
#: The default number of equal-width bins of :func:`expected_calibration_error`.
DEFAULT_BINS = 10


def _mask(values: np.ndarray, name: str) -> np.ndarray:
    """A bool array from bool or 0/1 values (``!= 0``); ValueError for anything else."""
    values = np.asarray(values)
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name} must be binary (0/1 or bool); binarise it first")
    return values != 0


def _stack(values: np.ndarray, name: str) -> np.ndarray:
    """A bool stack of masks ``(count, *image_shape)`` holding at least one mask."""
    masks = _mask(values, name)
    if masks.ndim < 2 or masks.shape[0] < 1:
        raise ValueError(
            f"{name} must be stacked as (count, *image_shape) with at least one mask; got shape {masks.shape}"
        )
    return masks


def _probability(values: np.ndarray, name: str) -> np.ndarray:
    """A float64 map, checked finite and in [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{name} must be in [0, 1]; found values in [{values.min()}, {values.max()}]")
    return values


def _same_shape(a: np.ndarray, b: np.ndarray, what: str, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: {name_a} of shape {a.shape} differs from {name_b} of shape {b.shape}")


def _pixels(prediction: np.ndarray, target: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both maps checked (same shape, finite, in [0, 1]), as float64."""
    prediction = _probability(prediction, "prediction")
    target = _probability(target, "target")
    _same_shape(prediction, target, what, "prediction", "target")
    return prediction, target


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask of the bool stack ``a`` with every mask of ``b``, shape ``(len(a), len(b))``."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    # pixel counts are integers far below 2**53, so these float64 sums are exact
    intersection = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - intersection
    both_empty = union == 0
    return np.where(both_empty, 1.0, intersection / np.where(both_empty, 1.0, union))


def _reference_and_samples(references: np.ndarray, samples: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    references = _stack(references, "references")
    samples = _stack(samples, "samples")
    if references.shape[1:] != samples.shape[1:]:
        raise ValueError(
            f"{what}: references of image shape {references.shape[1:]} (stack {references.shape}) differ from "
            f"samples of image shape {samples.shape[1:]} (stack {samples.shape})"
        )
    return references, samples


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union ``|a & b| / |a | b|`` of two masks of the same shape; 1.0 when both are empty."""
    a = _mask(a, "a")
    b = _mask(b, "b")
    _same_shape(a, b, "iou", "a", "b")
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(a, b).sum()) / union


def generalised_energy_distance(references: np.ndarray, samples: np.ndarray, diagonal: bool = True) -> float:
    """Squared generalised energy distance between the experts' masks and the model's samples.

    As reported by Kohl et al. 2018 and Baumgartner et al. 2019 (the *squared* distance)::

        D^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')],   d = 1 - IoU

    with ``S, S'`` samples and ``Y, Y'`` expert masks. Each expectation is the mean over *all ordered
    pairs*, a mask paired with itself included (it contributes ``d = 0``), as those papers' code does:
    ``E[d(S, S')] = sum_ij d(S_i, S_j) / m^2``. This is the V-statistic, biased towards small values
    for few masks; it is 0 when the two sets are identical. Two empty masks have IoU 1, so ``d = 0``.

    With ``diagonal=False`` the two within-set expectations leave the self-pairs out (the U-statistic):
    ``E[d(S, S')] = sum_{i != j} d(S_i, S_j) / (m (m - 1))``, and the same for the experts; the cross term
    pairs independent draws and keeps every pair. This estimate does not grow as ``m`` shrinks, so it
    compares models that give different numbers of samples; a set of one mask has no pair and its
    within-set term is 0; being unbiased, it can fall slightly below 0 (two identical sets of two masks
    at distance ``d`` give ``-d``).

    Args:
        references: the experts' masks, ``(n, *image_shape)``, bool or 0/1, ``n >= 1``.
        samples: the model's samples, ``(m, *image_shape)``, bool or 0/1, ``m >= 1``.
        diagonal: include the self-pairs (the published estimator) or not.
    """
    references, samples = _reference_and_samples(references, samples, "generalised_energy_distance")
    cross = 1.0 - _iou_matrix(samples, references)
    within_samples = _within(1.0 - _iou_matrix(samples, samples), diagonal)
    within_references = _within(1.0 - _iou_matrix(references, references), diagonal)
    return float(2.0 * cross.mean() - within_samples - within_references)


def _within(distances: np.ndarray, diagonal: bool) -> float:
    """The mean of a square matrix of distances over all pairs, or over ``i != j`` (its diagonal is 0; one
    mask has no such pair: 0)."""
    count = distances.shape[0]
    if not diagonal and count < 2:
        return 0.0
    return float(distances.sum() / (count * count if diagonal else count * (count - 1)))


def hungarian_iou(references: np.ndarray, samples: np.ndarray) -> float:
    """Mean IoU of an optimal one-to-one matching between experts' masks and samples.

    The metric is usually attributed to Kohl et al. 2019 (the Hierarchical Probabilistic U-Net). The
    matching minimises the total ``1 - IoU`` (``scipy.optimize.linear_sum_assignment``). A one-to-one
    matching needs sets of one size. When the counts differ (``n`` experts, ``m`` samples), both sets are
    repeated to their least common multiple ``L = lcm(n, m)``: each expert mask appears ``L / n`` times
    and each sample ``L / m`` times, and the result is the mean IoU over the ``L`` matched pairs. When
    ``m`` is a multiple of ``n`` this is what the code of Kassapis et al. 2021 (CARSSS,
    ``utils/evaluation_utils.py``) does: it repeats the annotations ``m / n`` times and requires ``m`` to
    be a multiple of ``n``. Repeating *both* sets to ``lcm(n, m)``, for any two counts, is this project's
    generalisation. Either way every expert and every sample weighs the same, and a few samples cannot
    score well by matching only the experts they resemble. The assignment costs ``O(L^3)``: keep
    ``lcm(n, m)`` in the hundreds (e.g. ``m`` a multiple of ``n``).

    Args:
        references: the experts' masks, ``(n, *image_shape)``, bool or 0/1, ``n >= 1``.
        samples: the model's samples, ``(m, *image_shape)``, bool or 0/1, ``m >= 1``.
    """
    references, samples = _reference_and_samples(references, samples, "hungarian_iou")
    n, m = references.shape[0], samples.shape[0]
    size = math.lcm(n, m)
    matrix = _iou_matrix(references, samples)
    matrix = np.repeat(np.repeat(matrix, size // n, axis=0), size // m, axis=1)
    rows, cols = linear_sum_assignment(1.0 - matrix)
    return float(matrix[rows, cols].mean())


def _calibration_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each value of ``p`` (float64 in [0, 1]): the number of edges ``b / bins`` (``b >= 1``) that
    it reaches as the score reads it, ``p >= b / bins - PREDICTION_TOLERANCE``, at most ``bins - 1``."""
    edges = np.arange(bins + 1, dtype=np.float64) / bins - PREDICTION_TOLERANCE
    # searchsorted(..., side="right") counts the shifted edges <= p, the first (-tol) always among them
    return np.minimum(np.searchsorted(edges, p, side="right") - 1, bins - 1)


def expected_calibration_error(prediction: np.ndarray, target: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error (Guo et al. 2017) of a probability map against a soft target.

    The pixels are grouped by their prediction into ``bins`` equal-width bins over [0, 1] (10 by
    default): bin ``b`` holds the values that are *at or above* its left edge ``b / bins`` and below the
    next one, "at or above" read as the QUBIQ score reads it, ``p >= b / bins - tol`` with ``tol`` =
    :data:`common.evaluation.scoring.PREDICTION_TOLERANCE` (edges computed as ``b / bins`` in float64). So a map
    stored as float32, whose 0.7 is 0.699999988, puts that pixel in the bin [0.7, 0.8), where the score
    counts it as foreground at t = 0.7, and not in [0.6, 0.7) as a plain comparison would: with 10 bins,
    a pixel's bin is the number of the score's thresholds it reaches. A value more than ``tol`` below an
    edge stays in the lower bin; 0 is in the first bin and 1.0 in the last (there is no bin above it).
    Then::

        ECE = sum_b (n_b / N) |mean(prediction in b) - mean(target in b)|

    where ``n_b`` is the bin's pixel count and ``N`` the case's; empty bins contribute 0. The target is
    the mean expert mask in [0, 1] (the fraction of experts marking each pixel), not a binary label. The
    means use the values as given: the tolerance only chooses the bin.

    All pixels of the case count, and background pixels (predicted near 0, marked by no expert) usually
    dominate ``N``: on images with small structures the ECE is small even for a badly calibrated
    boundary, so compare it between models on the same data, not across datasets.

    Args:
        prediction: the model's map in [0, 1].
        target: the mean expert mask in [0, 1], same shape.
        bins: number of equal-width bins, ``>= 1``.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    prediction, target = _pixels(prediction, target, "expected_calibration_error")
    if prediction.size == 0:
        raise ValueError("expected_calibration_error: no pixel")
    p = prediction.ravel()
    g = target.ravel()
    index = _calibration_bins(p, bins)
    # (n_b / N) |sum_b(p) / n_b - sum_b(g) / n_b| = |sum_b(p) - sum_b(g)| / N, and an empty bin has both sums 0
    gap = np.abs(np.bincount(index, weights=p, minlength=bins) - np.bincount(index, weights=g, minlength=bins))
    return float(gap.sum() / p.size)


def brier_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """Brier score (Brier 1950): the mean over pixels of ``(p - g)^2``, target ``g`` the mean expert mask."""
    prediction, target = _pixels(prediction, target, "brier_score")
    if prediction.size == 0:
        raise ValueError("brier_score: no pixel")
    return float(np.mean((prediction - target) ** 2))


def soft_dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice without thresholds: ``2 sum(p g) / (sum p + sum g)``; 1.0 when both maps are all zero.

    It is 1 only for identical *binary* maps: on a soft target even the prediction equal to it scores
    ``sum(g^2) / sum(g) < 1`` (a pixel at 1/2 counts half), so compare soft Dice between models on the
    same targets rather than against 1.
    """
    prediction, target = _pixels(prediction, target, "soft_dice")
    total = float(prediction.sum() + target.sum())
    if total == 0.0:
        return 1.0
    return float(2.0 * np.sum(prediction * target) / total)


def case_metrics(
    prediction: np.ndarray, references: np.ndarray, samples: np.ndarray | None, common_count: int | None = None
) -> dict[str, float | None]:
    """All of :data:`METRICS` for one case.

    Args:
        prediction: the model's map in [0, 1], e.g. ``(rows, cols)``.
        references: the experts' masks ``(n, rows, cols)``, bool or 0/1; the target of ECE, Brier and
            soft Dice is their mean.
        samples: the model's samples ``(m, rows, cols)``, bool or 0/1, or ``None`` for a model that gives
            one map and no samples: then ``ged`` and ``hungarian_iou`` are ``None`` (they do not apply).
        common_count: how many of the samples (the first) ``hungarian_iou_n`` matches: the dataset's
            experts, the same for every case and method (default: this case's experts).

    Returns:
        each of :data:`METRICS` -> float (or ``None`` as above, and as the module's docstring says for
        ``ged_u`` and ``hungarian_iou_n``), and :data:`COUNTS`: ``samples`` (``m``, or ``None``) and
        ``experts`` (``n``).
    """
    prediction = _probability(prediction, "prediction")
    references = _stack(references, "references")
    if references.shape[1:] != prediction.shape:
        raise ValueError(
            f"case_metrics: prediction of shape {prediction.shape} differs from the references' image shape "
            f"{references.shape[1:]} (stack {references.shape})"
        )
    target = references.mean(axis=0, dtype=np.float64)
    n = int(references.shape[0])
    sampled: dict[str, float | None] = dict.fromkeys(("ged", "ged_u", "hungarian_iou", "hungarian_iou_n"))
    m = None
    if samples is not None:
        samples = _stack(samples, "samples")
        m = int(samples.shape[0])
        sampled["ged"] = generalised_energy_distance(references, samples)
        sampled["hungarian_iou"] = hungarian_iou(references, samples)
        sampled["ged_u"] = generalised_energy_distance(references, samples, diagonal=False)
        first = n if common_count is None else int(common_count)
        if m >= first:
            sampled["hungarian_iou_n"] = hungarian_iou(references, samples[:first])
    return {
        **sampled,
        "ece": expected_calibration_error(prediction, target),
        "brier": brier_score(prediction, target),
        "soft_dice": soft_dice(prediction, target),
        "samples": m,
        "experts": n,
    }


def mean_metrics(per_case: dict[str, dict[str, float | None]]) -> dict[str, float | list[int] | None]:
    """The mean over cases of each of :data:`METRICS`, and the counts of :data:`COUNTS` that occurred.

    A metric that is ``None`` in every case (no samples anywhere) stays ``None``; one that is ``None``
    in some cases only is a ValueError (a mean over part of the cases would not compare with others).
    A metric or count that some case does not hold at all (a fold gathered before it existed) is
    ``None``: it was not computed for every case. The counts are the sorted distinct values over the
    cases (``[3]``, or ``[5, 6]`` where one case lacks an expert), ``None`` without samples.
    """
    if not per_case:
        raise ValueError("mean_metrics: no case")
    for case, metrics in per_case.items():
        unknown = set(metrics) - set(METRICS) - set(COUNTS)
        if unknown:
            raise ValueError(f"mean_metrics: case {case!r} has unknown metrics {sorted(unknown)}; expected {METRICS}")
    means: dict[str, float | list[int] | None] = {}
    for name in METRICS:
        if any(name not in metrics for metrics in per_case.values()):
            means[name] = None
            continue
        missing = [case for case, metrics in per_case.items() if metrics[name] is None]
        if len(missing) == len(per_case):
            means[name] = None
        elif missing:
            raise ValueError(
                f"mean_metrics: {name} is None in cases {missing} but not in the others; score every case the same way"
            )
        else:
            means[name] = float(np.mean(np.array([per_case[c][name] for c in per_case], dtype=np.float64)))
    for name in COUNTS:
        values = {metrics.get(name) for metrics in per_case.values()}
        means[name] = None if None in values else sorted(int(v) for v in values)
    return means
