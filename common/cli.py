"""The command line shared by the dataset scripts: parse, resolve settings, call :func:`run_task`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common.choices import DISTRIBUTE_CHOICES
from common.runs.folder import CONFIG_FILE
from common.spec import RELEASE_NAMES, ConfigError, DatasetSpec, Settings
from common.switches import PRESETS, SWITCHES, Switch, apply_switches, preset

DEFAULT_DATA_ROOT = Path("Project_data")
DEFAULT_DEMO_ROOT = Path("demo_data")


def number_list(what: str):
    """An argparse type: numbers separated by commas (``1,3``), named ``what`` in its messages."""

    def parse(text: str) -> list[int]:
        try:
            numbers = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} numbers separated by commas (e.g. 1,3), got {text!r}"
            ) from None
        if not numbers:
            raise argparse.ArgumentTypeError(f"expected at least one {what} number (e.g. 1,3)")
        return numbers

    return parse


parse_experts = number_list("expert")


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


def build_parser(
    spec: DatasetSpec, study: Settings, demo: Settings, task: int, prog: str | None = None
) -> argparse.ArgumentParser:
    """The dataset script's options in four groups (data, run, jobs, settings), each default stated once.

    ``prog`` names the command in the usage line and the messages (default: the running script's file name).
    The help texts depend only on the dataset, never on the environment or the machine.
    """
    parser = argparse.ArgumentParser(
        prog=prog or Path(sys.argv[0]).name,
        description=f"{spec.title} (QUBIQ '{spec.name}'): one U-Net per expert, their ensemble, and the QUBIQ "
        f"threshold-Dice table on {spec.n_held_out} held-out training "
        + ("volumes (trained as slices; maps and scores of whole volumes)." if spec.volumetric else "cases."),
    )
    add_data_options(parser.add_argument_group("data"), spec, task)
    add_run_options(parser.add_argument_group("run"), spec)
    add_job_options(parser.add_argument_group("jobs", "a run split into jobs (e.g. a job array); then gathered"))
    add_switches(parser, spec, study, demo)
    return parser


def add_data_options(group, spec: DatasetSpec, task: int) -> None:
    """Which data: the task, the release's folder (or the demo data), which release."""
    group.add_argument(
        "--task",
        type=int,
        default=None,
        help=f"task to run: {or_list(spec.valid_tasks)} (default: the script's 'task = {task}')",
    )
    group.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="ROOT",
        help=f"folder holding the QUBIQ release as unpacked: 2020 (training_data_v2/, validation_data_v2/, test/) "
        f"or 2021 (training_data_v3_QC/, validation_data_qubiq2021_QC/, QUBIQ21_test/) "
        f"(default: $QUBIQ_DATA, else ./{DEFAULT_DATA_ROOT}; with --demo: {demo_roots(spec)})",
    )
    group.add_argument(
        "--release",
        choices=RELEASE_NAMES,
        default=None,
        help="which QUBIQ release to read when the data root holds both (default: the one there)",
    )
    kinds = demo_kinds(spec)
    group.add_argument(
        "--demo",
        nargs="?",
        const="synthetic",
        default=None,
        choices=kinds,
        help="generate (once) demo data in the QUBIQ layout and start from the CPU-sized 'demo' preset; "
        + "; ".join(f"{kind}: {demo_description(spec, kind)}" for kind in kinds)
        + ("; --demo alone: synthetic" if len(kinds) > 1 else ""),
    )
    group.add_argument(
        "--predict-test",
        action="store_true",
        help="also predict the official test cases (no masks) into the run's predictions/ folder; "
        "a single run's only: refused with --folds or --splits",
    )


