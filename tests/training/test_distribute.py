"""--distribute mirrored: MirroredStrategy training on two CPU logical devices, and its refusals.

TensorFlow fixes its logical devices when it starts, so the two-replica trainings run in a subprocess
that splits the CPU first (:data:`SNIPPET`); it trains the same tiny network on the same data and seed
with ``distribute="none"`` and ``"mirrored"`` and reports the logs as JSON.

How close the two must be: with batch normalisation synchronised across the replicas (statistics of the
whole batch, as undistributed), augmentation off and no dropout, the replicas compute the same losses
and gradients as one device up to the order of float32 sums. On this machine (2 CPU cores, TF 2.21,
Keras 3.15) the training loss and training Dice of both epochs agreed in all 6 digits that
``training_log.csv`` keeps; the validation loss, computed with the moving batch-norm statistics (which
the synchronised layer accumulates from sums of x and x^2 instead of centred sums) within 2e-5 relative.
The tests allow 1e-4 relative for these. The validation Dice agreed in all 6 digits too, but it
thresholds maps computed with those moving statistics at 0.5, where a pixel may flip: the test allows
0.01 absolute for it.
"""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import SPEC, TINY, make_toy_root

from common.cli import build_parser, main
from common.runs import crossval
from common.runs.plan import RunOptions
from common.spec import ConfigError, Settings
from common.training.distribution import check_replicas, distribution_strategy
from common.training.networks import build_model, compile_for
from common.training.stream import epoch_images, evaluation_data, training_dataset

ROOT = Path(__file__).resolve().parents[2]
Prostate = importlib.import_module("Prostate")

