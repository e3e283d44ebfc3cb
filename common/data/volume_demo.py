"""A synthetic stand-in for the 2021 release's two 3D CT sets (pancreas, pancreatic lesion), in its layout.

The real volumes cannot be redistributed, so the CPU demo (``Pancreas.py --demo``,
``Pancreatic_Lesion.py --demo``) draws its own, the way :mod:`common.data.demo` draws the 2D sets: a random
smooth "true" shape (a level-set function, positive inside, in pixel units) with abdominal context
around it, and one binary mask per rater drawn from that shape with the rater's consistent bias (one
a bit tighter, one looser, the same in every volume) plus a smooth random boundary deformation per
volume::

    mask_e = f(z, y, x) + b_e + amplitude * smooth_e(z, y, x) > 0

so the two raters disagree at the boundary and the consensus takes the values 0, 0.5 and 1 there.

What is the release's, and what is the demo's own:

- Layout (the release's): training volumes directly in ``training_data_v3_QC/<name>/case<N>-<M>/`` (no
  ``Training/`` level), validation in ``validation_data_qubiq2021_QC/<name>/Validation/``, test in
  ``QUBIQ21_test/<name>/Testing/`` (image only); files ``image.nii.gz``, ``task01_seg01.nii.gz``,
  ``task01_seg02.nii.gz``. Ids ``case<N>-<M>``: N runs on across the splits; about a quarter of the
  N hold two volumes (M = 1, 2), drawn independently (what ``-M`` means in the release is not known).
- Arrays (the release's): nibabel shape (D, 512, 512), the slice axis FIRST; image int16 Hounsfield
  units with a frame of -2048 (below -1500, as scanners store it) outside the circular field of view;
  masks uint8 0/1; spacing (1, 1, 1) with a translated origin, the same affine for image and masks.
- Depth (the demo's): D from 10 to 20 slices, where the real volumes have 36 to 194 (median 53): small,
  so the demo trains on a CPU.
- Counts: training = ``spec.n_train`` (40 pancreas, 22 lesion: the release's). The release does not
  publish how its other 28 volumes split into validation and test, so the demo chooses its own
  (:data:`DESIGNS`: pancreas 6 and 4, lesion 4 and 3); :func:`ensure_volume_demo` takes smaller counts.
- The structure: pancreas: an elongated, gently curved gland across the middle of the body (head on
  the image left, tail higher up), in-plane about 150 x 45 px (larger than a real one, so it survives the
  CPU demo's resampling of 512 px to 128 px), spanning roughly 40-70 % of the slices, enhanced to about
  100-130 HU among fat (about -100), soft tissue (about 40), liver, spleen, kidneys, vessels, stomach,
  bowel and bone (about 700). Lesion set: the same gland as context plus one hypodense (10-30 HU), roughly
  ellipsoidal lesion inside it (in-plane radius 25-45 px, 3-8 slices); the target is the lesion only.
  As in the release, in about 20 % of the lesion set's training volumes (at least 2) rater 2 marked
  nothing: its mask file exists and is all zeros. No volume is empty for both raters.

Generation is deterministic from ``(spec.name, seed)`` and the counts (same seed, same bytes) and
vectorised: smooth fields are drawn as a few separable matrix products (low-resolution noise,
Gaussian-upsampled), shapes are evaluated only in their bounding windows, and compression overlaps
drawing. Measured with
``python -m common.data.volume_demo --out DIR`` on 2 cores (AMD EPYC): the whole pancreas demo
(40 + 6 + 4 volumes) in 13-17 s, the lesion demo (22 + 4 + 3) in about 7 s; both sets 20-25 s wall,
about 29 s of CPU, about 285 MB on disk (noisy 512 x 512 int16 slices compress to about half).

``python -m common.data.volume_demo --out DIR --seed S --datasets pancreas,pancreatic-lesion`` generates
them (once: see :func:`ensure_volume_demo`; default ``--out``: ``demo_data/2021-seed<S>``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

if __name__ == "__main__":  # the command line: small matrix products; idle BLAS threads only spin
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # and steal the core the compressing thread needs

import numpy as np

from common.data.cases import mask_file_name
from common.data.demo.experts import expert_biases
from common.data.demo.once import MARKER_DIR, generate_into_place
from common.data.demo.shapes import bump_basis, rng_for
from common.data.demo.writer import save_nifti, write_pipelined
from common.spec import RELEASES, SPLIT_LEVELS, SPLITS, ConfigError, DatasetSpec

#: Bump when a change makes the generated data differ; a marker of another version is regenerated.
VOLUME_DEMO_VERSION = 1

#: What the marker calls this generator; its marker is ``<root>/.demo/<name>-2021.json``, apart from
#: common.demo's ``<name>.json``, so neither generator ever replaces the other's folders.
GENERATOR = "common.data.volume_demo"
MARKER_SUFFIX = "-2021"

#: The release whose layout this module writes (its preferred, ``_QC``, folder names).
RELEASE = "2021"

#: The in-plane size the pixel numbers below refer to; another ``spec.image_shape`` scales them.
NOMINAL = 512

#: The value stored outside the scanner's circular field of view (the release: below -1500 HU).
FRAME_HU = -2048

#: The rater who, in some of the lesion set's training volumes, marked nothing (as in the release).
EMPTY_RATER = 2

F32 = np.float32


@dataclasses.dataclass(frozen=True)
class VolumeDesign:
    """How one 3D set is drawn, and the demo's validation and test counts (the release publishes none).

    ``bias_px`` is the spread of the raters' consistent biases and ``deform_px`` the amplitude of their
    smooth per-volume boundary deformation, in pixels at :data:`NOMINAL`; ``empty_fraction`` (at least
    ``empty_min``) of the training volumes have an empty mask from :data:`EMPTY_RATER`.
    """

    target: str  # "pancreas" or "lesion"
    n_validation: int
    n_test: int
    bias_px: float
    deform_px: float
    depth: tuple[int, int] = (10, 20)  # slices per volume, inclusive
    empty_fraction: float = 0.0
    empty_min: int = 0


#: The designs, and with them the demo's counts (training: ``spec.n_train``).
DESIGNS: dict[str, VolumeDesign] = {
    "pancreas": VolumeDesign("pancreas", n_validation=6, n_test=4, bias_px=3.0, deform_px=2.0),
    "pancreatic-lesion": VolumeDesign(
        "lesion", n_validation=4, n_test=3, bias_px=2.5, deform_px=1.8, empty_fraction=0.2, empty_min=2
    ),
}


def check_volume_spec(spec: DatasetSpec) -> VolumeDesign:
    """The design for ``spec``, or a refusal naming it: only the volume sets this module knows how to draw."""
    if spec.slice_axis is None:
        raise ConfigError(
            f"dataset {spec.name!r} is a set of 2D images (slice_axis None): common.data.volume_demo draws "
            f"volumes only ({', '.join(DESIGNS)}); common.demo draws the 2D sets"
        )
    if spec.name not in DESIGNS:
        raise ConfigError(f"dataset {spec.name!r}: common.data.volume_demo draws only {', '.join(DESIGNS)}")
    if spec.slice_axis != 0:
        raise ConfigError(f"dataset {spec.name!r}: the demo stores the slice axis first (0), not {spec.slice_axis}")
    if spec.tasks != 1:
        raise ConfigError(f"dataset {spec.name!r}: the volume demo draws one task, not {spec.tasks}")
    return DESIGNS[spec.name]


def demo_counts(spec: DatasetSpec, counts: Mapping[str, int] | None = None) -> dict[str, int]:
    """Volumes per split: ``spec``'s counts where known, else the design's; ``counts`` overrides any split."""
    design = check_volume_spec(spec)
    out = {
        "train": spec.n_train,
        "validation": design.n_validation if spec.n_validation is None else spec.n_validation,
        "test": design.n_test if spec.n_test is None else spec.n_test,
    }
    for split, n in dict(counts or {}).items():
        if split not in out:
            raise ConfigError(f"counts: unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if not isinstance(n, int) or n < (1 if split == "train" else 0):
            raise ConfigError(f"counts[{split!r}] must be a whole number >= {1 if split == 'train' else 0}, got {n!r}")
        out[split] = n
    return out


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------


def volume_folders(spec: DatasetSpec, root: Path) -> dict[str, Path]:
    """``<root>/<top>/<name>`` per split in the 2021 layout: the folders one dataset owns."""
    return {split: Path(root) / RELEASES[RELEASE][split][0] / spec.name for split in SPLITS}


def volume_split_folder(spec: DatasetSpec, root: Path, split: str) -> Path:
    """The folder holding a split's case folders: training has no ``Training/`` level (as released)."""
    folder = volume_folders(spec, root)[split]
    return folder if split == "train" else folder / SPLIT_LEVELS[split]


