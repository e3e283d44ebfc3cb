"""python -m common.predict: a run's (or every fold's) networks applied to new images, and every refusal.

Shared trained runs: one tiny run and one 2-fold cross-validation trained here on the toy data (CT window,
no flips, as kidney), and the finished legacy run of ``tests/runs/legacy_runs`` (trained with flips,
``fit=crop``, on TensorFlow), whose networks also predict on JAX and PyTorch (marked ``backend``).
"""

import errno
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import SPEC, TINY, make_toy_root, write_nifti

from common.data.cases import DataError
from common.evaluation.ensemble import binary_entropy_bits
from common.evaluation.predictions import prediction_path, read_prediction
from common.predict import main
from common.runs import predict as predicting
from common.runs.crossval import run_cross_validation
from common.runs.pipeline import run_task
from common.score import score_folder
from common.spec import ConfigError
from common.storage import StorageError

LEGACY = Path(__file__).resolve().parent / "legacy_runs"
KIDNEY_LIKE = TINY.replace(epochs=1, flip=False, ct_window=(-0.2, 0.8))


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def runs(toy_root, tmp_path_factory):
    """A finished run and a 2-fold cross-validation of the kidney-like settings (the same traced network)."""
    top = tmp_path_factory.mktemp("runs")
    options = dict(verbose=0, log=quiet, plots=False)
    run_task(SPEC, KIDNEY_LIKE, 1, toy_root, seed=3, out=top / "run", **options)
    run_cross_validation(SPEC, KIDNEY_LIKE, 1, toy_root, 2, seed=1, out=top / "cv", **options)
    run_task(SPEC, KIDNEY_LIKE.replace(strategy="multi-head"), 1, toy_root, seed=3, out=top / "heads", **options)
    return {"run": top / "run", "cv": top / "cv", "heads": top / "heads"}


def linked_cases(folder: Path, toy_root: Path, case_ids: list[str]) -> Path:
    """A QUBIQ-like input folder of links to the toy data's case folders (kept on another disk, say)."""
    folder.mkdir()
    for case_id in case_ids:
        (folder / case_id).symlink_to(next(toy_root.rglob(f"{case_id}/image.nii.gz")).parent)
    return folder


def held_out(run: Path) -> list[str]:
    return json.loads((run / "config.json").read_text())["split"]["held_out"]


def legacy_run(tmp_path: Path, name: str = "finished") -> Path:
    shutil.copytree(LEGACY / name, tmp_path / name)
    return tmp_path / name


# --- the property: predicting a run's held-out images gives its own maps, and its score ----------------------------


def reproduces_the_run(run: Path, toy_root: Path, tmp_path: Path, tta: str | None = "none") -> dict:
    """Its held-out images predicted: the run's own ensemble and members' maps to 1e-6, and its score."""
    cases = held_out(run)
    out = tmp_path / "out"
    source = linked_cases(tmp_path / "in", toy_root, cases)
    record = predicting.predict(run, source, out, log=None, tta=tta, save_members=True)
    assert [m for n in record["networks"] for m in n["members"]] == ["seg01", "seg02"]
    for case_id in cases:
        mine = read_prediction(out / case_id / "task01.nii.gz")
        theirs = read_prediction(prediction_path(run / "predictions", "toy", case_id, 1))
        np.testing.assert_allclose(mine, theirs, atol=1e-6, rtol=0)
        for expert in (1, 2):
            member = read_prediction(out / "members" / f"seg{expert:02d}" / case_id / "task01.nii.gz")
            own = read_prediction(prediction_path(run / "predictions", "toy", case_id, 1, expert))
            np.testing.assert_allclose(member, own, atol=1e-6, rtol=0)
        image = nib.load(next(toy_root.rglob(f"{case_id}/image.nii.gz")))
        written = nib.load(out / case_id / "task01.nii.gz")
        assert written.shape == image.shape and np.array_equal(written.affine, image.affine)
        assert written.get_data_dtype() == np.float32
    rescored = score_folder(out, toy_root, "toy", "train", 1, cases=cases)
    saved = json.loads((run / "results.json").read_text())
    assert rescored["score"] == pytest.approx(saved["score"], abs=1e-9)
    return record


