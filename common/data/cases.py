"""Finding QUBIQ cases on disk and reading their NIfTI files (nibabel).

Where the data lies. The data root holds one QUBIQ release as distributed (the folder names are the table
``common.spec.RELEASES``): 2020 ``training_data_v2/``, ``validation_data_v2/``, ``test/``; 2021
``training_data_v3_QC/`` (or ``training_data_v3/``), ``validation_data_qubiq2021_QC/`` (or
``validation_data_qubiq2021/``), ``QUBIQ21_test/``. :func:`find_release` tells which release a root
holds by these names alone, un-nests a split folder that an unzip tool left inside a folder of its own
name (``training_data_v3_QC/training_data_v3_QC/kidney``), and refuses whatever would make the choice a
guess: two releases (unless ``release`` picks one), two copies of one split, a root that is a split
folder itself. A wrong root is the first mistake on real data, so each refusal names the path and what
was expected there.

Which cases there are. Case folders are found by walking a dataset folder for ``image.nii.gz``, so copies
with and without the ``Training/`` level both work. The walk follows symbolic links (a case folder linked
from another disk is found), stops at a link loop, and reads each physical folder once: a folder reached
twice, through two links, would count its cases twice and is refused. Masks are paired by their file
names (``taskTT_segEE.nii.gz``) inside the case folder, never by sorted position across folders, so a
case missing an expert's mask (prostate case09 has experts 1, 2, 4, 5, 6) simply lacks it.

Nothing is dropped or doubled silently: two folders naming one case (``case1`` and ``case01``, compared
by :func:`case_key`), two files naming one mask (``task1_seg1.nii.gz`` and ``task01_seg01.nii.gz``, or
``.nii`` and ``.nii.gz``), a broken link named like an image or a mask, and masks without an image are
errors (:class:`DataError`); a file named in other letter case (``Image.nii.gz``) is used and a NIfTI
file that is neither image nor mask is not, each with a :class:`DataWarning` naming it, which the run
writes into its log.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.layout import CaseLayout, layout_of
from common.errors import DataError
from common.spec import RELEASE_NAMES, RELEASES, SPLITS, ConfigError, DatasetSpec
from common.strategies import expert_name

IMAGE_NAME = "image.nii.gz"
MASK_PATTERN = re.compile(r"^task(\d+)_seg(\d+)\.nii(\.gz)?$")
_MASK_ANY_CASE = re.compile(MASK_PATTERN.pattern, re.IGNORECASE)
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Folders an unzip tool or a file manager leaves next to the data; never data themselves.
_HOUSEKEEPING = ("__MACOSX",)


def mask_file_name(task: int, expert: int) -> str:
    """A mask's file name in both releases, ``task01_seg02.nii.gz`` (what :data:`MASK_PATTERN` reads back):
    the expert as :func:`common.strategies.expert_name` calls them."""
    return f"task{task:02d}_{expert_name(expert)}.nii.gz"


class DataWarning(UserWarning):
    """Data used or skipped in a way the user should know of; the message names the file or folder.

    A run collects these during its data check and writes each into its ``run.log``.
    """


class MaskValueWarning(DataWarning):
    """A mask whose on-value is not 1 (it is still binarised as nonzero)."""


@dataclass(frozen=True)
class Case:
    """One case folder: its image and its expert masks, keyed by ``(task, expert)``.

    ``image`` is the image file when it is not named exactly ``image.nii.gz`` (``Image.nii.gz``).
    """

    case_id: str
    split: str
    folder: Path
    masks: dict[tuple[int, int], Path] = field(default_factory=dict)
    image: Path | None = None

    @property
    def image_path(self) -> Path:
        return self.image if self.image is not None else self.folder / IMAGE_NAME

    def experts_for(self, task: int) -> list[int]:
        """The experts (1-based) that annotated ``task`` in this case, in order."""
        return sorted(e for (t, e) in self.masks if t == task)


def case_key(case_id: str) -> str:
    """The canonical key of a case id: lower case, numbers without leading zeros (``Case01`` -> ``case1``).

    Two folders with one key name one case, whichever spelling each copy used; comparing raw names would
    count ``case1`` and ``case01`` as two cases (and train and score on the same image).
    """
    return re.sub(r"\d+", lambda number: str(int(number.group())), case_id.lower())


def case_group(case_id: str) -> str:
    """The group a case belongs to: its ``case<N>`` prefix for ids like ``case13-2`` (the 2021 3D sets), else
    the case itself; compared as :func:`case_key` (``Case01-1`` and ``case1-2`` are one group).

    The volumes of one group are kept on one side of every split (held out together, or trained on
    together): they may be one patient's (what ``-M`` means is not published), and a network that trained on
    one of them would be scored on its twin. Ids are never parsed as numbers beyond this.
    """
    match = re.fullmatch(r"(.*\d)-(\d+)", case_id)
    return case_key(match.group(1) if match else case_id)


def grouped(case_ids: list[str]) -> list[list[str]]:
    """``case_ids`` gathered by :func:`case_group`, groups in the order of their first case."""
    groups: dict[str, list[str]] = {}
    for case_id in case_ids:
        groups.setdefault(case_group(case_id), []).append(case_id)
    return list(groups.values())


# --- which release a data root holds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One QUBIQ release under a data root: its name and the resolved folder of each split present.

    ``folders`` maps a split to its top folder after un-nesting (``root/training_data_v3_QC`` or
    ``root/training_data_v3_QC/training_data_v3_QC``); a split absent from the root is absent here.
    """

    name: str
    root: Path
    folders: dict[str, Path] = field(hash=False)

    def dataset_folder(self, dataset: str, split: str) -> Path:
        """``<split folder>/<dataset>``, e.g. ``root/training_data_v3_QC/kidney`` (it may not exist).

        Raises:
            ValueError: ``split`` is not one of :data:`common.spec.SPLITS`.
            DataError: the release has no folder for ``split`` under this root.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split not in self.folders:
            raise DataError(
                f"no {split} data for {dataset}: the QUBIQ {self.name} release under {self.root} has no {split} "
                f"folder (expected {_expected(self.name, split)})"
            )
        return self.folders[split] / dataset

    def to_dict(self) -> dict:
        """``{"release": "2021", "folders": {"train": "/abs/...", ...}}`` for ``config.json``."""
        return {"release": self.name, "folders": {split: str(folder) for split, folder in self.folders.items()}}

    def describe(self) -> str:
        """One line for the run log: ``QUBIQ 2021 release: training_data_v3_QC/training_data_v3_QC, ...``."""
        shown = ", ".join(self.folders[s].relative_to(self.root).as_posix() for s in SPLITS if s in self.folders)
        return f"QUBIQ {self.name} release: {shown}"


def find_release(root: Path, release: str | None = None) -> Release:
    """The QUBIQ release under ``root``, told by its split folders' names (``common.spec.RELEASES``).

    ``release`` ("2020" or "2021") picks one when the root holds both; otherwise the root must hold exactly
    one. A split folder nested once in a folder of its own name (or of another accepted name of the same
    split) is un-nested.

    Raises:
        ConfigError: ``release`` is not a known release.
        DataError: ``root`` does not exist, is a file, is empty, holds no release folder, looks like a split
            folder itself, holds two releases (and ``release`` picks none), lacks the ``release`` asked for,
            holds two copies of one split, or a nested split folder has other folders beside it.
    """
    if release is not None:
        release = str(release)
        if release not in RELEASES:
            raise ConfigError(f"release must be one of {', '.join(RELEASE_NAMES)}, got {release!r}")
    given = Path(root)
    _check_root(given)
    present = {
        name: {split: [top for top in tops if (given / top).is_dir()] for split, tops in splits.items()}
        for name, splits in RELEASES.items()
    }
    present = {name: {s: tops for s, tops in splits.items() if tops} for name, splits in present.items()}
    present = {name: splits for name, splits in present.items() if splits}
    found = sorted({top for splits in present.values() for tops in splits.values() for top in tops})
    if not found or found == [given.name]:  # nothing, or root is the outer folder of a nested split folder
        raise DataError(_no_release_message(given, found))
    if release is None:
        if len(present) > 1:
            shown = " and ".join(f"{name} ({_joined(splits)})" for name, splits in present.items())
            choices = " or ".join(f"--release {name}" for name in present)
            raise DataError(
                f"data root {given} holds {len(present)} QUBIQ releases: {shown}; choose one with {choices}, "
                f"or move the other's folders out of {given}"
            )
        (release,) = present
    elif release not in present:
        others = "; ".join(f"it holds the {name} release ({_joined(splits)})" for name, splits in present.items())
        raise DataError(
            f"--release {release}: data root {given} holds no QUBIQ {release} folder (expected "
            f"{', '.join(_expected(release, split) for split in SPLITS)}); {others}"
        )
    resolved = given.resolve()
    folders = {}
    for split, tops in present[release].items():
        if len(tops) > 1:
            raise DataError(
                f"data root {given} holds {len(tops)} copies of the QUBIQ {release} {split} folder: "
                f"{' and '.join(tops)}; move all but one out of {given}, so that it is clear which to use"
            )
        folders[split] = _unnest(resolved / tops[0], RELEASES[release][split])
    return Release(name=release, root=resolved, folders={s: folders[s] for s in SPLITS if s in folders})


def _check_root(root: Path) -> None:
    """Refuse a root that does not exist, is a file, cannot be read or is empty."""
    expected = f"the folder that holds the QUBIQ split folders ({_all_expected()})"
    if not root.exists():
        raise DataError(
            f"data root {root} does not exist; pass --data-root (or set QUBIQ_DATA) to {expected}, or use --demo"
        )
    if not root.is_dir():
        raise DataError(f"data root {root} is a file; --data-root must name {expected}")
    try:
        empty = not any(root.iterdir())
    except OSError as error:
        raise DataError(f"cannot read data root {root}: {error.strerror or error}") from error
    if empty:
        raise DataError(
            f"data root {root} is empty; expected {_all_expected()}, as distributed by QUBIQ (or use --demo)"
        )


def _no_release_message(root: Path, found: list[str]) -> str:
    """Why ``root`` holds no release: a hint to its parent when it is (inside) a split folder."""
    absolute = Path(os.path.abspath(root))
    split_names = {
        top: (name, split) for name, splits in RELEASES.items() for split, tops in splits.items() for top in tops
    }
    for folder in [absolute, *absolute.parents[:3]]:
        if folder.name in split_names:
            name, split = split_names[folder.name]
            parent = folder.parent
            if parent.name in RELEASES[name][split]:  # the inner copy of a nested split folder
                parent = parent.parent
            return (
                f"data root {root} holds no QUBIQ release folder and looks like a split folder, not the folder that "
                f"holds them: {folder} is named like the QUBIQ {name} {split} folder; pass --data-root {parent}"
            )
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    holds = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")
    return f"data root {root} holds no QUBIQ release folder (expected {_all_expected()}); it holds {holds}"


def _unnest(top: Path, names: tuple[str, ...]) -> Path:
    """``top/<name>`` when an unzip tool nested the split folder once in itself, else ``top``.

    Raises:
        DataError: the nested folder has other folders beside it: which level holds the data is a guess.
    """
    for name in (top.name, *names):
        inner = top / name
        if inner.is_dir():
            beside = sorted(
                p.name
                for p in top.iterdir()
                if p.is_dir() and p.name != name and not p.name.startswith(".") and p.name not in _HOUSEKEEPING
            )
            if beside:
                raise DataError(
                    f"{top} holds both a nested {name}/ (as some unzip tools leave it) and other folders "
                    f"({', '.join(beside)}); keep one level: move the contents of {inner} up, or the others away"
                )
            return inner
    return top


def _expected(release: str, split: str) -> str:
    """``training_data_v3_QC/ (or training_data_v3/)``: a split's folder names, preferred first."""
    first, *others = RELEASES[release][split]
    return f"{first}/" + "".join(f" (or {other}/)" for other in others)


