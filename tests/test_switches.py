"""The switches: their text forms, the presets, and what each one changes in the model and the pipeline."""

import argparse
import importlib
import math

import keras
import numpy as np
import pytest

from common.cli import build_parser, resolve_settings
from common.data.preprocessing import normalise_image
from common.datasets import DATASETS, KIDNEY
from common.runs.folder import network_files
from common.spec import ConfigError, Settings
from common.strategies import STRATEGIES
from common.switches import (
    PRESETS,
    SWITCHES,
    apply_switches,
    default_preset,
    describe,
    parse_ct_window,
    parse_value,
    preset,
    show_value,
    switch,
)
from common.training.checkpoints import EpochRecorder
from common.training.losses import SoftDiceBCELoss, SoftDiceLoss
from common.training.networks import build_model
from common.training.stream import training_dataset
from common.training.trainer import augmentation_of

Kidney = importlib.import_module("Kidney")
BrainGrowth = importlib.import_module("Brain_Growth")

SMALL = Settings(input_size=32, depth=3, base_filters=4, dropout_rate=0.3, epochs=5)


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("depth", "4", 4),
        ("base_filters", "8", 8),
        ("dropout", "standard", "standard"),
        ("dropout_rate", "0.25", 0.25),
        ("convlstm", "on", True),
        ("convlstm", "OFF", False),
        ("batch_norm", "no", False),
        ("augment", "1", True),
        ("rotation", "15", 15.0),
        ("shift", "0", 0.0),
        ("flip", "true", True),
        ("ct_window", "127.5/255", (0.0, 255.0)),
        ("ct_window", "40/400", (-160.0, 240.0)),
        ("ct_window", "off", None),
        ("loss", "dice+bce", "dice+bce"),
        ("learning_rate", "3e-4", 3e-4),
        ("batch_size", "4", 4),
        ("epochs", "10", 10),
        ("patience", "0", 0),
        ("image_size", "96", 96),
        ("dropout-rate", "0.5", 0.5),  # dashes as on the command line
        ("latent-dim", "2", 2),
        ("kl_weight", "0.5", 0.5),
        ("samples", "4", 4),
        ("slice_margin", "0", 0),
        ("slice-margin", "12", 12),
        ("slice_margin", "all", None),
    ],
)
def test_parse_value(name, text, value):
    assert parse_value(name, text) == value


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("depth", "0", "depth: expected an integer >= 1, got 0"),
        ("depth", "two", "depth: expected an integer >= 1, got 'two'"),
        ("dropout", "gaussian", "dropout: expected one of spatial, standard, none"),
        ("dropout_rate", "1", "dropout_rate: expected a number >= 0 and < 1"),
        ("convlstm", "maybe", "convlstm: expected on or off"),
        ("ct_window", "40", "ct_window: expected LEVEL/WIDTH"),
        ("ct_window", "40/0", "ct_window: the window width must be > 0"),
        ("loss", "focal", "loss: expected one of dice, dice\\+bce"),
        ("dropout", "gaussian", "dropout: expected one of spatial, standard, none, got 'gaussian'"),
        ("learning_rate", "0", "learning_rate: expected a number > 0"),
        ("patience", "-1", "patience: expected an integer >= 0"),
        ("rotation", "200", "rotation: expected a number >= 0 and <= 180"),
        ("colour", "red", "unknown setting 'colour'"),
        ("latent_dim", "0", "latent_dim: expected an integer >= 1, got 0"),
        ("kl_weight", "-1", "kl_weight: expected a number >= 0"),
        ("samples", "0", "samples: expected an integer >= 1, got 0"),
        ("slice_margin", "-1", "slice_margin: expected an integer >= 0, got -1"),
        ("slice_margin", "some", "slice_margin: expected an integer >= 0, got 'some'"),
    ],
)
def test_parse_value_refuses(name, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_value(name, text)


@pytest.mark.parametrize("name", list(SWITCHES))
def test_show_round_trips(name):
    value = getattr(Kidney.STUDY, SWITCHES[name].field)
    assert parse_value(name, show_value(name, value)) == value


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dropout", "gaussian", "dropout must be 'spatial', 'standard' or 'none', got 'gaussian'"),
        ("loss", "focal", "loss must be one of dice, dice\\+bce, got 'focal'"),
    ],
)
def test_settings_refuse_an_unknown_kind(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Kidney.STUDY.replace(**{field: value})


def test_ct_window_on_mri_refused():
    with pytest.raises(ConfigError, match="brain-growth is MRI"):
        apply_switches(BrainGrowth.STUDY, {"ct_window": (0.0, 255.0)}, BrainGrowth.DATASET)
    assert apply_switches(BrainGrowth.STUDY, {"ct_window": None}, BrainGrowth.DATASET).ct_window is None


def test_presets():
    assert preset("study", Kidney.STUDY, Kidney.DEMO) == Kidney.STUDY
    assert preset("demo", Kidney.STUDY, Kidney.DEMO) == Kidney.DEMO
    default = preset("default", Kidney.STUDY, Kidney.DEMO)
    # a tenth of the study's 500 epochs; early stopping keeps the best epoch, on unaugmented validation images
    assert default == Kidney.STUDY.replace(patience=50, keep="best", augment_validation=False)
    study = Kidney.STUDY  # the original procedure exactly (docs/fidelity.md)
    assert (study.convlstm_backwards, study.initializer, study.keep, study.fit) == (True, "glorot", "last", "crop")
    assert (study.augment_validation, study.dice_smooth, study.patience) == (True, 0.0, 0)
    demo = Kidney.DEMO  # the CPU demo: the study's sizes shrunk, with DEMO_DEPARTURES
    assert (demo.fit, demo.convlstm_backwards, demo.initializer, demo.keep) == ("resample", True, "he", "best")
    assert default_preset(Kidney.STUDY.replace(epochs=100)).patience == 20  # at least 20
    assert describe(Kidney.STUDY)["ct_window"] == "127.5/255"


def parse(script, *argv):
    module = importlib.import_module(script)
    return build_parser(module.DATASET, module.STUDY, module.DEMO, module.task).parse_args(list(argv))


@pytest.mark.parametrize(
    "script, argv, expected",
    [
        ("Kidney", ["--preset", "study"], Kidney.STUDY),
        ("Kidney", [], default_preset(Kidney.STUDY)),
        ("Kidney", ["--demo"], Kidney.DEMO),
        ("Kidney", ["--demo", "--preset", "study"], Kidney.STUDY),
        ("Kidney", ["--ct-window", "off"], default_preset(Kidney.STUDY).replace(ct_window=None)),
        ("Kidney", ["--preset", "study", "--ct-window", "40/400"], Kidney.STUDY.replace(ct_window=(-160.0, 240.0))),
        (
            "Brain_Growth",
            ["--demo", "--depth", "3", "--dropout", "standard", "--convlstm", "on", "--loss", "dice+bce"],
            BrainGrowth.DEMO.replace(depth=3, dropout="standard", convlstm=True, loss="dice+bce"),
        ),
        (
            "Brain_Growth",
            ["--demo", "--augment", "off", "--flip", "off", "--rotation", "5", "--shift", "0.05", "--patience", "7"],
            BrainGrowth.DEMO.replace(augment=False, flip=False, rotation=5.0, shift=0.05, patience=7),
        ),
        (
            "Brain_Growth",
            [
                "--demo",
                "--base-filters",
                "4",
                "--dropout-rate",
                "0.1",
                "--batch-norm",
                "off",
                "--learning-rate",
                "1e-2",
            ],
            BrainGrowth.DEMO.replace(base_filters=4, dropout_rate=0.1, batch_norm=False, learning_rate=1e-2),
        ),
        (
            "Kidney",
            ["--demo", "--latent-dim", "2", "--kl-weight", "0.1", "--samples", "8"],
            Kidney.DEMO.replace(latent_dim=2, kl_weight=0.1, samples=8),
        ),
    ],
)
def test_command_line_switches(script, argv, expected):
    module = importlib.import_module(script)
    args = parse(script, *argv)
    assert resolve_settings(args, module.STUDY, module.DEMO, module.DATASET) == expected


def test_mri_scripts_have_no_ct_window_option(capsys):
    with pytest.raises(SystemExit):
        parse("Brain_Growth", "--ct-window", "40/400")
    assert "unrecognized arguments: --ct-window" in capsys.readouterr().err


def test_bad_switch_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        parse("Kidney", "--dropout", "gaussian")
    err = capsys.readouterr().err
    assert "--dropout: expected one of spatial, standard, none, got 'gaussian'" in err, err


def test_depth_and_size_checked_together():
    args = parse("Kidney", "--demo", "--depth", "5", "--image-size", "80")
    with pytest.raises(ConfigError, match="--image-size 80 is not divisible by 2\\*\\*depth = 32"):
        resolve_settings(args, Kidney.STUDY, Kidney.DEMO, Kidney.DATASET)


@pytest.mark.parametrize(
    "script, parameters",
    [("Brain_Growth", 8_660_305), ("Kidney", 9_839_793)],  # QUBIQ.md: about 8.7 M and 9.8 M
)
def test_preset_study_builds_the_study_networks(script, parameters):
    module = importlib.import_module(script)
    settings = resolve_settings(parse(script, "--preset", "study"), module.STUDY, module.DEMO, module.DATASET)
    model = build_model(settings, channels=module.DATASET.channels)
    assert model.input_shape == (None, settings.input_size, settings.input_size, 1)
    assert model.count_params() == parameters
    keras.backend.clear_session()


def layer_counts(settings: Settings) -> dict[str, int]:
    model = build_model(settings, channels=1)
    counts: dict[str, int] = {}
    for layer in model.layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    counts["first_filters"] = model.get_layer("enc1_conv1").filters
    rates = {layer.rate for layer in model.layers if "Dropout" in type(layer).__name__}
    counts["rates"] = sorted(rates)
    keras.backend.clear_session()
    return counts


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, {"MaxPooling2D": 3, "SpatialDropout2D": 6, "BatchNormalization": 14, "first_filters": 4, "rates": [0.3]}),
        ({"depth": 2}, {"MaxPooling2D": 2, "SpatialDropout2D": 4, "BatchNormalization": 10}),
        ({"base_filters": 8}, {"first_filters": 8}),
        ({"dropout": "standard"}, {"Dropout": 6, "SpatialDropout2D": None}),
        ({"dropout": "none"}, {"Dropout": None, "SpatialDropout2D": None, "rates": []}),
        ({"dropout_rate": 0.1}, {"SpatialDropout2D": 6, "rates": [0.1]}),
        ({"convlstm": True}, {"ConvLSTM2D": 3, "Concatenate": 3}),
        ({"convlstm": False}, {"ConvLSTM2D": None, "Concatenate": 3}),
        ({"batch_norm": False}, {"BatchNormalization": None}),
    ],
)
def test_switches_change_the_model(changes, expected):
    counts = layer_counts(SMALL.replace(**changes))
    for key, value in expected.items():
        assert counts.get(key) == value, (key, counts)


