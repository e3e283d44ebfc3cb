"""Compare settings on the same folds and seeds: ``python -m common.experiment``.

Example (the study's dropout and ConvLSTM findings, on the kidney demo data, 3 folds)::

    python -m common.experiment --dataset kidney --demo --folds 3 \\
        --vary dropout=spatial,standard --vary convlstm=on,off

``--vary NAME=V1,V2,...`` names a switch of :mod:`common.switches` and its values; the variants are
the grid of all combinations (``--design grid``) or the first value of every switch plus one change at a
time (``--design one-at-a-time``). The first variant, every switch at its first value, is the baseline
that every other variant is compared with, fold by fold (:mod:`common.evaluation.comparison`). ``--set NAME=V``
changes a setting for all variants. Every variant is a cross-validation (:mod:`common.runs.crossval`) on the
same ``splits.json`` with the same seed, so the per-fold differences are paired.

An experiment folder::

    experiment.json    the command, the dataset, the base settings, the variants and their folders
    splits.json        the folds every variant uses
    run.log
    variants/01_dropout=spatial_convlstm=on/   one cross-validation folder per variant
    comparison.md      the comparison table (also printed), comparison.csv, comparison.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import re
import shlex
import sys
from pathlib import Path

from common.cli import DEMO_KINDS
from common.datasets import DATASETS, dataset, script_task
from common.evaluation.comparison import (
    VariantResult,
    comparison_csv,
    comparison_rows,
    format_comparison,
    paired_comparison,
)
from common.runs.folder import (
    COMPARISON_CSV,
    COMPARISON_JSON,
    COMPARISON_MD,
    CONFIG_FILE,
    EXPERIMENT_FILE,
    LOG_FILE,
    SPLITS_FILE,
    VARIANTS_FOLDER,
)
from common.spec import RELEASE_NAMES, ConfigError, DatasetSpec, Settings
from common.switches import PRESETS, apply_switches, describe, parse_value, preset, show_value, switch

DESIGNS = ("grid", "one-at-a-time")


def parse_assignment(text: str, option: str = "--vary") -> tuple[str, list[str]]:
    """``NAME=V1,V2`` as the switch's name and its values in canonical text form (each one checked)."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise ConfigError(f"{option} {text!r}: expected NAME=VALUE[,VALUE...], e.g. dropout=spatial,standard")
    entry = switch(name)
    shown = [show_value(entry.name, parse_value(entry.name, v.strip())) for v in values.split(",")]
    if len(set(shown)) != len(shown):
        raise ConfigError(f"{option} {text!r}: a value is repeated")
    return entry.name, shown


def variant_grid(varies: list[tuple[str, list[str]]], design: str = "grid") -> list[dict[str, str]]:
    """The variants, each a ``{switch: value}`` dict; the first has every switch at its first value.

    ``grid``: all combinations, in the order of the ``--vary`` options (the last one changes fastest).
    ``one-at-a-time``: the baseline, then each further value of each switch with the others at their
    first value.
    """
    names = [name for name, _ in varies]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--vary {', '.join(repeated)} given more than once; list all values in one --vary")
    if design not in DESIGNS:
        raise ConfigError(f"--design {design!r}: choose one of {', '.join(DESIGNS)}")
    if not varies:
        return [{}]
    if design == "grid":
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(v for _, v in varies))]
    baseline = {name: values[0] for name, values in varies}
    variants = [baseline]
    for name, values in varies:
        variants += [{**baseline, name: value} for value in values[1:]]
    return variants