def _all_expected() -> str:
    """Every release's folders, for a root that holds none of them."""
    parts = []
    for name in RELEASE_NAMES:
        *head, last = (_expected(name, split) for split in SPLITS)
        parts.append(f"{', '.join(head)} and {last} (QUBIQ {name})")
    return ", or ".join(parts)


def _joined(splits: dict[str, list[str]]) -> str:
    return ", ".join(top for tops in splits.values() for top in tops)


# --- which cases a dataset folder holds --------------------------------------------------------------------------


def dataset_folder(root: Path, dataset: str, split: str, *, release: str | None = None) -> Path:
    """``<root>/<split folder>/<dataset>``, e.g. ``root/training_data_v2/kidney`` (see :func:`find_release`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return find_release(root, release).dataset_folder(dataset, split)


def discover_cases(
    root: Path, dataset: str, split: str, *, release: str | None = None, problems: list[str] | None = None
) -> list[Case]:
    """All cases of one split, sorted by case id (naturally: ``case2`` before ``case10``).

    ``problems``: when given, a case folder with masks but no image is added to it (one line each) and left
    out of the cases, instead of raising, so that the data check lists it with every other problem
    (:func:`common.data.check.check_run_data`); a split with no case at all still raises.

    Raises:
        ConfigError: ``release`` is not a known release.
        DataError: see :func:`find_release`; the dataset folder is missing or holds no case; a folder cannot
            be read or is reached twice through links; two case folders name one case; a case folder has two
            images or two files of one mask; a broken link is named like an image or a mask; a folder has
            masks but no image (unless ``problems`` is given).

    Warns:
        DataWarning: an image or mask named in other letter case (used); a NIfTI file that is neither
            (not used); a broken link under another name; a link loop (not followed).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = find_release(root, release).dataset_folder(dataset, split)
    if not folder.is_dir():
        holds = ""
        if folder.parent.is_dir():
            names = sorted(p.name for p in folder.parent.iterdir() if p.is_dir())
            holds = f"; {folder.parent} holds {', '.join(names) if names else 'no folder'}"
        raise DataError(f"no {split} data for {dataset}: folder {folder} does not exist{holds}")
    return cases_in_folder(folder, split, problems)


