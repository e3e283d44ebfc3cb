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
from common.data.layout import layout_of
from common.data.prepared import PreparedCase, input_slices, prepare_case, slice_cases
from common.data.preprocessing import from_input
from common.data.volumes import training_slices
from common.runs.folder import (
    RESULT_FILE,
    TENSORBOARD_FOLDER,
    mark_network_complete,
    network_complete,
    network_files,
    network_folder,
    output_map_paths,
    unreadable_network,
)
from common.runs.log import RunLog
from common.runs.plan import Plan, RunOptions


def prepared_cases(plan: Plan) -> dict[str, list[PreparedCase]]:
    """The network's samples of the training and validation cases (``train``, ``validation``: a 2D case
    itself, a volume's training slices, :mod:`common.data.volumes`), and the whole cases it predicts
    (``predicted``: held-out, validation, then test), on the network's grid, from the data the plan checked.
    The held-out and test cases come without masks: they are scored on their own grid, by the gather step."""
    loaded, settings = plan.checked.loaded, plan.settings
    samples: dict[str, list[PreparedCase]] = {"train": [], "validation": []}
    whole: dict[str, PreparedCase] = {}
    for role in ("train", "validation"):
        for case_id in plan.roles[role]:
            case = loaded[case_id]
            prepared = prepare_case(case, settings)
            index = None  # a reduced volume holds only its training slices already
            if case.image.ndim == 4 and case.slice_index is None:
                index = training_slices(case.masks, settings.slice_margin, depth=len(case.image))
            samples[role].extend(slice_cases(prepared, index))
            if role == "validation":
                whole[case_id] = prepared
    for case_id in plan.roles["held_out"]:
        whole[case_id] = prepare_case(loaded[case_id], settings, masks=False)
    images = plan.checked.test_images
    test = [
        prepare_case(LoadedCase(c, images[c.case_id][0], {}, images[c.case_id][1]), settings) for c in plan.test_cases
    ]
    predicted = [whole[i] for i in plan.roles["held_out"] + plan.roles["validation"]] + test
    return {**samples, "predicted": predicted}


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
    from common.training.checkpoints import CHECKPOINT_SECONDS
    from common.training.inference import Predictor
    from common.training.trainer import seed_everything, train_expert

    train = train or train_expert
    predictor = predictor or Predictor(plan.settings.batch_size, unreadable=unreadable_network)
    learner = strategy(plan.settings.strategy)
    seed_everything(plan.seed, plan.config.get("deterministic", False))
    cases = prepared_cases(plan)
    # prepared: their arrays are not read again (the gather needs the held-out masks and the others' headers)
    plan.checked.release(plan.roles["train"])
    predicted = cases["predicted"]
    images = np.concatenate([input_slices(c) for c in predicted])
    checkpoint_seconds = CHECKPOINT_SECONDS if options.checkpoint_seconds is None else options.checkpoint_seconds
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
                f"on {len(train_arrays[0])} {_samples(plan)}, validating on "
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
            del train_arrays, validation_arrays  # not held while the next network's are built
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
    """Each output's map of each predicted case, back on the case's own grid (a volume's slices stacked
    back), as NIfTI. ``on_grid`` holds the cases' slices one after another, as :func:`input_slices` gave them."""
    from common.evaluation.predictions import write_prediction

    layout = layout_of(plan.spec)
    paths = output_map_paths(run_dir, plan.spec.name, plan.task, network, [c.case.case_id for c in predicted])
    for channel, channel_paths in enumerate(paths):
        first = 0
        for case, path in zip(predicted, channel_paths, strict=True):
            count = len(input_slices(case))
            planes = [from_input(on_grid[first + i, ..., channel], case.geometry) for i in range(count)]
            first += count
            write_prediction(path, layout.from_slices(np.stack(planes)), case.reference, layout)


def _samples(plan: Plan) -> str:
    return "slices" if plan.spec.volumetric else "cases"


def _prefix(network, number: int, plan: Plan) -> str:
    return f"[{'expert' if network.per_expert else 'network'} {number}/{len(plan.selected)}] {network.name}"
