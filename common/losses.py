"""The study's training losses (smoothed soft Dice per image, optionally plus BCE) and a hard Dice metric.

``make_loss`` maps the study's ``--loss`` switch to a loss: ``"dice"`` gives ``SoftDiceLoss``,
``"dice+bce"`` gives ``SoftDiceBCELoss`` (the same soft Dice plus binary cross-entropy).

Why not ``keras.losses.Dice``: by default (``axis=None``) it pools the sums over the whole batch,
so a large foreground in one image hides a miss in another, and it has no smoothing term, only an
epsilon in the denominator: an empty mask with an empty prediction gets loss 1 instead of 0. QUBIQ
has empty masks (some brain-tumor task-3 cases), so the loss here is computed per image with an
additive ``smooth`` in numerator and denominator, and then averaged over the batch. Soft Dice as a
loss: Milletari et al., "V-Net", 3DV 2016, arXiv 1606.04797.

Plain soft Dice is *not* minimised at ``p = g`` when ``g`` is a soft target in (0, 1): it rewards
pushing the prediction towards 0/1 (for ``g = 0.5`` everywhere, ``p = 1`` scores better than
``p = 0.5``). That is why the study, and this project, train one network per expert on that
expert's *binary* mask and average the networks' probabilities afterwards; a network trained on the
mean expert mask needs binary cross-entropy or a squared-denominator Dice instead. (Adding BCE to
Dice, as ``SoftDiceBCELoss`` does, does not by itself make soft targets safe: the Dice term still
pulls towards 0/1.)
"""

from __future__ import annotations

import keras
from keras import ops


def _check_same_shape(y_true, y_pred, where: str) -> None:
    """Raises ValueError when the static shapes of y_true and y_pred are known and differ.

    Unknown (None) dimensions, such as the batch size while tracing, are compatible with anything.
    A silent broadcast of ``(B, H, W)`` against ``(B, H, W, 1)`` would give a wrong loss, not an error.
    """
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    mismatch = len(true_shape) != len(pred_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(true_shape, pred_shape, strict=True)
    )
    if mismatch:
        raise ValueError(
            f"{where}: y_true and y_pred must have the same shape, got y_true {true_shape} and y_pred {pred_shape}"
        )
    if len(pred_shape) < 2:
        raise ValueError(f"{where}: expected a batch of images (batch, ...), got shape {pred_shape}")


def _soft_dice_per_image(y_true, y_pred, smooth: float):
    """``1 - (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)`` for each image, shape ``(batch,)``.

    The sums run over every axis but the first. The caller casts both tensors to float32 and checks
    their shapes first (``_check_same_shape``), so that its error names the caller.
    """
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def _bce_per_image(y_true, y_pred, epsilon: float):
    """Binary cross-entropy of probabilities, averaged over each image's pixels: shape ``(batch,)``.

    ``-(g * log(p) + (1 - g) * log(1 - p))`` with ``p`` clipped to ``[epsilon, 1 - epsilon]`` first,
    so that a prediction of exactly 0 or 1 costs a large but finite amount instead of ``inf``. The
    caller casts to float32 and checks the shapes, as for ``_soft_dice_per_image``. (In float32,
    ``1 - 1e-7`` rounds to ``1 - 2**-23``, so the largest cost is ``-log(1e-7) ~ 16.12`` for a missed
    foreground pixel and ``-log(2**-23) ~ 15.94`` for a false-positive one.)
    """
    axes = tuple(range(1, len(y_pred.shape)))
    p = ops.clip(y_pred, epsilon, 1.0 - epsilon)
    per_pixel = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return ops.mean(per_pixel, axis=axes)