def cases_in_folder(folder: Path, split: str, problems: list[str] | None = None) -> list[Case]:
    """Every case folder (a folder holding ``image.nii.gz``) under ``folder``, sorted by case id.

    The walk of :func:`discover_cases` once its dataset folder is known; also how ``python -m
    common.predict`` reads a split or dataset folder given as its input. Raises and warns as
    :func:`discover_cases` does.
    """
    cases: dict[str, Case] = {}
    orphans = []
    for path, files in _walk(folder):
        image, masks = _scan_folder(path, files)
        if image is None:
            if masks:
                orphans.append(path)
            continue
        key = case_key(path.name)
        if key in cases:
            raise DataError(f"case folders {cases[key].folder} and {path} name the same case ({key}); keep one of them")
        cases[key] = Case(
            case_id=path.name,
            split=split,
            folder=path,
            masks=masks,
            image=None if image.name == IMAGE_NAME else image,
        )
    if orphans and (problems is None or not cases):
        raise DataError(
            f"case folder {orphans[0]} has masks but no {IMAGE_NAME}"
            + (f" (and {len(orphans) - 1} more such folder(s))" if len(orphans) > 1 else "")
        )
    if problems is not None:
        problems.extend(f"case folder {path} has masks but no {IMAGE_NAME}" for path in orphans)
    if not cases:
        raise DataError(f"no case found in {folder}: expected case folders holding {IMAGE_NAME}")
    return sorted(cases.values(), key=lambda c: natural_key(c.case_id))


