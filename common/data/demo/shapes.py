"""Random fields and shapes: the seeded random streams, smooth fields, blobs, the canvas they are
painted on, and what a design draws (:class:`Truth`, :class:`Drawn`, :class:`Design`).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np

F32 = np.float32


def _dataset_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def rng_for(seed: int, name: str, *stream: int) -> np.random.Generator:
    """The generator of one stream of one dataset's draws (``stream``: e.g. a purpose and a case number):
    each case's draws depend on the seed, the dataset and the case alone, not on what was drawn before."""
    return np.random.default_rng([int(seed), _dataset_key(name), *stream])


@lru_cache(maxsize=512)
def bump_basis(n: int, k: int) -> np.ndarray:
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
    return bump_basis(h, ky) @ weights @ bump_basis(w, kx).T


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


def full_window(shape: tuple[int, int]) -> Window:
    """The window of the whole image."""
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


def per_task(values: tuple[float, ...], task: int) -> float:
    """A design's value for ``task`` (1-based); tasks past the tuple's end take its last value."""
    return values[min(task, len(values)) - 1]


def expert_margin(design: Design, scale: float) -> float:
    """Pixels around a true shape within which the experts' masks may end (their bias and deformation, at
    ``scale``): a truth's window is widened by this so that no expert's mask is cut by it."""
    return (max(design.bias_px) * 1.5 + max(design.deform_px) * 4.0) * scale + 4.0


def as_truth(f: np.ndarray, win: Window) -> Truth:
    """A :class:`Truth` of level set ``f`` over window ``win`` (float32, not copied if it already is)."""
    return Truth(f.astype(F32, copy=False), win)


def draw_difficulty(rng: np.random.Generator) -> float:
    """A case's difficulty, 0 easy .. 1 hard (Beta(1.6, 1.6): most cases in between)."""
    return float(rng.beta(1.6, 1.6))


def mri_finish(rng, canvas_img: np.ndarray, noise: float) -> np.ndarray:
    """Add Gaussian noise and fold at zero (MRI magnitude images are non-negative)."""
    img = canvas_img
    img += rng.standard_normal(img.shape, dtype=F32) * F32(noise)
    return np.abs(img, out=img)
