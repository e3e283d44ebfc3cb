"""Speed benchmark of the QUBIQ U-Nets: throughput, input pipeline, inference, memory, FLOPs, tuning, score.

Run from the repository root::

    python bench/benchmark.py [--quick] [--sections ...] [--repeats N] [--out bench/results]

It prints a markdown report and writes it, with a JSON file holding every raw figure, to
``<out>/<host>-<UTC time>.md`` and ``.json`` (an existing file is never overwritten). See
``bench/README.md`` for what each section measures and how long it takes.

How it measures. The parent process never imports TensorFlow: every measurement runs in a worker
subprocess (``benchmark.py --worker JSON``, answering ``@@BENCH {json}`` lines on stdout), so each
configuration starts fresh (its peak RSS is its own) and thread settings, which TensorFlow reads only
when it starts, can differ between workers. Training speed is always measured with ``model.fit`` on a
fixed number of steps: a first ``fit`` call (tracing, compilation, warm-up) is not timed; each timed
``fit`` call ("segment") records a timestamp at the end of every step (Keras then waits for the step's
loss) and its throughput is images between the first and the last step's end divided by that time, so
the first step of every call (iterator start-up) is excluded as well.

The code: this file is the command line (options, ``main``) and the workers' entry; the parts are the
modules of ``bench/benchmarking/``: ``settings`` (sections, presets, sizes, steps), ``stats``, ``flops``,
``study`` (the study-style baseline's input), ``machine``, ``worker`` (everything that imports
TensorFlow), ``sections`` (the parent's orchestration) and ``report``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.benchmarking.machine import cpu_info, load_average  # noqa: E402
from bench.benchmarking.report import failures_appendix, render, results_paths  # noqa: E402
from bench.benchmarking.sections import run_sections, say  # noqa: E402
from bench.benchmarking.settings import ALIASES, DEFAULT_SECTIONS, SECTIONS  # noqa: E402
from bench.benchmarking.worker import worker_main  # noqa: E402


def parse_sections(text: list[str]) -> set[str]:
    chosen = set()
    for part in ",".join(text).split(","):
        name = part.strip()
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name not in SECTIONS:
            raise argparse.ArgumentTypeError(
                f"unknown section {name!r}; choose from {', '.join(SECTIONS)} (or baseline/tuned)"
            )
        chosen.add(name)
    return chosen


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_tuned_run(text: str) -> dict:
    """``BATCH[:LR[:EPOCHS]]`` of ``--tuned-run``; what is left out is filled in by
    :func:`bench.benchmarking.sections.tuned_runs`."""
    parts = text.split(":")
    try:
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise ValueError
        run = {"batch": int(parts[0])}
        if len(parts) > 1 and parts[1]:
            run["lr"] = float(parts[1])
        if len(parts) > 2 and parts[2]:
            run["epochs"] = int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tuned-run expects BATCH[:LR[:EPOCHS]] such as 4, 4:0.002 or 4:0.002:60, got {text!r}"
        ) from None
    if run["batch"] < 1 or run.get("lr", 1.0) <= 0 or run.get("epochs", 1) < 1:
        raise argparse.ArgumentTypeError(f"--tuned-run {text!r}: batch and epochs must be >= 1 and LR > 0")
    return run


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options, each default stated once in its help (no path of this machine)."""
    parser = argparse.ArgumentParser(prog="python bench/benchmark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small settings: 128 px only, few steps, 2 repeats, short score run"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=list(DEFAULT_SECTIONS),
        metavar="SECTION",
        help=f"sections to run, separated by spaces or commas: {', '.join(SECTIONS)} (baseline and tuned: "
        f"tuning) (default: all but {', '.join(s for s in SECTIONS if s not in DEFAULT_SECTIONS)})",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, metavar="N", help="timed repeats per figure (default: 3; 2 with --quick)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        metavar="DIR",
        help="folder for the .md and .json results (default: bench/results in this checkout)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="ROOT",
        help="QUBIQ-layout data (default: demo_data/seed0 in this checkout, generated if absent)",
    )
    parser.add_argument(
        "--batches",
        type=int_list,
        default=[4, 8, 16],
        metavar="N,N,...",
        help="tf.data batch sizes of the tuning section (default: 4,8,16)",
    )
    parser.add_argument(
        "--tuned-batch",
        type=int,
        default=None,
        metavar="N",
        help="batch of the XLA/bf16/thread variants and of the tuned score run "
        "(default: 8; score: the fastest of the tuning section)",
    )
    parser.add_argument(
        "--lr-scaling",
        choices=("sqrt", "linear"),
        default="sqrt",
        help="learning-rate scaling rule with the batch size (default: %(default)s)",
    )
    add_score_options(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def add_score_options(parser: argparse.ArgumentParser) -> None:
    """The options of the score, experts and gpu sections."""
    parser.add_argument(
        "--score-epochs",
        type=int,
        default=None,
        metavar="N",
        help="epochs of the score section (default: 60; 3 with --quick)",
    )
    parser.add_argument(
        "--networks",
        type=int,
        default=6,
        metavar="N",
        help="networks trained in one process by the experts section (default: %(default)s)",
    )
    parser.add_argument(
        "--tuned-run",
        type=parse_tuned_run,
        action="append",
        default=None,
        metavar="BATCH[:LR[:EPOCHS]]",
        help="a tuned score run against the one baseline; repeat for several (default: one at --tuned-batch, "
        "LR scaled by --lr-scaling, the baseline's epochs)",
    )
    parser.add_argument(
        "--score-experts",
        type=int_list,
        default=None,
        metavar="E,E,...",
        help="experts of the score section (default: 1,2,3; 1 with --quick)",
    )
    parser.add_argument(
        "--score-tolerance",
        type=float,
        default=0.02,
        metavar="D",
        help="a tuned score this much below the baseline still counts as no worse (default: %(default)s)",
    )
    parser.add_argument(
        "--gpu-batches",
        type=int_list,
        default=[1, 8],
        metavar="N,N,...",
        help="batch sizes of the gpu section (default: 1,8)",
    )
    parser.add_argument(
        "--gpu-budget",
        type=float,
        default=180,
        metavar="SECONDS",
        help="seconds of GPU measurements in the gpu section before the rest is skipped (default: %(default)s)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    try:
        sections = parse_sections(args.sections)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    args.data_root_given = args.data_root is not None
    if args.data_root is None:
        args.data_root = ROOT / "demo_data" / "seed0"
    args.data_root = args.data_root.resolve()
    needs_data = sections - {"suite"}
    if needs_data and not (args.data_root / "training_data_v2" / "kidney").is_dir():
        from common.data.demo.generate import ensure_demo_data

        say(f"generating demo data into {args.data_root} ...")
        ensure_demo_data(args.data_root, 0)
    started = _dt.datetime.now(_dt.UTC)
    host = socket.gethostname() or cpu_info()["model"]
    state: dict = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": sys.argv,
        "host": host,
        "machine": cpu_info(),
        "load_start": load_average(),
        "sections": sections,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "section_seconds": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    run_sections(args, state)
    state["load_end"] = load_average()
    state["finished_utc"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    report = render(state) + failures_appendix(state)
    md_path, json_path = results_paths(args.out, host, started.strftime("%Y%m%dT%H%M%SZ"))
    state["sections"] = sorted(sections)
    with md_path.open("x") as handle:
        handle.write(report)
    with json_path.open("x") as handle:
        json.dump(state, handle, indent=1, default=str)
    print(report)
    say(f"report: {md_path}\nraw figures: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