SNIPPET = r"""
import json, math, sys
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from common.runs.folder import network_files
from common.training import trainer as training
from common.training.checkpoints import read_log
from common.spec import ConfigError, Settings

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
images = rng.random((11, 32, 32, 1)).astype(np.float32)
masks = (images > 0.5).astype(np.float32)
train, validation = (images[:8], masks[:8]), (images[8:], masks[8:])  # 3 validation cases: padded to 4
settings = Settings(
    input_size=32, depth=2, base_filters=4, batch_size=4, learning_rate=1e-3, epochs=2, augment=False, dropout="none"
)
report = {}
for distribute in ("none", "mirrored"):
    lines = []
    files = network_files(out / distribute)
    result = training.train_expert(
        1, train, validation, settings, files, seed=0, verbose=0, log=lines.append, distribute=distribute
    )
    rows = read_log(network_files(out / distribute).log)
    model = keras.saving.load_model(result.model_path)
    maps = model.predict(images[:2], verbose=0)
    report[distribute] = {
        "lines": lines,
        "rows": rows,
        "best_loss": result.best_loss,
        "synchronized": [layer.synchronized for layer in model.layers if "_bn" in layer.name],
        "maps": [float(maps.min()), float(maps.max())],
    }
    keras.backend.clear_session()
for name, changes in (("odd_batch", {"batch_size": 3}),):
    try:
        odd = settings.replace(**changes)
        training.train_expert(1, train, None, odd, network_files(out / name), 0, 0, str, distribute="mirrored")
        report[name] = None
    except ConfigError as error:
        report[name] = str(error)
lines = []  # 7 images: each epoch trains on 6, in batches of 4 and 2
files = network_files(out / "odd")
result = training.train_expert(1, (images[:7], masks[:7]), None, settings, files, 0, 0, lines.append,
                               distribute="mirrored")
report["odd"] = {"lines": lines, "rows": read_log(network_files(out / "odd").log)}
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute")
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line.removeprefix("REPORT "))


def test_mirrored_trains_on_two_replicas(two_replicas):
    mirrored = two_replicas["mirrored"]
    assert any(
        "--distribute mirrored: 2 replica(s), 2 image(s) of each batch per replica" in line
        for line in mirrored["lines"]
    )
    assert math.isfinite(mirrored["best_loss"])
    assert len(mirrored["rows"]) == 2
    assert all(mirrored["synchronized"]) and mirrored["synchronized"]  # batch statistics over the whole batch
    assert not any(two_replicas["none"]["synchronized"])
    low, high = mirrored["maps"]  # model.keras reloaded and predicted
    assert 0.0 <= low <= high <= 1.0


def test_mirrored_losses_match_one_device(two_replicas):
    none, mirrored = two_replicas["none"]["rows"], two_replicas["mirrored"]["rows"]
    for epoch in (0, 1):
        for key in ("loss", "val_loss", "dice_coefficient"):
            assert float(mirrored[epoch][key]) == pytest.approx(float(none[epoch][key]), rel=1e-4), (epoch, key)
        assert float(mirrored[epoch]["val_dice_coefficient"]) == pytest.approx(
            float(none[epoch]["val_dice_coefficient"]), abs=0.01
        )


def test_batch_not_a_multiple_of_the_replicas_is_refused(two_replicas):
    assert "--batch-size 3 is not a multiple of 2" in two_replicas["odd_batch"]


def test_an_odd_training_set_leaves_one_image_out_per_epoch(two_replicas):
    odd = two_replicas["odd"]
    assert len(odd["rows"]) == 2 and all(math.isfinite(float(row["loss"])) for row in odd["rows"])


# In this process: one CPU device


def test_one_device_is_the_same_as_none():
    assert distribution_strategy("none") is None
    assert distribution_strategy("mirrored") is None  # one CPU logical device here
    with pytest.raises(ConfigError, match="--distribute must be one of none, mirrored"):
        distribution_strategy("bogus")


def test_check_replicas():
    check_replicas(1, 3, 1)
    check_replicas(2, 4, 2)
    with pytest.raises(ConfigError, match="--batch-size 1 is not a multiple of 2"):
        check_replicas(2, 1, 10)
    with pytest.raises(ConfigError, match="only 1 training images"):
        check_replicas(2, 2, 1)


def test_training_stream_with_replicas_splits_evenly():
    rng = np.random.default_rng(0)
    images = rng.random((7, 8, 8, 1)).astype(np.float32)
    sizes = [len(x) for x, _ in training_dataset(images, images, 4, 0, None, epochs=2, replicas=2)]
    assert sizes == [4, 2, 4, 2]  # 6 of 7 images per epoch
    assert epoch_images(7, 2) == 6 and epoch_images(7, 1) == 7
    plain = [len(x) for x, _ in training_dataset(images, images, 4, 0, None, epochs=1)]
    assert plain == [4, 3]


def test_padded_validation_gives_the_same_loss():
    """Three validation cases padded to four for two replicas: the weights keep the mean over the three."""
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    padded = evaluation_data(images, masks, replicas=2)
    assert len(padded[0]) == 4 and np.array_equal(padded[0][3], images[0])
    assert padded[2].tolist() == pytest.approx([4 / 3, 4 / 3, 4 / 3, 0.0])
    settings = Settings(input_size=32, depth=2, base_filters=4, batch_size=2, dropout="none")
    model = build_model(settings, channels=1)
    compile_for(model, settings)
    plain = model.evaluate(*evaluation_data(images, masks), batch_size=2, verbose=0, return_dict=True)
    x, y, weights = evaluation_data(images, masks, replicas=2)
    weighted = model.evaluate(x, y, sample_weight=weights, batch_size=2, verbose=0, return_dict=True)
    assert weighted["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert weighted["dice_coefficient"] == pytest.approx(plain["dice_coefficient"], rel=1e-6)
    keras.backend.clear_session()


# The command line


def parser():
    return build_parser(Prostate.DATASET, Prostate.STUDY, Prostate.DEMO, Prostate.task)


def test_unknown_distribute_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--distribute", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --distribute: invalid choice: 'bogus'" in err and "mirrored" in err, err


def test_distribute_reaches_the_run_and_config(monkeypatch, tmp_path):
    assert parser().parse_args([]).distribute == "none"
    seen = {}

    def fake_run_plan(spec, settings, task, data_root, options):
        seen["options"] = options
        return {}

    monkeypatch.setattr("common.runs.pipeline.run_plan", fake_run_plan)
    argv = ["--data-root", str(tmp_path), "--out", str(tmp_path / "run"), "--distribute", "mirrored"]
    main(Prostate.DATASET, Prostate.STUDY, Prostate.DEMO, Prostate.task, argv)
    assert seen["options"].distribute == "mirrored"
    assert seen["options"].extra_config["distribute"] == "mirrored"  # recorded in config.json


def test_distribute_reaches_each_folds_trainer(tmp_path):
    """A cross-validation hands ``distribute`` to the trainer of every fold's networks (the ``train`` seam)."""

    class Stop(Exception):
        pass

    seen = {}

    def fake_train(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    options = RunOptions(folds=2, out=tmp_path / "cv", log=str, distribute="mirrored")
    with pytest.raises(Stop):
        crossval.run_cv_plan(SPEC, TINY, 1, make_toy_root(tmp_path / "data"), options, train=fake_train)
    assert seen["distribute"] == "mirrored"
