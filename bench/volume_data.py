"""The data check's time and a run's peak memory on pancreas trees of the real shape (issue 25).

::

    python bench/volume_data.py                    # 20 and 40 training volumes (+ 4 validation), about 25 min
    python bench/volume_data.py --skip-run         # the trees, the check and the 512 px data side only
    python bench/volume_data.py --quick            # smoke test: 10 volumes of 36-40 slices, 2 validation

The 2021 release's pancreas volumes (slices x 512 x 512, 36 to 194 slices, median 53) cannot be shipped,
and the volume demo draws 10 to 20 slices so that it trains on a CPU: neither tells how long the data
check takes, or how much memory a run needs, on the real data. This script writes trees of the real shape
with the demo's own drawing (:mod:`common.data.volume_demo`, its design with one depth per volume) and
measures, for each ``--volumes`` count N:

- the data check: :func:`common.runs.plan.make_plan` (it reads and checks every file and keeps only the
  training slices of the volumes that only train), timed twice on a warm page cache with the demo preset
  and once with the study preset (the check reads the same files), plus once cold with ``--drop-caches``;
- a run: ``python Pancreas.py --preset demo --epochs 1`` (128 px input) in a subprocess, its wall time,
  its maximum resident set size (``wait4``'s ``ru_maxrss``) and the training slices its log states;
- the data side of a study-size (512 px) run without training: a subprocess that does what a run does
  before its first step (``make_plan``, ``prepared_cases``, the predicted volumes stacked, one network's
  training and validation arrays), its resident memory after each stage and its maximum. Training the
  study preset itself (512 px, ConvLSTM U-Net, about 1,000-2,000 slices per epoch) takes hours per epoch
  on a 2-core CPU and is not attempted.

The trees are written once under ``--work`` (reused while their marker matches). Depths: the quantiles
``(i + 0.5) / N`` of a shifted log-normal, ``a + b exp(sigma z)``, whose smallest and largest quantile
are exactly 36 and 194 and whose median is 53, shuffled with a seeded generator (the real per-volume
depths are not published, only their range and median). Validation volumes take the 4-point quantiles
of the same curve. A markdown table is printed and every figure written to
``bench/results/volumes-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.data import volume_demo  # noqa: E402
from common.data.cases import mask_file_name  # noqa: E402
from common.data.demo.writer import save_nifti, write_pipelined  # noqa: E402
from common.datasets import PANCREAS  # noqa: E402

#: Bump when a change makes the written trees differ; a tree with another marker is written again.
TREE_VERSION = 1
MARKER = "bench-volume-tree.json"
MIN_DEPTH, MEDIAN_DEPTH, MAX_DEPTH = 36, 53, 194
MIB = 2**20
DEPTH_MODEL = (
    "quantiles (i + 0.5) / N of a shifted log-normal a + b exp(sigma z) through 36 (lowest quantile), 53 (median) "
    "and 194 (highest quantile), shuffled with a seeded generator; validation: the 4-point quantiles of the same curve"
)


# ----------------------------------------------------------------------------------------------
# The trees
# ----------------------------------------------------------------------------------------------


def real_depths(count: int, seed: int, spread: int | None = None) -> list[int]:
    """``count`` depths spread like the release's: 36 to 194 slices, median 53, a long upper tail.

    A shifted log-normal ``a + b exp(sigma z)`` through (z_min, 36), (0, 53), (z_max, 194), where z are the
    standard normal quantiles of ``(i + 0.5) / spread`` (``spread``: the count that fixes the curve, by
    default ``count``), so every tree spans the whole range whatever its size; deterministic quantiles,
    not random draws, so that N = 20 and N = 40 differ in count and not by luck. Shuffled (seeded) so
    that depth does not follow the case number, from which the held-out volumes are drawn.
    """
    spread = spread or count
    z_max = statistics.NormalDist().inv_cdf((spread - 0.5) / spread) if spread > 1 else 1.0
    u = (MAX_DEPTH - MEDIAN_DEPTH) / (MEDIAN_DEPTH - MIN_DEPTH)  # exp(sigma z_max): symmetric quantiles
    b = (MAX_DEPTH - MEDIAN_DEPTH) / (u - 1)
    a, sigma = MEDIAN_DEPTH - b, math.log(u) / z_max
    normal = statistics.NormalDist()
    depths = [round(a + b * math.exp(sigma * normal.inv_cdf((i + 0.5) / count))) for i in range(count)]
    depths = [min(MAX_DEPTH, max(MIN_DEPTH, d)) for d in depths]
    order = np.random.default_rng([seed, count]).permutation(count)
    return [depths[i] for i in order]


def tree_design(n_train: int, n_validation: int, seed: int, quick: bool) -> dict:
    """What a tree is (its marker): counts, seed and every volume's depth, by split."""
    if quick:
        rng = np.random.default_rng([seed, 99])
        depths = {s: [int(d) for d in rng.integers(36, 41, n)] for s, n in (("train", n_train), ("validation", 2))}
    else:
        depths = {
            "train": real_depths(n_train, seed),
            "validation": real_depths(n_validation, seed + 1, spread=n_train),
        }
    return {
        "bench": "bench/volume_data.py",
        "kind": "quick" if quick else "real",
        "tree_version": TREE_VERSION,
        "volume_demo_version": volume_demo.VOLUME_DEMO_VERSION,
        "seed": seed,
        "counts": {"train": len(depths["train"]), "validation": len(depths["validation"]), "test": 0},
        "depths": depths,
    }


