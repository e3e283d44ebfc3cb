"""The Probabilistic U-Net (Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images",
NeurIPS 2018) on this project's U-Net body, in Keras 3 (every backend).

Three networks share the work:

- the U-Net body (:func:`common.training.models.build_unet` less its output layer) maps the image to
  its last decoder features;
- the *prior* net sees the image, the *posterior* net the image and one expert's mask (as ``mask -
  0.5``, as the public versions feed it); each is an encoder of ``depth`` blocks (two 3x3 convolutions
  with ReLU, then 2x2 average pooling, the filters of the U-Net's levels) ending in global average
  pooling and a 1x1 convolution (a dense layer on the pooled vector) to the mean and the log standard
  deviation of a diagonal Gaussian over the latent ``z`` (``latent_dim``, the original's 6);
- the *head*: ``z`` tiled over the image and concatenated to the body's features, then three 1x1
  convolutions with ReLU and a 1x1 sigmoid output.

Training (:func:`build_training_model`): ``z`` is drawn from the posterior of a mask of one expert drawn
at random per image and step among those who annotated it (:class:`ExpertDraw`); the loss is the pixel
cross-entropy summed over the pixels and averaged over the batch (:class:`SampledCrossEntropy`, as the
original: the sum sets the KL term's weight) plus ``kl_weight`` x KL(posterior || prior) in closed form
(:func:`kl_diagonal_gaussians`, added by :class:`PriorPosteriorKL`). The Gaussians' parameters, the
draws and the KL are float32 under a mixed-precision policy, as the output. The random draws use
``keras.random`` with seed generators, whose state Keras carries on every backend.

Prediction (:func:`build_sampling_model`): ``samples`` draws of ``z`` from the prior, each a sigmoid
map; the noise is an input, drawn by the caller in numpy from a seed and each image's place, so the
same seed gives the same samples in any process and at any batch size.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from common.training.models import build_unet

#: Layer names the sampling model finds in a trained (or loaded) training model.
BODY, PRIOR, POSTERIOR, HEAD = "unet_body", "prior", "posterior", "head"


def kl_diagonal_gaussians(mu_q, log_sigma_q, mu_p, log_sigma_p):
    """KL(q || p) of two diagonal Gaussians, summed over the last axis, in closed form:

    ``sum_d log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2``

    (One public PyTorch port multiplies ``s_p`` by ``s_q`` where ``s_p^2`` belongs, a wrong KL unless
    the two deviations are equal; the tests hold this one to the formula with unequal ones.)
    """
    mu_q, log_sigma_q, mu_p, log_sigma_p = (ops.convert_to_tensor(t) for t in (mu_q, log_sigma_q, mu_p, log_sigma_p))
    variance_q = ops.exp(2.0 * log_sigma_q)
    variance_p = ops.exp(2.0 * log_sigma_p)
    per_dimension = log_sigma_p - log_sigma_q + (variance_q + ops.square(mu_q - mu_p)) / (2.0 * variance_p) - 0.5
    return ops.sum(per_dimension, axis=-1)


def gaussian_encoder(input_shape, latent_dim: int, depth: int, base_filters: int, name: str) -> keras.Model:
    """An encoder to a diagonal Gaussian: ``(batch, 2 x latent_dim)``, the means then the log deviations."""
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    for level in range(depth):
        for i in (1, 2):
            x = layers.Conv2D(
                base_filters * 2**level, 3, padding="same", activation="relu", name=f"{name}_enc{level + 1}_conv{i}"
            )(x)
        if level < depth - 1:
            x = layers.AveragePooling2D(2, name=f"{name}_enc{level + 1}_pool")(x)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    parameters = layers.Dense(2 * latent_dim, dtype="float32", name=f"{name}_gaussian")(x)
    return keras.Model(inputs, parameters, name=name)


@keras.saving.register_keras_serializable(package="qubiq")
class ExpertDraw(layers.Layer):
    """One expert's mask per image, drawn uniformly among the experts who annotated it.

    Input: targets ``(batch, H, W, 2E)``: the E experts' masks (read at 0.5), then E channels saying which
    annotated the image (constant before augmentation; read by their maximum). Output: ``(batch, H, W, 1)``.
    A new draw at every call (a seed generator, so the draws follow the seed on every backend).
    """

    def __init__(self, experts: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.experts, self.seed = int(experts), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, targets):
        masks = ops.cast(targets[..., : self.experts] >= 0.5, targets.dtype)
        available = ops.max(targets[..., self.experts :], axis=(1, 2))
        # -1e9 keeps an absent expert out of the draw (log 0 as a large finite number: no NaN)
        logits = ops.where(available > 0.5, 0.0, -1e9)
        chosen = keras.random.categorical(logits, 1, seed=self.generator)[:, 0]
        onehot = ops.one_hot(chosen, self.experts, dtype=masks.dtype)
        return ops.sum(masks * onehot[:, None, None, :], axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "seed": self.seed}


@keras.saving.register_keras_serializable(package="qubiq")
class GaussianSample(layers.Layer):
    """``z = mean + exp(log deviation) x noise`` from ``(batch, 2 x latent)`` parameters; the noise drawn
    here (training), or given as a second input ``(batch, latent)`` (prediction)."""

    def __init__(self, latent_dim: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.seed = int(latent_dim), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, parameters, noise=None):
        mean, log_sigma = parameters[:, : self.latent_dim], parameters[:, self.latent_dim :]
        if noise is None:
            noise = keras.random.normal(ops.shape(mean), seed=self.generator, dtype=mean.dtype)
        return mean + ops.exp(log_sigma) * noise

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "seed": self.seed}


@keras.saving.register_keras_serializable(package="qubiq")
class PriorPosteriorKL(layers.Layer):
    """Adds ``weight x mean over the batch of KL(posterior || prior)`` to the model's losses; passes the
    posterior's parameters on."""

    def __init__(self, latent_dim: int, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.weight = int(latent_dim), float(weight)

    def call(self, posterior, prior):
        d = self.latent_dim
        kl = kl_diagonal_gaussians(posterior[:, :d], posterior[:, d:], prior[:, :d], prior[:, d:])
        self.add_loss(self.weight * ops.mean(kl))
        return posterior

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "weight": self.weight}


