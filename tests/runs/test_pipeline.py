"""run_task on a tiny hand-made QUBIQ tree: splits, a missing expert, the run folder, refusals."""

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import SPEC, TINY, make_toy_root

from common.data.cases import DataError
from common.runs.folder import new_run_dir
from common.runs.pipeline import check_experts, check_task, choose_held_out, run_task
from common.score import score_folder
from common.spec import ConfigError, DatasetSpec


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("qubiq"))


def test_run_task_end_to_end(toy_root, tmp_path):
    lines = []
    results = run_task(SPEC, TINY, 1, toy_root, seed=3, out=tmp_path / "run", verbose=0, log=lines.append)
    run = tmp_path / "run"
    for name in (
        "config.json",
        "results.json",
        "dice_matrix.csv",
        "run.log",
        "experts/seg01/model.keras",
        "experts/seg01/training_log.csv",
        "experts/seg01/result.json",
        "experts/seg02/model.keras",
        "experts/seg02/training_log.csv",
        "plots/dice_vs_threshold.png",
        "plots/training_curves.png",
    ):
        assert (run / name).is_file(), name
    assert not list(run.rglob("backup*")) and not list(run.rglob(".*.tmp")) and not list(run.rglob("*.partial.*"))
    config = json.loads((run / "config.json").read_text())
    split = config["split"]
    held = set(split["held_out"])
    assert len(held) == 2 and held == set(results["cases"])
    for expert, parts in split["per_expert"].items():
        assert not held & set(parts["train"]) and not held & set(parts["validation"]), expert
    if "case03" not in held:  # expert 2 lacks case03: left out of its training only
        assert "case03" in split["per_expert"]["seg01"]["train"]
        assert "case03" not in split["per_expert"]["seg02"]["train"]
    assert config["settings"]["input_size"] == 16 and config["versions"]["tensorflow"]
    saved = json.loads((run / "results.json").read_text())
    assert saved["score"] == pytest.approx(results["score"])
    assert 0 <= saved["score"] <= 1
    assert set(saved["per_expert"]) == {"seg01", "seg02"}
    assert len(saved["per_threshold"]) == 9
    assert saved["score"] == pytest.approx(np.mean(saved["dice"]))
    csv_lines = (run / "dice_matrix.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,t=0.1") and csv_lines[-1].startswith("mean,")
    assert len(csv_lines) == 2 + 2
    for case_id in results["cases"]:
        assert (run / "plots" / f"case_{case_id}.png").is_file()
    # predictions on the case's own grid, overlaying the image, for held-out and validation cases
    for case_id in [*results["cases"], "case06", "case07"]:
        folder = run / "predictions" / "toy" / case_id
        image = nib.load(next(toy_root.rglob(f"{case_id}/image.nii.gz")))
        for path in (
            folder / "task01.nii.gz",
            folder / "experts" / "task01_seg01.nii.gz",
            folder / "experts" / "task01_seg02.nii.gz",
        ):
            written = nib.load(path)
            assert written.shape == image.shape and np.array_equal(written.affine, image.affine), path
            data = written.get_fdata()
            assert written.get_data_dtype() == np.float32 and 0 <= data.min() and data.max() <= 1
    # the standalone scorer on the written maps reproduces the run's score exactly
    rescored = score_folder(run / "predictions", toy_root, "toy", "train", 1)
    assert rescored["score"] == results["score"]
    assert rescored["dice"] == results["dice"]
    log_text = (run / "run.log").read_text()
    assert "seg02 epoch 2/2" in log_text and "QUBIQ score" in log_text
    last = lines[-1].splitlines()[-1]
    assert last.startswith("QUBIQ score") and f"{results['score']:.4f}" in last
    assert any("[expert 2/2] seg02: done" in line for line in lines)


def test_refuses_a_non_empty_out_folder(toy_root, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        run_task(SPEC, TINY, 1, toy_root, out=tmp_path / "run", verbose=0, log=lambda _: None)
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_new_run_dir_never_reuses(tmp_path):
    base = tmp_path / "kidney-task1-x"
    base.mkdir()
    (tmp_path / "kidney-task1-x-2").mkdir()
    assert new_run_dir(base) == tmp_path / "kidney-task1-x-3"


def test_held_out_follows_the_seed():
    ids = [f"case{i:02d}" for i in range(1, 21)]
    assert choose_held_out(ids, 4, seed=0) == choose_held_out(ids, 4, seed=0)
    assert choose_held_out(ids, 4, seed=0) != choose_held_out(ids, 4, seed=1)
    with pytest.raises(DataError, match="cannot hold out 20 of 20"):
        choose_held_out(ids, 20, seed=0)


def test_task_and_expert_checks():
    prostate = DatasetSpec(
        name="prostate",
        title="P",
        modality="MRI",
        channels=1,
        tasks=2,
        experts=6,
        image_shape=(640, 640),
        n_train=48,
        n_validation=7,
        n_test=13,
        n_held_out=7,
    )
    with pytest.raises(ConfigError, match="task 3 does not exist for prostate; valid tasks: 1, 2"):
        check_task(prostate, 3)
    with pytest.raises(ConfigError, match="expert.* 7 do not exist.*valid experts: 1, 2, 3, 4, 5, 6"):
        check_experts(prostate, [1, 7])
    assert check_experts(prostate, [3, 1, 3]) == [1, 3]
    assert check_experts(prostate, None) == [1, 2, 3, 4, 5, 6]


def test_unwritable_output_fails_before_training(toy_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to output folder"):
        run_task(SPEC, TINY, 1, toy_root, out=blocker / "run", verbose=0, log=lambda _: None)
    assert blocker.read_text() == "not a folder"


def test_resume_refuses_another_configuration(toy_root, tmp_path):
    run = tmp_path / "run"
    run_task(
        SPEC,
        TINY.replace(epochs=1),
        1,
        toy_root,
        experts=[1],
        out=run,
        verbose=0,
        plots=False,
        tensorboard=True,
        log=lambda _: None,
    )
    assert any((run / "tensorboard" / "seg01").rglob("events.out.tfevents.*"))
    before = (run / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="another configuration.*settings"):
        run_task(
            SPEC, TINY.replace(epochs=3), 1, toy_root, experts=[1], out=run, resume=True, verbose=0, log=lambda _: None
        )
    with pytest.raises(ConfigError, match="another configuration.*seed"):
        run_task(
            SPEC,
            TINY.replace(epochs=1),
            1,
            toy_root,
            experts=[1],
            seed=5,
            out=run,
            resume=True,
            verbose=0,
            log=lambda _: None,
        )
    with pytest.raises(ConfigError, match="not a run folder"):
        run_task(SPEC, TINY, 1, toy_root, out=tmp_path / "elsewhere", resume=True, verbose=0, log=lambda _: None)
    assert (run / "results.json").read_bytes() == before


def test_resume_reuses_finished_experts(toy_root, tmp_path):
    run = tmp_path / "run"
    first = run_task(SPEC, TINY, 1, toy_root, out=run, verbose=0, plots=False, log=lambda _: None)
    lines = []
    again = run_task(SPEC, TINY, 1, toy_root, out=run, resume=True, verbose=0, plots=False, log=lines.append)
    assert sum("already trained" in line for line in lines) == 2
    assert not any("training on" in line for line in lines)
    assert again["score"] == first["score"]
