"""One task of one dataset, end to end: split, train one network per expert, ensemble, score, report.

:func:`run_task` is the plain function behind every dataset script; the command line only resolves
its arguments (see :mod:`common.cli`).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from common.data import Case, DataError, LoadedCase, discover_cases, load_case
from common.ensemble import average_maps
from common.preprocessing import Geometry, from_input, mask_to_input, normalise_image, to_input
from common.reporting import dice_matrix_csv, format_table, versions, write_atomic, write_json
from common.scoring import score_cases
from common.spec import ConfigError, DatasetSpec, Settings

EXPERTS_FOLDER = "experts"


def expert_name(expert: int) -> str:
    return f"seg{expert:02d}"


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


def prepare_run_dir(out: Path | None, spec: DatasetSpec, task: int) -> Path:
    """Create the run folder before any work, so an unwritable location fails at once."""
    if out is not None and out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} exists and is not empty; choose another --out (runs are never overwritten)")
    run_dir = out if out is not None else new_run_dir(default_run_dir(spec, task))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write to output folder {run_dir}: {error.strerror or error}") from error
    return run_dir


@dataclass
class PreparedCase:
    """A case on the network's grid, with what is needed to score it on its own grid."""

    case: Case
    image: np.ndarray  # (S, S, C) float32 in 0..1
    masks: dict[int, np.ndarray]  # expert -> (S, S, 1) float32 0/1
    geometry: Geometry
    original_masks: np.ndarray | None = None  # (experts, rows, cols) bool, kept for scored cases only


def prepare_case(loaded: LoadedCase, settings: Settings, keep_original: bool) -> PreparedCase:
    geometry = Geometry.fit(loaded.shape, settings.input_size)
    image = to_input(normalise_image(loaded.image, settings.ct_window), geometry)
    masks = {e: mask_to_input(m, geometry) for e, m in loaded.masks.items()}
    original = loaded.mask_stack() if keep_original and loaded.masks else None
    return PreparedCase(loaded.case, image, masks, geometry, original)