@keras.saving.register_keras_serializable(package="qubiq")
class TileLatent(layers.Layer):
    """``z (batch, latent)`` tiled over the grid of ``features (batch, H, W, F)`` and concatenated to them."""

    def call(self, features, z):
        shape = ops.shape(features)
        tiled = ops.broadcast_to(z[:, None, None, :], (shape[0], shape[1], shape[2], ops.shape(z)[-1]))
        return ops.concatenate([features, ops.cast(tiled, features.dtype)], axis=-1)


#: The foreground probability the output starts at (its bias is the log-odds): the prior of Lin et al.'s focal
#: loss paper (RetinaNet, 2017). From 0.5 (bias 0) the summed cross-entropy on a structure of 2 % of the image
#: (kidney) had not left the background's haze after 60 epochs: QUBIQ 0.005 on fold 1 (docs/strategies.md).
FOREGROUND_PRIOR = 0.01


def build_head(features: int, latent_dim: int) -> keras.Model:
    """The three 1x1 ReLU convolutions and the 1x1 sigmoid output over ``features + latent`` channels, its
    bias at the log-odds of :data:`FOREGROUND_PRIOR`."""
    inputs = keras.Input(shape=(None, None, features + latent_dim), name=f"{HEAD}_input")
    x = inputs
    for i in (1, 2, 3):
        x = layers.Conv2D(features, 1, activation="relu", name=f"{HEAD}_conv{i}")(x)
    bias = keras.initializers.Constant(float(np.log(FOREGROUND_PRIOR / (1 - FOREGROUND_PRIOR))))
    probability = layers.Conv2D(
        1, 1, activation="sigmoid", bias_initializer=bias, dtype="float32", name=f"{HEAD}_probability"
    )(x)
    return keras.Model(inputs, probability, name=HEAD)