def add_run_options(group, spec: DatasetSpec) -> None:
    """How the run goes: which experts, the seed, the folder, resuming, cross-validation, the devices."""
    group.add_argument(
        "--experts", type=parse_experts, default=None, help=f"experts to train, e.g. 1,3 (default: all {spec.experts})"
    )
    group.add_argument(
        "--seed",
        type=int_at_least(0),
        default=None,
        help="seeds the held-out split, the demo data, initialisation, shuffling and augmentation (default: 0)",
    )
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="run folder to create (default: runs/<dataset>-task<N>-<time>); never overwritten "
        "(with --train-only: created, or joined by the run's other jobs)",
    )
    group.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run (or cross-validation) in RUN_DIR with its saved configuration: "
        "finished networks are reused, an interrupted one continues from its last checkpoint (see "
        "--checkpoint-every), not from its last epoch",
    )
    group.add_argument(
        "--folds",
        type=int_at_least(2),
        default=None,
        metavar="K",
        help="K-fold cross-validation over the training and validation cases instead of one held-out split "
        "(the folds are saved in splits.json)",
    )
    group.add_argument(
        "--splits",
        type=Path,
        default=None,
        metavar="FILE",
        help="cross-validation on the folds of this splits.json (from an earlier cross-validation or experiment)",
    )
    group.add_argument(
        "--deterministic",
        action="store_true",
        help="the backend's deterministic kernels: same seed, same weights on the same machine (slower)",
    )
    group.add_argument(
        "--distribute",
        choices=DISTRIBUTE_CHOICES,
        default="none",
        help="mirrored: each network on all local GPUs (tf.distribute.MirroredStrategy; the TensorFlow backend "
        "only); --batch-size is the global batch, a multiple of the replicas; a runtime option (default: none)",
    )
    group.add_argument(
        "--checkpoint-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="least time between two checkpoints of a training (best model and resume backup), each taken "
        "at the end of an epoch, so an interruption loses about this much training and an epoch at most; "
        "0: after every epoch (default: 30)",
    )
    group.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard logs into the run folder (needs TensorFlow); a single run's only: refused with "
        "--folds or --splits",
    )
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    group.add_argument(
        "--quiet", action="store_true", help="no per-epoch Keras progress lines (the run's own lines still show)"
    )


def add_job_options(group) -> None:
    """A run split into jobs: one job's share of the plan, and the gather step."""
    group.add_argument(
        "--train-only",
        action="store_true",
        help="one job: train and predict only --experts (a single-network strategy: its one network) into the "
        "shared folder --out, which the run's other jobs create or join with the same options",
    )
    group.add_argument(
        "--fold",
        type=int_at_least(1),
        default=None,
        metavar="k",
        help="with --folds: one job that runs only fold k in the shared folder --out (with --train-only: only "
        "--experts of fold k); then --resume the folder to gather the folds",
    )
    group.add_argument(
        "--gather",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="score a run trained as jobs from its saved maps, with no TensorFlow (also: python -m "
        "common.gather RUN_DIR)",
    )


def add_switches(parser: argparse.ArgumentParser, spec: DatasetSpec, study: Settings, demo: Settings) -> None:
    """``--preset`` and one option per switch of :mod:`common.switches`, each defaulting to the preset's value."""
    group = parser.add_argument_group(
        "settings",
        "each defaults to the preset's value: 'default' (the study's settings with early stopping), "
        "'study' (the original study exactly, for a GPU server) or 'demo' (CPU-sized, the default with --demo)",
    )
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="the settings to start from (default: 'demo' with --demo, else 'default')",
    )
    # labelled "default preset", not "default": --demo starts from the demo preset
    presets = {("default preset" if name == "default" else name): preset(name, study, demo) for name in PRESETS}
    for name, entry in SWITCHES.items():
        if name == "ct_window" and spec.modality != "CT":
            continue  # MRI: no Hounsfield units to window
        if name == "slice_margin" and not spec.volumetric:
            continue  # 2D images: no slices to choose
        values = "; ".join(f"{p}: {entry.show(getattr(s, entry.field))}" for p, s in presets.items())
        bare = {"nargs": "?", "const": entry.bare} if entry.bare is not None else {}  # --mixed-precision alone: on
        group.add_argument(
            entry.option,
            dest=f"switch_{name}",
            type=_argparse_type(entry),
            default=argparse.SUPPRESS,  # absent unless given: "off" parses to None
            metavar=entry.metavar,
            help=f"{entry.help} ({values})",
            **bare,
        )


