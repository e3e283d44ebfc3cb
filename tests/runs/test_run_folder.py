"""What meets a run folder: a failed start's leftovers, unreadable saved networks, a second process, a full disk.

One tiny run is trained once (module fixture) and copied for each test that needs a trained folder.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import SPEC, TINY, make_toy_root

from common.data.cases import DataError
from common.runs.folder import (
    check_resume_folder,
    config_differences,
    failed_start,
    network_files,
    prepare_run_dir,
    unreadable_network,
)
from common.runs.pipeline import run_task
from common.spec import ConfigError
from common.training.files import NetworkFiles

SETTINGS = TINY.replace(epochs=1)


def quiet(_):
    pass


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("qubiq"))


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory):
    """A finished one-expert run of the toy data."""
    run = tmp_path_factory.mktemp("trained") / "run"
    run_task(SPEC, SETTINGS, 1, toy_root, experts=[1], out=run, verbose=0, log=quiet, plots=False)
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# A failed start never blocks the same command


@pytest.mark.parametrize(
    "left, reusable",
    [
        ({}, []),
        ({"run.log": "x"}, ["run.log"]),
        ({"config.json": "{}", "run.log": "x", "experts/seg01/.lock": ""}, ["config.json", "experts", "run.log"]),
        ({"config.json": "{}", "experts/seg01/model.keras": "x"}, None),  # a trained network
        ({"config.json": "{}", "experts/seg01/backup.json": "{}"}, None),  # a partly trained one
        ({"results.json": "{}"}, None),  # a scored run
        ({"notes.txt": "mine"}, None),  # someone else's file
        ({"fold1/config.json": "{}", "splits.json": "{}"}, ["fold1", "splits.json"]),
    ],
)
def test_failed_start(tmp_path, left, reusable):
    for name, text in left.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert failed_start(tmp_path) == reusable


def test_a_folder_left_by_a_failed_start_is_reused_and_said_so(toy_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.log").write_text("2026-01-01T00:00:00 Toy, task 1: new run folder\n")
    (out / "config.json").write_text(json.dumps({"dataset": {"name": "toy"}, "settings": {"epochs": 99}}))
    lines = []
    results = run_task(SPEC, SETTINGS, 1, toy_root, experts=[1], out=out, verbose=0, log=lines.append, plots=False)
    assert any(line.startswith(f"reusing output folder {out}: an earlier start left it") for line in lines)
    assert "reusing output folder" in (out / "run.log").read_text()  # the log keeps its earlier lines, too
    assert (out / "run.log").read_text().startswith("2026-01-01T00:00:00 Toy")
    assert json.loads((out / "config.json").read_text())["settings"]["epochs"] == 1
    assert (out / "results.json").is_file() and 0 <= results["score"] <= 1


def test_a_finished_or_foreign_folder_is_still_refused(trained, tmp_path):
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        prepare_run_dir(trained, SPEC, 1)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        prepare_run_dir(tmp_path, SPEC, 1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_interrupted_folder_points_to_resume(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    (run / "results.json").unlink()
    with pytest.raises(FileExistsError, match=f"use --resume {run}"):
        prepare_run_dir(run, SPEC, 1)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: None, "not a run folder (no such folder)"),
        (lambda p: p.write_text("x"), "is a file, not a run folder"),
        (lambda p: (p.mkdir(), (p / "run.log").write_text("x")), "stopped before writing its configuration"),
        # empty (hidden entries aside): not called a failed start; a new run can start there
        (lambda p: p.mkdir(), "the folder is empty: not a run folder (no config.json), nothing to resume; to start"),
        (lambda p: (p.mkdir(), (p / ".DS_Store").write_text("")), "the folder is empty: not a run folder"),
        (lambda p: (p.mkdir(), (p / "model.keras").write_text("x")), "not a run folder (no config.json there)"),
    ],
)
def test_resume_of_what_is_not_a_run_folder(tmp_path, make, expected):
    folder = tmp_path / "run"
    make(folder)
    with pytest.raises(ConfigError) as caught:
        check_resume_folder(folder)
    assert str(caught.value).startswith(f"--resume {folder}") and expected in str(caught.value)


def test_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        prepare_run_dir(tmp_path / "file", SPEC, 1)
    assert (tmp_path / "file").read_text() == "mine"


# ---------------------------------------------------------------------------------------------------------
# --resume: only the differing keys; unreadable saved networks named, with the way to retrain one


@pytest.mark.parametrize(
    "saved, now, expected",
    [
        (
            {"settings": {"input_size": 16, "epochs": 1}},
            {"settings": {"input_size": 16, "epochs": 2}},
            ["settings.epochs: 1 -> 2"],
        ),
        ({"seed": 3, "task": 1}, {"seed": 4, "task": 1}, ["seed: 3 -> 4"]),
        ({"experts": [1, 2]}, {"experts": [1]}, ["experts: [1, 2] -> [1]"]),
        ({"data_root": "/a"}, {"data_root": "/b"}, ['data_root: "/a" -> "/b"']),
        ({"seed": 3}, {"seed": 3}, []),
    ],
)
def test_config_differences_name_only_the_differing_keys(saved, now, expected):
    assert config_differences(saved, now, ("dataset", "task", "experts", "seed", "settings", "data_root")) == expected


def test_resume_with_a_changed_option_names_only_that_key(trained, toy_root):
    with pytest.raises(ConfigError) as caught:
        run_task(SPEC, SETTINGS.replace(epochs=2), 1, toy_root, experts=[1], out=trained, resume=True, log=quiet)
    assert "(settings.epochs: 1 -> 2)" in str(caught.value)
    assert "input_size" not in str(caught.value)


@pytest.mark.parametrize("damage", ["truncated model", "missing model", "truncated backup"])
def test_resume_refuses_an_unreadable_saved_network_naming_it(trained, toy_root, tmp_path, damage):
    run = copy_of(trained, tmp_path)
    (run / "results.json").unlink()
    network = run / "experts" / "seg01"
    if damage == "truncated model":
        data = (network / "model.keras").read_bytes()
        (network / "model.keras").write_bytes(data[: len(data) // 3])
        bad = network / "model.keras"
    elif damage == "missing model":
        (network / "model.keras").unlink()
        bad = network / "model.keras"
    else:  # an interrupted training whose backup was cut short
        (network / "result.json").unlink()
        (network / "backup.json").write_text(json.dumps({"epoch": 1, "best": 0.5}))
        (network / "backup.keras").write_bytes(b"PK\x03\x04 cut short")
        bad = network / "backup.keras"
    before = snapshot(run)
    with pytest.raises(DataError) as caught:
        run_task(SPEC, SETTINGS, 1, toy_root, experts=[1], out=run, resume=True, verbose=0, log=quiet)
    message = str(caught.value)
    assert f"{bad} cannot be read" in message
    assert f"mv {network} " in message and f"then --resume {run} again (only that network is trained again)" in message
    assert snapshot(run) == before  # refused before writing anything


@pytest.mark.parametrize("folder", ["experts/seg02", "network"])
def test_an_unreadable_network_is_named_with_how_to_train_it_anew(tmp_path, folder):
    """The run folder's module words the refusal (the trainer and the predictor are handed it): the file,
    the loader's error, and the move that makes --resume train that network alone again."""
    run = tmp_path / "run"
    network = run / folder
    error = unreadable_network(network / "model.keras", ValueError("not a zip file"))
    assert isinstance(error, DataError)
    aside = tmp_path / f"run-{network.name}-unreadable"
    assert str(error) == (
        f"{network / 'model.keras'} cannot be loaded (ValueError: not a zip file); to train that network anew: "
        f"mv {network} {aside}, then --resume {run} again (only that network is trained again)"
    )
    backup = network_files(network)
    assert str(backup.unreadable(backup.backup, OSError("truncated"))).startswith(f"{backup.backup} cannot be loaded")


