"""`--preset study` builds and trains the original study's networks: checked layer by layer (docs/fidelity.md).

The expected layer sequence is written here from the original code's description (QUBIQ.md, "The
original study"), independently of common.training.models: 5 levels of two 3x3 convolution + batch norm + ReLU,
2x2 max pooling, spatial dropout; the bottleneck block; per decoder level a 3x3 stride-2 transposed
convolution, the merge (concatenation, or the two-step sequence into a backwards ConvLSTM2D with half
the filters), spatial dropout, the conv block; a 1x1 sigmoid convolution. Keras's default initialisers
everywhere.
"""

import keras
import numpy as np
import pytest

import Brain_Growth
import Brain_Tumor
import Kidney
import Pancreas
import Pancreatic_Lesion
import Prostate
from common.switches import preset
from common.training.networks import build_model

BLOCK = ["Conv2D", "BatchNormalization", "Activation"] * 2


def expected_layers(depth: int, convlstm: bool) -> list[str]:
    layers = ["InputLayer"]
    for _ in range(depth):
        layers += BLOCK + ["MaxPooling2D", "SpatialDropout2D"]
    layers += BLOCK
    for _ in range(depth):
        layers += ["Conv2DTranspose"]
        layers += ["Reshape", "Reshape", "Concatenate", "ConvLSTM2D"] if convlstm else ["Concatenate"]
        layers += ["SpatialDropout2D"] + BLOCK
    return layers + ["Conv2D"]


@pytest.fixture(scope="module")
def study_networks():
    """The study's plain (brain-growth, 256 px) and ConvLSTM (kidney, 512 px) networks."""
    plain = build_model(preset("study", Brain_Growth.STUDY, Brain_Growth.DEMO), channels=1)
    convlstm = build_model(preset("study", Kidney.STUDY, Kidney.DEMO), channels=1)
    yield plain, convlstm
    keras.backend.clear_session()


def test_layer_types_and_order(study_networks):
    plain, convlstm = study_networks
    assert [type(layer).__name__ for layer in plain.layers] == expected_layers(5, convlstm=False)
    assert [type(layer).__name__ for layer in convlstm.layers] == expected_layers(5, convlstm=True)


def test_parameter_counts(study_networks):
    plain, convlstm = study_networks
    assert plain.count_params() == 8_660_305
    assert convlstm.count_params() == 9_839_793


def test_filters_dropout_and_output(study_networks):
    plain, convlstm = study_networks
    convs = [layer for layer in plain.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs[:-1:2]] == [16, 32, 64, 128, 256, 512, 256, 128, 64, 32, 16]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs[:-1])
    assert convs[-1].kernel_size == (1, 1) and convs[-1].filters == 1
    assert convs[-1].activation.__name__ == "sigmoid"
    ups = [layer for layer in plain.layers if type(layer).__name__ == "Conv2DTranspose"]
    assert all(u.kernel_size == (3, 3) and u.strides == (2, 2) for u in ups)
    rates = {layer.rate for layer in plain.layers if type(layer).__name__ == "SpatialDropout2D"}
    assert rates == {0.5}  # brain-growth's 0.5
    rates = {layer.rate for layer in convlstm.layers if type(layer).__name__ == "SpatialDropout2D"}
    assert rates == {0.2}  # kidney's 0.2
    lstms = [layer for layer in convlstm.layers if type(layer).__name__ == "ConvLSTM2D"]
    assert [m.filters for m in lstms] == [128, 64, 32, 16, 8]  # half the level's filters


def test_convlstm_runs_backwards(study_networks):
    _, convlstm = study_networks
    lstms = [layer for layer in convlstm.layers if type(layer).__name__ == "ConvLSTM2D"]
    assert all(m.go_backwards and not m.return_sequences for m in lstms)


