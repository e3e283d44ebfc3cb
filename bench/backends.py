"""Training throughput of the project's networks on any Keras backend, and the prepared GPU check.

Two commands, one measurement (:func:`measure`: the project's ``build_model``/``compile_for`` fed by
its own training stream, ``training_dataset``, timed over whole ``model.fit`` calls after a warm-up
call that traces the steps):

``compare``: the backends side by side on this machine, each measurement in its own subprocess with
its own Python (each backend has its own virtual environment) and, optionally, its own source tree
(``--tree``, e.g. a checkout of an older commit: it measures that commit's stream and trainer with
the same worker). The variants are interleaved: repeat 1 of every variant, then repeat 2, ... so
that a drift of the machine's speed touches them all alike; the report gives the median and the range.

    python bench/backends.py compare --variant tensorflow=.venv/bin/python \\
        --variant jax=/path/venv-jax/bin/python --variant torch=/path/venv-torch/bin/python \\
        --variant before=.venv/bin/python@/path/checkout-of-the-old-commit --repeats 3 --out DIR

``gpu``: the prepared GPU check (``bench/gpu_check.sh`` runs it), in this process, on the backend
``KERAS_BACKEND`` names: the study networks (kidney study settings, plain and ConvLSTM) at 256 and
512 px, the study's way (batch 1, float32, not compiled beyond the backend's default) against the
tuned way (a larger batch, mixed float16, compiled); the forward FLOPs of the project's counter
(``bench.benchmarking.flops.count_flops``, 3 x forward for a training step) over a measured matrix-product
peak; the peak GPU memory; and one study-preset kidney network trained for a fixed number of epochs
on the demo data, through ``Kidney.py``, with its wall time. ``--dry-run`` does it all at tiny sizes
on a CPU in seconds (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_tree(tree: Path) -> None:
    """Make ``common`` (and ``bench``) importable from ``tree``, ahead of anything else."""
    sys.path[:0] = [str(tree)]


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def sync(value) -> None:
    """Wait for the backend's queued work (JAX and CUDA compute asynchronously)."""
    import keras

    keras.ops.convert_to_numpy(keras.ops.sum(value))


def reset_peak_memory() -> None:
    backend = backend_name()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
    except Exception:  # noqa: BLE001 - a figure, not a requirement
        pass


def peak_memory_bytes() -> int | None:
    """The accelerator's peak allocated bytes since the last reset (JAX: since the process started)."""
    backend = backend_name()
    try:
        if backend == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "gpu":
                return None
            return int((device.memory_stats() or {}).get("peak_bytes_in_use", 0)) or None
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception:  # noqa: BLE001
        return None
    return None


def device_description() -> str:
    backend = backend_name()
    try:
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return getattr(device, "device_kind", device.platform)
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"
    except Exception:  # noqa: BLE001
        return "unknown"


def matmul_peak(n: int, dtype: str, repeats: int = 10) -> dict:
    """TFLOP/s of ``n x n`` matrix products through ``keras.ops`` on the backend (the peak reference)."""
    import keras

    a = keras.random.normal((n, n), dtype=dtype, seed=1)
    b = keras.random.normal((n, n), dtype=dtype, seed=2)
    sync(keras.ops.matmul(a, b))
    sync(keras.ops.matmul(a, b))
    started = time.perf_counter()
    out = a
    for _ in range(repeats):
        out = keras.ops.matmul(a, b)
    sync(out)
    seconds = time.perf_counter() - started
    return {"n": n, "dtype": dtype, "repeats": repeats, "tflops": 2.0 * n**3 * repeats / seconds / 1e12}


