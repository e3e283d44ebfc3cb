"""One run split into jobs: each job trains some experts into one shared run folder; gathering scores them.

Every expert's network is trained independently of the others (its own seed, its own cases), so the
networks of one run can be trained by separate processes, on separate machines: e.g. a job array with
one expert per job, all writing into the same run folder::

    python Kidney.py --out RUN --experts 1 --train-only      # job 1 (any of the usual options)
    python Kidney.py --out RUN --experts 2 --train-only      # job 2, the same options
    python Kidney.py --out RUN --experts 3 --train-only      # job 3
    python -m common.gather RUN                              # once all have finished (or Kidney.py --gather RUN)

A job (:func:`common.runs.pipeline.run_task` with ``train_only``) creates the run folder, or joins it when
its ``config.json`` was written by another job of the same run: the jobs must agree on everything that
defines the run (dataset, task, seed, settings, data root, split, the planned ensemble, test
predictions), otherwise the job is refused before it writes anything. The planned ensemble is every
expert of the dataset; ``--experts`` picks the ones a job trains. ``config.json`` is created with an
exclusive link (or ``O_EXCL``), so two jobs starting at once never overwrite each other's. A job
writes only its experts' files (``experts/segEE/``, ``predictions/<dataset>/<case>/experts/taskTT_segEE``)
and its own log (``jobs/segEE.log``); an expert that already has ``result.json`` and all its maps is
left alone, and one interrupted mid-training continues from its backup, as with ``--resume``.

Gathering (:func:`gather_run`) imports no TensorFlow and recomputes nothing: it checks that every
planned expert is finished, averages the saved per-expert maps into the ensemble's maps, scores them
with the code a one-process run uses (:func:`common.runs.pipeline.report_run`), and writes what such a run
writes: ``results.json`` (with the uncertainty metrics), ``dice_matrix.csv``, the ensemble maps, the
plots, and the table in ``run.log`` (after the jobs' logs).

Only the ``per-expert`` strategy splits into jobs: ``multi-head`` and ``soft-label`` train one network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.cases import Case, DataError, discover_cases, load_case
from common.evaluation.ensemble import MapAverager
from common.evaluation.predictions import prediction_path, read_prediction, write_prediction
from common.runs.folder import (
    CONFIG_FILE,
    EXPERTS_FOLDER,
    JOBS_FOLDER,
    LOG_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    TRAINING_LOG,
    missing_parts,
    read_config,
)
from common.runs.jobs import gather_command, job_command
from common.runs.pipeline import PREDICTIONS_FOLDER, RESULT_FILE, expert_name, prepare_case, report_run
from common.runs.storage import RunLog
from common.spec import ConfigError, DatasetSpec, Settings

# ----------------------------------------------------------------------------------------------------------
# The job side (called by run_task with train_only)


# ----------------------------------------------------------------------------------------------------------
# Gathering


def spec_from_config(config: dict) -> DatasetSpec:
    """The dataset description saved in ``config.json`` (JSON lists back to tuples)."""
    values = dict(config["dataset"])
    values["image_shape"] = tuple(values["image_shape"])
    values["task_names"] = tuple(values.get("task_names") or ())
    return DatasetSpec(**values)


def _cases_by_id(data_root: Path, dataset: str, splits: tuple[str, ...], release: str | None = None) -> dict[str, Case]:
    found: dict[str, Case] = {}
    for split in splits:
        try:
            found.update({c.case_id: c for c in discover_cases(data_root, dataset, split, release=release)})
        except DataError:
            if split == "train":
                raise
    return found


def gather_run(
    run_dir: Path,
    *,
    spec: DatasetSpec | None = None,
    data_root: Path | None = None,
    plots: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Average, score and report the saved per-expert maps of a run trained as jobs; no TensorFlow.

    Args:
        run_dir: the run folder the jobs wrote (or any per-expert run folder with its ``config.json``,
            ``split`` included, and every expert's ``result.json`` and maps).
        spec: the dataset (a script's ``DATASET``); must be the run's. Default: from ``config.json``.
        data_root: where the masks are (default: the run's data root, from ``config.json``).
        plots: write the PNG plots (from the saved maps and training logs).

    Returns the results, as a one-process run's (also in ``results.json``). A folder already gathered
    (holding ``results.json``) is left as it is and its results returned.

    Raises:
        ConfigError: not a run folder; a strategy of one network; an expert not finished (the message
            lists each, with what it lacks and the job command to run).
        DataError: the data root or a map cannot be read.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"--gather {run_dir}: not a run folder (no {CONFIG_FILE} there)")
    config = read_config(run_dir, f"--gather {run_dir}")
    try:
        saved_spec = spec_from_config(config)
        settings = Settings.from_dict(config["settings"])
        task, planned = int(config["task"]), [int(e) for e in config["experts"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"--gather {run_dir}: unreadable {CONFIG_FILE} ({error!r})") from error
    if spec is not None and spec.name != saved_spec.name:
        raise ConfigError(
            f"--gather {run_dir}: the run is of dataset {saved_spec.name}, not {spec.name}; "
            f"gather it with that dataset's script or {gather_command(run_dir)}"
        )
    spec = spec or saved_spec
    if settings.strategy != "per-expert":
        raise ConfigError(
            f"--gather {run_dir}: strategy {settings.strategy} trains one network, not one job per expert; "
            f"finish it with --resume {run_dir}"
        )
    if (run_dir / RESULTS_FILE).is_file():
        results = json.loads((run_dir / RESULTS_FILE).read_text())
        log(f"{run_dir} already holds {RESULTS_FILE} (QUBIQ {results['score']:.4f}): nothing to gather")
        return results
    split = config.get("split")
    if not split or not split.get("held_out"):
        raise ConfigError(
            f"--gather {run_dir}: {CONFIG_FILE} has no split (no job has got as far as loading the data); "
            f"run the jobs first: {job_command(config, run_dir, planned)}"
        )
    # the release the run used, unless another data root is given (whose layout is then found anew)
    release = (config.get("release") or {}).get("release") if data_root is None else None
    data_root = Path(data_root if data_root is not None else config["data_root"])
    held_out, validation = list(split["held_out"]), list(split.get("validation", []))
    by_id = _cases_by_id(data_root, spec.name, ("train", "validation"), release)
    test_cases = _cases_by_id(data_root, spec.name, ("test",), release) if config.get("predict_test") else {}
    test = list(test_cases)
    predicted = held_out + validation + test

    missing = missing_parts(run_dir, spec.name, task, planned, predicted)
    if missing:
        lines = [f"  {expert_name(e)}: {what}" for e, what in missing.items()]
        raise ConfigError(
            f"--gather {run_dir}: {len(missing)} of {len(planned)} planned experts not finished:\n"
            + "\n".join(lines)
            + f"\nrun (or wait for) the job(s), then gather again:\n  {job_command(config, run_dir, list(missing))}"
        )
    unknown = [c for c in held_out + validation if c not in by_id]
    if unknown:
        raise DataError(f"--gather {run_dir}: case(s) {', '.join(unknown)} of the run's split are not in {data_root}")

    scored = []
    for case_id in held_out:
        case = prepare_case(load_case(by_id[case_id], spec, task), settings, keep_original=True)
        if case.original_masks is None:
            raise DataError(f"held-out case {case_id} has no mask for task {task}: cannot score it")
        scored.append(case)

    predictions_root = run_dir / PREDICTIONS_FOLDER
    averager = MapAverager()
    held_maps: dict[str, dict[str, np.ndarray]] = {}
    held = set(held_out)
    for expert in planned:
        name = expert_name(expert)
        held_maps[name] = {}
        for case_id in predicted:
            probability = read_prediction(prediction_path(predictions_root, spec.name, case_id, task, expert))
            try:
                averager.add(case_id, probability)
            except ValueError as error:
                raise DataError(f"--gather {run_dir}: {name}'s map of {error}") from error
            if case_id in held:
                held_maps[name][case_id] = probability
    ensemble_all = averager.mean()

    runlog = RunLog(run_dir / LOG_FILE, echo=log)
    with (run_dir / LOG_FILE).open("a") as handle:  # the jobs' logs first, as in a one-process run.log
        for job_log in sorted((run_dir / JOBS_FOLDER).glob("*.log")):
            handle.write(job_log.read_text())
    runlog(
        f"{spec.title}, task {task} ({spec.task_name(task)}): gathered the saved maps of {len(planned)} expert "
        f"network(s) in {run_dir} (no network was run)"
    )
    for case_id in predicted:
        case = by_id.get(case_id) or test_cases[case_id]
        try:
            write_prediction(
                prediction_path(predictions_root, spec.name, case_id, task),
                ensemble_all[case_id],
                nib.load(str(case.image_path)),
            )
        except ValueError as error:
            raise DataError(str(error)) from error

    networks = {}
    for expert in planned:
        folder = run_dir / EXPERTS_FOLDER / expert_name(expert)
        saved = json.loads((folder / RESULT_FILE).read_text())
        networks[expert_name(expert)] = {
            **{k: v for k, v in saved.items() if k != "expert"},
            "model_path": str(folder / MODEL_FILE),
        }
    return report_run(
        run_dir,
        spec,
        settings,
        task,
        scored,
        {case_id: ensemble_all[case_id] for case_id in held_out},
        held_maps,
        networks,
        {"folder": str(predictions_root), "held_out": held_out, "validation": validation, "test": test},
        sum(float(n.get("seconds", 0.0)) for n in networks.values()),
        runlog,
        {name: run_dir / EXPERTS_FOLDER / name / TRAINING_LOG for name in networks} if plots else None,
        {"gathered": True},
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.gather",
        description="Score a run whose experts were trained as separate jobs (--train-only): average the "
        "saved per-expert maps, score them, and write what a one-process run writes. Imports no TensorFlow.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="the run folder the jobs wrote (--out RUN)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="ROOT",
        help="where the masks are (default: the run's data root, from its config.json)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Gather, or exit with status 2 and the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        gather_run(args.run_dir, data_root=args.data_root, plots=not args.no_plots)
    except (ConfigError, DataError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
