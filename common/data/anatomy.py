"""A brain-growth demo dataset drawn from a real MRI template, in the exact QUBIQ layout.

Where :mod:`common.data.demo` paints phantoms, this module starts from real anatomy: axial slices of
the MNI ICBM 152 non-linear symmetric 2009a template (skull-stripped T1 and its grey- and
white-matter probability maps), shipped as ``common/data/assets/mni152_slices.npz`` (derived once with
``tools/derive_mni152_slices.py``; licence and source in ``common/data/assets/MNI152_LICENSE.txt``).
Only numpy, scikit-image and nibabel are needed at run time, not nilearn.

Each case:

- takes one template slice (the slices are cycled in a seeded order, so neighbouring cases differ
  and every slice is used about equally often);
- moves the T1 and the tissue probability together by one seeded transform: a small rotation,
  scaling and shift, and a smooth elastic displacement of a few voxels, resampled onto the
  ``spec.image_shape`` grid (256 x 256 for brain-growth) with :func:`skimage.transform.warp`;
- adds a smooth bias field, a little texture and Rician (MRI magnitude) noise to the T1; the image
  is stored as float32, like brain-growth's.

The structure to segment is brain tissue: ``p = clip(GM + WM, 0, 1)``.  Expert ``e`` has its own
probability level ``p_e`` (spread over 0.3 .. 0.7, seeded, fixed for the whole dataset, so some
experts are consistently tighter or looser) and draws, in each case::

    mask_e = warp(p, smooth_e) >= p_e + wobble_e

where ``smooth_e`` is a small smooth displacement field (about a pixel) and ``wobble_e`` a smooth
level variation, both new for every case and expert; then tiny islands are removed and small
holes filled (:mod:`skimage.morphology`) so the masks look hand-drawn (the ventricles, large holes,
stay out).  The experts thus disagree where the tissue probability is graded, at the brain's
boundary, and the consensus takes values k/n there.  Masks are uint8 0/1; test cases get no masks,
as in QUBIQ.

``python -m common.data.anatomy --out demo_data/mni152-seed0 --seed 0`` generates it (once: see
:func:`ensure_anatomy_demo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import zlib
from functools import lru_cache
from pathlib import Path

if __name__ == "__main__":  # the command line: small matrix products; idle BLAS threads only spin
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.transform import warp

from common.data.cases import mask_file_name
from common.data.demo.generate import project_specs
from common.data.demo.layout import case_folder_name, case_numbers, dataset_folders, split_folder
from common.data.demo.once import MARKER_DIR, generate_into_place
from common.data.demo.shapes import smooth_field
from common.data.demo.writer import save_nifti
from common.spec import SPLITS, ConfigError, DatasetSpec

#: The derived template slices (see ``tools/derive_mni152_slices.py``) and their licence.
ASSET = Path(__file__).resolve().parent / "assets" / "mni152_slices.npz"
LICENSE = ASSET.with_name("MNI152_LICENSE.txt")

#: Bump when a change makes the generated data differ; a marker of another version is regenerated.
ANATOMY_VERSION = 1

#: What the marker calls this generator; its marker is ``<root>/.demo/<name>-mni152.json``, apart
#: from common.demo's ``<name>.json``, so neither generator ever replaces the other's folders.
GENERATOR = "common.data.anatomy"
MARKER_SUFFIX = "-mni152"

#: The experts' levels on the tissue probability, spread evenly over this range (then shuffled).
LEVEL_RANGE = (0.3, 0.7)
#: Fraction of the shorter image side the template's crop (brain plus margin) spans, on average.
FILL = 0.9

F32 = np.float32


# ----------------------------------------------------------------------------------------------
# The template slices
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TemplateSlices:
    """The derived MNI152 slices as float32 in 0..1: ``t1`` and ``tissue`` = clip(GM + WM, 0, 1)."""

    t1: np.ndarray  # (slices, rows, cols)
    tissue: np.ndarray  # (slices, rows, cols)
    z_mm: np.ndarray  # (slices,)
    spacing_mm: tuple[float, float]
    source: str
    sha256: str

    @property
    def n(self) -> int:
        return int(self.t1.shape[0])


@lru_cache(maxsize=4)
def load_template(path: Path = ASSET) -> TemplateSlices:
    """Read the derived slices (numpy only; the file is a few hundred kB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it ships with the repository; to rebuild it run "
            "tools/derive_mni152_slices.py with nilearn installed (see its docstring)"
        )
    data = path.read_bytes()
    with np.load(path, allow_pickle=False) as npz:
        missing = {"t1", "gm", "wm", "z_mm"} - set(npz.files)
        if missing:
            raise ValueError(f"{path}: arrays {', '.join(sorted(missing))} are missing")
        t1 = npz["t1"].astype(F32) / F32(255)
        tissue = np.minimum(npz["gm"].astype(F32) + npz["wm"].astype(F32), F32(255)) / F32(255)
        z_mm = npz["z_mm"].astype(F32)
        spacing = tuple(float(s) for s in npz["spacing_mm"]) if "spacing_mm" in npz.files else (1.0, 1.0)
        source = str(npz["source"]) if "source" in npz.files else ""
    if t1.ndim != 3 or t1.shape != tissue.shape or len(z_mm) != t1.shape[0]:
        raise ValueError(f"{path}: t1 {t1.shape}, gm + wm {tissue.shape} and z_mm {z_mm.shape} do not match")
    return TemplateSlices(t1, tissue, z_mm, spacing, source, hashlib.sha256(data).hexdigest())


