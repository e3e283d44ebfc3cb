"""The run folder: its layout, every file name in it, and the one way to create, join or resume it.

A run folder (one held-out split) holds::

    config.json          the plan: dataset, task, settings, experts, seed, data, split; versions
    run.log              every progress line, time-stamped
    experts/segEE/       one network per expert: model.keras, result.json, training_log.csv,
                         (while training) backup.keras, backup.json, .lock
    network/             the one network of a single-network strategy (multi-head, soft-label)
    predictions/         every network's and the ensemble's probability maps (NIfTI)
    results.json, dice_matrix.csv, plots/     the gathered scores
    jobs/                each job's own log, when the run is split into jobs

A cross-validation folder holds ``config.json``, ``splits.json``, ``run.log``, one such folder per fold
(``fold1/`` ...) and ``cv_results.json``; an experiment folder ``experiment.json``, ``splits.json``,
``variants/`` (one cross-validation folder each) and ``comparison.md/.csv/.json``.

No other module spells one of these names: they ask this one for the path. A folder is never
overwritten: a new run takes a new folder (or one a failed start left without any trained network),
a job joins a folder whose ``config.json`` is its run's, and ``--resume`` continues a folder whose
``config.json`` matches. Each network's lock (:mod:`common.runs.locks`) is taken before anything of
that network is written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from common.data.cases import DataError
from common.evaluation.predictions import output_path
from common.spec import ConfigError, DatasetSpec, Settings
from common.storage import write_atomic
from common.training.files import NetworkFiles

CONFIG_FILE = "config.json"
SPLITS_FILE = "splits.json"
RESULTS_FILE = "results.json"
CV_RESULTS_FILE = "cv_results.json"
DICE_MATRIX_FILE = "dice_matrix.csv"
LOG_FILE = "run.log"
EXPERIMENT_FILE = "experiment.json"
COMPARISON_MD, COMPARISON_CSV, COMPARISON_JSON = "comparison.md", "comparison.csv", "comparison.json"
COMPARISON_FILES = (COMPARISON_MD, COMPARISON_CSV, COMPARISON_JSON)
JOBS_FOLDER = "jobs"
EXPERTS_FOLDER = "experts"
NETWORK_FOLDER = "network"
PREDICTIONS_FOLDER = "predictions"
PLOTS_FOLDER = "plots"
TENSORBOARD_FOLDER = "tensorboard"
VARIANTS_FOLDER = "variants"
#: In a network's folder.
MODEL_FILE = "model.keras"
RESULT_FILE = "result.json"
BACKUP_MODEL_FILE = "backup.keras"
BACKUP_STATE_FILE = "backup.json"
TRAINING_LOG = "training_log.csv"


def fold_folder(run_dir: Path, fold: int) -> Path:
    """Fold ``fold``'s run folder inside a cross-validation folder (``fold1`` ...)."""
    return Path(run_dir) / f"fold{fold}"


def new_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3`` ... whichever does not exist yet: never an earlier run's folder."""
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def default_run_dir(spec: DatasetSpec, task: int) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{spec.name}-task{task}-{stamp}"


#: Files that show a network was trained, or partly trained, in a folder (or a run was scored): a folder
#: holding one is never reused as a new run's folder.
TRAINED_FILES = (RESULT_FILE, MODEL_FILE, BACKUP_MODEL_FILE, BACKUP_STATE_FILE, RESULTS_FILE, CV_RESULTS_FILE)


#: What a start of a run writes at the top of its folder before any network has trained (and what jobs,
#: folds and experiments add); a folder holding anything else is someone else's, never reused.
RUN_ENTRIES = {
    CONFIG_FILE,
    RESULTS_FILE,
    DICE_MATRIX_FILE,
    CV_RESULTS_FILE,
    LOG_FILE,
    SPLITS_FILE,
    JOBS_FOLDER,
    EXPERTS_FOLDER,
    NETWORK_FOLDER,
    PREDICTIONS_FOLDER,
    PLOTS_FOLDER,
    TENSORBOARD_FOLDER,
    VARIANTS_FOLDER,
    EXPERIMENT_FILE,
    *COMPARISON_FILES,
}


