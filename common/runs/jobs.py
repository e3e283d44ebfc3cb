"""One run split into jobs: what may be split, the command of each job, and what a finished job says.

Every network of a run trains independently of the others, so separate processes (a job array) can
train them into one shared run folder (:mod:`common.runs.folder` creates or joins it); gathering
(:mod:`common.gather`) scores the run once every job has finished.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from common.runs.folder import missing_networks
from common.spec import ConfigError, Settings


def check_job_options(settings: Settings, options) -> None:
    """Refuse what cannot be split into jobs, before any work (``options``: a
    :class:`common.runs.plan.RunOptions`)."""
    from common.strategies import strategy

    if options.out is None:
        raise ConfigError("--train-only needs --out RUN: the run folder that all jobs of the run share")
    if options.resume:
        raise ConfigError(
            "--train-only and --resume: rerun the job's own command (--out RUN --experts ... --train-only) to "
            "continue it; it picks up its networks' backups"
        )
    single = [n for n in strategy(settings.strategy).networks([1], 0, settings) if not n.per_expert]
    if single and options.experts is not None:
        raise ConfigError(
            f"--train-only with strategy {settings.strategy}: the run is one network (of every expert), so it is "
            "one job; leave out --experts"
        )


def job_command(config: dict, run_dir: Path, experts: list[int]) -> str:
    """The command of a job that trains ``experts``: the first job's command with another ``--experts``."""
    command = config.get("command")
    numbers = ",".join(map(str, experts))
    chosen = ["--experts", numbers] if experts else []  # no experts: the one network of its strategy
    if not command:
        return f"<the run's script> --out {shlex.quote(str(run_dir))} --train-only {' '.join(chosen)} (same options)"
    kept, skip = [], False
    for word in command[1:]:
        if skip:
            skip = False
        elif word == "--experts":
            skip = True
        elif not word.startswith("--experts="):
            kept.append(word)
    return shlex.join(["python", command[0], *kept, *chosen])


def gather_command(run_dir: Path) -> str:
    return f"python -m common.gather {shlex.quote(str(run_dir))}"


def finish_job(run_dir: Path, plan, runlog: Callable[[str], None]) -> dict:
    """Say what the job did (``plan``: its :class:`common.runs.plan.Plan`), which of the run's networks are
    still to come, and how to gather."""
    missing = missing_networks(run_dir, plan.spec.name, plan.task, plan.networks, plan.predicted)
    finished = [n.name for n in plan.networks if n not in missing]
    kind = "experts" if all(n.per_expert for n in plan.networks) else "network(s)"
    runlog(
        f"job done ({', '.join(n.name for n in plan.selected)}): {len(finished)} of {len(plan.networks)} planned "
        f"{kind} of {run_dir} finished" + (f", not yet: {', '.join(n.name for n in missing)}" if missing else "")
    )
    command = gather_command(run_dir)
    runlog(f"{'gather now' if not missing else 'once every job has finished, gather'} with: {command}")
    return {
        "run_dir": str(run_dir),
        "trained": [n.name for n in plan.selected],
        "finished": finished,
        "missing": [n.name for n in missing],
        "gather": command,
    }
