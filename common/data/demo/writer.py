"""Writing the demo's files: NIfTI bytes in one piece, gzip with a fixed header, and one writer thread
that compresses a case while the next is drawn (the 2D and the volume demo, and the volume benchmark's
real-shaped trees, write through this).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np


def nifti_bytes(arr: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    """The uncompressed single-file NIfTI-1 of ``arr`` with ``affine`` (default: the identity).

    Byte for byte what ``nib.Nifti1Image(arr, affine).to_bytes()`` gives (the tests check both demo
    generators' arrays), but with the data written in one piece: nibabel writes row by row, which
    dominated the generation time.
    """
    img = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine)
    img.update_header()
    header = img.header
    header.set_data_offset(352)  # 348-byte header + 4-byte extension flag
    header.set_slope_inter(1.0, 0.0)
    buf = io.BytesIO()
    header.write_to(buf)
    return buf.getvalue() + np.asarray(arr, header.get_data_dtype()).tobytes(order="F")


def save_nifti(arr: np.ndarray, path: Path, affine: np.ndarray | None = None) -> None:
    """Write ``arr`` as ``.nii.gz`` (default: identity affine); a fixed gzip header (no name, mtime 0): same
    array, same file.
    """
    raw = nifti_bytes(arr, affine)
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=1, mtime=0) as gz:
        gz.write(raw)


def write_pipelined(cases: Iterable[list[tuple[Callable, tuple]]]) -> None:
    """Run each case's saves (``(function, arguments)``) on one writer thread while the next case is drawn.

    ``cases`` is drawn lazily (a generator): compression (zlib releases the GIL) overlaps with drawing the
    next case, and at most two cases are held in memory.
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