def is_run_entry(name: str) -> bool:
    """Whether a top-level name of a folder is one that a run (job, fold, experiment) writes."""
    return name in RUN_ENTRIES or name.startswith(".") or (name.startswith("fold") and name[4:].isdigit())


def trained_files(folder: Path) -> list[Path]:
    """The files under ``folder`` that show a network was trained or a run scored (:data:`TRAINED_FILES`)."""
    return sorted(p for p in Path(folder).rglob("*") if p.name in TRAINED_FILES)


def failed_start(folder: Path) -> list[str] | None:
    """What a start that failed or was killed before training any network left in ``folder``, or None.

    None when ``folder`` holds a trained (or partly trained) network, a scored run, or anything no
    run writes: such a folder is never reused. Otherwise the names it holds (possibly none).
    """
    names = sorted(p.name for p in Path(folder).iterdir())
    if any(not is_run_entry(name) for name in names) or trained_files(folder):
        return None
    return names


def check_no_live_lock(folder: Path) -> None:
    """Refuse a folder in which a running process holds a network's lock (:mod:`common.runs.locks`)."""
    from common.runs.locks import LOCK_FILE, NetworkLock

    for path in sorted(Path(folder).rglob(LOCK_FILE)):
        with NetworkLock(path, f"{path.parent.name} in {folder}"):
            pass  # refuses, naming the holder, when a live process holds it


def prepare_run_dir(out: Path | None, spec: DatasetSpec, task: int, log: Callable[[str], None] | None = print) -> Path:
    """Create the run folder before any work, so an unwritable location fails at once.

    ``out`` may exist when an earlier start of a run failed or was killed before any network trained
    (:func:`failed_start`): it is then reused, and ``log`` says so. Any other non-empty folder is refused:
    runs are never overwritten.
    """
    if out is not None and out.exists():
        if not out.is_dir():
            raise ConfigError(
                f"--out {out} is a file, not a folder; name a folder for the run (nothing is overwritten)"
            )
        left = failed_start(out)
        if left is None:
            hint = (
                f"; to continue the run in it, use --resume {out}"
                if (out / CONFIG_FILE).is_file() and not (out / RESULTS_FILE).is_file()
                else ""
            )
            raise FileExistsError(
                f"output folder {out} exists and is not empty; choose another --out (runs are never overwritten)" + hint
            )
        if left:
            check_no_live_lock(out)
            if log is not None:
                log(
                    f"reusing output folder {out}: an earlier start left it without any trained network "
                    f"({', '.join(left[:6])}{' ...' if len(left) > 6 else ''}); starting anew in it"
                )
    run_dir = out if out is not None else new_run_dir(default_run_dir(spec, task))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write to output folder {run_dir}: {error.strerror or error}") from error
    return run_dir


def check_saved_networks(run_dir: Path, folders: list[str], what: str = "--resume") -> None:
    """Refuse before any training when a saved network the run would load is truncated or unreadable.

    A ``.keras`` file is a zip archive; its central directory and every member's checksum are read
    (cheap next to loading it into a network, and it needs no TensorFlow). Each bad file is named with
    the way to train just that network anew.
    """
    import zipfile

    problems = []
    for folder in folders:
        network = Path(run_dir) / folder
        wanted = []
        if (network / RESULT_FILE).is_file():
            wanted.append(network / MODEL_FILE)
        if (network / BACKUP_STATE_FILE).is_file():
            wanted.append(network / BACKUP_MODEL_FILE)
        for path in wanted:
            reason = None
            if not path.is_file():
                reason = "missing"
            else:
                try:
                    with zipfile.ZipFile(path) as archive:
                        bad = archive.testzip()
                    reason = f"member {bad} is corrupt" if bad else None
                except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
                    reason = f"truncated or corrupt: {error}"
            if reason:
                hint = retrain_hint(run_dir, network, what)
                problems.append(f"{path} cannot be read ({reason}); to train that network anew: {hint}")
    if len(problems) == 1:
        raise DataError(f"{what} {run_dir}: {problems[0]}")
    if problems:
        raise DataError(f"{what} {run_dir}: {len(problems)} saved networks are unreadable:\n  " + "\n  ".join(problems))


