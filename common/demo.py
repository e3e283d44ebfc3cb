"""``python -m common.demo``: generate the synthetic QUBIQ demo datasets, once per seed, in the QUBIQ layout.

Only the command line: the generator is the package :mod:`common.data.demo` (how each dataset is
drawn, the simulated experts, the writer, generate-once).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # the command line: its matrix products are small, idle BLAS threads only
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # spin and steal the core the writer needs

from common.data.demo.generate import ensure_demo_dataset, project_specs
from common.data.demo.layout import split_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.demo",
        description="Generate the synthetic QUBIQ demo datasets in the QUBIQ layout (once per seed).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="ROOT",
        help="output root (default: demo_data/seed<SEED>, where the 2D scripts' --demo looks)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: %(default)s)")
    parser.add_argument(
        "--datasets",
        default="",
        metavar="NAMES",
        help=f"comma-separated dataset names among {', '.join(project_specs())} (default: all of them)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.out is None:
        args.out = Path("demo_data") / f"seed{args.seed}"
    specs = project_specs()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(specs)}")
    for name in names:
        t0 = time.perf_counter()
        ensure_demo_dataset(specs[name], args.out, args.seed)
        print(f"{name}: {split_folder(specs[name], args.out, 'train')} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
