"""brain-growth: neonatal T2 MRI; the brain inside CSF, skull and scalp."""

from __future__ import annotations

import numpy as np

from common.data.demo.shapes import (
    F32,
    FULL,
    Blob,
    Canvas,
    Design,
    Drawn,
    as_truth,
    draw_difficulty,
    expert_margin,
    full_window,
    mri_finish,
    rand_blob,
    smooth_field,
)
from common.spec import DatasetSpec


def draw(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 256.0
    d = draw_difficulty(rng)
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
    fh = head.sdf(full_window(shape))
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
    bwin = brain.window(shape, expert_margin(DESIGN, s) + width)
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
    img = mri_finish(rng, img, 0.025 + 0.02 * d)
    img = np.round(img * 1024.0) / F32(1024.0)  # quantised float32 (compresses well)
    return Drawn(img.astype(F32), [as_truth(fb, bwin)], d)


DESIGN = Design(draw, bias_px=(2.0,), deform_px=(1.3,), nominal=256)
