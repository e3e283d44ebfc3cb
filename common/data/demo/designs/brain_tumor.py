"""brain-tumor: skull-stripped 4-sequence MRI with nested tumour regions."""

from __future__ import annotations

import math

import numpy as np

from common.data.demo.shapes import (
    F32,
    FULL,
    Canvas,
    Design,
    Drawn,
    Truth,
    as_truth,
    draw_difficulty,
    expert_margin,
    full_window,
    rand_blob,
    smooth_field,
)
from common.spec import DatasetSpec

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


def draw(rng: np.random.Generator, spec: DatasetSpec, shape, case: dict) -> Drawn:
    H, W = shape
    s = min(H, W) / 240.0
    nseq = 4
    d = draw_difficulty(rng)
    contrast = 1.0 - 0.6 * d
    design = DESIGN
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
    fbr = brain.sdf(full_window(shape))
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
    margin = expert_margin(design, s) + width_edema
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
    truths: list[Truth | None] = [as_truth(f1, win), as_truth(f2, win), None]
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
        truths[2] = as_truth(f3, win)
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


DESIGN = Design(draw, bias_px=(1.6, 1.3, 0.7), deform_px=(1.2, 1.0, 0.5), nominal=240)
