"""CT windowing, rescaling, and the round trip between a case's grid and the network's."""

import numpy as np
import pytest

from common.data.preprocessing import (
    Geometry,
    apply_ct_window,
    from_input,
    mask_to_input,
    normalise_image,
    rescale_intensity,
    to_input,
)
from common.evaluation.scoring import dice


def test_ct_window_then_rescale():
    hu = np.array([[-1024.0, -100.0], [40.0, 1051.0]])[..., None]
    # window 0..255 HU: air and fat -> 0, soft tissue 40 -> 40/255, bone -> 1
    expected = np.array([[0.0, 0.0], [40 / 255, 1.0]])[..., None]
    assert np.allclose(normalise_image(hu, (0.0, 255.0)), expected)
    assert np.array_equal(apply_ct_window(hu, (0, 255))[..., 0], [[0, 0], [40, 255]])


def test_without_window_the_contrast_is_squashed():
    hu = np.array([[-1024.0, 40.0], [200.0, 1051.0]])[..., None]
    plain = normalise_image(hu)
    windowed = normalise_image(hu, (0.0, 255.0))
    # soft tissue (40) vs. enhanced kidney (200): a small step after min-max, a large one after windowing
    assert plain[1, 0, 0] - plain[0, 1, 0] == pytest.approx(160 / 2075)
    assert windowed[1, 0, 0] - windowed[0, 1, 0] == pytest.approx(160 / 255)


def test_rescale_per_channel_and_constant_channel():
    image = np.stack([np.array([[0.0, 2.0], [4.0, 8.0]]), np.full((2, 2), 7.0)], axis=-1)
    out = rescale_intensity(image)
    assert np.allclose(out[..., 0], [[0, 0.25], [0.5, 1]])
    assert np.array_equal(out[..., 1], np.zeros((2, 2)))
    assert out.dtype == np.float32


def test_bad_window():
    with pytest.raises(ValueError, match="low < high"):
        apply_ct_window(np.zeros((2, 2, 1)), (255, 0))


@pytest.mark.parametrize(
    "shape, size, resized, offset",
    [
        ((240, 240), 256, (240, 240), (8, 8)),  # smaller: pad only
        ((497, 497), 512, (497, 497), (7, 7)),
        ((497, 497), 128, (128, 128), (0, 0)),  # larger: resample
        ((960, 640), 128, (128, 85), (0, 21)),  # non-square: aspect kept, then padded
        ((640, 640), 640, (640, 640), (0, 0)),
    ],
)
def test_geometry(shape, size, resized, offset):
    geometry = Geometry.fit(shape, size)
    assert geometry.resized == resized
    assert geometry.offset == offset
    assert to_input(np.zeros((*shape, 1), np.float32), geometry).shape == (size, size, 1)


def test_pad_round_trip_is_exact():
    rng = np.random.default_rng(0)
    prob = rng.random((30, 20)).astype(np.float32)
    geometry = Geometry.fit(prob.shape, 32)
    on_grid = to_input(prob[..., None], geometry)
    assert on_grid[: geometry.offset[0]].sum() == 0  # padding is zero
    assert np.array_equal(from_input(on_grid, geometry), prob)


@pytest.mark.parametrize("shape", [(497, 497), (960, 640)])
def test_resample_round_trip_keeps_the_shape_of_a_mask(shape):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = ((rows - shape[0] / 2) / (shape[0] / 4)) ** 2 + ((cols - shape[1] / 2) / (shape[1] / 5)) ** 2 < 1
    geometry = Geometry.fit(shape, 64)
    on_grid = mask_to_input(mask, geometry)
    assert set(np.unique(on_grid)) == {0.0, 1.0}
    back = from_input(on_grid, geometry)
    assert back.shape == shape
    assert 0 <= back.min() and back.max() <= 1
    assert dice(back >= 0.5, mask) > 0.97


def test_from_input_checks_the_size():
    with pytest.raises(ValueError, match="input size 32"):
        from_input(np.zeros((16, 16)), Geometry.fit((20, 20), 32))


@pytest.mark.parametrize(
    "shape, size, source, offset, extent",
    [
        ((640, 640), 512, (64, 64), (0, 0), (512, 512)),  # prostate: centre-cropped, as the study did
        ((960, 640), 512, (224, 64), (0, 0), (512, 512)),
        ((497, 497), 512, (0, 0), (7, 7), (497, 497)),  # kidney: zero-padded
        ((240, 240), 256, (0, 0), (8, 8), (240, 240)),  # brain tumour: zero-padded
        ((600, 400), 512, (44, 0), (0, 56), (512, 400)),  # cropped on one axis, padded on the other
    ],
)
def test_crop_geometry(shape, size, source, offset, extent):
    geometry = Geometry.fit(shape, size, "crop")
    assert (geometry.source, geometry.offset, geometry.extent, geometry.resized) == (source, offset, extent, shape)
    assert not geometry.resamples


def test_crop_round_trip_keeps_the_middle_and_zeroes_the_cropped_border():
    rng = np.random.default_rng(0)
    image = rng.random((10, 6)).astype(np.float32)
    geometry = Geometry.fit(image.shape, 8, "crop")  # rows 1..8 kept, columns padded by 1 on each side
    on_grid = to_input(image[..., None], geometry)[..., 0]
    np.testing.assert_array_equal(on_grid[:, 1:7], image[1:9])
    assert on_grid[:, 0].sum() == 0 and on_grid[:, 7].sum() == 0
    back = from_input(on_grid, geometry)
    np.testing.assert_array_equal(back[1:9], image[1:9])
    assert back[0].sum() == 0 and back[9].sum() == 0  # the cropped-off rows: probability 0


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit must be one of crop, resample"):
        Geometry.fit((10, 10), 8, "stretch")
