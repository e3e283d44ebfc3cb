"""The QUBIQ score: Dice between a probability map and the experts' consensus at nine thresholds.

For one case and one task, with ``n`` expert masks of which ``k(x)`` mark voxel ``x``:

- ground truth at threshold ``t``: ``k(x) / n >= t``;
- prediction at threshold ``t``: ``p(x) >= t``;
- the case score is the mean over ``t = 0.1, 0.2, ..., 0.9`` of Dice between the two, where two empty
  masks have Dice 1 (the prediction is right), never NaN.

Exactness at ``k/n``: thresholds are the fractions ``j/10``, and the ground truth is compared in integers
(``10 k >= j n``), so 3 of 5 experts is foreground at 0.6 (``0.1 * 6`` in floating point is
``0.6000000000000001`` and would silently drop it). A prediction that equals a fraction but was stored
as float32 (``float32(0.7) = 0.69999999``) is compared with a tolerance of :data:`PREDICTION_TOLERANCE`,
far below any difference a network's output means.

Volumes (the 2021 release's pancreas sets) are scored as the challenge states it: one Dice per volume
and threshold over all its voxels, then the mean over thresholds and over volumes; :func:`score_cases`
does exactly that for ``(slices, rows, cols)`` maps. Participants also reported a per-slice figure, the
mean over a volume's slices of each slice's Dice (both empty = 1): :func:`score_slices`, a labelled
secondary figure, never the score.

This module needs numpy only (no TensorFlow), so scoring other tools' output stays fast.
"""

from __future__ import annotations

import numpy as np

#: The thresholds as tenths: t = j / 10 for j in 1..9.
TENTHS: tuple[int, ...] = tuple(range(1, 10))
THRESHOLDS: tuple[float, ...] = tuple(j / 10 for j in TENTHS)
PREDICTION_TOLERANCE = 1e-6


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"dice: masks of different shapes {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def _check(prediction: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # float64 whatever the input: numpy compares float32 with a Python float in float32, which would
    # make the result depend on how a map was stored
    prediction = np.asarray(prediction, dtype=np.float64)
    masks = np.asarray(masks)
    if masks.ndim != prediction.ndim + 1 or masks.shape[0] < 1:
        raise ValueError(
            f"masks must be stacked as (experts, *image_shape) with at least one expert; got masks of shape "
            f"{masks.shape} for a prediction of shape {prediction.shape}"
        )
    if masks.shape[1:] != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the masks' {masks.shape[1:]}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be binary (0/1 or bool); binarise them before scoring")
        masks = masks.astype(bool)
    if not np.isfinite(prediction).all():
        raise ValueError("prediction holds NaN or infinite values")
    if prediction.size and (prediction.min() < 0 or prediction.max() > 1):
        raise ValueError(
            f"prediction must be a probability map in [0, 1]; found values in [{prediction.min()}, {prediction.max()}]"
        )
    return prediction, masks


def consensus_at(masks: np.ndarray, tenth: int) -> np.ndarray:
    """Where at least ``tenth / 10`` of the experts agree, compared exactly: ``10 k >= tenth n``."""
    masks = np.asarray(masks, dtype=bool)
    return 10 * masks.sum(axis=0) >= tenth * masks.shape[0]


def threshold_dice(prediction: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Dice at each of the nine thresholds, shape ``(9,)``.

    Args:
        prediction: probability map in [0, 1], e.g. ``(rows, cols)``.
        masks: the experts' binary masks stacked as ``(experts, rows, cols)``.
    """
    prediction, masks = _check(prediction, masks)
    counts = masks.sum(axis=0)
    n = masks.shape[0]
    return np.array(
        [dice(prediction >= j / 10 - PREDICTION_TOLERANCE, 10 * counts >= j * n) for j in TENTHS], dtype=np.float64
    )


def case_score(prediction: np.ndarray, masks: np.ndarray) -> float:
    """The QUBIQ score of one case and task: mean Dice over the nine thresholds."""
    return float(threshold_dice(prediction, masks).mean())


def score_cases(predictions: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Score several cases: the per-case x threshold Dice matrix, the means, the overall score.

    Returns a dict with ``cases`` (ids), ``thresholds``, ``dice`` (``cases x 9`` nested lists),
    ``per_case``, ``per_threshold`` and ``score`` (the mean of the per-case scores).
    """
    if set(predictions) != set(masks):
        missing = sorted(set(masks) - set(predictions))
        extra = sorted(set(predictions) - set(masks))
        raise ValueError(f"predictions and masks cover different cases (missing: {missing}, unexpected: {extra})")
    if not masks:
        raise ValueError("no case to score")
    return _summary({c: threshold_dice(predictions[c], masks[c]) for c in masks})


def _summary(rows: dict[str, np.ndarray]) -> dict:
    """The cases x thresholds Dice matrix of ``rows`` (case -> 9 values) with its means."""
    case_ids = list(rows)
    matrix = np.stack([rows[c] for c in case_ids])
    return {
        "cases": case_ids,
        "thresholds": list(THRESHOLDS),
        "dice": matrix.tolist(),
        "per_case": dict(zip(case_ids, matrix.mean(axis=1).tolist(), strict=True)),
        "per_threshold": matrix.mean(axis=0).tolist(),
        "score": float(matrix.mean()),
    }


def slice_threshold_dice(prediction: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per threshold, the mean over a volume's slices of each slice's Dice (both empty = 1), shape ``(9,)``.

    Args:
        prediction: a volume's probability map ``(slices, rows, cols)`` in [0, 1].
        masks: the experts' binary masks ``(experts, slices, rows, cols)``.
    """
    prediction, masks = _check(prediction, masks)
    if prediction.ndim != 3:
        raise ValueError(f"a per-slice score needs a volume (slices, rows, cols), got shape {prediction.shape}")
    counts = masks.sum(axis=0)
    n = masks.shape[0]
    result = []
    for j in TENTHS:
        predicted = prediction >= j / 10 - PREDICTION_TOLERANCE
        truth = 10 * counts >= j * n
        overlap = np.logical_and(predicted, truth).sum(axis=(1, 2))
        total = predicted.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
        per_slice = np.where(total == 0, 1.0, 2.0 * overlap / np.maximum(total, 1))
        result.append(per_slice.mean())
    return np.array(result, dtype=np.float64)


def score_slices(predictions: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """The per-slice figure of several volumes: as :func:`score_cases`, with each volume's Dice at a threshold
    replaced by the mean over its slices of the per-slice Dice (:func:`slice_threshold_dice`)."""
    if set(predictions) != set(masks):
        raise ValueError("predictions and masks cover different cases")
    if not masks:
        raise ValueError("no case to score")
    return _summary({c: slice_threshold_dice(predictions[c], masks[c]) for c in masks})
