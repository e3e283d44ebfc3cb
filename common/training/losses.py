"""The study's training losses (soft Dice per image, optionally plus BCE) and a hard Dice metric.

``make_loss`` maps the study's ``--loss`` switch to a loss: ``"dice"`` gives ``SoftDiceLoss``,
``"dice+bce"`` gives ``SoftDiceBCELoss`` (the same soft Dice plus binary cross-entropy), each with the
``--dice-smooth`` of the settings.

The study's loss is ``1 - 2 sum(p g) / (sum(p) + sum(g))`` with no smoothing (``smooth = 0``, the
default of ``Settings.dice_smooth``): on an image whose mask is empty it is 1 whatever the prediction,
so such an image teaches nothing (no gradient). With ``smooth > 0`` (``--dice-smooth 1``, what this
project used before it followed the study exactly) the ratio becomes ``(2 sum(p g) + s) / (sum(p) +
sum(g) + s)``: an empty mask with an empty prediction then scores a loss of 0, and false positives on
an empty mask are pushed down. QUBIQ has empty masks (some brain-tumor task-3 cases).

Why not ``keras.losses.Dice``: by default (``axis=None``) it pools the sums over the whole batch, so a
large foreground in one image hides a miss in another. The loss here is computed per image and then
averaged over the batch (at the study's batch size 1 the two agree). Soft Dice as a loss: Milletari et
al., "V-Net", 3DV 2016, arXiv 1606.04797.

Plain soft Dice is *not* minimised at ``p = g`` when ``g`` is a soft target in (0, 1): it rewards
pushing the prediction towards 0/1 (for ``g = 0.5`` everywhere, ``p = 1`` scores better than
``p = 0.5``). That is why the study, and this project, train one network per expert on that
expert's *binary* mask and average the networks' probabilities afterwards; a network trained on the
mean expert mask needs binary cross-entropy or a squared-denominator Dice instead (``SoftLabelLoss``
uses the latter and says why). (Adding BCE to
Dice, as ``SoftDiceBCELoss`` does, does not by itself make soft targets safe: the Dice term still
pulls towards 0/1.)
"""

from __future__ import annotations

import keras
from keras import ops

from common.choices import LOSS_NAMES