def test_a_kidney_like_run_predicts_its_own_held_out_maps_and_score(runs, toy_root, tmp_path):
    record = reproduces_the_run(runs["run"], toy_root, tmp_path, tta=None)
    assert record["tta"] == "none"  # the default for a run trained without flips
    saved = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert saved["preprocessing"] == {"channels": 1, "ct_window": [-0.2, 0.8], "fit": "crop", "input_size": 16}


def test_a_multi_head_run_predicts_its_own_maps_with_its_heads_as_members(runs, toy_root, tmp_path):
    record = reproduces_the_run(runs["heads"], toy_root, tmp_path)
    assert [n["name"] for n in record["networks"]] == ["multi-head"] and record["strategy"] == "multi-head"


@pytest.mark.backend
def test_a_flip_trained_run_predicts_its_own_maps_on_every_backend(toy_root, tmp_path):
    """Trained on TensorFlow; its saved networks load on JAX and PyTorch and give the same maps."""
    run = legacy_run(tmp_path)
    reproduces_the_run(run, toy_root, tmp_path, tta="none")
    other = predicting.predict(
        run, linked_cases(tmp_path / "in2", toy_root, held_out(run)), tmp_path / "flip", log=None
    )
    assert other["tta"] == "flip"  # the default for a run trained with flips
    case_id = held_out(run)[0]
    assert not np.allclose(
        read_prediction(tmp_path / "flip" / case_id / "task01.nii.gz"),
        read_prediction(tmp_path / "out" / case_id / "task01.nii.gz"),
    )


def test_a_cross_validation_averages_every_fold_or_the_chosen_ones(runs, toy_root, tmp_path):
    image = next(toy_root.rglob("case02/image.nii.gz"))
    record = predicting.predict(runs["cv"], image, tmp_path / "all", log=None, save_members=True)
    members = ["fold1-seg01", "fold1-seg02", "fold2-seg01", "fold2-seg02"]
    assert record["kind"] == "cross-validation" and record["folds"] == [1, 2]
    assert [m for n in record["networks"] for m in n["members"]] == members
    maps = [read_prediction(tmp_path / "all" / "members" / m / "image.nii.gz") for m in members]
    np.testing.assert_allclose(read_prediction(tmp_path / "all" / "image.nii.gz"), np.mean(maps, axis=0), atol=1e-6)
    one = predicting.predict(runs["cv"], image, tmp_path / "two", log=None, folds=[2])
    assert one["folds"] == [2] and [n["fold"] for n in one["networks"]] == [2, 2]
    np.testing.assert_allclose(read_prediction(tmp_path / "two" / "image.nii.gz"), np.mean(maps[2:], axis=0), atol=1e-6)
    with pytest.raises(ConfigError, match="--fold 3: .* has folds 1 to 2"):
        predicting.predict(runs["cv"], image, tmp_path / "x", log=None, folds=[3])
    with pytest.raises(ConfigError, match="single run, not a cross-validation"):
        predicting.predict(runs["run"], image, tmp_path / "x", log=None, folds=[1])


# --- outputs ------------------------------------------------------------------------------------------------------