def case_id(n: int, m: int) -> str:
    return f"case{n}-{m}"


@dataclasses.dataclass(frozen=True)
class VolumePlan:
    """Dataset-level draws: the volumes ``(N, M)`` per split, the raters' biases, the empty-rater volumes."""

    cases: dict[str, list[tuple[int, int]]]
    biases: np.ndarray  # per rater, about -1 (tighter) .. 1 (looser)
    empty: frozenset[tuple[int, int]]  # volumes whose EMPTY_RATER mask is all zeros

    def ids(self, split: str) -> list[str]:
        return [case_id(n, m) for n, m in self.cases[split]]


def volume_plan(spec: DatasetSpec, seed: int, counts: Mapping[str, int]) -> VolumePlan:
    """Number the volumes and draw the dataset-level quirks (in a fixed order of draws).

    A split of V volumes has ``round(V / 5)`` N with two volumes (at least one when V >= 2), so about a
    quarter of its N hold two; N runs on across the splits.
    """
    design = check_volume_spec(spec)
    rng = rng_for(seed, spec.name, 0)
    biases = expert_biases(spec, rng)
    cases: dict[str, list[tuple[int, int]]] = {}
    n = 1
    for split in SPLITS:
        volumes = int(counts[split])
        pairs = max(1 if volumes >= 2 else 0, round(volumes / 5))
        two = {int(i) for i in rng.choice(volumes - pairs, size=pairs, replace=False)} if pairs else set()
        cases[split] = []
        for i in range(volumes - pairs):
            cases[split] += [(n, m) for m in ((1, 2) if i in two else (1,))]
            n += 1
    train = cases["train"]
    k = 0
    if design.empty_fraction and spec.experts >= EMPTY_RATER:
        k = min(len(train), max(design.empty_min, round(design.empty_fraction * len(train))))
    empty = frozenset(train[int(i)] for i in rng.choice(len(train), size=k, replace=False)) if k else frozenset()
    return VolumePlan(cases, biases, empty)