# ----------------------------------------------------------------------------------------------
# Seeds and dataset-level draws
# ----------------------------------------------------------------------------------------------


def _rng(seed: int, name: str, *stream: int) -> np.random.Generator:
    key = zlib.crc32(f"mni152:{name}".encode())
    return np.random.default_rng([int(seed), key, *stream])


def check_spec(spec: DatasetSpec) -> None:
    """The anatomy demo draws one single-channel task (brain tissue); refuse anything else."""
    if spec.channels != 1 or spec.tasks != 1:
        raise ConfigError(
            f"the MNI152 anatomy demo draws a single-channel image with one task (brain tissue), as "
            f"brain-growth has; dataset {spec.name!r} has {spec.channels} channel(s) and {spec.tasks} task(s)"
        )


def expert_levels(spec: DatasetSpec, seed: int) -> np.ndarray:
    """Each expert's probability level (index e - 1), fixed for the dataset: lower draws larger masks."""
    rng = _rng(seed, spec.name, 0)
    n = spec.experts
    base = np.linspace(*LEVEL_RANGE, n) if n > 1 else np.array([np.mean(LEVEL_RANGE)])
    levels = rng.permutation(base) + rng.normal(0.0, 0.01, n)
    return np.clip(levels, 0.2, 0.8)


def slice_plan(spec: DatasetSpec, seed: int, n_slices: int) -> dict[int, int]:
    """The template slice of every case number: the slices in one seeded order after another."""
    rng = _rng(seed, spec.name, 1)
    numbers = [n for split in SPLITS for n in case_numbers(spec)[split]]
    order: list[int] = []
    while len(order) < len(numbers):
        order.extend(int(i) for i in rng.permutation(n_slices))
    return dict(zip(numbers, order, strict=False))


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class AnatomyCase:
    """One drawn case: the stored image, the experts' masks, and what it was drawn from."""

    image: np.ndarray  # float32 (rows, cols)
    masks: dict[int, np.ndarray]  # expert -> uint8 0/1 (rows, cols)
    tissue: np.ndarray  # float32 (rows, cols): the warped GM + WM probability (the experts' common truth)
    slice_index: int
    z_mm: float


def _grid(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(shape[0], dtype=F32), np.arange(shape[1], dtype=F32), indexing="ij")
    return np.stack([rows, cols])


