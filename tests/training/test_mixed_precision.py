"""--mixed-precision: the setting and its switch, the policy chosen per machine, and training under it.

The training tests force the policy through ``cpu_supports_bf16`` / ``gpu_visible`` so that they exercise
the mixed path on any CPU (emulated bfloat16 or float16 is slow, but the networks here are tiny).
"""

import importlib
import json
import math
import warnings

import keras
import numpy as np
import pytest

from common.cli import build_parser, resolve_settings
from common.experiment import parse_assignment
from common.runs.folder import network_files
from common.runs.pipeline import check_resumable
from common.spec import ConfigError, Settings
from common.switches import SWITCHES, parse_value
from common.training import precision
from common.training.inference import Predictor
from common.training.networks import build_model
from common.training.trainer import train_expert

Kidney = importlib.import_module("Kidney")

TINY = Settings(
    input_size=32,
    depth=2,
    base_filters=4,
    batch_size=2,
    learning_rate=1e-3,
    epochs=2,
    augment=False,
    mixed_precision=True,
)


def data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((count, 32, 32, 1)).astype(np.float32)
    return images, (images > 0.5).astype(np.float32)


# The setting and its switch


def test_setting_defaults_off_and_old_configs_still_load():
    assert Settings(input_size=32).mixed_precision is False
    old = Settings(input_size=32).to_dict()
    del old["mixed_precision"]  # a config.json written before the field existed
    assert Settings.from_dict(old) == Settings(input_size=32)
    assert Settings.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_old_run_folders_can_still_be_resumed(tmp_path):
    config = {"settings": json.loads(json.dumps(Settings(input_size=32).to_dict()))}
    old = {"settings": {k: v for k, v in config["settings"].items() if k != "mixed_precision"}}
    check_resumable(old, config, tmp_path)  # no error: the missing field had the default
    with pytest.raises(ConfigError, match="settings"):
        check_resumable(old, {"settings": {**config["settings"], "mixed_precision": True}}, tmp_path)


def test_switch_parses_and_varies():
    assert SWITCHES["mixed_precision"].option == "--mixed-precision"
    assert parse_value("mixed_precision", "on") is True
    assert parse_value("mixed-precision", "off") is False
    assert parse_assignment("mixed_precision=off,on") == ("mixed_precision", ["off", "on"])


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], False),
        (["--mixed-precision"], True),
        (["--mixed-precision", "on"], True),
        (["--mixed-precision", "off"], False),
    ],
)
def test_command_line(argv, expected):
    parser = build_parser(Kidney.DATASET, Kidney.STUDY, Kidney.DEMO, Kidney.task)
    args = parser.parse_args(["--demo", *argv])
    assert resolve_settings(args, Kidney.STUDY, Kidney.DEMO, Kidney.DATASET).mixed_precision is expected


def test_command_line_refuses_other_values(capsys):
    parser = build_parser(Kidney.DATASET, Kidney.STUDY, Kidney.DEMO, Kidney.task)
    with pytest.raises(SystemExit):
        parser.parse_args(["--mixed-precision", "half"])
    assert "--mixed-precision: expected on or off, got 'half'" in capsys.readouterr().err


# The policy


@pytest.mark.parametrize(
    "mixed, gpu, bf16, policy",
    [
        (False, True, True, "float32"),
        (True, True, False, "mixed_float16"),
        (True, False, True, "mixed_bfloat16"),
        (True, False, False, "float32"),
    ],
)
def test_precision_policy(monkeypatch, mixed, gpu, bf16, policy):
    monkeypatch.setattr(precision, "gpu_visible", lambda: gpu)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: bf16)
    notices: list[str] = []
    assert precision.precision_policy(TINY.replace(mixed_precision=mixed), notices.append) == policy
    if mixed and not gpu and not bf16:
        assert len(notices) == 1 and "no bfloat16 instructions" in notices[0] and "float32" in notices[0]
    else:
        assert notices == []


def test_cpu_supports_bf16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert precision.cpu_supports_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_tile amx_int8\n")
    assert not precision.cpu_supports_bf16(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu amx_bf16\n")
    assert precision.cpu_supports_bf16(cpuinfo)
    assert not precision.cpu_supports_bf16(tmp_path / "missing")


def test_dtype_policy_is_restored_even_on_error():
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError), precision.dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("policy, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_model_under_a_mixed_policy(policy, compute):
    plain = build_model(TINY, channels=1).count_params()
    with precision.dtype_policy(policy):
        model = build_model(TINY, channels=1)
    assert model.count_params() == plain
    conv = model.get_layer("enc1_conv1")
    assert (conv.compute_dtype, conv.variable_dtype) == (compute, "float32")
    assert model.get_layer("enc1_bn1").compute_dtype == compute
    assert model.get_layer("probability").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    outputs = model(data(2)[0], training=False)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32"
    keras.backend.clear_session()


# Training under it


def test_train_expert_mixed_bfloat16(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "gpu_visible", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)  # this CPU or not: the mixed path
    lines: list[str] = []
    images, masks = data(4)
    result = train_expert(
        1, (images, masks), data(2, 1), TINY, network_files(tmp_path), seed=0, verbose=0, log=lines.append
    )
    assert any("dtype policy mixed_bfloat16" in line for line in lines), lines
    assert math.isfinite(result.best_loss)
    assert keras.config.dtype_policy().name == "float32"  # restored
    model = keras.saving.load_model(result.model_path)
    assert model.get_layer("enc1_conv1").compute_dtype == "bfloat16"  # saved with the layers
    keras.backend.clear_session()
    predictor = Predictor(2)
    maps = predictor.predict(predictor.load(result.model_path), images)
    assert maps.dtype == np.float32 and maps.shape == (4, 32, 32, 1)
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_float16_loss_scaling_survives_a_resume(tmp_path, monkeypatch):
    """Keras wraps Adam in a LossScaleOptimizer under mixed_float16; a backup loaded outside the policy
    would rebuild a plain Adam and drop the saved optimiser state, with a warning."""
    monkeypatch.setattr(precision, "gpu_visible", lambda: True)  # mixed_float16, computed on this CPU
    images, masks = data(4)
    settings = TINY.replace(epochs=1)
    first = train_expert(1, (images, masks), None, settings, network_files(tmp_path), 0, 0, str, checkpoint_seconds=0)
    assert math.isfinite(first.best_loss)
    assert keras.config.dtype_policy().name == "float32"
    with precision.dtype_policy("mixed_float16"):
        backup = keras.saving.load_model(network_files(tmp_path).backup)
        assert isinstance(backup.optimizer, keras.optimizers.LossScaleOptimizer)
        keras.backend.clear_session()
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train_expert(
            1,
            (images, masks),
            None,
            settings.replace(epochs=2),
            network_files(tmp_path),
            0,
            0,
            lines.append,
            checkpoint_seconds=0,
        )
    assert resumed.resumed_from_epoch == 1 and resumed.epochs == 2
    assert any("resuming from the backup after epoch 1" in line for line in lines), lines
    assert not [w for w in caught if "Skipping variable loading for optimizer" in str(w.message)]
    assert math.isfinite(resumed.best_loss)
    assert keras.config.dtype_policy().name == "float32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = Predictor(2)
        maps = predictor.predict(predictor.load(resumed.model_path), images)  # outside the policy: no warning
    assert not [w for w in caught if "optimizer" in str(w.message)]
    assert maps.dtype == np.float32 and np.all((maps >= 0) & (maps <= 1))
