"""Run folders made by the code before the plan and the one gather step (commit 6e6adf8).

Run from that commit's checkout: ``PYTHONPATH=. python tests/runs/legacy_runs/make_legacy_runs.py OUT``
(its layout was flat: ``common.pipeline``, ``common.training``). Used by ``tests/runs/test_legacy_folders.py``.
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from common.pipeline import run_task  # noqa: E402
from helpers import SPEC, TINY, make_toy_root  # noqa: E402

from common import training  # noqa: E402


def quiet(_line):
    pass


out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
toy = make_toy_root(out / "toy_root")
settings = TINY.replace(epochs=2)
run_task(SPEC, settings, 1, toy, seed=0, out=out / "finished", plots=False, verbose=0, log=quiet)
soft = settings.replace(strategy="soft-label")
run_task(SPEC, soft, 1, toy, seed=0, out=out / "soft-label", plots=False, verbose=0, log=quiet)
original = training.EpochRecorder.on_epoch_end


def interrupt(self, epoch, logs=None):
    """Stop the run as a kill would, once expert 2's first epoch and its backup are written."""
    original(self, epoch, logs)
    if self.label == "seg02" and epoch == 0:
        raise KeyboardInterrupt("stopped after seg02's first epoch")


training.EpochRecorder.on_epoch_end = interrupt
try:
    run_task(
        SPEC, settings, 1, toy, seed=0, out=out / "interrupted", plots=False, verbose=0, log=quiet, checkpoint_seconds=0
    )
except KeyboardInterrupt:
    pass
shutil.rmtree(out / "toy_root")
