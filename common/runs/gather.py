"""The one gather step: the ensemble of a run from its networks' saved maps, scored and reported.

Every mode ends here: a one-process run after its last network, the jobs of a split run once the
last has finished (``python -m common.gather RUN``), a resumed run, each fold of a cross-validation.
Gathering imports no TensorFlow and runs no network: it checks that every planned network is
complete, averages the maps of their outputs (each expert's network, each head, or the soft-label
network's one map) into the ensemble's maps, scores them on the held-out cases, and writes
``results.json`` (with the uncertainty metrics), ``dice_matrix.csv``, the ensemble maps, the plots
and the table in ``run.log``. Like nnU-Net's cross-validation summary, it is "collect the saved
files, score again", so a gathered run is scored by exactly the code that scores any other.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.cases import Case, DataError, LoadedCase, discover_cases, load_case
from common.data.layout import CaseLayout, layout_of
from common.data.prepared import PreparedCase, scored_case
from common.data.volumes import plot_slice
from common.evaluation.ensemble import MapAverager
from common.evaluation.predictions import prediction_path, read_prediction, write_prediction
from common.evaluation.report import dice_matrix_csv, format_table
from common.evaluation.scoring import score_cases, score_slices
from common.runs.folder import (
    CONFIG_FILE,
    DICE_MATRIX_FILE,
    JOBS_FOLDER,
    LOG_FILE,
    PLOTS_FOLDER,
    PREDICTIONS_FOLDER,
    RESULT_FILE,
    RESULTS_FILE,
    missing_networks,
    network_files,
    network_folder,
    output_map_paths,
    planned_networks,
    read_config,
)
from common.runs.jobs import gather_command, job_command
from common.runs.log import RunLog
from common.spec import ConfigError, DatasetSpec, Settings
from common.storage import write_atomic, write_json
from common.strategies import expert_name


def spec_from_config(config: dict) -> DatasetSpec:
    """The dataset description saved in ``config.json`` (JSON lists back to tuples)."""
    values = dict(config["dataset"])
    values["image_shape"] = tuple(values["image_shape"])
    values["task_names"] = tuple(values.get("task_names") or ())
    return DatasetSpec(**values)


@dataclass
class Sources:
    """What a gather reads besides the maps: the held-out cases' masks and every predicted case's header."""

    held_out: dict[str, LoadedCase]
    references: dict[str, nib.Nifti1Image]

    @classmethod
    def from_plan(cls, plan) -> Sources:
        """The data a plan (:class:`common.runs.plan.Plan`) has read and checked: nothing is read again."""
        loaded = plan.checked.loaded
        references = {i: loaded[i].nifti for i in plan.roles["held_out"] + plan.roles["validation"]}
        references.update({c.case_id: plan.checked.test_images[c.case_id][1] for c in plan.test_cases})
        return cls({i: loaded[i] for i in plan.roles["held_out"]}, references)

    @classmethod
    def from_disk(cls, config: dict, spec: DatasetSpec, data_root: Path | None, what: str) -> Sources:
        """The run's cases read from its data root (or ``data_root``, whose layout is then found anew)."""
        split = config["split"]
        release = (config.get("release") or {}).get("release") if data_root is None else None
        data_root = Path(data_root if data_root is not None else config["data_root"])
        held_out, validation = list(split["held_out"]), list(split.get("validation", []))
        by_id = _cases_by_id(data_root, spec.name, ("train", "validation"), release)
        test = _cases_by_id(data_root, spec.name, ("test",), release) if config.get("predict_test") else {}
        unknown = [c for c in held_out + validation if c not in by_id]
        if unknown:
            raise DataError(f"{what}: case(s) {', '.join(unknown)} of the run's split are not in {data_root}")
        task = int(config["task"])
        loaded = {i: load_case(by_id[i], spec, task) for i in held_out}
        references = {i: loaded[i].nifti for i in held_out}
        for case in [by_id[i] for i in validation] + list(test.values()):
            try:
                references[case.case_id] = nib.load(str(case.image_path))
            except (OSError, ValueError) as error:
                raise DataError(f"{case.image_path}: cannot be read ({error})") from error
        return cls(loaded, references)


