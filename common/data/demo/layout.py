"""The QUBIQ folder and file layout the 2D demo writes, with the quirks of the distributed data.

(The folders and names on disk; a case's array layout, 2D image or volume, is :mod:`common.data.layout`.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.spec import SPLIT_FOLDERS, SPLITS, DatasetSpec

#: Datasets whose training cases sit directly under ``training_data_v2/<name>/`` (as distributed).
NO_TRAINING_LEVEL = frozenset({"kidney"})

#: Datasets whose images and masks carry a trailing singleton axis (rows, cols, 1).
SINGLETON_AXIS = frozenset({"prostate"})


def case_numbers(spec: DatasetSpec) -> dict[str, list[int]]:
    """Case numbers per split; they run on across the splits (training 1..n_train, then ...)."""
    numbers, start = {}, 1
    for split in SPLITS:
        n = {"train": spec.n_train, "validation": spec.n_validation, "test": spec.n_test}[split]
        numbers[split] = list(range(start, start + n))
        start += n
    return numbers


def case_folder_name(number: int) -> str:
    return f"case{number:02d}"


def dataset_folders(spec: DatasetSpec, root: Path) -> dict[str, Path]:
    """``<root>/<top>/<name>`` per split: the folders one dataset owns."""
    return {split: Path(root) / SPLIT_FOLDERS[split][0] / spec.name for split in SPLITS}


def split_folder(spec: DatasetSpec, root: Path, split: str) -> Path:
    """The folder holding a split's ``caseNN`` folders (kidney training: no ``Training/`` level)."""
    top, inner = SPLIT_FOLDERS[split]
    folder = Path(root) / top / spec.name
    if split == "train" and spec.name in NO_TRAINING_LEVEL:
        return folder
    return folder / inner


def mask_dtype(name: str, expert: int) -> type:
    """Masks are 0/1 but stored as float32 in some files and uint8 in others (as distributed)."""
    if name == "brain-growth":
        return np.float32
    if name == "kidney":
        return np.uint8
    return np.float32 if expert % 2 == 0 else np.uint8  # brain-tumor, prostate, others: alternate