def write_tree(root: Path, design: dict) -> None:
    """Write the pancreas volumes of ``design`` into ``root`` (2021 layout) with the volume demo's drawing.

    The demo draws each volume's depth from its design's ``depth`` range; the design is swapped for one
    whose range is the single wanted depth while each volume is drawn (``mock.patch.dict``: nothing in
    common/ changes), so every other draw is the demo's own. Compression overlaps drawing, as in the demo.
    """
    spec, seed = PANCREAS.spec, design["seed"]
    plan = volume_demo.volume_plan(spec, seed, design["counts"])
    base = volume_demo.DESIGNS[spec.name]

    def cases():
        for split in ("train", "validation", "test"):
            folder = volume_demo.volume_split_folder(spec, root, split)
            folder.mkdir(parents=True, exist_ok=True)
            for (n, m), depth in zip(plan.cases[split], design["depths"].get(split, []), strict=True):
                one = dataclasses.replace(base, depth=(depth, depth))
                with mock.patch.dict(volume_demo.DESIGNS, {spec.name: one}):
                    image, masks, affine = volume_demo.generate_volume(spec, seed, n, m, plan)
                assert image.shape == (depth, 512, 512), image.shape
                case = folder / volume_demo.case_id(n, m)
                case.mkdir()
                saves = [(save_nifti, (image, case / "image.nii.gz", affine))]
                for expert, mask in masks.items():
                    saves.append((save_nifti, (mask, case / mask_file_name(1, expert), affine)))
                yield saves

    write_pipelined(cases())


def ensure_tree(work: Path, design: dict) -> tuple[Path, float]:
    """The tree of ``design`` under ``work``, written once (into a temporary folder, then renamed) and
    reused while its marker matches; returns it and the seconds spent writing (0 when reused)."""
    name = f"pancreas-{design['kind']}-N{design['counts']['train']}"
    root = work / f"{name}-seed{design['seed']}"
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == design:
        return root, 0.0
    if root.exists():
        if not marker.is_file():
            raise SystemExit(f"{root} exists without this benchmark's marker ({MARKER}); move it or choose --work")
        shutil.rmtree(root)
    started = time.perf_counter()
    tmp = work / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_tree(tmp, design)
    (tmp / MARKER).write_text(json.dumps(design))
    tmp.rename(root)
    return root, time.perf_counter() - started


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.nii.gz"))


def depth_summary(design: dict) -> dict:
    train, validation = design["depths"]["train"], design["depths"]["validation"]
    every = train + validation
    return {
        "train": train,
        "validation": validation,
        "min": min(every),
        "median": float(np.median(every)),
        "max": max(every),
        "train_min_median_max": [min(train), float(np.median(train)), max(train)],
        "total_slices": sum(every),
        "train_slices": sum(train),
    }


# ----------------------------------------------------------------------------------------------
# The data check
# ----------------------------------------------------------------------------------------------


