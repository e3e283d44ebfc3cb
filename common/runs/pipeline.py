"""One task of one dataset, end to end: split, train one network per expert, ensemble, score, report.

:func:`run_task` is the plain function behind every dataset script; the command line only resolves
its arguments (see :mod:`common.cli`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.cases import Case, DataError, LoadedCase, discover_cases
from common.data.preprocessing import Geometry, from_input, mask_to_input, normalise_image, to_input
from common.evaluation.ensemble import MapAverager
from common.evaluation.report import dice_matrix_csv, format_table, versions
from common.evaluation.scoring import score_cases
from common.runs.folder import (
    CONFIG_FILE,
    DICE_MATRIX_FILE,
    LOG_FILE,
    PLOTS_FOLDER,
    PREDICTIONS_FOLDER,
    RESULT_FILE,
    RESULTS_FILE,
    TENSORBOARD_FOLDER,
    _json_ready,
    check_resumable,
    check_saved_networks,
    expert_name,
    mark_network_complete,
    network_files,
    network_folder,
    network_locks,
    open_run_dir,
)
from common.runs.storage import RunLog, write_atomic, write_json
from common.spec import ConfigError, DatasetSpec, Settings
from common.strategies import strategy


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
    """The training cases kept out of training and validation for scoring, drawn from ``seed``."""
    if n_held_out >= len(case_ids):
        raise DataError(
            f"cannot hold out {n_held_out} of {len(case_ids)} training cases: at least one must remain to train on"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(case_ids), size=n_held_out, replace=False)
    return [case_ids[i] for i in sorted(chosen)]


@dataclass
class PreparedCase:
    """A case on the network's grid, with what is needed to score it on its own grid."""

    case: Case
    image: np.ndarray  # (S, S, C) float32 in 0..1
    masks: dict[int, np.ndarray]  # expert -> (S, S, 1) float32 0/1
    geometry: Geometry
    reference: nib.Nifti1Image  # the image's NIfTI (affine and header) that predictions reuse
    original_masks: np.ndarray | None = None  # (experts, rows, cols) bool, kept for scored cases only
    original_image: np.ndarray | None = None  # (rows, cols, channels) in 0..1, kept for scored cases only
    original_experts: list[int] = field(default_factory=list)  # the experts of original_masks, in order


def prepare_case(loaded: LoadedCase, settings: Settings, keep_original: bool) -> PreparedCase:
    geometry = Geometry.fit(loaded.shape, settings.input_size, settings.fit)
    normalised = normalise_image(loaded.image, settings.ct_window)
    image = to_input(normalised, geometry)
    masks = {e: mask_to_input(m, geometry) for e, m in loaded.masks.items()}
    if not keep_original:
        return PreparedCase(loaded.case, image, masks, geometry, loaded.nifti)
    original = loaded.mask_stack() if loaded.masks else None
    return PreparedCase(loaded.case, image, masks, geometry, loaded.nifti, original, normalised, sorted(loaded.masks))


def per_expert_cases(pool: list[PreparedCase], validation: list[PreparedCase], experts: list[int]) -> dict:
    """Per expert, the training and validation cases it annotated (for ``config.json``)."""
    return {
        expert_name(e): {
            "train": [c.case.case_id for c in pool if e in c.masks],
            "validation": [c.case.case_id for c in validation if e in c.masks],
        }
        for e in experts
    }


def uncertainty_metrics(
    ensemble: dict[str, np.ndarray], truth: dict[str, np.ndarray], member_maps: dict[str, dict[str, np.ndarray]]
) -> dict:
    """GED, Hungarian IoU, ECE, Brier and soft Dice per case and their means (:mod:`common.evaluation.uncertainty`).

    The samples are the members of the ensemble (each expert's network, or each head) binarised at
    0.5; with no members (soft-label: one map) the sample-based metrics are None, not invented.
    """
    from common.evaluation.uncertainty import case_metrics, mean_metrics

    per_case = {}
    for case_id, prediction in ensemble.items():
        maps = [m[case_id] for m in member_maps.values()]
        samples = np.stack([m >= 0.5 for m in maps]) if maps else None
        per_case[case_id] = case_metrics(prediction, truth[case_id], samples)
    return {"per_case": per_case, "mean": mean_metrics(per_case), "samples": list(member_maps) or None}


