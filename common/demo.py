"""A synthetic stand-in for the QUBIQ data, written in the exact QUBIQ layout.

The real images cannot be redistributed, so the project draws its own: for every case a random
smooth "true" shape per task (a level-set function, positive inside, in pixel units), anatomy-like
context around it, an image with overlapping intensities, a smooth bias field, texture, noise and
partial-volume blur, and one binary mask per expert drawn from the same true shape with that
expert's consistent bias (tighter or looser, the same in every case) plus a smooth random boundary
deformation per case::

    mask_e = f(x) + b_e + amplitude * smooth_e(x) > 0

so the experts disagree at the boundary and the consensus has graded values k/n there.

The counts, shapes, tasks, experts and channels come from a :class:`~common.spec.DatasetSpec`
(the four top-level scripts' ``DATASET``); this module owns only how each dataset is *drawn*,
keyed by ``spec.name``, and the layout quirks of the distributed data:

- ``kidney``: CT in Hounsfield units (int16, about -1024..1051), needs a 0..255 HU window to
  see the kidney; its training cases sit directly under ``training_data_v2/kidney/`` (no
  ``Training/`` level).
- ``brain-tumor``: 4 MRI sequences in the last axis (FLAIR, T1, T1c, T2); 3 nested tasks; for
  about a quarter of the cases every expert's task-3 mask is empty.
- ``prostate``: images and masks carry a trailing singleton axis; about a fifth of the images
  are 960 x 640 (rows x columns); one training case has only 5 experts (no ``seg06`` files).
- ``brain-growth``: plain 2D float32 images, 7 experts.
- Mask dtypes vary between files (float32 0/1 and uint8 0/1); the on-value is always 1.

Generation is deterministic from ``(spec.name, seed)``.  ``python -m common.demo --out DIR``
generates the four datasets (once: see :func:`ensure_demo_dataset`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

if __name__ == "__main__":  # the command line: its matrix products are small, idle BLAS threads only
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # spin and steal the core the writer needs

import nibabel as nib
import numpy as np

from common.spec import SPLIT_FOLDERS, SPLITS, DatasetSpec

#: Bump when a change makes the generated data differ; a marker of another version is regenerated.
GENERATOR_VERSION = 1

#: Folder (inside the output root) holding one completion marker per dataset, and the temporary
#: folders generation writes into before moving the finished dataset into place.
MARKER_DIR = ".demo"

#: The top-level scripts whose ``DATASET`` the command line generates.

#: Datasets whose training cases sit directly under ``training_data_v2/<name>/`` (as distributed).
NO_TRAINING_LEVEL = frozenset({"kidney"})

#: Datasets whose images and masks carry a trailing singleton axis (rows, cols, 1).
SINGLETON_AXIS = frozenset({"prostate"})

F32 = np.float32


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------


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


def mask_file_name(task: int, expert: int) -> str:
    return f"task{task:02d}_seg{expert:02d}.nii.gz"


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


# ----------------------------------------------------------------------------------------------
# Random fields and shapes
# ----------------------------------------------------------------------------------------------


def _dataset_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _rng(seed: int, name: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _dataset_key(name), *stream])


@lru_cache(maxsize=512)
def _basis(n: int, k: int) -> np.ndarray:
    """(n, k) Gaussian bumps evenly spread over n pixels, rows of unit norm (unit-variance fields)."""
    step = n / k
    centres = (np.arange(k) + 0.5) * step
    x = np.arange(n)[:, None] + 0.5
    basis = np.exp(-0.5 * ((x - centres[None, :]) / step) ** 2)
    basis[basis < 1e-8] = 0.0  # no float32 denormals (they make the matrix products crawl)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    return basis.astype(F32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], k: int) -> np.ndarray:
    """A smooth random field of unit variance with about ``k`` bumps along the longer side.

    Equivalent to low-resolution white noise, Gaussian-smoothed and upsampled, but computed as
    ``By @ W @ Bx.T`` with separable Gaussian bases (a few matrix products, no resampling).
    """
    h, w = int(shape[0]), int(shape[1])
    longest = max(h, w)
    ky = max(2, round(k * h / longest))
    kx = max(2, round(k * w / longest))
    weights = rng.standard_normal((ky, kx), dtype=F32)
    return _basis(h, ky) @ weights @ _basis(w, kx).T


Window = tuple[slice, slice]


@dataclasses.dataclass
class Blob:
    """A smooth closed shape: an ellipse whose radius is perturbed by low-order Fourier terms.

    ``sdf`` is positive inside and measures the distance to the boundary along the ray from the
    centre, in pixels: a cheap stand-in for a signed distance function, so ``sdf - d > 0`` is the
    shape shrunk by about d pixels (layers, rims) and biases are in pixels.
    """

    cy: float
    cx: float
    ry: float  # half-axis along the (rotated) rows
    rx: float  # half-axis along the (rotated) columns
    angle: float = 0.0
    coef: tuple[tuple[float, float], ...] = ()  # (cos, sin) weights of harmonics 2, 3, ...

    @property
    def reach(self) -> float:
        return max(self.ry, self.rx) * (1.0 + sum(abs(a) + abs(b) for a, b in self.coef))

    def window(self, shape: tuple[int, int], margin: float = 0.0) -> Window:
        r = self.reach + margin
        y0, y1 = max(0, math.floor(self.cy - r)), min(shape[0], math.ceil(self.cy + r) + 1)
        x0, x1 = max(0, math.floor(self.cx - r)), min(shape[1], math.ceil(self.cx + r) + 1)
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def sdf(self, win: Window) -> np.ndarray:
        ys, xs = win
        y = np.arange(ys.start, ys.stop, dtype=F32)[:, None] - F32(self.cy)
        x = np.arange(xs.start, xs.stop, dtype=F32)[None, :] - F32(self.cx)
        c, s = F32(math.cos(self.angle)), F32(math.sin(self.angle))
        u = x * c + y * s  # along the columns' axis
        v = y * c - x * s  # along the rows' axis
        ua = u / F32(self.rx)
        vb = v / F32(self.ry)
        rho = np.sqrt(ua * ua + vb * vb)
        rho = np.maximum(rho, F32(1e-6), out=rho)
        radius = np.sqrt(u * u + v * v) / rho  # distance centre -> ellipse along this ray
        radius[rho < 1e-3] = min(self.rx, self.ry)
        outline = np.ones_like(rho)
        if self.coef:
            cos1, sin1 = ua / rho, vb / rho
            ck, sk = cos1, sin1
            for a, b in self.coef:  # harmonics 2, 3, ... by the angle-addition recurrence
                ck, sk = ck * cos1 - sk * sin1, sk * cos1 + ck * sin1
                outline += F32(a) * ck + F32(b) * sk
        return (outline - rho) * radius


def rand_blob(
    rng: np.random.Generator,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float | None = None,
    wobble: float = 0.05,
    harmonics: int = 3,
) -> Blob:
    """A :class:`Blob` with a random orientation (unless given) and random outline wobble."""
    if angle is None:
        angle = float(rng.uniform(-math.pi, math.pi))
    coef = tuple(
        (float(rng.normal(0, wobble / (k - 0.5))), float(rng.normal(0, wobble / (k - 0.5))))
        for k in range(2, 2 + harmonics)
    )
    return Blob(float(cy), float(cx), float(ry), float(rx), float(angle), coef)


FULL = (slice(None), slice(None))


def _full(shape: tuple[int, int]) -> Window:
    return slice(0, shape[0]), slice(0, shape[1])


class Canvas:
    """An image painted layer by layer with soft (partial-volume) memberships."""

    def __init__(self, shape: tuple[int, ...], fill: float | np.ndarray = 0.0):
        self.img = np.empty(shape, F32)
        self.img[...] = fill
        self.shape2d = tuple(shape[:2])

    def paint(self, f: np.ndarray, win: Window, value, width: float = 2.0, offset: float = 0.0) -> None:
        """Blend ``value`` (a scalar, a per-channel vector, or a full-size map) where ``f > offset``.

        The membership rises linearly over ``width`` pixels across the level ``f = offset``.
        """
        if f.size == 0:
            return
        m = (f - F32(offset)) * F32(1.0 / width)
        m += F32(0.5)
        np.clip(m, 0, 1, out=m)
        sub = self.img[win]
        if isinstance(value, np.ndarray) and value.shape[:2] == self.shape2d:
            value = value[win]
        if sub.ndim == 3:
            m = m[..., None]
        sub += m * (np.asarray(value, F32) - sub)

    def paint_blob(self, blob: Blob, value, width: float = 2.0, offset: float = 0.0) -> np.ndarray:
        win = blob.window(self.shape2d, width + 1)
        f = blob.sdf(win)
        self.paint(f, win, value, width, offset)
        return f


@dataclasses.dataclass
class Truth:
    """The true shape of one task in one case: a level-set window (positive inside)."""

    f: np.ndarray
    win: Window


@dataclasses.dataclass
class Drawn:
    """What a design draws for one case."""

    image: np.ndarray  # final dtype and shape (without the singleton axis)
    truths: list[Truth | None]  # per task; None: every expert's mask is empty
    difficulty: float  # 0 easy .. 1 hard; scales the experts' boundary deformation


@dataclasses.dataclass(frozen=True)
class Design:
    """How one dataset is drawn.

    ``draw(rng, spec, shape, case)`` returns a :class:`Drawn`; ``bias_px`` and ``deform_px`` are
    per task, in pixels at the nominal image size: the spread of the experts' consistent biases
    and the amplitude of their smooth per-case boundary deformation.
    """

    draw: Callable[..., Drawn]
    bias_px: tuple[float, ...]
    deform_px: tuple[float, ...]
    nominal: int  # the image side the pixel numbers refer to
    nested: bool = True  # task t+1 inside task t for every expert
    deform_k: int = 5  # bumps of the deformation field across the object's window


def _per_task(values: tuple[float, ...], task: int) -> float:
    return values[min(task, len(values)) - 1]


def _margin(design: Design, scale: float) -> float:
    return (max(design.bias_px) * 1.5 + max(design.deform_px) * 4.0) * scale + 4.0


def _truth(f: np.ndarray, win: Window) -> Truth:
    return Truth(f.astype(F32, copy=False), win)


def _difficulty(rng: np.random.Generator) -> float:
    return float(rng.beta(1.6, 1.6))


def _mri_finish(rng, canvas_img: np.ndarray, noise: float) -> np.ndarray:
    """Add Gaussian noise and fold at zero (MRI magnitude images are non-negative)."""
    img = canvas_img
    img += rng.standard_normal(img.shape, dtype=F32) * F32(noise)
    return np.abs(img, out=img)


# ----------------------------------------------------------------------------------------------
# brain-growth: neonatal T2 MRI; the brain inside CSF, skull and scalp
# ----------------------------------------------------------------------------------------------


def _draw_brain_growth(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 256.0
    d = _difficulty(rng)
    contrast = 1.0 - 0.65 * d
    c = Canvas(shape, 0.0)
    head = rand_blob(
        rng,
        H / 2 + rng.normal(0, 4 * s),
        W / 2 + rng.normal(0, 4 * s),
        rng.uniform(0.40, 0.45) * H,
        rng.uniform(0.33, 0.39) * W,
        angle=rng.normal(0, 0.08),
        wobble=0.025,
    )
    fh = head.sdf(_full(shape))
    scalp, skull = rng.uniform(4, 7) * s, rng.uniform(3, 5) * s
    csf_min = rng.uniform(1.0, 3.0) * s
    gm_t = rng.uniform(3, 6) * s
    # intensities (T2 of an unmyelinated brain: CSF brightest, white matter brighter than grey)
    gm, wm = 0.48, rng.uniform(0.58, 0.66)
    csf = gm + contrast * rng.uniform(0.35, 0.45)
    tex = smooth_field(rng, shape, max(8, int(48 * s))) * F32(0.035)
    c.paint(fh, FULL, 0.55 + tex, 1.5)  # scalp and fat
    c.paint(fh, FULL, 0.08, 1.5, offset=scalp)  # skull (dark)
    c.paint(fh, FULL, csf, 1.5, offset=scalp + skull)  # CSF
    inner = scalp + skull + csf_min
    brain = rand_blob(
        rng,
        head.cy + rng.normal(0, 2 * s),
        head.cx + rng.normal(0, 2 * s),
        head.ry - inner - rng.uniform(2, 9) * s,
        head.rx - inner - rng.uniform(2, 9) * s,
        angle=head.angle + rng.normal(0, 0.1),
        wobble=0.045,
        harmonics=4,
    )
    width = 1.5 + 2.0 * d  # harder cases: blurrier boundary
    bwin = brain.window(shape, _margin(DESIGNS["brain-growth"], s) + width)
    fb = np.minimum(brain.sdf(bwin), fh[bwin] - F32(inner))
    c.paint(fb, bwin, gm + tex[bwin], width)
    c.paint(fb, bwin, wm + tex[bwin], 3.0 * s, offset=gm_t)
    # interhemispheric fissure and two ventricles: CSF-bright but inside the brain
    top = brain.cy - brain.ry * 0.95
    fis = Blob(top + brain.ry * 0.25, brain.cx, brain.ry * 0.28, rng.uniform(1.2, 2.2) * s, brain.angle)
    c.paint_blob(fis, csf, 1.5)
    for side in (-1, 1):
        v = rand_blob(
            rng,
            brain.cy + rng.normal(0, 3 * s),
            brain.cx + side * rng.uniform(9, 15) * s,
            rng.uniform(14, 24) * s,
            rng.uniform(3, 6) * s,
            angle=side * rng.uniform(0.0, 0.3),
            wobble=0.08,
        )
        c.paint_blob(v, csf, 2.0)
    bias = 1.0 + 0.15 * smooth_field(rng, shape, 3)
    img = c.img * bias
    img = _mri_finish(rng, img, 0.025 + 0.02 * d)
    img = np.round(img * 1024.0) / F32(1024.0)  # quantised float32 (compresses well)
    return Drawn(img.astype(F32), [_truth(fb, bwin)], d)


# ----------------------------------------------------------------------------------------------
# brain-tumor: skull-stripped 4-sequence MRI with nested tumour regions
# ----------------------------------------------------------------------------------------------

#: Relative intensity per tissue for the sequences FLAIR, T1, T1c, T2.
_TUMOR_TISSUES = {
    "csf": (0.10, 0.18, 0.18, 0.95),
    "gm": (0.55, 0.50, 0.50, 0.52),
    "wm": (0.45, 0.70, 0.70, 0.36),
    "edema": (0.85, 0.48, 0.50, 0.78),
    "core": (0.68, 0.36, 0.45, 0.66),
    "enhancing": (0.72, 0.42, 0.98, 0.62),
    "necrosis": (0.55, 0.24, 0.20, 0.90),
}


def _draw_brain_tumor(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 240.0
    nseq = 4
    d = _difficulty(rng)
    contrast = 1.0 - 0.6 * d
    design = DESIGNS["brain-tumor"]
    tissue = {k: np.array(v, F32) for k, v in _TUMOR_TISSUES.items()}
    wmv = tissue["wm"]
    for k in ("edema", "core", "enhancing", "necrosis"):  # harder cases: the tumour stands out less
        tissue[k] = wmv + F32(contrast * rng.uniform(0.8, 1.15)) * (tissue[k] - wmv)
    c = Canvas((H, W, nseq), 0.0)
    brain = rand_blob(
        rng,
        H / 2 + rng.normal(0, 3 * s),
        W / 2 + rng.normal(0, 3 * s),
        rng.uniform(0.40, 0.45) * H,
        rng.uniform(0.31, 0.37) * W,
        angle=rng.normal(0, 0.08),
        wobble=0.03,
    )
    fbr = brain.sdf(_full(shape))
    tex = smooth_field(rng, shape, max(8, int(56 * s)))[..., None] * F32(0.04)
    c.paint(fbr, FULL, tissue["csf"], 1.5)
    c.paint(fbr, FULL, tissue["gm"] + tex, 2.0, offset=2.0 * s)
    c.paint(fbr, FULL, tissue["wm"] + tex, 3.0, offset=rng.uniform(6, 10) * s)
    for side in (-1, 1):
        v = rand_blob(
            rng,
            brain.cy + rng.normal(0, 4 * s),
            brain.cx + side * rng.uniform(8, 14) * s,
            rng.uniform(16, 28) * s,
            rng.uniform(4, 8) * s,
            angle=side * rng.uniform(0.0, 0.35),
            wobble=0.08,
        )
        c.paint_blob(v, tissue["csf"], 2.0)
    # tumour: whole (task 1) > core (task 2) > enhancing (task 3)
    r1 = rng.uniform(20, 38) * s
    t = rng.uniform(0, 2 * math.pi)
    rr = math.sqrt(rng.uniform(0.0, 1.0)) * 0.5
    whole = rand_blob(
        rng,
        brain.cy + rr * brain.ry * math.sin(t),
        brain.cx + rr * brain.rx * math.cos(t),
        r1 * rng.uniform(0.8, 1.2),
        r1 * rng.uniform(0.8, 1.2),
        wobble=0.08,
        harmonics=4,
    )
    width_edema = 2.5 + 3.0 * d
    margin = _margin(design, s) + width_edema
    win = whole.window(shape, margin)
    f1 = np.minimum(whole.sdf(win), fbr[win] - F32(4 * s))
    r2 = r1 * rng.uniform(0.4, 0.7)
    off = rng.uniform(0, 0.3) * r1
    t2 = rng.uniform(0, 2 * math.pi)
    core = rand_blob(
        rng,
        whole.cy + off * math.sin(t2),
        whole.cx + off * math.cos(t2),
        r2 * rng.uniform(0.8, 1.2),
        r2 * rng.uniform(0.8, 1.2),
        wobble=0.08,
        harmonics=3,
    )
    f2 = np.minimum(core.sdf(win), f1 - F32(2.5 * s))
    c.paint(f1, win, tissue["edema"] + tex[win], width_edema)
    c.paint(f2, win, tissue["core"] + tex[win], 2.0)
    truths: list[Truth | None] = [_truth(f1, win), _truth(f2, win), None]
    if case["enhancing"]:
        if r2 > 11 * s and rng.uniform() < 0.6:  # a rim of enhancement around necrosis
            rim = rng.uniform(5.0, 9.0) * s
            c.paint(f2, win, tissue["enhancing"], 1.5)
            c.paint(f2, win, tissue["necrosis"], 2.0, offset=rim)
            f3 = np.minimum(f2 - F32(0.5), F32(rim) - f2)
        else:  # a solid enhancing nodule
            r3 = r2 * rng.uniform(0.5, 0.8)
            enh = rand_blob(
                rng,
                core.cy + rng.normal(0, 0.15 * r2),
                core.cx + rng.normal(0, 0.15 * r2),
                r3,
                r3 * rng.uniform(0.75, 1.25),
                wobble=0.08,
            )
            f3 = np.minimum(enh.sdf(win), f2 - F32(1.5 * s))
            c.paint(f3, win, tissue["enhancing"], 1.5)
        truths[2] = _truth(f3, win)
    img = c.img
    for ch in range(nseq):  # every sequence: its own bias field, texture and noise
        own = 1.0 + 0.12 * smooth_field(rng, shape, 3) + 0.03 * smooth_field(rng, shape, max(8, int(64 * s)))
        img[..., ch] *= own
        img[..., ch] += rng.standard_normal(shape, dtype=F32) * F32(rng.uniform(0.025, 0.045) * (1 + 0.5 * d))
    brain_mask = np.clip(fbr * F32(0.7) + F32(0.5), 0, 1)  # skull-stripped: zero outside the brain
    img *= brain_mask[..., None]
    np.abs(img, out=img)
    scale = rng.uniform(500, 900, size=nseq).astype(F32)
    out = np.round(img * scale).astype(np.int16)
    if spec.channels != nseq:  # another channel count: repeat the sequences
        out = out[..., [i % nseq for i in range(spec.channels)]]
    return Drawn(out, truths[: spec.tasks] + [None] * max(0, spec.tasks - 3), d)


# ----------------------------------------------------------------------------------------------
# kidney: abdominal CT in Hounsfield units
# ----------------------------------------------------------------------------------------------


def _draw_kidney(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 497.0
    d = _difficulty(rng)
    design = DESIGNS["kidney"]
    fat, soft = -100.0 + rng.normal(0, 8), 40.0 + rng.normal(0, 5)
    c = Canvas(shape, -1000.0)
    body = rand_blob(
        rng,
        H * rng.uniform(0.48, 0.54),
        W / 2 + rng.normal(0, 4 * s),
        rng.uniform(0.28, 0.34) * H,
        rng.uniform(0.40, 0.455) * W,
        angle=rng.normal(0, 0.04),
        wobble=0.025,
    )
    fb = body.sdf(_full(shape))
    tex = smooth_field(rng, shape, max(8, int(64 * s))) * F32(8.0)
    # patient table under the body
    table_y = int(min(H - 3, body.cy + body.ry + rng.uniform(4, 10) * s))
    c.img[table_y : table_y + max(2, int(5 * s)), int(0.1 * W) : int(0.9 * W)] = 80.0
    subcut = rng.uniform(8, 28) * s
    wall = rng.uniform(6, 11) * s
    c.paint(fb, FULL, soft, 1.5)  # skin
    c.paint(fb, FULL, fat + tex, 1.5, offset=2 * s)  # subcutaneous fat
    c.paint(fb, FULL, 50.0 + tex, 1.5, offset=2 * s + subcut)  # abdominal wall muscle
    # abdominal cavity: visceral fat mixed with soft tissue (mesentery, bowel)
    mix = np.clip(smooth_field(rng, shape, max(6, int(22 * s))) * F32(2.5) + F32(0.2), 0, 1)
    cavity = fat + (35.0 - fat) * mix + tex
    c.paint(fb, FULL, cavity, 1.5, offset=2 * s + subcut + wall)
    # spine, paraspinal muscles, psoas, aorta and IVC
    rv = rng.uniform(17, 22) * s
    sy, sx = body.cy + body.ry - (subcut + wall + rv + rng.uniform(28, 40) * s), body.cx + rng.normal(0, 2 * s)
    for side in (-1, 1):
        c.paint_blob(rand_blob(rng, sy + rv + 22 * s, sx + side * 27 * s, 22 * s, 17 * s, 0.0, 0.05), 50.0 + tex, 1.5)
        c.paint_blob(
            rand_blob(
                rng,
                sy - 2 * s,
                sx + side * (rv + 12 * s),
                rng.uniform(11, 17) * s,
                rng.uniform(9, 13) * s,
                side * 0.3,
                0.05,
            ),
            45.0 + tex,
            1.5,
        )
    vert = rand_blob(rng, sy, sx, rv * rng.uniform(0.9, 1.0), rv, 0.0, 0.03)
    cortical = rng.uniform(850, 1000)
    c.paint_blob(vert, cortical, 1.2)
    c.paint_blob(vert, rng.uniform(180, 300) + tex * 3, 1.5, offset=3 * s)
    c.paint_blob(Blob(sy + rv + 22 * s, sx, 15 * s, 5 * s), cortical * 0.85, 1.2)  # spinous process
    c.paint_blob(Blob(sy + rv + 7 * s, sx, 7 * s, 8 * s), 20.0, 1.2)  # spinal canal
    phase = 1.0 - 0.45 * d  # late / poor contrast phase in harder cases
    aorta = rng.uniform(180, 280) * phase + 40 * (1 - phase)
    c.paint_blob(Blob(sy - rv - 11 * s, sx + 9 * s, 10 * s, 10 * s), aorta, 1.5)
    c.paint_blob(Blob(sy - rv - 10 * s, sx - 22 * s, 8 * s, 13 * s), aorta * 0.6, 1.5)
    # liver (image left) and spleen (image right, near the target kidney)
    c.paint_blob(
        rand_blob(
            rng,
            body.cy - rng.uniform(0.0, 0.25) * body.ry,
            body.cx - rng.uniform(0.45, 0.6) * body.rx,
            rng.uniform(0.45, 0.65) * body.ry,
            rng.uniform(0.3, 0.42) * body.rx,
            wobble=0.06,
        ),
        rng.uniform(55, 110) + tex,
        2.0,
    )
    # kidneys: the target is the patient's left kidney (image right)
    size = rng.uniform(0.65, 1.15) * s  # the slice cuts the kidney nearer a pole or its middle
    kry, krx = rng.uniform(30, 38) * size, rng.uniform(20, 26) * size
    ky = sy - rng.uniform(-0.2, 0.3) * kry
    kx_off = rv + rng.uniform(40, 62) * s
    tilt = rng.uniform(0.25, 0.8)
    if rng.uniform() < 0.65:
        c.paint_blob(
            rand_blob(
                rng,
                ky + rng.uniform(10, 30) * s,
                sx + kx_off + rng.uniform(25, 45) * s,
                rng.uniform(25, 40) * s,
                rng.uniform(18, 28) * s,
                wobble=0.06,
            ),
            rng.uniform(95, 130) * phase + 45 * (1 - phase) + tex,
            2.0,
        )
    enh = rng.uniform(165, 215) * phase + 40 * (1 - phase)
    medulla = enh - rng.uniform(15, 70) * phase
    width = 1.2 + 1.5 * d
    kidneys = []
    for side in (-1, 1):
        k = rand_blob(rng, ky + rng.normal(0, 4 * s), sx + side * kx_off, kry, krx, angle=side * tilt, wobble=0.04)
        # the hilum: renal sinus fat and vessels notch the kidney on its medial, anterior side
        hil_dir = math.atan2(-0.5, -side)  # towards the spine and a bit anterior
        hy, hx = k.cy + 0.9 * krx * math.sin(hil_dir), k.cx + 0.9 * krx * math.cos(hil_dir)
        sinus = Blob(hy, hx, krx * rng.uniform(0.35, 0.5), krx * rng.uniform(0.35, 0.5))
        win = k.window(shape, _margin(design, s) + width + 2)
        fk = np.minimum(k.sdf(win), -sinus.sdf(win))
        c.paint(fk, win, enh + tex[win], width)
        c.paint(fk, win, medulla + tex[win], 3.0 * s, offset=rng.uniform(5, 8) * s)
        ay, ax = sy - rv - 11 * s, sx + 9 * s  # renal vessels from the hilum to the aorta
        c.paint_blob(
            Blob(
                (hy + ay) / 2, (hx + ax) / 2, 3.5 * s, 0.5 * math.hypot(ay - hy, ax - hx), math.atan2(ay - hy, ax - hx)
            ),
            aorta * 0.9,
            1.5,
        )
        kidneys.append((k, fk, win))
    target_blob, fk, kwin = kidneys[1]
    # bowel loops, ribs
    for _ in range(int(rng.integers(5, 10))):
        for _try in range(8):
            by = body.cy + rng.uniform(-0.75, 0.25) * body.ry
            bx = body.cx + rng.uniform(-0.55, 0.7) * body.rx
            br = rng.uniform(8, 20) * s
            if math.hypot(by - target_blob.cy, bx - target_blob.cx) > target_blob.reach + br + 12 * s:
                break
        else:
            continue
        loop = rand_blob(rng, by, bx, br, br * rng.uniform(0.6, 1.0), wobble=0.08)
        content = rng.choice([-900.0, 15.0, rng.uniform(250, 450)], p=[0.4, 0.35, 0.25])
        c.paint_blob(loop, 40.0, 1.5)
        c.paint_blob(loop, content, 1.5, offset=2.5 * s)
    for _ in range(int(rng.integers(4, 9))):
        t = rng.uniform(-0.15 * math.pi, 1.15 * math.pi)  # the lower (posterior) and lateral wall
        depth = subcut + wall * 0.5 + rng.uniform(6, 14) * s
        ry_, rx_ = body.ry - depth, body.rx - depth
        rib = rand_blob(
            rng,
            body.cy + ry_ * math.sin(t),
            body.cx + rx_ * math.cos(t),
            rng.uniform(4, 7) * s,
            rng.uniform(5, 9) * s,
            wobble=0.05,
        )
        c.paint_blob(rib, rng.uniform(650, 950), 1.2)
    img = c.img
    img += rng.standard_normal(shape, dtype=F32) * F32(rng.uniform(8, 14) * (1 + 0.6 * d))
    np.clip(img, -1024, 1051, out=img)
    yy, xx = np.ogrid[:H, :W]
    fov = (yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2 > (0.5 * min(H, W) * rng.uniform(0.985, 1.0)) ** 2
    img[fov] = -1024
    return Drawn(np.round(img).astype(np.int16), [_truth(fk, kwin)], d)


# ----------------------------------------------------------------------------------------------
# prostate: axial T2 MRI of the pelvis; prostate (task 1) and transition zone (task 2)
# ----------------------------------------------------------------------------------------------


def _draw_prostate(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 640.0
    d = _difficulty(rng)
    contrast = 1.0 - 0.6 * d
    design = DESIGNS["prostate"]
    fatv = rng.uniform(0.62, 0.75)
    c = Canvas(shape, 0.02)
    body = rand_blob(
        rng,
        H / 2 + rng.normal(0, 8 * s),
        W / 2 + rng.normal(0, 5 * s),
        rng.uniform(0.30, 0.36) * W,
        rng.uniform(0.41, 0.47) * W,
        angle=rng.normal(0, 0.03),
        wobble=0.03,
    )
    fb = body.sdf(_full(shape))
    tex = smooth_field(rng, shape, max(8, int(80 * s))) * F32(0.05)
    c.paint(fb, FULL, fatv + tex, 2.0)  # subcutaneous fat
    mix = np.clip(smooth_field(rng, shape, max(6, int(18 * s))) * F32(2.0) + F32(0.3), 0, 1)
    c.paint(fb, FULL, 0.30 + (fatv - 0.30) * mix * F32(0.6) + tex, 2.5, offset=rng.uniform(18, 40) * s)
    # prostate geometry first: the context is placed around it
    pry, prx = rng.uniform(55, 80) * s, rng.uniform(70, 100) * s
    pcy, pcx = body.cy + rng.uniform(-0.05, 0.08) * body.ry, body.cx + rng.normal(0, 5 * s)
    # femoral heads / acetabula: dark cortex, bright marrow
    for side in (-1, 1):
        fem = rand_blob(
            rng,
            pcy + rng.normal(0, 15 * s),
            pcx + side * rng.uniform(0.55, 0.65) * body.rx,
            rng.uniform(40, 55) * s,
            rng.uniform(40, 55) * s,
            wobble=0.03,
        )
        c.paint_blob(fem, 0.08, 2.0)
        c.paint_blob(fem, 0.5 + tex, 2.5, offset=5 * s)
        obt = rand_blob(
            rng,
            pcy + rng.normal(0, 8 * s),
            pcx + side * (prx + rng.uniform(30, 50) * s),
            rng.uniform(55, 75) * s,
            rng.uniform(14, 22) * s,
            angle=side * rng.uniform(0, 0.25),
            wobble=0.05,
        )
        c.paint_blob(obt, 0.28 + tex, 2.5)
    # periprostatic fat and venous plexus around the gland
    peri = rand_blob(rng, pcy, pcx, pry + rng.uniform(14, 26) * s, prx + rng.uniform(16, 30) * s, 0.0, 0.05)
    c.paint_blob(peri, fatv * 0.95 + tex, 4.0)
    # rectum behind, pubic symphysis in front, bladder in front in some cases
    rr = rng.uniform(24, 36) * s
    rect = rand_blob(
        rng,
        pcy + pry + rr + rng.uniform(6, 16) * s,
        pcx + rng.normal(0, 5 * s),
        rr,
        rr * rng.uniform(1.0, 1.4),
        0.0,
        0.08,
    )
    c.paint_blob(rect, 0.22, 2.0)
    c.paint_blob(rect, rng.choice([0.04, 0.6]), 2.5, offset=rng.uniform(5, 9) * s)
    for side in (-1, 1):
        pub = rand_blob(
            rng,
            pcy - pry - rng.uniform(35, 55) * s,
            pcx + side * rng.uniform(18, 28) * s,
            rng.uniform(14, 20) * s,
            rng.uniform(20, 30) * s,
            angle=side * 0.4,
            wobble=0.05,
        )
        c.paint_blob(pub, 0.1, 2.0)
        c.paint_blob(pub, 0.45 + tex, 2.0, offset=4 * s)
    if rng.uniform() < 0.5:
        bl = rand_blob(
            rng, pcy - pry - rng.uniform(25, 60) * s, pcx, rng.uniform(30, 55) * s, rng.uniform(50, 90) * s, 0.0, 0.06
        )
        c.paint_blob(bl, 0.25, 2.0)
        c.paint_blob(bl, 0.95, 2.0, offset=3 * s)
    # the gland: capsule, peripheral zone, anterior stroma, transition zone with nodules
    gland = rand_blob(rng, pcy, pcx, pry, prx, angle=rng.normal(0, 0.1), wobble=0.06, harmonics=4)
    width = 2.5 + 3.0 * d
    win = gland.window(shape, _margin(design, s) + width)
    f1 = gland.sdf(win)
    pz = fatv + contrast * rng.uniform(-0.12, 0.05)
    capsule = fatv - contrast * rng.uniform(0.2, 0.45)
    c.paint(f1, win, capsule, width)
    c.paint(f1, win, pz + tex[win], width, offset=rng.uniform(1.5, 3.0) * s)
    stroma = Blob(pcy - pry * 0.85, pcx, pry * 0.35, prx * 0.55)
    c.paint(np.minimum(stroma.sdf(win), f1 - F32(2 * s)), win, capsule + 0.05, 3.0)
    tz = rand_blob(
        rng,
        pcy - rng.uniform(0.05, 0.25) * pry,
        pcx + rng.normal(0, 3 * s),
        pry * rng.uniform(0.55, 0.75),
        prx * rng.uniform(0.55, 0.75),
        angle=rng.normal(0, 0.1),
        wobble=0.07,
    )
    f2 = np.minimum(tz.sdf(win), f1 - F32(4 * s))
    tzv = pz - contrast * rng.uniform(0.15, 0.3)
    c.paint(f2, win, tzv + tex[win], width)
    for _ in range(int(rng.integers(2, 6))):
        nr = rng.uniform(8, 20) * s
        t = rng.uniform(0, 2 * math.pi)
        nod = rand_blob(rng, tz.cy + 0.5 * tz.ry * math.sin(t), tz.cx + 0.5 * tz.rx * math.cos(t), nr, nr, wobble=0.1)
        c.paint_blob(nod, tzv + contrast * rng.uniform(-0.15, 0.15), 3.0)
    c.paint_blob(Blob(tz.cy + 0.2 * tz.ry, tz.cx, 4 * s, 4 * s), rng.choice([0.15, 0.8]), 2.0)  # urethra
    # coil bias: smooth field and fall-off away from the centre
    yy = (np.arange(H, dtype=F32)[:, None] - F32(pcy)) / F32(0.6 * W)
    xx = (np.arange(W, dtype=F32)[None, :] - F32(pcx)) / F32(0.6 * W)
    bias = (1.0 + 0.18 * smooth_field(rng, shape, 3)) * (F32(1.15) - F32(0.3) * (yy * yy + xx * xx))
    img = _mri_finish(rng, c.img * bias, 0.025 + 0.025 * d)
    scale = rng.uniform(500, 900)
    return Drawn(np.round(img * F32(scale)).astype(np.int16), [_truth(f1, win), _truth(f2, win)], d)


# ----------------------------------------------------------------------------------------------
# any other dataset name: a generic MRI phantom with nested tasks
# ----------------------------------------------------------------------------------------------


def _draw_generic(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 256.0
    d = _difficulty(rng)
    c = Canvas(shape, 0.02)
    body = rand_blob(rng, H / 2, W / 2, 0.42 * H, 0.42 * W, wobble=0.03)
    c.paint_blob(body, 0.5 + smooth_field(rng, shape, 24) * F32(0.05), 2.0)
    r = min(H, W) * rng.uniform(0.12, 0.2)
    obj = rand_blob(rng, H / 2 + rng.normal(0, 0.05 * H), W / 2 + rng.normal(0, 0.05 * W), r, r * rng.uniform(0.7, 1.3))
    win = obj.window(shape, _margin(DESIGNS_GENERIC, s) + 4)
    truths, f = [], obj.sdf(win)
    for t in range(spec.tasks):
        c.paint(f, win, 0.5 + (0.35 - 0.25 * d) * (1 if t % 2 == 0 else -1), 2.5)
        truths.append(_truth(f, win))
        f = np.minimum(f, F32(0)) + f * F32(0.6) - F32(0.25 * r)  # a smaller region inside
    img = _mri_finish(rng, c.img, 0.04)
    img = np.round(img * F32(600)).astype(np.int16)
    if spec.channels > 1:
        img = np.repeat(img[..., None], spec.channels, axis=-1)
    return Drawn(img, truths, d)


DESIGNS: dict[str, Design] = {
    "brain-growth": Design(_draw_brain_growth, bias_px=(2.0,), deform_px=(1.3,), nominal=256),
    "brain-tumor": Design(_draw_brain_tumor, bias_px=(1.6, 1.3, 0.7), deform_px=(1.2, 1.0, 0.5), nominal=240),
    "kidney": Design(_draw_kidney, bias_px=(1.5,), deform_px=(1.0,), nominal=497),
    "prostate": Design(_draw_prostate, bias_px=(4.0, 3.5), deform_px=(3.0, 2.8), nominal=640),
}
DESIGNS_GENERIC = Design(_draw_generic, bias_px=(2.0,), deform_px=(1.5,), nominal=256)


def design_for(spec: DatasetSpec) -> Design:
    return DESIGNS.get(spec.name, DESIGNS_GENERIC)


# ----------------------------------------------------------------------------------------------
# Experts
# ----------------------------------------------------------------------------------------------


def expert_biases(spec: DatasetSpec, rng: np.random.Generator) -> np.ndarray:
    """Each expert's consistent tendency, about -1..1 (negative: draws tighter), for the whole dataset."""
    n = spec.experts
    z = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    z = rng.permutation(z) + rng.normal(0, 0.15, n)
    return np.clip(z, -1.2, 1.2)


