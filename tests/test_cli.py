"""The dataset scripts' command line: help, overrides, and refusals with a clear message."""

import subprocess
import sys
from pathlib import Path

import pytest

import Prostate
from common.cli import build_parser, demo_kind, demo_kinds, resolve_data_root, resolve_settings
from common.spec import ConfigError
from common.switches import default_preset

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "Prostate.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_invalid_task_lists_the_valid_ones(tmp_path):
    result = run_script("--task", "3", "--data-root", str(tmp_path))
    assert result.returncode == 2
    assert "task 3 does not exist for prostate; valid tasks: 1, 2" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_missing_data_root(tmp_path):
    result = run_script("--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "nowhere does not exist" in result.stderr and "--data-root" in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_expert(tmp_path):
    result = run_script("--experts", "1,9", "--data-root", str(tmp_path))
    assert result.returncode == 2 and "valid experts: 1, 2, 3, 4, 5, 6" in result.stderr


def test_help_shows_defaults():
    result = run_script("-h")
    assert result.returncode == 0
    for flag in (
        "--task",
        "--data-root",
        "--demo",
        "--experts",
        "--epochs",
        "--batch-size",
        "--image-size",
        "--seed",
        "--out",
        "--preset",
        "--folds",
        "--splits",
        "--dropout",
        "--convlstm",
        "--patience",
    ):
        assert flag in result.stdout
    text = " ".join(result.stdout.split())
    epochs = f"(default preset: {Prostate.STUDY.epochs}; study: {Prostate.STUDY.epochs}; demo: {Prostate.DEMO.epochs})"
    assert epochs in text
    assert "--ct-window" not in text  # MRI
    assert "--slice-margin" not in text  # 2D images


def test_the_volume_scripts_offer_a_slice_margin_and_their_demo_root_is_the_2021_one():
    from common.datasets import PANCREAS

    parser = build_parser(PANCREAS.spec, PANCREAS.study, PANCREAS.demo, 1)
    help_text = " ".join(parser.format_help().split())
    assert "--slice-margin N|all" in help_text and "--ct-window" in help_text
    assert "held-out training volumes (trained as slices" in help_text
    args = parser.parse_args(["--demo", "--slice-margin", "all"])
    args.seed = 3
    assert resolve_data_root(args, PANCREAS.spec) == Path("demo_data/2021-seed3")
    assert resolve_settings(args, PANCREAS.study, PANCREAS.demo, PANCREAS.spec).slice_margin is None


def parse(*argv):
    parser = build_parser(Prostate.DATASET, Prostate.STUDY, Prostate.DEMO, Prostate.task)
    return parser.parse_args(list(argv))


def test_presets_and_overrides():
    assert resolve_settings(parse(), Prostate.STUDY, Prostate.DEMO) == default_preset(Prostate.STUDY)
    assert resolve_settings(parse("--preset", "study"), Prostate.STUDY, Prostate.DEMO) == Prostate.STUDY
    assert resolve_settings(parse("--demo"), Prostate.STUDY, Prostate.DEMO) == Prostate.DEMO
    settings = resolve_settings(
        parse("--demo", "--epochs", "3", "--image-size", "64", "--batch-size", "2"), Prostate.STUDY, Prostate.DEMO
    )
    assert (settings.epochs, settings.input_size, settings.batch_size) == (3, 64, 2)
    assert settings.convlstm == Prostate.STUDY.convlstm


def test_image_size_must_suit_the_depth():
    with pytest.raises(ConfigError, match="--image-size 100 is not divisible by 2\\*\\*depth = 32"):
        resolve_settings(parse("--image-size", "100"), Prostate.STUDY, Prostate.DEMO)


def test_data_root_resolution(monkeypatch):
    monkeypatch.delenv("QUBIQ_DATA", raising=False)
    assert resolve_data_root(parse()) == Path("Project_data")
    assert resolve_data_root(parse("--demo", "--seed", "4")) == Path("demo_data/seed4")
    assert resolve_data_root(parse("--demo", "synthetic", "--seed", "4")) == Path("demo_data/seed4")
    monkeypatch.setenv("QUBIQ_DATA", "/data/qubiq")
    assert resolve_data_root(parse()) == Path("/data/qubiq")
    assert resolve_data_root(parse("--data-root", "x")) == Path("x")


@pytest.mark.parametrize("bad", ["--experts=a,b", "--epochs=0", "--batch-size=-1"])
def test_malformed_options(bad):
    result = run_script(bad)
    assert result.returncode == 2 and bad.split("=")[0] in result.stderr


def test_resume_needs_a_run_folder(tmp_path):
    result = run_script("--resume", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "nothing: not a run folder (no such folder)" in result.stderr


def test_resume_refuses_another_dataset(tmp_path):
    import json

    import Kidney

    run = tmp_path / "run"
    run.mkdir()
    config = {
        "dataset": Kidney.DATASET.to_dict(),
        "settings": Kidney.DEMO.to_dict(),
        "task": 1,
        "seed": 0,
        "experts": [1],
        "data_root": str(tmp_path),
    }
    (run / "config.json").write_text(json.dumps(config))
    before = (run / "config.json").read_bytes()
    result = run_script("--resume", str(run))
    assert result.returncode == 2
    assert "the run is of dataset kidney, not prostate" in result.stderr
    assert (run / "config.json").read_bytes() == before  # untouched
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_demo_kinds():
    """The MNI152 demo draws single-channel MRI with one task: brain-growth only."""
    import Brain_Growth
    import Kidney

    assert demo_kinds(Brain_Growth.DATASET) == ["synthetic", "mni152"]
    assert [demo_kinds(m.DATASET) for m in (Kidney, Prostate)] == [["synthetic"]] * 2
    args = build_parser(Brain_Growth.DATASET, Brain_Growth.STUDY, Brain_Growth.DEMO, 1).parse_args(
        ["--demo", "mni152", "--seed", "2"]
    )
    assert args.demo == "mni152" and resolve_data_root(args) == Path("demo_data/mni152-seed2")
    assert demo_kind(True) == "synthetic" and demo_kind("mni152") == "mni152" and demo_kind(False) is None
    result = run_script("--demo", "mni152")
    assert result.returncode == 2 and "--demo: invalid choice: 'mni152'" in result.stderr


def refusal(argv, capsys):
    """``Prostate.py ARGV`` in this process: the exit status and what it printed to stderr."""
    from common.cli import main

    with pytest.raises(SystemExit) as caught:
        main(Prostate.DATASET, Prostate.STUDY, Prostate.DEMO, 1, argv)
    return caught.value.code, capsys.readouterr().err


def folder_with(path, **files):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name.replace("__", ".")).write_text(text)
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda t: ["--out", str(folder_with(t / "d") / "file"), "--data-root", str(t)], "--out {t}/d/file is a file"),
        (lambda t: ["--data-root", str(t / "d" / "file")], "--data-root {t}/d/file is a file"),
        (lambda t: ["--resume", str(folder_with(t / "run", run__log="x"))], "stopped before writing its configuration"),
        # a folder the user made: nothing started there, so no failed start is claimed
        (lambda t: ["--resume", str(folder_with(t / "new"))], "--resume {t}/new: the folder is empty: not a run"),
        (lambda t: ["--resume", str(t / "d" / "file")], "--resume {t}/d/file is a file, not a run folder"),
        (lambda t: ["--data-root", str(folder_with(t / "training_data_v3_QC" / "prostate", x=""))], "pass --data-root"),
    ],
)
def test_refusals_are_one_line_naming_the_option(tmp_path, capsys, make, expected):
    (tmp_path / "d").mkdir(exist_ok=True)
    (tmp_path / "d" / "file").write_text("mine")
    argv = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, error = refusal(argv, capsys)
    assert code == 2 and "Traceback" not in error
    assert expected.format(t=tmp_path) in error and len(error.strip().splitlines()) == 1, error
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created or changed
    assert (tmp_path / "d" / "file").read_text() == "mine"