def test_augment_switch_changes_the_stream():
    assert augmentation_of(SMALL.replace(augment=False)) is None
    on = augmentation_of(SMALL.replace(flip=False, rotation=7.0, shift=0.05))
    assert (on.rotation, on.shift, on.flip) == (7.0, 0.05, False)
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    off_batches = list(training_dataset(images, masks, 4, 0, augmentation_of(SMALL.replace(augment=False)), 1))
    on_batches = list(training_dataset(images, masks, 4, 0, augmentation_of(SMALL), 1))
    seen = {tuple(np.round(x.ravel()[:5], 6)) for x in off_batches[0][0]}
    assert seen == {tuple(np.round(x.ravel()[:5], 6)) for x in images}  # the images themselves, shuffled
    assert not any(np.allclose(a, b) for a in on_batches[0][0] for b in images)


def test_ct_window_switch_changes_the_intensities():
    image = np.array([[-1000.0, 0.0], [127.5, 1000.0]], dtype=np.float32)[..., np.newaxis]
    windowed = normalise_image(image, parse_ct_window("127.5/255"))[..., 0]
    assert windowed.tolist() == [[0.0, 0.0], [0.5, 1.0]]
    plain = normalise_image(image, parse_ct_window("off"))[..., 0]
    assert plain[1, 0] == pytest.approx(1127.5 / 2000)


