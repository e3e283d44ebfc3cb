"""Generation: the dataset-level plan, one case, one dataset on disk, and generating them once.

:func:`ensure_demo_dataset` and :func:`ensure_demo_data` are the entry points: the command
(``python -m common.demo``) and the scripts' ``--demo`` call them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.data.cases import mask_file_name
from common.data.demo.designs import design_for
from common.data.demo.experts import expert_biases, expert_masks
from common.data.demo.layout import (
    SINGLETON_AXIS,
    case_folder_name,
    case_numbers,
    dataset_folders,
    mask_dtype,
    split_folder,
)
from common.data.demo.once import generate_into_place, marker_path
from common.data.demo.shapes import rng_for
from common.data.demo.writer import save_nifti, write_pipelined
from common.spec import SPLITS, DatasetSpec

#: Bump when a change makes the generated data differ; a marker of another version is regenerated.
GENERATOR_VERSION = 1


def _choose(rng: np.random.Generator, n: int, fraction: float, minimum: int) -> set[int]:
    k = min(n, max(minimum, round(fraction * n)))
    return set(int(i) for i in rng.choice(n, size=k, replace=False)) if k else set()


def case_plan(spec: DatasetSpec, seed: int) -> tuple[np.ndarray, dict[int, dict]]:
    """Dataset-level draws: expert biases and the per-case quirks (fixed order of draws)."""
    rng = rng_for(seed, spec.name, 0)
    z = expert_biases(spec, rng)
    numbers = case_numbers(spec)
    plan: dict[int, dict] = {}
    for split in SPLITS:
        for n in numbers[split]:
            plan[n] = {
                "split": split,
                "shape": tuple(spec.image_shape),
                "experts": list(range(1, spec.experts + 1)),
                "enhancing": True,
            }
    for split in SPLITS:
        cases = numbers[split]
        if spec.name == "brain-tumor" and spec.tasks >= 3:
            minimum = {"train": 2, "validation": 1, "test": 1}[split]
            for i in _choose(rng, len(cases), 0.25, minimum):
                plan[cases[i]]["enhancing"] = False
        if spec.name == "prostate":
            rows, cols = spec.image_shape
            for i in _choose(rng, len(cases), 0.2, 1):
                plan[cases[i]]["shape"] = (rows * 3 // 2, cols)
    if spec.name == "prostate" and spec.experts >= 2 and numbers["train"]:
        n = numbers["train"][int(rng.integers(len(numbers["train"])))]
        plan[n]["experts"] = plan[n]["experts"][:-1]  # its last expert's files are absent
    return z, plan


def generate_case(
    spec: DatasetSpec, seed: int, number: int, z: np.ndarray | None = None, plan: dict | None = None
) -> tuple[np.ndarray, dict[int, dict[int, np.ndarray]]]:
    """Draw one case: ``(image, {task: {expert: mask}})`` as stored (dtype, singleton axis).

    Test cases are drawn the same way; only their masks are not written.
    """
    if z is None or plan is None:
        z, full = case_plan(spec, seed)
        plan = full[number]
    design = design_for(spec)
    shape = plan["shape"]
    scale = min(shape) / design.nominal
    drawn = design.draw(rng_for(seed, spec.name, 1, number), spec, shape, plan)
    masks = expert_masks(drawn, design, plan["experts"], z, rng_for(seed, spec.name, 2, number), shape, scale)
    image = drawn.image
    stored = {}
    for t, per_expert in masks.items():
        stored[t] = {e: m.astype(mask_dtype(spec.name, e)) for e, m in per_expert.items()}
    if spec.name in SINGLETON_AXIS:
        image = image[..., None]
        stored = {t: {e: m[..., None] for e, m in pe.items()} for t, pe in stored.items()}
    return image, stored


def generate_dataset(spec: DatasetSpec, root: Path, seed: int) -> Path:
    """Write one synthetic dataset under ``root`` in the QUBIQ layout; return its training folder.

    Deterministic from ``(spec.name, seed)``.  Refuses (``FileExistsError``) to write into a
    dataset folder that already exists; :func:`ensure_demo_dataset` is the safe entry point.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(root)
    for folder in dataset_folders(spec, root).values():
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; generate_dataset does not overwrite data")
    z, plan = case_plan(spec, seed)

    def cases():
        for split, numbers in case_numbers(spec).items():
            base = split_folder(spec, root, split)
            base.mkdir(parents=True, exist_ok=True)
            for number in numbers:
                image, masks = generate_case(spec, seed, number, z, plan[number])
                folder = base / case_folder_name(number)
                folder.mkdir()
                saves = [(save_nifti, (image, folder / "image.nii.gz"))]
                if split != "test":
                    for t, per_expert in masks.items():
                        saves += [(save_nifti, (m, folder / mask_file_name(t, e))) for e, m in per_expert.items()]
                yield saves

    write_pipelined(cases())
    return split_folder(spec, root, "train")


def _identity(spec: DatasetSpec, seed: int) -> dict:
    info = {"name": spec.name, "seed": int(seed), "generator_version": GENERATOR_VERSION, "spec": spec.to_dict()}
    return json.loads(json.dumps(info))  # as it reads back from the marker (tuples become lists)


def ensure_demo_dataset(spec: DatasetSpec, root: Path, seed: int) -> Path:
    """Generate one demo dataset under ``root`` once; return ``root``.

    Nothing happens when ``root/.demo/<name>.json`` says this dataset, seed, spec and generator
    version are complete.  Otherwise the dataset is generated into a temporary folder inside
    ``root/.demo`` and its folders are renamed into place; the marker says complete only after
    that.  Folders the marker lists (an earlier generation with another seed, spec or version,
    or an interrupted one) are replaced; a dataset folder without a marker was not generated
    here and is never touched: ``FileExistsError``.  A lock file serialises concurrent calls.
    """
    return generate_into_place(
        spec,
        root,
        marker_path(spec, root),
        _identity(spec, seed),
        lambda tmp: generate_dataset(spec, tmp, seed),
        generator="common.demo",
        tmp_prefix=f"tmp-{spec.name}-",
    )


def project_specs() -> dict[str, DatasetSpec]:
    """The four 2D datasets' descriptions (:mod:`common.datasets`), by name: what this package draws.

    The registry also holds the 2021 release's volume sets (``spec.slice_axis`` set); their demo is
    :mod:`common.data.volume_demo`, in another layout, so they are left out here.
    """
    from common.datasets import DATASETS

    return {name: entry.spec for name, entry in DATASETS.items() if entry.spec.slice_axis is None}


def ensure_demo_data(root: Path, seed: int, extra: DatasetSpec | None = None) -> Path:
    """Generate (once) all four demo datasets under ``root``, plus ``extra`` if it is another dataset."""
    specs = project_specs()
    if extra is not None:
        specs[extra.name] = extra
    for spec in specs.values():
        ensure_demo_dataset(spec, root, seed)
    return Path(root)