def test_flat_folder_names_members_uncertainty_and_predict_json(runs, toy_root, tmp_path):
    source = tmp_path / "scans"
    for name, case_id in (("Patient A.NII.GZ", "case01"), ("scan 1.nii", "case04")):  # any names
        image = nib.load(next(toy_root.rglob(f"{case_id}/image.nii.gz")))
        write_nifti(source / name, np.asanyarray(image.dataobj), image.affine)
    (source / "notes.txt").write_text("not an image")
    warned = []
    out = tmp_path / "out"
    plan = predicting.plan_prediction(
        runs["run"], source, out, predicting.PredictOptions(save_members=True, uncertainty=True)
    )
    record = predicting.run_prediction(plan, log=None, warn=warned.append)
    assert warned[0] == f"{source / 'notes.txt'}: not a NIfTI file (.nii.gz or .nii); skipped"
    assert len(warned) == 3 and all("larger than the run's 16 px input" in line for line in warned[1:])
    for name in ("Patient A", "scan 1"):
        mean = read_prediction(out / f"{name}.nii.gz")
        members = [read_prediction(out / "members" / m / f"{name}.nii.gz") for m in ("seg01", "seg02")]
        np.testing.assert_allclose(mean, np.mean(members, axis=0), atol=1e-6)
        np.testing.assert_allclose(read_prediction(out / "std" / f"{name}.nii.gz"), np.std(members, axis=0), atol=1e-6)
        np.testing.assert_allclose(
            read_prediction(out / "entropy" / f"{name}.nii.gz"), binary_entropy_bits(mean), atol=1e-6
        )
    saved = json.loads((out / "predict.json").read_text())
    assert saved["complete"] is True and saved["run"] == str(runs["run"].resolve())
    assert [i["name"] for i in saved["inputs"]] == ["Patient A", "scan 1"]
    assert saved["inputs"][1]["outputs"] == {
        "map": "scan 1.nii.gz",
        "std": "std/scan 1.nii.gz",
        "entropy": "entropy/scan 1.nii.gz",
        "member:seg01": "members/seg01/scan 1.nii.gz",
        "member:seg02": "members/seg02/scan 1.nii.gz",
    }
    assert saved["versions"]["keras_backend"] and record["seconds"]["load"] >= 0


def test_members_and_uncertainty_are_refused_for_a_run_of_one_map(toy_root, tmp_path):
    run = legacy_run(tmp_path, "soft-label")
    image = next(toy_root.rglob("case01/image.nii.gz"))
    for flag in ("save_members", "uncertainty"):
        with pytest.raises(ConfigError, match="has one map \\(soft-label, strategy soft-label\\) and no members"):
            predicting.predict(run, image, tmp_path / "out", log=None, **{flag: True})
    assert not (tmp_path / "out").exists()


# --- --continue ---------------------------------------------------------------------------------------------------


