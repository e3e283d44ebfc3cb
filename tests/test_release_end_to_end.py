"""A dataset script on a tree laid out like the 2021 release as unzipped today, run as a user would.

The tree mixes what real downloads bring: the training split nested once in a folder of its own name,
the validation split not nested, the test split nested with its ``Testing/`` level, one case folder a
symbolic link to another disk, and one mask file named in other letter case.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def release_2021(demo_root: Path, root: Path) -> Path:
    train = root / "training_data_v3_QC" / "training_data_v3_QC" / "kidney"
    shutil.copytree(demo_root / "training_data_v2" / "kidney", train)
    elsewhere = root.parent / "other-disk" / "case01"
    shutil.move(train / "case01", elsewhere)
    os.symlink(elsewhere, train / "case01", target_is_directory=True)
    (train / "case02" / "task01_seg01.nii.gz").rename(train / "case02" / "Task01_Seg01.nii.gz")
    shutil.copytree(demo_root / "validation_data_v2" / "kidney", root / "validation_data_qubiq2021_QC" / "kidney")
    shutil.copytree(demo_root / "test" / "kidney", root / "QUBIQ21_test" / "QUBIQ21_test" / "kidney")
    return root


def kidney(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "Kidney.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_kidney_on_a_2021_tree_with_doubled_folders_links_and_letter_case(demo_root, tmp_path):
    data = release_2021(demo_root, tmp_path / "qubiq2021")
    run = tmp_path / "run"
    options = ["--preset", "demo", "--data-root", str(data), "--experts", "1", "--epochs", "1", "--image-size", "32"]
    result = kidney(*options, "--quiet", "--no-plots", "--predict-test", "--out", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("QUBIQ score (ensemble of 1 expert network(s)): ")

    config = json.loads((run / "config.json").read_text())
    assert config["release"]["release"] == "2021"
    folders = config["release"]["folders"]
    assert folders["train"].endswith("training_data_v3_QC/training_data_v3_QC")
    assert folders["validation"].endswith("validation_data_qubiq2021_QC")
    assert folders["test"].endswith("QUBIQ21_test/QUBIQ21_test")
    split = config["split"]
    everything = split["train"] + split["held_out"]
    assert len(everything) == 20 and len(set(everything)) == 20 and "case01" in everything  # the linked case too
    assert split["validation"] == ["case21", "case22", "case23", "case24"]
    for case in ("case25", "case26", "case27", "case28"):  # 2021 numbers the test cases after validation
        assert (run / "predictions" / "kidney" / case / "task01.nii.gz").is_file(), case

    log = (run / "run.log").read_text()
    assert "data: QUBIQ 2021 release: training_data_v3_QC/training_data_v3_QC" in log
    renamed = str(data / "training_data_v3_QC" / "training_data_v3_QC" / "kidney" / "case02" / "Task01_Seg01.nii.gz")
    assert any("warning:" in line and renamed in line for line in log.splitlines())
    assert "data check: read" in log


def test_two_releases_under_one_root_are_refused_before_anything(demo_root, tmp_path):
    data = release_2021(demo_root, tmp_path / "both")
    shutil.copytree(demo_root / "training_data_v2" / "kidney", data / "training_data_v2" / "kidney")
    run = tmp_path / "run"
    result = kidney("--preset", "demo", "--data-root", str(data), "--epochs", "1", "--out", str(run), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "2020" in result.stderr and "2021" in result.stderr and "--release" in result.stderr
    assert not run.exists()