def _argparse_type(entry: Switch):
    def parse(text: str):
        try:
            return entry.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = entry.name  # argparse names the type in its messages
    return parse


def switch_values(args: argparse.Namespace) -> dict:
    """The switches given on the command line, by name, parsed."""
    return {name: getattr(args, f"switch_{name}") for name in SWITCHES if hasattr(args, f"switch_{name}")}


def preset_name(args: argparse.Namespace) -> str:
    """``--preset``, else ``demo`` with ``--demo``, else ``default``."""
    if getattr(args, "preset", None):
        return args.preset
    return "demo" if args.demo else "default"


def resolve_settings(
    args: argparse.Namespace,
    study: Settings,
    demo: Settings,
    spec: DatasetSpec | None = None,
    base: Settings | None = None,
) -> Settings:
    """The preset (or ``base``) with the command line's switches; ConfigError names a bad option."""
    base = base if base is not None else preset(preset_name(args), study, demo)
    values = switch_values(args)
    size, depth = values.get("image_size", base.input_size), values.get("depth", base.depth)
    if size % (2**depth):
        raise ConfigError(
            f"--image-size {size} is not divisible by 2**depth = {2**depth} "
            f"(the network pools {depth} times); use a multiple of {2**depth}"
        )
    return apply_switches(base, values, spec)


DEMO_KINDS = {
    "synthetic": "phantoms in the QUBIQ layout (common.demo; the 3D sets: common.data.volume_demo)",
    "mni152": "real anatomy, brain tissue drawn by simulated experts on the MNI152 2009a template "
    "(common.data.anatomy)",
}


def demo_description(spec: DatasetSpec, kind: str) -> str:
    """What ``--demo KIND`` generates for ``spec`` (the 2D sets' phantoms, the 3D sets' volumes, MNI152)."""
    if kind == "synthetic":
        if spec.volumetric:
            return "synthetic CT volumes in the 2021 layout (common.data.volume_demo)"
        return "phantoms in the QUBIQ layout (common.demo)"
    return DEMO_KINDS[kind]


def demo_root(spec: DatasetSpec, kind: str) -> Path:
    """Where ``--demo KIND`` puts (and finds) ``spec``'s demo data, as :func:`resolve_data_root` chooses it,
    with ``<SEED>`` in place of the seed (for help texts and docs)."""
    return resolve_data_root(argparse.Namespace(data_root=None, demo=kind, seed="<SEED>"), spec)


def demo_roots(spec: DatasetSpec) -> str:
    """Every ``--demo`` kind's root for ``spec``, as the ``--data-root`` help states them."""
    roots = [(kind, demo_root(spec, kind)) for kind in demo_kinds(spec)]
    first = f"./{roots[0][1].as_posix()}"
    return first + "".join(f"; --demo {kind}: ./{root.as_posix()}" for kind, root in roots[1:])