def test_loss_switch_compiles_that_loss(tmp_path):
    from common.training.trainer import train_expert

    rng = np.random.default_rng(0)
    images = rng.random((2, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    for loss, kind in (("dice", SoftDiceLoss), ("dice+bce", SoftDiceBCELoss)):
        settings = Settings(input_size=16, depth=2, base_filters=2, epochs=1, batch_size=2, loss=loss)
        result = train_expert(
            1, (images, masks), None, settings, network_files(tmp_path / loss), seed=0, verbose=0, log=str
        )
        assert isinstance(keras.saving.load_model(result.model_path).loss, kind)
        keras.backend.clear_session()


class _Stub(keras.Model):
    def save(self, path, *args, **kwargs):
        open(path, "w").close()


@pytest.mark.parametrize(
    "losses, patience, stops_after",
    [
        ([0.5, 0.4, 0.45, 0.46, 0.3], 2, 4),  # best at 2; epochs 3 and 4 are no better: stop after 4
        ([0.5, 0.4, 0.45, 0.39, 0.38], 2, None),  # improves in time
        ([0.5, 0.6, 0.7, 0.8, 0.9], 0, None),  # patience 0: never stops early
        ([0.5, 0.6, 0.7, 0.8, 0.9], 4, None),  # would stop after epoch 5, which is the last anyway
        ([0.5, 0.6, 0.7, 0.8, 0.9], 1, 2),
    ],
)
def test_early_stopping(tmp_path, losses, patience, stops_after):
    recorder = EpochRecorder(
        network_files(tmp_path), "val_loss", [], math.inf, "seg01", len(losses), lambda _: None, patience
    )
    model = _Stub()
    recorder.set_model(model)
    model.stop_training = False
    stopped = None
    for epoch, value in enumerate(losses):
        recorder.on_epoch_end(epoch, {"loss": value, "val_loss": value})
        if model.stop_training:
            stopped = epoch + 1
            break
    assert stopped == stops_after
    assert recorder.stopped_early == (stops_after is not None)


def test_early_stopping_counts_from_the_log_on_resume(tmp_path):
    rows = [{"epoch": e, "loss": v, "val_loss": v} for e, v in ((1, "0.5"), (2, "0.3"), (3, "0.4"))]
    recorder = EpochRecorder(network_files(tmp_path), "val_loss", rows, 0.3, "seg01", 10, lambda _: None, patience=2)
    assert recorder.best_epoch == 2
    model = _Stub()
    recorder.set_model(model)
    model.stop_training = False
    recorder.on_epoch_end(3, {"loss": 0.5, "val_loss": 0.5})  # epoch 4, the second without improvement
    assert model.stop_training


def test_argparse_namespace_without_switches_keeps_the_preset():
    args = argparse.Namespace(demo=True, preset=None)
    assert resolve_settings(args, Kidney.STUDY, Kidney.DEMO) == Kidney.DEMO


@pytest.mark.parametrize("preset_name", PRESETS)
@pytest.mark.parametrize("entry", DATASETS.values(), ids=lambda d: d.name)
def test_every_strategy_trains_from_every_preset_without_naming_a_loss(preset_name, entry):
    """``--vary strategy=...`` from any preset: no preset sets a loss that one strategy refuses."""
    base = preset(preset_name, entry.study, entry.demo)
    for name in STRATEGIES:
        assert apply_switches(base, {"strategy": name}, entry.spec).strategy == name


def test_loss_help_says_what_it_means_per_strategy_and_a_loss_that_does_not_apply_is_refused():
    help_text = switch("loss").help
    for name in STRATEGIES:
        assert f"{name}: " in help_text
    with pytest.raises(ConfigError, match="strategy soft-label trains on the mean expert mask .* loss 'dice\\+bce'"):
        apply_switches(KIDNEY.demo, {"strategy": "soft-label", "loss": "dice+bce"})