def test_continue_finishes_what_is_missing_and_refuses_other_options(runs, toy_root, tmp_path):
    source = linked_cases(tmp_path / "in", toy_root, ["case01", "case02", "case04"])
    out = tmp_path / "out"
    predicting.predict(runs["run"], source, out, log=None, uncertainty=True)
    with pytest.raises(ConfigError, match="exists and is not empty.*--continue"):
        predicting.predict(runs["run"], source, out, log=None, uncertainty=True)
    kept = (out / "case01" / "task01.nii.gz").stat().st_mtime_ns
    (out / "std" / "case02" / "task01.nii.gz").unlink()
    lines = []
    record = predicting.predict(runs["run"], source, out, log=lines.append, uncertainty=True, resume=True)
    assert record["predicted"] == 1 and "1 image(s) to predict, 2 already done" in lines[0]
    assert (out / "std" / "case02" / "task01.nii.gz").is_file()
    assert (out / "case01" / "task01.nii.gz").stat().st_mtime_ns == kept
    with pytest.raises(ConfigError, match="another prediction \\(tta: 'none' -> 'flip'"):
        predicting.predict(runs["run"], source, out, log=None, uncertainty=True, resume=True, tta="flip")
    with pytest.raises(ConfigError, match="another prediction \\(uncertainty: True -> False"):
        predicting.predict(runs["run"], source, out, log=None, resume=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no predict.json: not a prediction folder"):
        predicting.predict(runs["run"], source, tmp_path / "mine", log=None, resume=True)


def test_a_full_disk_leaves_no_partial_map_and_names_continue(runs, toy_root, tmp_path, monkeypatch):
    source = linked_cases(tmp_path / "in", toy_root, ["case01", "case02"])
    out = tmp_path / "out"
    real = predicting.write_map
    calls = []

    def full_after_one(path, array, reference, *layout):
        calls.append(path)
        if len(calls) > 1:
            raise StorageError(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, array, reference, *layout)

    monkeypatch.setattr(predicting, "write_map", full_after_one)
    monkeypatch.setattr(predicting, "CHUNK_IMAGES", 1)
    with pytest.raises(StorageError, match="No space left.*--continue"):
        predicting.predict(runs["run"], source, out, log=None)
    assert (out / "case01" / "task01.nii.gz").is_file() and not (out / "case02").exists()
    assert not list(out.rglob("*.tmp*"))
    monkeypatch.setattr(predicting, "write_map", real)
    record = predicting.predict(runs["run"], source, out, log=None, resume=True)
    assert record["predicted"] == 1 and (out / "case02" / "task01.nii.gz").is_file()


# --- refusals, before any map is written --------------------------------------------------------------------------


def exit_line(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as raised:
        main([str(a) for a in argv])
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_bad_inputs_are_refused_each_by_name(runs, toy_root, tmp_path, capsys):
    run = runs["run"]
    bad = tmp_path / "bad"
    write_nifti(bad / "sequences.nii.gz", np.zeros((20, 24, 4), np.float32))
    write_nifti(bad / "volume.nii.gz", np.zeros((20, 24, 30), np.float32))
    write_nifti(bad / "fine.nii.gz", np.zeros((20, 24), np.float32))
    write_nifti(bad / "fine.nii", np.zeros((20, 24), np.float32))
    (bad / "broken.nii.gz").write_bytes(b"not a nifti file")
    error = exit_line(capsys, run, "-i", bad, "-o", tmp_path / "out")
    assert "4 input problem(s), nothing was written" in error
    assert f"{bad / 'broken.nii.gz'}: cannot be read as NIfTI" in error
    assert (
        f"{bad / 'sequences.nii.gz'}: a 3D array (20 x 24 x 4): a volume of 4 slices, or an image of 4 channels"
        in error
    )
    assert f"{bad / 'volume.nii.gz'}: a 3D array (20 x 24 x 30): a volume of 30 slices" in error
    assert f"{bad / 'fine.nii'} and {bad / 'fine.nii.gz'} would both write {tmp_path / 'out' / 'fine.nii.gz'}" in error
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    assert "no image to predict" in exit_line(capsys, run, "-i", tmp_path / "empty", "-o", tmp_path / "out")
    image = next(toy_root.rglob("case01/image.nii.gz"))
    (tmp_path / "file").write_text("x")
    assert "-o " + str(tmp_path / "file") + " is a file" in exit_line(capsys, run, "-i", image, "-o", tmp_path / "file")
    assert "lies inside the input folder" in exit_line(capsys, run, "-i", bad, "-o", bad / "maps")
    assert "lies inside the run folder" in exit_line(capsys, run, "-i", image, "-o", run / "maps")
    assert "not a NIfTI file" in exit_line(capsys, run, "-i", tmp_path / "file", "-o", tmp_path / "out")
    assert "not a run folder (no config.json there)" in exit_line(capsys, tmp_path, "-i", image, "-o", tmp_path / "out")


def test_an_image_larger_than_a_crop_runs_input_is_warned(toy_root, tmp_path):
    run = legacy_run(tmp_path)  # fit=crop, 16 px input, 20 x 24 images
    plan = predicting.plan_prediction(
        run, next(toy_root.rglob("case01/image.nii.gz")), tmp_path / "o", predicting.PredictOptions()
    )
    assert len(plan.warnings) == 1
    assert "20 x 24 is larger than the run's 16 px input" in plan.warnings[0]
    assert "outside the central 16 x 16 the map is background (probability 0)" in plan.warnings[0]


def test_unfinished_runs_and_folds_and_experiments_are_refused(runs, toy_root, tmp_path):
    image = next(toy_root.rglob("case01/image.nii.gz"))
    run = tmp_path / "run"
    shutil.copytree(runs["run"], run)
    (run / "experts" / "seg02" / "result.json").unlink()
    with pytest.raises(ConfigError, match=f"not finished: 1 network\\(s\\) not trained: seg02 .*--resume {run}"):
        predicting.predict(run, image, tmp_path / "out", log=None)
    cv = tmp_path / "cv"
    shutil.copytree(runs["cv"], cv)
    shutil.rmtree(cv / "fold2" / "experts" / "seg01")
    with pytest.raises(ConfigError, match="1 of 2 fold\\(s\\) not finished: fold2 \\(seg01 .*--resume .*--fold 1"):
        predicting.predict(cv, image, tmp_path / "out", log=None)
    experiment = tmp_path / "experiment"
    (experiment / "variants" / "depth=3").mkdir(parents=True)
    (experiment / "variants" / "depth=3" / "config.json").write_text("{}")
    (experiment / "experiment.json").write_text("{}")
    with pytest.raises(ConfigError, match="is an experiment.*\n  .*variants/depth=3"):
        predicting.predict(experiment, image, tmp_path / "out", log=None)


def test_a_shared_run_is_read_only_from_inside_and_never_runs_code(runs, toy_root, tmp_path):
    import keras

    image = next(toy_root.rglob("case01/image.nii.gz"))
    run = tmp_path / "run"
    shutil.copytree(runs["run"], run)
    config = json.loads((run / "config.json").read_text())
    (run / "experts" / "seg01" / "result.json").write_text(json.dumps({"model_path": "/elsewhere/model.keras"}))
    predicting.predict(run, image, tmp_path / "ok", log=None)  # paths in the run's files are not followed
    assert config["data_root"]  # and no data root is needed
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 0 + 0.5)(inputs))
    model.save(run / "experts" / "seg02" / "model.keras")
    with pytest.raises(DataError, match="carries Python code .*refused \\(Keras safe mode\\)"):
        predicting.predict(run, image, tmp_path / "out", log=None)
    assert not list((tmp_path / "out").rglob("*.nii.gz"))
    elsewhere = tmp_path / "elsewhere.keras"
    shutil.move(run / "experts" / "seg02" / "model.keras", elsewhere)
    (run / "experts" / "seg02" / "model.keras").symlink_to(elsewhere)
    with pytest.raises(DataError, match="leads out of the run folder"):
        predicting.predict(run, image, tmp_path / "out2", log=None)


