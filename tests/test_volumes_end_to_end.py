"""The 2021 release's 3D sets beside its 2D sets, as a user brings them: each of the six scripts finds its data,
and the two volume scripts run end to end (trained as slices, maps stacked back onto each volume's grid,
scored per volume), then their maps are applied to new volumes and scored again by the standalone tools."""

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data.volume_demo import ensure_volume_demo
from common.datasets import DATASETS, PANCREAS, PANCREATIC_LESION
from common.runs.plan import RunOptions, make_plan

ROOT = Path(__file__).resolve().parents[1]
#: Enough volumes for the scripts' held-out counts (8 and 5, drawn by case<N> group) and a few to train on.
COUNTS = {
    "pancreas": {"train": 11, "validation": 1, "test": 1},
    "pancreatic-lesion": {"train": 8, "validation": 1, "test": 1},
}
TINY = [
    "--preset",
    "demo",
    "--image-size",
    "32",
    "--depth",
    "2",
    "--base-filters",
    "4",
    "--epochs",
    "1",
    "--experts",
    "1",
]


@pytest.fixture(scope="module")
def release(demo_root, tmp_path_factory):
    """A 2021-layout root: the four 2D demo sets under the 2021 folder names, and both 3D sets."""
    root = tmp_path_factory.mktemp("qubiq2021")
    for old, new in (
        ("training_data_v2", "training_data_v3_QC"),
        ("validation_data_v2", "validation_data_qubiq2021_QC"),
        ("test", "QUBIQ21_test"),
    ):
        for entry in DATASETS.values():
            if not entry.spec.volumetric:
                shutil.copytree(demo_root / old / entry.name, root / new / entry.name)
    for entry in (PANCREAS, PANCREATIC_LESION):
        ensure_volume_demo(entry.spec, root, seed=0, counts=COUNTS[entry.name])
    return root


def test_each_of_the_six_scripts_finds_its_data_in_one_2021_tree(release):
    for entry in DATASETS.values():
        script = runpy.run_path(str(ROOT / entry.script))  # the script's own description, not run
        spec, demo = script["DATASET"], script["DEMO"]
        plan = make_plan(spec, demo, 1, release, RunOptions(log=lambda line: None))
        assert plan.source.name == "2021", entry.name
        found = plan.roles["train"] + plan.roles["held_out"]
        assert len(found) == (COUNTS[spec.name]["train"] if spec.volumetric else spec.n_train), entry.name
        assert len(plan.roles["held_out"]) >= spec.n_held_out


def script(name: str, *args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / name), *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def test_pancreas_trains_on_slices_and_scores_whole_volumes_then_predicts_new_ones(release, tmp_path, capsys):
    """The lesion set runs the same code (its script and data are checked above); one volume script end to
    end keeps the suite short."""
    from common.predict import main as predict_main
    from common.score import score_folder

    entry, run = PANCREAS, tmp_path / "run"
    result = script(
        entry.script, *TINY, "--data-root", str(release), "--quiet", "--predict-test", "--out", str(run), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("per slice (mean of each slice's Dice") for line in lines)
    assert "held-out volumes" in result.stdout and " slices, validating on " in result.stdout

    config = json.loads((run / "config.json").read_text())
    split = config["split"]
    assert config["release"]["release"] == "2021" and config["dataset"]["slice_axis"] == 0

    def groups(ids):
        return {i.split("-")[0] for i in ids}

    assert not groups(split["held_out"]) & groups(split["train"] + split["validation"])
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["score"] <= 1 and 0 <= results["per_slice"]["score"] <= 1
    assert set(results["per_case"]) == set(split["held_out"])

    data = release / "training_data_v3_QC" / entry.name
    for case in split["held_out"]:
        image = nib.load(data / case / "image.nii.gz")
        written = nib.load(run / "predictions" / entry.name / case / "task01.nii.gz")
        assert written.shape == image.shape and np.allclose(written.affine, image.affine)
        assert written.get_data_dtype() == np.float32
        assert (run / "plots" / f"case_{case}.png").is_file()
    (test_case,) = [p.name for p in (release / "QUBIQ21_test" / entry.name / "Testing").iterdir()]
    assert (run / "predictions" / entry.name / test_case / "task01.nii.gz").is_file()

    # the standalone scorer scores the run's maps per volume, as the run did
    rescored = score_folder(run / "predictions", release, entry.name, "train", 1)
    assert rescored["score"] == pytest.approx(results["score"], abs=1e-9)
    assert rescored["per_slice"]["score"] == pytest.approx(results["per_slice"]["score"], abs=1e-9)

    # the prediction command on new volumes: the test volume again, equal to the run's map
    out = tmp_path / "new"
    predict_main([str(run), "-i", str(release / "QUBIQ21_test" / entry.name), "-o", str(out), "--quiet"])
    again = nib.load(out / test_case / "task01.nii.gz").get_fdata()
    original = nib.load(run / "predictions" / entry.name / test_case / "task01.nii.gz").get_fdata()
    assert again.shape == original.shape and np.abs(again - original).max() < 1e-5

    # a 2D image given to a volume run is refused before anything is written
    flat = tmp_path / "flat"
    flat.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((512, 512), np.int16), np.eye(4)), flat / "slice.nii.gz")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        predict_main([str(run), "-i", str(flat), "-o", str(tmp_path / "none")])
    assert exited.value.code == 2
    assert "slice.nii.gz: a 2D image (512 x 512) where a volume is expected" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