@keras.saving.register_keras_serializable(package="qubiq")
class SoftDiceLoss(keras.losses.Loss):
    """Smoothed soft Dice loss, computed per image and averaged over the batch.

    For each image ``b`` in the batch, with sums over all its spatial and channel axes::

        dice_b = (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)
        loss_b = 1 - dice_b

    Keras then reduces ``loss_b`` over the batch (mean, with the default reduction). A perfect
    prediction gives 0; an empty mask with an empty prediction also gives 0 when ``smooth > 0``.
    See the module docstring for why this is not ``keras.losses.Dice`` and why the targets should
    be binary (Milletari et al. 2016).

    Args:
        smooth: additive smoothing in numerator and denominator, ``>= 0``. With 0 an image whose
            mask and prediction are both empty gives NaN.
        name: the loss's name in logs.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``dtype``).

    Raises:
        ValueError: if ``smooth`` is negative; when called, if the static shapes of ``y_true`` and
            ``y_pred`` are known and differ.
    """

    def __init__(self, smooth: float = 1.0, name: str = "soft_dice", **kwargs) -> None:
        if not float(smooth) >= 0.0:
            raise ValueError(f"SoftDiceLoss: smooth must be >= 0, got {smooth}")
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        # float32 whatever the model's policy: float16 sums over 256 x 256 pixels overflow.
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        _check_same_shape(y_true, y_pred, "SoftDiceLoss")
        return _soft_dice_per_image(y_true, y_pred, self.smooth)

    def get_config(self) -> dict:
        config = super().get_config()
        config["smooth"] = self.smooth
        return config


@keras.saving.register_keras_serializable(package="qubiq")
class SoftDiceBCELoss(keras.losses.Loss):
    """Smoothed soft Dice plus weighted binary cross-entropy, per image, averaged over the batch.

    For each image ``b``, with the Dice sums and the BCE mean over all its spatial and channel axes::

        loss_b = soft_dice_loss_b + bce_weight * mean(-(g * log(p') + (1 - g) * log(1 - p')))
        p' = clip(p, 1e-7, 1 - 1e-7)

    ``soft_dice_loss_b`` is exactly ``SoftDiceLoss``'s value (the same private helper computes both).
    ``p`` are the network's sigmoid *probabilities*, not logits; the clip keeps a prediction of
    exactly 0 or 1 finite. Everything is computed in float32. Keras then reduces ``loss_b`` over the
    batch (mean, with the default reduction).

    Why add BCE: soft Dice is a ratio of sums over the whole image, so each pixel's gradient depends
    on the rest of the image. On an image whose mask is empty it reduces to ``S / (S + smooth)`` with
    ``S = sum(p)``, whose gradient ``smooth / (S + smooth)**2`` vanishes once there are many false
    positives (about ``2e-5`` per pixel for ``p = 0.9`` on 16 x 16 pixels); on a near-empty mask the
    ratio is dominated by ``smooth`` and a handful of pixels, and its gradient jumps as they change.
    BCE adds a per-pixel term (gradient ``1 / (1 - p)`` for a false positive, ``-1 / p`` for a miss,
    before the mean) that neither saturates nor depends on the mask's size, and, being a proper
    scoring rule, it pulls the probabilities towards calibrated values, where Dice alone pushes them
    to 0/1; QUBIQ scores the averaged probabilities at several thresholds, so calibration matters.
    Compound Dice + cross-entropy losses: Taghanaki et al., "Combo loss", Comput. Med. Imaging Graph.
    2019, arXiv 1805.02798; Isensee et al., "nnU-Net", Nature Methods 2021, arXiv 1809.10486 (Dice +
    CE with equal weights, the default here). This loss is one of the study's switches:
    ``--loss dice+bce`` (see ``make_loss``).

    Args:
        smooth: additive smoothing of the Dice term, ``>= 0``, as in ``SoftDiceLoss``.
        bce_weight: weight of the BCE term, ``>= 0``. With 0 the loss equals ``SoftDiceLoss``.
        name: the loss's name in logs.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``dtype``).

    Raises:
        ValueError: if ``smooth`` or ``bce_weight`` is negative (or NaN); when called, if the static
            shapes of ``y_true`` and ``y_pred`` are known and differ.
    """

    epsilon = 1e-7  # the probability clip, as in keras.losses.binary_crossentropy (backend epsilon)

    def __init__(self, smooth: float = 1.0, bce_weight: float = 1.0, name: str = "soft_dice_bce", **kwargs) -> None:
        if not float(smooth) >= 0.0:
            raise ValueError(f"SoftDiceBCELoss: smooth must be >= 0, got {smooth}")
        if not float(bce_weight) >= 0.0:
            raise ValueError(f"SoftDiceBCELoss: bce_weight must be >= 0, got {bce_weight}")
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)
        self.bce_weight = float(bce_weight)

    def call(self, y_true, y_pred):
        # float32 whatever the model's policy: float16 sums overflow, and 1 - 1e-7 rounds to 1 in float16.
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        _check_same_shape(y_true, y_pred, "SoftDiceBCELoss")
        dice = _soft_dice_per_image(y_true, y_pred, self.smooth)
        return dice + self.bce_weight * _bce_per_image(y_true, y_pred, self.epsilon)

    def get_config(self) -> dict:
        config = super().get_config()
        config["smooth"] = self.smooth
        config["bce_weight"] = self.bce_weight
        return config


