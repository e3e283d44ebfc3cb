"""Apply a trained run's networks to new images: ``python -m common.predict RUN -i INPUT -o OUTPUT``.

A thin command over :func:`common.runs.predict.predict`; its module docstring says what is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.cli import int_at_least, number_list
from common.data.cases import DataError
from common.spec import ConfigError
from common.storage import StorageError
from common.training.tta import TTA


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.predict",
        description="Apply a finished run's networks (or every fold's of a cross-validation) to new images, with "
        "the run's own preprocessing; write each image's ensemble map on its own grid.",
    )
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN", help="a finished run folder, or a cross-validation folder (all its folds)"
    )
    parser.add_argument(
        "-i",
        dest="input",
        type=Path,
        required=True,
        metavar="INPUT",
        help="a folder of NIfTI images named any way (*.nii.gz, *.nii), a QUBIQ split or dataset folder (case "
        "folders holding image.nii.gz), or one NIfTI file",
    )
    parser.add_argument(
        "-o",
        dest="output",
        type=Path,
        required=True,
        metavar="OUTPUT",
        help="the folder for the maps; created, and refused if it holds anything (see --continue)",
    )
    parser.add_argument(
        "--fold",
        type=number_list("fold"),
        default=None,
        metavar="K[,K...]",
        help="a cross-validation's folds to use, e.g. 1,3 (default: all of them, one ensemble)",
    )
    parser.add_argument(
        "--tta",
        choices=tuple(TTA),
        default=None,
        help="test-time augmentation: flip averages each network's map with that of the horizontal mirror "
        "(default: flip where the run trained with flips, else none)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="images per network step (default: the run's batch size)",
    )
    parser.add_argument(
        "--save-members",
        action="store_true",
        help="also write each network's (or head's) map, under members/<member>/",
    )
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write the members' per-pixel standard deviation (std/) and the ensemble map's entropy in "
        "bits (entropy/)",
    )
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="finish an interrupted prediction in OUTPUT: skip the images whose maps are all written",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Predict, or exit with status 2 and the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, not errors
    from common.runs.predict import predict

    try:
        predict(
            args.run_dir,
            args.input,
            args.output,
            log=None if args.quiet else print,
            folds=args.fold,
            tta=args.tta,
            batch_size=args.batch_size,
            save_members=args.save_members,
            uncertainty=args.uncertainty,
            resume=args.resume,
        )
    except (ConfigError, DataError, StorageError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