# ----------------------------------------------------------------------------------------------
# Fields and shapes in 3D: (z, y, x) = (slice, row, column)
# ----------------------------------------------------------------------------------------------

Win3 = tuple[slice, slice, slice]


def smooth_field3(rng: np.random.Generator, shape: tuple[int, int, int], k: int, kz: int) -> np.ndarray:
    """A smooth random field of unit variance: about ``k`` bumps along the longer in-plane side, ``kz`` along
    the slices. Low-resolution white noise, Gaussian-upsampled, as separable matrix products (no resampling).
    """
    d, h, w = (int(v) for v in shape)
    longest = max(h, w)
    ky, kx = max(2, round(k * h / longest)), max(2, round(k * w / longest))
    weights = rng.standard_normal((max(1, kz), ky, kx), dtype=F32)
    field = bump_basis(h, ky) @ (weights @ bump_basis(w, kx).T)  # (kz, h, w)
    return np.tensordot(bump_basis(d, max(1, kz)), field, axes=1)


def _axes(win: Win3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of a window, shaped to broadcast: (z, 1, 1), (1, y, 1), (1, 1, x)."""
    z, y, x = (np.arange(s.start, s.stop, dtype=F32) for s in win)
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _window(shape, z: tuple[float, float], y: tuple[float, float], x: tuple[float, float]) -> Win3:
    """The window covering the given (low, high) ranges, clipped to the volume (possibly empty)."""
    out = []
    for n, (lo, hi) in zip(shape, (z, y, x), strict=True):
        a, b = max(0, math.floor(lo)), min(int(n), math.ceil(hi) + 1)
        out.append(slice(a, max(a, b)))
    return tuple(out)


def _union(a: Win3, b: Win3) -> Win3:
    return tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(a, b, strict=True))


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
    """An elliptic cross-section (rotated by ``angle`` in-plane) whose centre drifts by (dy, dx) per slice.

    ``rz`` None: a cylinder through every slice; else an ellipsoid spanning ``cz +- rz`` slices. ``sdf`` is
    positive inside and about the in-plane distance to the boundary in pixels (along the ray from the
    centre, as common.data.demo's ``Blob``), so biases, rims and walls are in pixels.
    """

    cz: float
    cy: float
    cx: float
    ry: float
    rx: float
    rz: float | None = None
    angle: float = 0.0
    dy: float = 0.0
    dx: float = 0.0

    def window(self, shape, margin: float = 0.0) -> Win3:
        depth = shape[0]
        z = (0, depth) if self.rz is None else (self.cz - self.rz - 1, self.cz + self.rz + 1)
        dz = max(abs(z[0] - self.cz), abs(z[1] - self.cz))
        r = max(self.ry, self.rx) + margin + max(abs(self.dy), abs(self.dx)) * dz
        return _window(shape, z, (self.cy - r, self.cy + r), (self.cx - r, self.cx + r))

    def sdf(self, win: Win3) -> np.ndarray:
        z, y, x = _axes(win)
        dz = z - F32(self.cz)
        if self.rz is None and not (self.dy or self.dx):
            dz = dz[:1] * 0  # the same in every slice: one slice, broadcast by the painter
        y = y - (F32(self.cy) + F32(self.dy) * dz)
        x = x - (F32(self.cx) + F32(self.dx) * dz)
        c, s = F32(math.cos(self.angle)), F32(math.sin(self.angle))
        u, v = x * c + y * s, y * c - x * s
        ua, vb = u / F32(self.rx), v / F32(self.ry)
        q = ua * ua + vb * vb
        radius = np.sqrt((u * u + v * v) / np.maximum(q, F32(1e-6)))  # centre -> in-plane ellipse, this ray
        np.maximum(radius, F32(min(self.rx, self.ry)), out=radius, where=q < 1e-6)
        if self.rz is not None:
            q = q + (dz / F32(self.rz)) ** 2
        return (F32(1) - np.sqrt(q)) * radius


@dataclasses.dataclass(frozen=True)
class Band:
    """An elongated, gently curved gland lying across the body.

    Along its length ``t = (x - cx) / half_length`` (-1: the head, image left; 1: the tail) the centreline
    runs at ``yc = cy + bend t^2 + tilt t`` (it arches forward over the spine), the half-thickness is
    ``h = h0 (1 - taper t)`` and the slice centre ``zc = cz + rise t`` (the tail lies higher). With
    ``g = 1 - t^4 - ((z - zc) / rz)^2`` the level set is ``h sign(g) sqrt|g| - |y - yc|``: the in-plane
    distance (in pixels) across the gland, rounded off at its ends and its top and bottom slices.
    """

    cz: float
    cy: float
    cx: float
    half_length: float
    h0: float
    bend: float
    tilt: float
    taper: float
    rise: float
    rz: float

    def window(self, shape, margin: float = 0.0) -> Win3:
        ys = [self.cy + self.bend * t * t + self.tilt * t for t in np.linspace(-1, 1, 21)]
        h = self.h0 * (1 + abs(self.taper)) + margin
        mz = 1 + 0.5 * self.rz
        z = (self.cz - abs(self.rise) - self.rz - mz, self.cz + abs(self.rise) + self.rz + mz)
        x = (self.cx - self.half_length - margin, self.cx + self.half_length + margin)
        return _window(shape, z, (min(ys) - h, max(ys) + h), x)

    def sdf(self, win: Win3) -> np.ndarray:
        z, y, x = _axes(win)
        t = (x - F32(self.cx)) / F32(self.half_length)
        yc = F32(self.cy) + F32(self.bend) * t * t + F32(self.tilt) * t
        h = F32(self.h0) * (F32(1) - F32(self.taper) * t)
        c = (z - (F32(self.cz) + F32(self.rise) * t)) / F32(self.rz)
        g = F32(1) - (t * t) ** 2 - c * c
        return h * (np.sign(g) * np.sqrt(np.abs(g))) - np.abs(y - yc)


class Canvas3:
    """A volume painted shape by shape with soft (partial-volume) memberships."""

    def __init__(self, shape: tuple[int, int, int], fill: float):
        self.img = np.full(shape, fill, F32)

    def paint(self, f: np.ndarray, win: Win3, value, width: float = 2.0, offset: float = 0.0) -> None:
        """Blend ``value`` (a scalar or a full-size field) where ``f > offset``, rising over ``width`` px."""
        if f.size == 0:
            return
        m = (f - F32(offset)) * F32(1.0 / width) + F32(0.5)
        np.clip(m, 0, 1, out=m)
        sub = self.img[win]
        if isinstance(value, np.ndarray) and value.shape == self.img.shape:
            value = value[win]
        sub += m * (np.asarray(value, F32) - sub)

    def paint_shape(self, shape, value, width: float = 2.0, offset: float = 0.0) -> None:
        win = shape.window(self.img.shape, width + 1)
        self.paint(shape.sdf(win), win, value, width, offset)


# ----------------------------------------------------------------------------------------------
# The anatomy of one volume
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Body:
    """Where the body and its landmarks lie in one volume (pixels)."""

    outline: Ellipsoid
    inner: float  # depth of the abdominal cavity below the skin (skin, fat, muscle wall)
    sy: float  # vertebral body centre and radius
    sx: float
    rv: float
    ay: float  # aorta centre and radius
    ax: float
    ar: float


def _draw_body(rng: np.random.Generator, c: Canvas3, tex: np.ndarray, s: float) -> Body:
    """Skin, subcutaneous fat, muscle wall and the abdominal cavity; the spine and the great vessels."""
    depth, H, W = c.img.shape
    outline = Ellipsoid(
        depth / 2,
        H * rng.uniform(0.48, 0.52),
        W / 2 + rng.normal(0, 4 * s),
        rng.uniform(0.29, 0.34) * H,
        rng.uniform(0.40, 0.45) * W,
        angle=rng.normal(0, 0.03),
        dy=rng.normal(0, 0.3 * s),
        dx=rng.normal(0, 0.3 * s),
    )
    win = outline.window(c.img.shape, 3)
    fb = outline.sdf(win)
    fat, subcut, wall = -100.0 + rng.normal(0, 8), rng.uniform(8, 26) * s, rng.uniform(7, 12) * s
    table_y = int(min(H - 4, outline.cy + outline.ry + rng.uniform(6, 12) * s))
    c.img[:, table_y : table_y + max(2, int(5 * s)), int(0.1 * W) : int(0.9 * W)] = 80.0  # the patient table
    c.paint(fb, win, 40.0 + tex, 1.5)  # skin
    c.paint(fb, win, fat + tex, 1.5, offset=2 * s)
    c.paint(fb, win, 50.0 + tex, 1.5, offset=2 * s + subcut)  # abdominal wall muscle
    mix = np.clip(smooth_field3(rng, c.img.shape, max(6, int(22 * s)), max(2, depth // 5)) * 2.5 + 0.2, 0, 1)
    c.paint(fb, win, fat + (35.0 - fat) * mix + tex, 1.5, offset=2 * s + subcut + wall)  # visceral fat, mesentery
    inner = 2 * s + subcut + wall
    rv = rng.uniform(28, 34) * s
    sy = outline.cy + outline.ry - (inner + rv + rng.uniform(28, 40) * s)
    sx = outline.cx + rng.normal(0, 2 * s)
    for side in (-1, 1):  # paraspinal muscles and psoas
        c.paint_shape(Ellipsoid(0, sy + rv + 28 * s, sx + side * 36 * s, 26 * s, 22 * s), 50.0 + tex, 1.5)
        c.paint_shape(Ellipsoid(0, sy, sx + side * (rv + 16 * s), 16 * s, 13 * s, angle=side * 0.3), 45.0 + tex, 1.5)
    cortical = rng.uniform(650, 800)
    vert = Ellipsoid(0, sy, sx, rv * rng.uniform(0.9, 1.0), rv)
    c.paint_shape(vert, cortical, 1.2)
    c.paint_shape(vert, rng.uniform(180, 300) + tex * 3, 1.5, offset=4 * s)  # cancellous bone
    c.paint_shape(Ellipsoid(0, sy + rv + 26 * s, sx, 18 * s, 6 * s), cortical * 0.85, 1.2)  # spinous process
    c.paint_shape(Ellipsoid(0, sy + rv + 9 * s, sx, 9 * s, 10 * s), 20.0, 1.2)  # spinal canal
    ar = rng.uniform(10, 13) * s
    ay, ax = sy - rv - ar - 3 * s, sx + rng.uniform(8, 16) * s
    c.paint_shape(Ellipsoid(0, ay, ax, ar, ar), rng.uniform(150, 220), 1.5)  # aorta
    c.paint_shape(Ellipsoid(0, ay + 2 * s, sx - 34 * s, 10 * s, 15 * s), rng.uniform(90, 130), 1.5)  # IVC
    return Body(outline, inner, sy, sx, rv, ay, ax, ar)


def _gland_geometry(rng: np.random.Generator, body: Body, s: float, depth: int) -> Band:
    """The pancreas: in front of the aorta, across the middle of the body, over 40-70 % of the slices."""
    h0 = rng.uniform(19, 24) * s
    bend = rng.uniform(10, 25) * s
    span = rng.uniform(0.4, 0.7) * depth  # about the slices the raters mark
    return Band(
        cz=depth / 2 + rng.normal(0, 0.06 * depth),
        cy=body.ay - body.ar - h0 * 1.25 - rng.uniform(8, 18) * s,
        cx=body.outline.cx + rng.uniform(0, 15) * s,
        half_length=rng.uniform(68, 82) * s,
        h0=h0,
        bend=bend,
        tilt=rng.normal(0, 6 * s),
        taper=rng.uniform(0.15, 0.3),
        rise=0.2 * span,
        rz=0.4 * span,
    )


def _lesion_geometry(rng: np.random.Generator, gland: Band, s: float, depth: int) -> Ellipsoid:
    """One lesion in the gland: in-plane radius 25-45 px, 3-8 slices (mostly in the head and body)."""
    t = rng.uniform(-0.7, 0.5)
    return Ellipsoid(
        cz=min(depth - 2.5, max(1.5, gland.cz + gland.rise * t + rng.normal(0, 0.5))),
        cy=gland.cy + gland.bend * t * t + gland.tilt * t + rng.normal(0, 3 * s),
        cx=gland.cx + t * gland.half_length,
        ry=rng.uniform(25, 40) * s,
        rx=rng.uniform(28, 45) * s,
        rz=rng.uniform(1.6, 4.0),
        angle=rng.normal(0, 0.3),
    )


def _draw_organs(rng: np.random.Generator, c: Canvas3, tex: np.ndarray, body: Body, gland: Band, s: float) -> None:
    """Liver, spleen, kidneys, stomach, duodenum, bowel loops and ribs, kept clear of the gland."""
    depth = c.img.shape[0]
    o = body.outline
    head_x, tail_x = gland.cx - gland.half_length, gland.cx + gland.half_length
    rx = rng.uniform(0.24, 0.3) * o.rx
    liver = Ellipsoid(
        depth * rng.uniform(0.9, 1.4),  # above the volume: it narrows towards the lower slices
        o.cy - rng.uniform(0.05, 0.2) * o.ry,
        min(head_x - rx - rng.uniform(6, 14) * s, o.cx - 0.5 * o.rx),
        rng.uniform(0.48, 0.56) * o.ry,
        rx,
        rz=depth * rng.uniform(1.3, 1.8),
        angle=rng.normal(0, 0.1),
    )
    c.paint_shape(liver, rng.uniform(60, 90) + tex, 2.0)
    r = rng.uniform(34, 46) * s
    spleen_y = o.cy + rng.uniform(0.1, 0.3) * o.ry
    spleen = Ellipsoid(depth * rng.uniform(0.7, 1.0), spleen_y, tail_x + r + 10 * s, r, r * 0.7, rz=depth * 0.8)
    c.paint_shape(spleen, rng.uniform(95, 120) + tex, 2.0)
    cortex = rng.uniform(150, 190)
    for side in (-1, 1):
        kidney = Ellipsoid(
            depth * rng.uniform(-0.1, 0.2),
            body.sy + rng.uniform(-5, 10) * s,
            body.sx + side * (body.rv + rng.uniform(52, 64) * s),
            rng.uniform(34, 40) * s,
            rng.uniform(22, 27) * s,
            rz=depth * rng.uniform(0.6, 0.9),
            angle=side * rng.uniform(0.3, 0.7),
        )
        c.paint_shape(kidney, cortex + tex, 1.5)
        c.paint_shape(kidney, cortex - rng.uniform(30, 70) + tex, 3.0, offset=6 * s)  # medulla
    top = min(gland.cy - gland.h0 * 1.3, gland.cy + gland.tilt - gland.h0)  # the gland's front, near its tail
    room = top - (o.cy - o.ry + body.inner)  # between the abdominal wall and the gland
    r = min(rng.uniform(34, 50) * s, max(12 * s, 0.5 * (room - 12 * s)))
    stomach_y, stomach_x = top - r - rng.uniform(6, 12) * s, o.cx + rng.uniform(0.2, 0.4) * o.rx
    stomach = Ellipsoid(depth * 0.8, stomach_y, stomach_x, r, r * 1.3, rz=depth * rng.uniform(0.6, 0.9))
    c.paint_shape(stomach, 45.0, 1.5)
    c.paint_shape(stomach, rng.choice([-900.0, 10.0, rng.uniform(200, 350)]), 1.5, offset=4 * s)
    rd = rng.uniform(12, 17) * s  # the duodenum, around the gland's head
    duo = Ellipsoid(gland.cz - gland.rise, gland.cy + gland.bend, head_x - rd - 6 * s, rd * 1.4, rd, rz=depth)
    c.paint_shape(duo, 55.0, 1.5)
    c.paint_shape(duo, rng.choice([-900.0, 10.0]), 1.5, offset=3.5 * s)
    _draw_bowel_and_ribs(rng, c, body, gland, s)


def _draw_bowel_and_ribs(rng: np.random.Generator, c: Canvas3, body: Body, gland: Band, s: float) -> None:
    """Bowel loops (gas, fluid or oral contrast) away from the gland; ribs in the lateral and posterior wall."""
    depth = c.img.shape[0]
    o = body.outline
    keep_out = gland.half_length + gland.h0 + 16 * s
    for _ in range(int(rng.integers(4, 9))):
        by = o.cy + rng.uniform(-0.8, 0.1) * o.ry
        bx = o.cx + rng.uniform(-0.5, 0.75) * o.rx
        br = rng.uniform(10, 20) * s
        if math.hypot((by - gland.cy) * 2.0, bx - gland.cx) < keep_out + 2 * br:
            continue
        loop = Ellipsoid(rng.uniform(0, depth), by, bx, br, br * rng.uniform(0.6, 1.0), rz=rng.uniform(2, 6))
        c.paint_shape(loop, 40.0, 1.5)
        c.paint_shape(loop, rng.choice([-900.0, 15.0, rng.uniform(250, 450)]), 1.5, offset=2.5 * s)
    for _ in range(int(rng.integers(4, 8))):
        t = rng.uniform(-0.15 * math.pi, 1.15 * math.pi)  # the lower (posterior) and lateral wall
        d = body.inner - 4 * s + rng.uniform(4, 10) * s
        rib = Ellipsoid(
            rng.uniform(0, depth),
            o.cy + (o.ry - d) * math.sin(t),
            o.cx + (o.rx - d) * math.cos(t),
            rng.uniform(4, 7) * s,
            rng.uniform(5, 9) * s,
            rz=depth * rng.uniform(0.3, 0.6),
            dy=rng.normal(0, 2 * s),
            dx=rng.normal(0, 2 * s),
        )
        c.paint_shape(rib, rng.uniform(600, 800), 1.2)


@dataclasses.dataclass
class Truth3:
    """The true shape in one volume: a level set over a window (positive inside, pixels)."""

    f: np.ndarray
    win: Win3


def _draw_target(
    rng: np.random.Generator, c: Canvas3, tex: np.ndarray, gland: Band, lesion: Ellipsoid | None, s: float, d: float
) -> Truth3:
    """Paint the splenic vein, the gland and (lesion set) the lesion; return the target's true shape."""
    shape = c.img.shape
    vein = dataclasses.replace(  # along the gland's back, from behind its neck to the tail
        gland, cy=gland.cy + gland.h0 + 6 * s, cx=gland.cx + 0.2 * gland.half_length, h0=4 * s, taper=0.0
    )
    c.paint_shape(dataclasses.replace(vein, half_length=gland.half_length * 0.8), rng.uniform(130, 180), 1.5)
    margin = 20 * s
    win = gland.window(shape, margin)
    if lesion is not None:
        win = _union(win, lesion.window(shape, margin))
    fg = gland.sdf(win)
    fg += F32(rng.uniform(1.0, 2.0) * s) * smooth_field3(rng, fg.shape, 6, 2)  # a lobulated outline
    width = 1.5 + 1.5 * d
    enhanced = rng.uniform(100, 130)  # harder volumes (d): blurrier outline, more noise
    if lesion is None:
        c.paint(fg, win, enhanced + tex, width)
        return Truth3(fg.astype(F32, copy=False), win)
    fl = lesion.sdf(win) + F32(rng.uniform(1.0, 2.5) * s) * smooth_field3(rng, fg.shape, 4, 2)
    rim = rng.uniform(4, 8) * s  # the gland swells around the lesion: the lesion lies inside it
    c.paint(np.maximum(fg, fl + F32(rim)), win, enhanced + tex, width)
    c.paint(fl, win, rng.uniform(10, 30) + 0.5 * tex, 1.5 + d)
    return Truth3(fl.astype(F32, copy=False), win)


def _finish(rng: np.random.Generator, img: np.ndarray, d: float) -> np.ndarray:
    """Noise, the scanner's range, and the frame outside the circular field of view; int16 HU."""
    depth, H, W = img.shape
    img += rng.standard_normal(img.shape, dtype=F32) * F32(rng.uniform(12, 18) * (1 + 0.3 * d))
    np.clip(img, -1024, 3071, out=img)
    yy, xx = np.ogrid[:H, :W]
    radius = 0.5 * min(H, W) * rng.uniform(0.96, 0.99)
    img[:, (yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2 > radius**2] = FRAME_HU
    return np.round(img).astype(np.int16)


def draw_volume(rng: np.random.Generator, spec: DatasetSpec, design: VolumeDesign) -> tuple[np.ndarray, Truth3, float]:
    """One volume: ``(image int16 (D, H, W), the target's true shape, difficulty 0..1)``."""
    H, W = spec.image_shape
    s = min(H, W) / NOMINAL
    depth = int(rng.integers(design.depth[0], design.depth[1] + 1))
    d = float(rng.beta(1.6, 1.6))
    c = Canvas3((depth, H, W), -1000.0)
    tex = smooth_field3(rng, c.img.shape, max(8, int(48 * s)), max(2, depth // 3)) * F32(8.0)
    body = _draw_body(rng, c, tex, s)
    gland = _gland_geometry(rng, body, s, depth)
    lesion = _lesion_geometry(rng, gland, s, depth) if design.target == "lesion" else None
    _draw_organs(rng, c, tex, body, gland, s)
    truth = _draw_target(rng, c, tex, gland, lesion, s, d)
    return _finish(rng, c.img, d), truth, d


def generate_volume(
    spec: DatasetSpec, seed: int, n: int, m: int, plan: VolumePlan
) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """Draw volume ``case<n>-<m>``: ``(image, {rater: uint8 mask}, affine)`` as stored.

    Test volumes are drawn the same way; only their masks are not written.
    """
    design = check_volume_spec(spec)
    rng = rng_for(seed, spec.name, 1, n, m)
    image, truth, d = draw_volume(rng, spec, design)
    s = min(spec.image_shape) / NOMINAL
    affine = np.eye(4)
    affine[:3, 3] = np.round(rng.uniform([-260, -260, -700], [-200, -200, -300]) * 2) / 2  # a translated origin
    bias, amp = design.bias_px * s, design.deform_px * s * (0.7 + 0.8 * d)
    masks = {}
    for e in range(1, spec.experts + 1):
        mask = np.zeros(image.shape, np.uint8)
        if truth.f.size:
            deform = smooth_field3(rng, truth.f.shape, 5, 2)  # drawn even when unused: fixed order of draws
            if not (e == EMPTY_RATER and (n, m) in plan.empty):
                mask[truth.win] = truth.f + F32(bias * plan.biases[e - 1]) + F32(amp) * deform > 0
        masks[e] = mask
    return image, masks, affine


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def generate_volume_dataset(spec: DatasetSpec, root: Path, seed: int, counts: Mapping[str, int] | None = None) -> Path:
    """Write one synthetic volume set under ``root`` in the 2021 layout; return its training folder.

    Deterministic from ``(spec.name, seed)`` and the counts. Refuses (``FileExistsError``) to write into a
    dataset folder that already exists; :func:`ensure_volume_demo` is the safe entry point.
    """
    check_volume_spec(spec)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(root)
    for folder in volume_folders(spec, root).values():
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; generate_volume_dataset does not overwrite data")
    plan = volume_plan(spec, seed, demo_counts(spec, counts))

    def volumes():
        for split in SPLITS:
            base = volume_split_folder(spec, root, split)
            base.mkdir(parents=True, exist_ok=True)
            for n, m in plan.cases[split]:
                image, masks, affine = generate_volume(spec, seed, n, m, plan)
                folder = base / case_id(n, m)
                folder.mkdir()
                saves = [(save_nifti, (image, folder / "image.nii.gz", affine))]
                if split != "test":  # the release's test volumes come without masks
                    saves += [(save_nifti, (mask, folder / mask_file_name(1, e), affine)) for e, mask in masks.items()]
                yield saves

    write_pipelined(volumes())  # compression overlaps with drawing the next volume
    return volume_split_folder(spec, root, "train")


# ----------------------------------------------------------------------------------------------
# Generate once, safely
# ----------------------------------------------------------------------------------------------


def volume_marker_path(spec: DatasetSpec, root: Path) -> Path:
    return Path(root) / MARKER_DIR / f"{spec.name}{MARKER_SUFFIX}.json"


def _identity(spec: DatasetSpec, seed: int, counts: dict[str, int]) -> dict:
    info = {
        "name": spec.name,
        "seed": int(seed),
        "generator": GENERATOR,
        "generator_version": VOLUME_DEMO_VERSION,
        "release": RELEASE,
        "volume_counts": counts,
        "spec": spec.to_dict(),
    }
    return json.loads(json.dumps(info))  # as it reads back from the marker (tuples become lists)


def ensure_volume_demo(spec: DatasetSpec, root: Path, seed: int, counts: Mapping[str, int] | None = None) -> Path:
    """Generate the volume demo of ``spec`` under ``root`` once; return ``root``.

    Nothing happens when ``root/.demo/<name>-2021.json`` says this dataset, seed, counts, spec and
    generator version are complete. Otherwise it is generated into a temporary folder inside
    ``root/.demo`` and renamed into place (the 2D demo's mechanism, :func:`common.data.demo.once.generate_into_place`);
    the marker says complete only after that. Folders that marker lists (an earlier generation with
    another seed, counts, spec or version, or an interrupted one) are replaced; a dataset folder it does
    not list (the real release, data of your own) is never touched: ``FileExistsError``. ``counts``
    (split -> volumes) overrides the demo's counts, e.g. to draw a few volumes in a test.
    """
    check_volume_spec(spec)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    resolved = demo_counts(spec, counts)
    root = Path(root)
    return generate_into_place(
        spec,
        root,
        volume_marker_path(spec, root),
        _identity(spec, seed, resolved),
        lambda tmp: generate_volume_dataset(spec, tmp, seed, resolved),
        generator=GENERATOR,
        tmp_prefix=f"tmp{MARKER_SUFFIX}-{spec.name}-",
        hint=f" (e.g. demo_data/2021-seed{int(seed)})",
        targets=volume_folders(spec, root),
        counts=resolved,
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def volume_specs() -> dict[str, DatasetSpec]:
    """The project's volume sets that this module draws (:mod:`common.datasets`), by name."""
    from common.datasets import DATASETS

    return {name: e.spec for name, e in DATASETS.items() if e.spec.slice_axis is not None and name in DESIGNS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.data.volume_demo",
        description="Generate (once per seed) the synthetic 3D CT demo of the 2021 release's pancreas sets, "
        "in the release's layout.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="ROOT",
        help="output root (default: demo_data/2021-seed<SEED>, where the volume scripts' --demo looks)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: %(default)s)")
    parser.add_argument(
        "--datasets",
        default=",".join(volume_specs()),
        metavar="NAMES",
        help="comma-separated dataset names (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    specs = volume_specs()
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    out = Path("demo_data") / f"2021-seed{args.seed}" if args.out is None else args.out
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in specs]
    if unknown or not names:
        parser.error(f"--datasets: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(specs)}")
    for name in names:
        t0 = time.perf_counter()
        try:
            ensure_volume_demo(specs[name], out, args.seed)
        except (FileExistsError, ValueError, RuntimeError) as err:
            parser.exit(1, f"{parser.prog}: error: {err}\n")
        print(f"{name}: {volume_split_folder(specs[name], out, 'train')} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