def _cases_by_id(data_root: Path, dataset: str, splits: tuple[str, ...], release: str | None = None) -> dict[str, Case]:
    found: dict[str, Case] = {}
    with warnings.catch_warnings():  # the data's quirks were reported when the run was planned
        warnings.simplefilter("ignore")
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
    what: str | None = None,
) -> dict:
    """Gather a run whose networks were trained as jobs (``python -m common.gather RUN``); no TensorFlow.

    Args:
        run_dir: the run folder (its ``config.json``, split included, and every planned network's
            ``result.json`` and maps).
        spec: the dataset (a script's ``DATASET``); must be the run's. Default: from ``config.json``.
        data_root: where the masks are (default: the run's data root, from ``config.json``).
        plots: write the PNG plots (from the saved maps and training logs).
        what: how the messages name the run folder: the caller's own argument (default ``--gather RUN_DIR``,
            the dataset scripts' option; ``python -m common.gather`` names the folder alone).

    Returns the results, as a one-process run's (also in ``results.json``). A folder already gathered
    (holding ``results.json``) is left as it is and its results returned.

    Raises:
        ConfigError: not a run folder; a network not finished (the message lists each, with what it
            lacks and the job command to run).
        DataError: the data root or a map cannot be read.
    """
    run_dir = Path(run_dir)
    what = f"--gather {run_dir}" if what is None else what
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{what}: not a run folder (no {CONFIG_FILE} there)")
    config = read_config(run_dir, what)
    try:
        saved_spec = spec_from_config(config)
        Settings.from_dict(config["settings"])
        int(config["task"]), [int(e) for e in config["experts"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{what}: unreadable {CONFIG_FILE} ({error!r})") from error
    if spec is not None and spec.name != saved_spec.name:
        raise ConfigError(
            f"{what}: the run is of dataset {saved_spec.name}, not {spec.name}; "
            f"gather it with that dataset's script or {gather_command(run_dir)}"
        )
    if (run_dir / RESULTS_FILE).is_file():
        results = json.loads((run_dir / RESULTS_FILE).read_text())
        log(f"{run_dir} already holds {RESULTS_FILE} (QUBIQ {results['score']:.4f}): nothing to gather")
        return results
    split = config.get("split")
    if not split or not split.get("held_out"):
        raise ConfigError(
            f"{what}: {CONFIG_FILE} has no split (no job has got as far as loading the data); "
            f"run the jobs first: {job_command(config, run_dir, config['experts'])}"
        )
    sources = Sources.from_disk(config, saved_spec, data_root, what)
    check_complete(run_dir, config, predicted_cases(config, sources), what)
    runlog = RunLog(run_dir / LOG_FILE, echo=log)
    if config.get("jobs"):
        with (run_dir / LOG_FILE).open("a") as handle:  # the jobs' logs first, as in a one-process run.log
            for job_log in sorted((run_dir / JOBS_FOLDER).glob("*.log")):
                handle.write(job_log.read_text())
    return gather(run_dir, config, sources, runlog, plots)


def predicted_cases(config: dict, sources: Sources) -> list[str]:
    """The cases whose maps the run writes, in the plan's order: held-out, validation, test."""
    split = config["split"]
    listed = list(split["held_out"]) + list(split.get("validation", []))
    return listed + [c for c in sources.references if c not in set(listed)]


def check_complete(run_dir: Path, config: dict, cases: list[str], what: str) -> None:
    """Refuse to gather while a planned network lacks its ``result.json`` or a map of ``cases``, naming
    each and the job to run."""
    networks = planned_networks(config)
    missing = missing_networks(run_dir, config["dataset"]["name"], int(config["task"]), networks, cases)
    if missing:
        lines = [f"  {network.name}: {why}" for network, why in missing.items()]
        experts = [n.heads[0] for n in missing if n.per_expert]
        kind = "experts" if all(n.per_expert for n in networks) else "network(s)"
        raise ConfigError(
            f"{what}: {len(missing)} of {len(networks)} planned {kind} not finished:\n"
            + "\n".join(lines)
            + f"\nrun (or wait for) the job(s), then gather again:\n  {job_command(config, run_dir, experts)}"
        )


def gather(run_dir: Path, config: dict, sources: Sources, runlog: RunLog, plots: bool = True) -> dict:
    """Average every planned network's saved maps into the ensemble's, write them, score and report."""
    spec = spec_from_config(config)
    settings = Settings.from_dict(config["settings"])
    task = int(config["task"])
    networks = planned_networks(config)
    predicted = predicted_cases(config, sources)
    held_out = list(config["split"]["held_out"])
    if config.get("jobs"):
        runlog(
            f"{spec.title}, task {task} ({spec.task_name(task)}): gathered the saved maps of {len(networks)} "
            f"network(s) in {run_dir} (no network was run)"
        )
    layout = layout_of(spec)
    root = Path(run_dir) / PREDICTIONS_FOLDER

    def write_ensemble(case_id: str, mean: np.ndarray, read: set[Path]) -> None:
        path = prediction_path(root, spec.name, case_id, task)
        if path not in read:  # a consensus network's map is the ensemble's map itself
            try:
                write_prediction(path, mean, sources.references[case_id], layout)
            except ValueError as error:
                raise DataError(str(error)) from error

    maps = read_maps(run_dir, spec.name, task, settings, networks, predicted, set(held_out), layout, write_ensemble)
    trained = {}
    for network in networks:
        folder = Path(run_dir) / network_folder(network)
        saved = json.loads((folder / RESULT_FILE).read_text())
        trained[network.name] = {
            **{k: v for k, v in saved.items() if k != "expert"},
            "model_path": str(network_files(folder).model),
        }
    scored = [scored_case(sources.held_out[c], settings) for c in held_out]
    for case in scored:
        if case.original_masks is None:
            raise DataError(f"held-out case {case.case.case_id} has no mask for task {task}: cannot score it")
    return report_run(
        run_dir,
        spec,
        settings,
        task,
        scored,
        maps.held_out(held_out),
        trained,
        {
            "folder": str(root),
            "held_out": held_out,
            "validation": list(config["split"].get("validation", [])),
            "test": predicted[len(held_out) + len(config["split"].get("validation", [])) :],
        },
        runlog,
        {n.name: network_files(Path(run_dir) / network_folder(n)).log for n in networks} if plots else None,
        {"gathered": True} if config.get("jobs") else None,
    )


@dataclass
class GatheredMaps:
    """What the networks' saved outputs give, read back by their strategy's hooks.

    ``ensemble``: case -> the mean of every member's map; ``members``: member -> case -> map, for the
    members that are experts' (held-out cases only); ``samples``: case -> the binary segmentations for
    the sample-based metrics (held-out), and ``sample_names`` what they are; ``rules``: rule -> case ->
    map, the other readings of the outputs (held-out, averaged over the networks); ``read``: the files read.
    """

    ensemble: dict[str, np.ndarray]
    members: dict[str, dict[str, np.ndarray]]
    samples: dict[str, list[np.ndarray]]
    sample_names: list[str]
    rules: dict[str, dict[str, np.ndarray]]
    read: set[Path]

    def held_out(self, cases: list[str]) -> GatheredMaps:
        """The same, with the ensemble of ``cases`` only (what is scored)."""
        return dataclasses.replace(self, ensemble={c: self.ensemble[c] for c in cases})


def read_maps(
    run_dir: Path,
    dataset: str,
    task: int,
    settings: Settings,
    networks: list,
    predicted: list[str],
    held_out: set[str],
    layout: CaseLayout | None = None,
    write: Callable[[str, np.ndarray, set[Path]], None] | None = None,
) -> GatheredMaps:
    """Every network's saved outputs of every predicted case (in ``layout``: 2D maps by default), turned
    into maps by the run's strategy (:meth:`~common.strategies.Strategy.member_maps`, ``rule_maps``,
    ``samples``) and averaged.

    One case at a time: its ensemble map is handed to ``write`` (with the files read) and kept only for a
    held-out case, so that a run predicting many volumes holds one case's sums at a time, not every case's.
    """
    from common.strategies import strategy

    learner = strategy(settings.strategy)
    ensemble: dict[str, np.ndarray] = {}
    rules: dict[str, MapAverager] = {}
    members: dict[str, dict[str, np.ndarray]] = {}
    samples: dict[str, list[np.ndarray]] = {c: [] for c in predicted if c in held_out}
    read: set[Path] = set()
    sample_names = [name for network in networks for name in learner.sample_names(network)]
    paths = {network.name: output_map_paths(run_dir, dataset, task, network, predicted) for network in networks}
    if learner.members_are_experts:
        members.update({name: {} for network in networks for name in learner.member_names(network)})
    for index, case_id in enumerate(predicted):
        averager, files = MapAverager(), set()
        for network in networks:
            outputs = [read_prediction(p[index], layout) for p in paths[network.name]]
            files.update(p[index] for p in paths[network.name])
            try:
                for name, probability in zip(
                    learner.member_names(network), learner.member_maps(network, outputs), strict=True
                ):
                    averager.add(case_id, probability)
                    if learner.members_are_experts and case_id in held_out:
                        members[name][case_id] = probability
                if case_id in held_out:
                    for rule, probability in learner.rule_maps(network, outputs).items():
                        rules.setdefault(rule, MapAverager()).add(case_id, probability)
                    samples[case_id].extend(learner.samples(network, outputs))
            except ValueError as error:
                raise DataError(f"{run_dir}: {network.name}'s map of {error}") from error
        mean = averager.mean()[case_id]
        read |= files
        if write is not None:
            write(case_id, mean, files)
        if case_id in held_out:
            ensemble[case_id] = mean
    return GatheredMaps(ensemble, members, samples, sample_names, {rule: a.mean() for rule, a in rules.items()}, read)


def uncertainty_metrics(
    ensemble: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    samples: dict[str, list[np.ndarray]],
    names: list[str] | None,
    common_count: int | None = None,
) -> dict:
    """GED, Hungarian IoU, ECE, Brier and soft Dice per case and their means (:mod:`common.evaluation.uncertainty`).

    ``samples`` are each case's binary segmentations, as the strategy gives them
    (:meth:`common.strategies.Strategy.samples`: each expert's network or head binarised at 0.5, in the
    order of the networks, so "the first n samples" are the first experts'); with none (one consensus
    map) the sample-based metrics are None, not invented. ``names`` says what the samples are. Each case
    records its sample and expert counts; ``common_count`` states how the figures at a common count are made.
    """
    from common.evaluation.uncertainty import COMMON_COUNT_RULES, case_metrics, mean_metrics

    per_case = {}
    for case_id, prediction in ensemble.items():
        drawn = samples.get(case_id) or []
        stacked = np.stack([np.asarray(m, dtype=bool) for m in drawn]) if drawn else None
        per_case[case_id] = case_metrics(prediction, truth[case_id], stacked, common_count)
    return {
        "per_case": per_case,
        "mean": mean_metrics(per_case),
        "samples": names or None,
        "common_count": COMMON_COUNT_RULES,
    }


def reference_scores(truth: dict[str, np.ndarray]) -> dict[str, float]:
    """What trivial predictions score on the same cases: a floor any trained model must clear."""
    return {
        "all_background": score_cases({c: np.zeros(m.shape[1:]) for c, m in truth.items()}, truth)["score"],
        "all_foreground": score_cases({c: np.ones(m.shape[1:]) for c, m in truth.items()}, truth)["score"],
    }


def report_run(
    run_dir: Path,
    spec: DatasetSpec,
    settings: Settings,
    task: int,
    scored: list[PreparedCase],
    maps: GatheredMaps,
    networks: dict[str, dict],
    predictions: dict,
    runlog: RunLog,
    plot_logs: dict[str, Path] | None,
    extra_results: dict | None = None,
) -> dict:
    """Score the ensemble and each member on the held-out cases; write ``results.json``,
    ``dice_matrix.csv`` and the plots (unless ``plot_logs``, the training logs to draw, is None); log
    the table.

    ``maps`` holds the held-out cases' maps (:class:`GatheredMaps`); ``networks`` each trained network's
    ``result.json`` entries (without ``expert``); the training time is the sum of theirs.
    """
    from common.strategies import strategy

    learner = strategy(settings.strategy)
    ensemble, held_maps = maps.ensemble, maps.members
    truth = {c.case.case_id: c.original_masks for c in scored}
    ensemble_scores = score_cases(ensemble, truth)
    expert_scores = {name: score_cases(m, truth) for name, m in held_maps.items()}
    rule_scores = {rule: score_cases(m, truth) for rule, m in maps.rules.items()}
    references = reference_scores(truth)
    volumes = bool(truth) and next(iter(truth.values())).ndim == 4
    per_slice = score_slices(ensemble, truth) if volumes else None
    uncertainty = uncertainty_metrics(ensemble, truth, maps.samples, maps.sample_names, spec.experts)
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
        **(
            {
                "per_slice": {
                    "meaning": PER_SLICE_MEANING,
                    "score": per_slice["score"],
                    "per_case": per_slice["per_case"],
                    "per_threshold": per_slice["per_threshold"],
                }
            }
            if per_slice
            else {}
        ),
        **(
            {
                "map_rule": learner.map_rule,
                "map_rules": {
                    rule: {"score": r["score"], "per_threshold": r["per_threshold"]} for rule, r in rule_scores.items()
                },
            }
            if rule_scores
            else {}
        ),
        "strategy": settings.strategy,
        "networks": networks,
        "uncertainty": uncertainty,
        "reference_scores": references,
        "predictions": predictions,
        "training_seconds": sum(float(n.get("seconds", 0.0)) for n in networks.values()),
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
    title = f"{spec.title}, task {task} ({spec.task_name(task)}): {len(ensemble)} held-out {_cases(spec)}"
    table = format_table(
        title,
        ensemble_scores,
        expert_scores,
        references,
        settings.strategy,
        uncertainty["mean"],
        {rule: r["score"] for rule, r in rule_scores.items()},
    )
    if per_slice:
        figure = per_slice["score"]
        table += f"\nper slice (mean of each slice's Dice; participants' figure, not the score): {figure:.4f}"
    runlog(table)
    return results


#: What results.json's ``per_slice`` is (volumes only).
PER_SLICE_MEANING = (
    "mean over a volume's slices of each slice's Dice (both empty = 1) at each threshold, then over thresholds "
    "and volumes; a secondary figure some participants reported: the score is one Dice per volume"
)


def _cases(spec: DatasetSpec) -> str:
    return "volumes" if spec.volumetric else "cases"


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
        image, masks, prediction, where = case.original_image, case.original_masks, ensemble[case_id], ""
        if masks.ndim == 4:  # a volume: the slice where the consensus covers the most voxels
            index = plot_slice(masks)
            image, masks, prediction = image[index], masks[:, index], prediction[index]
            where = f", slice {index + 1} of {len(case.original_image)} (the consensus's largest)"
        plots.plot_case(
            folder / f"case_{case_id}.png",
            image,
            masks,
            prediction,
            f"{what}: {case_id}{where}",
            expert_labels=[expert_name(e) for e in case.original_experts],
        )
    plots.plot_training_curves(
        folder / "training_curves.png",
        {name: plots.read_training_log(path) for name, path in logs.items()},
        f"{what}: training",
    )
