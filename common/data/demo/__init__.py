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
(the 2D datasets' entries in :mod:`common.datasets`); this package owns only how each dataset is *drawn*,
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
(the command, :mod:`common.demo`) generates the four datasets (once: see
:func:`~common.data.demo.generate.ensure_demo_dataset`).

The modules, lowest first (each imports only those above it):

- :mod:`~common.data.demo.layout`: the QUBIQ folders the demo writes (case numbers, splits), and their quirks;
- :mod:`~common.data.demo.shapes`: random streams, smooth fields, blobs, the canvas, ``Truth``,
  ``Drawn`` and ``Design``;
- :mod:`~common.data.demo.designs`: how each dataset is drawn, one module per dataset, and
  :func:`~common.data.demo.designs.design_for`;
- :mod:`~common.data.demo.experts`: the simulated experts' biases and masks;
- :mod:`~common.data.demo.writer`: the NIfTI writer and the writer thread;
- :mod:`~common.data.demo.once`: generate once, safely (markers, lock, moving into place), shared
  with :mod:`common.data.anatomy` and :mod:`common.data.volume_demo`;
- :mod:`~common.data.demo.generate`: the case plan, one case, one dataset, and the generate-once entry
  points the command and ``--demo`` call.
"""