#: config.json entries that must agree for a run folder to be resumed.
RESUME_KEYS = ("dataset", "task", "experts", "seed", "settings", "data_root", "split_seeded")


def open_run_dir(
    out: Path | None, spec: DatasetSpec, task: int, resume: bool, log: Callable[[str], None] | None = print
) -> Path:
    """The run folder: a new one (or one a failed start left, reused), or with ``resume`` the existing
    one holding ``config.json``."""
    if not resume:
        return prepare_run_dir(out, spec, task, log)
    check_resume_folder(out)
    return out


def network_locks(run_dir: Path, jobs: list) -> contextlib.ExitStack:
    """Hold the lock of every network this process trains (:mod:`common.runs.locks`), released on exit.

    Taken before anything of the networks is written (their logs, the job's log), so that a second
    process meant to train one of them refuses, naming the first, instead of training it too.
    """
    from common.runs.locks import LOCK_FILE, NetworkLock

    stack = contextlib.ExitStack()
    try:
        for job in jobs:
            folder = Path(run_dir) / network_folder(job)
            if not folder.is_dir():  # made for the lock: removed again if nothing else was put in it
                folder.mkdir(parents=True)
                stack.callback(_remove_if_empty, folder, Path(run_dir))
            stack.enter_context(NetworkLock(folder / LOCK_FILE, f"{job.name} of {run_dir}"))
    except BaseException:
        stack.close()
        raise
    return stack