def test_progress_is_a_line_per_image_or_a_bar_on_a_terminal():
    import io

    lines = []
    progress = predicting.Progress(2, lines.append, io.StringIO())
    progress.step("a")
    progress.step("b")
    assert [line.split(":")[0] for line in lines] == ["[1/2] a", "[2/2] b"]
    assert "elapsed, about" in lines[0] and lines[1].endswith("about 0.0 s left")
    chunked = []
    together = predicting.Progress(3, chunked.append, io.StringIO())
    for name in "ab":  # written together, in one chunk of two: nothing of theirs is left
        together.step(name, written=2)
    assert all(line.endswith("s left") for line in chunked)
    left = [float(line.rsplit("about ", 1)[1].split()[0]) for line in chunked]
    assert left[0] == left[1]  # the rate of the whole chunk, the third image still to do

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = predicting.Progress(2, lines.append, screen)
    bar.step("a")
    bar.step("b")
    assert len(lines) == 2  # drawn on the terminal, not logged
    assert screen.getvalue().startswith("\r[###############...............] a: ") and screen.getvalue().endswith("\n")
    silent = predicting.Progress(1, None, screen)
    silent.step("c")
    assert "c:" not in screen.getvalue()


def test_an_image_with_nan_stops_the_command_naming_it_and_continue(runs, tmp_path):
    source = tmp_path / "in"
    image = np.ones((20, 24), np.float32)
    write_nifti(source / "fine.nii.gz", image)
    image[3, 4] = np.nan
    write_nifti(source / "holed.nii.gz", image)
    with pytest.raises(DataError, match="holed.nii.gz: image has 1 NaN or infinite voxels; fix or move .*--continue"):
        predicting.predict(runs["run"], source, tmp_path / "out", log=None)
