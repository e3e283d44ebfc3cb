"""kidney: abdominal CT in Hounsfield units."""

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
    rand_blob,
    smooth_field,
)
from common.spec import DatasetSpec


def draw(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 497.0
    d = draw_difficulty(rng)
    design = DESIGN
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
    fb = body.sdf(full_window(shape))
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
        win = k.window(shape, expert_margin(design, s) + width + 2)
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
    return Drawn(np.round(img).astype(np.int16), [as_truth(fk, kwin)], d)


DESIGN = Design(draw, bias_px=(1.5,), deform_px=(1.0,), nominal=497)