def reference_scores(truth: dict[str, np.ndarray]) -> dict[str, float]:
    """What trivial predictions score on the same cases: a floor any trained model must clear."""
    return {
        "all_background": score_cases({c: np.zeros(m.shape[1:]) for c, m in truth.items()}, truth)["score"],
        "all_foreground": score_cases({c: np.ones(m.shape[1:]) for c, m in truth.items()}, truth)["score"],
    }


@dataclass
class Split:
    train: list[str]
    validation: list[str]
    held_out: list[str]
    per_expert: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "train": self.train,
            "validation": self.validation,
            "held_out": self.held_out,
            "per_expert": self.per_expert,
        }


def check_split(split: dict[str, list[str]], cases: list[Case]) -> dict[str, list[str]]:
    """A given split's roles, checked: known case ids, unique across folders, no case in two roles."""
    ids = [c.case_id for c in cases]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(
            f"case id(s) {', '.join(repeated)} occur in both the training and the validation folders; "
            "cross-validation needs unique case names"
        )
    roles = {role: list(split.get(role, [])) for role in ("train", "validation", "held_out")}
    unknown = sorted(set().union(*roles.values()) - set(ids))
    if unknown:
        raise DataError(f"the split names case(s) not found in the data: {', '.join(unknown)}")
    for a, b in (("train", "validation"), ("train", "held_out"), ("validation", "held_out")):
        both = sorted(set(roles[a]) & set(roles[b]))
        if both:
            raise ConfigError(f"the split puts case(s) {', '.join(both)} in both {a} and {b}")
    if not roles["train"] or not roles["held_out"]:
        raise ConfigError("the split needs at least one training case and one held-out case")
    return roles