def test_a_network_outside_a_run_is_refused_with_a_plain_hint(tmp_path):
    files = NetworkFiles(tmp_path, tmp_path / "m.keras", tmp_path / "b.keras", tmp_path / "b.json", tmp_path / "l.csv")
    message = str(files.unreadable(files.backup, ValueError("bad")))
    assert message.endswith(f"to train that network anew: remove {tmp_path}, then train it again")


def test_the_retrain_hint_works(trained, toy_root, tmp_path):
    run = copy_of(trained, tmp_path)
    (run / "results.json").unlink()
    (run / "experts" / "seg01" / "model.keras").write_bytes(b"broken")
    try:
        run_task(SPEC, SETTINGS, 1, toy_root, experts=[1], out=run, resume=True, verbose=0, log=quiet, plots=False)
    except DataError as error:
        hint = str(error).split("to train that network anew: ")[1]
    source, target = hint.split()[1:3]
    os.rename(source, target.rstrip(","))
    results = run_task(
        SPEC, SETTINGS, 1, toy_root, experts=[1], out=run, resume=True, verbose=0, log=quiet, plots=False
    )
    assert (run / "experts" / "seg01" / "model.keras").stat().st_size > 1000 and 0 <= results["score"] <= 1


# ---------------------------------------------------------------------------------------------------------
# A second process training the same network


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from common.runs.locks import NetworkLock
    with NetworkLock(Path(sys.argv[1]), "seg01"):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_a_second_process_on_the_same_network_is_refused_naming_the_first(trained, toy_root, tmp_path):
    run = copy_of(trained, tmp_path)
    (run / "results.json").unlink()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run / "experts" / "seg01" / ".lock")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        with pytest.raises(ConfigError, match=rf"pid {holder.pid}\b|process {holder.pid}\b"):
            run_task(SPEC, SETTINGS, 1, toy_root, experts=[1], out=run, resume=True, verbose=0, log=quiet)
        assert snapshot(run) == before  # no log line, no file of the network touched
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its lock is taken over
    results = run_task(
        SPEC, SETTINGS, 1, toy_root, experts=[1], out=run, resume=True, verbose=0, log=quiet, plots=False
    )
    assert 0 <= results["score"] <= 1


# ---------------------------------------------------------------------------------------------------------
# A full disk


def test_a_full_disk_is_one_line_naming_the_folder_and_the_run_stays_resumable(trained, toy_root, tmp_path, capsys):
    import errno

    import Kidney  # noqa: F401  (the scripts' command line; the toy spec goes through common.cli.main)
    from common import storage
    from common.cli import main

    run = copy_of(trained, tmp_path)
    (run / "results.json").unlink()
    real = storage.os.replace

    def full(source, target, *args, **kwargs):
        if Path(target).name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(source, target, *args, **kwargs)

    argv = ["--resume", str(run), "--quiet", "--no-plots"]
    storage.os.replace = full
    try:
        with pytest.raises(SystemExit) as caught:
            main(SPEC, SETTINGS, SETTINGS, 1, argv)
    finally:
        storage.os.replace = real
    error = capsys.readouterr().err
    assert caught.value.code == 2 and "Traceback" not in error
    assert "No space left on device" in error and str(run) in error and f"--resume {run}" in error
    assert not (run / "results.json").exists() and not list(run.rglob(".*.tmp"))
    results = main(SPEC, SETTINGS, SETTINGS, 1, argv)
    assert (run / "results.json").is_file() and results["score"] == json.loads((trained / "results.json").read_text())[
        "score"
    ]
