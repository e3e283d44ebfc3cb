"""Each of the four scripts, run as a user would, on demo data: tiny images, one epoch, two experts."""

import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"Brain_Growth": 1, "Brain_Tumor": 3, "Kidney": 1, "Prostate": 2}  # tumour task 3 has empty cases


@pytest.mark.parametrize("script, task", SCRIPTS.items())
def test_script_on_demo_data(script, task, demo_root, tmp_path):
    spec = importlib.import_module(script).DATASET
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / f"{script}.py"),
            "--demo",
            "--data-root",
            str(demo_root),
            "--task",
            str(task),
            "--experts",
            "1,2",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--quiet",
            "--predict-test",
            "--out",
            str(run),
            *(["--deterministic"] if script == "Brain_Growth" else []),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("QUBIQ score (ensemble of 2 expert network(s)): ")

    for name in ("config.json", "results.json", "dice_matrix.csv"):
        assert (run / name).is_file(), name
    for expert in ("seg01", "seg02"):
        assert (run / "experts" / expert / "model.keras").is_file()
        log = list(csv.DictReader((run / "experts" / expert / "training_log.csv").open()))
        assert len(log) == 1 and {"loss", "val_loss"} <= set(log[0])
    assert not (run / "experts" / "seg03").exists()

    config = json.loads((run / "config.json").read_text())
    assert config["task"] == task and config["demo"] == "synthetic" and config["experts"] == [1, 2]
    assert config["settings"]["input_size"] == 32 and config["settings"]["epochs"] == 1
    held_out = config["split"]["held_out"]
    assert len(held_out) == spec.n_held_out
    assert not set(held_out) & set(config["split"]["train"])

    results = json.loads((run / "results.json").read_text())
    assert results["cases"] == held_out
    assert 0.0 <= results["score"] <= 1.0
    assert results["score"] == pytest.approx(np.mean(results["dice"]))
    assert f"{results['score']:.4f}" in lines[-1]
    assert set(results["per_expert"]) == {"seg01", "seg02"}
    rows = list(csv.reader((run / "dice_matrix.csv").open()))
    assert [r[0] for r in rows[1:-1]] == held_out and rows[-1][0] == "mean"
    for case_id in held_out:  # the printed table has one row per held-out case
        assert any(line.startswith(case_id) for line in lines)
    assert config["deterministic"] is (script == "Brain_Growth")
    # probability maps for held-out, validation and (with --predict-test) test cases, overlaying the image
    test_cases = sorted(p.parent.name for p in demo_root.glob(f"test/{spec.name}/**/image.nii.gz"))
    assert len(test_cases) == spec.n_test and results["predictions"]["test"] == test_cases
    for case_id in [*held_out, *config["split"]["validation"], *test_cases]:
        folder = run / "predictions" / spec.name / case_id
        image = nib.load(next(demo_root.glob(f"*/{spec.name}/**/{case_id}/image.nii.gz")))
        for path in (folder / f"task{task:02d}.nii.gz", folder / "experts" / f"task{task:02d}_seg02.nii.gz"):
            written = nib.load(path)
            assert written.shape[:2] == image.shape[:2] and np.array_equal(written.affine, image.affine), path
    for name in ("dice_vs_threshold.png", "training_curves.png", f"case_{held_out[0]}.png"):
        assert (run / "plots" / name).stat().st_size > 10_000
    assert "QUBIQ score" in (run / "run.log").read_text()
