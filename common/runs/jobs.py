"""One run split into jobs: what may be split, the command of each job, and what a finished job says.

Every network of a run trains independently of the others, so separate processes (a job array) can
train them into one shared run folder (:mod:`common.runs.folder` creates or joins it); gathering
(:mod:`common.gather`) scores the run once every job has finished.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from common.runs.folder import expert_name, missing_parts
from common.spec import ConfigError, DatasetSpec, Settings


def check_job_options(settings: Settings, out: Path | None, resume: bool) -> None:
    """Refuse what cannot be split into jobs, before any work."""
    if settings.strategy != "per-expert":
        raise ConfigError(
            f"--train-only splits a run into one job per expert network; strategy {settings.strategy} trains "
            "a single network, so run it in one process (without --train-only)"
        )
    if out is None:
        raise ConfigError("--train-only needs --out RUN: the run folder that all jobs of the run share")
    if resume:
        raise ConfigError(
            "--train-only and --resume: rerun the job's own command (--out RUN --experts ... --train-only) to "
            "continue it; it picks up its experts' backups"
        )


def job_command(config: dict, run_dir: Path, experts: list[int]) -> str:
    """The command of a job that trains ``experts``: the first job's command with another ``--experts``."""
    command = config.get("command")
    numbers = ",".join(map(str, experts))
    if not command:
        return f"<the run's script> --out {shlex.quote(str(run_dir))} --train-only --experts {numbers} (same options)"
    kept, skip = [], False
    for word in command[1:]:
        if skip:
            skip = False
        elif word == "--experts":
            skip = True
        elif not word.startswith("--experts="):
            kept.append(word)
    return shlex.join(["python", command[0], *kept, "--experts", numbers])


def gather_command(run_dir: Path) -> str:
    return f"python -m common.gather {shlex.quote(str(run_dir))}"


def finish_job(
    run_dir: Path,
    spec: DatasetSpec,
    task: int,
    planned: list[int],
    experts: list[int],
    case_ids: list[str],
    runlog: Callable[[str], None],
) -> dict:
    """Say what the job did, which of the run's experts are still to come, and how to gather."""
    missing = missing_parts(run_dir, spec.name, task, planned, case_ids)
    finished = [expert_name(e) for e in planned if e not in missing]
    runlog(
        f"job done ({', '.join(expert_name(e) for e in experts)}): {len(finished)} of {len(planned)} planned "
        f"experts of {run_dir} finished"
        + (f", not yet: {', '.join(expert_name(e) for e in missing)}" if missing else "")
    )
    command = gather_command(run_dir)
    runlog(f"{'gather now' if not missing else 'once every job has finished, gather'} with: {command}")
    return {
        "run_dir": str(run_dir),
        "trained": [expert_name(e) for e in experts],
        "finished": finished,
        "missing": [expert_name(e) for e in missing],
        "gather": command,
    }