@keras.saving.register_keras_serializable(package="qubiq")
def dice_coefficient(y_true, y_pred, threshold: float = 0.5):
    """Hard Dice per image, for training logs: ``Dice(p >= threshold, g >= threshold)``.

    Empty-mask rule: an image whose mask and thresholded prediction are both empty scores 1 (the
    prediction is right), never NaN. Keras averages the per-image values over the batch.

    Args:
        y_true: masks, ``(batch, ...)``.
        y_pred: probabilities, the same shape.
        threshold: foreground is ``>= threshold`` in both.

    Returns:
        A float32 tensor of shape ``(batch,)``.

    Raises:
        ValueError: if the static shapes of ``y_true`` and ``y_pred`` are known and differ.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    _check_same_shape(y_true, y_pred, "dice_coefficient")
    axes = tuple(range(1, len(y_pred.shape)))
    truth = ops.cast(y_true >= threshold, "float32")
    pred = ops.cast(y_pred >= threshold, "float32")
    intersection = ops.sum(truth * pred, axis=axes)
    total = ops.sum(truth, axis=axes) + ops.sum(pred, axis=axes)
    both_empty = ops.equal(total, 0.0)
    return ops.where(both_empty, 1.0, 2.0 * intersection / ops.where(both_empty, 1.0, total))


LOSSES = ("dice", "dice+bce")
"""The values of the study's ``--loss`` switch, in the order ``make_loss`` documents them."""


def make_loss(name: str) -> keras.losses.Loss:
    """The training loss for a ``--loss`` value, with its default arguments.

    Args:
        name: ``"dice"`` for ``SoftDiceLoss()`` (the study's loss) or ``"dice+bce"`` for
            ``SoftDiceBCELoss()`` (soft Dice plus BCE, weight 1).

    Returns:
        A new loss instance (never shared between models).

    Raises:
        ValueError: if ``name`` is not one of ``LOSSES``; the message names it and the valid ones.
    """
    if name == "dice":
        return SoftDiceLoss()
    if name == "dice+bce":
        return SoftDiceBCELoss()
    raise ValueError(f"make_loss: unknown loss {name!r}, expected one of {', '.join(map(repr, LOSSES))}")


def _split_heads(y_true, y_pred):
    """``y_true = concat(masks, available)`` on the last axis, each with one channel per head of ``y_pred``.

    Returns masks and predictions as ``(batch, heads, rows, cols)`` and ``available`` as ``(batch, heads)``.
    """
    heads = y_pred.shape[-1]
    if y_true.shape[-1] is not None and heads is not None and y_true.shape[-1] != 2 * heads:
        raise ValueError(
            f"multi-head targets must hold 2 x {heads} channels (masks, then availability), got {y_true.shape[-1]}"
        )
    masks = ops.transpose(y_true[..., :heads], (0, 3, 1, 2))
    available = y_true[:, 0, 0, heads:]
    return masks, ops.transpose(y_pred, (0, 3, 1, 2)), available