def drop_caches() -> bool:
    """Empty the page cache (root only), as bench/data_check.py does, for a cold start."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def time_plan(root: Path, preset: str) -> dict:
    """One :func:`make_plan` of task 1 on ``root``: its wall seconds and what the check read and kept."""
    from common.runs.plan import RunOptions, make_plan

    settings = {"demo": PANCREAS.demo, "study": PANCREAS.study}[preset]
    lines: list[str] = []
    started = time.perf_counter()
    plan = make_plan(PANCREAS.spec, settings, 1, root, RunOptions(log=lines.append, plots=False))
    seconds = time.perf_counter() - started
    loaded = plan.checked.loaded
    train_only = [loaded[i] for i in plan.roles["train"]]
    out = {
        "preset": preset,
        "seconds": round(seconds, 2),
        "check_seconds": round(plan.checked.seconds, 2),
        "files": plan.checked.files,
        "roles": {role: len(ids) for role, ids in plan.roles.items()},
        "training_slices_kept": int(sum(len(c.image) for c in train_only)),
        "held_mib": round(sum(_case_bytes(c) for c in loaded.values()) / MIB, 1),
        "warnings": plan.warnings,
    }
    del plan, loaded, train_only
    gc.collect()
    return out


def _case_bytes(case) -> int:
    return case.image.nbytes + sum(m.nbytes for m in case.masks.values())


def measure_check(root: Path, cold: bool) -> dict:
    """The check on a warm page cache, twice with the demo preset and once with the study preset (the
    same files are read; only the slice margin and window could differ), after one cold run when asked."""
    out: dict = {}
    if cold:
        out["cold"] = time_plan(root, "demo") if drop_caches() else None
    else:
        time_plan(root, "demo")  # warms the page cache, untimed
    out["warm"] = [time_plan(root, "demo"), time_plan(root, "demo")]
    out["study"] = time_plan(root, "study")
    return out


# ----------------------------------------------------------------------------------------------
# Subprocesses: a run, and the 512 px data side
# ----------------------------------------------------------------------------------------------


def run_measured(command: list[str], log: Path, timeout: float) -> dict:
    """Run ``command`` (from the project root), its output into ``log``; wall seconds, exit status and
    maximum resident set size from ``wait4`` (this child alone: no earlier child's peak mixes in, as
    ``RUSAGE_CHILDREN`` would). Its resident memory is also sampled every 0.2 s and its output lines
    timestamped, so that :func:`memory_phases` can tell which step of the run the peak belongs to."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, float]] = []
    started, wall = time.perf_counter(), time.time()
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, errors="replace"
    )
    done = threading.Event()

    def read() -> None:
        with open(log, "w") as fh:
            for line in proc.stdout:
                fh.write(line)
                lines.append((time.perf_counter() - started, line.rstrip()))

    def sample() -> None:
        while not done.wait(0.2):
            with contextlib.suppress(OSError, KeyError, ValueError):
                samples.append((time.perf_counter() - started, _memory(proc.pid)["rss"]))

    threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=sample, daemon=True)]
    for thread in threads:
        thread.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        done.set()
    threads[0].join(10)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": " ".join(command),
        "returncode": proc.returncode,
        "timed_out": proc.returncode == -9,
        "seconds": round(time.perf_counter() - started, 1),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "log": str(log),
        "phases": memory_phases(lines, samples),
        "peak_sample": max(((round(t, 1), rss) for t, rss in samples), key=lambda s: s[1], default=None),
        "started_wall": wall,
    }


#: Lines of TensorFlow's start-up chatter, left out of the phases.
NOISE = re.compile(r"^(?:[IWE]\d{4} |WARNING: All log messages)")


def memory_phases(lines: list[tuple[float, str]], samples: list[tuple[float, float]]) -> list[dict]:
    """Per output line of the child (TensorFlow's chatter left out), the highest sampled resident memory
    until its next line: where in the run the memory goes. Sampling misses spikes shorter than 0.2 s;
    ``wait4``'s maximum does not."""
    kept = [(t, text) for t, text in lines if text.strip() and not NOISE.match(text)]
    marks = [(0.0, "(start)"), *kept, (math.inf, "")]
    phases = []
    for (t0, text), (t1, _) in zip(marks, marks[1:], strict=False):
        inside = [rss for t, rss in samples if t0 <= t < t1]
        if inside:
            phases.append({"after": text[:140], "at_s": round(t0, 1), "max_rss_mib": max(inside)})
    return phases


