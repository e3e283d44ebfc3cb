"""A run killed during its second expert and resumed: every expert trained exactly once."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 12


def kidney(*args, cwd):
    return [sys.executable, str(ROOT / "Kidney.py"), *args]


@pytest.mark.backend  # the one end-to-end run on every backend (KERAS_BACKEND passes to the script)
def test_killed_during_second_expert_then_resumed(demo_root, tmp_path):
    run = tmp_path / "run"
    command = kidney(
        "--demo",
        "--data-root",
        str(demo_root),
        "--experts",
        "1,2",
        "--epochs",
        str(EPOCHS),
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--quiet",
        "--no-plots",
        "--checkpoint-every",
        "0",
        "--out",
        str(run),
        cwd=tmp_path,
    )
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    second_log = run / "experts" / "seg02" / "training_log.csv"
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if second_log.is_file() and len(second_log.read_text().splitlines()) >= 4:  # header + 3 epochs
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert not (run / "results.json").exists()
    assert (run / "experts" / "seg01" / "result.json").is_file()
    assert not (run / "experts" / "seg02" / "result.json").exists()

    resumed = subprocess.run(
        kidney("--resume", str(run), "--quiet", "--no-plots", cwd=tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1].startswith("QUBIQ score (ensemble of 2 expert network(s))")

    log = (run / "run.log").read_text()
    assert log.count("seg01: training on") == 1 and log.count("seg02: training on") == 1
    assert log.count("seg02: continuing its interrupted training") == 1
    assert "seg01: already trained" in log
    assert "seg02: resuming from the backup after epoch" in log
    for expert in ("seg01", "seg02"):
        rows = list(csv.DictReader((run / "experts" / expert / "training_log.csv").open()))
        assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1)), expert
    result = json.loads((run / "experts" / "seg02" / "result.json").read_text())
    assert result["resumed_from_epoch"] >= 1 and result["epochs"] == EPOCHS  # continued, not restarted
    results = json.loads((run / "results.json").read_text())
    assert set(results["per_expert"]) == {"seg01", "seg02"}
    assert not list(run.rglob("backup*")) and not list(run.rglob("*.partial.keras"))