def variant_label(changes: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "base settings"


def variant_folder(number: int, changes: dict[str, str]) -> str:
    text = "_".join(f"{k}={v}" for k, v in changes.items()) or "base"
    return f"{number:02d}_" + re.sub(r"[^A-Za-z0-9._=+-]+", "-", text)


def run_experiment(
    spec: DatasetSpec,
    base: Settings,
    task: int,
    data_root: Path,
    varies: list[tuple[str, list[str]]],
    design: str = "grid",
    **options,
) -> dict:
    """Cross-validate every variant on the same folds and seed and compare each with the first.

    ``options`` are those of :class:`common.runs.plan.RunOptions` (``folds`` default 3 here, ``verbose``
    0, ``experts``, ``seed``, ``out``, ``resume``, ``splits_file`` ...). Returns the comparison (also
    written to ``comparison.json``): the rows of the table and, per variant, its paired comparison with
    the baseline.
    """
    from common.runs.crossval import run_cv_plan, variant_metrics
    from common.runs.log import RunLog
    from common.runs.plan import RunOptions, check_experts, check_task

    options = RunOptions(**{"folds": 3, "verbose": 0, **options})
    check_task(spec, task)
    experts = check_experts(spec, options.experts)
    variants = variant_grid(varies, design)
    settings = [apply_switches(base, {n: parse_value(n, v) for n, v in c.items()}, spec) for c in variants]
    record = experiment_record(spec, base, task, data_root, varies, design, variants, experts, options)
    exp_dir, split_list = open_experiment(spec, task, data_root, record, settings, experts, options)
    if options.folds is not None and options.folds != len(split_list):
        raise ConfigError(f"--folds {options.folds}, but the splits hold {len(split_list)} folds")
    runlog = RunLog(exp_dir / LOG_FILE, echo=options.log)
    runlog(
        f"experiment on {spec.title}, task {task}: {len(variants)} variant(s) x {len(split_list)} folds "
        f"x {len(experts)} expert(s) in {exp_dir}"
    )
    results = []
    for number, (changes, variant_settings) in enumerate(zip(variants, settings, strict=True), start=1):
        folder = exp_dir / VARIANTS_FOLDER / variant_folder(number, changes)
        runlog(f"== variant {number}/{len(variants)}: {variant_label(changes)}")
        variant_options = options.replace(
            experts=experts,
            out=folder,
            resume=(folder / CONFIG_FILE).is_file(),
            folds=len(split_list),
            splits_file=exp_dir / SPLITS_FILE,
            log=runlog,
            extra_config={"experiment": str(exp_dir), "variant": changes},
        )
        summary = run_cv_plan(spec, variant_settings, task, data_root, variant_options)
        results.append(
            VariantResult(
                name=variant_label(changes),
                changes=changes,
                fold_scores=summary["fold_scores"],
                case_scores=summary["per_case"],
                seconds=summary["training_seconds"],
                parameters=summary["parameters"],
                networks=summary["networks"],
                metrics=variant_metrics(summary),
            )
        )
    title = (
        f"{spec.title}, task {task} ({spec.task_name(task)}): {len(split_list)}-fold cross-validation, "
        f"{len(experts)} expert network(s) per fold, seed {options.seed}"
    )
    comparison = write_comparison(exp_dir, results, title, base, (options.extra_config or {}).get("command"))
    runlog(comparison.pop("table"))
    comparison["experiment_dir"] = str(exp_dir)
    return comparison


def experiment_record(
    spec: DatasetSpec,
    base: Settings,
    task: int,
    data_root: Path,
    varies: list[tuple[str, list[str]]],
    design: str,
    variants: list[dict],
    experts: list[int],
    options,
) -> dict:
    """What ``experiment.json`` holds: the design, the base settings, the variants and their folders."""
    return {
        "dataset": spec.name,
        "task": task,
        "design": design,
        "vary": [[name, values] for name, values in varies],
        "base_settings": base.to_dict(),
        "experts": experts,
        "seed": options.seed,
        "data_root": str(Path(data_root).resolve()),
        "release": options.release,
        "variants": [
            {"name": variant_label(c), "changes": c, "folder": f"{VARIANTS_FOLDER}/{variant_folder(i, c)}"}
            for i, c in enumerate(variants, start=1)
        ],
        **(options.extra_config or {}),
    }


def open_experiment(
    spec: DatasetSpec,
    task: int,
    data_root: Path,
    record: dict,
    settings: list[Settings],
    experts: list[int],
    options,
) -> tuple[Path, list[dict]]:
    """The experiment folder and its folds: resumed (its record must match), or new, with every file every
    variant reads checked and ``experiment.json`` and ``splits.json`` written before any variant trains."""
    from common.data.check import check_run_data
    from common.runs.crossval import check_folds, make_folds, pooled_cases, read_splits, validation_fraction
    from common.runs.folder import new_run_dir, prepare_run_dir
    from common.storage import write_json
    from common.strategies import strategy

    out = options.out
    if options.resume:
        if out is None or not (out / EXPERIMENT_FILE).is_file():
            raise ConfigError(f"--resume {out}: not an experiment folder (no {EXPERIMENT_FILE} there)")
        saved = json.loads((out / EXPERIMENT_FILE).read_text())
        if isinstance(saved.get("base_settings"), dict):  # fields added since (mixed_precision) at their defaults
            saved["base_settings"] = json.loads(json.dumps(Settings.from_dict(saved["base_settings"]).to_dict()))
        keys = ("dataset", "task", "design", "vary", "base_settings", "experts", "seed", "data_root")
        differing = [k for k in keys if json.loads(json.dumps(record[k])) != saved.get(k)]
        if differing:
            raise ConfigError(f"--resume {out}: the experiment was made with other {', '.join(differing)}")
        return out, read_splits(out / SPLITS_FILE, spec.name)
    release = options.release
    problems: list[str] = []  # a case folder without its image: listed by the data check with the rest
    cases = pooled_cases(data_root, spec.name, release, problems)
    # every file every variant reads, checked before the experiment folder is created (common.data.check)
    check_run_data(
        spec,
        task,
        {"train": cases, "held_out": cases},
        {
            f"{s.strategy} {job.name}": list(job.heads)
            for s in {v.strategy: v for v in settings}.values()
            for job in strategy(s.strategy).networks(experts, options.seed, s)
        },
        echo=options.log,
        found_problems=problems,
    )
    case_ids = [c.case_id for c in cases]
    if options.splits_file is not None:
        split_list = read_splits(options.splits_file, spec.name, case_ids)
    else:
        if options.folds is None:
            raise ConfigError("give --folds K or --splits FILE")
        split_list = make_folds(case_ids, options.folds, options.seed, validation_fraction(spec))
    check_folds(split_list, case_ids)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    default = new_run_dir(Path("runs") / "experiments" / f"{spec.name}-task{task}-{stamp}")
    exp_dir = prepare_run_dir(out if out is not None else default, spec, task)
    write_json(exp_dir / EXPERIMENT_FILE, record)
    write_json(exp_dir / SPLITS_FILE, {"dataset": spec.name, "seed": options.seed, "folds": split_list})
    return exp_dir, split_list


def write_comparison(exp_dir: Path, results: list, title: str, base: Settings, command: list | None) -> dict:
    """``comparison.json``, ``.csv`` and ``.md``: the table, each variant paired with the baseline."""
    from common.storage import write_atomic, write_json

    table = format_comparison(results, title)
    comparison = {
        "title": title,
        "rows": comparison_rows(results),
        "paired": {r.name: paired_comparison(results[0], r) for r in results[1:]},
        "base_settings": describe(base),
        "command": command,
    }
    write_json(exp_dir / COMPARISON_JSON, comparison)
    write_atomic(exp_dir / COMPARISON_CSV, comparison_csv(results))
    settings_line = ", ".join(f"{k}={v}" for k, v in describe(base).items())
    write_atomic(
        exp_dir / COMPARISON_MD,
        f"{table}\n\nCommand: `{shlex.join(command or [])}`\n\nBase settings: {settings_line}\n",
    )
    return {**comparison, "table": table}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.experiment",
        description="Cross-validate variants of the settings on the same folds and seeds and compare them "
        "with the first variant (the study's findings as experiments).",
    )
    parser.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default=None,
        help="the dataset (common/datasets.py); needed unless --resume, which reads it",
    )
    parser.add_argument(
        "--task", type=int, default=None, help="task to run (default: the dataset script's 'task = ...' line)"
    )
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a switch and its values; repeatable (e.g. --vary dropout=spatial,standard --vary convlstm=on,off). "
        "Names: the scripts' settings (a script's -h, docs/options.md), dashes or underscores",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=V", help="a setting for all variants; repeatable"
    )
    parser.add_argument(
        "--design", choices=DESIGNS, default="grid", help="all combinations, or one change at a time (default: grid)"
    )
    parser.add_argument(
        "--folds", type=int, default=None, metavar="K", help="number of folds (default: 3, or those of --splits)"
    )
    parser.add_argument("--splits", type=Path, default=None, metavar="FILE", help="reuse the folds of a splits.json")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="base settings (default: 'demo' with --demo, else 'default'; as for the scripts)",
    )
    parser.add_argument(
        "--demo",
        nargs="?",
        const="synthetic",
        default=None,
        choices=sorted(DEMO_KINDS),
        help="use (and generate once) demo data and start from the 'demo' preset: synthetic or mni152 "
        "(brain-growth on real anatomy); --demo alone: synthetic",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="ROOT",
        help="QUBIQ data root (default: as for the scripts: $QUBIQ_DATA, else ./Project_data; with --demo, "
        "the demo's folder)",
    )
    parser.add_argument(
        "--release",
        choices=RELEASE_NAMES,
        default=None,
        help="QUBIQ release to read when the data root holds both (default: the one there)",
    )
    parser.add_argument("--experts", default=None, help="experts to train, e.g. 1,2,3 (default: all)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the folds, the demo data and training (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="EXP_DIR",
        help="experiment folder to create (default: runs/experiments/<dataset>-task<N>-<time>)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="EXP_DIR",
        help=f"continue an interrupted experiment with the design and settings saved in its {EXPERIMENT_FILE}",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots of every fold")
    parser.add_argument(
        "--quiet", action="store_true", help="no per-epoch Keras progress lines (the run's own lines still show)"
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from common.cli import parse_experts, prepare_demo, resolve_data_root
    from common.data.cases import DataError

    try:
        saved = {}
        if args.resume is not None:
            path = args.resume / EXPERIMENT_FILE
            if not path.is_file():
                raise ConfigError(f"--resume {args.resume}: not an experiment folder (no {EXPERIMENT_FILE} there)")
            saved = json.loads(path.read_text())
            if args.dataset not in (None, saved["dataset"]):
                raise ConfigError(
                    f"--resume {args.resume}: the experiment is on {saved['dataset']}, not {args.dataset}"
                )
            args.dataset = saved["dataset"]
        elif args.dataset is None:
            raise ConfigError(f"give --dataset ({', '.join(DATASETS)}), or --resume EXP_DIR")
        entry = dataset(args.dataset)
        spec = entry.spec
        if args.resume is not None:
            if args.vary or args.set:
                raise ConfigError("--resume: the variants come from experiment.json; leave out --vary and --set")
            base = Settings.from_dict(saved["base_settings"])
            varies = [(name, values) for name, values in saved["vary"]]
            args.task, args.design, args.seed = saved["task"], saved["design"], saved["seed"]
            experts, data_root, args.out = saved["experts"], Path(saved["data_root"]), args.resume
            command = saved.get("command")
        else:
            base = preset(args.preset or ("demo" if args.demo else "default"), entry.study, entry.demo)
            fixed = dict(parse_assignment(text, "--set") for text in args.set)
            for name, values in fixed.items():
                if len(values) != 1:
                    raise ConfigError(f"--set {name}: give one value (use --vary for several)")
            base = apply_switches(base, {n: parse_value(n, v[0]) for n, v in fixed.items()}, spec)
            varies = [parse_assignment(text) for text in args.vary]
            args.task = script_task(entry) if args.task is None else args.task
            try:
                experts = parse_experts(args.experts) if args.experts else None
            except argparse.ArgumentTypeError as error:
                raise ConfigError(f"--experts: {error}") from None
            data_root = resolve_data_root(args, entry.spec)
            command = ["python", "-m", "common.experiment", *(sys.argv[1:] if argv is None else argv)]
            if args.folds is None and args.splits is None:
                args.folds = 3
        if args.demo and args.resume is None:
            prepare_demo(spec, args.demo, data_root, args.seed)
        return run_experiment(
            spec,
            base,
            args.task,
            data_root,
            varies,
            design=args.design,
            folds=args.folds,
            experts=experts,
            seed=args.seed,
            out=args.out,
            resume=args.resume is not None,
            splits_file=args.splits,
            plots=not args.no_plots,
            verbose=0 if args.quiet else 2,
            extra_config={"command": command, "demo": args.demo},
            release=args.release or saved.get("release"),
        )
    except (DataError, ConfigError, FileExistsError, PermissionError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
