"""Cross-validation folders made apart, compared as the variants of one experiment are.

Two experiments made on the same ``splits.json`` (``--splits``) with the same seed are paired fold by
fold and case by case (:func:`common.evaluation.comparison.paired_comparison`); this reads their folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.evaluation.comparison import VariantResult
from common.runs.crossval import variant_metrics
from common.runs.folder import CONFIG_FILE, CV_RESULTS_FILE, SPLITS_FILE
from common.spec import Settings
from common.switches import describe


def compare_folders(folders: list) -> tuple[list[VariantResult], str]:
    """The variants of finished cross-validation folders that share their folds and seed, and a title.

    The first folder is the baseline; each variant is named by the switches whose values differ from the
    baseline's (``keep=last``). Two experiments made apart on the same ``splits.json`` (``--splits``) and
    seed are paired exactly as the variants of one experiment are.

    Raises:
        ValueError: a folder is not a finished cross-validation, or the folds, the seed, the dataset or
            the task differ (the folder is named).
    """
    if len(folders) < 2:
        raise ValueError("give two or more cross-validation folders (the first is the baseline)")
    loaded = []
    for folder in map(Path, folders):
        try:
            results = json.loads((folder / CV_RESULTS_FILE).read_text())
            config = json.loads((folder / CONFIG_FILE).read_text())
            folds = json.loads((folder / SPLITS_FILE).read_text())["folds"]
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"{folder}: not a finished cross-validation folder (needs {CV_RESULTS_FILE}, {CONFIG_FILE} and "
                f"{SPLITS_FILE}: {error})"
            ) from None
        loaded.append((folder, results, config, folds))
    first_folder, first, first_config, first_folds = loaded[0]
    for folder, results, config, folds in loaded[1:]:
        for what, mine, theirs in (
            (f"folds ({SPLITS_FILE})", folds, first_folds),
            ("seed", config.get("seed"), first_config.get("seed")),
            ("dataset", results["dataset"], first["dataset"]),
            ("task", results["task"], first["task"]),
            ("experts", config.get("experts"), first_config.get("experts")),
        ):
            if mine != theirs:
                raise ValueError(
                    f"{folder}: its {what} differ from {first_folder}'s; the comparison would not be paired"
                )
    shown = [describe(Settings.from_dict(config["settings"])) for _, _, config, _ in loaded]
    variants = []
    for number, ((folder, results, _, _), values) in enumerate(zip(loaded, shown, strict=True)):
        changes = {k: v for k, v in values.items() if v != shown[0][k]}
        if number == 0:
            name = f"baseline ({folder.name})"
        else:
            name = ", ".join(f"{k}={v}" for k, v in changes.items()) or f"same settings ({folder.name})"
        variants.append(
            VariantResult(
                name=name,
                changes=changes,
                fold_scores=results["fold_scores"],
                case_scores=results["per_case"],
                seconds=results.get("training_seconds", 0.0),
                parameters=results.get("parameters", 0),
                networks=results.get("networks", 0),
                metrics=variant_metrics(results),
            )
        )
    title = (
        f"{first['dataset']}, task {first['task']}: {len(first['fold_scores'])}-fold cross-validations on the same "
        f"folds, seed {first_config.get('seed')}"
    )
    return variants, title
