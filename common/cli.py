"""The command line shared by the four dataset scripts: parse, resolve settings, call :func:`run_task`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.spec import ConfigError, DatasetSpec, Settings

DEFAULT_DATA_ROOT = Path("Project_data")
DEFAULT_DEMO_ROOT = Path("demo_data")


def parse_experts(text: str) -> list[int]:
    try:
        experts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected expert numbers separated by commas (e.g. 1,3), got {text!r}")
    if not experts:
        raise argparse.ArgumentTypeError("expected at least one expert number (e.g. 1,3)")
    return experts


def int_at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def build_parser(spec: DatasetSpec, study: Settings, demo: Settings, task: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name,
        description=f"{spec.title} (QUBIQ '{spec.name}'): one U-Net per expert, their ensemble, and the QUBIQ "
        f"threshold-Dice table on {spec.n_held_out} held-out training cases.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", type=int, default=task,
                        help=f"task to run ({', '.join(map(str, spec.valid_tasks))}); overrides the script's 'task = ...'")
    env_root = os.environ.get("QUBIQ_DATA")
    parser.add_argument("--data-root", type=Path, default=None,
                        help=f"folder holding training_data_v2/, validation_data_v2/ and test/ "
                        f"(default: $QUBIQ_DATA{' = ' + env_root if env_root else ''}, else ./{DEFAULT_DATA_ROOT}; "
                        f"with --demo: ./{DEFAULT_DEMO_ROOT}/seed<SEED>)")
    parser.add_argument("--demo", action="store_true",
                        help="generate (once) a synthetic dataset in the QUBIQ layout and use CPU-sized defaults")
    parser.add_argument("--experts", type=parse_experts, default=None,
                        help=f"experts to train, e.g. 1,3 (default: all {spec.experts})")
    parser.add_argument("--epochs", type=int_at_least(1), default=None,
                        help=f"training epochs per expert (default: {study.epochs}; {demo.epochs} with --demo)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=None,
                        help=f"batch size (default: {study.batch_size}; {demo.batch_size} with --demo)")
    parser.add_argument("--image-size", type=int_at_least(1), default=None,
                        help=f"network input size in pixels, a multiple of 2**depth "
                        f"(default: {study.input_size}; {demo.input_size} with --demo)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seeds the split, the demo data, initialisation and augmentation")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder to create (default: runs/<dataset>-task<N>-<time>); never overwritten")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras progress lines")
    return parser


def resolve_settings(args: argparse.Namespace, study: Settings, demo: Settings) -> Settings:
    """The preset (study or demo) with the command line's overrides; ConfigError names a bad option."""
    base = demo if args.demo else study
    changes = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.image_size is not None:
        if args.image_size % (2**base.depth):
            raise ConfigError(
                f"--image-size {args.image_size} is not divisible by 2**depth = {2**base.depth} "
                f"(the network pools {base.depth} times); use a multiple of {2**base.depth}"
            )
        changes["input_size"] = args.image_size
    return base.replace(**changes)


def resolve_data_root(args: argparse.Namespace) -> Path:
    if args.data_root is not None:
        return args.data_root
    if args.demo:
        return DEFAULT_DEMO_ROOT / f"seed{args.seed}"
    return Path(os.environ.get("QUBIQ_DATA") or DEFAULT_DATA_ROOT)


def main(spec: DatasetSpec, study: Settings, demo: Settings, task: int, argv: list[str] | None = None) -> dict:
    """Entry point of a dataset script. Exits with status 2 and a one-line message on bad input."""
    parser = build_parser(spec, study, demo, task)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, not errors
    from common.data import DataError
    from common.pipeline import check_experts, check_task

    try:
        check_task(spec, args.task)
        check_experts(spec, args.experts)
        settings = resolve_settings(args, study, demo)
        data_root = resolve_data_root(args)
        if args.demo:
            from common.demo import ensure_demo_data

            print(f"demo data: {data_root} (all four datasets, generated once from seed {args.seed})")
            ensure_demo_data(data_root, args.seed, extra=spec)
        from common.pipeline import run_task

        return run_task(
            spec, settings, args.task, data_root, experts=args.experts, seed=args.seed, out=args.out,
            verbose=0 if args.quiet else 2, extra_config={"demo": args.demo, "command": sys.argv},
        )
    except (DataError, ConfigError, FileExistsError, PermissionError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