def _walk(top: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, sorted names of its non-folder entries)`` for every folder under ``top``, links followed.

    ``Path.rglob`` (Python 3.11) does not follow links to folders, so a case folder linked from another
    disk would be missed. Following links needs a guard: each physical folder, by ``(st_dev, st_ino)``,
    is read once. A link back to a folder above it (a loop) is not followed, with a warning; a folder
    reached again by another way would count its cases twice, and is refused.
    """

    def unreadable(error: OSError) -> None:  # os.walk skips folders it cannot list unless told otherwise
        raise DataError(f"cannot read folder {error.filename}: {error.strerror or error}") from error

    visited: dict[tuple[int, int], Path] = {}
    for dirpath, dirnames, filenames in os.walk(top, onerror=unreadable, followlinks=True):
        path = Path(dirpath)
        status = os.stat(path)
        identity = (status.st_dev, status.st_ino)
        if identity in visited:
            dirnames[:] = []
            first = visited[identity]
            if first in path.parents:
                warnings.warn(
                    f"{path} is {first} again, through a symbolic link (a loop); not followed",
                    DataWarning,
                    stacklevel=3,
                )
                continue
            raise DataError(
                f"folder {first} is reached twice, also as {path} (through a symbolic link): its cases would count "
                f"twice; remove one of the two ways to it"
            )
        visited[identity] = path
        dirnames.sort()
        yield path, sorted(filenames)


def _scan_folder(folder: Path, files: list[str]) -> tuple[Path | None, dict[tuple[int, int], Path]]:
    """The image (or None) and the masks by ``(task, expert)`` among ``files``, names compared ignoring case.

    Raises:
        DataError: two images, two files of one mask, a broken link named like either, or an entry named like
            either that is not a file.
    """
    images: list[Path] = []
    masks: dict[tuple[int, int], Path] = {}
    for name in files:
        path = folder / name
        match = _MASK_ANY_CASE.match(name)
        is_image = name.lower() == IMAGE_NAME
        if path.is_symlink() and not path.exists():
            target = os.readlink(path)
            if is_image or match:
                raise DataError(f"{path} is a broken symbolic link (to {target}): expected a NIfTI file there")
            warnings.warn(
                f"{path} is a broken symbolic link (to {target}); ignored (if it led to a case folder, that case is "
                f"missing)",
                DataWarning,
                stacklevel=3,
            )
            continue
        if not (is_image or match):
            if name.lower().endswith(_NIFTI_SUFFIXES):
                warnings.warn(
                    f"{path}: a NIfTI file that is neither {IMAGE_NAME} nor a mask taskTT_segEE.nii(.gz); not used",
                    DataWarning,
                    stacklevel=3,
                )
            continue
        if not path.is_file():
            raise DataError(f"{path} is not a regular file: expected a NIfTI file there")
        if is_image:
            images.append(path)
            if name != IMAGE_NAME:
                warnings.warn(
                    f"{path}: named in other letter case than {IMAGE_NAME}; used as the case's image",
                    DataWarning,
                    stacklevel=3,
                )
            continue
        task, expert = int(match.group(1)), int(match.group(2))
        if (task, expert) in masks:
            raise DataError(
                f"{masks[(task, expert)]} and {path} are both the mask of task {task}, expert {expert}; "
                f"keep one of them"
            )
        masks[(task, expert)] = path
        if not MASK_PATTERN.match(name):
            warnings.warn(
                f"{path}: named in other letter case than {mask_file_name(task, expert)}; used as the mask of "
                f"task {task}, expert {expert}",
                DataWarning,
                stacklevel=3,
            )
    if len(images) > 1:
        raise DataError(f"{folder} holds {len(images)} images: {' and '.join(p.name for p in images)}; keep one")
    return (images[0] if images else None), dict(sorted(masks.items()))


def natural_key(text: str) -> list:
    """Sort key that puts ``case2`` before ``case10`` (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_nifti(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The stored array (scaling applied) and the NIfTI object; a corrupt file names itself."""
    try:
        nifti = nib.load(str(path))
        array = np.asanyarray(nifti.dataobj)
    except Exception as error:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error ...)
        raise DataError(f"cannot read {path}: {error}") from error
    return array, nifti


def _layout(layout: CaseLayout | int) -> CaseLayout:
    """A layout, or the channels of a 2D image (the form callers used before volumes existed)."""
    from common.data.layout import Planar

    return Planar(layout) if isinstance(layout, int) else layout


def load_image(path: Path, layout: CaseLayout | int) -> tuple[np.ndarray, nib.Nifti1Image]:
    """An image in its layout's canonical form, float32, and its NIfTI object (affine and header).

    ``layout`` (:mod:`common.data.layout`; an int: the channels of a 2D image): a 2D image is
    ``(rows, cols, channels)``, from a 2D array, one with a trailing singleton axis (``640 x 640 x 1``)
    or channels last (``240 x 240 x 4``); a volume is ``(slices, rows, cols, 1)``, its slice axis moved
    first. A 2D image where a volume is expected, and the reverse, are refused naming the file.
    """
    array, nifti = read_nifti(path)
    array = _layout(layout).image(array, path)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: image has {int((~np.isfinite(array)).sum())} NaN or infinite voxels")
    return array, nifti


def load_mask(path: Path, layout: CaseLayout | int = 1) -> np.ndarray:
    """A mask as boolean ``(rows, cols)`` (a volume's: ``(slices, rows, cols)``): nonzero is foreground.

    A mask must hold two values at most, background 0 and one on-value: 0/1 is silent; another
    on-value (e.g. 0/255) is accepted with a warning naming the file; three or more values (a label map,
    a soft or resampled mask) are refused, since no threshold is obviously right for them.
    """
    return _read_mask(path, layout)[0]


def _read_mask(path: Path, layout: CaseLayout | int) -> tuple[np.ndarray, nib.Nifti1Image]:
    """:func:`load_mask`'s mask and the file's NIfTI object (its affine, for :func:`check_affine`)."""
    array, nifti = read_nifti(path)
    array = _layout(layout).mask(array, path)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{path}: mask has NaN or infinite voxels")
    values = np.unique(array)
    nonzero = values[values != 0]
    if len(nonzero) > 1:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise DataError(f"{path}: expected a binary mask (0 and one on-value), found {len(values)} values: {shown}")
    if len(nonzero) == 1 and nonzero[0] != 1:
        warnings.warn(
            f"{path}: mask on-value is {nonzero[0]:g}, not 1; treating every nonzero voxel as foreground",
            MaskValueWarning,
            stacklevel=3,
        )
    return array != 0, nifti


#: Affines of an image and its mask that differ by more than this (in mm, or in the direction cosines)
#: are reported: the files then disagree on where their voxels lie.
AFFINE_TOLERANCE = 1e-3


def check_affine(mask_path: Path, mask: nib.Nifti1Image, image_path: Path, image: nib.Nifti1Image) -> None:
    """Warn when a mask's affine differs from its image's (both NIfTI objects as read).

    Warned, not refused: cases are paired voxel by voxel (same shape, same index), which a header that
    another tool wrote differently does not change, and the maps are written with the image's affine;
    refusing would make a release unusable for a header quirk. The warning names both files, so that a
    mask really drawn on another grid is found.
    """
    affine = mask.affine
    if affine is None or image.affine is None:
        return
    difference = float(np.abs(np.asarray(affine) - np.asarray(image.affine)).max())
    if difference > AFFINE_TOLERANCE:
        warnings.warn(
            f"{mask_path}: its affine differs from its image's ({image_path}) by up to {difference:g}; the mask "
            "is paired with the image voxel by voxel, and maps are written with the image's affine",
            DataWarning,
            stacklevel=3,
        )


@dataclass
class LoadedCase:
    """A case's arrays for one task: the image and the masks of the experts who drew it."""

    case: Case
    image: np.ndarray  # float32, canonical (common.data.layout): (rows, cols, C) or (slices, rows, cols, 1)
    masks: dict[int, np.ndarray]  # expert -> bool (rows, cols) or (slices, rows, cols)
    nifti: nib.Nifti1Image
    #: A volume reduced to its training slices (:func:`common.data.volumes.keep_slices`): which slices of it
    #: ``image`` and ``masks`` hold, and the whole volume's intensity bounds; None for a whole case.
    slice_index: np.ndarray | None = None
    bounds: np.ndarray | None = None

    @property
    def case_id(self) -> str:
        return self.case.case_id

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid of a mask or map: ``(rows, cols)``, or a volume's ``(slices, rows, cols)``."""
        return self.image.shape[:-1]

    def mask_stack(self) -> np.ndarray:
        """Masks of all its experts as bool ``(n_experts, *shape)``."""
        return np.stack([self.masks[e] for e in sorted(self.masks)])


def mask_shape_problem(path: Path, shape: tuple, grid: tuple, image_path: Path) -> str:
    """The message for a mask whose canonical grid is not its image's."""
    return f"{path}: mask shape {_dims(shape)} differs from the image's {_dims(grid)} ({image_path})"


def _dims(shape: tuple) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def load_case(case: Case, spec: DatasetSpec, task: int, experts: list[int] | None = None) -> LoadedCase:
    """Read a case's image and the masks of ``task`` (only those of ``experts`` when given).

    A case may lack some experts' masks (one prostate case has 5 of 6); those are simply absent. A mask
    whose grid differs from the image's is refused (so are two raters' masks of different shapes, since
    each is compared with the image); one whose affine differs is warned of (:func:`check_affine`).
    """
    layout = layout_of(spec)
    image, nifti = load_image(case.image_path, layout)
    masks = {}
    for expert in case.experts_for(task):
        if experts is not None and expert not in experts:
            continue
        path = case.masks[(task, expert)]
        mask, mask_nifti = _read_mask(path, layout)
        if mask.shape != image.shape[:-1]:
            raise DataError(mask_shape_problem(path, mask.shape, image.shape[:-1], case.image_path))
        check_affine(path, mask_nifti, case.image_path, nifti)
        masks[expert] = mask
    return LoadedCase(case=case, image=image, masks=masks, nifti=nifti)