def _case_coords(rng: np.random.Generator, tpl: TemplateSlices, shape: tuple[int, int]) -> np.ndarray:
    """Source (row, col) coordinates of every output pixel: similarity transform plus elastic field."""
    H, W = shape
    src_rows, src_cols = tpl.t1.shape[1:]
    sr, sc = tpl.spacing_mm
    extent_mm = max(src_rows * sr, src_cols * sc)
    px_per_mm = FILL * min(H, W) / extent_mm * math.exp(rng.normal(0.0, 0.04))
    aspect = math.exp(rng.normal(0.0, 0.03))  # rows vs columns: heads differ in shape
    angle = rng.normal(0.0, math.radians(5.0))
    shift = rng.normal(0.0, 0.015 * min(H, W), 2)
    out = _grid(shape)
    dy = out[0] - F32((H - 1) / 2 + shift[0])
    dx = out[1] - F32((W - 1) / 2 + shift[1])
    c, s = F32(math.cos(angle)), F32(math.sin(angle))
    # rotate back, then scale from output pixels to template pixels
    u = (c * dy + s * dx) / F32(px_per_mm * aspect * sr)
    v = (-s * dy + c * dx) / F32(px_per_mm / aspect * sc)
    coords = np.stack([u + F32((src_rows - 1) / 2), v + F32((src_cols - 1) / 2)])
    # elastic: a smooth displacement of about 2 template pixels (3 mm), a few bumps across the image
    amp = rng.uniform(1.2, 2.4)
    k = int(rng.integers(4, 7))
    coords[0] += F32(amp) * smooth_field(rng, shape, k)
    coords[1] += F32(amp) * smooth_field(rng, shape, k)
    return coords


