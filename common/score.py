"""Score a folder of probability maps against the QUBIQ expert masks (numpy and nibabel, no TensorFlow).

::

    python -m common.score --pred runs/kidney-task1-.../predictions --data-root Project_data \\
        --dataset kidney --split train --task 1

Every case of the split that has a map ``<case>/taskTT.nii.gz`` (under ``--pred/<dataset>`` or
``--pred`` itself) is scored with the QUBIQ score against all the masks its experts drew for the task.
A run's ``predictions/`` folder also holds validation (and test) cases: maps of cases that belong to
another split of the dataset are left out and listed; a map of a case in no split is an error. The
table is printed, the overall score on the last line, and ``results.json`` and ``dice_matrix.csv`` are
written into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common.data import Case, DataError, discover_cases, load_mask
from common.predictions import find_predictions, read_prediction
from common.reporting import dice_matrix_csv, dice_table_lines, write_atomic, write_json
from common.scoring import score_cases
from common.spec import SPLITS

RESULTS_FILE = "results.json"
DICE_MATRIX_FILE = "dice_matrix.csv"


def default_out(pred_dir: Path, dataset: str, split: str, task: int) -> Path:
    """``<pred_dir>/scores-<dataset>-<split>-task<T>``."""
    return Path(pred_dir) / f"scores-{dataset}-{split}-task{task}"


def score_folder(
    pred_dir: Path, data_root: Path, dataset: str, split: str, task: int, cases: list[str] | None = None
) -> dict:
    """The QUBIQ score of the maps in ``pred_dir`` for one dataset, split and task.

    Args:
        pred_dir: the folder holding ``<dataset>/<case>/taskTT.nii.gz``, or the ``<dataset>`` folder.
        data_root: the QUBIQ data root (``training_data_v2/`` ...), where the expert masks are.
        dataset, split, task: which masks to score against; ``split`` is train, validation or test.
        cases: score only these cases (each must be in ``split`` and have a map); default: every
            case of ``split`` with a map.

    Returns:
        ``score``, ``per_threshold`` (``{"0.1": ..., ...}``, as in a run's ``results.json``),
        ``per_case``, ``dice`` (cases x thresholds), ``cases``, ``thresholds``, the inputs
        (``pred_dir``, ``data_root``, ``dataset``, ``split``, ``task``), ``predictions`` (case -> file)
        and ``not_scored`` (maps of other splits' cases: case -> its split).

    Raises:
        DataError: a bad input; the message names the case, file or folder.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if task < 1:
        raise DataError(f"task must be >= 1, got {task}")
    pred_dir, data_root = Path(pred_dir), Path(data_root)
    predictions = find_predictions(pred_dir, dataset, task)
    in_split = {case.case_id: case for case in discover_cases(data_root, dataset, split)}
    elsewhere = _cases_of_other_splits(data_root, dataset, split) if set(predictions) - set(in_split) else {}

    if cases is not None:
        if len(set(cases)) != len(cases) or not cases:
            raise DataError(f"--cases must name distinct cases, got {', '.join(cases) or 'none'}")
        for case_id in cases:
            if case_id not in in_split:
                where = f" (it is a {elsewhere[case_id]} case)" if case_id in elsewhere else ""
                raise DataError(f"case {case_id} is not a {split} case of {dataset}{where}")
            if case_id not in predictions:
                raise DataError(
                    f"no prediction for case {case_id}: {pred_dir} holds no {case_id}/task{task:02d}.nii.gz"
                )
        selected = list(cases)
    else:
        for case_id, path in predictions.items():
            if case_id not in in_split and case_id not in elsewhere:
                raise DataError(
                    f"{path}: case {case_id} is not a {split} case of {dataset} "
                    f"(nor a case of any other split under {data_root})"
                )
        selected = [case_id for case_id in predictions if case_id in in_split]
        if not selected:
            found = ", ".join(f"{c} ({elsewhere[c]})" for c in list(predictions)[:5])
            raise DataError(
                f"no map in {pred_dir} is of a {split} case of {dataset}; found {found}"
                f"{' ...' if len(predictions) > 5 else ''}: choose --split accordingly"
            )
    not_scored = {c: elsewhere[c] for c in predictions if c not in in_split}

    maps, truth = {}, {}
    for case_id in selected:
        truth[case_id] = _consensus_masks(in_split[case_id], task)
        maps[case_id] = _checked_map(predictions[case_id], truth[case_id].shape[1:])
    scores = score_cases(maps, truth)
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
    }


def _cases_of_other_splits(data_root: Path, dataset: str, split: str) -> dict[str, str]:
    """Case id -> split, for the splits other than ``split`` that exist under ``data_root``."""
    found = {}
    for other in SPLITS:
        if other == split:
            continue
        try:
            found.update({case.case_id: other for case in discover_cases(data_root, dataset, other)})
        except DataError:  # a split that is not there (e.g. no test/ folder) holds none of them
            continue
    return found


def _consensus_masks(case: Case, task: int) -> np.ndarray:
    """All the masks the case's experts drew for ``task``, as bool ``(experts, rows, cols)``."""
    experts = case.experts_for(task)
    if not experts:
        tasks = sorted({t for t, _ in case.masks})
        has = f"it has masks of task(s) {', '.join(map(str, tasks))}" if tasks else "it has no masks at all"
        raise DataError(
            f"case {case.case_id} has no mask for task {task} ({case.folder}; {has}): nothing to score against"
        )
    masks = [load_mask(case.masks[(task, expert)]) for expert in experts]
    for expert, mask in zip(experts, masks, strict=True):
        if mask.shape != masks[0].shape:
            raise DataError(
                f"{case.masks[(task, expert)]}: mask shape {mask.shape} differs from "
                f"{case.masks[(task, experts[0])].name}'s {masks[0].shape}"
            )
    return np.stack(masks)


def _checked_map(path: Path, grid: tuple[int, ...]) -> np.ndarray:
    prediction = read_prediction(path)
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


def format_scores(results: dict, out: Path | None = None) -> str:
    """The printed report of :func:`score_folder`'s results (and where they were written); the last line
    is the overall score."""
    lines = [
        f"{results['dataset']}, {results['split']} split, task {results['task']}: {len(results['cases'])} case(s) "
        f"scored from {results['pred_dir']}",
        "Dice of the prediction at each threshold (prediction >= t vs. expert consensus >= t):",
        *dice_table_lines(_as_score_cases(results)),
    ]
    if results["not_scored"]:
        lines.append(
            "Not scored (cases of other splits): " + ", ".join(f"{c} ({s})" for c, s in results["not_scored"].items())
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
        help="the QUBIQ data root holding training_data_v2/, validation_data_v2/, test/",
    )
    parser.add_argument("--dataset", required=True, help="e.g. brain-growth, brain-tumor, kidney, prostate")
    parser.add_argument("--split", required=True, choices=SPLITS, help="the split whose masks to score against")
    parser.add_argument("--task", type=_task_number, required=True, metavar="T", help="task number (1, 2, ...)")
    parser.add_argument(
        "--cases",
        type=_case_list,
        default=None,
        metavar="CASES",
        help="score only these cases, e.g. case01,case02 (default: every case of the split with a map)",
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
    parser = build_parser()
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_out(args.pred, args.dataset, args.split, args.task)
    try:
        results = score_folder(args.pred, args.data_root, args.dataset, args.split, args.task, args.cases)
        write_scores(out, results)
    except (DataError, FileExistsError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(format_scores(results, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