def measure(settings, steps: int, repeats: int, jit: bool = False, policy: str = "float32") -> dict:
    """Training images/s of ``settings``' network fed by the project's stream, over ``repeats`` fits of ``steps``.

    The stream holds ``steps * batch`` random images, so each fit reads exactly one of its epochs: a fit
    asked for more steps than an epoch has would run out (a ``tf.data`` stream: fewer steps done than
    counted) or restart (a ``PyDataset``: more work), and the two would not compare.

    A warm-up fit of ``steps`` steps first (it traces or compiles the step); each timed fit's wall time
    includes its start and end (the stream's first batch, the epoch's end), as a training's epochs do.
    """
    import keras
    import numpy as np

    from common.training import trainer as training

    try:  # where the network is built and the stream made now; an older tree (--tree) had both in the trainer
        from common.training import networks, stream
    except ImportError:
        networks = stream = training

    rng = np.random.default_rng(0)
    size = settings.input_size
    batch = settings.batch_size
    images = steps * batch  # one epoch of the stream is exactly the fit's steps: it neither runs out nor restarts
    x = rng.random((images, size, size, 1)).astype(np.float32)
    y = (rng.random((images, size, size, 1)) > 0.5).astype(np.float32)
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    try:
        model = networks.build_model(settings, channels=1)
        networks.compile_for(model, settings)
    finally:
        keras.config.set_dtype_policy(previous)
    if jit:
        model.jit_compile = True
    try:
        from bench.benchmarking.flops import count_flops
    except ImportError:  # an older tree (--tree), from before the benchmark was cut into bench/benchmarking/
        from bench.benchmark import count_flops

    flops = count_flops(model)["forward_flops"]
    augmentation = training.augmentation_of(settings)
    # What the trainer gives model.fit; an older tree (--tree) has no fit_input: its stream was tf.data itself.
    fit_input = getattr(stream, "fit_input", lambda batches: batches)

    def fit(epochs_seen: int) -> float:
        batches = stream.training_dataset(x, y, batch, 0, augmentation, epochs=epochs_seen + 1, first_epoch=epochs_seen)
        started = time.perf_counter()
        model.fit(fit_input(batches), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - started

    reset_peak_memory()
    warm = fit(0)
    walls = [fit(epoch) for epoch in range(1, repeats + 1)]
    rates = [steps * batch / wall for wall in walls]
    result = {
        "size": size,
        "batch": batch,
        "convlstm": settings.convlstm,
        "policy": policy,
        "jit": bool(model.jit_compile),
        "steps": steps,
        "warmup_s": warm,
        "images_per_s": rates,
        "median_images_per_s": statistics.median(rates),
        "forward_flops_per_image": flops,
        "train_tflops": 3 * flops * statistics.median(rates) / 1e12,
        "peak_memory_bytes": peak_memory_bytes(),
        "parameters": model.count_params(),
    }
    keras.backend.clear_session()
    return result


# compare: the backends side by side on this machine


def demo_settings(size: int = 128):
    """The kidney demo preset's network (what ``Kidney.py --demo`` trains), at ``size``."""
    from common.datasets import DATASETS

    return DATASETS["kidney"].demo.replace(input_size=size)


def worker(args) -> None:
    """One measurement in this process (a ``compare`` subprocess): prints one JSON line."""
    _import_tree(Path(args.tree))
    settings = demo_settings(args.size)
    if args.batch:
        settings = settings.replace(batch_size=args.batch)
    result = measure(settings, steps=args.steps, repeats=args.segments)
    import keras

    result.update(backend=backend_name(), keras=keras.__version__, tree=args.tree)
    print("RESULT " + json.dumps(result))


def parse_variant(text: str) -> dict:
    """``name=python[@tree]``: a label, the Python that runs it (its backend's environment), the source tree."""
    name, _, rest = text.partition("=")
    python, _, tree = rest.partition("@")
    if not name or not python:
        raise SystemExit(f"--variant {text!r}: expected NAME=PYTHON[@TREE]")
    backend = name.split("-")[0] if name.split("-")[0] in ("tensorflow", "jax", "torch") else "tensorflow"
    # The worker runs in the variant's tree: a relative path is the caller's, resolved here.
    if os.sep in python:
        python = str(Path(python).absolute())
        if not Path(python).is_file():
            raise SystemExit(f"--variant {text!r}: no Python interpreter at {python}")
    elif shutil.which(python) is None:
        raise SystemExit(f"--variant {text!r}: no {python} on PATH")
    tree = str(Path(tree).resolve()) if tree else str(ROOT)
    if not (Path(tree) / "common").is_dir():
        raise SystemExit(f"--variant {text!r}: {tree} is not a checkout of this project (no common/ there)")
    return {"name": name, "python": python, "tree": tree, "backend": backend}


def compare(args) -> dict:
    from bench.benchmarking.machine import cpu_info  # the benchmark's reading of the CPU: model, flags, cores

    variants = [parse_variant(v) for v in args.variant]
    runs: dict[str, list[dict]] = {v["name"]: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            command = [
                variant["python"], str(Path(__file__).resolve()), "worker", "--tree", variant["tree"],
                "--size", str(args.size), "--steps", str(args.steps), "--segments", str(args.segments),
            ] + (["--batch", str(args.batch)] if args.batch else [])  # fmt: skip
            env = {**os.environ, "KERAS_BACKEND": variant["backend"], "PYTHONPATH": variant["tree"]}
            started = time.perf_counter()
            done = subprocess.run(command, cwd=variant["tree"], env=env, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"{variant['name']} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT ") :])
            result["process_s"] = time.perf_counter() - started
            runs[variant["name"]].append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} {variant['name']}: {result['median_images_per_s']:.2f} images/s"
                f" (warm-up {result['warmup_s']:.1f} s)",
                flush=True,
            )
    return {
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), **cpu_info()},
        "variants": variants,
        "runs": runs,
        "summary": {name: _summary(results) for name, results in runs.items()},
    }