def expert_masks(
    drawn: Drawn, design: Design, experts: list[int], z: np.ndarray, rng: np.random.Generator, shape, scale: float
) -> dict[int, dict[int, np.ndarray]]:
    """``{task: {expert: bool mask}}`` from the true shapes, the biases ``z`` and smooth deformations."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for t, truth in enumerate(drawn.truths, start=1):
        bias_px = _per_task(design.bias_px, t) * scale
        amp = _per_task(design.deform_px, t) * scale * (0.7 + 0.8 * drawn.difficulty)
        out[t] = {}
        for e in experts:
            mask = np.zeros(shape, bool)
            if truth is not None and truth.f.size:
                deform = smooth_field(rng, truth.f.shape, design.deform_k)
                mask[truth.win] = truth.f + F32(bias_px * z[e - 1]) + F32(amp) * deform > 0
            if design.nested and t > 1:
                mask &= out[t - 1][e]
            out[t][e] = mask
    return out


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def _choose(rng: np.random.Generator, n: int, fraction: float, minimum: int) -> set[int]:
    k = min(n, max(minimum, round(fraction * n)))
    return set(int(i) for i in rng.choice(n, size=k, replace=False)) if k else set()


def case_plan(spec: DatasetSpec, seed: int) -> tuple[np.ndarray, dict[int, dict]]:
    """Dataset-level draws: expert biases and the per-case quirks (fixed order of draws)."""
    rng = _rng(seed, spec.name, 0)
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


def nifti_bytes(arr: np.ndarray) -> bytes:
    """The uncompressed single-file NIfTI-1 of ``arr`` with the identity affine.

    Byte for byte what ``nib.Nifti1Image(arr, np.eye(4)).to_bytes()`` gives (a test checks it),
    but with the data written in one piece: nibabel writes row by row, which dominated the
    generation time.
    """
    img = nib.Nifti1Image(arr, np.eye(4))
    img.update_header()
    header = img.header
    header.set_data_offset(352)  # 348-byte header + 4-byte extension flag
    header.set_slope_inter(1.0, 0.0)
    buf = io.BytesIO()
    header.write_to(buf)
    return buf.getvalue() + np.asarray(arr, header.get_data_dtype()).tobytes(order="F")


def save_nifti(arr: np.ndarray, path: Path) -> None:
    """Write ``arr`` as ``.nii.gz`` (identity affine); a fixed gzip header: same array, same file."""
    raw = nifti_bytes(arr)
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=1, mtime=0) as gz:
        gz.write(raw)


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
    drawn = design.draw(_rng(seed, spec.name, 1, number), spec, shape, plan)
    masks = expert_masks(drawn, design, plan["experts"], z, _rng(seed, spec.name, 2, number), shape, scale)
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


def write_pipelined(cases: Iterable[list[tuple[Callable, tuple]]]) -> None:
    """Run each case's saves (``(function, arguments)``) on one writer thread while the next case is drawn.

    ``cases`` is drawn lazily (a generator): compression (zlib releases the GIL) overlaps with drawing the
    next case, and at most two cases are held in memory. Both demo generators write through this.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        previous: list[Future] = []
        for saves in cases:
            current = [pool.submit(save, *arguments) for save, arguments in saves]
            for future in previous:
                future.result()
            previous = current
        for future in previous:
            future.result()