def stack_for_expert(cases: list[PreparedCase], expert: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Images and masks of the cases that ``expert`` annotated (a case lacking the mask is left out)."""
    chosen = [c for c in cases if expert in c.masks]
    if not chosen:
        return None
    return np.stack([c.image for c in chosen]), np.stack([c.masks[expert] for c in chosen])


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
        return {"train": self.train, "validation": self.validation, "held_out": self.held_out,
                "per_expert": self.per_expert}


def run_task(spec: DatasetSpec, settings: Settings, task: int, data_root: Path, *, experts: list[int] | None = None,
             seed: int = 0, out: Path | None = None, verbose: int = 2, log: Callable[[str], None] = print,
             extra_config: dict | None = None) -> dict:
    """Train one network per expert for ``task``, ensemble them on the held-out cases and score them.

    Returns the results (also written to ``results.json`` in the run folder, whose path is under
    ``results["run_dir"]``).
    """
    check_task(spec, task)
    experts = check_experts(spec, experts)
    train_cases = discover_cases(data_root, spec.name, "train")
    try:
        validation_cases = discover_cases(data_root, spec.name, "validation")
    except DataError as error:
        log(f"warning: {error}; the best epoch is chosen by training loss")
        validation_cases = []
    held_out = choose_held_out([c.case_id for c in train_cases], spec.n_held_out, seed)
    run_dir = prepare_run_dir(out, spec, task)
    log(f"{spec.title}, task {task} ({spec.task_name(task)}): run folder {run_dir}")

    # Training imports TensorFlow; everything above fails fast without it.
    from common import training

    config = {
        "dataset": spec.to_dict(),
        "task": task,
        "task_name": spec.task_name(task),
        "experts": experts,
        "seed": seed,
        "data_root": str(Path(data_root).resolve()),
        "settings": settings.to_dict(),
        "versions": versions(),
        **(extra_config or {}),
    }
    write_json(run_dir / "config.json", config)

    held = set(held_out)
    pool, scored = [], []
    for case in train_cases:
        loaded = load_case(case, spec, task)
        prepared = prepare_case(loaded, settings, keep_original=case.case_id in held)
        (scored if case.case_id in held else pool).append(prepared)
    validation = [prepare_case(load_case(c, spec, task), settings, keep_original=False) for c in validation_cases]
    unscorable = [c.case.case_id for c in scored if c.original_masks is None]
    if unscorable:
        raise DataError(f"held-out case(s) {', '.join(unscorable)} have no mask for task {task}: cannot score them")

    split = Split([c.case.case_id for c in pool], [c.case.case_id for c in validation], held_out)
    held_images = np.stack([c.image for c in scored])
    maps: dict[str, dict[str, np.ndarray]] = {}
    trained = {}
    started = time.perf_counter()
    for number, expert in enumerate(experts, start=1):
        name = expert_name(expert)
        train_arrays = stack_for_expert(pool, expert)
        if train_arrays is None:
            raise DataError(f"expert {expert} has no mask for task {task} in any training case of {spec.name}")
        validation_arrays = stack_for_expert(validation, expert)
        split.per_expert[name] = {
            "train": [c.case.case_id for c in pool if expert in c.masks],
            "validation": [c.case.case_id for c in validation if expert in c.masks],
        }
        log(f"[expert {number}/{len(experts)}] {name}: training on {len(train_arrays[0])} cases, "
            f"validating on {0 if validation_arrays is None else len(validation_arrays[0])}")
        result = training.train_expert(
            expert, train_arrays, validation_arrays, settings, run_dir / EXPERTS_FOLDER / name,
            seed=seed + expert, verbose=verbose,
        )
        on_grid = training.predict(result.model_path, held_images, settings.batch_size)
        maps[name] = {c.case.case_id: from_input(m, c.geometry) for c, m in zip(scored, on_grid)}
        trained[name] = result
        log(f"[expert {number}/{len(experts)}] {name}: done in {result.seconds:.0f} s, best {result.monitor} "
            f"{result.best_loss:.4f} at epoch {result.best_epoch}/{result.epochs} "
            f"(total elapsed {time.perf_counter() - started:.0f} s)")

    truth = {c.case.case_id: c.original_masks for c in scored}
    ensemble = average_maps(list(maps.values()))
    ensemble_scores = score_cases(ensemble, truth)
    expert_scores = {name: score_cases(m, truth) for name, m in maps.items()}
    references = reference_scores(truth)

    config["split"] = split.to_dict()
    write_json(run_dir / "config.json", config)
    results = {
        "dataset": spec.name,
        "task": task,
        "score": ensemble_scores["score"],
        "per_threshold": dict(zip([f"{t:.1f}" for t in ensemble_scores["thresholds"]], ensemble_scores["per_threshold"])),
        "per_case": ensemble_scores["per_case"],
        "dice": ensemble_scores["dice"],
        "cases": ensemble_scores["cases"],
        "per_expert": {
            name: {
                "score": s["score"],
                "per_case": s["per_case"],
                "per_threshold": s["per_threshold"],
                "best_epoch": trained[name].best_epoch,
                "best_loss": trained[name].best_loss,
                "monitor": trained[name].monitor,
                "epochs": trained[name].epochs,
                "seconds": trained[name].seconds,
            }
            for name, s in expert_scores.items()
        },
        "experts_in_ensemble": list(maps),
        "reference_scores": references,
        "training_seconds": time.perf_counter() - started,
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "results.json", results)
    write_atomic(run_dir / "dice_matrix.csv", dice_matrix_csv(ensemble_scores))
    title = f"{spec.title}, task {task} ({spec.task_name(task)}): {len(held_out)} held-out cases"
    log(format_table(title, ensemble_scores, expert_scores, references))
    return results
