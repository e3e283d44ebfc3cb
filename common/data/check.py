"""The data check before any training: read every file a run will use, report every problem at once.

A run that trains for hours must not find a broken mask of its last held-out case after the first
expert has trained, and must not stop at the first of ten problems so that the user mends them one
run at a time. :func:`check_run_data` therefore reads every image and every mask of the run's task
that the run will use (training, validation and held-out cases, and the test images with
``--predict-test``), checks shapes, values and finite voxels (through :func:`common.data.cases.load_case`),
checks that every expert to train has training masks and every held-out case has masks, and raises
one :class:`~common.data.cases.DataError` that lists every problem found. It runs before the run folder is
created, so a refused start leaves nothing behind.

The warnings the data raises (:class:`~common.data.cases.DataWarning`: a mask file named in other letter
case, a mask whose on-value is not 1 ...) are collected and returned, so that the run can write them
into its ``run.log`` once the folder exists, besides printing them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from common.data.cases import (
    Case,
    DataError,
    DataWarning,
    LoadedCase,
    load_case,
    load_image,
    mask_file_name,
    mask_shape_problem,
    natural_key,
)
from common.data.layout import layout_of
from common.spec import DatasetSpec
from common.strategies import expert_name

#: Problems listed in full in the error message; more are counted.
MAX_LISTED = 30


@dataclass
class CheckedData:
    """What the check read: each case's arrays for the task, and what it warned about."""

    loaded: dict[str, LoadedCase]  # case id -> image and the task's masks (training, validation, held-out)
    test_images: dict[str, tuple]  # case id -> (image, nifti) of the test cases to predict
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: int = 0

    def release(self, case_ids: list[str], test_arrays: bool = True) -> None:
        """Forget the arrays of ``case_ids`` (and of the test images, whose headers are kept): once a run has
        prepared them on the network's grid it never reads them again, and a volume set's are gigabytes."""
        for case_id in case_ids:
            self.loaded.pop(case_id, None)
        if test_arrays:
            self.test_images = {case_id: (None, nifti) for case_id, (_, nifti) in self.test_images.items()}

    def summary(self) -> str:
        return (
            f"data check: read {self.files} file(s) of {len(self.loaded) + len(self.test_images)} case(s) "
            f"in {self.seconds:.1f} s, no problem found"
            + (f" ({len(self.warnings)} warning(s) or note(s), above)" if self.warnings else "")
        )