def _finish_image(rng: np.random.Generator, t1: np.ndarray) -> np.ndarray:
    """A smooth bias field, faint texture and Rician noise (the magnitude of complex Gaussian noise)."""
    shape = t1.shape
    bias = F32(1.0) + F32(rng.uniform(0.05, 0.15)) * smooth_field(rng, shape, 3)
    texture = F32(1.0) + F32(0.03) * smooth_field(rng, shape, max(8, min(shape) // 6))
    img = t1 * bias * texture
    sigma = F32(rng.uniform(0.015, 0.04))
    real = img + sigma * rng.standard_normal(shape, dtype=F32)
    imag = sigma * rng.standard_normal(shape, dtype=F32)
    img = np.sqrt(real * real + imag * imag)
    return (np.round(img * F32(1024.0)) / F32(1024.0)).astype(F32)  # quantised float32: compresses well


def expert_mask(rng: np.random.Generator, tissue: np.ndarray, level: float) -> np.ndarray:
    """One expert's mask: a locally deformed copy of ``tissue`` at ``level`` (with a smooth wobble), cleaned."""
    shape = tissue.shape
    scale = min(shape) / 256.0
    coords = _grid(shape)
    amp = F32(rng.uniform(0.6, 1.4) * scale)
    k = int(rng.integers(5, 9))
    coords[0] += amp * smooth_field(rng, shape, k)
    coords[1] += amp * smooth_field(rng, shape, k)
    moved = warp(tissue, coords, order=1, mode="constant", cval=0.0, preserve_range=True)
    threshold = F32(level) + F32(0.03) * smooth_field(rng, shape, 4)
    mask = moved >= threshold
    area = shape[0] * shape[1]
    mask = remove_small_objects(mask, max_size=max(4, round(0.002 * area)))  # specks: nobody draws those
    mask = remove_small_holes(mask, max_size=max(4, round(0.0015 * area)))  # pinholes; ventricles stay out
    return mask.astype(np.uint8)


def draw_case(
    spec: DatasetSpec,
    seed: int,
    number: int,
    tpl: TemplateSlices | None = None,
    levels: np.ndarray | None = None,
    plan: dict[int, int] | None = None,
) -> AnatomyCase:
    """Draw case ``number`` (1-based, running across the splits): deterministic from ``(spec.name, seed)``.

    Test cases are drawn the same way; only their masks are not written.
    """
    check_spec(spec)
    tpl = load_template() if tpl is None else tpl
    levels = expert_levels(spec, seed) if levels is None else levels
    plan = slice_plan(spec, seed, tpl.n) if plan is None else plan
    if number not in plan:
        raise ValueError(f"case {number} is not a case of {spec.name} (1..{len(plan)})")
    index = plan[number]
    shape = tuple(int(s) for s in spec.image_shape)
    rng = _rng(seed, spec.name, 2, number)
    coords = _case_coords(rng, tpl, shape)
    t1 = warp(tpl.t1[index], coords, order=3, mode="constant", cval=0.0, preserve_range=True).astype(F32)
    tissue = warp(tpl.tissue[index], coords, order=3, mode="constant", cval=0.0, preserve_range=True).astype(F32)
    image = _finish_image(rng, t1)
    masks = {
        e: expert_mask(_rng(seed, spec.name, 3, number, e), tissue, float(levels[e - 1]))
        for e in range(1, spec.experts + 1)
    }
    return AnatomyCase(image, masks, tissue, index, float(tpl.z_mm[index]))


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------


def generate_anatomy_dataset(spec: DatasetSpec, root: Path, seed: int) -> Path:
    """Write the anatomy demo of ``spec`` under ``root`` in the QUBIQ layout; return its training folder.

    Deterministic from ``(spec.name, seed)`` and the template file.  Refuses (``FileExistsError``)
    to write into a dataset folder that already exists; :func:`ensure_anatomy_demo` is the safe
    entry point.
    """
    check_spec(spec)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(root)
    for folder in dataset_folders(spec, root).values():
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; generate_anatomy_dataset does not overwrite data")
    tpl = load_template()
    levels = expert_levels(spec, seed)
    plan = slice_plan(spec, seed, tpl.n)
    for split, numbers in case_numbers(spec).items():
        base = split_folder(spec, root, split)
        base.mkdir(parents=True, exist_ok=True)
        for number in numbers:
            case = draw_case(spec, seed, number, tpl, levels, plan)
            folder = base / case_folder_name(number)
            folder.mkdir()
            save_nifti(case.image, folder / "image.nii.gz")
            if split != "test":  # QUBIQ's test cases come without masks
                for e, mask in case.masks.items():
                    save_nifti(mask, folder / mask_file_name(1, e))
    return split_folder(spec, root, "train")


def anatomy_marker_path(spec: DatasetSpec, root: Path) -> Path:
    return Path(root) / MARKER_DIR / f"{spec.name}{MARKER_SUFFIX}.json"


def _identity(spec: DatasetSpec, seed: int) -> dict:
    info = {
        "name": spec.name,
        "seed": int(seed),
        "generator": GENERATOR,
        "generator_version": ANATOMY_VERSION,
        "template_sha256": load_template().sha256,
        "spec": spec.to_dict(),
    }
    return json.loads(json.dumps(info))  # as it reads back from the marker (tuples become lists)


def ensure_anatomy_demo(spec: DatasetSpec, root: Path, seed: int) -> Path:
    """Generate the anatomy demo of ``spec`` under ``root`` once; return ``root``.

    Nothing happens when ``root/.demo/<name>-mni152.json`` says this dataset, seed, spec, template
    file and generator version are complete.  Otherwise it is generated into a temporary folder
    inside ``root/.demo`` and renamed into place; the marker says complete only after that.  Folders
    that marker lists (an earlier generation with another seed, spec or version, or an interrupted
    one) are replaced; a dataset folder it does not list (data of your own, or common.demo's
    synthetic data) is never touched: ``FileExistsError``.  common.demo's lock file for the dataset
    serialises concurrent calls of both generators.
    """
    check_spec(spec)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(root)

    def details() -> dict:
        tpl = load_template()
        plan = slice_plan(spec, seed, tpl.n)
        return {
            "expert_levels": [round(float(v), 4) for v in expert_levels(spec, seed)],
            "case_z_mm": {case_folder_name(n): float(tpl.z_mm[i]) for n, i in plan.items()},
            "template": tpl.source,
        }

    return generate_into_place(
        spec,
        root,
        anatomy_marker_path(spec, root),
        _identity(spec, seed),
        lambda tmp: generate_anatomy_dataset(spec, tmp, seed),
        generator=GENERATOR,
        tmp_prefix=f"tmp{MARKER_SUFFIX}-{spec.name}-",
        hint=f" (e.g. demo_data/mni152-seed{int(seed)})",
        details=details,
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.data.anatomy",
        description="Generate (once per seed) the brain-growth demo dataset drawn from the MNI ICBM152 2009a "
        "template, in the QUBIQ layout.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="ROOT",
        help="output root (default: demo_data/mni152-seed<SEED>, where Brain_Growth.py --demo mni152 looks)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    spec = project_specs()["brain-growth"]
    out = Path("demo_data") / f"mni152-seed{args.seed}" if args.out is None else args.out
    t0 = time.perf_counter()
    try:
        ensure_anatomy_demo(spec, out, args.seed)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    print(f"{spec.name}: {split_folder(spec, out, 'train')} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
