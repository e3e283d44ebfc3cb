"""``python -m common.comparison CV_DIR CV_DIR ...``: the paired comparison of cross-validations made apart.

A thin command line over :func:`common.runs.compare.compare_folders`; imports no TensorFlow.
"""

from __future__ import annotations

import argparse

from common.evaluation.comparison import format_comparison
from common.runs.compare import compare_folders


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.comparison",
        description="Compare finished cross-validations made on the same folds and seed (e.g. two experiments "
        "with --splits of one splits.json): the first folder is the baseline. Imports no TensorFlow.",
    )
    parser.add_argument(
        "folders",
        nargs="+",
        metavar="CV_DIR",
        help="finished cross-validation folders (an experiment's variant folder is one), the baseline first",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the paired comparison of cross-validation folders, or exit 2 with the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        variants, title = compare_folders(args.folders)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(format_comparison(variants, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
