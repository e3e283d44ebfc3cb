"""Any other dataset name: a generic MRI phantom with nested tasks."""

from __future__ import annotations

import numpy as np

from common.data.demo.shapes import (
    F32,
    Canvas,
    Design,
    Drawn,
    as_truth,
    draw_difficulty,
    expert_margin,
    mri_finish,
    rand_blob,
    smooth_field,
)
from common.spec import DatasetSpec


def draw(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 256.0
    d = draw_difficulty(rng)
    c = Canvas(shape, 0.02)
    body = rand_blob(rng, H / 2, W / 2, 0.42 * H, 0.42 * W, wobble=0.03)
    c.paint_blob(body, 0.5 + smooth_field(rng, shape, 24) * F32(0.05), 2.0)
    r = min(H, W) * rng.uniform(0.12, 0.2)
    obj = rand_blob(rng, H / 2 + rng.normal(0, 0.05 * H), W / 2 + rng.normal(0, 0.05 * W), r, r * rng.uniform(0.7, 1.3))
    win = obj.window(shape, expert_margin(DESIGN, s) + 4)
    truths, f = [], obj.sdf(win)
    for t in range(spec.tasks):
        c.paint(f, win, 0.5 + (0.35 - 0.25 * d) * (1 if t % 2 == 0 else -1), 2.5)
        truths.append(as_truth(f, win))
        f = np.minimum(f, F32(0)) + f * F32(0.6) - F32(0.25 * r)  # a smaller region inside
    img = mri_finish(rng, c.img, 0.04)
    img = np.round(img * F32(600)).astype(np.int16)
    if spec.channels > 1:
        img = np.repeat(img[..., None], spec.channels, axis=-1)
    return Drawn(img, truths, d)


DESIGN = Design(draw, bias_px=(2.0,), deform_px=(1.5,), nominal=256)