def _summary(results: list[dict]) -> dict:
    rates = [r["median_images_per_s"] for r in results]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "repeats": len(rates)}


def compare_markdown(report: dict) -> str:
    first = report["variants"][0]["name"]
    reference = report["summary"][first]["median"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['model']}, {report['machine']['logical_cores']} CPUs, "
        f"{report['machine']['platform']}",
        "",
        f"| variant | backend | images/s (median of repeats) | range | vs {first} | warm-up s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for variant in report["variants"]:
        s = report["summary"][variant["name"]]
        warm = statistics.median(r["warmup_s"] for r in report["runs"][variant["name"]])
        lines.append(
            f"| {variant['name']} | {variant['backend']} | {s['median']:.2f} | {s['min']:.2f} to {s['max']:.2f} | "
            f"{s['median'] / reference - 1:+.1%} | {warm:.1f} |"
        )
    return "\n".join(lines) + "\n"


# gpu: the prepared GPU check


def study_network(size: int, convlstm: bool, batch: int):
    from common.datasets import DATASETS

    return DATASETS["kidney"].study.replace(input_size=size, convlstm=convlstm, batch_size=batch)


def gpu_check(args) -> dict:
    """Every figure of the GPU check, in this process; a snapshot written after each (a timeout keeps the rest)."""
    import keras

    started = time.perf_counter()
    out: dict = {
        "backend": backend_name(),
        "keras": keras.__version__,
        "device": device_description(),
        "dry_run": args.dry_run,
        "configs": [],
        "skipped": [],
        "peak": [],
    }
    sizes = [32] if args.dry_run else [256, 512]
    tuned_batch = 2 if args.dry_run else args.tuned_batch
    steps, repeats = (2, 1) if args.dry_run else (args.steps, args.repeats)
    if args.dry_run:
        args.epochs = 1
    peak_n = 256 if args.dry_run else 8192
    for dtype in ("float32", "float16"):
        out["peak"].append(matmul_peak(peak_n, dtype, repeats=2 if args.dry_run else 10))
    save(out, args.out)
    from common.training.backend import gpu_visible

    gpu = gpu_visible()
    out["gpu"] = gpu
    # The tuned way: a larger batch, and on a GPU mixed float16 and a compiled step (on a CPU both would
    # only slow it: float16 is emulated there, and XLA's compile takes minutes).
    ways = (("study", 1, "float32", False), ("tuned", tuned_batch, "mixed_float16" if gpu else "float32", gpu))
    builders = (False,) if args.dry_run else (False, True)
    for convlstm in builders:
        for size in sizes:
            for way, batch, policy, jit in ways:
                label = f"{'convlstm' if convlstm else 'plain'} {size} px {way}"
                elapsed = time.perf_counter() - started
                if elapsed > args.budget:
                    out["skipped"].append({"config": label, "why": f"time budget {args.budget} s used"})
                    continue
                settings = study_network(size, convlstm, batch)
                if args.dry_run:
                    settings = settings.replace(depth=2, base_filters=4)
                try:
                    result = measure(settings, steps, repeats, jit=jit, policy=policy)
                except Exception as error:  # noqa: BLE001 - one failed configuration must not cost the others
                    result = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
                result.update(config=label, way=way)
                peak = next(p for p in out["peak"] if p["dtype"] == ("float32" if policy == "float32" else "float16"))
                if "train_tflops" in result:
                    result["fraction_of_peak"] = result["train_tflops"] / peak["tflops"]
                out["configs"].append(result)
                save(out, args.out)
                print(json.dumps(result), flush=True)
    out["kidney_network"] = kidney_network(args)
    out["wall_s"] = time.perf_counter() - started
    save(out, args.out)
    return out


