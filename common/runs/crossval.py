"""K-fold cross-validation: seeded folds saved in ``splits.json``, one per-expert ensemble per fold.

A dataset has 4 to 7 held-out cases in the study's single split: too few to tell two settings apart.
Cross-validation holds out every training and validation case once. For fold ``k``:

- ``held_out``: the cases of fold ``k``; they are scored and never trained or validated on;
- ``validation``: a seeded draw from the other folds, in the proportion of the official validation
  split (at least one case); it chooses each network's best epoch;
- ``train``: the remaining cases.

The folds are a function of the case ids, ``K`` and the seed, and are written to ``splits.json`` so that
an experiment's variants, a resumed run or a later run (``--splits``) use exactly the same folds.

A cross-validation folder::

    config.json        what was run (dataset, task, experts, seed, settings, folds)
    splits.json        the folds
    run.log
    fold1/ ... foldK/  one complete run folder per fold (experts/, predictions/, results.json, plots/)
    cv_results.json    the QUBIQ score per fold, its mean and standard deviation, the score per case
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.cases import Case, DataError, discover_cases, grouped, natural_key
from common.evaluation.report import uncertainty_line, versions
from common.evaluation.uncertainty import mean_metrics
from common.runs.folder import (
    CONFIG_FILE,
    CV_RESULTS_FILE,
    JOBS_FOLDER,
    LOG_FILE,
    SPLITS_FILE,
    _json_ready,
    check_resumable,
    fold_folder,
    new_run_dir,
    prepare_run_dir,
    ready_to_gather,
)
from common.runs.folder import RESULTS_FILE as FOLD_RESULTS_FILE
from common.runs.gather import gather_run
from common.runs.log import RunLog
from common.runs.pipeline import run_plan
from common.runs.plan import ROLES, RunOptions, check_experts, check_roles, check_task, run_record
from common.spec import ConfigError, DatasetSpec, Settings
from common.storage import write_json
from common.strategies import strategy

RESULTS_FILE = CV_RESULTS_FILE  # what a cross-validation folder calls its results


def make_folds(case_ids: list[str], folds: int, seed: int, validation_fraction: float) -> list[dict[str, list[str]]]:
    """``folds`` seeded folds over ``case_ids``, each with its train, validation and held-out cases.

    The cases' groups (:func:`common.data.cases.case_group`: one case each, but the volumes ``case13-1``
    and ``case13-2`` are one group) are shuffled with ``seed`` and dealt into ``folds`` parts whose group
    counts differ by at most one; fold ``k`` holds out part ``k``. Of the other groups,
    ``round(validation_fraction * n)`` (at least one, and at least one left to train) validate, drawn with
    ``(seed, k)``; the rest train. A group's cases thus share a role in every fold. Case ids within a role
    are in natural order.
    """
    ids = sorted(set(case_ids), key=natural_key)
    if len(ids) != len(case_ids):
        raise DataError("case ids must be unique to make folds")
    groups = grouped(ids)
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if folds > len(groups):
        unit = "cases" if len(groups) == len(ids) else "case<N> groups"
        raise ConfigError(f"--folds {folds}: only {len(groups)} {unit} to share among the folds")
    if not 0 <= validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")

    def cases(parts) -> list[str]:
        return sorted((c for g in parts for c in groups[g]), key=natural_key)

    order = np.random.default_rng(seed).permutation(len(groups))
    result = []
    for k, part in enumerate(np.array_split(order, folds)):
        rest = [g for g in range(len(groups)) if g not in set(part)]
        n_validation = min(max(1, round(validation_fraction * len(rest))), len(rest) - 1)
        chosen = np.random.default_rng([seed, k]).choice(len(rest), size=n_validation, replace=False)
        validation = [rest[i] for i in chosen]
        train = [g for g in rest if g not in set(validation)]
        result.append({"train": cases(train), "validation": cases(validation), "held_out": cases(part)})
    return result


def check_folds(folds: list[dict[str, list[str]]], case_ids: list[str] | None = None, where: str = "splits") -> None:
    """Every fold has the three roles, no case plays two roles in a fold, and each case is held out once.

    With ``case_ids``, the folds must name exactly these cases (those of the data being used).
    """
    if len(folds) < 2:
        raise ConfigError(f"{where}: needs at least 2 folds, found {len(folds)}")
    held_count: dict[str, int] = {}
    for k, fold in enumerate(folds, start=1):
        if set(fold) != set(ROLES):
            raise ConfigError(f"{where}: fold {k} must have exactly the keys {', '.join(ROLES)}, has {sorted(fold)}")
        check_roles(fold, f"{where}: fold {k}")
        for case_id in fold["held_out"]:
            held_count[case_id] = held_count.get(case_id, 0) + 1
    twice = sorted((c for c, n in held_count.items() if n > 1), key=natural_key)
    if twice:
        raise ConfigError(f"{where}: case(s) {', '.join(twice)} are held out in more than one fold")
    if case_ids is not None:
        named = set(held_count).union(*(set(f["train"]) | set(f["validation"]) for f in folds))
        missing, unknown = set(case_ids) - set(held_count), named - set(case_ids)
        if unknown:
            raise ConfigError(f"{where}: names case(s) not in the data: {', '.join(sorted(unknown, key=natural_key))}")
        if missing:
            raise ConfigError(f"{where}: case(s) {', '.join(sorted(missing, key=natural_key))} are never held out")


def write_splits(path: Path, folds: list[dict[str, list[str]]], dataset: str, seed: int | None) -> None:
    write_json(path, {"dataset": dataset, "seed": seed, "folds": folds})


def read_splits(path: Path, dataset: str, case_ids: list[str] | None = None) -> list[dict[str, list[str]]]:
    """The folds of a ``splits.json``, checked against the dataset and (optionally) its cases."""
    try:
        saved = json.loads(Path(path).read_text())
        folds = saved["folds"]
    except FileNotFoundError:
        raise ConfigError(f"--splits {path}: no such file") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--splits {path}: not a splits.json ({error})") from None
    if saved.get("dataset") != dataset:
        raise ConfigError(f"--splits {path}: made for dataset {saved.get('dataset')!r}, not {dataset!r}")
    check_folds(folds, case_ids, where=f"--splits {path}")
    return folds


#: The validation share of a dataset whose release does not publish its validation count (the 2021 3D sets).
UNKNOWN_VALIDATION_FRACTION = 0.15


def pooled_cases(data_root: Path, dataset: str, release: str | None, problems: list[str]) -> list[Case]:
    """The training and the validation folders' cases together: what cross-validation splits into folds.

    Their names must be unique across the two folders (a fold names a case by its folder's name alone);
    a case folder without its image goes to ``problems`` for the data check to list with the rest.
    """
    cases = discover_cases(data_root, dataset, "train", release=release, problems=problems) + discover_cases(
        data_root, dataset, "validation", release=release, problems=problems
    )
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DataError("the training and validation folders share case names; cross-validation needs unique names")
    return cases


def validation_fraction(spec: DatasetSpec) -> float:
    """The official validation split's share of the training and validation cases (kidney: 4 / 24); where the
    release does not publish it, :data:`UNKNOWN_VALIDATION_FRACTION` (about the 2D sets' 0.13 to 0.17)."""
    if spec.n_validation is None:
        return UNKNOWN_VALIDATION_FRACTION
    return spec.n_validation / (spec.n_train + spec.n_validation)


def default_cv_dir(spec: DatasetSpec, task: int, folds: int) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{spec.name}-task{task}-cv{folds}-{stamp}"


def fold_statistics(scores: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single fold) of the per-fold scores."""
    values = np.asarray(scores, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_cv_table(title: str, folds: list[dict], uncertainty: dict | None = None, rules: dict | None = None) -> str:
    """Per-fold scores; each map rule's score and the uncertainty metrics' means (if any), then the QUBIQ
    score, last."""
    mean, std = fold_statistics([f["score"] for f in folds])
    lines = [title, f"{'fold':>4}  {'held-out cases':<40} {'QUBIQ':>7} {'training':>9}"]
    for f in folds:
        cases = ", ".join(f["held_out"])
        cases = cases if len(cases) <= 40 else cases[:37] + "..."
        lines.append(f"{f['fold']:>4}  {cases:<40} {f['score']:7.4f} {f['training_seconds']:8.0f}s")
    if rules:
        lines.append(
            "QUBIQ score by map rule over the folds: "
            + ", ".join(f"{rule} {r['mean']:.4f} +/- {r['std']:.4f}" for rule, r in rules.items())
        )
    if uncertainty is not None:
        lines.append(uncertainty_line(uncertainty))
    lines.append(f"QUBIQ score over {len(folds)} folds: {mean:.4f} +/- {std:.4f} (mean +/- standard deviation)")
    return "\n".join(lines)


def run_cross_validation(
    spec: DatasetSpec, settings: Settings, task: int, data_root: Path, folds: int | None = None, **options
) -> dict:
    """Train and score the ensemble in every fold; the QUBIQ score per fold, mean and spread.

    ``options`` are the fields of :class:`common.runs.plan.RunOptions` (``splits_file``, ``only_fold``,
    ``resume``, ``train_only`` ...). The folds come from ``splits_file`` when given, else from the
    folder's ``splits.json`` when resuming, else from :func:`make_folds` with the seed. Each fold is one
    plan (:func:`common.runs.pipeline.run_plan`) in a complete run folder ``foldK/``; with ``resume``
    finished folds are reused and an interrupted one continues. Returns what ``cv_results.json`` holds.

    With ``only_fold`` this is one job of a cross-validation split into jobs (one per fold, or with
    ``train_only`` one per fold and network, :mod:`common.runs.jobs`): the folder is created or joined (its
    ``config.json`` must match), only that fold is run, and the fold's results (or the job's report) are
    returned; no ``cv_results.json`` is written. ``resume`` then gathers: finished folds are read from
    their ``results.json``, a fold whose jobs have all finished is gathered from its saved maps.
    """
    return run_cv_plan(spec, settings, task, data_root, RunOptions(folds=folds, **options))


def run_cv_plan(
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    data_root: Path,
    options: RunOptions,
    train: Callable | None = None,
) -> dict:
    """:func:`run_cross_validation` with its options as one object (``train``: see
    :func:`common.runs.execute.execute`)."""
    check_task(spec, task)
    check_experts(spec, options.experts)
    if options.train_only and options.only_fold is None:
        raise ConfigError("--train-only with --folds needs --fold k: each job trains networks of one fold")
    found: list[str] = []  # the data's warnings: printed now, written to run.log once it exists
    source, split_list = plan_folds(spec, settings, task, data_root, options, found)
    k = len(split_list)
    check_fold_job(options, k)
    config = cv_config(spec, settings, task, data_root, options, source, split_list)
    cv_dir = open_cv_folder(spec, task, options, config, split_list, found)
    if options.only_fold is None:
        runlog = RunLog(cv_dir / LOG_FILE, echo=options.log)
    else:  # a job's own log: jobs never append to a shared file
        chosen = check_experts(spec, options.experts) if options.train_only and options.experts else []
        job_log = f"fold{options.only_fold}" + "".join(f"-seg{e:02d}" for e in chosen) + ".log"
        runlog = RunLog(cv_dir / JOBS_FOLDER / job_log, echo=options.log)
    runlog(f"{spec.title}, task {task}: {k}-fold cross-validation in {cv_dir}")
    runlog(f"data: {source.describe()}")
    for line in found:
        runlog.to_file(line)
    started = time.perf_counter()
    fold_results = []
    for number, fold in enumerate(split_list, start=1):
        if options.only_fold is not None and number != options.only_fold:
            continue
        results = run_fold(spec, settings, task, data_root, options, cv_dir, number, fold, k, runlog, started, train)
        if options.only_fold is not None:
            script = (options.extra_config or {}).get("command") or ["<the dataset's script>"]
            runlog(
                f"[fold {number}/{k}] job done; once every fold's jobs are done: python {script[0]} --resume {cv_dir}"
            )
            return results
        fold_results.append(fold_record(number, fold, results, cv_dir))
    summary = summarize_folds(spec, settings, task, fold_results, cv_dir)
    write_json(cv_dir / RESULTS_FILE, summary)
    title = f"{spec.title}, task {task} ({spec.task_name(task)}): {k}-fold cross-validation"
    runlog(format_cv_table(title, fold_results, summary["uncertainty"]["mean"], summary["map_rules"]))
    return summary


def plan_folds(
    spec: DatasetSpec, settings: Settings, task: int, data_root: Path, options: RunOptions, found: list[str]
) -> tuple:
    """The release and the folds, every case read and checked before anything is created."""
    from common.data.cases import find_release
    from common.data.check import check_run_data, collected_warnings

    release, out = options.release, options.out
    problems: list[str] = []  # a case folder without its image: listed by the data check with the rest
    with collected_warnings(found, options.log):
        source = find_release(data_root, release)
        cases = pooled_cases(data_root, spec.name, release, problems)
    case_ids = [c.case_id for c in cases]
    if options.resume and (out is None or not (out / SPLITS_FILE).is_file()):
        raise ConfigError(f"--resume {out}: not a cross-validation folder (no {SPLITS_FILE} there)")
    if options.splits_file is not None:
        split_list = read_splits(options.splits_file, spec.name, case_ids)
    elif options.resume:
        split_list = read_splits(out / SPLITS_FILE, spec.name, case_ids)
    else:
        if options.folds is None:
            raise ConfigError("give --folds K or --splits FILE for cross-validation")
        split_list = make_folds(case_ids, options.folds, options.seed, validation_fraction(spec))
    if options.folds is not None and options.folds != len(split_list):
        where = options.splits_file if options.splits_file is not None else out / SPLITS_FILE
        raise ConfigError(f"--folds {options.folds}, but {where} holds {len(split_list)} folds")
    # Every case trains in some fold and is held out in another: all are read and checked before anything
    # is created (each fold's plan checks its own cases again, which costs seconds, not a failed fold).
    planned = check_experts(spec, None if options.train_only else options.experts)
    checked = check_run_data(
        spec,
        task,
        {"train": cases, "held_out": cases},
        {n.name: list(n.heads) for n in strategy(settings.strategy).networks(planned, options.seed, settings)},
        echo=options.log,
        found_problems=problems,
    )
    found.extend(w for w in checked.warnings if w not in found)
    options.log(checked.summary())
    return source, split_list


def check_fold_job(options: RunOptions, k: int) -> None:
    """Refuse a ``--fold`` job that cannot be run, before anything is created."""
    if options.only_fold is None:
        return
    if options.out is None:
        raise ConfigError("--fold needs --out CV: the cross-validation folder that all fold jobs share")
    if options.resume:
        raise ConfigError(
            f"--fold and --resume: rerun the fold's own command to continue it; --resume {options.out} without "
            "--fold gathers the folds"
        )
    if not 1 <= options.only_fold <= k:
        raise ConfigError(f"--fold {options.only_fold}: the cross-validation has folds 1 to {k}")


def cv_config(
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    data_root: Path,
    options: RunOptions,
    source,
    split_list: list[dict],
) -> dict:
    """What the cross-validation folder's ``config.json`` holds (versions aside)."""
    planned = check_experts(spec, None if options.train_only else options.experts)
    return _json_ready(
        {
            "kind": "cross-validation",
            **run_record(spec, settings, task, data_root, planned, source, options),
            "folds": len(split_list),
            "split_seeded": {"folds": split_list},
            **({"jobs": True} if options.only_fold is not None else {}),
            **(options.extra_config or {}),
        }
    )


def open_cv_folder(
    spec: DatasetSpec, task: int, options: RunOptions, config: dict, split_list: list[dict], found: list[str]
) -> Path:
    """The cross-validation folder: resumed (its configuration must match), joined by a fold job, or new;
    ``config.json`` and ``splits.json`` written before any fold trains."""
    out = options.out
    seed = options.seed if options.splits_file is None else None
    if options.resume:
        check_resumable(json.loads((out / CONFIG_FILE).read_text()), config, out)
        return out
    if options.only_fold is not None:  # created by the first fold job, joined by the others
        from common.runs.folder import claim_config, claim_file, open_job_dir

        cv_dir = open_job_dir(out, config)
        claim_config(cv_dir, {**config, "versions": versions()})
        claim_file(cv_dir / SPLITS_FILE, {"dataset": spec.name, "seed": seed, "folds": split_list})
        return cv_dir
    cv_dir = prepare_run_dir(
        out if out is not None else new_run_dir(default_cv_dir(spec, task, len(split_list))),
        spec,
        task,
        log=lambda line: (options.log(line), found.append(line)),
    )
    write_json(cv_dir / CONFIG_FILE, {**config, "versions": versions()})
    write_splits(cv_dir / SPLITS_FILE, split_list, spec.name, seed)
    return cv_dir


def run_fold(
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    data_root: Path,
    options: RunOptions,
    cv_dir: Path,
    number: int,
    fold: dict,
    k: int,
    runlog: RunLog,
    started: float,
    train: Callable | None,
) -> dict:
    """Fold ``number``'s results: read when it is done, gathered when its jobs are, else its plan run."""
    fold_dir = fold_folder(cv_dir, number)
    prefix = f"[fold {number}/{k}]"
    if (fold_dir / FOLD_RESULTS_FILE).is_file():
        results = json.loads((fold_dir / FOLD_RESULTS_FILE).read_text())
        runlog(f"{prefix} already done (QUBIQ {results['score']:.4f}), reusing it")
        return results
    if not options.train_only and ready_to_gather(fold_dir):
        unit = strategy(settings.strategy).unit
        runlog(f"{prefix} every {unit} was trained by its job: gathering their saved maps")
        results = gather_run(fold_dir, spec=spec, data_root=data_root, plots=options.plots, log=runlog)
    else:
        resuming = (fold_dir / CONFIG_FILE).is_file() and not options.train_only
        runlog(
            f"{prefix} {'continuing' if resuming else 'training'}: {len(fold['train'])} training, "
            f"{len(fold['validation'])} validation, {len(fold['held_out'])} held-out cases "
            f"(elapsed {time.perf_counter() - started:.0f} s)"
        )
        fold_options = options.replace(
            out=fold_dir,
            resume=resuming,
            log=runlog,
            split=fold,
            extra_config={"fold": number, "folds": k, **(options.extra_config or {})},
            folds=None,
            splits_file=None,
            only_fold=None,
        )
        results = run_plan(spec, settings, task, data_root, fold_options, train)
        if options.train_only:
            return results
    runlog(f"{prefix} QUBIQ {results['score']:.4f} (elapsed {time.perf_counter() - started:.0f} s)")
    return results


def fold_record(number: int, fold: dict, results: dict, cv_dir: Path) -> dict:
    """One fold's line of ``cv_results.json``."""
    networks = results.get("networks") or results.get("per_expert", {})
    return {
        "fold": number,
        "score": results["score"],
        "held_out": fold["held_out"],
        "per_case": results["per_case"],
        "training_seconds": results["training_seconds"],
        "networks": len(networks),
        "parameters": max((e.get("parameters", 0) for e in networks.values()), default=0),
        "uncertainty": (results.get("uncertainty") or {}).get("per_case", {}),
        "map_rules": {rule: r["score"] for rule, r in (results.get("map_rules") or {}).items()},
        "run_dir": results.get("run_dir", str(cv_dir / f"fold{number}")),
    }


def rule_summary(folds: list[dict]) -> dict[str, dict]:
    """Each map rule's QUBIQ score over the folds (``fold_scores``, ``mean``, ``std``), for a strategy that
    reads its outputs several ways (:meth:`common.strategies.Strategy.rule_maps`); a fold recorded before
    rules were, or a run folder's ``results.json`` without them, is read from its own ``results.json``."""
    scores: dict[str, list[float]] = {}
    for fold in folds:
        rules = fold.get("map_rules")
        if rules is None:
            path = Path(fold.get("run_dir", "")) / FOLD_RESULTS_FILE
            saved = json.loads(path.read_text()) if path.is_file() else {}
            rules = {rule: r["score"] for rule, r in (saved.get("map_rules") or {}).items()}
        for rule, score in rules.items():
            scores.setdefault(rule, []).append(score)
    return {
        rule: dict(zip(("mean", "std"), fold_statistics(values), strict=True), fold_scores=values)
        for rule, values in scores.items()
        if len(values) == len(folds)
    }


def variant_metrics(summary: dict) -> dict[str, float | list[int] | None]:
    """What a comparison table shows of a cross-validation beside its score: the uncertainty metrics' means,
    and each map rule's mean score as ``rule:<name>``."""
    rules = summary["map_rules"] if "map_rules" in summary else rule_summary(summary.get("folds", []))
    return {
        **((summary.get("uncertainty") or {}).get("mean") or {}),
        **{f"rule:{rule}": r["mean"] for rule, r in rules.items()},
    }


def summarize_folds(spec: DatasetSpec, settings: Settings, task: int, fold_results: list[dict], cv_dir: Path) -> dict:
    """What ``cv_results.json`` holds: per fold, mean and spread, per case, the uncertainty metrics."""
    mean, std = fold_statistics([f["score"] for f in fold_results])
    per_case_uncertainty = {c: m for f in fold_results for c, m in f.pop("uncertainty").items()}
    return {
        "dataset": spec.name,
        "task": task,
        "folds": fold_results,
        "fold_scores": [f["score"] for f in fold_results],
        "mean": mean,
        "std": std,
        "per_case": {c: s for f in fold_results for c, s in f["per_case"].items()},
        "strategy": settings.strategy,
        "uncertainty": {
            "mean": mean_metrics(per_case_uncertainty) if per_case_uncertainty else None,
            "per_case": per_case_uncertainty,
        },
        "map_rules": rule_summary(fold_results),
        "training_seconds": sum(f["training_seconds"] for f in fold_results),
        "networks": sum(f["networks"] for f in fold_results),
        "parameters": max(f["parameters"] for f in fold_results),
        "run_dir": str(cv_dir),
    }
