"""How long the data check before training takes on a tree the size of the real prostate data.

::

    python bench/data_check.py                 # prostate-sized: 48 training + 7 validation cases
    python bench/data_check.py --keep DIR      # keep the generated tree in DIR (and reuse it next time)

The real images cannot be shipped, so the tree is written here at the real sizes: 640 x 640 images
(every fifth one 960 x 640) stored as gzip-compressed float32 NIfTI, 12 masks per case (2 tasks x 6
experts, uint8, smooth blobs), case09 without expert 3's masks, as in the release. The check
(:func:`common.data.check.check_run_data`) is timed three times for each task, after one untimed run that
warms the page cache (as a second start would find it), and once cold when ``--drop-caches`` is given
(root only). Prints a markdown table and writes nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.data.cases import discover_cases, mask_file_name  # noqa: E402
from common.data.check import check_run_data  # noqa: E402
from common.datasets import PROSTATE  # noqa: E402


def write_tree(root: Path, n_train: int = 48, n_validation: int = 7, seed: int = 0) -> Path:
    """A prostate-sized QUBIQ 2020 tree under ``root`` (skipped when its marker is there)."""
    marker = root / ".complete"
    if marker.is_file():
        return root
    rng = np.random.default_rng(seed)
    for number in range(1, n_train + n_validation + 1):
        split, inner = ("training_data_v2", "Training") if number <= n_train else ("validation_data_v2", "Validation")
        folder = root / split / "prostate" / inner / f"case{number:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = 960 if number % 5 == 0 else 640
        yy, xx = np.mgrid[0:rows, 0:640]
        image = rng.normal(300, 80, (rows, 640)) + 200 * np.exp(-((yy - rows / 2) ** 2 + (xx - 320) ** 2) / 8000.0)
        nib.save(nib.Nifti1Image(image.astype(np.float32)[..., None], np.eye(4)), str(folder / "image.nii.gz"))
        for task in (1, 2):
            for expert in range(1, 7):
                if number == 9 and expert == 3:
                    continue  # as in the release: case09 lacks expert 3's masks
                radius = (70 if task == 1 else 35) + rng.integers(-6, 7)
                mask = ((yy - rows / 2) ** 2 + (xx - 320) ** 2 <= radius**2).astype(np.uint8)
                nib.save(nib.Nifti1Image(mask, np.eye(4)), str(folder / mask_file_name(task, expert)))
    marker.write_text("")
    return root


def time_check(root: Path, task: int, repeats: int) -> tuple[list[float], int]:
    spec = PROSTATE.spec
    seconds, files = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        train = discover_cases(root, "prostate", "train")
        validation = discover_cases(root, "prostate", "validation")
        checked = check_run_data(
            spec,
            task,
            {"train": train[7:], "validation": validation, "held_out": train[:7]},
            {f"seg{e:02d}": [e] for e in range(1, 7)},
        )
        seconds.append(time.perf_counter() - start)
        files = checked.files
    return seconds, files


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def drop_caches() -> bool:
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/data_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="write (or reuse) the tree here (default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="timed checks per task after the warm-up one; the table gives their median (default: %(default)s)",
    )
    parser.add_argument("--drop-caches", action="store_true", help="also time one cold start (needs root)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = write_tree(args.keep or Path(scratch) / "qubiq")
        size = sum(p.stat().st_size for p in root.rglob("*.nii.gz")) / 2**20
        print(
            f"tree: {root} ({size:.0f} MiB of .nii.gz); machine: {cpu_name()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print("| task | files read | cold (s) | warm, median of repeats (s) | min-max (s) |")
        print("|---|---|---|---|---|")
        for task in (1, 2):
            cold = ""
            if args.drop_caches and drop_caches():
                cold = f"{time_check(root, task, 1)[0][0]:.2f}"
            time_check(root, task, 1)  # warm the cache
            seconds, files = time_check(root, task, args.repeats)
            print(
                f"| {task} | {files} | {cold or 'n/a'} | {float(np.median(seconds)):.2f} | "
                f"{min(seconds):.2f}-{max(seconds):.2f} |"
            )


if __name__ == "__main__":
    main()
