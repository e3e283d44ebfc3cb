"""The study's training loss (smoothed soft Dice, per image) and a hard Dice metric for the logs.

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
mean expert mask needs binary cross-entropy or a squared-denominator Dice instead.
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
        axes = tuple(range(1, len(y_pred.shape)))
        intersection = ops.sum(y_true * y_pred, axis=axes)
        total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
        return 1.0 - dice

    def get_config(self) -> dict:
        config = super().get_config()
        config["smooth"] = self.smooth
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