def test_backwards_means_the_skip_forms_the_output():
    """A backwards ConvLSTM over (skip, up) equals a forwards one over (up, skip): the skip is the last step."""
    keras.utils.set_random_seed(0)
    skip, up = (np.random.default_rng(i).normal(size=(1, 1, 4, 4, 2)).astype("float32") for i in (1, 2))
    backwards = keras.layers.ConvLSTM2D(3, 3, padding="same", go_backwards=True)
    forwards = keras.layers.ConvLSTM2D(3, 3, padding="same")
    out_backwards = backwards(np.concatenate([skip, up], axis=1))
    forwards.build((1, 2, 4, 4, 2))
    forwards.set_weights(backwards.get_weights())
    np.testing.assert_allclose(out_backwards, forwards(np.concatenate([up, skip], axis=1)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out_backwards, forwards(np.concatenate([skip, up], axis=1)), atol=1e-4)


def test_keras_default_initialisers(study_networks):
    for network in study_networks:
        for layer in network.layers:
            kind = type(layer).__name__
            if kind in ("Conv2D", "Conv2DTranspose"):
                assert type(layer.kernel_initializer).__name__ == "GlorotUniform", layer.name
                assert type(layer.bias_initializer).__name__ == "Zeros", layer.name
            if kind == "ConvLSTM2D":
                assert type(layer.cell.kernel_initializer).__name__ == "GlorotUniform", layer.name
                assert type(layer.cell.recurrent_initializer).__name__ == "Orthogonal", layer.name


@pytest.mark.parametrize("script", [Brain_Growth, Brain_Tumor, Kidney, Prostate, Pancreas, Pancreatic_Lesion])
def test_study_procedure(script):
    """Last epoch kept, no early stopping, crop-or-pad, augmented validation, unsmoothed Dice, Adam 1e-4, batch 1."""
    study = preset("study", script.STUDY, script.DEMO)
    assert (study.keep, study.patience, study.fit, study.augment_validation) == ("last", 0, "crop", True)
    assert (study.dice_smooth, study.loss, study.learning_rate, study.batch_size) == (0.0, "dice", 1e-4, 1)
    assert (study.initializer, study.convlstm_backwards, study.depth, study.base_filters) == ("glorot", True, 5, 16)
    assert (study.rotation, study.shift) == (10.0, 0.1)


@pytest.mark.parametrize("script", [Pancreas, Pancreatic_Lesion])
def test_the_volume_sets_study_preset_is_the_kidney_network_on_512_px_slices(script):
    """This project's reading for the sets the study never trained (docs/fidelity.md)."""
    study, kidney = script.STUDY, Kidney.STUDY
    same = ("input_size", "depth", "base_filters", "convlstm", "dropout", "dropout_rate", "batch_size", "learning_rate")
    assert {k: getattr(study, k) for k in same} == {k: getattr(kidney, k) for k in same}
    assert (study.flip, study.ct_window, study.slice_margin) == (False, (-100.0, 240.0), 5)
    assert study.epochs == {"pancreas": 10, "pancreatic-lesion": 20}[script.DATASET.name]
    assert script.DATASET.slice_axis == 0 and script.DATASET.n_validation is None


def test_run_folders_written_before_the_studys_procedure_keep_theirs():
    """A config.json without the new fields describes a run that trained the project's earlier way."""
    from common.spec import LEGACY_VALUES, Settings

    old = {k: v for k, v in Kidney.STUDY.to_dict().items() if k not in LEGACY_VALUES}
    restored = Settings.from_dict(old)
    assert (restored.convlstm_backwards, restored.initializer, restored.keep) == (False, "he", "best")
    assert (restored.fit, restored.augment_validation, restored.dice_smooth) == ("resample", False, 1.0)
    assert Settings.from_dict(Kidney.STUDY.to_dict()) == Kidney.STUDY  # written now: read back as written


def test_augmented_validation_is_a_function_of_seed_and_epoch():
    from common.training.augmentation import Augmentation
    from common.training.stream import augmented_validation_dataset

    rng = np.random.default_rng(0)
    images = rng.random((3, 16, 16, 1)).astype("float32")
    masks = (images > 0.5).astype("float32")
    augmentation = Augmentation(rotation=10.0, shift=0.1, flip=True)

    def epochs(first, seed=4):
        stream = augmented_validation_dataset(images, masks, 2, seed, augmentation, epochs=3, first_epoch=first)
        seen = []
        for epoch in range(first, 3):  # as FollowEpoch sets it when each training epoch begins
            stream.epoch = epoch
            assert len(stream) == 2  # one epoch: ceil(3 / 2) batches
            seen.append(np.concatenate([b[0] for b in stream]))
        return seen

    whole = epochs(0)
    assert len(whole) == 3 and all(e.shape == images.shape for e in whole)
    assert not np.allclose(whole[0], whole[1]) and not np.allclose(whole[0], images)  # anew each epoch
    resumed = epochs(1)  # a training resumed after epoch 1 validates on what it would have
    np.testing.assert_array_equal(resumed[0], whole[1])
    np.testing.assert_array_equal(resumed[1], whole[2])
    assert not np.allclose(epochs(0, seed=5)[0], whole[0])