def _remove_if_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` (excluded) while they are empty."""
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def check_resume_folder(out: Path | None) -> None:
    """Refuse ``--resume`` of a folder that is not a run folder, saying why and what to do instead.

    A folder with nothing in it but hidden entries (``.DS_Store``) is called empty: nothing shows that a run
    ever started there (a user may have made it), so it is not said to be a failed start, and a new run
    can start in it with ``--out``. (A start that was killed between creating its folder and opening its
    ``run.log`` would leave such a folder too; the advice is the same.) A folder holding only what a start
    writes before its configuration (``run.log`` ...) is a failed start's; anything else is no run folder.
    """
    if out is None or not out.exists():
        raise ConfigError(f"--resume {out}: not a run folder (no such folder)")
    if not out.is_dir():
        raise ConfigError(f"--resume {out} is a file, not a run folder")
    if (out / CONFIG_FILE).is_file():
        return
    if not any(not entry.name.startswith(".") for entry in out.iterdir()):
        raise ConfigError(
            f"--resume {out}: the folder is empty: not a run folder (no {CONFIG_FILE}), nothing to resume; "
            f"to start a new run in it, use --out {out}"
        )
    if failed_start(out) is not None:
        raise ConfigError(
            f"--resume {out}: not a run folder (no config.json there): the start that made it stopped before "
            "writing its configuration and trained no network, so there is nothing to resume; run that start's "
            f"command again (with --out {out}, the folder is reused)"
        )
    raise ConfigError(f"--resume {out}: not a run folder (no config.json there)")


def settings_record(values: dict | None) -> dict | None:
    """Saved settings with the fields added since (``mixed_precision``) at their defaults, as in JSON.

    A run folder written before a field existed ran with its default, so it can still be resumed.
    """
    try:
        return _json_ready(Settings.from_dict(values).to_dict())
    except (TypeError, ValueError):
        return values  # unreadable: compared as it is, and reported as differing


def config_differences(saved: dict, config: dict, keys: tuple[str, ...]) -> list[str]:
    """``key: old -> new`` for each differing key, naming only the differing entries of a dict value.

    Saved settings are first completed with the fields added since (:func:`settings_record`), so a
    folder written before a setting existed differs only where it really does.
    """
    saved = {**saved, "settings": settings_record(saved.get("settings"))}
    config = {**config, "settings": settings_record(config.get("settings"))}
    found = []
    for key in keys:
        old, new = saved.get(key), config.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted(set(old) | set(new)):
                if old.get(sub) != new.get(sub):
                    found.append(f"{key}.{sub}: {_shown(old.get(sub))} -> {_shown(new.get(sub))}")
        else:
            found.append(f"{key}: {_shown(old)} -> {_shown(new)}")
    return found


def _shown(value, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_resumable(saved: dict, config: dict, run_dir: Path) -> None:
    """Refuse to resume a run folder made for another dataset, task or configuration."""
    differing = config_differences(saved, config, RESUME_KEYS)
    if differing:
        raise ConfigError(
            f"--resume {run_dir}: the run folder was made with another configuration ({'; '.join(differing)}); "
            "a resumed run keeps its options (leave out the differing ones, or start a new run)"
        )


def _json_ready(value):
    """What a value reads back as from JSON (tuples become lists), for comparisons with config.json."""
    return json.loads(json.dumps(value, default=str))


#: config.json entries on which all jobs of one run must agree.
JOB_KEYS = (*RESUME_KEYS, "jobs", "predict_test")


def check_same_run(saved: dict, config: dict, run_dir: Path) -> None:
    """Refuse to join a run folder made by a one-process run or by a job with another configuration."""
    if saved.get("jobs") is not True:
        raise ConfigError(
            f"--train-only: {run_dir} is a one-process run folder (made without --train-only); "
            f"continue it with --resume {run_dir}, or give the jobs another --out"
        )
    differing = config_differences(saved, config, JOB_KEYS)  # as --resume compares them
    if differing:
        raise ConfigError(
            f"--train-only: {run_dir} was made by a job with another configuration ({'; '.join(differing)}); "
            "all jobs of a run take the same options apart from --experts"
        )


def read_config(run_dir: Path, what: str = "--train-only", name: str = CONFIG_FILE) -> dict:
    """A run folder's ``config.json`` (retried briefly: without hard links it is written in place)."""
    path = Path(run_dir) / name
    for attempt in range(20):
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            if attempt == 19:
                raise ConfigError(f"{what}: unreadable {path} ({error})") from error
            time.sleep(0.25)
    raise AssertionError("unreachable")


def open_job_dir(out: Path, config: dict) -> Path:
    """Create the run folder, or join it: its ``config.json`` (if any) must be this run's.

    Nothing is written before the check, so a refused job leaves the folder as it was.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a run folder")
    if (out / CONFIG_FILE).is_file():
        check_same_run(read_config(out), config, out)
    elif out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not is_run_entry(p.name))
        if foreign:
            raise FileExistsError(
                f"output folder {out} exists and holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                "which no run writes: not a run folder; choose another --out (nothing is overwritten)"
            )
    try:
        (out / JOBS_FOLDER).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # jobs probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write to output folder {out}: {error.strerror or error}") from error
    return out


def job_log_path(run_dir: Path, networks: list) -> Path:
    """The job's own plain-text log, ``jobs/seg01-seg02.log`` (its networks' names): jobs never append to a
    shared file."""
    return Path(run_dir) / JOBS_FOLDER / ("-".join(n.name for n in networks) + ".log")


def claim_file(path: Path, data: dict) -> dict | None:
    """Write ``data`` as JSON to ``path`` unless the file exists; return what it holds if it does.

    The file is written whole to a temporary name and hard-linked to ``path``: the link fails if the
    name exists, so of two jobs starting at once exactly one writes it, and no reader sees half a file.
    Where hard links are not supported, an exclusive create (``O_EXCL``) takes its place.
    """
    path = Path(path)
    text = json.dumps(data, indent=2, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        try:
            os.link(tmp, path)
            return None
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            try:
                with open(path, "x") as handle:
                    handle.write(text)
                return None
            except FileExistsError:
                pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_config(path.parent, name=path.name)


def claim_config(run_dir: Path, config: dict) -> None:
    """Write ``config.json`` unless a job of the run has (:func:`claim_file`); if one has, it must hold
    the same run."""
    saved = claim_file(Path(run_dir) / CONFIG_FILE, config)
    if saved is not None:
        check_same_run(saved, config, Path(run_dir))


def output_map_paths(run_dir: Path, dataset: str, task: int, network, case_ids: list[str]) -> list[list[Path]]:
    """Per output channel of ``network`` (a :class:`common.strategies.Network`), its file of each case.

    As ``network.saved`` says (:func:`common.evaluation.predictions.output_path`): an output standing for
    expert ``e`` is that expert's map (``.../experts/taskTT_segEE``), a consensus output the ensemble's
    map itself, and a named output (a class's probabilities) a file in the case's folder of the network.
    """
    root = Path(run_dir) / PREDICTIONS_FOLDER
    return [[output_path(root, dataset, c, task, network.name, o) for c in case_ids] for o in network.saved]


def network_complete(run_dir: Path, dataset: str, task: int, network, case_ids: list[str]) -> bool:
    """Whether ``network`` is trained (``result.json``) and all its maps of ``case_ids`` are written."""
    return not missing_networks(run_dir, dataset, task, [network], case_ids)


def missing_networks(run_dir: Path, dataset: str, task: int, networks: list, case_ids: list[str]) -> dict:
    """Network -> what it still lacks (``result.json``, maps), for the networks not complete."""
    missing = {}
    for network in networks:
        folder = Path(run_dir) / network_folder(network)
        maps = [p for paths in output_map_paths(run_dir, dataset, task, network, case_ids) for p in paths]
        absent = [p for p in maps if not p.is_file()]
        if not (folder / RESULT_FILE).is_file():
            state = "interrupted, a backup is there" if (folder / BACKUP_STATE_FILE).is_file() else "not trained"
            missing[network] = f"no {folder / RESULT_FILE} ({state}, or still training)"
        elif absent:
            missing[network] = f"trained, but {len(absent)} of {len(maps)} maps are missing, e.g. {absent[0]}"
    return missing


def ready_to_gather(run_dir: Path) -> bool:
    """Whether ``run_dir`` was made by jobs whose planned networks are all complete (and not yet gathered)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or (run_dir / RESULTS_FILE).is_file():
        return False
    config = read_config(run_dir)
    split = config.get("split")
    if config.get("jobs") is not True or not split or config.get("predict_test"):
        return False
    cases = list(split["held_out"]) + list(split.get("validation", []))
    return not missing_networks(run_dir, config["dataset"]["name"], config["task"], planned_networks(config), cases)


def planned_networks(config: dict) -> list:
    """The networks a run folder's ``config.json`` plans (the strategy's, for its experts and seed)."""
    from common.strategies import strategy

    settings = Settings.from_dict(config["settings"])
    return strategy(settings.strategy).networks([int(e) for e in config["experts"]], int(config["seed"]), settings)


def network_folder(network) -> str:
    """A network's folder in its run folder: ``experts/segEE`` for an expert's own network, ``network`` for a
    strategy's only one (``network`` is a :class:`common.strategies.Network`)."""
    return f"{EXPERTS_FOLDER}/{network.name}" if network.per_expert else NETWORK_FOLDER


def network_files(folder: Path) -> NetworkFiles:
    """The files of the network trained in ``folder`` (an ``experts/segEE`` or ``network`` folder), with how
    to train it anew should one of them be unreadable."""
    folder = Path(folder)
    run_dir = folder.parent.parent if folder.parent.name == EXPERTS_FOLDER else folder.parent
    return NetworkFiles(
        folder,
        folder / MODEL_FILE,
        folder / BACKUP_MODEL_FILE,
        folder / BACKUP_STATE_FILE,
        folder / TRAINING_LOG,
        retrain=retrain_hint(run_dir, folder),
    )


def unreadable_network(path: Path, error: BaseException) -> DataError:
    """The refusal for a run's saved network (``.../model.keras``) that cannot be loaded: names the file and
    how to train that network anew (given to a :class:`~common.training.inference.Predictor`)."""
    return network_files(Path(path).parent).unreadable(path, error)


def retrain_hint(run_dir: Path, network: Path, what: str = "--resume") -> str:
    """How to train one network of a run anew: move its folder out of the run, then continue the run."""
    aside = Path(run_dir).parent / f"{Path(run_dir).name}-{network.name}-unreadable"
    command = f"{what} {run_dir}" if what == "--resume" else "the same command"
    return f"mv {network} {aside}, then {command} again (only that network is trained again)"


def mark_network_complete(folder: Path, result: dict) -> None:
    """Mark a network complete (``result.json``, its completion marker) and drop its resume backup."""
    files = network_files(folder)
    write_atomic(Path(folder) / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    for path in (files.backup, files.backup_state):
        path.unlink(missing_ok=True)
