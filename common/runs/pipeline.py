"""One run of one task, end to end: its plan, the networks trained, and the one gather step.

:func:`run_task` is the plain function behind every dataset script (the command line only resolves
its arguments, :mod:`common.cli`). It is three steps, the same for every mode:

1. :func:`common.runs.plan.make_plan`: the split and the networks, every file read and checked; nothing
   created yet;
2. the run folder opened (new, resumed, or joined by a job: :mod:`common.runs.folder`), ``config.json``
   written, and :func:`common.runs.execute.execute`: the selected networks that are not complete trained,
   each writing its maps;
3. :func:`common.runs.gather.gather`: the ensemble from the saved maps, scored and reported. A job of a
   run split into jobs stops before this step; ``python -m common.gather`` takes it once all are done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from common.evaluation.report import versions
from common.runs.execute import execute
from common.runs.folder import (
    CONFIG_FILE,
    LOG_FILE,
    check_resumable,
    check_saved_networks,
    network_folder,
    network_locks,
)
from common.runs.gather import Sources, gather
from common.runs.log import RunLog
from common.runs.plan import Plan, RunOptions, check_experts, check_task, choose_held_out, make_plan
from common.spec import DatasetSpec, Settings
from common.storage import write_json

__all__ = ["run_task", "run_plan", "check_task", "check_experts", "choose_held_out", "check_resumable"]


def run_task(spec: DatasetSpec, settings: Settings, task: int, data_root: Path, **options) -> dict:
    """Train the networks of ``task`` (one per expert, as the study did), ensemble and score them.

    ``options`` are the fields of :class:`common.runs.plan.RunOptions` (``experts``, ``seed``, ``out``,
    ``resume``, ``train_only`` ...), each with its default and meaning stated there.

    Also writes, on each case's own grid, every network's and the ensemble's probability map of the
    held-out and validation cases (and, with ``predict_test``, of the official test cases) as NIfTI,
    and the plots. ``out`` may be a folder that a start left without any trained network: it is reused.
    With ``resume``, ``out`` is an interrupted run folder: complete networks are left alone, an
    interrupted one continues from its last epoch, and a saved network that cannot be read is refused
    before anything trains. With ``train_only`` this is one job of a run split into jobs
    (:mod:`common.runs.jobs`): it trains its networks into the shared ``out`` and returns the job's
    report; ``python -m common.gather`` scores the run once every job has finished.

    Returns the results (also written to ``results.json`` in the run folder, ``results["run_dir"]``).
    """
    return run_plan(spec, settings, task, data_root, RunOptions(**options))


def run_plan(
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    data_root: Path,
    options: RunOptions,
    train: Callable | None = None,
) -> dict:
    """:func:`run_task` with its options as one object; ``train`` trains one network (the seam of
    :func:`common.runs.execute.execute`)."""
    from common.training.backend import check_options  # imports no backend

    check_options(options.distribute, options.tensorboard)  # TensorFlow-only options on another backend
    if options.train_only:
        from common.runs.jobs import check_job_options

        check_job_options(settings, options)
    plan = make_plan(spec, settings, task, data_root, options)
    run_dir = open_folder(plan, options)
    what = "--train-only" if options.train_only else "--resume"
    check_saved_networks(run_dir, [network_folder(n) for n in plan.selected], what)
    config = {**plan.config, "versions": versions()}
    if options.train_only:  # all jobs of the run write (or find) the same config.json, before any takes a lock
        from common.runs.folder import claim_config

        claim_config(run_dir, config)
    with network_locks(run_dir, plan.selected):  # before any log or file of theirs is written
        runlog = open_log(plan, run_dir, options)
        if not options.train_only:
            write_json(run_dir / CONFIG_FILE, config)
        for line in plan.warnings:
            runlog.to_file(line)
        runlog.to_file(plan.checked.summary())
        execute(plan, run_dir, runlog, options, train)
        if options.train_only:
            from common.runs.jobs import finish_job

            return finish_job(run_dir, plan, runlog)
        return gather(run_dir, config, Sources.from_plan(plan), runlog, options.plots)


def open_folder(plan: Plan, options: RunOptions) -> Path:
    """The run folder of ``plan``: new (or left by a failed start), resumed when its ``config.json``
    matches, or joined by a job of the same run (:mod:`common.runs.folder`)."""
    from common.runs.folder import open_job_dir, open_run_dir

    if options.train_only:
        return open_job_dir(options.out, plan.config)

    def log(line: str) -> None:  # e.g. "reusing output folder ...": to the console now, to run.log later
        options.log(line)
        plan.warnings.append(line)

    run_dir = open_run_dir(options.out, plan.spec, plan.task, options.resume, log=log)
    if options.resume:
        check_resumable(json.loads((run_dir / CONFIG_FILE).read_text()), plan.config, run_dir)
    return run_dir


def open_log(plan: Plan, run_dir: Path, options: RunOptions) -> RunLog:
    """``run.log`` (a job's own ``jobs/<networks>.log``), opened with what the run is and where its data is."""
    from common.runs.folder import job_log_path

    if options.train_only:
        runlog = RunLog(job_log_path(run_dir, plan.selected), echo=options.log)
        runlog(f"{plan.title}: job training {', '.join(n.name for n in plan.selected)} in run folder {run_dir}")
    else:
        runlog = RunLog(run_dir / LOG_FILE, echo=options.log)
        runlog(f"{plan.title}: {'resuming' if options.resume else 'new'} run folder {run_dir}")
    runlog(f"data: {plan.source.describe()}")
    return runlog