def run_task(
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    data_root: Path,
    *,
    experts: list[int] | None = None,
    seed: int = 0,
    out: Path | None = None,
    resume: bool = False,
    predict_test: bool = False,
    deterministic: bool = False,
    tensorboard: bool = False,
    plots: bool = True,
    verbose: int = 2,
    log: Callable[[str], None] = print,
    extra_config: dict | None = None,
    split: dict[str, list[str]] | None = None,
    checkpoint_seconds: float | None = None,
    train_only: bool = False,
    distribute: str = "none",
    release: str | None = None,
) -> dict:
    """Train one network per expert for ``task``, ensemble them on the held-out cases and score them.

    Also writes, on each case's own grid, every expert's and the ensemble's probability map of the
    held-out and validation cases (and, with ``predict_test``, of the official test cases) as NIfTI,
    and the plots.

    The held-out cases are ``spec.n_held_out`` training cases drawn from ``seed``, the official
    validation cases choose the best epoch, and the other training cases train. ``split`` (a fold of
    :mod:`common.runs.crossval`: case ids under ``train``, ``validation`` and ``held_out``, drawn from
    both the training and the validation folders) replaces that choice.

    Before anything is created, every file the run uses is read and checked, and every problem is
    reported at once (:func:`common.data.check.check_run_data`); ``release`` picks the QUBIQ release
    when ``data_root`` holds both (:func:`common.data.cases.find_release`). ``out`` may be a folder that a
    start left without any trained network: it is reused (:func:`prepare_run_dir`). Each network this
    call trains holds its lock (:func:`network_locks`) from before its first file is written.

    With ``resume``, ``out`` is an interrupted run folder: finished experts are reused, an interrupted
    one continues from its last epoch; a saved network that cannot be read is refused before anything
    trains (:func:`check_saved_networks`).

    ``distribute`` (``"none"`` or ``"mirrored"``) is how each network trains on the local devices
    (:func:`common.training.trainer.train_expert`); a runtime choice, recorded through ``extra_config`` by the
    command line, and free to differ when a run is resumed.

    With ``train_only`` this is one job of a run split into jobs (:mod:`common.gather`): ``out`` is
    the run folder all jobs share (created, or joined when its ``config.json`` matches), the run's
    ensemble is every expert of the dataset, and only ``experts`` are trained and predicted; nothing
    shared is written (no ensemble map, no ``results.json``), and ``python -m common.gather`` scores
    the run once every job has finished. Returns the job's report instead of the results.

    Returns the results (also written to ``results.json`` in the run folder, whose path is under
    ``results["run_dir"]``).
    """
    check_task(spec, task)
    experts = check_experts(spec, experts)
    planned = experts  # the run's ensemble; a job trains part of it
    if train_only:
        from common.runs.jobs import check_job_options

        check_job_options(settings, out, resume)
        planned = check_experts(spec, None)
    from common.data.cases import find_release
    from common.data.check import check_run_data, collected_warnings

    found: list[str] = []  # the data's warnings: printed now, written to the run's log once it exists
    with collected_warnings(found, log):
        source = find_release(data_root, release)
        train_cases = discover_cases(data_root, spec.name, "train", release=release)
        try:
            validation_cases = discover_cases(data_root, spec.name, "validation", release=release)
        except DataError as error:
            if split is not None:
                raise
            found.append(f"warning: {error}; the best epoch is chosen by training loss")
            log(found[-1])
            validation_cases = []
        test_cases = discover_cases(data_root, spec.name, "test", release=release) if predict_test else []
    if split is None:
        held_out = choose_held_out([c.case_id for c in train_cases], spec.n_held_out, seed)
        roles = {
            "train": [c.case_id for c in train_cases if c.case_id not in held_out],
            "validation": [c.case_id for c in validation_cases],
            "held_out": held_out,
        }
        split_record = {"held_out": held_out}
    else:
        roles = check_split(split, train_cases + validation_cases)
        held_out = roles["held_out"]
        split_record = roles
    by_id = {c.case_id: c for c in train_cases + validation_cases}
    learner = strategy(settings.strategy)
    jobs = learner.networks(experts, seed)
    # Every file the run uses is read and checked before anything is created (common.data.check).
    checked = check_run_data(
        spec,
        task,
        {role: [by_id[i] for i in ids] for role, ids in roles.items()},
        {job.name: list(job.heads) for job in learner.networks(planned, seed)},
        test_cases,
        echo=log,
    )
    found.extend(w for w in checked.warnings if w not in found)
    log(checked.summary())

    def prepared(role: str) -> list[PreparedCase]:
        keep = role == "held_out"
        return [prepare_case(checked.loaded[i], settings, keep_original=keep) for i in roles[role]]

    pool, validation, scored = prepared("train"), prepared("validation"), prepared("held_out")
    test = [
        prepare_case(
            LoadedCase(c, *checked.test_images[c.case_id][:1], {}, checked.test_images[c.case_id][1]),
            settings,
            keep_original=False,
        )
        for c in test_cases
    ]
    record = Split([c.case.case_id for c in pool], [c.case.case_id for c in validation], held_out)
    for name, parts in per_expert_cases(pool, validation, planned).items():
        record.per_expert[name] = parts

    config = {
        "dataset": spec.to_dict(),
        "task": task,
        "task_name": spec.task_name(task),
        "experts": planned,
        "seed": seed,
        "deterministic": deterministic,
        "data_root": str(Path(data_root).resolve()),
        "release": source.to_dict(),
        "settings": settings.to_dict(),
        "split_seeded": split_record,
        **({"jobs": True, "predict_test": predict_test} if train_only else {}),
        **(extra_config or {}),
    }
    config = _json_ready(config)
    if train_only:
        from common.runs.folder import claim_config, expert_complete, job_log_path, open_job_dir

        run_dir = open_job_dir(out, config)
    else:
        run_dir = open_run_dir(out, spec, task, resume, log=lambda line: (log(line), found.append(line)))
    if resume:
        check_resumable(json.loads((run_dir / CONFIG_FILE).read_text()), config, run_dir)
    what = "--resume" if not train_only else "--train-only"
    check_saved_networks(run_dir, [network_folder(job) for job in jobs], what)
    # Training imports TensorFlow; everything above fails fast without it.
    from common.training import trainer as training

    if train_only:  # all jobs of the run write (or find) the same config.json, before any takes a lock
        claim_config(run_dir, {**config, "versions": versions(), "split": record.to_dict()})
    locks = network_locks(run_dir, jobs)  # before any log or file of theirs is written
    with locks:
        runlog = RunLog(job_log_path(run_dir, experts) if train_only else run_dir / LOG_FILE, echo=log)
        opening = f"{spec.title}, task {task} ({spec.task_name(task)}): " + (
            f"job training {', '.join(map(expert_name, experts))} in run folder {run_dir}"
            if train_only
            else f"{'resuming' if resume else 'new'} run folder {run_dir}"
        )
        config["versions"] = versions()
        if not train_only:
            write_json(run_dir / CONFIG_FILE, {**config, "split": record.to_dict()})
        runlog(opening)
        runlog(f"data: {source.describe()}")
        for line in found:
            runlog.to_file(line)
        runlog.to_file(checked.summary())
        if checkpoint_seconds is None:
            checkpoint_seconds = training.CHECKPOINT_SECONDS
        from common.evaluation.predictions import prediction_path, write_prediction

        training.seed_everything(seed, deterministic)
        held = set(held_out)
        predicted = scored + validation + test
        predicted_images = np.stack([c.image for c in predicted])
        predictions_root = run_dir / PREDICTIONS_FOLDER
        averager = MapAverager()
        held_maps: dict[str, dict[str, np.ndarray]] = {}
        trained: dict[str, training.TrainedExpert] = {}
        started = time.perf_counter()
        for number, job in enumerate(jobs, start=1):
            folder = run_dir / network_folder(job)
            prefix = f"[{'expert' if job.per_expert else 'network'} {number}/{len(jobs)}] {job.name}"
            if train_only and expert_complete(
                run_dir, spec.name, task, job.heads[0], [c.case.case_id for c in predicted]
            ):
                runlog(f"{prefix}: already trained and predicted ({RESULT_FILE} and its maps), nothing to do")
                continue
            if (folder / RESULT_FILE).is_file():
                result = training.TrainedExpert(**json.loads((folder / RESULT_FILE).read_text()))
                result.model_path = network_files(folder).model
                runlog(f"{prefix}: already trained ({RESULT_FILE}), reusing its model")
            else:
                train_arrays, train_available = learner.targets(pool, job)
                if train_arrays is None:  # the data check refuses this before anything is created
                    raise DataError(f"{job.name} has no mask for task {task} in any training case of {spec.name}")
                validation_arrays, validation_available = learner.targets(validation, job)
                interrupted = network_files(folder).backup_state.is_file()
                runlog(
                    f"{prefix}: {'continuing its interrupted training' if interrupted else 'training'} "
                    f"on {len(train_arrays[0])} cases, validating on "
                    f"{0 if validation_arrays is None else len(validation_arrays[0])} "
                    f"(elapsed {time.perf_counter() - started:.0f} s)"
                )
                result = training.train_expert(
                    job.label,
                    train_arrays,
                    validation_arrays,
                    settings,
                    network_files(folder),
                    seed=job.seed,
                    verbose=verbose,
                    log=runlog.to_file,
                    tensorboard_dir=run_dir / TENSORBOARD_FOLDER / job.name if tensorboard else None,
                    checkpoint_seconds=checkpoint_seconds,
                    available=(train_available, validation_available) if learner.masked else None,
                    distribute=distribute,
                )
                mark_network_complete(folder, result.to_dict())
                resumed = f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
                runlog(
                    f"{prefix}: done in {result.seconds:.0f} s{resumed}, best {result.monitor} {result.best_loss:.4f} "
                    f"at epoch {result.best_epoch}/{result.epochs} (elapsed {time.perf_counter() - started:.0f} s)"
                )
            trained[job.name] = result
            on_grid = training.predict(
                result.model_path, predicted_images, settings.batch_size, settings, len(job.heads)
            )
            for channel, expert in enumerate(job.heads):
                name = expert_name(expert) if expert is not None else None
                if name is not None:
                    held_maps[name] = {}
                for case, grid_map in zip(predicted, on_grid[..., channel], strict=True):
                    probability = from_input(grid_map, case.geometry)
                    averager.add(case.case.case_id, probability)
                    if name is None:
                        continue  # soft-label: the network's map is the prediction itself
                    write_prediction(
                        prediction_path(predictions_root, spec.name, case.case.case_id, task, expert),
                        probability,
                        case.reference,
                    )
                    if case.case.case_id in held:
                        held_maps[name][case.case.case_id] = probability

        if train_only:
            from common.runs.jobs import finish_job

            return finish_job(run_dir, spec, task, planned, experts, [c.case.case_id for c in predicted], runlog)
        ensemble_all = averager.mean()
        for case in predicted:
            write_prediction(
                prediction_path(predictions_root, spec.name, case.case.case_id, task),
                ensemble_all[case.case.case_id],
                case.reference,
            )
        config["split"] = record.to_dict()
        write_json(run_dir / CONFIG_FILE, config)
        return report_run(
            run_dir,
            spec,
            settings,
            task,
            scored,
            {case_id: ensemble_all[case_id] for case_id in held_out},
            held_maps,
            {name: {k: v for k, v in result.to_dict().items() if k != "expert"} for name, result in trained.items()},
            {
                "folder": str(predictions_root),
                "held_out": held_out,
                "validation": record.validation,
                "test": [c.case.case_id for c in test],
            },
            time.perf_counter() - started,
            runlog,
            {job.name: network_files(run_dir / network_folder(job)).log for job in jobs} if plots else None,
        )


