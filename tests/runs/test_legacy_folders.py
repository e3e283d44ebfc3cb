"""Run folders written before the plan and the one gather step still resume and gather, with the same scores.

``tests/runs/legacy_runs`` holds folders made by the code of commit 6e6adf8 (one process per run, the
ensemble averaged in memory), with ``make_legacy_runs.py`` there (run from that commit's checkout:
``PYTHONPATH=. python tests/runs/legacy_runs/make_legacy_runs.py OUT``) on the toy data of
``helpers.make_toy_root``: a finished per-expert run, a finished soft-label run (whose ensemble maps
that code wrote only at the end), and a per-expert run stopped after its second expert's first epoch
(expert 1 complete, expert 2's backup on disk). Scoring saved maps needs no training, so the finished
folders' scores are compared exactly, on any machine.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SPEC, make_toy_root

from common.evaluation.predictions import prediction_path, read_prediction
from common.runs.gather import gather_run
from common.runs.pipeline import run_task
from common.spec import Settings

LEGACY = Path(__file__).resolve().parent / "legacy_runs"
SCORES = ("score", "per_threshold", "per_case", "dice", "cases", "experts_in_ensemble", "reference_scores")


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("toy"))


def legacy(name: str, tmp_path: Path, toy_root: Path) -> tuple[Path, dict]:
    """A copy of a legacy folder whose data root is this test's toy data (the copy a user makes when the
    data moved), and its saved configuration."""
    folder = tmp_path / name
    shutil.copytree(LEGACY / name, folder)
    config = json.loads((folder / "config.json").read_text())
    config["data_root"] = str(toy_root.resolve())
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder, config


def quiet(_line):
    pass


@pytest.mark.parametrize("name", ["finished", "soft-label"])
def test_a_finished_legacy_folder_gathers_to_its_own_scores(name, toy_root, tmp_path):
    folder, config = legacy(name, tmp_path, toy_root)
    saved = json.loads((folder / "results.json").read_text())
    (folder / "results.json").unlink()
    (folder / "dice_matrix.csv").unlink()
    gathered = gather_run(folder, log=quiet, plots=False)
    for key in SCORES:
        assert gathered[key] == saved[key], key
    # the uncertainty means sum in another order: equal to the last few bits
    means, saved_means = gathered["uncertainty"]["mean"], saved["uncertainty"]["mean"]
    # gathered again, a legacy run also gets the figures added since (at a common sample count, the counts)
    assert set(saved_means) <= set(means) and set(means) - set(saved_means) == {
        "ged_u",
        "hungarian_iou_n",
        "samples",
        "experts",
    }
    for key, value in saved_means.items():  # None: a metric that needs samples, for a run without members
        assert means[key] == (value if value is None else pytest.approx(value, rel=1e-12, abs=1e-15)), key
    assert {k: v["score"] for k, v in gathered["per_expert"].items()} == {
        k: v["score"] for k, v in saved["per_expert"].items()
    }


@pytest.mark.parametrize("name", ["finished", "soft-label"])
def test_a_finished_legacy_folder_resumes_without_training(name, toy_root, tmp_path):
    folder, config = legacy(name, tmp_path, toy_root)
    saved = json.loads((folder / "results.json").read_text())
    models = {p: p.stat().st_mtime_ns for p in folder.rglob("model.keras")}
    lines = []
    settings = Settings.from_dict(config["settings"])
    results = run_task(
        SPEC, settings, 1, toy_root, seed=0, out=folder, resume=True, plots=False, verbose=0, log=lines.append
    )
    assert not any("training on" in line for line in lines)
    assert sum("already trained and predicted" in line for line in lines) == len(models)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("model.keras")} == models
    for key in SCORES:
        assert results[key] == saved[key], key


def test_an_interrupted_legacy_folder_resumes_and_gathers(toy_root, tmp_path):
    folder, config = legacy("interrupted", tmp_path, toy_root)
    finished = json.loads((LEGACY / "finished" / "results.json").read_text())
    first = {c: read_prediction(prediction_path(folder / "predictions", "toy", c, 1, 1)) for c in finished["cases"]}
    lines = []
    settings = Settings.from_dict(config["settings"])
    results = run_task(
        SPEC, settings, 1, toy_root, seed=0, out=folder, resume=True, plots=False, verbose=0, log=lines.append
    )
    assert any("seg01: already trained and predicted" in line for line in lines)
    assert any("seg02: continuing its interrupted training" in line for line in lines)
    assert json.loads((folder / "experts" / "seg02" / "result.json").read_text())["resumed_from_epoch"] == 1
    assert not list(folder.rglob("backup*"))
    for case_id, before in first.items():  # expert 1's maps are not written again
        np.testing.assert_array_equal(
            read_prediction(prediction_path(folder / "predictions", "toy", case_id, 1, 1)), before
        )
    # expert 1 was trained as in the finished run (same seed, same data), so its score is that run's
    assert results["per_expert"]["seg01"]["score"] == finished["per_expert"]["seg01"]["score"]
    assert results["experts_in_ensemble"] == ["seg01", "seg02"] and 0 <= results["score"] <= 1