def measure_training(root: Path, work: Path, n: int, timeout: float) -> dict:
    """``Pancreas.py --preset demo --epochs 1`` on the tree, in a fresh run folder (removed afterwards:
    its maps are hundreds of MiB); the slices each network trained on, read from its log."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = work / "runs" / f"N{n}-{stamp}"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "Pancreas.py", "--data-root", str(root), "--preset", "demo", "--epochs", "1"]
    command += ["--quiet", "--no-plots", "--out", str(out)]
    result = run_measured(command, work / f"train-N{n}.log", timeout)
    text = Path(result["log"]).read_text(errors="replace")
    peak = max(result["phases"], key=lambda p: p["max_rss_mib"], default=None)
    result["peak_phase"] = peak
    result["trained"] = [
        {"network": m[0], "train_slices": int(m[1]), "validation_slices": int(m[2])}
        for m in re.findall(r"\] (\S+): training on (\d+) slices, validating on (\d+)", text)
    ]
    result["network_seconds"] = [int(s) for s in re.findall(r": done in (\d+) s", text)]
    check = re.search(r"data check: read (\d+) file\(s\) of (\d+) case\(s\) in ([\d.]+) s", text)
    result["data_check_in_run_s"] = float(check[3]) if check else None
    score = re.search(r"QUBIQ score[^:]*: ([\d.]+)", text)
    result["qubiq_score"] = float(score[1]) if score else None
    result["tail"] = text.strip().splitlines()[-12:]
    result["files_written"] = file_timeline(out, result.pop("started_wall"))
    shutil.rmtree(out, ignore_errors=True)
    return result


def file_timeline(folder: Path, since: float) -> list[dict]:
    """When the run wrote what: per folder of the run, its file count, MiB and first and last write, in
    seconds from the start, to place the sampled memory peak among the steps that print nothing."""
    groups: dict[str, list] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            key = str(path.parent.relative_to(folder)) + "/" + ("*" + path.suffix if path.suffix else path.name)
            groups.setdefault(key, []).append((stat.st_mtime - since, stat.st_size))
    rows = [
        {
            "files": key,
            "count": len(items),
            "mib": round(sum(size for _, size in items) / MIB, 1),
            "first_s": round(min(t for t, _ in items), 1),
            "last_s": round(max(t for t, _ in items), 1),
        }
        for key, items in groups.items()
    ]
    return sorted(rows, key=lambda r: r["first_s"])


def _memory(pid: int | str = "self") -> dict:
    """A process's resident memory now and its peak so far (``VmRSS``, ``VmHWM``), MiB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {key: round(int(fields[name].split()[0]) / 1024, 1) for key, name in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def data_side(root: Path) -> dict:
    """What a study-preset (512 px) run holds before its first training step, stage by stage.

    The same calls :func:`common.runs.execute.execute` makes before it trains the first network: the plan
    (the check's arrays), ``prepared_cases``, the predicted volumes concatenated, and the first network's
    training and validation arrays from its strategy. TensorFlow is not imported: a real run adds it, the
    model and the input pipeline's buffers on top.
    """
    from common.data.prepared import input_slices
    from common.runs.execute import prepared_cases
    from common.runs.plan import RunOptions, make_plan
    from common.strategies import strategy

    settings = PANCREAS.study
    stages = [{"stage": "imports", **_memory()}]
    started = time.perf_counter()
    plan = make_plan(PANCREAS.spec, settings, 1, root, RunOptions(log=lambda line: None, plots=False))
    held = sum(_case_bytes(c) for c in plan.checked.loaded.values())
    stages.append({"stage": "make_plan (data check)", **_memory(), "arrays_mib": round(held / MIB, 1)})
    cases = prepared_cases(plan)
    prepared = {
        role: sum(c.image.nbytes + sum(m.nbytes for m in c.masks.values()) for c in items)
        for role, items in cases.items()
    }
    stages.append(
        {"stage": "prepared_cases", **_memory(), "views_mib": {k: round(v / MIB, 1) for k, v in prepared.items()}}
    )
    images = np.concatenate([input_slices(c) for c in cases["predicted"]])
    stages.append({"stage": "predicted slices stacked", **_memory(), "arrays_mib": round(images.nbytes / MIB, 1)})
    learner, network = strategy(settings.strategy), plan.selected[0]
    train_arrays, _ = learner.targets(cases["train"], network)
    validation_arrays, _ = learner.targets(cases["validation"], network)
    stacked = sum(a.nbytes for a in (*train_arrays, *(validation_arrays or ())))
    stages.append(
        {"stage": f"{network.name}: training + validation arrays", **_memory(), "arrays_mib": round(stacked / MIB, 1)}
    )
    return {
        "input_size": settings.input_size,
        "network": network.name,
        "train_slices": len(train_arrays[0]),
        "validation_slices": 0 if validation_arrays is None else len(validation_arrays[0]),
        "predicted_slices": len(images),
        "seconds": round(time.perf_counter() - started, 1),
        "stages": stages,
    }