def kidney_network(args) -> dict:
    """One study-preset kidney network on the demo data, ``--epochs`` epochs, through ``Kidney.py``: its wall time."""
    from common.runs.folder import RESULT_FILE

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    command = [
        sys.executable, str(ROOT / "Kidney.py"), "--demo", "--data-root", str(args.data_root), "--preset", "study",
        "--experts", "1", "--epochs", str(args.epochs), "--no-plots", "--quiet", "--out", str(work / "run"),
    ] + (["--image-size", "32", "--depth", "2", "--base-filters", "4"] if args.dry_run else [])  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    result: dict = {"command": " ".join(command[1:]), "epochs": args.epochs, "wall_s": seconds, "exit": done.returncode}
    network = work / "run" / "experts" / "seg01" / RESULT_FILE
    if network.is_file():
        trained = json.loads(network.read_text())
        result.update(training_s=trained["seconds"], epochs_trained=trained["epochs"])
        result["seconds_per_epoch"] = trained["seconds"] / max(1, trained["epochs"])
    if done.returncode:
        result["stderr"] = done.stderr[-2000:]
    return result


def save(out: dict, path: str | None) -> None:
    if path:
        tmp = Path(path).with_suffix(".partial")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        tmp.replace(path)


def gpu_markdown(out: dict) -> str:
    lines = [
        f"Backend {out['backend']} (Keras {out['keras']}), device {out['device']}"
        + (" (dry run: tiny sizes)" if out["dry_run"] else ""),
        "",
        "Matrix-product peak: "
        + ", ".join(f"{p['dtype']} {p['tflops']:.1f} TFLOP/s (n={p['n']})" for p in out["peak"]),
        "",
        "| network | way | batch | precision | compiled | images/s | training TFLOP/s | of peak | peak memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in out["configs"]:
        if "error" in c:
            lines.append(f"| {c['config']} | {c['way']} | | | | failed: {c['error'][:80]} | | | |")
            continue
        memory = f"{c['peak_memory_bytes'] / 2**30:.2f} GiB" if c.get("peak_memory_bytes") else "n/a"
        lines.append(
            f"| {c['config']} | {c['way']} | {c['batch']} | {c['policy']} | {c['jit']} | "
            f"{c['median_images_per_s']:.1f} | {c['train_tflops']:.2f} | {c['fraction_of_peak']:.1%} | {memory} |"
        )
    for s in out["skipped"]:
        lines.append(f"| {s['config']} | skipped: {s['why']} | | | | | | | |")
    k = out.get("kidney_network", {})
    if k:
        lines += ["", f"Study-preset kidney network, {k['epochs']} epochs on the demo data: {k['wall_s']:.1f} s wall"
                  + (f", {k['seconds_per_epoch']:.2f} s per epoch of training" if "seconds_per_epoch" in k else "")
                  + (f" (exit {k['exit']})" if k["exit"] else "")]  # fmt: skip
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The three subcommands' options, each default stated once in its help (no path of this machine)."""
    parser = argparse.ArgumentParser(prog="python bench/backends.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, help="what to run (each has its own -h)")
    one = commands.add_parser("worker", help="one measurement (compare runs it)", description="One measurement.")
    add_network_options(one, "the source tree to measure (default: this checkout)")
    side = commands.add_parser(
        "compare",
        help="backends (and trees) side by side, interleaved repeats",
        description="The backends (and source trees) side by side, each measurement in its own process.",
    )
    side.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="NAME=PYTHON[@TREE]",
        help="a variant to measure; repeat for each: NAME starts with the backend (tensorflow, jax, torch), PYTHON "
        "is its environment's interpreter, TREE a source tree (default: this checkout)",
    )
    side.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="interleaved repeats of every variant (default: %(default)s)",
    )
    add_network_options(side)
    side.add_argument(
        "--out", type=Path, metavar="DIR", help="also write the report (.md and .json) here (default: printed only)"
    )
    gpu = commands.add_parser(
        "gpu", help="the GPU check (bench/gpu_check.sh)", description="The prepared GPU check, in this process."
    )
    gpu.add_argument("--dry-run", action="store_true", help="tiny sizes, on any machine, in seconds")
    gpu.add_argument(
        "--tuned-batch", type=int, default=8, metavar="N", help="batch of the tuned way (default: %(default)s)"
    )
    gpu.add_argument("--steps", type=int, default=20, metavar="N", help="steps per timed fit (default: %(default)s)")
    gpu.add_argument("--repeats", type=int, default=3, metavar="N", help="timed fits per figure (default: %(default)s)")
    gpu.add_argument(
        "--epochs",
        type=int,
        default=5,
        metavar="N",
        help="epochs of the study-preset kidney network (default: %(default)s)",
    )
    gpu.add_argument(
        "--budget",
        type=float,
        default=330.0,
        metavar="SECONDS",
        help="seconds for the throughput part (default: %(default)s)",
    )
    gpu.add_argument(
        "--out", metavar="FILE", help="the JSON file, a snapshot after each figure (default: printed only)"
    )
    gpu.add_argument(
        "--data-root",
        type=Path,
        default=ROOT / "demo_data" / "seed0",
        metavar="ROOT",
        help="the demo data, made there if absent (default: demo_data/seed0 in this checkout)",
    )
    return parser


def add_network_options(parser: argparse.ArgumentParser, tree: str | None = None) -> None:
    """The measured network and fits, shared by ``worker`` and ``compare`` (the worker also takes its tree)."""
    if tree is not None:
        parser.add_argument("--tree", default=str(ROOT), help=tree)
    parser.add_argument(
        "--size",
        type=int,
        default=128,
        metavar="PX",
        help="input size of the kidney demo network (default: %(default)s)",
    )
    parser.add_argument("--batch", type=int, metavar="N", help="batch size (default: the kidney demo preset's)")
    parser.add_argument("--steps", type=int, default=24, metavar="N", help="steps per timed fit (default: %(default)s)")
    parser.add_argument(
        "--segments", type=int, default=3, metavar="N", help="timed fits per measurement (default: %(default)s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args)
    elif args.command == "compare":
        sys.path[:0] = [str(ROOT)]
        report = compare(args)
        text = compare_markdown(report)
        print(text)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            (args.out / f"backends-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
            (args.out / f"backends-{stamp}.md").write_text(text)
    else:
        sys.path[:0] = [str(ROOT)]
        out = gpu_check(args)
        print(gpu_markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
