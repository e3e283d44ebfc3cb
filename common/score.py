"""Score a folder of probability maps against the QUBIQ expert masks (numpy and nibabel, no TensorFlow).

::

    python -m common.score --pred runs/kidney-task1-.../predictions --data-root Project_data \\
        --dataset kidney --split train --task 1

Maps are read from ``<case>/taskTT.nii.gz`` under ``--pred/<dataset>`` or ``--pred`` itself, and each
case is scored with the QUBIQ score against all the masks its experts drew for the task. A volume (the 2021
pancreas sets) is scored as the challenge states it, one Dice per volume and threshold; the per-slice figure
some participants reported is added, labelled, in ``results.json`` (``per_slice``) and the table. The table is
printed, the overall score on the last line, and ``results.json`` and ``dice_matrix.csv`` are written
into ``--out``.

No case is left out in silence. The cases that must have a map are:

- ``--cases``, when given;
- else, when ``--pred`` is a run's ``predictions/`` folder (or its ``<dataset>`` folder) and the run
  folder above it holds ``config.json`` (:func:`common.runs.pipeline.run_task`, also each ``foldK/`` of a
  cross-validation): the run's held-out cases (``split.held_out``) that are in ``--split`` (a fold's
  held-out cases of the validation split are scored with ``--split validation``). A run predicts only
  its held-out and validation cases (its training cases have no map), and its score is that of its
  held-out cases, so they are what the scorer reproduces; the output says so in one line. A run made
  for another dataset or task is refused, also with ``--cases``;
- else every case of ``--split``.

A case among them without a map is an error that names each such case and the file expected, before
anything is written. With ``--allow-missing`` the cases that have a map are scored and the others are
listed; a folder with no map to score is an error either way. A map of a case in no split of the
dataset is an error.

``results.json`` holds, besides the scores, ``not_scored``: case -> why it was not scored, one of

- ``"train"``, ``"validation"``, ``"test"``: a map of a case of that other split (a run's folder also
  holds its validation and test cases' maps);
- ``"no map (expected <file>)"``: a case that should have been scored has no map (``--allow-missing``);
- ``"not held out by the run: its validation case"`` (or ``its train case``, ``in no role of its
  split``): a map of a case of the split that the run did not hold out (a cross-validation fold also
  predicts its validation cases, which chose its best epoch, and they may be cases of any split);
- ``"not in --cases"``: a map of a case of the split that ``--cases`` did not name;

and ``held_out_from``: the run's ``config.json`` whose held-out list chose the cases, or ``null``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common.cli import or_list
from common.data.cases import Case, DataError, discover_cases, load_mask, natural_key
from common.datasets import DATASETS
from common.evaluation.predictions import find_predictions, read_prediction
from common.evaluation.report import dice_matrix_csv, dice_table_lines
from common.evaluation.scoring import score_cases, score_slices
from common.runs.folder import CONFIG_FILE, DICE_MATRIX_FILE, PREDICTIONS_FOLDER, RESULTS_FILE
from common.spec import RELEASE_NAMES, SPLITS, ConfigError
from common.storage import StorageError, write_atomic, write_json

#: A run folder's maps and its record (as :mod:`common.runs.pipeline` writes them; not imported, to keep this light).
RUN_CONFIG_FILE = CONFIG_FILE
#: The start of a ``not_scored`` reason for a case without a map.
NO_MAP = "no map"


def default_out(pred_dir: Path, dataset: str, split: str, task: int) -> Path:
    """``<pred_dir>/scores-<dataset>-<split>-task<T>``."""
    return Path(pred_dir) / f"scores-{dataset}-{split}-task{task}"


def find_run_config(pred_dir: Path) -> Path | None:
    """The ``config.json`` of the run whose ``predictions/`` folder is ``pred_dir`` or its parent, else None.

    Only those two levels: ``--pred`` is a prediction root or a ``<dataset>`` folder in one, and a
    ``predictions`` folder further up belongs to something else.
    """
    folder = Path(pred_dir).resolve()
    for candidate in (folder, folder.parent):
        if candidate.name == PREDICTIONS_FOLDER and (candidate.parent / RUN_CONFIG_FILE).is_file():
            return candidate.parent / RUN_CONFIG_FILE
    return None


def read_run_split(
    config_path: Path, dataset: str, task: int, *, require_split: bool = True
) -> dict[str, list[str]] | None:
    """The run's split (``train``, ``validation``, ``held_out``: case ids), checked against ``dataset`` and
    ``task``; with ``require_split=False`` only the dataset and task are checked and None is returned.

    Raises:
        DataError: the file cannot be read; the run is of another dataset or task; it records no
            held-out list (a run writes its split once its maps are written).
    """
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{config_path}: cannot read the run's config ({error})") from None
    if not isinstance(config, dict):
        raise DataError(f"{config_path}: not a run's config.json (expected a JSON object)")
    named = config.get("dataset")
    named = named.get("name") if isinstance(named, dict) else named
    if named != dataset or config.get("task") != task:
        raise DataError(
            f"{config_path}: the run in {Path(config_path).parent} is of dataset {named!r}, task "
            f"{config.get('task')!r}, not --dataset {dataset} --task {task}; score it with its own dataset and "
            "task, or choose another --pred"
        )
    if not require_split:
        return None
    split = config.get("split")
    if not isinstance(split, dict):
        raise DataError(
            f"{config_path}: the run records no split (a run writes it with its maps; has it finished?): "
            "name the cases to score with --cases"
        )
    roles = {}
    for role in ("train", "validation", "held_out"):
        ids = split.get(role, [])
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise DataError(f"{config_path}: split.{role} is not a list of case ids")
        roles[role] = ids
    if not roles["held_out"]:
        raise DataError(
            f"{config_path}: the run records no held-out case (split.held_out; a run writes it with its maps): "
            "name the cases to score with --cases"
        )
    return roles


def score_folder(
    pred_dir: Path,
    data_root: Path,
    dataset: str,
    split: str,
    task: int,
    cases: list[str] | None = None,
    *,
    allow_missing: bool = False,
    release: str | None = None,
) -> dict:
    """The QUBIQ score of the maps in ``pred_dir`` for one dataset, split and task.

    Args:
        pred_dir: the folder holding ``<dataset>/<case>/taskTT.nii.gz``, or the ``<dataset>`` folder.
        data_root: the QUBIQ data root (``training_data_v2/`` ...), where the expert masks are.
        dataset, split, task: which masks to score against; ``split`` is train, validation or test.
        cases: score exactly these cases (each must be in ``split``); default: the run's held-out cases
            in ``split`` when ``pred_dir`` is a run's ``predictions/`` folder, else every case of ``split``
            (see the module docstring).
        allow_missing: score the cases that have a map and list the others in ``not_scored``, instead of
            refusing.
        release: ``"2020"`` or ``"2021"`` when ``data_root`` holds both (:func:`common.data.cases.find_release`).

    Returns:
        ``score``, ``per_threshold`` (``{"0.1": ..., ...}``, as in a run's ``results.json``),
        ``per_case``, ``dice`` (cases x thresholds), ``cases``, ``thresholds``, the inputs
        (``pred_dir``, ``data_root``, ``dataset``, ``split``, ``task``), ``predictions`` (case -> file),
        ``not_scored`` (case -> why, see the module docstring) and ``held_out_from`` (the run's
        ``config.json`` whose held-out cases were scored, or None).

    Raises:
        DataError: a bad input; the message names the case, file or folder (every case without a map,
            one per line).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if task < 1:
        raise DataError(f"task must be >= 1, got {task}")
    pred_dir, data_root = Path(pred_dir), Path(data_root)
    predictions = find_predictions(pred_dir, dataset, task)
    folder = pred_dir / dataset if (pred_dir / dataset).is_dir() else pred_dir
    in_split = {case.case_id: case for case in discover_cases(data_root, dataset, split, release=release)}
    config_path = find_run_config(pred_dir)
    run_split = None
    if config_path is not None:  # with --cases the run's dataset and task are checked, its split is not used
        run_split = read_run_split(config_path, dataset, task, require_split=cases is None)
    outside = set(predictions) | set(run_split["held_out"] if run_split else ()) | set(cases or ())
    elsewhere = _cases_of_other_splits(data_root, dataset, split, release) if outside - set(in_split) else {}

    for case_id, path in predictions.items():
        if case_id not in in_split and case_id not in elsewhere:
            raise DataError(
                f"{path}: case {case_id} is not a {split} case of {dataset} "
                f"(nor a case of any other split under {data_root})"
            )
    if cases is not None:
        if len(set(cases)) != len(cases) or not cases:
            raise DataError(f"--cases must name distinct cases, got {', '.join(cases) or 'none'}")
        for case_id in cases:
            if case_id not in in_split:
                where = f" (it is a {elsewhere[case_id]} case)" if case_id in elsewhere else ""
                raise DataError(f"case {case_id} is not a {split} case of {dataset}{where}")
        expected, what = list(cases), "case(s) named by --cases"
    else:
        if run_split is not None:
            held_out = run_split["held_out"]
            unknown = [c for c in held_out if c not in in_split and c not in elsewhere]
            if unknown:
                raise DataError(
                    f"{config_path}: the run's held-out case(s) {', '.join(unknown)} are not cases of {dataset} "
                    f"under {data_root}: is --data-root the data the run was made with?"
                )
            expected = sorted((c for c in held_out if c in in_split), key=natural_key)
            if not expected:
                where = ", ".join(f"{c} ({elsewhere[c]})" for c in held_out)
                raise DataError(
                    f"{config_path}: the run holds out no {split} case of {dataset} (its held-out cases: {where}): "
                    f"choose --split accordingly, or name the cases to score with --cases"
                )
            what = f"held-out case(s) of the run in the {split} split"
        else:
            expected, what = list(in_split), f"case(s) of the {split} split of {dataset}"

    missing = [c for c in expected if c not in predictions]
    selected = [c for c in expected if c in predictions]
    expected_file = {c: (folder / c / f"task{task:02d}.nii.gz").resolve() for c in missing}
    if missing and (not allow_missing or not selected):
        lines = [
            f"no map of task {task} in {folder} for {len(missing)} of the {len(expected)} {what}"
            + (": nothing to score:" if not selected else " (--allow-missing scores the others):"),
            *(f"  no map for case {c}: expected {expected_file[c]}" for c in missing),
        ]
        others = [c for c in predictions if c not in in_split]
        if not selected and others:
            found = ", ".join(f"{c} ({elsewhere[c]})" for c in others[:5])
            lines.append(f"  the maps there are of other splits' cases: {found}{' ...' if len(others) > 5 else ''}")
        raise DataError("\n".join(lines))

    scored = set(selected)
    roles = {c: f"its {role} case" for role in ("train", "validation") for c in (run_split or {}).get(role, [])}
    reasons = {c: f"{NO_MAP} (expected {expected_file[c]})" for c in missing}
    for case_id in predictions:
        if case_id in scored:
            continue
        if case_id not in in_split:
            reasons[case_id] = elsewhere[case_id]
        elif cases is not None:
            reasons[case_id] = "not in --cases"
        else:  # a case of the split that the run did not hold out
            reasons[case_id] = f"not held out by the run: {roles.get(case_id, 'in no role of its split')}"
    not_scored = dict(sorted(reasons.items(), key=lambda item: natural_key(item[0])))

    layout = dataset_layout(dataset, config_path)
    scores, per_slice = _score_selected(selected, in_split, predictions, layout, task)
    return {
        "score": scores["score"],
        "per_threshold": {f"{t:.1f}": v for t, v in zip(scores["thresholds"], scores["per_threshold"], strict=True)},
        "per_case": scores["per_case"],
        "dice": scores["dice"],
        "cases": scores["cases"],
        "thresholds": scores["thresholds"],
        "pred_dir": str(pred_dir.resolve()),
        "data_root": str(data_root.resolve()),
        "dataset": dataset,
        "split": split,
        "task": task,
        "predictions": {c: str(predictions[c].resolve()) for c in selected},
        "not_scored": not_scored,
        "held_out_from": str(config_path) if run_split is not None else None,
        **({"per_slice": {"score": per_slice["score"], "per_case": per_slice["per_case"]}} if per_slice else {}),
    }


def _score_selected(selected: list[str], in_split: dict, predictions: dict, layout, task: int) -> tuple:
    """The scores of the selected cases' maps, and for volumes the per-slice figure (else None)."""
    maps, truth = {}, {}
    for case_id in selected:
        truth[case_id] = _consensus_masks(in_split[case_id], task, layout)
        maps[case_id] = _checked_map(predictions[case_id], truth[case_id].shape[1:], layout)
    return score_cases(maps, truth), (score_slices(maps, truth) if layout.volumetric else None)


def dataset_layout(dataset: str, config_path: Path | None = None):
    """How ``dataset``'s cases are laid out (:mod:`common.data.layout`): as the run's ``config.json`` describes
    its dataset when ``--pred`` is a run's folder, else as :mod:`common.datasets` does (a volume set's volumes);
    a dataset this project does not know is read as 2D images."""
    from common.data.layout import Planar, layout_of

    if config_path is not None:
        from common.runs.gather import spec_from_config

        try:
            return layout_of(spec_from_config(json.loads(Path(config_path).read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # read_run_split has read this file already; an odd one falls back to the registry
    return layout_of(DATASETS[dataset].spec) if dataset in DATASETS else Planar(1)


def _cases_of_other_splits(data_root: Path, dataset: str, split: str, release: str | None = None) -> dict[str, str]:
    """Case id -> split, for the splits other than ``split`` that exist under ``data_root``."""
    found = {}
    for other in SPLITS:
        if other == split:
            continue
        try:
            found.update({case.case_id: other for case in discover_cases(data_root, dataset, other, release=release)})
        except DataError:  # a split that is not there (e.g. no test/ folder) holds none of them
            continue
    return found


def _consensus_masks(case: Case, task: int, layout=None) -> np.ndarray:
    """All the masks the case's experts drew for ``task``, as bool ``(experts, rows, cols)`` (a volume's:
    ``(experts, slices, rows, cols)``)."""
    experts = case.experts_for(task)
    if not experts:
        tasks = sorted({t for t, _ in case.masks})
        has = f"it has masks of task(s) {', '.join(map(str, tasks))}" if tasks else "it has no masks at all"
        raise DataError(
            f"case {case.case_id} has no mask for task {task} ({case.folder}; {has}): nothing to score against"
        )
    masks = [load_mask(case.masks[(task, expert)], layout or 1) for expert in experts]
    for expert, mask in zip(experts, masks, strict=True):
        if mask.shape != masks[0].shape:
            raise DataError(
                f"{case.masks[(task, expert)]}: mask shape {mask.shape} differs from "
                f"{case.masks[(task, experts[0])].name}'s {masks[0].shape}"
            )
    return np.stack(masks)


def _checked_map(path: Path, grid: tuple[int, ...], layout=None) -> np.ndarray:
    prediction = read_prediction(path, layout)
    if prediction.shape != tuple(grid):
        raise DataError(f"{path}: prediction of shape {prediction.shape} differs from the masks' {tuple(grid)}")
    if not np.isfinite(prediction).all():
        raise DataError(f"{path}: prediction holds {int((~np.isfinite(prediction)).sum())} NaN or infinite values")
    if prediction.size and (prediction.min() < 0 or prediction.max() > 1):
        raise DataError(
            f"{path}: prediction must be within [0, 1]; found values in [{prediction.min():g}, {prediction.max():g}]"
        )
    return prediction


def _as_score_cases(results: dict) -> dict:
    """``results`` with ``per_threshold`` as a list, the form the reporting helpers take."""
    return {**results, "per_threshold": list(results["per_threshold"].values())}


def _not_scored_lines(not_scored: dict[str, str]) -> list[str]:
    """One line per kind of reason (see the module docstring), in the order the kinds first appear."""
    groups: dict[str, list[str]] = {}
    for case_id, reason in not_scored.items():
        if reason in SPLITS:
            title = "Not scored (cases of other splits)"
        elif reason.startswith(NO_MAP):
            title, reason = "Not scored (no map, --allow-missing)", reason[len(NO_MAP) :].strip(" ()")
        else:
            title = "Not scored"
        groups.setdefault(title, []).append(f"{case_id} ({reason})")
    return [f"{title}: {', '.join(entries)}" for title, entries in groups.items()]


def format_scores(results: dict, out: Path | None = None) -> str:
    """The printed report of :func:`score_folder`'s results (and where they were written); the last line
    is the overall score."""
    lines = [
        f"{results['dataset']}, {results['split']} split, task {results['task']}: {len(results['cases'])} case(s) "
        f"scored from {results['pred_dir']}"
    ]
    if results.get("held_out_from"):
        lines.append(f"Cases: the run's held-out cases of the {results['split']} split ({results['held_out_from']})")
    lines += [
        "Dice of the prediction at each threshold (prediction >= t vs. expert consensus >= t):",
        *dice_table_lines(_as_score_cases(results)),
        *_not_scored_lines(results["not_scored"]),
    ]
    if results.get("per_slice"):
        lines.append(
            f"Per slice (mean of each slice's Dice; participants' figure, not the score): "
            f"{results['per_slice']['score']:.4f}"
        )
    if out is not None:
        lines.append(f"Written: {Path(out) / RESULTS_FILE}, {Path(out) / DICE_MATRIX_FILE}")
    lines += ["", f"QUBIQ score: {results['score']:.4f}"]
    return "\n".join(lines)


def write_scores(out: Path, results: dict) -> Path:
    """``results.json`` and ``dice_matrix.csv`` into ``out`` (created); an existing non-empty folder is refused."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"output folder {out} exists and is not empty; choose another --out (nothing is overwritten)"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULTS_FILE, {**results, "out": str(out.resolve())})
    write_atomic(out / DICE_MATRIX_FILE, dice_matrix_csv(_as_score_cases(results)))
    return out


def _task_number(text: str) -> int:
    try:
        task = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a task number >= 1, got {text!r}") from None
    if task < 1:
        raise argparse.ArgumentTypeError(f"expected a task number >= 1, got {task}")
    return task


def _case_list(text: str) -> list[str]:
    cases = [part.strip() for part in text.split(",") if part.strip()]
    if not cases:
        raise argparse.ArgumentTypeError(f"expected case ids separated by commas (e.g. case01,case02), got {text!r}")
    if len(set(cases)) != len(cases):
        raise argparse.ArgumentTypeError(f"a case is named twice in {text!r}")
    return cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.score",
        description="Score probability maps (<case>/taskTT.nii.gz) against the QUBIQ expert masks with the "
        "QUBIQ score (Dice at thresholds 0.1 ... 0.9, averaged).",
    )
    parser.add_argument(
        "--pred",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder holding <dataset>/<case>/taskTT.nii.gz (a run's predictions/ folder), "
        "or the <dataset> folder itself",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        required=True,
        metavar="ROOT",
        help="the QUBIQ data root as unpacked: 2020 (training_data_v2/, validation_data_v2/, test/) or "
        "2021 (training_data_v3_QC/, validation_data_qubiq2021_QC/, QUBIQ21_test/)",
    )
    parser.add_argument(
        "--release",
        choices=RELEASE_NAMES,
        default=None,
        help="which release to read when the data root holds both (default: the one there)",
    )
    parser.add_argument(
        "--dataset", required=True, choices=list(DATASETS), help="the dataset whose expert masks to score against"
    )
    parser.add_argument("--split", required=True, choices=SPLITS, help="the split whose masks to score against")
    parser.add_argument(
        "--task",
        type=_task_number,
        required=True,
        metavar="T",
        help="task number: 1"
        + "".join(f"; {e.name}: {or_list(e.spec.valid_tasks)}" for e in DATASETS.values() if e.spec.tasks > 1),
    )
    parser.add_argument(
        "--cases",
        type=_case_list,
        default=None,
        metavar="CASES",
        help="score exactly these cases, e.g. case01,case02 (default: every case of the split, or a run's "
        "held-out cases when --pred is its predictions/ folder)",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the cases that have a map and list the others (printed, and in results.json under "
        "not_scored); default: a case without a map is an error",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder to create for results.json and dice_matrix.csv "
        "(default: <pred>/scores-<dataset>-<split>-task<T>); a non-empty folder is refused",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, score, write and print. Exits with status 2 and a one-line message on bad input."""
    from common.runs.plan import check_task

    parser = build_parser()
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_out(args.pred, args.dataset, args.split, args.task)
    try:
        check_task(DATASETS[args.dataset].spec, args.task)  # before any file is read: a task it does not have
        results = score_folder(
            args.pred,
            args.data_root,
            args.dataset,
            args.split,
            args.task,
            args.cases,
            allow_missing=args.allow_missing,
            release=args.release,
        )
        write_scores(out, results)
    except (DataError, ConfigError, FileExistsError, StorageError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(format_scores(results, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
