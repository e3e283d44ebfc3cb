"""One run split into jobs: each job trains some experts into one shared run folder; gathering scores them.

Every expert's network is trained independently of the others (its own seed, its own cases), so the
networks of one run can be trained by separate processes, on separate machines: e.g. a job array with
one expert per job, all writing into the same run folder::

    python Kidney.py --out RUN --experts 1 --train-only      # job 1 (any of the usual options)
    python Kidney.py --out RUN --experts 2 --train-only      # job 2, the same options
    python Kidney.py --out RUN --experts 3 --train-only      # job 3
    python -m common.gather RUN                              # once all have finished (or Kidney.py --gather RUN)

A job (:func:`common.runs.pipeline.run_task` with ``train_only``, :mod:`common.runs.jobs`) creates the run
folder, or joins it when its ``config.json`` was written by another job of the same run: the jobs must
agree on everything that defines the run (dataset, task, seed, settings, data root, split, the planned
ensemble, test predictions), otherwise the job is refused before it writes anything. The planned ensemble is every
expert of the dataset; ``--experts`` picks the ones a job trains. ``config.json`` is created with an
exclusive link (or ``O_EXCL``), so two jobs starting at once never overwrite each other's. A job
writes only its experts' files (``experts/segEE/``, ``predictions/<dataset>/<case>/experts/taskTT_segEE``)
and its own log (``jobs/segEE.log``); an expert that already has ``result.json`` and all its maps is
left alone, and one interrupted mid-training continues from its backup, as with ``--resume``.

Gathering (:func:`common.runs.gather.gather_run`, the one gather step of every run) imports no TensorFlow
and recomputes nothing: it checks that every planned network is finished, averages their saved maps into
the ensemble's maps, scores them as a one-process run's are, and writes what such a run writes:
``results.json`` (with the uncertainty metrics), ``dice_matrix.csv``, the ensemble maps, the plots, and
the table in ``run.log`` (after the jobs' logs).

A single-network strategy (``multi-head``, ``soft-label``) is one job: ``--train-only`` without
``--experts``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.data.cases import DataError
from common.runs.gather import gather_run
from common.spec import ConfigError

__all__ = ["gather_run", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.gather",
        description="Score a run whose networks were trained as separate jobs (--train-only): average the "
        "saved maps, score them, and write what a one-process run writes. Imports no TensorFlow.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="the run folder the jobs wrote (--out RUN)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="ROOT",
        help="where the masks are (default: the run's data root, from its config.json)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Gather, or exit with status 2 and the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        gather_run(args.run_dir, data_root=args.data_root, plots=not args.no_plots, what=str(args.run_dir))
    except (ConfigError, DataError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