def build_training_model(
    input_shape: tuple[int, int, int], experts: int, latent_dim: int, kl_weight: float, seed: int | None = None, **unet
) -> keras.Model:
    """The network as it trains. Its one input packs, on channels, the image ``(H, W, C)``, the E experts'
    masks and E constant channels saying which annotated the image (:func:`pack_inputs`), so that the
    augmentation warps the masks with their image (the masks are read back at 0.5, as a warped mask is
    re-binarised; an availability channel by its maximum, which a warp's border cannot lower). Output
    ``(batch, H, W, 2)``: the sampled probability map and the drawn expert's mask it is scored against
    (by :class:`SampledCrossEntropy`); the KL term is among the model's losses.

    ``unet`` are :func:`build_unet`'s keyword arguments for the body (``depth``, ``base_filters``,
    dropout, batch norm, ConvLSTM, initialiser); the prior and posterior encoders take its ``depth`` and
    ``base_filters``. ``seed`` seeds the expert draw and the posterior's noise (None: from Keras's global
    seed, as :func:`common.training.trainer.seed_everything` sets it).
    """
    depth, base = int(unet.get("depth", 5)), int(unet.get("base_filters", 16))
    channels = int(input_shape[2])
    packed = keras.Input(shape=(*input_shape[:2], channels + 2 * experts), name="image_and_targets")
    image, targets = packed[..., :channels], packed[..., channels:]
    full = build_unet(input_shape, **unet)
    body = keras.Model(full.inputs, full.get_layer("probability").input, name=BODY)  # the U-Net less its output
    prior = gaussian_encoder(input_shape, latent_dim, depth, base, PRIOR)
    posterior = gaussian_encoder((*input_shape[:2], channels + 1), latent_dim, depth, base, POSTERIOR)
    head = build_head(base, latent_dim)
    mask = ExpertDraw(experts, seed=seed, dtype="float32", name="expert_draw")(targets)
    centred = layers.Rescaling(1.0, offset=-0.5, name="mask_centred")(mask)
    shown = layers.Concatenate(name="posterior_view")([image, centred])
    parameters = PriorPosteriorKL(latent_dim, kl_weight, dtype="float32", name="kl")(posterior(shown), prior(image))
    z = GaussianSample(latent_dim, seed=None if seed is None else seed + 1, dtype="float32", name="posterior_sample")(
        parameters
    )
    probability = head(TileLatent(name="tile")(body(image), z))
    output = layers.Concatenate(dtype="float32", name="sampled_and_target")([probability, ops.cast(mask, "float32")])
    return keras.Model(packed, output, name="prob_unet")


def pack_inputs(images, masks, available):
    """The training model's input: images ``(N, H, W, C)``, masks ``(N, H, W, E)`` (0 where absent) and
    ``available (N, E)`` as constant channels, on the channel axis (numpy)."""
    import numpy as np

    flags = np.broadcast_to(available[:, None, None, :], masks.shape).astype(np.float32)
    return np.concatenate([images, masks.astype(np.float32), flags], axis=-1)


def build_sampling_model(trained: keras.Model, samples: int) -> keras.Model:
    """The trained network as it predicts: inputs the image and the noise ``(batch, samples, latent)``,
    output ``(batch, H, W, samples)``: one sigmoid map per draw of ``z`` from the prior (``mean + exp(log
    deviation) x noise``). Its layers are the trained model's own (shared weights)."""
    body, prior, head = trained.get_layer(BODY), trained.get_layer(PRIOR), trained.get_layer(HEAD)
    latent_dim = int(prior.output.shape[-1]) // 2
    experts = trained.get_layer("expert_draw").experts
    height, width, packed = (int(d) for d in trained.inputs[0].shape[1:])
    image = keras.Input(shape=(height, width, packed - 2 * experts), name="image")
    noise = keras.Input(shape=(samples, latent_dim), name="noise")
    features, parameters = body(image), prior(image)
    tile, draw = TileLatent(name="tile"), GaussianSample(latent_dim, dtype="float32", name="prior_sample")
    maps = [head(tile(features, draw(parameters, noise[:, s]))) for s in range(samples)]
    output = maps[0] if samples == 1 else layers.Concatenate(dtype="float32", name="samples")(maps)
    return keras.Model([image, noise], output, name="prob_unet_sampling")


@keras.saving.register_keras_serializable(package="qubiq")
class SampledCrossEntropy(keras.losses.Loss):
    """The pixel cross-entropy of the sampled map against the drawn expert's mask (both in ``y_pred``,
    channels 0 and 1, from :func:`build_training_model`), summed over the pixels and averaged over the
    batch, as the original: the sum, not a mean, is what the KL term's weight of 1 is measured against.
    ``y_true`` (the targets the model drew from) is not read again."""

    epsilon = 1e-7

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        p = ops.clip(y_pred[..., 0], self.epsilon, 1.0 - self.epsilon)
        g = y_pred[..., 1]
        return ops.sum(-(g * ops.log(p) + (1.0 - g) * ops.log(1.0 - p)), axis=(1, 2))


def sampling_noise(seed: int, images: list[int] | range, samples: int, latent_dim: int):
    """The prior noise ``(len(images), samples, latent_dim)`` for the images at places ``images`` of a
    prediction: image ``i``'s draws come from numpy's generator seeded with ``(seed, i)`` alone, so they do
    not depend on the batch it is predicted in, on the process, or on the backend."""
    return np.stack(
        [np.random.default_rng([seed, int(i)]).standard_normal((samples, latent_dim)) for i in images]
    ).astype(np.float32)