# ----------------------------------------------------------------------------------------------
# Generate once, safely
# ----------------------------------------------------------------------------------------------


def marker_path(spec: DatasetSpec, root: Path) -> Path:
    return Path(root) / MARKER_DIR / f"{spec.name}.json"


def _identity(spec: DatasetSpec, seed: int) -> dict:
    info = {"name": spec.name, "seed": int(seed), "generator_version": GENERATOR_VERSION, "spec": spec.to_dict()}
    return json.loads(json.dumps(info))  # as it reads back from the marker (tuples become lists)


def _read_marker(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"cannot read the demo marker {path} ({err}); remove it and the dataset folders "
            "it belongs to, or choose another output folder"
        ) from err
    return info if isinstance(info, dict) else None


def _write_json(path: Path, info: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=list))
    os.replace(tmp, path)


def _is_complete(info: dict | None, want: dict, targets: dict[str, Path]) -> bool:
    return (
        info is not None
        and bool(info.get("complete"))
        and all(info.get(k) == v for k, v in want.items())
        and all(p.is_dir() for p in targets.values())
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (POSIX); two processes never generate one dataset."""
    with open(lock_path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def generate_into_place(
    spec: DatasetSpec,
    root: Path,
    marker: Path,
    want: dict,
    generate: Callable[[Path], object],
    *,
    generator: str,
    tmp_prefix: str,
    hint: str = "",
    details: Callable[[], dict] | None = None,
    targets: dict[str, Path] | None = None,
    counts: dict[str, int] | None = None,
) -> Path:
    """The generate-once mechanism of every demo generator (this module, ``common.data.anatomy`` and
    ``common.data.volume_demo``).

    ``marker`` records ``want`` (what identifies the generation) and the folders it claims; nothing
    happens when it says complete for ``want``. Otherwise ``generate(tmp)`` writes the dataset into a
    temporary folder inside the marker's folder, laid out as under ``root``, its folders are renamed
    into place, and the marker says complete (plus ``details()``) only after that. Folders the marker
    lists are replaced; a folder it does not list was not generated here and is never touched:
    ``FileExistsError`` naming ``generator`` (and ``hint``). The dataset's lock file serialises
    concurrent calls of every generator.

    ``targets`` (split -> folder under ``root``) and ``counts`` (split -> cases, for the marker) default
    to the 2020 layout (:func:`dataset_folders`) and :func:`case_numbers`; a generator of another
    layout (the 2021 release's) passes its own.
    """
    root = Path(root)
    if targets is None:
        targets = dataset_folders(spec, root)
    if _is_complete(_read_marker(marker), want, targets):
        return root
    rels = [folder.relative_to(root).as_posix() for folder in targets.values()]
    marker.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(marker_path(spec, root).with_suffix(".lock")):
        info = _read_marker(marker)
        if _is_complete(info, want, targets):  # another process finished it meanwhile
            return root
        ours = set(info.get("folders", [])) if info is not None else set()
        for folder, rel in zip(targets.values(), rels, strict=True):
            if folder.exists() and rel not in ours:
                raise FileExistsError(
                    f"{folder} exists but was not generated by {generator} (no marker {marker} lists it); "
                    f"refusing to overwrite it: move it away or choose another output folder{hint}"
                )
        # from here on the marker claims the folders (so an interruption is recognised later)
        _write_json(marker, {**want, "complete": False, "folders": rels})
        for rel in sorted(ours | set(rels)):  # our own earlier output
            path = root / rel
            if path.is_dir() and path.resolve().is_relative_to(root.resolve()):
                shutil.rmtree(path)
        for stale in marker.parent.glob(f"{tmp_prefix}*"):  # left by an interrupted generation
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=marker.parent))
        try:
            t0 = time.perf_counter()
            generate(tmp)
            for folder, rel in zip(targets.values(), rels, strict=True):
                folder.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp / rel, folder)
            if counts is None:
                counts = {split: len(numbers) for split, numbers in case_numbers(spec).items()}
            _write_json(
                marker,
                {
                    **want,
                    "complete": True,
                    "folders": rels,
                    "counts": dict(counts),
                    **(details() if details is not None else {}),
                    "seconds": round(time.perf_counter() - t0, 2),
                },
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def project_specs() -> dict[str, DatasetSpec]:
    """The four 2D datasets' descriptions (:mod:`common.datasets`), by name: what this module draws.

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.demo",
        description="Generate the synthetic QUBIQ demo datasets in the QUBIQ layout (once per seed).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="ROOT",
        help="output root (default: demo_data/seed<SEED>, where the 2D scripts' --demo looks)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: %(default)s)")
    parser.add_argument(
        "--datasets",
        default="",
        metavar="NAMES",
        help=f"comma-separated dataset names among {', '.join(project_specs())} (default: all of them)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.out is None:
        args.out = Path("demo_data") / f"seed{args.seed}"
    specs = project_specs()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(specs)}")
    for name in names:
        t0 = time.perf_counter()
        ensure_demo_dataset(specs[name], args.out, args.seed)
        print(f"{name}: {split_folder(specs[name], args.out, 'train')} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