def _mean_over_available(per_head, available):
    """Each image's mean over the heads whose expert annotated it (0 when none did)."""
    weight = ops.cast(available > 0.5, "float32")
    return ops.sum(per_head * weight, axis=1) / ops.maximum(ops.sum(weight, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="qubiq")
class MultiHeadLoss(keras.losses.Loss):
    """The ``--loss`` of every head of a multi-head network, skipping the heads of missing masks.

    The network has one sigmoid output per expert (``(batch, rows, cols, E)``). ``y_true`` holds the
    experts' masks in its first ``E`` channels and, in the last ``E``, a constant 1 where that expert
    annotated the image and 0 where not (its mask channel is then all 0 and ignored). For image ``b``,
    the loss is the mean over the annotating experts ``e`` of the per-image loss of head ``e``
    (``SoftDiceLoss`` or ``SoftDiceBCELoss`` on that head alone); an expert who did not annotate ``b``
    contributes nothing to its head's loss (and no gradient). Keras averages over the batch.

    Args:
        loss: ``"dice"`` or ``"dice+bce"``, as ``make_loss``.
        smooth: the Dice smoothing, as ``SoftDiceLoss``.
    """

    epsilon = SoftDiceBCELoss.epsilon

    def __init__(self, loss: str = "dice", smooth: float = 1.0, name: str = "multi_head", **kwargs) -> None:
        if loss not in LOSSES:
            raise ValueError(f"MultiHeadLoss: unknown loss {loss!r}, expected one of {', '.join(map(repr, LOSSES))}")
        if not float(smooth) >= 0.0:
            raise ValueError(f"MultiHeadLoss: smooth must be >= 0, got {smooth}")
        super().__init__(name=name, **kwargs)
        self.loss, self.smooth = loss, float(smooth)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        masks, predictions, available = _split_heads(y_true, y_pred)
        intersection = ops.sum(masks * predictions, axis=(2, 3))
        total = ops.sum(masks, axis=(2, 3)) + ops.sum(predictions, axis=(2, 3))
        per_head = 1.0 - (2.0 * intersection + self.smooth) / (total + self.smooth)
        if self.loss == "dice+bce":
            p = ops.clip(predictions, self.epsilon, 1.0 - self.epsilon)
            per_head = per_head + ops.mean(-(masks * ops.log(p) + (1.0 - masks) * ops.log(1.0 - p)), axis=(2, 3))
        return _mean_over_available(per_head, available)

    def get_config(self) -> dict:
        return {**super().get_config(), "loss": self.loss, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="qubiq")
def multi_head_dice(y_true, y_pred, threshold: float = 0.5):
    """``dice_coefficient`` of every head whose expert annotated the image, averaged per image."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    masks, predictions, available = _split_heads(y_true, y_pred)
    truth = ops.cast(masks >= threshold, "float32")
    pred = ops.cast(predictions >= threshold, "float32")
    intersection = ops.sum(truth * pred, axis=(2, 3))
    total = ops.sum(truth, axis=(2, 3)) + ops.sum(pred, axis=(2, 3))
    both_empty = ops.equal(total, 0.0)
    per_head = ops.where(both_empty, 1.0, 2.0 * intersection / ops.where(both_empty, 1.0, total))
    return _mean_over_available(per_head, available)


@keras.saving.register_keras_serializable(package="qubiq")
class SoftLabelBCELoss(keras.losses.Loss):
    """Binary cross-entropy against a soft target (the mean expert mask), per image, averaged over the batch.

    The soft-label strategy trains one network on ``g``, the mean of the experts' masks (values k/n).
    Its loss must be minimised where the output equals ``g``, not where it is pushed to 0/1 as soft
    Dice would (see the module docstring). Two losses qualify: binary cross-entropy, whose per-pixel
    minimum over ``p`` is at ``p = g`` (a proper scoring rule), and a Dice with squared denominator,
    ``2 sum(p g) / (sum(p^2) + sum(g^2))``, which is 1 only at ``p = g`` (Cauchy-Schwarz). This
    project uses binary cross-entropy: it is a sum of independent per-pixel terms, so every pixel's
    target is its own expert agreement, and it yields calibrated probabilities, which the QUBIQ score
    (nine thresholds of the map), the expected calibration error and the Brier score all reward. The
    squared-denominator Dice is a ratio over the image: it fits ``g`` only as a whole, and on images
    whose target is empty it gives a loss of 1 whatever the prediction (and no gradient toward 0).
    """

    epsilon = SoftDiceBCELoss.epsilon

    def __init__(self, name: str = "soft_label_bce", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        _check_same_shape(y_true, y_pred, "SoftLabelBCELoss")
        return _bce_per_image(y_true, y_pred, self.epsilon)