def measure_data_side(root: Path, work: Path, n: int, timeout: float) -> dict:
    """:func:`data_side` in its own process (``--worker-data-side``), so its peak is its own."""
    report = work / f"data-side-N{n}.json"
    report.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker-data-side", str(root), "--report", str(report)]
    result = run_measured(command, work / f"data-side-N{n}.log", timeout)
    if report.is_file():
        result.update(json.loads(report.read_text()))
    return result


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def machine() -> dict:
    """The machine and versions the figures belong to (the load average says whether it was idle)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        meminfo = Path("/proc/meminfo").read_text().split()
        ram = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20
    versions = {"python": platform.python_version()}
    for package in ("numpy", "nibabel", "scipy", "tensorflow", "keras"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "gpu": "none" if not Path("/dev/nvidia0").exists() else "present",
        "versions": versions,
    }


def table(rows: list[dict]) -> str:
    """The markdown table of every N (one row each)."""
    head = (
        "| N train (+val) | depths min/median/max | slices (train+val) | tree (MiB) | check warm 1 / 2 (s) | "
        "check cold (s) | study-preset check (s) | demo run: slices trained | demo run (s) | demo run max RSS (MiB) | "
        "512 px data side max RSS (MiB) |"
    )
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in rows:
        d, check = r["depths"], r["check"]
        cold = check.get("cold")
        run, side = r.get("run") or {}, r.get("data_side") or {}
        slices = "/".join(str(t["train_slices"]) for t in run.get("trained", [])) or "n/a"
        lines.append(
            f"| {r['n_train']} (+{r['n_validation']}) | {d['min']}/{d['median']:g}/{d['max']} | {d['total_slices']} | "
            f"{r['tree_mib']:.0f} | {check['warm'][0]['seconds']:.1f} / {check['warm'][1]['seconds']:.1f} | "
            f"{cold['seconds'] if cold else 'n/a'} | {check['study']['seconds']:.1f} | {slices} | "
            f"{run.get('seconds', 'n/a')} | {run.get('max_rss_mib', 'n/a')} | {side.get('max_rss_mib', 'n/a')} |"
        )
    return "\n".join(lines)


def stage_table(rows: list[dict]) -> str:
    """Where the 512 px data side's memory goes, per N: resident MiB after each stage."""
    lines = []
    for r in rows:
        side = r.get("data_side") or {}
        for s in side.get("stages", []):
            size = s.get("arrays_mib", s.get("views_mib", ""))
            lines.append(f"| {r['n_train']} | {s['stage']} | {s['rss']} | {s['peak']} | {size} |")
    if not lines:
        return ""
    return "| N | stage (512 px) | RSS (MiB) | peak so far (MiB) | arrays (MiB) |\n|---|---|---|---|---|\n" + "\n".join(
        lines
    )