def report_run(
    run_dir: Path,
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    scored: list[PreparedCase],
    ensemble: dict[str, np.ndarray],
    held_maps: dict[str, dict[str, np.ndarray]],
    networks: dict[str, dict],
    predictions: dict,
    training_seconds: float,
    runlog: RunLog,
    plot_logs: dict[str, Path] | None,
    extra_results: dict | None = None,
) -> dict:
    """Score the ensemble and each member on the held-out cases; write ``results.json``,
    ``dice_matrix.csv`` and the plots (unless ``plot_logs``, the training logs to draw, is None); log
    the table.

    One function for :func:`run_task` and for gathering the jobs of a split run
    (:func:`common.gather.gather_run`), so that a gathered run folder is written by the same code as a
    one-process one. ``ensemble`` and ``held_maps`` (member -> case -> map) hold the held-out cases'
    maps; ``networks`` each trained network's ``result.json`` entries (without ``expert``).
    """
    truth = {c.case.case_id: c.original_masks for c in scored}
    ensemble_scores = score_cases(ensemble, truth)
    expert_scores = {name: score_cases(m, truth) for name, m in held_maps.items()}
    references = reference_scores(truth)
    uncertainty = uncertainty_metrics(ensemble, truth, held_maps)
    results = {
        "dataset": spec.name,
        "task": task,
        "score": ensemble_scores["score"],
        "per_threshold": dict(
            zip([f"{t:.1f}" for t in ensemble_scores["thresholds"]], ensemble_scores["per_threshold"], strict=True)
        ),
        "per_case": ensemble_scores["per_case"],
        "dice": ensemble_scores["dice"],
        "cases": ensemble_scores["cases"],
        "per_expert": {
            name: {
                "score": s["score"],
                "per_case": s["per_case"],
                "per_threshold": s["per_threshold"],
                **{k: v for k, v in networks.get(name, {}).items() if k != "model_path"},
            }
            for name, s in expert_scores.items()
        },
        "experts_in_ensemble": list(held_maps),
        "strategy": settings.strategy,
        "networks": networks,
        "uncertainty": uncertainty,
        "reference_scores": references,
        "predictions": predictions,
        "training_seconds": training_seconds,
        "run_dir": str(run_dir),
        **(extra_results or {}),
    }
    write_json(run_dir / RESULTS_FILE, results)
    write_atomic(run_dir / DICE_MATRIX_FILE, dice_matrix_csv(ensemble_scores))
    if plot_logs is not None:
        write_plots(
            run_dir / PLOTS_FOLDER,
            spec,
            task,
            ensemble_scores,
            expert_scores,
            references,
            scored,
            ensemble,
            plot_logs,
        )
    title = f"{spec.title}, task {task} ({spec.task_name(task)}): {len(ensemble)} held-out cases"
    runlog(format_table(title, ensemble_scores, expert_scores, references, settings.strategy, uncertainty["mean"]))
    return results


def write_plots(
    folder: Path,
    spec: DatasetSpec,
    task: int,
    ensemble_scores: dict,
    expert_scores: dict[str, dict],
    references: dict[str, float],
    scored: list[PreparedCase],
    ensemble: dict[str, np.ndarray],
    logs: dict[str, Path],
) -> None:
    """Dice against threshold, one figure per held-out case, and the training curves."""
    from common.evaluation import plots

    what = f"{spec.title}, task {task} ({spec.task_name(task)})"
    plots.plot_dice_vs_threshold(
        folder / "dice_vs_threshold.png",
        ensemble_scores["thresholds"],
        ensemble_scores["per_threshold"],
        {name: s["per_threshold"] for name, s in expert_scores.items()},
        f"{what}: held-out cases",
    )
    for case in scored:
        case_id = case.case.case_id
        plots.plot_case(
            folder / f"case_{case_id}.png",
            case.original_image,
            case.original_masks,
            ensemble[case_id],
            f"{what}: {case_id}",
            expert_labels=[expert_name(e) for e in case.original_experts],
        )
    plots.plot_training_curves(
        folder / "training_curves.png",
        {name: plots.read_training_log(path) for name, path in logs.items()},
        f"{what}: training",
    )
