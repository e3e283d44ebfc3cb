"""A run as a plan: its settings, its split and the networks it trains, fixed before any training.

:func:`make_plan` reads the case lists, chooses the split (or checks a given one), reads and checks
every file the run will use, and lists the strategy's networks. It creates nothing. What it fixes is
what the run folder's ``config.json`` records, written before any network trains; executing the plan
(:mod:`common.runs.execute`) trains the networks that are not yet complete, and gathering
(:mod:`common.runs.gather`) scores it from their saved maps. One process, the jobs of a split run,
``--resume`` and each fold of a cross-validation are all one plan, executed in part or in whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.cases import Case, DataError, case_group, discover_cases, grouped, natural_key
from common.data.check import CheckedData
from common.runs.folder import _json_ready
from common.spec import ConfigError, DatasetSpec, Settings
from common.strategies import Network, expert_name, strategy

#: The roles a case plays in a run's split and in a cross-validation fold.
ROLES = ("train", "validation", "held_out")


@dataclass(frozen=True)
class RunOptions:
    """Everything a run is asked for besides its dataset, settings, task and data: each default once.

    The dataset scripts' options map onto these one to one (:mod:`common.cli`); tests and the
    benchmark pass them as keywords to :func:`common.runs.pipeline.run_task`.
    """

    experts: list[int] | None = None  # the experts to train (all); in a job (train_only), this job's
    seed: int = 0  # the held-out draw, the folds, and each network's seed (seed + expert)
    out: Path | None = None  # the run folder (default: runs/<dataset>-task<T>-<time>)
    resume: bool = False  # out is an interrupted run folder: continue it
    predict_test: bool = False  # also predict the official test cases
    deterministic: bool = False  # the backend's deterministic kernels
    tensorboard: bool = False  # TensorBoard logs under tensorboard/
    plots: bool = True  # the PNG plots
    verbose: int = 2  # Keras's progress output (0: none)
    log: Callable[[str], None] = print  # receives each progress line
    extra_config: dict | None = None  # more entries for config.json (the command line, the demo kind)
    split: dict | None = None  # given roles (train, validation, held_out) instead of the seeded draw
    checkpoint_seconds: float | None = None  # how often an interrupted network's backup is written
    train_only: bool = False  # one job of a run split into jobs (common.runs.jobs)
    distribute: str = "none"  # "mirrored": each network on every local device
    release: str | None = None  # the QUBIQ release, when the data root holds both
    folds: int | None = None  # cross-validation: K folds (common.runs.crossval)
    splits_file: Path | None = None  # cross-validation: the folds of a splits.json
    only_fold: int | None = None  # cross-validation: one fold's job

    def replace(self, **changes) -> RunOptions:
        import dataclasses

        return dataclasses.replace(self, **changes)


def check_task(spec: DatasetSpec, task: int) -> None:
    if task not in spec.valid_tasks:
        raise ConfigError(
            f"task {task} does not exist for {spec.name}; valid tasks: {', '.join(map(str, spec.valid_tasks))}"
        )


def check_experts(spec: DatasetSpec, experts: list[int] | None) -> list[int]:
    """The experts to train (all of the dataset's by default), validated."""
    valid = list(range(1, spec.experts + 1))
    if experts is None:
        return valid
    wrong = [e for e in experts if e not in valid]
    if wrong or not experts:
        raise ConfigError(
            f"expert(s) {', '.join(map(str, wrong)) or '(none)'} do not exist for {spec.name}; "
            f"valid experts: {', '.join(map(str, valid))}"
        )
    return sorted(set(experts))


def choose_held_out(case_ids: list[str], n_held_out: int, seed: int) -> list[str]:
    """The training cases kept out of training and validation for scoring, drawn from ``seed``.

    Cases of one group (:func:`common.data.cases.case_group`: the volumes ``case13-1`` and ``case13-2``) are
    held out together: groups are drawn in a seeded order until at least ``n_held_out`` cases are held out
    (one group more may overshoot by its size). Where every group is one case (the 2D sets), this is the
    plain draw of ``n_held_out`` cases it always was.
    """
    if n_held_out >= len(case_ids):
        raise DataError(
            f"cannot hold out {n_held_out} of {len(case_ids)} training cases: at least one must remain to train on"
        )
    rng = np.random.default_rng(seed)
    groups = grouped(case_ids)
    if len(groups) == len(case_ids):
        chosen = rng.choice(len(case_ids), size=n_held_out, replace=False)
        return [case_ids[i] for i in sorted(chosen)]
    held: set[str] = set()
    for index in rng.permutation(len(groups)):
        if len(held) >= n_held_out:
            break
        held.update(groups[index])
    if len(held) == len(case_ids):
        raise DataError(
            f"cannot hold out {n_held_out} of {len(case_ids)} training cases in {len(groups)} case<N> groups: at "
            "least one group must remain to train on"
        )
    return [c for c in case_ids if c in held]


def check_groups(roles: dict[str, list[str]], where: str) -> None:
    """Refuse a split that holds out a case of a group (``case13-1``) and trains or validates on another
    (``case13-2``): they may be one patient's, and the held-out score would not be of unseen data."""
    sides = {group: role for role in ("train", "validation") for c in roles.get(role, []) for group in [case_group(c)]}
    for case_id in roles.get("held_out", []):
        group = case_group(case_id)
        if group in sides:
            other = next(c for c in roles[sides[group]] if case_group(c) == group)
            raise ConfigError(
                f"{where} holds out {case_id} but puts {other} in {sides[group]}: cases of one {group}-... group "
                "(possibly one patient's volumes) must stay on one side of a held-out split"
            )


def check_split(split: dict[str, list[str]], cases: list[Case]) -> dict[str, list[str]]:
    """A given split's roles, checked: known case ids, unique across folders, no case in two roles."""
    ids = [c.case_id for c in cases]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(
            f"case id(s) {', '.join(repeated)} occur in both the training and the validation folders; "
            "cross-validation needs unique case names"
        )
    roles = {role: list(split.get(role, [])) for role in ROLES}
    unknown = sorted(set().union(*roles.values()) - set(ids))
    if unknown:
        raise DataError(f"the split names case(s) not found in the data: {', '.join(unknown)}")
    check_roles(roles, "the split")
    return roles


def check_roles(roles: dict[str, list[str]], where: str) -> None:
    """One split's or fold's roles: no case in two of them, something to train on and to score, and no
    ``case<N>`` group on both sides (:func:`check_groups`). ``where`` starts each refusal."""
    for a, b in itertools.combinations(ROLES, 2):
        both = sorted(set(roles[a]) & set(roles[b]), key=natural_key)
        if both:
            raise ConfigError(f"{where} puts case(s) {', '.join(both)} in both {a} and {b}")
    if not roles["train"] or not roles["held_out"]:
        raise ConfigError(f"{where} needs at least one training case and one held-out case")
    check_groups(roles, where)


@dataclass
class Plan:
    """A run fixed before training: what :func:`make_plan` returns.

    ``networks`` are the run's whole ensemble; ``selected`` the ones this process trains (all of them,
    or a job's). ``config`` is what ``config.json`` holds (the split included), versions aside.
    """

    spec: DatasetSpec
    settings: Settings
    task: int
    experts: list[int]
    seed: int
    roles: dict[str, list[str]]
    networks: list[Network]
    selected: list[Network]
    checked: CheckedData
    source: object  # common.data.cases.Release: the layout found
    test_cases: list[Case]
    warnings: list[str]
    config: dict = field(default_factory=dict)

    @property
    def predicted(self) -> list[str]:
        """The cases whose maps the run writes: held-out, validation, then test."""
        return self.roles["held_out"] + self.roles["validation"] + [c.case_id for c in self.test_cases]

    @property
    def title(self) -> str:
        return f"{self.spec.title}, task {self.task} ({self.spec.task_name(self.task)})"


def _discover(data_root: Path, spec: DatasetSpec, options: RunOptions, found: list[str], problems: list[str]) -> tuple:
    """The release and the training, validation and test cases (a missing validation folder is a warning
    when the held-out cases are drawn, since the best epoch can then be chosen by training loss). A case
    folder without its image goes to ``problems``, for the data check to list with the others."""
    from common.data.cases import find_release

    release = options.release
    source = find_release(data_root, release)
    train = discover_cases(data_root, spec.name, "train", release=release, problems=problems)
    try:
        validation = discover_cases(data_root, spec.name, "validation", release=release, problems=problems)
    except DataError as error:
        if options.split is not None:
            raise
        found.append(f"warning: {error}; the best epoch is chosen by training loss")
        options.log(found[-1])
        validation = []
    test = (
        discover_cases(data_root, spec.name, "test", release=release, problems=problems) if options.predict_test else []
    )
    return source, train, validation, test


def make_plan(spec: DatasetSpec, settings: Settings, task: int, data_root: Path, options: RunOptions) -> Plan:
    """The plan of one run (one held-out split): read, checked, nothing created.

    The held-out cases are ``spec.n_held_out`` training cases drawn from ``options.seed``, the official
    validation cases choose the best epoch, and the other training cases train; ``options.split`` (a
    fold of :mod:`common.runs.crossval`) replaces that choice. In a job (``options.train_only``) the
    run's ensemble is every expert of the dataset and the job trains the networks of ``options.experts``.
    Every file the run uses is read and checked, and every problem reported at once
    (:func:`common.data.check.check_run_data`).
    """
    from common.data.check import check_run_data, collected_warnings

    check_task(spec, task)
    chosen = check_experts(spec, options.experts)
    learner = strategy(settings.strategy)
    planned = check_experts(spec, None) if options.train_only else chosen
    found: list[str] = []  # the data's warnings: printed now, written to the run's log once it exists
    problems: list[str] = []  # found while finding the cases; the data check lists them with the rest
    with collected_warnings(found, options.log):
        source, train_cases, validation_cases, test_cases = _discover(data_root, spec, options, found, problems)
    if options.split is None:
        held_out = choose_held_out([c.case_id for c in train_cases], spec.n_held_out, options.seed)
        roles = {
            "train": [c.case_id for c in train_cases if c.case_id not in held_out],
            "validation": [c.case_id for c in validation_cases],
            "held_out": held_out,
        }
        split_record = {"held_out": held_out}
    else:
        roles = check_split(options.split, train_cases + validation_cases)
        split_record = roles
    networks = learner.networks(planned, options.seed, settings)
    selected = [n for n in networks if not n.per_expert or n.heads[0] in chosen]
    by_id = {c.case_id: c for c in train_cases + validation_cases}
    checked = check_run_data(
        spec,
        task,
        {role: [by_id[i] for i in ids] for role, ids in roles.items()},
        {n.name: list(n.heads) for n in networks},
        test_cases,
        echo=options.log,
        keep=_keeper(spec, settings),
        found_problems=problems,
    )
    found.extend(w for w in checked.warnings if w not in found)
    options.log(checked.summary())
    plan = Plan(
        spec, settings, task, planned, options.seed, roles, networks, selected, checked, source, test_cases, found
    )
    plan.config = _json_ready(
        {
            **run_record(spec, settings, task, data_root, planned, source, options),
            "split_seeded": split_record,
            "predict_test": options.predict_test,
            **({"jobs": True} if options.train_only else {}),
            **(options.extra_config or {}),
            "split": split_summary(plan),
        }
    )
    return plan


def _keeper(spec: DatasetSpec, settings: Settings):
    """What the data check keeps of each case: all of it, but of a volume that only trains its training
    slices (:func:`common.data.volumes.keep_slices`); held-out and validation volumes are predicted whole."""
    if not spec.volumetric:
        return None
    from common.data.volumes import keep_slices

    def keep(roles: set[str], loaded):
        return keep_slices(loaded, settings.slice_margin, settings.ct_window) if roles == {"train"} else loaded

    return keep


def run_record(
    spec: DatasetSpec, settings: Settings, task: int, data_root: Path, planned: list[int], source, options: RunOptions
) -> dict:
    """What every run folder's ``config.json`` (a run's, a cross-validation's) opens with: the dataset,
    the task, the planned experts, the seed, the data and the settings."""
    return {
        "dataset": spec.to_dict(),
        "task": task,
        "task_name": spec.task_name(task),
        "experts": planned,
        "seed": options.seed,
        "deterministic": options.deterministic,
        "data_root": str(Path(data_root).resolve()),
        "release": source.to_dict(),
        "settings": settings.to_dict(),
    }


def split_summary(plan: Plan) -> dict:
    """The split as ``config.json`` records it: each role's cases, and per expert the cases it annotated."""
    loaded = plan.checked.loaded
    return {
        "train": plan.roles["train"],
        "validation": plan.roles["validation"],
        "held_out": plan.roles["held_out"],
        "per_expert": {
            expert_name(e): {
                "train": [i for i in plan.roles["train"] if e in loaded[i].masks],
                "validation": [i for i in plan.roles["validation"] if e in loaded[i].masks],
            }
            for e in plan.experts
        },
    }
