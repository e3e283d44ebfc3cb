"""Derive ``common/data/assets/mni152_slices.npz`` from the MNI ICBM152 2009a template bundled in nilearn.

Run once, from the repository root, in a separate environment that has nilearn (the project itself
does not depend on nilearn; it only reads the small file this script writes)::

    python3 -m venv /tmp/venv/nilearn
    /tmp/venv/nilearn/bin/pip install nilearn numpy nibabel
    /tmp/venv/nilearn/bin/python tools/derive_mni152_slices.py

The nilearn wheel ships, under ``nilearn/datasets/data/``, the 1 mm "MNI ICBM 152 non-linear
symmetric 2009a" T1 template (skull-stripped) and its grey- and white-matter probability maps, as
uint8 files ``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``; they load offline with
``nilearn.datasets.load_mni152_template``, ``load_mni152_gm_template`` and
``load_mni152_wm_template``.  No CSF map is bundled (it needs a download), so none is written.

What it writes (``np.savez_compressed``):

- ``t1``, ``gm``, ``wm``: uint8 ``(slices, rows, cols)``, axial planes of the three maps, resampled
  in-plane to ``--resolution`` mm (linear interpolation; the planes themselves are the template's
  own 1 mm planes, not interpolated), cropped to the brain's bounding box over all the planes plus
  ``--margin`` mm.  Rows run anterior to posterior, columns from the subject's right to left
  (radiological view).  ``t1`` is scaled so its 99.5th percentile inside the head is 255 (clipped);
  ``gm`` and ``wm`` are probabilities times 255.
- ``z_mm``: float32 ``(slices,)``, each plane's MNI z coordinate in mm.
- ``spacing_mm``: float32 ``(2,)``, the pixel spacing (rows, cols) in mm.
- ``source``: a string naming nilearn's version, the files and this derivation.

The licence of the template is in ``common/data/assets/MNI152_LICENSE.txt``; keep it with the file.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "common" / "data" / "assets" / "mni152_slices.npz"

#: The planes: from just above the tentorium to near the vertex (supratentorial brain), MNI z in mm.
Z_FIRST, Z_LAST = -3.0, 69.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .npz (default: {DEFAULT_OUT})")
    parser.add_argument("--slices", type=int, default=28, help="axial planes, evenly spread (default: 28)")
    parser.add_argument("--resolution", type=float, default=1.5, help="in-plane pixel size in mm (default: 1.5)")
    parser.add_argument("--margin", type=float, default=6.0, help="crop margin around the brain, mm (default: 6)")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="refuse a larger file (default: 1 MB)")
    args = parser.parse_args(argv)
    try:
        import nilearn
        from nilearn import datasets, image
    except ImportError:
        parser.error("nilearn is not installed here; run this with the nilearn venv (see the module docstring)")
    if not 2 <= args.slices <= 72:
        parser.error("--slices must be 2..72")
    if not 1.0 <= args.resolution <= 3.0:
        parser.error("--resolution must be 1..3 mm")

    loaders = {
        "t1": (datasets.load_mni152_template, datasets.struct.MNI152_FILE_PATH),
        "gm": (datasets.load_mni152_gm_template, datasets.struct.GM_MNI152_FILE_PATH),
        "wm": (datasets.load_mni152_wm_template, datasets.struct.WM_MNI152_FILE_PATH),
    }
    volumes, affine = {}, None
    for name, (load, path) in loaders.items():
        img = load(resolution=1)  # the bundled 1 mm grid, rescaled to 0..1 by nilearn
        if affine is None:
            affine = img.affine
        elif not np.allclose(img.affine, affine):
            raise SystemExit(f"{Path(path).name}: grid differs from the T1 template's")
        # in-plane resampling only: z keeps the template's own 1 mm planes
        target = np.diag([args.resolution, args.resolution, 1.0, 1.0])
        target[:3, 3] = affine[:3, 3]
        shape = (
            int(np.floor((img.shape[0] - 1) / args.resolution)) + 1,
            int(np.floor((img.shape[1] - 1) / args.resolution)) + 1,
            img.shape[2],
        )
        res = image.resample_img(
            img, target_affine=target, target_shape=shape, interpolation="linear", force_resample=True, copy_header=True
        )
        volumes[name] = np.asarray(res.get_fdata(dtype=np.float32))
    z_mm = np.round(np.linspace(Z_FIRST, Z_LAST, args.slices)) + 0.0  # + 0.0: no "-0"
    planes = np.round((z_mm - affine[2, 3]) / affine[2, 2]).astype(int)
    # (x, y, z) -> (z, y, x); rows anterior -> posterior (y descending), cols right -> left (x ascending:
    # RAS x grows to the subject's right, so flip it to put the subject's right on the image's left)
    stacks = {n: np.ascontiguousarray(v[:, :, planes].transpose(2, 1, 0)[:, ::-1, ::-1]) for n, v in volumes.items()}
    head = (stacks["t1"] > 0.02).any(axis=0) | ((stacks["gm"] + stacks["wm"]) > 0.02).any(axis=0)
    rows, cols = np.where(head.any(axis=1))[0], np.where(head.any(axis=0))[0]
    m = int(np.ceil(args.margin / args.resolution))
    crop = (
        slice(None),
        slice(max(0, rows[0] - m), rows[-1] + m + 1),
        slice(max(0, cols[0] - m), cols[-1] + m + 1),
    )
    t1 = stacks["t1"][crop]
    scale = np.percentile(t1[t1 > 0.02], 99.5)
    out = {
        "t1": _u8(t1 / scale),
        "gm": _u8(stacks["gm"][crop]),
        "wm": _u8(stacks["wm"][crop]),
        "z_mm": z_mm.astype(np.float32),
        "spacing_mm": np.array([args.resolution, args.resolution], np.float32),
        "source": np.array(
            f"nilearn {nilearn.__version__} (nilearn/datasets/data/): "
            + ", ".join(Path(p).name for _, p in loaders.values())
            + "; MNI ICBM 152 non-linear symmetric 2009a, 1 mm, skull-stripped T1 and GM/WM probability maps; "
            f"{args.slices} axial planes at MNI z = {z_mm[0]:g}..{z_mm[-1]:g} mm, resampled in-plane to "
            f"{args.resolution:g} mm (linear), cropped to the brain plus {args.margin:g} mm, "
            "rows anterior->posterior, cols subject right->left; t1 scaled to its 99.5th percentile = 255, "
            "gm/wm probability x 255; by tools/derive_mni152_slices.py"
        ),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    data = buf.getvalue()
    if len(data) > args.max_bytes:
        raise SystemExit(
            f"{len(data)} bytes > --max-bytes {args.max_bytes}: use fewer --slices or a coarser --resolution"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data)} bytes; t1/gm/wm {out['t1'].shape} uint8; z = {z_mm.tolist()} mm")
    return 0


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


if __name__ == "__main__":
    sys.exit(main())
