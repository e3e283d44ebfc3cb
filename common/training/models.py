"""The 2D U-Net of the original study, with an optional ConvLSTM (BCDU-Net) decoder.

One network per expert is trained on that expert's binary masks; its sigmoid output is a
per-pixel foreground probability. :func:`build_unet` builds both variants the study used:

- the deep U-Net (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
  Segmentation", MICCAI 2015, arXiv 1505.04597) with batch norm and spatial dropout;
- the same network whose decoder merges the skip and the upsampled tensor with a ConvLSTM2D,
  as in BCDU-Net (Azad et al., "Bi-Directional ConvLSTM U-Net with Densley Connected
  Convolutions", ICCV workshops 2019, arXiv 1909.00166).
"""

from __future__ import annotations

import keras
from keras import layers

from common.choices import DROPOUT_KINDS, INITIALIZERS

#: The output layer's activations (a strategy chooses: :meth:`common.strategies.Strategy.activation`).
ACTIVATIONS = ("sigmoid", "softmax")


def build_unet(
    input_shape: tuple[int, int, int],
    depth: int = 5,
    base_filters: int = 16,
    dropout: str = "spatial",
    dropout_rate: float = 0.5,
    batch_norm: bool = True,
    convlstm: bool = False,
    name: str = "unet",
    outputs: int = 1,
    initializer: str = "glorot",
    convlstm_backwards: bool = True,
    activation: str = "sigmoid",
) -> keras.Model:
    """Builds the study's 2D U-Net (Ronneberger et al. 2015), optionally with a BCDU-Net decoder.

    Level ``i`` (0-based) of the encoder has ``base_filters * 2**i`` filters; the bottleneck,
    below ``depth`` poolings, has ``base_filters * 2**depth`` (16, 32, ..., 512 for the study's
    depth 5 and base 16). Each level is a block of two 3x3 convolutions, each followed by batch
    normalisation (when ``batch_norm``) and ReLU. Downsampling is 2x2 max pooling; upsampling is
    a 3x3 stride-2 transposed convolution to the filters of the level it returns to. Dropout
    follows every pooling and every decoder merge. The output is a 1x1 convolution with a
    sigmoid (or a softmax over classes), computed in float32 so that a mixed-precision policy can be set later.

    Decoder merge:
        - ``convlstm=False``: concatenation of the skip and the upsampled tensor on channels.
        - ``convlstm=True`` (BCDU-Net, Azad et al. 2019): the skip and the upsampled tensor, each
          ``(H, W, C)``, are reshaped to ``(1, H, W, C)`` and concatenated on the time axis
          (skip first) into a 2-step sequence, which a ``ConvLSTM2D(C // 2, 3)`` reduces to its
          last state. With ``convlstm_backwards`` (the study's and BCDU-Net's code:
          ``go_backwards=True``) the sequence is read backwards, upsampled tensor first, so the
          last step, the one that forms the output, is the skip's; otherwise forwards.

    Initialisers: ``"glorot"`` (the study's) leaves every layer at Keras's defaults (Glorot-uniform
    kernels, zero biases, the ConvLSTM's orthogonal recurrent kernel); ``"he"`` gives the 3x3
    convolutions, the transposed convolutions and the ConvLSTM's input kernel He-normal kernels (the
    recurrent kernel stays orthogonal, the output 1x1 convolution Glorot).

    Layer names follow the design: ``enc1_conv1``, ``enc1_bn1``, ``enc1_relu1``, ...,
    ``enc1_pool``, ``enc1_drop``, ``bottleneck_conv1``, ..., then ``dec1_up``, ``dec1_merge``
    (``dec1_convlstm`` with the ConvLSTM merge), ``dec1_drop``, ``dec1_conv1`` ... and
    ``probability``. Decoder stages are numbered in the order they run: ``dec1`` is the deepest
    and merges the skip of ``enc{depth}``; ``dec{depth}`` merges ``enc1``.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be divisible by
            ``2**depth``.
        depth: number of poolings (the study: 5).
        base_filters: filters of the first level (the study: 16).
        dropout: ``"spatial"`` (``SpatialDropout2D``, the study's choice), ``"standard"``
            (``Dropout``) or ``"none"``.
        dropout_rate: rate of every dropout layer, in [0, 1); 0 adds no dropout layers.
        batch_norm: batch normalisation after every 3x3 convolution.
        convlstm: use the BCDU-Net ConvLSTM2D merge in the decoder.
        name: the model's name.
        outputs: output channels of the final 1x1 convolution: 1, one head per expert (every layer
            shared but the heads' 1x1 weights), or one per class.
        activation: ``"sigmoid"`` (each channel its own probability) or ``"softmax"`` (the channels are
            the probabilities of exclusive classes, summing to 1 at each pixel).
        initializer: ``"glorot"`` (the study's) or ``"he"``, see above.
        convlstm_backwards: read the ConvLSTM merge's sequence backwards (the study's), see above.

    Returns:
        An uncompiled ``keras.Model`` mapping ``(batch, H, W, C)`` images to ``(batch, H, W, outputs)``
        float32 probabilities.

    Raises:
        ValueError: if ``depth`` or ``base_filters`` is below 1, the input shape is not 3 positive
            numbers or is not divisible by ``2**depth``, ``dropout`` is unknown, or
            ``dropout_rate`` is outside [0, 1), or ``activation`` is unknown (or softmax of one channel).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")
    if len(input_shape) != 3 or any(int(n) < 1 for n in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) with positive sizes, got {input_shape}")
    height, width, _ = (int(n) for n in input_shape)
    factor = 2**depth
    for axis, size in (("height", height), ("width", width)):
        if size % factor:
            raise ValueError(
                f"input {axis} {size} is not divisible by 2**depth = {factor} (depth {depth}); "
                f"use a multiple of {factor}"
            )
    if outputs < 1:
        raise ValueError(f"outputs must be >= 1, got {outputs}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation == "softmax" and outputs < 2:
        raise ValueError(f"a softmax output needs at least 2 classes, got outputs={outputs}")
    if initializer not in INITIALIZERS:
        raise ValueError(f"initializer must be one of {INITIALIZERS}, got {initializer!r}")
    kernel = INITIALIZERS[initializer]
    if dropout not in DROPOUT_KINDS:
        raise ValueError(f"dropout must be one of {DROPOUT_KINDS}, got {dropout!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")

    use_dropout = dropout != "none" and dropout_rate > 0

    def conv_block(x, filters: int, prefix: str):
        for i in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", kernel_initializer=kernel, name=f"{prefix}_conv{i}")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"{prefix}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{prefix}_relu{i}")(x)
        return x

    def maybe_dropout(x, prefix: str):
        if not use_dropout:
            return x
        if dropout == "spatial":
            return layers.SpatialDropout2D(dropout_rate, name=f"{prefix}_drop")(x)
        return layers.Dropout(dropout_rate, name=f"{prefix}_drop")(x)

    inputs = keras.Input(shape=(height, width, int(input_shape[2])), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        prefix = f"enc{level + 1}"
        x = conv_block(x, base_filters * 2**level, prefix)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
        x = maybe_dropout(x, prefix)

    x = conv_block(x, base_filters * 2**depth, "bottleneck")

    for stage, level in enumerate(reversed(range(depth)), start=1):
        prefix = f"dec{stage}"
        filters = base_filters * 2**level
        skip = skips[level]
        x = layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", kernel_initializer=kernel, name=f"{prefix}_up"
        )(x)
        if convlstm:
            size = (height // 2**level, width // 2**level, filters)
            skip_step = layers.Reshape((1, *size), name=f"{prefix}_skip_step")(skip)
            up_step = layers.Reshape((1, *size), name=f"{prefix}_up_step")(x)
            x = layers.Concatenate(axis=1, name=f"{prefix}_merge")([skip_step, up_step])
            x = layers.ConvLSTM2D(
                max(filters // 2, 1),
                3,
                padding="same",
                return_sequences=False,
                go_backwards=convlstm_backwards,
                unroll=True,  # two steps: an unrolled loop traces faster than a while loop
                kernel_initializer=kernel,
                name=f"{prefix}_convlstm",
            )(x)
        else:
            x = layers.Concatenate(axis=-1, name=f"{prefix}_merge")([skip, x])
        x = maybe_dropout(x, prefix)
        x = conv_block(x, filters, prefix)

    probabilities = layers.Conv2D(outputs, 1, activation=activation, dtype="float32", name="probability")(x)
    return keras.Model(inputs, probabilities, name=name)


def unet_arguments(settings) -> dict:
    """:func:`build_unet`'s keyword arguments that the settings (``common.spec.Settings``) choose: the body
    of every network a run trains."""
    return {
        "depth": settings.depth,
        "base_filters": settings.base_filters,
        "dropout": settings.dropout,
        "dropout_rate": settings.dropout_rate,
        "batch_norm": settings.batch_norm,
        "convlstm": settings.convlstm,
        "convlstm_backwards": settings.convlstm_backwards,
        "initializer": settings.initializer,
    }