@contextmanager
def collected_warnings(into: list[str], echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """Collect the :class:`DataWarning` messages raised inside, in order, once each, into ``into``.

    Each is also passed to ``echo`` (the console) as it is collected; other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            yield
        finally:
            for item in caught:
                if issubclass(item.category, DataWarning):
                    message = f"warning: {item.message}"
                    if message not in into:
                        into.append(message)
                        if echo is not None:
                            echo(message)
                else:
                    warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def check_run_data(
    spec: DatasetSpec,
    task: int,
    roles: dict[str, list[Case]],
    trained: dict[str, list[int | None]],
    test: list[Case] = (),
    echo: Callable[[str], None] | None = None,
    keep: Callable[[set[str], LoadedCase], LoadedCase] | None = None,
    found_problems: Sequence[str] = (),
) -> CheckedData:
    """Read and check every file of ``roles`` (``train``, ``validation``, ``held_out``) and ``test``.

    Args:
        spec, task: the dataset and the task whose masks are read.
        roles: the cases of each role of the run.
        trained: network name -> the experts whose masks it learns (``[e]`` for expert e's network,
            every expert for a multi-head network, ``[None]`` for a network on the mean mask: any
            expert). Each must find at least one mask among the training cases.
        test: the official test cases to predict (images only).
        echo: receives each warning as it is found (the console).
        keep: what to keep of a case once it is read and checked, given the roles it plays (default: all of
            it); a run keeps only the training slices of a volume that only trains
            (:func:`common.data.volumes.keep_slices`), so each volume is read once and the rest freed.
        found_problems: problems already found while the cases were found (a case folder with masks but no
            image: :func:`common.data.cases.discover_cases` with ``problems``), listed first.

    Raises:
        DataError: listing every problem (one per line), the files named.
    """
    started = time.perf_counter()
    problems: list[str] = list(found_problems)
    loaded: dict[str, LoadedCase] = {}
    test_images: dict[str, tuple] = {}
    found: list[str] = []
    failed: set[str] = set()
    files = 0
    plays: dict[str, set[str]] = {}
    for role in ("train", "validation", "held_out"):
        for case in roles.get(role, []):
            plays.setdefault(case.case_id, set()).add(role)
    with collected_warnings(found, echo):
        for role in ("train", "validation", "held_out"):
            for case in roles.get(role, []):
                if case.case_id in loaded or case.case_id in failed:
                    continue  # a case in two roles (cross-validation checks every case for both) is read once
                files += 1 + len(case.experts_for(task))
                try:
                    loaded[case.case_id] = load_case(case, spec, task)
                    if spec.volumetric:
                        _warn_unmarked(loaded[case.case_id], plays[case.case_id], task, found, echo)
                    if keep is not None:
                        loaded[case.case_id] = keep(plays[case.case_id], loaded[case.case_id])
                except DataError as error:
                    failed.add(case.case_id)
                    problems.extend(_all_problems(case, spec, task, error))
        for case in test:
            files += 1
            try:
                test_images[case.case_id] = load_image(case.image_path, layout_of(spec))
            except DataError as error:
                problems.append(str(error))
    if spec.volumetric:
        _note_empty_raters(loaded, task, found, echo)
    for case in roles.get("held_out", []):
        if not case.experts_for(task):
            problems.append(
                f"held-out case {case.case_id} ({case.folder}) has no mask for task {task}: it cannot be scored"
            )
    training = roles.get("train", [])
    for name, experts in trained.items():
        for expert in experts:
            if any(_annotates(case, task, expert) for case in training):
                continue
            if expert is None:
                problems.append(f"{name}: none of the {len(training)} training cases has a mask of task {task}")
            else:
                head = name if name == expert_name(expert) else f"{name} (its head for {expert_name(expert)})"
                problems.append(
                    f"{head}: expert {expert} has no mask of task {task} in any of the {len(training)} training "
                    f"cases (no {mask_file_name(task, expert)}); leave it out with --experts"
                )
    if len(problems) == 1:
        raise DataError(f"the data check found a problem; nothing was created or trained: {problems[0]}")
    if problems:
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(
            f"the data check found {len(problems)} problem(s); nothing was created or trained:\n  "
            + "\n  ".join(shown)
            + more
        )
    return CheckedData(loaded, test_images, found, time.perf_counter() - started, files)


def _warn_unmarked(loaded: LoadedCase, roles: set[str], task: int, found: list[str], echo) -> None:
    """Warn of a volume in which no expert marked a voxel: it gives no training slice (under a slice margin),
    and held out it is scored as all background, where only a map empty at a threshold scores 1 there."""
    if not loaded.masks or any(mask.any() for mask in loaded.masks.values()):
        return
    effects = []
    if roles & {"train", "validation"}:
        effects.append("it trains nothing (no marked slice to take, unless --slice-margin all)")
    if "held_out" in roles:
        effects.append("held out, it is scored as all background")
    message = (
        f"warning: {loaded.case.folder}: no expert marked any voxel of task {task} in this volume "
        f"({len(loaded.masks)} mask(s), all empty); {'; '.join(effects)}"
    )
    if message not in found:
        found.append(message)
        if echo is not None:
            echo(message)


def _note_empty_raters(loaded: dict[str, LoadedCase], task: int, found: list[str], echo) -> None:
    """Say, per expert, in which volumes that expert marked nothing while another did (the lesion set's
    quirk: a rater who saw no lesion). Not a problem: the empty mask is that expert's answer, and the
    consensus there is at most (n - 1) / n; but a user should know the ground truth is built so."""
    for expert in sorted({e for case in loaded.values() for e in case.masks}):
        empty = [
            case.case_id
            for case in sorted(loaded.values(), key=lambda c: natural_key(c.case_id))
            if expert in case.masks and not case.masks[expert].any() and any(mask.any() for mask in case.masks.values())
        ]
        if empty:
            total = sum(expert in case.masks for case in loaded.values())
            shown = ", ".join(empty[:8]) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
            message = (
                f"note: expert {expert} marked nothing of task {task} in {len(empty)} of {total} volumes where "
                f"another did ({shown}); the consensus there is at most (n - 1) / n"
            )
            found.append(message)
            if echo is not None:
                echo(message)


def _annotates(case: Case, task: int, expert: int | None) -> bool:
    return bool(case.experts_for(task)) if expert is None else expert in case.experts_for(task)


def _all_problems(case: Case, spec: DatasetSpec, task: int, first: DataError) -> list[str]:
    """Every problem of one case, not only the first that :func:`load_case` raised.

    ``load_case`` stops at its first bad file; reading the others one by one finds the rest.
    """
    from common.data.cases import load_mask

    problems = [str(first)]
    image = None
    layout = layout_of(spec)
    try:
        image, _ = load_image(case.image_path, layout)
    except DataError as error:
        if str(error) not in problems:
            problems.append(str(error))
    for expert in case.experts_for(task):
        path = case.masks[(task, expert)]
        try:
            mask = load_mask(path, layout)
        except DataError as error:
            if str(error) not in problems:
                problems.append(str(error))
            continue
        if image is not None and mask.shape != image.shape[:-1]:
            message = mask_shape_problem(path, mask.shape, image.shape[:-1], case.image_path)
            if message not in problems:
                problems.append(message)
    return problems