#: Floor of a Dice denominator: keeps the unsmoothed Dice (``smooth = 0``) finite when both sums are 0.
EPSILON = 1e-7


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
    # With smooth = 0 (the study's) an empty mask and an all-zero prediction would be 0 / 0; a sigmoid is
    # never exactly 0, but a floor keeps the loss finite (1: no gradient) if a float16 sum underflows.
    return 1.0 - (2.0 * intersection + smooth) / ops.maximum(total + smooth, EPSILON)


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
    """Soft Dice loss (optionally smoothed), computed per image and averaged over the batch.

    For each image ``b`` in the batch, with sums over all its spatial and channel axes::

        dice_b = (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)
        loss_b = 1 - dice_b

    Keras then reduces ``loss_b`` over the batch (mean, with the default reduction). A perfect
    prediction gives 0; an empty mask with an empty prediction also gives 0 when ``smooth > 0``.
    See the module docstring for why this is not ``keras.losses.Dice`` and why the targets should
    be binary (Milletari et al. 2016).

    Args:
        smooth: additive smoothing in numerator and denominator, ``>= 0`` (the study's: 0, which
            ``Settings.dice_smooth`` passes through ``make_loss``). With 0 an image whose mask is empty
            gives 1 (no gradient), its denominator floored at ``EPSILON`` when the prediction is empty too.
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


def make_loss(name: str, smooth: float = 1.0) -> keras.losses.Loss:
    """The training loss for a ``--loss`` value.

    Args:
        name: ``"dice"`` for ``SoftDiceLoss(smooth)`` (the study's loss) or ``"dice+bce"`` for
            ``SoftDiceBCELoss(smooth)`` (soft Dice plus BCE, weight 1).
        smooth: the Dice term's additive smoothing (``Settings.dice_smooth``; the study's: 0).

    Returns:
        A new loss instance (never shared between models).

    Raises:
        ValueError: if ``name`` is not one of ``LOSS_NAMES`` (:mod:`common.choices`); the message names it and
            the valid ones.
    """
    if name == "dice":
        return SoftDiceLoss(smooth)
    if name == "dice+bce":
        return SoftDiceBCELoss(smooth)
    raise ValueError(f"make_loss: unknown loss {name!r}, expected one of {', '.join(map(repr, LOSS_NAMES))}")


def _split_heads(y_true, y_pred):
    """``y_true = concat(masks, available)`` on the last axis, each with one channel per head of ``y_pred``.

    Returns masks and predictions as ``(batch, heads, rows, cols)`` and ``available`` as ``(batch, heads)``.
    """
    heads = y_pred.shape[-1]
    if y_true.shape[-1] is not None and heads is not None and y_true.shape[-1] != 2 * heads:
        raise ValueError(
            f"targets must hold 2 x {heads} channels (one mask per head, then availability), got {y_true.shape[-1]}"
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
        if loss not in LOSS_NAMES:
            raise ValueError(
                f"MultiHeadLoss: unknown loss {loss!r}, expected one of {', '.join(map(repr, LOSS_NAMES))}"
            )
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
        per_head = 1.0 - (2.0 * intersection + self.smooth) / ops.maximum(total + self.smooth, EPSILON)
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


def _squared_dice_per_image(y_true, y_pred, smooth: float):
    """``1 - (2 * sum(p * g) + smooth) / (sum(p^2) + sum(g^2) + smooth)`` for each image, shape ``(batch,)``.

    Since ``2 p g <= p^2 + g^2`` pixel by pixel, the ratio is at most 1, and equals 1 only where
    ``p = g`` everywhere (smoothing or not): the loss is 0 exactly at the soft target.
    """
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(ops.square(y_true), axis=axes) + ops.sum(ops.square(y_pred), axis=axes)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="qubiq")
class SoftLabelLoss(keras.losses.Loss):
    """Soft Dice with a squared denominator against the mean expert mask, per image (optionally plus BCE).

    The soft-label strategy trains one network on ``g``, the mean of the experts' masks (values k/n).
    Its loss must be minimised where the output equals ``g``, not where it is pushed to 0/1 as the
    study's soft Dice would (see the module docstring). Two losses qualify:

    - ``1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)``: since ``2 p g <= p^2 + g^2`` pixel by pixel,
      it is 0 exactly at ``p = g`` (with or without the smoothing ``s``, the study's 1, which also
      pushes an image with an empty target towards an empty prediction);
    - binary cross-entropy averaged over the pixels, whose per-pixel minimum is at ``p = g`` (a proper
      scoring rule, which also makes it the natural choice for calibration).

    This project uses the squared-denominator Dice, because it is the one that trains here. Measured
    on fold 1 of the kidney demo (60 epochs, the demo network; docs/strategies.md): with binary
    cross-entropy, alone or added to this Dice, the network settled in a state where no pixel of any
    case exceeded 0.44 to 0.47 (the sigmoid of the output bias: the last layer's features were
    silenced under the kidney, which covers about 2 % of the image, while the background's many
    pixels dominated the mean), so every threshold from 0.5 up scored 0 (QUBIQ 0.37 and 0.39). The
    Dice term alone, a ratio over the structure whatever its size, as the study's own loss is,
    scored 0.876 on the same fold. ``bce_weight`` adds the cross-entropy back for experiments.

    Args:
        bce_weight: weight of an added binary cross-entropy term, ``>= 0`` (default 0: Dice alone).
        smooth: the Dice's additive smoothing, ``>= 0``.
    """

    epsilon = SoftDiceBCELoss.epsilon

    def __init__(self, bce_weight: float = 0.0, smooth: float = 1.0, name: str = "soft_label", **kwargs) -> None:
        for label, value in (("bce_weight", bce_weight), ("smooth", smooth)):
            if not float(value) >= 0.0:
                raise ValueError(f"SoftLabelLoss: {label} must be >= 0, got {value}")
        super().__init__(name=name, **kwargs)
        self.bce_weight, self.smooth = float(bce_weight), float(smooth)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        _check_same_shape(y_true, y_pred, "SoftLabelLoss")
        loss = _squared_dice_per_image(y_true, y_pred, self.smooth)
        if self.bce_weight:
            loss = loss + self.bce_weight * _bce_per_image(y_true, y_pred, self.epsilon)
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "bce_weight": self.bce_weight, "smooth": self.smooth}


def _split_levels(y_true, y_pred):
    """``y_true``: M nested level masks "level >= k" ``(batch, rows, cols, M)``; ``y_pred``: the M + 1 class
    probabilities. Returns both as cumulative levels ``(batch, M, rows, cols)``: the masks, and
    P(level >= k), the sum of the class probabilities from k up."""
    levels = y_pred.shape[-1] - 1 if y_pred.shape[-1] is not None else None
    if levels is not None and y_true.shape[-1] is not None and y_true.shape[-1] != levels:
        raise ValueError(
            f"agreement targets must hold one level mask per class above 0 ({levels}), got {y_true.shape[-1]}"
        )
    at_least = ops.flip(ops.cumsum(ops.flip(y_pred, axis=-1), axis=-1), axis=-1)[..., 1:]
    at_least = ops.clip(at_least, 0.0, 1.0)  # a sum of float32 probabilities may pass 1 by rounding
    return ops.transpose(y_true, (0, 3, 1, 2)), ops.transpose(at_least, (0, 3, 1, 2))


@keras.saving.register_keras_serializable(package="qubiq")
class AgreementLoss(keras.losses.Loss):
    """The agreement-classes loss: soft Dice of each cumulative level plus the classes' cross-entropy.

    The network's M + 1 softmax channels are the probabilities of a pixel's agreement level (how many of
    the M experts marked it); ``y_true`` holds the M nested masks "level >= k" (``agreement_levels`` in
    :mod:`common.strategies`). For image ``b``::

        P_k = sum_{j >= k} p_j                                    (k = 1 .. M)
        dice_bk = (2 sum(P_k g_k) + s) / (sum(P_k) + sum(g_k) + s)
        loss_b  = mean_k (1 - dice_bk) + w x mean over pixels of -sum_k onehot_k log p_k

    The Dice is the study's soft Dice (``SoftDiceLoss``, the same smoothing), applied to the masks the
    QUBIQ score compares: the mean expert mask thresholded at t is "level >= tM". The class one-hot of
    the cross-entropy is recovered from the nested masks (``onehot_k = g_k - g_{k+1}``, ``g_0 = 1``).
    The cross-entropy is part of the method, as in nnU-Net's Dice + cross-entropy that the published
    entry trained with: the Dice alone gives the background class no direct term, and on the prostate
    demo (15 epochs) it left P(level >= 1) above 0.5 over half of each image (QUBIQ 0.644; with the
    cross-entropy 0.820; docs/strategies.md). ``ce_weight = 0`` gives the Dice alone, for experiments.

    Args:
        ce_weight: the cross-entropy's weight, ``>= 0`` (default 1, nnU-Net's).
        smooth: the Dice smoothing, as ``SoftDiceLoss``.
    """

    epsilon = SoftDiceBCELoss.epsilon

    def __init__(self, ce_weight: float = 1.0, smooth: float = 1.0, name: str = "agreement", **kwargs) -> None:
        for label, value in (("ce_weight", ce_weight), ("smooth", smooth)):
            if not float(value) >= 0.0:
                raise ValueError(f"AgreementLoss: {label} must be >= 0, got {value}")
        super().__init__(name=name, **kwargs)
        self.ce_weight, self.smooth = float(ce_weight), float(smooth)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        masks, at_least = _split_levels(y_true, y_pred)
        intersection = ops.sum(masks * at_least, axis=(2, 3))
        total = ops.sum(masks, axis=(2, 3)) + ops.sum(at_least, axis=(2, 3))
        per_level = 1.0 - (2.0 * intersection + self.smooth) / ops.maximum(total + self.smooth, EPSILON)
        loss = ops.mean(per_level, axis=1)
        if self.ce_weight:
            ones = ops.ones_like(y_true[..., :1])
            upper = ops.concatenate([ones, y_true], axis=-1)
            lower = ops.concatenate([y_true, ops.zeros_like(ones)], axis=-1)
            onehot = upper - lower  # level >= k and not >= k + 1
            p = ops.clip(y_pred, self.epsilon, 1.0)
            loss = loss + self.ce_weight * ops.mean(-ops.sum(onehot * ops.log(p), axis=-1), axis=(1, 2))
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "ce_weight": self.ce_weight, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="qubiq")
def agreement_dice(y_true, y_pred, threshold: float = 0.5):
    """The hard Dice of each cumulative level (P(level >= k) >= 0.5 against level >= k), averaged per image;
    a level empty in both is 1."""
    masks, at_least = _split_levels(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
    truth = ops.cast(masks >= threshold, "float32")
    pred = ops.cast(at_least >= threshold, "float32")
    intersection = ops.sum(truth * pred, axis=(2, 3))
    total = ops.sum(truth, axis=(2, 3)) + ops.sum(pred, axis=(2, 3))
    both_empty = ops.equal(total, 0.0)
    return ops.mean(ops.where(both_empty, 1.0, 2.0 * intersection / ops.where(both_empty, 1.0, total)), axis=1)
