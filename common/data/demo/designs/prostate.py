"""prostate: axial T2 MRI of the pelvis; prostate (task 1) and transition zone (task 2)."""

from __future__ import annotations

import math

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
    s = min(H, W) / 640.0
    d = draw_difficulty(rng)
    contrast = 1.0 - 0.6 * d
    design = DESIGN
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
    fb = body.sdf(full_window(shape))
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
    win = gland.window(shape, expert_margin(design, s) + width)
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
    img = mri_finish(rng, c.img * bias, 0.025 + 0.025 * d)
    scale = rng.uniform(500, 900)
    return Drawn(np.round(img * F32(scale)).astype(np.int16), [as_truth(f1, win), as_truth(f2, win)], d)


DESIGN = Design(draw, bias_px=(4.0, 3.5), deform_px=(3.0, 2.8), nominal=640)
