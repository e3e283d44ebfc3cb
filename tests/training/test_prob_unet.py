"""The Probabilistic U-Net's parts: the KL term by hand, the networks' shapes, the expert drawn, the noise."""

import keras
import numpy as np
import pytest

from common.training.prob_unet import (
    ExpertDraw,
    SampledCrossEntropy,
    build_sampling_model,
    build_training_model,
    kl_diagonal_gaussians,
    pack_inputs,
    sampling_noise,
)


def kl_reference(mu_q, sigma_q, mu_p, sigma_p):
    """KL(q || p) of two Gaussians with diagonal covariances, by the general multivariate formula:
    (tr(Sp^-1 Sq) + (mp - mq)' Sp^-1 (mp - mq) - k + ln(det Sp / det Sq)) / 2."""
    cov_q, cov_p = np.diag(np.square(sigma_q)), np.diag(np.square(sigma_p))
    inverse = np.linalg.inv(cov_p)
    difference = mu_p - mu_q
    return 0.5 * (
        np.trace(inverse @ cov_q)
        + difference @ inverse @ difference
        - len(mu_q)
        + np.log(np.linalg.det(cov_p) / np.linalg.det(cov_q))
    )


@pytest.mark.backend
def test_kl_of_two_diagonal_gaussians_against_the_closed_form():
    mu_q, sigma_q = np.array([0.3, -1.0, 2.0]), np.array([0.5, 1.5, 0.2])
    mu_p, sigma_p = np.array([-0.7, 0.4, 2.5]), np.array([2.0, 0.3, 1.0])
    args = [np.asarray(a, np.float32)[None] for a in (mu_q, np.log(sigma_q), mu_p, np.log(sigma_p))]
    kl = float(keras.ops.convert_to_numpy(kl_diagonal_gaussians(*args))[0])
    assert kl == pytest.approx(kl_reference(mu_q, sigma_q, mu_p, sigma_p), rel=1e-5)
    # the public port's slip (s_p * s_q where s_p^2 belongs) gives another number with these deviations
    wrong = np.sum(np.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p * sigma_q) - 0.5)
    assert abs(kl - wrong) > 0.1
    same = [np.asarray(a, np.float32)[None] for a in (mu_q, np.log(sigma_q), mu_q, np.log(sigma_q))]
    assert float(keras.ops.convert_to_numpy(kl_diagonal_gaussians(*same))[0]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.backend
def test_the_expert_drawn_is_one_who_annotated_the_image():
    experts, rows = 4, 64
    masks = np.broadcast_to(np.eye(experts, dtype=np.float32).reshape(2, 2, experts), (rows, 2, 2, experts))
    # expert e marks pixel e - 1 of the 2 x 2 image alone
    available = np.zeros((rows, experts), np.float32)
    available[np.arange(rows), np.arange(rows) % experts] = 1  # one expert each ...
    available[: rows // 2, 2] = 1  # ... and expert 3 too in the first half
    targets = np.concatenate([masks, np.broadcast_to(available[:, None, None, :], masks.shape)], axis=-1)
    draw = ExpertDraw(experts, seed=1)
    drawn = np.stack(
        [keras.ops.convert_to_numpy(draw(targets)).reshape(rows, 4).argmax(axis=1) + 1 for _ in range(20)]
    )  # (20, rows): the expert drawn
    for row in range(rows):
        present = set(np.flatnonzero(available[row]) + 1)
        assert set(drawn[:, row].astype(int)) == present  # only those present, and (20 draws) each of them


def test_the_networks_shapes_and_the_sampling_model_shares_their_weights():
    model = build_training_model((16, 16, 2), experts=3, latent_dim=5, kl_weight=1.0, seed=0, depth=2, base_filters=4)
    assert model.input.shape == (None, 16, 16, 2 + 2 * 3)  # the image, 3 masks, 3 availability channels
    assert model.get_layer("prior").output.shape == (None, 10)
    assert model.get_layer("posterior").input.shape == (None, 16, 16, 3)  # the image and one mask
    assert model.output.shape == (None, 16, 16, 2)
    bias = keras.ops.convert_to_numpy(model.get_layer("head").get_layer("head_probability").bias)
    assert bias == pytest.approx([np.log(0.01 / 0.99)])  # the output starts at the foreground prior
    sampler = build_sampling_model(model, samples=3)
    assert sampler.output.shape == (None, 16, 16, 3)
    assert {id(w) for w in sampler.weights} <= {id(w) for w in model.weights}
    image = np.random.default_rng(0).normal(size=(2, 16, 16, 2)).astype(np.float32)
    noise = sampling_noise(7, range(2), 3, 5)
    maps = sampler.predict([image, noise], verbose=0)
    assert maps.min() >= 0 and maps.max() <= 1
    assert not np.allclose(maps[..., 0], maps[..., 1])  # other draws of z, other maps
    keras.backend.clear_session()


def test_sampling_noise_follows_the_seed_and_the_image_not_the_batch():
    everything = sampling_noise(3, range(5), 4, 6)
    assert everything.shape == (5, 4, 6)
    assert np.array_equal(sampling_noise(3, [3, 4], 4, 6), everything[3:])  # another batch, the same draws
    assert not np.allclose(sampling_noise(4, range(5), 4, 6), everything)  # another seed, other draws


def test_trains_under_mixed_precision_with_float32_gaussians_and_loss():
    from common.training.precision import dtype_policy

    rng = np.random.default_rng(1)
    masks = (rng.random((4, 16, 16, 2)) > 0.5).astype(np.float32)
    packed = pack_inputs(rng.normal(size=(4, 16, 16, 1)).astype(np.float32), masks, np.ones((4, 2), np.float32))
    with dtype_policy("mixed_bfloat16"):
        model = build_training_model((16, 16, 1), 2, 2, 1.0, seed=0, depth=2, base_filters=4)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SampledCrossEntropy())
        history = model.fit(packed, masks, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.get_layer("kl").compute_dtype == "float32" and model.output.dtype == "float32"
    assert model.get_layer("unet_body").get_layer("enc1_conv1").compute_dtype == "bfloat16"
    keras.backend.clear_session()