def results_path() -> Path:
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path, k = folder / f"volumes-{stamp}.json", 2
    while path.exists():
        path, k = folder / f"volumes-{stamp}-{k}.json", k + 1
    return path


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def measure_n(args: argparse.Namespace, n: int) -> dict:
    """Every figure for one count of training volumes: tree, check, run, data side."""
    load_start = os.getloadavg()
    design = tree_design(n, args.validation, args.seed, args.quick)
    root, written = ensure_tree(args.work, design)
    size = tree_size(root)
    depths = depth_summary(design)
    print(
        f"N={n}: tree {root}: {size / MIB:.0f} MiB of .nii.gz, {depths['total_slices']} slices "
        f"(depths {depths['min']}/{depths['median']:g}/{depths['max']}); "
        + (f"written in {written:.0f} s" if written else "reused"),
        flush=True,
    )
    row = {
        "n_train": n,
        "n_validation": design["counts"]["validation"],
        "tree": str(root),
        "tree_mib": round(size / MIB, 1),
        "tree_written_s": round(written, 1),
        "depths": depths,
    }
    row["check"] = measure_check(root, args.drop_caches)
    warm = row["check"]["warm"]
    print(
        f"N={n}: data check {warm[0]['seconds']:.1f} s / {warm[1]['seconds']:.1f} s warm ({warm[0]['files']} files, "
        f"{warm[0]['training_slices_kept']} training slices kept), "
        f"study preset {row['check']['study']['seconds']:.1f} s",
        flush=True,
    )
    row["data_side"] = measure_data_side(root, args.work, n, args.timeout)
    print(f"N={n}: 512 px data side: max RSS {row['data_side']['max_rss_mib']:.0f} MiB", flush=True)
    if not args.skip_run:
        row["run"] = measure_training(root, args.work, n, args.timeout)
        run = row["run"]
        peak = run["peak_phase"] or {}
        print(
            f"N={n}: demo run rc {run['returncode']}, {run['seconds']:.0f} s, max RSS {run['max_rss_mib']:.0f} MiB "
            f"(sampled peak {peak.get('max_rss_mib', 'n/a')} MiB after: {peak.get('after', 'n/a')!r})",
            flush=True,
        )
    row["load_average"] = {"start": load_start, "end": os.getloadavg()}  # another job would inflate the times
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/volume_data.py",
        description="The data check's time and a run's peak memory on pancreas trees of the real shape.",
    )
    parser.add_argument(
        "--volumes",
        default=None,
        metavar="N,N,...",
        help="training volume counts, comma-separated, each >= 10 (default: 20,40; 10 with --quick)",
    )
    parser.add_argument(
        "--validation",
        type=int,
        default=4,
        metavar="N",
        help="validation volumes per tree (default: %(default)s; --quick always takes 2)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "qubiq-volume-bench",
        metavar="DIR",
        help="where the trees live, kept for the next time (default: qubiq-volume-bench in the temporary "
        "folder: $TMPDIR, else the system's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the trees' volumes (default: %(default)s)")
    parser.add_argument("--skip-run", action="store_true", help="skip the demo-preset training runs")
    parser.add_argument("--drop-caches", action="store_true", help="also time one cold check (needs root)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 volumes of 36-40 slices, 2 validation")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="seconds before a subprocess is killed (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="the results JSON (default: bench/results/volumes-<UTC>.json in this checkout)",
    )
    parser.add_argument("--worker-data-side", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    # pancreas holds 8 training volumes out: 10 is the fewest from which a training volume always remains
    args.volumes = [int(v) for v in (args.volumes or ("10" if args.quick else "20,40")).split(",")]
    if min(args.volumes) < 10:
        parser.error("--volumes: at least 10 (the pancreas run holds 8 training volumes out, pairs together)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker_data_side is not None:
        args.report.write_text(json.dumps(data_side(args.worker_data_side)))
        return 0
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    info = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": os.getloadavg(),
        "depth_model": DEPTH_MODEL if not args.quick else "quick: uniform integers 36..40 (seeded)",
        "rows": [],
    }
    print(f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, {info['machine']['ram_gib']} GiB")
    for n in args.volumes:
        info["rows"].append(measure_n(args, n))
    info["load_average_end"] = os.getloadavg()
    info["wall_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    out = args.out or results_path()
    out.write_text(json.dumps(info, indent=1) + "\n")
    print()
    print(table(info["rows"]))
    print()
    print(stage_table(info["rows"]))
    print(f"\nresults: {out} ({info['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
