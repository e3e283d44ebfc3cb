"""The experiment command: --vary parsing, the variant grid, and one tiny experiment on the toy data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SPEC, TINY, make_toy_root

from common.datasets import DATASETS
from common.experiment import parse_assignment, run_experiment, variant_folder, variant_grid
from common.spec import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dropout=spatial,standard", ("dropout", ["spatial", "standard"])),
        ("convlstm=true,off", ("convlstm", ["on", "off"])),
        ("ct-window=40/400,off", ("ct_window", ["40/400", "off"])),
        ("dropout_rate=0.50,0.2", ("dropout_rate", ["0.5", "0.2"])),
        ("depth=5", ("depth", ["5"])),
    ],
)
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("dropout", "expected NAME=VALUE"),
        ("dropout=", "expected NAME=VALUE"),
        ("colour=red", "unknown setting 'colour'"),
        ("dropout=spatial,spatial", "a value is repeated"),
        ("convlstm=on,true", "a value is repeated"),
        ("depth=0,3", "depth: expected an integer >= 1, got 0"),
    ],
)
def test_parse_assignment_refuses(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_assignment(text)


A = ("dropout", ["spatial", "standard"])
B = ("convlstm", ["on", "off"])
C = ("depth", ["4", "3", "2"])


@pytest.mark.parametrize(
    "varies, design, expected",
    [
        ([], "grid", [{}]),
        ([A], "grid", [{"dropout": "spatial"}, {"dropout": "standard"}]),
        (
            [A, B],
            "grid",
            [
                {"dropout": "spatial", "convlstm": "on"},
                {"dropout": "spatial", "convlstm": "off"},
                {"dropout": "standard", "convlstm": "on"},
                {"dropout": "standard", "convlstm": "off"},
            ],
        ),
        (
            [A, C],
            "one-at-a-time",
            [
                {"dropout": "spatial", "depth": "4"},
                {"dropout": "standard", "depth": "4"},
                {"dropout": "spatial", "depth": "3"},
                {"dropout": "spatial", "depth": "2"},
            ],
        ),
    ],
)
def test_variant_grid(varies, design, expected):
    assert variant_grid(varies, design) == expected


def test_variant_grid_refuses():
    with pytest.raises(ConfigError, match="--vary dropout given more than once"):
        variant_grid([A, ("dropout", ["none"])])
    with pytest.raises(ConfigError, match="--design 'random'"):
        variant_grid([A], "random")


def test_variant_folder_names_are_safe():
    assert variant_folder(3, {"ct_window": "40/400", "loss": "dice+bce"}) == "03_ct_window=40-400_loss=dice+bce"
    assert variant_folder(1, {}) == "01_base"


def test_experiment_on_toy_data(tmp_path):
    root = make_toy_root(tmp_path / "data")
    out = tmp_path / "exp"
    lines = []
    comparison = run_experiment(
        SPEC,
        TINY.replace(epochs=1),
        1,
        root,
        [("dropout", ["spatial", "none"])],
        folds=2,
        experts=[1],
        seed=2,
        out=out,
        plots=False,
        log=lines.append,
        extra_config={"command": ["python", "-m", "common.experiment", "..."]},
    )
    splits = json.loads((out / "splits.json").read_text())["folds"]
    variants = json.loads((out / "experiment.json").read_text())["variants"]
    assert [v["name"] for v in variants] == ["dropout=spatial", "dropout=none"]
    for variant in variants:
        folder = out / variant["folder"]
        assert json.loads((folder / "splits.json").read_text())["folds"] == splits  # the same folds
        assert json.loads((folder / "config.json").read_text())["settings"]["dropout"] == variant["changes"]["dropout"]
        assert (folder / "cv_results.json").is_file()
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["variant"] for r in rows] == ["dropout=spatial", "dropout=none"]
    for row, variant in zip(rows, variants, strict=True):
        cv = json.loads((out / variant["folder"] / "cv_results.json").read_text())
        assert float(row["mean"]) == pytest.approx(cv["mean"])
        assert int(row["networks"]) == 2
    paired = comparison["paired"]["dropout=none"]
    assert len(paired["fold_differences"]) == 2
    table = (out / "comparison.md").read_text()
    assert "| dropout=none |" in table and "Command: `python -m common.experiment ...`" in table
    assert lines[-1] in table

    # resuming a finished experiment retrains nothing and rebuilds the same table
    again = []
    run_experiment(
        SPEC,
        TINY.replace(epochs=1),
        1,
        root,
        [("dropout", ["spatial", "none"])],
        folds=2,
        experts=[1],
        seed=2,
        out=out,
        resume=True,
        plots=False,
        log=again.append,
    )
    assert sum("already done" in line for line in again) == 4
    with pytest.raises(ConfigError, match="made with other seed"):
        run_experiment(SPEC, TINY.replace(epochs=1), 1, root, [("dropout", ["spatial", "none"])], folds=2,
                       experts=[1], seed=3, out=out, resume=True, log=str)  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "kidney", "--vary", "dropout=gaussian"], "dropout: expected one of spatial, standard, none"),
        (["--dataset", "brain-growth", "--vary", "ct_window=40/400"], "brain-growth is MRI, not CT"),
        (["--dataset", "kidney", "--set", "depth=3,4"], "--set depth: give one value"),
        (["--dataset", "kidney", "--data-root", "{tmp}/nothing"], "nothing"),
        (["--vary", "dropout=spatial,none"], f"give --dataset ({', '.join(DATASETS)})"),
        (["--dataset", "kidney", "--vary", "slice_margin=0,5"], "kidney is a dataset of 2D images, not of volumes"),
        (["--resume", "{tmp}/old"], "--resume {tmp}/old: not an experiment folder"),
        # a resume reads the dataset from experiment.json: the --vary refusal shows it got that far
        (["--resume", "{tmp}/exp", "--vary", "depth=3"], "leave out --vary and --set"),
        (["--dataset", "prostate", "--resume", "{tmp}/exp"], "the experiment is on kidney, not prostate"),
    ],
)
def test_command_line_refusals(tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    message = message.replace("{tmp}", str(tmp_path))
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "experiment.json").write_text(json.dumps({"dataset": "kidney"}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "common.experiment", *argv], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any folder is made


@pytest.mark.parametrize("flags, verbose", [([], 2), (["--quiet"], 0)])
def test_per_epoch_lines_show_unless_quiet_as_in_the_scripts(monkeypatch, tmp_path, flags, verbose):
    import common.experiment as experiment

    seen = {}
    monkeypatch.setattr(experiment, "run_experiment", lambda *args, **options: seen.update(options))
    experiment.main(["--dataset", "kidney", "--data-root", str(tmp_path), *flags])
    assert seen["verbose"] == verbose  # run_experiment hands its options to every variant's cross-validation


def test_verbose_is_gone_in_favour_of_quiet(capsys):
    import common.experiment as experiment

    with pytest.raises(SystemExit) as caught:
        experiment.main(["--dataset", "kidney", "--verbose"])
    assert caught.value.code == 2 and "unrecognized arguments: --verbose" in capsys.readouterr().err


@pytest.mark.parametrize("verbose", [0, 2])
def test_every_variant_runs_with_the_experiments_verbosity(monkeypatch, tmp_path, verbose):
    import common.experiment as experiment
    import common.runs.crossval as crossval

    class Reached(Exception):
        pass

    def first_variant(spec, settings, task, data_root, options):
        raise Reached(options)

    monkeypatch.setattr(experiment, "open_experiment", lambda *args: (tmp_path, [{"fold": k} for k in (1, 2, 3)]))
    monkeypatch.setattr(crossval, "run_cv_plan", first_variant)
    with pytest.raises(Reached) as caught:
        run_experiment(SPEC, TINY, 1, tmp_path, [("dropout", ["spatial", "none"])], verbose=verbose, log=str)
    assert caught.value.args[0].verbose == verbose
