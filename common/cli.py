"""The command line shared by the four dataset scripts: parse, resolve settings, call :func:`run_task`."""

from __future__ import annotations

import argparse
import json
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
        raise argparse.ArgumentTypeError(
            f"expected expert numbers separated by commas (e.g. 1,3), got {text!r}"
        ) from None
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
    parser.add_argument(
        "--task",
        type=int,
        default=None,
        help=f"task to run ({', '.join(map(str, spec.valid_tasks))}); overrides the script's 'task = {task}'",
    )
    env_root = os.environ.get("QUBIQ_DATA")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help=f"folder holding training_data_v2/, validation_data_v2/ and test/ "
        f"(default: $QUBIQ_DATA{' = ' + env_root if env_root else ''}, else ./{DEFAULT_DATA_ROOT}; "
        f"with --demo: ./{DEFAULT_DEMO_ROOT}/seed<SEED>)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="generate (once) a synthetic dataset in the QUBIQ layout and use CPU-sized defaults",
    )
    parser.add_argument(
        "--experts", type=parse_experts, default=None, help=f"experts to train, e.g. 1,3 (default: all {spec.experts})"
    )
    parser.add_argument(
        "--epochs",
        type=int_at_least(1),
        default=None,
        help=f"training epochs per expert (default: {study.epochs}; {demo.epochs} with --demo)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=None,
        help=f"batch size (default: {study.batch_size}; {demo.batch_size} with --demo)",
    )
    parser.add_argument(
        "--image-size",
        type=int_at_least(1),
        default=None,
        help=f"network input size in pixels, a multiple of 2**depth "
        f"(default: {study.input_size}; {demo.input_size} with --demo)",
    )
    parser.add_argument(
        "--seed",
        type=int_at_least(0),
        default=None,
        help="seeds the held-out split, the demo data, initialisation, shuffling and augmentation (default: 0)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow op determinism: same seed, same weights on the same machine (slower)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder to create (default: runs/<dataset>-task<N>-<time>); never overwritten",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run in RUN_DIR with its saved configuration: finished experts "
        "are reused, an interrupted one continues from its last epoch",
    )
    parser.add_argument(
        "--predict-test",
        action="store_true",
        help="also predict the official test cases (no masks) into the run's predictions/ folder",
    )
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs into the run folder")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
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


def apply_resume(args: argparse.Namespace, spec: DatasetSpec, study: Settings, demo: Settings) -> Settings:
    """With ``--resume``, what was not given on the command line comes from the run's ``config.json``.

    Returns the saved settings with any explicit overrides (a differing override is refused later,
    when the run folder's configuration is compared with the resolved one).
    """
    path = args.resume / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume {args.resume}: not a run folder (no config.json there)")
    try:
        saved = json.loads(path.read_text())
        saved_name = saved["dataset"]["name"]
        saved_settings = Settings.from_dict(saved["settings"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--resume {args.resume}: unreadable config.json ({error})") from error
    if saved_name != spec.name:
        raise ConfigError(
            f"--resume {args.resume}: the run is of dataset {saved_name}, not {spec.name}; "
            f"resume it with that dataset's script"
        )
    if args.out is not None and args.out != args.resume:
        raise ConfigError("--out and --resume name different folders; a resumed run stays in its own folder")
    args.out = args.resume
    args.task = saved["task"] if args.task is None else args.task
    args.seed = saved["seed"] if args.seed is None else args.seed
    args.experts = saved["experts"] if args.experts is None else args.experts
    args.data_root = Path(saved["data_root"]) if args.data_root is None else args.data_root
    args.demo = args.demo or bool(saved.get("demo"))
    args.deterministic = args.deterministic or bool(saved.get("deterministic"))
    args.command = saved.get("command")
    return resolve_settings(args, saved_settings, saved_settings)


def main(spec: DatasetSpec, study: Settings, demo: Settings, task: int, argv: list[str] | None = None) -> dict:
    """Entry point of a dataset script. Exits with status 2 and a one-line message on bad input."""
    parser = build_parser(spec, study, demo, task)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, not errors
    from common.data import DataError
    from common.pipeline import check_experts, check_task

    try:
        args.command = sys.argv
        if args.resume is not None:
            settings = apply_resume(args, spec, study, demo)
        else:
            args.task = task if args.task is None else args.task
            args.seed = 0 if args.seed is None else args.seed
            settings = resolve_settings(args, study, demo)
        check_task(spec, args.task)
        check_experts(spec, args.experts)
        data_root = resolve_data_root(args)
        if args.demo:
            from common.demo import ensure_demo_data

            print(f"demo data: {data_root} (all four datasets, generated once from seed {args.seed})")
            ensure_demo_data(data_root, args.seed, extra=spec)
        from common.pipeline import run_task

        return run_task(
            spec,
            settings,
            args.task,
            data_root,
            experts=args.experts,
            seed=args.seed,
            out=args.out,
            resume=args.resume is not None,
            predict_test=args.predict_test,
            deterministic=args.deterministic,
            tensorboard=args.tensorboard,
            plots=not args.no_plots,
            verbose=0 if args.quiet else 2,
            extra_config={"demo": args.demo, "command": args.command},
        )
    except (DataError, ConfigError, FileExistsError, PermissionError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
