"""The prepared GPU check's dry run: every figure it takes on a GPU, at tiny sizes, on this CPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.backend  # the check runs on JAX or PyTorch on the GPU machine: the dry run on every backend
def test_gpu_check_dry_run(demo_root, tmp_path):
    # Without KERAS_BACKEND the script picks the first installed backend (on the default install:
    # TensorFlow, not the GPU machine's JAX, which is not installed there).
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_ARGS": f"--data-root {demo_root}"}
    installed = [b for b in ("jax", "torch", "tensorflow") if importlib.util.find_spec(b)]
    expected = env.get("KERAS_BACKEND") or installed[0]
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert out["dry_run"] and out["backend"] == expected
    assert [p["dtype"] for p in out["peak"]] == ["float32", "float16"] and all(p["tflops"] > 0 for p in out["peak"])
    ways = {c["way"]: c for c in out["configs"]}
    assert set(ways) == {"study", "tuned"} and not out["skipped"]
    assert ways["study"]["batch"] == 1 and ways["tuned"]["batch"] == 2
    for config in ways.values():
        assert config["median_images_per_s"] > 0 and config["forward_flops_per_image"] > 0
        assert 0 < config["fraction_of_peak"] < 1
    kidney = out["kidney_network"]
    assert kidney["exit"] == 0 and kidney["epochs_trained"] == 1 and kidney["seconds_per_epoch"] > 0
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| plain 32 px study | study | 1 | float32 |" in report and "Study-preset kidney network" in report