def or_list(values: list) -> str:
    """``1``, ``1 or 2``, ``1, 2 or 3``."""
    shown = [str(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def demo_kinds(spec: DatasetSpec) -> list[str]:
    """The demo datasets ``spec`` can use: the MNI152 one draws single-channel MRI with one task."""
    single = spec.channels == 1 and spec.tasks == 1 and spec.modality == "MRI"
    return ["synthetic", "mni152"] if single else ["synthetic"]


def demo_kind(value: object) -> str | None:
    """``config.json``'s ``demo`` value as a kind (runs before ``--demo mni152`` saved ``true``)."""
    if value is True:
        return "synthetic"
    return value if value in DEMO_KINDS else None


def resolve_data_root(args: argparse.Namespace, spec: DatasetSpec | None = None) -> Path:
    """``--data-root``, else the demo's root, else ``$QUBIQ_DATA``, else ``./Project_data``. The demo of a
    volume set is in the 2021 layout, in a root of its own (``demo_data/2021-seed<S>``), so that a demo
    root never holds two releases."""
    if args.data_root is not None:
        return args.data_root
    if args.demo == "mni152":
        return DEFAULT_DEMO_ROOT / f"mni152-seed{args.seed}"
    if args.demo and spec is not None and spec.volumetric:
        return DEFAULT_DEMO_ROOT / f"2021-seed{args.seed}"
    if args.demo:
        return DEFAULT_DEMO_ROOT / f"seed{args.seed}"
    return Path(os.environ.get("QUBIQ_DATA") or DEFAULT_DATA_ROOT)


def prepare_demo(spec: DatasetSpec, kind: str, root: Path, seed: int) -> None:
    """Generate the demo data of ``kind`` under ``root`` unless it is already there."""
    if kind not in demo_kinds(spec):
        raise ConfigError(f"--demo {kind}: not available for {spec.name} (choose from {', '.join(demo_kinds(spec))})")
    if kind == "mni152":
        from common.data.anatomy import ensure_anatomy_demo

        print(f"demo data: {root} ({spec.name} on the MNI152 2009a template, generated once from seed {seed})")
        ensure_anatomy_demo(spec, root, seed)
    elif spec.volumetric:
        from common.data.volume_demo import ensure_volume_demo

        print(f"demo data: {root} ({spec.name} CT volumes in the 2021 layout, generated once from seed {seed})")
        ensure_volume_demo(spec, root, seed)
    else:
        from common.data.demo.generate import ensure_demo_data

        print(f"demo data: {root} (all four datasets, generated once from seed {seed})")
        ensure_demo_data(root, seed, extra=spec)


def apply_resume(args: argparse.Namespace, spec: DatasetSpec, study: Settings, demo: Settings) -> Settings:
    """With ``--resume``, what was not given on the command line comes from the run's ``config.json``.

    Returns the saved settings with any explicit overrides (a differing override is refused later,
    when the run folder's configuration is compared with the resolved one).
    """
    from common.runs.folder import check_resume_folder

    check_resume_folder(args.resume)  # a file, no folder, or a start that died before its config.json
    path = args.resume / CONFIG_FILE
    try:
        saved = json.loads(path.read_text())
        saved_name = saved["dataset"]["name"]
        saved_settings = Settings.from_dict(saved["settings"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--resume {args.resume}: unreadable {CONFIG_FILE} ({error})") from error
    if saved_name != spec.name:
        raise ConfigError(
            f"--resume {args.resume}: the run is of dataset {saved_name}, not {spec.name}; "
            f"resume it with that dataset's script"
        )
    if args.preset is not None:
        raise ConfigError("--preset and --resume: a resumed run keeps the settings saved in its config.json")
    if args.out is not None and args.out != args.resume:
        raise ConfigError("--out and --resume name different folders; a resumed run stays in its own folder")
    args.out = args.resume
    args.task = saved["task"] if args.task is None else args.task
    args.seed = saved["seed"] if args.seed is None else args.seed
    args.experts = saved["experts"] if args.experts is None else args.experts
    args.data_root = Path(saved["data_root"]) if args.data_root is None else args.data_root
    args.demo = args.demo or demo_kind(saved.get("demo"))
    args.release = args.release or (saved.get("release") or {}).get("release")
    args.deterministic = args.deterministic or bool(saved.get("deterministic"))
    args.command = saved.get("command")
    if saved.get("kind") == "cross-validation":
        if args.folds is not None and args.folds != saved["folds"]:
            raise ConfigError(f"--resume {args.resume}: the run has {saved['folds']} folds, not --folds {args.folds}")
        args.folds = saved["folds"]
    return resolve_settings(args, study, demo, spec, base=saved_settings)


def main(spec: DatasetSpec, study: Settings, demo: Settings, task: int, argv: list[str] | None = None) -> dict:
    """Entry point of a dataset script. Exits with status 2 and a one-line message on bad input."""
    parser = build_parser(spec, study, demo, task)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, not errors
    from common.data.cases import DataError
    from common.runs.plan import check_experts, check_task
    from common.storage import StorageError

    try:
        if args.gather is not None:
            return gather_from_command_line(parser, args, spec)
        if args.checkpoint_every is not None and not args.checkpoint_every >= 0:
            raise ConfigError(f"--checkpoint-every: expected seconds >= 0, got {args.checkpoint_every}")
        args.command = sys.argv
        if args.resume is not None:
            settings = apply_resume(args, spec, study, demo)
        else:
            args.task = task if args.task is None else args.task
            args.seed = 0 if args.seed is None else args.seed
            settings = resolve_settings(args, study, demo, spec)
        check_task(spec, args.task)
        check_experts(spec, args.experts)
        data_root = resolve_data_root(args, spec)
        if data_root.exists() and not data_root.is_dir():
            raise ConfigError(f"--data-root {data_root} is a file; expected the folder that holds the QUBIQ release")
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise ConfigError(
                f"--out {args.out} is a file, not a folder; name a folder for the run (nothing is overwritten)"
            )
        if args.demo:
            prepare_demo(spec, args.demo, data_root, args.seed)
        options = run_options(args)
        if args.folds is not None or args.splits is not None:
            for flag, given in (
                ("--predict-test", args.predict_test),
                ("--tensorboard", args.tensorboard),
            ):
                if given:
                    raise ConfigError(f"{flag} applies to a single run, not to cross-validation (--folds/--splits)")
            from common.runs.crossval import run_cv_plan

            return run_cv_plan(spec, settings, args.task, data_root, options)
        if args.fold is not None:
            raise ConfigError("--fold k picks a fold of a cross-validation: give --folds K (or --splits FILE) too")
        from common.runs.pipeline import run_plan

        return run_plan(spec, settings, args.task, data_root, options)
    except (DataError, ConfigError, FileExistsError, PermissionError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except StorageError as error:  # a full disk, a quota, a read-only mount: nothing half-written is left
        run_dir = args.out or args.resume
        if run_dir is not None and (Path(run_dir) / CONFIG_FILE).is_file():
            error = error.advise(f"continue the run with --resume {run_dir}")
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def run_options(args: argparse.Namespace):
    """The parsed command line as the options of a run (:class:`common.runs.plan.RunOptions`)."""
    from common.runs.plan import RunOptions

    return RunOptions(
        experts=args.experts,
        seed=args.seed,
        out=args.out,
        resume=args.resume is not None,
        predict_test=args.predict_test,
        deterministic=args.deterministic,
        tensorboard=args.tensorboard,
        plots=not args.no_plots,
        verbose=0 if args.quiet else 2,
        extra_config={"demo": args.demo, "command": args.command, "distribute": args.distribute},
        checkpoint_seconds=args.checkpoint_every,
        train_only=args.train_only,
        distribute=args.distribute,
        release=args.release,
        folds=args.folds,
        splits_file=args.splits,
        only_fold=args.fold,
    )


#: What may accompany --gather: everything else comes from the run's config.json.
GATHER_OPTIONS = {"gather", "data_root", "no_plots", "quiet"}


def gather_from_command_line(parser: argparse.ArgumentParser, args: argparse.Namespace, spec: DatasetSpec) -> dict:
    """``--gather RUN_DIR``: refuse options that would not apply, then gather (no TensorFlow)."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    given = [
        flags[dest]
        for dest, value in vars(args).items()
        if dest in flags and dest not in GATHER_OPTIONS and value != parser.get_default(dest)
    ]
    if given:
        raise ConfigError(
            f"--gather takes the run's configuration from {args.gather / CONFIG_FILE}; "
            f"{', '.join(given)} does not apply (only --data-root and --no-plots do)"
        )
    from common.gather import gather_run

    return gather_run(args.gather, spec=spec, data_root=args.data_root, plots=not args.no_plots)
