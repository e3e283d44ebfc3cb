"""Checkpoints of a training: the best weights kept in memory, written with the backup at checkpoints."""

import json
import math

import keras
import numpy as np
import pytest

from common.errors import DataError
from common.runs.folder import network_files
from common.training.checkpoints import EpochRecorder, read_backup, save_model_atomic


def tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def run_epochs(recorder, model, losses):
    """Pretend to train: set the weights to the epoch number, then report that epoch's loss."""
    for epoch, value in enumerate(losses):
        model.set_weights([np.full((2, 1), epoch + 1.0), np.zeros(1)])
        recorder.on_epoch_end(epoch, {"loss": value, "val_loss": value})


@pytest.mark.parametrize(
    "seconds, losses, keep, backup_epoch, kept_weight",
    [
        (0.0, [0.5, 0.4, 0.6], "best", 3, 2.0),  # every epoch: the backup after epoch 3, the best from epoch 2
        (3600.0, [0.5, 0.4, 0.6, 0.3], "best", 4, 4.0),  # only after the last epoch
        (0.0, [0.5, 0.4, 0.6], "last", 3, 3.0),  # the study's: the last epoch's weights, whatever the loss
        (3600.0, [0.5, 0.4, 0.6, 0.7], "last", 4, 4.0),
    ],
)
def test_checkpoints(tmp_path, seconds, losses, keep, backup_epoch, kept_weight):
    model = tiny_model()
    files = network_files(tmp_path)
    recorder = EpochRecorder(
        files, "val_loss", [], math.inf, "seg01", len(losses), str, checkpoint_seconds=seconds, keep=keep
    )
    recorder.set_model(model)
    run_epochs(recorder, model, losses)
    assert json.loads(files.backup_state.read_text()) == {"epoch": backup_epoch, "best": min(losses)}
    kept = keras.saving.load_model(files.model)
    assert kept.get_weights()[0][0, 0] == kept_weight
    backup = keras.saving.load_model(files.backup)
    assert backup.get_weights()[0][0, 0] == len(losses)  # the weights after the last epoch
    assert model.get_weights()[0][0, 0] == len(losses)  # training continues from its own weights


def test_no_checkpoint_before_it_is_due(tmp_path):
    model = tiny_model()
    files = network_files(tmp_path)
    recorder = EpochRecorder(files, "val_loss", [], math.inf, "seg01", 10, str, checkpoint_seconds=3600.0)
    recorder.set_model(model)
    run_epochs(recorder, model, [0.5, 0.4, 0.3])
    assert not files.backup_state.exists() and not files.model.exists()
    assert len(files.log.read_text().splitlines()) == 4  # the log is every epoch


def test_a_checkpoint_is_read_back_as_written(tmp_path):
    files = network_files(tmp_path / "run" / "experts" / "seg01")
    files.folder.mkdir(parents=True)
    assert read_backup(files) is None  # nothing to resume from
    model = tiny_model()
    model.set_weights([np.full((2, 1), 3.0), np.zeros(1)])
    save_model_atomic(model, files.backup)
    files.backup_state.write_text(json.dumps({"epoch": 4, "best": 0.25}))
    epoch, best, restored = read_backup(files)
    assert (epoch, best) == (4, 0.25)
    assert np.array_equal(restored.get_weights()[0], np.full((2, 1), 3.0))


@pytest.mark.parametrize("state", ["{not json", '{"epoch": 2}', '{"epoch": "two", "best": 0.1}', "[]"])
def test_an_unreadable_backup_state_is_refused_with_how_to_train_anew(tmp_path, state):
    files = network_files(tmp_path / "run" / "experts" / "seg01")
    files.folder.mkdir(parents=True)
    files.backup.write_bytes(b"PK")
    files.backup_state.write_text(state)
    with pytest.raises(DataError, match=r"backup\.json cannot be loaded .*to train that network anew: mv "):
        read_backup(files)
