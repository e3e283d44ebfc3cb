"""Executing a plan: train each selected network that is not complete, and write its maps.

A network is complete when its ``result.json`` and every map of its outputs are written
(:func:`common.runs.folder.network_complete`); such a network is left alone. One trained but missing
maps (a run stopped between the two) predicts again from its saved model; one interrupted
mid-training continues from its backup. Nothing here averages or scores: each network's maps are
written on the case's own grid, and the one gather step (:mod:`common.runs.gather`) builds the
ensemble from them, the same for every mode and strategy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.cases import DataError, LoadedCase
from common.data.prepared import PreparedCase, prepare_case
from common.data.preprocessing import from_input
from common.runs.folder import (
    RESULT_FILE,
    TENSORBOARD_FOLDER,
    mark_network_complete,
    network_complete,
    network_files,
    network_folder,
    output_map_paths,
)
from common.runs.plan import Plan, RunOptions
from common.runs.storage import RunLog


def prepared_cases(plan: Plan) -> dict[str, list[PreparedCase]]:
    """Each role's cases (and the test cases) on the network's grid, from the data the plan checked; the
    masks of those that train or validate only."""
    loaded = plan.checked.loaded
    learns = {"train", "validation"}  # the held-out cases are scored on their own grid, by the gather step
    cases = {
        role: [prepare_case(loaded[i], plan.settings, masks=role in learns) for i in ids]
        for role, ids in plan.roles.items()
    }
    images = plan.checked.test_images
    cases["test"] = [
        prepare_case(LoadedCase(c, images[c.case_id][0], {}, images[c.case_id][1]), plan.settings)
        for c in plan.test_cases
    ]
    return cases


def execute(
    plan: Plan, run_dir: Path, runlog: RunLog, options: RunOptions, train: Callable | None = None, predictor=None
) -> list[str]:
    """Train and predict the plan's selected networks that are not complete; return the names trained.

    ``train`` is the function that trains one network (default
    :func:`common.training.trainer.train_expert`, with its signature): the seam through which the
    benchmark's study-style baseline plugs in. ``predictor`` writes the maps
    (:class:`common.training.inference.Predictor`; default: one at the run's batch size, without
    test-time augmentation, so that the run's maps are its networks' plain outputs).
    """
    started = time.perf_counter()
    todo = []
    for number, network in enumerate(plan.selected, start=1):
        if network_complete(run_dir, plan.spec.name, plan.task, network, plan.predicted):
            runlog(f"{_prefix(network, number, plan)}: already trained and predicted ({RESULT_FILE} and its maps)")
        else:
            todo.append((number, network))
    if not todo:
        return []
    # Training imports TensorFlow; everything before fails fast without it.
    from common.strategies import strategy
    from common.training import trainer as training
    from common.training.inference import Predictor

    train = train or training.train_expert
    predictor = predictor or Predictor(plan.settings.batch_size, unreadable=training.unreadable_network)
    learner = strategy(plan.settings.strategy)
    training.seed_everything(plan.seed, plan.config.get("deterministic", False))
    cases = prepared_cases(plan)
    predicted = cases["held_out"] + cases["validation"] + cases["test"]
    images = np.stack([c.image for c in predicted])
    checkpoint_seconds = (
        training.CHECKPOINT_SECONDS if options.checkpoint_seconds is None else options.checkpoint_seconds
    )
    for number, network in todo:
        prefix = _prefix(network, number, plan)
        folder = Path(run_dir) / network_folder(network)
        files = network_files(folder)
        if (folder / RESULT_FILE).is_file():
            runlog(f"{prefix}: already trained ({RESULT_FILE}), reusing its model to write its maps")
        else:
            train_arrays, train_available = learner.targets(cases["train"], network)
            if train_arrays is None:  # the data check refuses this before anything is created
                raise DataError(f"{network.name} has no mask for task {plan.task} in any training case")
            validation_arrays, validation_available = learner.targets(cases["validation"], network)
            interrupted = files.backup_state.is_file()
            runlog(
                f"{prefix}: {'continuing its interrupted training' if interrupted else 'training'} "
                f"on {len(train_arrays[0])} cases, validating on "
                f"{0 if validation_arrays is None else len(validation_arrays[0])} "
                f"(elapsed {time.perf_counter() - started:.0f} s)"
            )
            result = train(
                network.label,
                train_arrays,
                validation_arrays,
                plan.settings,
                files,
                seed=network.seed,
                verbose=options.verbose,
                log=runlog.to_file,
                tensorboard_dir=Path(run_dir) / TENSORBOARD_FOLDER / network.name if options.tensorboard else None,
                checkpoint_seconds=checkpoint_seconds,
                available=(train_available, validation_available) if learner.masked else None,
                distribute=options.distribute,
            )
            mark_network_complete(folder, result.to_dict())
            resumed = f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
            runlog(
                f"{prefix}: done in {result.seconds:.0f} s{resumed}, best {result.monitor} {result.best_loss:.4f} "
                f"at epoch {result.best_epoch}/{result.epochs} (elapsed {time.perf_counter() - started:.0f} s)"
            )
        on_grid = predictor.predict(predictor.load(files.model, learner.sampler(plan.settings, network.seed)), images)
        write_maps(plan, run_dir, network, predicted, on_grid)
    return [network.name for _, network in todo]


def write_maps(plan: Plan, run_dir: Path, network, predicted: list[PreparedCase], on_grid: np.ndarray) -> None:
    """Each output's map of each predicted case, back on the case's own grid, as NIfTI."""
    from common.evaluation.predictions import write_prediction

    paths = output_map_paths(run_dir, plan.spec.name, plan.task, network, [c.case.case_id for c in predicted])
    for channel, channel_paths in enumerate(paths):
        for index, (case, path) in enumerate(zip(predicted, channel_paths, strict=True)):
            write_prediction(path, from_input(on_grid[index, ..., channel], case.geometry), case.reference)


def _prefix(network, number: int, plan: Plan) -> str:
    return f"[{'expert' if network.per_expert else 'network'} {number}/{len(plan.selected)}] {network.name}"
