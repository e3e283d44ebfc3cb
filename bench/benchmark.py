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
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKER = "@@BENCH "
SECTIONS = ("throughput", "input", "inference", "memory", "flops", "tuning", "experts", "score", "suite", "gpu")
ALIASES = {"baseline": "tuning", "tuned": "tuning"}
DEFAULT_SECTIONS = ("throughput", "input", "inference", "memory", "flops", "tuning", "experts", "score")
SIZES = (128, 256, 512)
BUILDERS = ("plain", "convlstm")
#: Network presets (the kidney script's, whose dataset all training figures use): the CPU demo and the study.
PRESETS = {
    "demo": {"depth": 4, "base_filters": 8, "batch": 2},
    "study": {"depth": 5, "base_filters": 16, "batch": 1},
}
#: Steps per timed segment (full mode), by preset and input size; the first step of a segment is not timed.
FULL_STEPS = {
    ("demo", 128): 40,
    ("demo", 256): 20,
    ("demo", 512): 8,
    ("study", 128): 20,
    ("study", 256): 8,
    ("study", 512): 4,
}
#: What --quick measures: one configuration of each preset, between them both builders.
QUICK_CONFIGS = {("demo", "convlstm", 128), ("study", "plain", 128)}
#: The learning-rate reference of the tuning and score sections: the kidney demo preset (batch 2, 1e-3).
LR_REFERENCE = (2, 1e-3)
SUITE_TASKS = (
    ("Brain_Growth", 1),
    ("Brain_Tumor", 1),
    ("Brain_Tumor", 2),
    ("Brain_Tumor", 3),
    ("Kidney", 1),
    ("Prostate", 1),
    ("Prostate", 2),
)
NO_GPU = "no GPU visible; GPU figures not measured"


# ------------------------------------------------------------------------------------------------
# Pure helpers (tested in tests/test_benchmark.py)
# ------------------------------------------------------------------------------------------------


def summarise(samples: list[float]) -> dict:
    """Median, min, max, spread (max - min) and relative spread of a list of figures."""
    values = [float(v) for v in samples if v is not None and math.isfinite(v)]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None, "relative_spread": None}
    median = statistics.median(values)
    low, high = min(values), max(values)
    return {
        "n": len(values),
        "median": median,
        "min": low,
        "max": high,
        "spread": high - low,
        "relative_spread": (high - low) / median if median else None,
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def interleaved_order(variants: list[str], repeats: int) -> list[tuple[int, str]]:
    """Round-robin: repeat 0 of every variant, then repeat 1 of every variant, and so on."""
    return [(r, v) for r in range(repeats) for v in variants]


def scaled_learning_rate(batch: int, rule: str, reference: tuple[int, float] = LR_REFERENCE) -> float:
    """The learning rate for ``batch``: ``lr_ref * (batch / batch_ref)`` (linear) or its square root (sqrt)."""
    ref_batch, ref_lr = reference
    factor = batch / ref_batch
    if rule == "linear":
        return ref_lr * factor
    if rule == "sqrt":
        return ref_lr * math.sqrt(factor)
    raise ValueError(f"unknown learning-rate scaling rule {rule!r}; use 'sqrt' or 'linear'")


def batch_sizes(count: int, batch: int, steps: int) -> list[int]:
    """Sizes of the first ``steps`` batches of a stream of epochs of ``count`` samples (last batch may be short)."""
    per_epoch = [min(batch, count - start) for start in range(0, count, batch)]
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


def segment_throughput(stamps: list[float], sizes: list[int]) -> float | None:
    """Images per second between the end of the first step and the end of the last one."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None
    return sum(sizes[1 : len(stamps)]) / (stamps[-1] - stamps[0])


def count_flops(model) -> dict:
    """Forward multiply-accumulates of a built Keras model, per image, counted from its layers' shapes.

    - ``Conv2D``: output pixels x output channels x (kernel height x width x input channels / groups),
      i.e. ``H_out * W_out * kernel.size``;
    - ``Conv2DTranspose``: every input pixel scatters the whole kernel: ``H_in * W_in * kernel.size``;
    - ``ConvLSTM2D``: per time step, the input convolution and the recurrent convolution, both
      producing the 4 gates: ``T * H_out * W_out * (kernel.size + recurrent_kernel.size)``;
    - ``Dense``: ``kernel.size`` per input row.

    Biases, batch normalisation, activations, pooling and the gates' element-wise products are not
    counted (a few percent at most). FLOPs = 2 x MACs. Layers with weights of another type are
    listed in ``uncounted``.
    """
    by_type: dict[str, int] = {}
    uncounted: list[str] = []

    def shape(tensor) -> tuple:
        return tuple(int(d) if d is not None else 1 for d in tensor.shape)

    def visit(layer) -> None:
        kind = type(layer).__name__
        if hasattr(layer, "layers") and layer.layers:  # nested model
            for inner in layer.layers:
                visit(inner)
            return
        if kind in ("Conv2D", "Conv1D", "Conv3D"):
            out = shape(layer.output)
            macs = math.prod(out[1:-1]) * int(math.prod(layer.kernel.shape))
        elif kind in ("Conv2DTranspose", "Conv1DTranspose", "Conv3DTranspose"):
            inp = shape(layer.input)
            macs = math.prod(inp[1:-1]) * int(math.prod(layer.kernel.shape))
        elif kind in ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"):
            inp, out = shape(layer.input), shape(layer.output)
            steps = inp[1]
            spatial = out[-(len(inp) - 3) - 1 : -1]
            cell = getattr(layer, "cell", layer)
            weights = int(math.prod(cell.kernel.shape)) + int(math.prod(cell.recurrent_kernel.shape))
            macs = steps * math.prod(spatial) * weights
        elif kind == "Dense":
            inp = shape(layer.input)
            macs = math.prod(inp[1:-1]) * int(math.prod(layer.kernel.shape))
        else:
            if layer.weights and kind not in ("BatchNormalization", "LayerNormalization"):
                uncounted.append(f"{layer.name} ({kind})")
            return
        by_type[kind] = by_type.get(kind, 0) + int(macs)

    for layer in model.layers:
        visit(layer)
    macs = sum(by_type.values())
    return {"macs_by_type": by_type, "macs": macs, "forward_flops": 2 * macs, "uncounted": uncounted}


def rotation_shift_flip_matrix(angle: float, shift_rows: float, shift_cols: float, shape: tuple[int, int]):
    """``(matrix, offset)`` for ``scipy.ndimage.affine_transform``: output pixel -> input pixel of a
    rotation by ``angle`` radians about the centre followed by a shift of ``(shift_rows, shift_cols)``."""
    import numpy as np

    centre = (np.array(shape, dtype=float) - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    inverse = np.array([[cos, sin], [-sin, cos]])  # the inverse of the forward rotation
    shift = np.array([shift_rows, shift_cols])
    offset = centre - inverse @ (centre + shift)
    return inverse, offset


def study_augment(image, mask, rng, rotation: float = 10.0, shift: float = 0.1, flip: bool = True):
    """One random transform, as Keras's old ``ImageDataGenerator`` drew it, applied to a numpy image and mask.

    Rotation uniform in ``[-rotation, rotation]`` degrees about the centre, shifts uniform in
    ``[-shift, shift]`` of the size, then a horizontal flip with probability 0.5 (when ``flip``); every
    channel of the image and the mask is warped with the same matrix (``scipy.ndimage``, bilinear,
    0 outside), and the mask is re-binarised at 0.5, as the project's in-graph augmentation does.
    """
    import numpy as np
    from scipy import ndimage

    rows, cols = image.shape[:2]
    angle = math.radians(rng.uniform(-rotation, rotation)) if rotation else 0.0
    shift_rows = rng.uniform(-shift, shift) * rows if shift else 0.0
    shift_cols = rng.uniform(-shift, shift) * cols if shift else 0.0
    flipped = bool(flip and rng.random() < 0.5)
    matrix, offset = rotation_shift_flip_matrix(angle, shift_rows, shift_cols, (rows, cols))

    def warp(array):
        out = np.empty_like(array, dtype=np.float32)
        for c in range(array.shape[-1]):
            out[..., c] = ndimage.affine_transform(
                array[..., c].astype(np.float32), matrix, offset=offset, order=1, mode="constant", cval=0.0
            )
        return out[:, ::-1] if flipped else out

    warped_mask = (warp(mask) >= 0.5).astype(mask.dtype)
    return np.ascontiguousarray(warp(image)), np.ascontiguousarray(warped_mask)


def study_generator(images, masks, batch_size: int, seed: int, rotation=10.0, shift=0.1, flip=True):
    """The study's input: endless epochs of shuffled numpy batches, each sample augmented in Python."""
    import numpy as np

    rng = np.random.default_rng(seed)
    count = len(images)
    while True:
        order = rng.permutation(count)
        for start in range(0, count, batch_size):
            pairs = [
                study_augment(images[i], masks[i], rng, rotation, shift, flip)
                for i in order[start : start + batch_size]
            ]
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def results_paths(out: Path, host: str, stamp: str) -> tuple[Path, Path]:
    """``out/<host>-<stamp>.md`` and ``.json``, with ``-2``, ``-3`` ... when either exists already."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", host).strip("-") or "host"
    number = 1
    while True:
        stem = f"{safe}-{stamp}" + (f"-{number}" if number > 1 else "")
        md, js = out / f"{stem}.md", out / f"{stem}.json"
        if not md.exists() and not js.exists():
            return md, js
        number += 1


# ------------------------------------------------------------------------------------------------
# Machine description (no TensorFlow in the parent)
# ------------------------------------------------------------------------------------------------


def cpu_info() -> dict:
    info: dict = {"model": platform.processor() or platform.machine(), "flags": {}}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if model:
        info["model"] = model.group(1).strip()
    flags_line = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8", "fma"):
        info["flags"][flag] = flag in flags
    info["logical_cores"] = os.cpu_count()
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cores"] = os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        info["cgroup_cpu_limit"] = None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        info["cgroup_cpu_limit"] = None
    try:
        mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["memory_gib"] = round(int(mem.group(1)) / 2**20, 1) if mem else None
    except OSError:
        info["memory_gib"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------
# Worker side: everything that imports TensorFlow
# ------------------------------------------------------------------------------------------------


def emit(payload: dict) -> None:
    sys.stdout.write(MARKER + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def rss_now_mb() -> float | None:
    try:
        match = re.search(r"^VmRSS:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        return int(match.group(1)) / 1024 if match else None
    except OSError:
        return None


def peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def start_tensorflow(threads: list[int] | None = None):
    """Import TensorFlow, applying intra/inter-op thread counts before it initialises.

    GPU memory grows on demand (instead of TensorFlow taking all of it), so that the tuning section's
    workers, alive at the same time, can share a GPU; peak statistics count what is in use either way.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads[0]))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads[1]))
    return tf


def gpu_details(tf) -> list[dict]:
    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append({"name": device.name, **{k: str(v) for k, v in details.items()}})
    return found


def kidney_module():
    """The kidney dataset (:mod:`common.datasets`): ``.spec``, ``.study``, ``.demo``."""
    from common.datasets import KIDNEY

    return KIDNEY


def load_kidney(data_root: str, size: int, seed: int = 0, expert: int = 1) -> dict:
    """Kidney training cases (minus the held-out ones, as run_task chooses them) prepared at ``size``.

    Uses the project's own code: ``discover_cases``, ``choose_held_out``, ``load_case``, ``prepare_case``,
    with the study's kidney settings (CT window). Returns the arrays and the per-case load/prepare times.
    """
    import numpy as np

    from common.data.cases import discover_cases, load_case
    from common.data.prepared import prepare_case
    from common.runs.plan import choose_held_out
    from common.strategies import STRATEGIES

    kidney = kidney_module()
    spec = kidney.spec
    settings = kidney.study.replace(input_size=size)
    cases = discover_cases(Path(data_root), spec.name, "train")
    held_out = set(choose_held_out([c.case_id for c in cases], spec.n_held_out, seed))
    load_ms, prepare_ms, prepared = [], [], []
    for case in cases:
        t0 = time.perf_counter()
        loaded = load_case(case, spec, 1)
        t1 = time.perf_counter()
        ready = prepare_case(loaded, settings)
        t2 = time.perf_counter()
        load_ms.append((t1 - t0) * 1e3)
        prepare_ms.append((t2 - t1) * 1e3)
        if case.case_id not in held_out:
            prepared.append(ready)
    network = next(n for n in STRATEGIES["per-expert"].networks([expert], seed) if n.heads == (expert,))
    (images, masks), _ = STRATEGIES["per-expert"].targets(prepared, network)
    return {
        "images": images.astype(np.float32),
        "masks": masks.astype(np.float32),
        "load_ms": load_ms,
        "prepare_ms": prepare_ms,
        "cases": len(cases),
    }


def network_settings(preset: str, builder: str, size: int, batch: int | None = None, learning_rate=None):
    """The kidney study's settings with a preset's network (depth, filters, batch) and the given builder."""
    kidney = kidney_module()
    p = PRESETS[preset]
    base = kidney.demo if preset == "demo" else kidney.study
    changes = {
        "input_size": size,
        "depth": p["depth"],
        "base_filters": p["base_filters"],
        "convlstm": builder == "convlstm",
        "batch_size": batch or p["batch"],
    }
    if learning_rate is not None:
        changes["learning_rate"] = learning_rate
    return base.replace(**changes)


def make_step_timer(keras):
    class StepTimer(keras.callbacks.Callback):
        """A timestamp at the end of every training step (overriding this makes Keras wait for the step)."""

        def __init__(self):
            super().__init__()
            self.stamps: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return StepTimer


def timed_fit(model, data, steps: int, keras) -> dict:
    """One ``model.fit`` call of ``steps`` steps with per-step timestamps."""
    timer = make_step_timer(keras)()
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    return {"stamps": [t - started for t in timer.stamps], "wall": time.perf_counter() - started}


def tfdata_stream(arrays: dict, batch: int, steps: int, settings, seed: int = 0):
    """The project's training stream as the trainer gives it to ``model.fit`` (``fit_input``: ``tf.data``)."""
    from common.training.trainer import augmentation_of, fit_input, training_dataset

    count = len(arrays["images"])
    epochs = math.ceil(steps * batch / count) + 1
    stream = training_dataset(arrays["images"], arrays["masks"], batch, seed, augmentation_of(settings), epochs=epochs)
    return fit_input(stream)


def generator_stream(arrays: dict, batch: int, settings, seed: int = 0, prefetch: bool = False):
    """The study's generator as a ``tf.data`` source without prefetching (``prefetch=False``), or the
    bare Python generator, which Keras 3's ``fit`` wraps in ``from_generator(...).prefetch(AUTOTUNE)``."""
    import tensorflow as tf

    def make():
        return study_generator(
            arrays["images"], arrays["masks"], batch, seed, settings.rotation, settings.shift, settings.flip
        )

    if prefetch:
        return make()
    size, channels = arrays["images"].shape[1], arrays["images"].shape[-1]
    signature = (
        tf.TensorSpec((None, size, size, channels), tf.float32),
        tf.TensorSpec((None, size, size, arrays["masks"].shape[-1]), tf.float32),
    )
    return tf.data.Dataset.from_generator(make, output_signature=signature)


def build_and_compile(settings, channels: int, jit: bool = False, policy: str | None = None):
    """The project's model and compilation (``build_model``, ``compile_for``); optionally XLA or a dtype policy."""
    import keras

    from common.training.trainer import build_model, compile_for

    previous = keras.mixed_precision.dtype_policy().name
    if policy:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = build_model(settings, channels=channels)
        if model.output.dtype != "float32":  # older build_unet: cast the probabilities to float32
            outputs = keras.layers.Activation("linear", dtype="float32", name="float32_output")(model.output)
            model = keras.Model(model.input, outputs, name=model.name)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    compile_for(model, settings)
    if jit:
        model.jit_compile = True
    return model


def run_config(job: dict, arrays: dict | None = None) -> dict:
    """Training throughput, inference time and peak memory of one network at one size (sections 1, 3, 4)."""
    tf = start_tensorflow(job.get("threads"))
    import keras
    import numpy as np

    gpu = bool(tf.config.list_physical_devices("GPU"))
    result: dict = {"job": {k: v for k, v in job.items() if k != "kind"}, "rss_start_mb": rss_now_mb()}
    if arrays is None:
        arrays = load_kidney(job["data_root"], job["size"])
    result["rss_data_mb"] = rss_now_mb()
    settings = network_settings(job["preset"], job["builder"], job["size"], job.get("batch"))
    batch = settings.batch_size
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    model = build_and_compile(settings, arrays["images"].shape[-1])
    result["build_s"] = time.perf_counter() - t0
    result["parameters"] = model.count_params()
    result["flops"] = count_flops(model)
    result["batch"] = batch
    result["rss_model_mb"] = rss_now_mb()
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    count = len(arrays["images"])
    if job.get("train", True):
        steps = job["steps"] + 1
        warm = timed_fit(model, tfdata_stream(arrays, batch, job["warmup"], settings), job["warmup"], keras)
        segments = []
        for _ in range(job["segments"]):
            seg = timed_fit(model, tfdata_stream(arrays, batch, steps, settings), steps, keras)
            seg["images_per_s"] = segment_throughput(seg["stamps"], batch_sizes(count, batch, steps))
            segments.append(seg)
        result["train"] = {
            "method": "model.fit, per-step timestamps, first step of each call excluded",
            "warmup_fit_s": warm["wall"],
            "warmup_steps": job["warmup"],
            "steps_per_segment": steps,
            "segments": segments,
            "jit_compile": bool(model.jit_compile),
            "summary": summarise([s["images_per_s"] for s in segments]),
        }
        result["peak_rss_train_mb"] = peak_rss_mb()
        if gpu:
            result["gpu_peak_train_bytes"] = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    if job.get("infer", True):
        if gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        case = arrays["images"][:1]
        for _ in range(2):
            model.predict(case, verbose=0)
        times, on_batch = [], []
        for _ in range(job["infer_repeats"]):
            t0 = time.perf_counter()
            maps = model.predict(case, verbose=0)
            times.append((time.perf_counter() - t0) * 1e3)
        for _ in range(2):
            model.predict_on_batch(case)
        for _ in range(job["infer_repeats"]):
            t0 = time.perf_counter()
            model.predict_on_batch(case)
            on_batch.append((time.perf_counter() - t0) * 1e3)
        result["infer"] = {
            "method": "model.predict on one prepared case, after 2 warm-up calls; also predict_on_batch",
            "ms": times,
            "summary": summarise(times),
            "predict_on_batch_ms": on_batch,
            "predict_on_batch_summary": summarise(on_batch),
            "output_finite": bool(np.isfinite(maps).all()),
        }
        result["peak_rss_after_infer_mb"] = peak_rss_mb()
        if gpu:
            result["gpu_peak_infer_bytes"] = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    del model
    keras.backend.clear_session()
    return result


def worker_info(job: dict) -> dict:
    tf = start_tensorflow()
    import keras
    import numpy as np

    return {
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "gpus": gpu_details(tf),
        "tf_built_with_cuda": tf.test.is_built_with_cuda(),
    }


def matmul_peak(tf, n: int, dtype: str, repeats: int, chain: int = 8, device: str | None = None) -> dict:
    """GFLOP/s of ``chain`` dependent ``n x n`` matmuls in one ``tf.function`` call, ``repeats`` calls."""
    with tf.device(device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")):
        rng = tf.random.Generator.from_seed(0)
        a = tf.cast(rng.normal((n, n)), dtype)
        b = tf.cast(rng.normal((n, n)) / math.sqrt(n), dtype)

        @tf.function
        def run(x):
            for _ in range(chain):
                x = tf.linalg.matmul(x, b)
            return x

        run(a).numpy()  # trace and warm up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(a).numpy()
            times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3 * chain
    gflops = [flops / t / 1e9 for t in times]
    return {"n": n, "dtype": dtype, "chain": chain, "seconds": times, "gflops": gflops, "summary": summarise(gflops)}


def profiler_forward_flops(tf, model, shape) -> dict:
    """TensorFlow's v1 profiler on the frozen forward graph at batch 1, per op type."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="op", options=options)
    by_op = {child.name: int(child.float_ops) for child in profile.children}
    return {"total": int(profile.total_float_ops), "by_op": by_op}


def worker_flops(job: dict) -> dict:
    tf = start_tensorflow()
    import keras

    gpu = bool(tf.config.list_physical_devices("GPU"))
    out: dict = {"configs": [], "matmul": []}
    for config in job["configs"]:
        settings = network_settings(config["preset"], config["builder"], config["size"])
        model = build_and_compile(settings, 1)
        counted = count_flops(model)
        entry = {**config, "parameters": model.count_params(), **counted}
        if config.get("profile"):
            try:
                entry["profiler"] = profiler_forward_flops(tf, model, (config["size"], config["size"], 1))
            except Exception as error:  # the v1 profiler is best-effort
                entry["profiler"] = {"error": repr(error)}
        out["configs"].append(entry)
        del model
        keras.backend.clear_session()
    n = job.get("matmul_n") or (8192 if gpu else 2048)
    for dtype in ("float32", "bfloat16"):
        try:
            out["matmul"].append(matmul_peak(tf, n, dtype, job["repeats"]))
        except Exception as error:
            out["matmul"].append({"n": n, "dtype": dtype, "error": repr(error)})
    if gpu:
        out["tf32_enabled"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    return out


def worker_input(job: dict) -> dict:
    """Section 2: the tf.data pipeline alone (augmented batches), and loading + preparing from NIfTI."""
    start_tensorflow()
    out = []
    for size in job["sizes"]:
        arrays = load_kidney(job["data_root"], size)
        settings = network_settings("study", "plain", size)
        entry = {
            "size": size,
            "load_ms": arrays["load_ms"],
            "prepare_ms": arrays["prepare_ms"],
            "load_summary": summarise(arrays["load_ms"]),
            "prepare_summary": summarise(arrays["prepare_ms"]),
            "by_batch": {},
        }
        count = len(arrays["images"])
        for batch in job["batches"][str(size)]:
            steps = max(3, job["images"] // batch) + 1
            samples = []
            for _ in range(job["segments"]):
                stream = tfdata_stream(arrays, batch, steps + 2, settings)
                iterator = iter(stream)
                for _ in range(2):  # warm-up: start the pipeline
                    next(iterator)
                stamps = []
                for _ in range(steps):
                    image, mask = next(iterator)
                    stamps.append(time.perf_counter())
                samples.append(segment_throughput(stamps, batch_sizes(count, batch, steps + 2)[2:]))
                del iterator
            entry["by_batch"][str(batch)] = {"images_per_s": samples, "summary": summarise(samples), "steps": steps}
        out.append(entry)
    return {"sizes": out}


def tuning_variants(
    batches: list[int], tuned_batch: int, rule: str, quick: bool, threads: list[list[int]]
) -> list[dict]:
    """Section 6's variants: the study's baseline, its Keras-prefetched twin, tf.data at several batch sizes,
    and XLA, bfloat16 and thread settings at ``tuned_batch``."""

    def lr(b):
        return scaled_learning_rate(b, rule)

    t = tuned_batch
    variants = [
        {
            "id": "baseline",
            "label": "baseline: Python generator, batch 1, no prefetch",
            "feed": "generator",
            "batch": 1,
        },
    ]
    if not quick:
        variants += [
            {
                "id": "generator-keras",
                "label": "Python generator given to fit (Keras adds prefetch)",
                "feed": "generator-keras",
                "batch": 1,
            },
            {"id": "tfdata-b1", "label": "tf.data pipeline, batch 1", "feed": "tfdata", "batch": 1},
        ]
    for b in [t] if quick else sorted(set(batches) | {t}):
        variants.append({"id": f"tfdata-b{b}", "label": f"tf.data pipeline, batch {b}", "feed": "tfdata", "batch": b})
    if not quick:
        variants.append(
            {
                "id": f"tfdata-b{t}-xla",
                "label": f"tf.data, batch {t}, XLA (jit_compile=True)",
                "feed": "tfdata",
                "batch": t,
                "jit": True,
            }
        )
    variants.append(
        {
            "id": f"tfdata-b{t}-bf16",
            "label": f"tf.data, batch {t}, mixed_bfloat16",
            "feed": "tfdata",
            "batch": t,
            "policy": "mixed_bfloat16",
        }
    )
    for intra, inter in threads:
        variants.append(
            {
                "id": f"tfdata-b{t}-threads-{intra}-{inter}",
                "label": f"tf.data, batch {t}, intra-op {intra} / inter-op {inter} threads",
                "feed": "tfdata",
                "batch": t,
                "threads": [intra, inter],
            }
        )
    for v in variants:
        v["lr"] = lr(v["batch"])
    return variants


def worker_tuning(job: dict) -> None:
    """Section 6 server: builds and warms up its variants, then runs one timed segment per stdin command."""
    tf = start_tensorflow(job.get("threads"))
    import keras

    arrays = load_kidney(job["data_root"], 128)
    count = len(arrays["images"])
    models, ready = {}, {}
    for variant in job["variants"]:
        settings = network_settings("demo", "convlstm", 128, variant["batch"], variant["lr"])
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        model = build_and_compile(settings, 1, jit=variant.get("jit", False), policy=variant.get("policy"))
        warm = timed_fit(model, make_feed(arrays, variant, settings, job["warmup"]), job["warmup"], keras)
        models[variant["id"]] = (model, settings, variant)
        ready[variant["id"]] = {
            "build_and_warmup_s": time.perf_counter() - t0,
            "warmup_fit_s": warm["wall"],
            "jit_compile": bool(model.jit_compile),
            "compute_dtype": model.layers[1].dtype_policy.compute_dtype if len(model.layers) > 1 else None,
            "output_dtype": str(model.output.dtype),
        }
    threads = [
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    ]
    emit({"ready": ready, "threads": threads, "rss_mb": rss_now_mb()})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("cmd") == "quit":
            break
        model, settings, variant = models[command["variant"]]
        steps = max(3, job["images"] // variant["batch"]) + 1
        try:
            seg = timed_fit(model, make_feed(arrays, variant, settings, steps), steps, keras)
            seg["images_per_s"] = segment_throughput(seg["stamps"], batch_sizes(count, variant["batch"], steps))
            seg["steps"] = steps
            seg["load"] = load_average()
            emit(seg)
        except Exception:
            emit({"error": traceback.format_exc()})
    emit({"peak_rss_mb": peak_rss_mb()})


def make_feed(arrays: dict, variant: dict, settings, steps: int):
    if variant["feed"] == "generator":
        return generator_stream(arrays, variant["batch"], settings)
    if variant["feed"] == "generator-keras":
        return generator_stream(arrays, variant["batch"], settings, prefetch=True)
    return tfdata_stream(arrays, variant["batch"], steps, settings)


def study_training_dataset(
    images, masks, batch_size, seed, augmentation, epochs, first_epoch=0, available=None, binary=True, replicas=1
):
    """A stand-in for ``common.training.trainer.training_dataset``: the study's Python generator, no prefetch.

    Same arguments; endless (``fit`` takes ``steps_per_epoch x epochs`` batches). The study's way has
    one device and one expert's binary masks, so ``available``, soft targets and replicas are refused.
    """
    import tensorflow as tf

    if available is not None or not binary or replicas != 1:
        raise NotImplementedError("the study-style baseline covers the per-expert strategy on one device only")
    rotation = augmentation.rotation if augmentation is not None else 0.0
    shift = augmentation.shift if augmentation is not None else 0.0
    flip = augmentation.flip if augmentation is not None else False
    signature = (
        tf.TensorSpec((None, *images.shape[1:]), tf.float32),
        tf.TensorSpec((None, *masks.shape[1:]), tf.float32),
    )
    return tf.data.Dataset.from_generator(
        lambda: study_generator(images, masks, batch_size, seed + first_epoch, rotation, shift, flip),
        output_signature=signature,
    )


def worker_score(job: dict) -> dict:
    """Section 8: the kidney task's plan, tuned (as is) or study-style (a generator stream: the trainer seam)."""
    start_tensorflow()
    from common.runs.pipeline import run_plan
    from common.runs.plan import RunOptions
    from common.training import trainer as training

    kidney = kidney_module()
    settings = kidney.demo.replace(batch_size=job["batch"], learning_rate=job["lr"], epochs=job["epochs"], patience=0)
    streams: list[int] = []
    trainer = training.Trainer()
    if job["mode"] == "baseline":

        def generator_stream(*args, **kwargs):
            streams.append(len(args[0]))
            return study_training_dataset(*args, **kwargs)

        # the study's way: a Python generator feeds the batches, and each network is built (and traced) anew
        trainer = training.Trainer(stream=generator_stream, reuse_networks=False)
    per_network: list[dict] = []

    def recorded(*args, **kwargs):
        t = time.perf_counter()
        result = trainer.train(*args, **kwargs)
        per_network.append({"network": str(args[0]), "seconds": time.perf_counter() - t, "rss_mb_after": rss_now_mb()})
        return result

    lines: list[str] = []
    t0 = time.perf_counter()
    options = RunOptions(experts=job["experts"], seed=0, out=Path(job["out"]), plots=False, verbose=0, log=lines.append)
    results = run_plan(kidney.spec, settings, 1, Path(job["data_root"]), options, train=recorded)
    wall = time.perf_counter() - t0
    return {
        "mode": job["mode"],
        "settings": settings.to_dict(),
        "score": results["score"],
        "per_expert": {k: v["score"] for k, v in results["per_expert"].items()},
        "networks": {
            k: {"best_epoch": v.get("best_epoch"), "epochs": v.get("epochs"), "seconds": v.get("seconds")}
            for k, v in results["networks"].items()
        },
        "training_seconds": results["training_seconds"],
        "wall_seconds": wall,
        "generator_streams_used": streams,  # baseline: one entry (training images) per network trained
        "per_network": per_network,  # training seconds and resident memory after each network, in order
        "networks_reused": training.NETWORKS.reused,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_experts(job: dict) -> dict:
    """Section 7: several networks trained one after another in one process, pooled or each built anew.

    Each network: the kidney demo network on 12 training and 4 validation cases, ``job["epochs"]``
    epochs, its own seed, through ``train_expert`` (first step's tracing included), then ``predict`` of
    the 16 cases from its saved file; the seconds of each and the process's resident memory after it.
    """
    start_tensorflow()
    from common.runs.folder import network_files
    from common.training import trainer as training
    from common.training.inference import Predictor

    training.NETWORKS.enabled = job["pool"]
    arrays = load_kidney(job["data_root"], 128)
    images, masks = arrays["images"], arrays["masks"]
    settings = kidney_module().demo.replace(epochs=job["epochs"], patience=0)
    out = Path(job["out"])
    rows = []
    for number in range(1, job["networks"] + 1):
        t0 = time.perf_counter()
        result = training.train_expert(
            number,
            (images[:12], masks[:12]),
            (images[12:], masks[12:]),
            settings,
            network_files(out / f"network{number}"),
            seed=number,
            verbose=0,
            log=lambda _: None,
        )
        t1 = time.perf_counter()
        predictor = Predictor(settings.batch_size)
        predictor.predict(predictor.load(result.model_path), images)
        t2 = time.perf_counter()
        rows.append({"network": number, "train_s": t1 - t0, "predict_s": t2 - t1, "rss_mb_after": rss_now_mb()})
    return {"pool": job["pool"], "epochs": job["epochs"], "networks": rows, "reused": training.NETWORKS.reused}


def worker_gpu(job: dict) -> dict:
    """Section 10: the study networks on the GPU at 128/256/512, within a time budget, in one process."""
    tf = start_tensorflow()
    started = time.perf_counter()
    gpus = gpu_details(tf)
    if not gpus:
        return {"gpus": []}
    out: dict = {"gpus": gpus, "configs": [], "skipped": [], "matmul": []}
    for dtype in ("float32", "bfloat16", "float16"):
        try:
            out["matmul"].append(matmul_peak(tf, 8192, dtype, 5, device="/GPU:0"))
        except Exception as error:
            out["matmul"].append({"dtype": dtype, "error": repr(error)})
    out["tf32_enabled"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    cache: dict[int, dict] = {}
    for config in job["configs"]:
        elapsed = time.perf_counter() - started
        if elapsed > job["budget_s"]:
            out["skipped"].append({**config, "why": f"time budget {job['budget_s']} s used ({elapsed:.0f} s)"})
            continue
        size = config["size"]
        if size not in cache:
            cache = {size: load_kidney(job["data_root"], size)}
        try:
            res = run_config({**job["common"], **config}, arrays=cache[size])
            res["elapsed_s"] = time.perf_counter() - started
            out["configs"].append(res)
        except Exception:
            out["configs"].append({"job": config, "error": traceback.format_exc()})
        emit(out)  # a snapshot after every configuration: the parent keeps the last one even on a timeout
    out["wall_s"] = time.perf_counter() - started
    return out


def worker_main(spec: str) -> int:
    job = json.loads(spec)
    kind = job["kind"]
    try:
        if kind == "tuning":
            worker_tuning(job)
            return 0
        handlers = {
            "info": worker_info,
            "config": run_config,
            "flops": worker_flops,
            "input": worker_input,
            "score": worker_score,
            "experts": worker_experts,
            "gpu": worker_gpu,
        }
        emit(handlers[kind](job))
    except Exception:
        emit({"error": traceback.format_exc()})
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# Parent side: orchestration
# ------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args, self.tmp = args, tmp
        self.logs = tmp / "worker-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.counter = 0

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def log_path(self, kind: str) -> Path:
        self.counter += 1
        return self.logs / f"{self.counter:03d}-{kind}.log"

    def run(self, job: dict, timeout: float | None = None) -> dict:
        """One worker subprocess, one answer."""
        log = self.log_path(job["kind"])
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
        t0 = time.perf_counter()
        with log.open("w") as err:
            try:
                done = subprocess.run(
                    command, cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout
                )
                stdout, code = done.stdout, done.returncode
            except subprocess.TimeoutExpired as expired:
                stdout, code = expired.stdout or "", "timeout"
                if isinstance(stdout, bytes):
                    stdout = stdout.decode(errors="replace")
        answers = [json.loads(line[len(MARKER) :]) for line in stdout.splitlines() if line.startswith(MARKER)]
        result = answers[-1] if answers else {"error": f"worker exited with {code}; log: {tail(log)}"}
        result["_worker_s"] = time.perf_counter() - t0
        if "error" in result:
            result["error"] = str(result["error"]) + f"\n(stderr tail)\n{tail(log, 800)}"
        return result


def tail(path: Path, chars: int = 400) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:]


class TuningWorker:
    """A long-lived section-6 worker answering one timed segment per command."""

    def __init__(self, bench: Bench, job: dict):
        self.log = bench.log_path("tuning")
        self.err = self.log.open("w")
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=bench.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
        )

    def answer(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARKER):
                return json.loads(line[len(MARKER) :])
        self.process.wait()
        return {"error": f"tuning worker exited with {self.process.returncode}: {tail(self.log, 800)}"}

    def send(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self) -> dict:
        try:
            final = self.send({"cmd": "quit"})
        except (BrokenPipeError, OSError):
            final = {}
        self.process.wait(timeout=60)
        self.err.close()
        return final


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def throughput_jobs(args) -> tuple[list[dict], list[dict]]:
    """The (preset, builder, size) configurations measured, and those skipped (with why)."""
    jobs, skipped = [], []
    for preset in PRESETS:
        for size in SIZES:
            for builder in BUILDERS:
                config = {"preset": preset, "builder": builder, "size": size}
                if args.quick and (preset, builder, size) not in QUICK_CONFIGS:
                    skipped.append({**config, "why": "--quick"})
                    continue
                jobs.append(config)
    return jobs, skipped


def section_configs(bench: Bench, state: dict) -> None:
    args = bench.args
    train = bool({"throughput", "memory"} & state["sections"])
    infer = "inference" in state["sections"] or "memory" in state["sections"]
    jobs, skipped = throughput_jobs(args)
    results = []
    for config in jobs:
        key = (config["preset"], config["size"])
        steps = 3 if args.quick else FULL_STEPS[key]
        job = {
            "kind": "config",
            **config,
            "data_root": str(args.data_root),
            "train": train,
            "infer": infer,
            "warmup": 2 if args.quick or key == ("study", 512) else 3,
            "steps": steps,
            "segments": args.repeats,
            "infer_repeats": 3 if args.quick else (5 if config["size"] == 512 else 10),
        }
        say(f"[configs] {config['preset']} {config['builder']} {config['size']} px ...")
        res = bench.run(job)
        results.append(res)
        if "error" in res:
            say(f"  failed: {res['error'][:300]}")
        else:
            s = res.get("train", {}).get("summary", {})
            say(f"  {fmt(s.get('median'), 2)} img/s, worker {res['_worker_s']:.0f} s")
    state["configs"] = {"results": results, "skipped": skipped}


def section_input(bench: Bench, state: dict) -> None:
    args = bench.args
    sizes = [128] if args.quick else list(SIZES)
    batches = {}
    for size in sizes:
        wanted = {p["batch"] for p in PRESETS.values()}
        if size == 128 and "tuning" in state["sections"]:
            wanted |= set(args.batches) | {args.tuned_batch or 8}
        batches[str(size)] = sorted(wanted)
    job = {
        "kind": "input",
        "data_root": str(args.data_root),
        "sizes": sizes,
        "batches": batches,
        "images": 32 if args.quick else 128,
        "segments": args.repeats,
    }
    say(f"[input] sizes {sizes} ...")
    state["input"] = bench.run(job)
    state["input"]["skipped_sizes"] = [s for s in SIZES if s not in sizes]


def section_flops(bench: Bench, state: dict) -> None:
    args = bench.args
    configs = []
    for preset in PRESETS:
        for builder in BUILDERS:
            for size in SIZES:
                if args.quick and (preset, builder, size) not in QUICK_CONFIGS:
                    continue
                configs.append({"preset": preset, "builder": builder, "size": size, "profile": size == 128})
    job = {"kind": "flops", "configs": configs, "repeats": max(3, args.repeats)}
    say("[flops] analytic counts, profiler cross-check, matmul peak ...")
    state["flops"] = bench.run(job)


def section_tuning(bench: Bench, state: dict) -> None:
    args = bench.args
    tuned = args.tuned_batch or 8
    all_threads = [[1, 1], [2, 1], [1, 2], [2, 2]]
    threads = [[1, 1]] if args.quick else all_threads
    variants = tuning_variants(args.batches, tuned, args.lr_scaling, args.quick, threads)
    ids = {v["id"] for v in variants}
    full = tuning_variants(args.batches, tuned, args.lr_scaling, False, all_threads)
    skipped = [v["label"] for v in full if v["id"] not in ids]
    groups: dict[str, list[dict]] = {}
    for v in variants:
        key = "default" if "threads" not in v else "-".join(map(str, v["threads"]))
        groups.setdefault(key, []).append(v)
    images = 12 if args.quick else 64
    workers: dict[str, TuningWorker] = {}
    ready: dict[str, dict] = {}
    samples: dict[str, list[dict]] = {v["id"]: [] for v in variants}
    errors: dict[str, str] = {}
    order = interleaved_order([v["id"] for v in variants], args.repeats)
    try:
        for key, members in groups.items():
            say(f"[tuning] starting worker ({key} threads), building and warming up {len(members)} variant(s) ...")
            job = {
                "kind": "tuning",
                "data_root": str(args.data_root),
                "variants": members,
                "warmup": 2,
                "images": images,
                "threads": None if key == "default" else members[0]["threads"],
            }
            worker = TuningWorker(bench, job)
            answer = worker.answer()
            if "error" in answer:
                errors[key] = answer["error"]
                worker.close()
                continue
            workers[key] = worker
            ready[key] = answer
        owner = {v["id"]: ("default" if "threads" not in v else "-".join(map(str, v["threads"]))) for v in variants}
        for repeat, vid in order:
            key = owner[vid]
            if key not in workers:
                continue
            answer = workers[key].send({"cmd": "run", "variant": vid})
            answer["repeat"] = repeat
            samples[vid].append(answer)
            say(f"  repeat {repeat + 1}/{args.repeats} {vid}: {fmt(answer.get('images_per_s'), 2)} img/s")
    finally:
        finals = {key: worker.close() for key, worker in workers.items()}
    summaries = {vid: summarise([s.get("images_per_s") for s in ss]) for vid, ss in samples.items()}
    base = summaries["baseline"]["median"]
    for s in summaries.values():
        s["ratio_to_baseline"] = ratio(s["median"], base)
    plain = [
        v for v in variants if v["feed"] == "tfdata" and "threads" not in v and not v.get("jit") and not v.get("policy")
    ]
    best = max(plain, key=lambda v: summaries[v["id"]]["median"] or 0)
    state["tuning"] = {
        "model": "kidney demo preset: U-Net with ConvLSTM decoder, depth 4, 8 base filters, 128 px, 16 training cases",
        "lr_rule": args.lr_scaling,
        "lr_reference": {"batch": LR_REFERENCE[0], "lr": LR_REFERENCE[1]},
        "variants": variants,
        "order": [f"{r}:{v}" for r, v in order],
        "images_per_segment": images,
        "samples": samples,
        "summaries": summaries,
        "ready": ready,
        "final": finals,
        "errors": errors,
        "best_batch": best["batch"],
        "skipped": skipped,
    }


def section_experts(bench: Bench, state: dict) -> None:
    args = bench.args
    count, epochs = (3, 1) if args.quick else (args.networks, 3)
    out: dict = {"networks": count, "epochs": epochs, "runs": {}}
    for pool in (False, True):
        name = "pooled" if pool else "each built anew"
        say(f"[experts] {count} networks in one process, {name} ...")
        folder = bench.tmp / f"experts-{int(pool)}"
        job = {"kind": "experts", "pool": pool, "networks": count, "epochs": epochs}
        res = bench.run({**job, "data_root": str(args.data_root), "out": str(folder)})
        out["runs"][name] = res
        if "error" in res:
            say(f"  failed: {res['error'][:300]}")
        else:
            say("  train s " + ", ".join(f"{r['train_s']:.1f}" for r in res["networks"]))
        shutil.rmtree(folder, ignore_errors=True)
    state["experts"] = out


def parse_tuned_run(text: str) -> dict:
    """``BATCH[:LR[:EPOCHS]]`` of ``--tuned-run``; what is left out is filled in by :func:`tuned_runs`."""
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


def tuned_runs(given: list[dict] | None, batch: int, epochs: int, rule: str) -> list[dict]:
    """The tuned score runs: each ``--tuned-run`` (or one at ``batch``), LR scaled by ``rule`` and the
    baseline's epochs where not given."""
    runs = given or [{"batch": batch}]
    return [
        {
            "batch": r["batch"],
            "lr": r.get("lr", scaled_learning_rate(r["batch"], rule)),
            "epochs": r.get("epochs", epochs),
        }
        for r in runs
    ]


def run_label(run: dict) -> str:
    return f"tuned: batch {run['batch']}, lr {run['lr']:.2g}, {run['epochs']} epochs"


def section_score(bench: Bench, state: dict) -> None:
    args = bench.args
    if args.tuned_batch:
        batch, why = args.tuned_batch, "--tuned-batch"
    elif "tuning" in state:
        batch, why = state["tuning"]["best_batch"], "fastest plain tf.data batch size of the tuning section"
    else:
        batch, why = 8, "default (no tuning section in this run)"
    if args.tuned_run:
        why = "--tuned-run"
    epochs = args.score_epochs or (3 if args.quick else 60)
    experts = args.score_experts or ([1] if args.quick else [1, 2, 3])
    baseline = {"batch": 1, "lr": scaled_learning_rate(1, args.lr_scaling), "epochs": epochs}
    planned = [("baseline", baseline)] + [
        (run_label(r), r) for r in tuned_runs(args.tuned_run, batch, epochs, args.lr_scaling)
    ]
    out = {"batch_chosen_by": why, "epochs": epochs, "experts": experts, "runs": {}}
    for number, (label, run) in enumerate(planned):
        folder = bench.tmp / f"score-{number}"
        mode = "baseline" if number == 0 else "tuned"
        job = {"kind": "score", "mode": mode, **run, "experts": experts}
        say(f"[score] {label if number else 'baseline'}, experts {experts} ...")
        res = bench.run({**job, "data_root": str(args.data_root), "out": str(folder)})
        out["runs"][label] = res
        if "error" in res:
            say(f"  failed: {res['error'][:300]}")
        else:
            say(f"  score {res['score']:.4f}, wall {res['wall_seconds']:.0f} s")
        shutil.rmtree(folder, ignore_errors=True)
    state["score"] = out


def section_suite(bench: Bench, state: dict) -> None:
    args = bench.args
    rows = []
    for script, task in SUITE_TASKS:
        folder = bench.tmp / f"suite-{script}-{task}"
        command = [
            sys.executable,
            f"{script}.py",
            "--demo",
            "--task",
            str(task),
            "--quiet",
            "--no-plots",
            "--out",
            str(folder),
        ]
        if args.data_root_given:
            command += ["--data-root", str(args.data_root)]
        if args.quick:
            command += ["--epochs", "1", "--image-size", "32"]
        say(f"[suite] {' '.join(command[1:])}")
        log = bench.log_path(f"suite-{script}-{task}")
        t0 = time.perf_counter()
        with log.open("w") as handle:
            code = subprocess.run(
                command, cwd=ROOT, env=bench.env(), stdout=handle, stderr=subprocess.STDOUT
            ).returncode
        seconds = time.perf_counter() - t0
        rows.append({"script": script, "task": task, "seconds": seconds, "returncode": code,
                     "command": command[1:], **suite_scores(folder / "results.json")})  # fmt: skip
        score = rows[-1]["score"]
        say(f"  {seconds:.0f} s, score {fmt(score, 4)}")
        shutil.rmtree(folder, ignore_errors=True)
    state["suite"] = {"tasks": rows, "total_seconds": sum(r["seconds"] for r in rows)}


def suite_scores(path: Path) -> dict:
    """A demo run's scores from its ``results.json``: the ensemble's, the best single network's (chosen
    with the held-out masks, so a bound, not a method), the trivial maps', and what was trained."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"score": None}
    networks = result.get("networks") or {}
    return {
        "score": result.get("score"),
        "best_single": max((e["score"] for e in (result.get("per_expert") or {}).values()), default=None),
        "all_foreground": (result.get("reference_scores") or {}).get("all_foreground"),
        "all_background": (result.get("reference_scores") or {}).get("all_background"),
        "networks": len(networks),
        "epochs": max((n.get("epochs", 0) for n in networks.values()), default=None),
        "held_out": len(result.get("per_case") or {}),
    }


def section_gpu(bench: Bench, state: dict) -> None:
    args = bench.args
    if not state["info"].get("gpus"):
        state["gpu"] = {"note": NO_GPU}
        say(NO_GPU)
        return
    configs = []
    for batch in args.gpu_batches:
        for size in SIZES:
            for builder in BUILDERS:
                configs.append({"preset": "study", "builder": builder, "size": size, "batch": batch})
    job = {
        "kind": "gpu",
        "data_root": str(args.data_root),
        "budget_s": args.gpu_budget,
        "configs": configs,
        "common": {"train": True, "infer": True, "warmup": 3, "steps": 20, "segments": 2, "infer_repeats": 10},
    }
    say(f"[gpu] {len(configs)} configurations, budget {args.gpu_budget} s ...")
    state["gpu"] = bench.run(job, timeout=args.gpu_budget + 120)


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def spread(s: dict, digits: int = 1) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{fmt(s['min'], digits)}-{fmt(s['max'], digits)}"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def input_rate(state: dict, size: int, batch: int) -> float | None:
    for entry in state.get("input", {}).get("sizes", []):
        if entry["size"] == size:
            got = entry["by_batch"].get(str(batch))
            return got["summary"]["median"] if got else None
    return None


def flops_entry(state: dict, preset: str, builder: str, size: int) -> dict | None:
    for entry in state.get("flops", {}).get("configs", []):
        if (entry["preset"], entry["builder"], entry["size"]) == (preset, builder, size):
            return entry
    return None


def matmul_best(matmul: list[dict], dtype: str = "float32") -> float | None:
    for entry in matmul or []:
        if entry.get("dtype") == dtype and "summary" in entry:
            return entry["summary"]["max"]
    return None


def config_rows(results: list[dict], state: dict, peak: float | None, sections: set[str], gpu: bool) -> dict:
    """Markdown rows of the throughput, inference, memory and achieved-FLOP/s tables."""
    rows = {"throughput": [], "inference": [], "memory": [], "achieved": []}
    for res in results:
        job = res.get("job", {})
        name = f"{job.get('preset')} {job.get('builder')}"
        size = job.get("size")
        if "error" in res:
            line = [
                name,
                size,
                "failed: " + res["error"].strip().splitlines()[-1][:80] if res["error"].strip() else "failed",
            ]
            for key in rows:
                rows[key].append(line + ["-"] * 3)
            continue
        batch = res["batch"]
        train = res.get("train", {})
        s = train.get("summary", {})
        rate = input_rate(state, size, batch)
        rows["throughput"].append(
            [
                name,
                size,
                batch,
                fmt(s.get("median"), 2),
                spread(s, 2),
                s.get("n", 0),
                train.get("steps_per_segment", "-"),
                fmt(train.get("warmup_fit_s"), 1),
                fmt(rate, 1),
                fmt(ratio(rate, s.get("median")), 1),
            ]
        )
        inf = res.get("infer", {}).get("summary", {})
        pob = res.get("infer", {}).get("predict_on_batch_summary", {})
        rows["inference"].append(
            [
                name,
                size,
                fmt(inf.get("median"), 1),
                spread(inf, 1),
                inf.get("n", 0),
                fmt(pob.get("median"), 1),
                spread(pob, 1),
            ]
        )
        memory = [
            name,
            size,
            batch,
            fmt(res.get("rss_data_mb"), 0),
            fmt(res.get("peak_rss_train_mb"), 0),
            fmt(res.get("peak_rss_after_infer_mb"), 0),
        ]
        if gpu:
            memory += [
                fmt((res.get("gpu_peak_train_bytes") or 0) / 2**20, 0),
                fmt((res.get("gpu_peak_infer_bytes") or 0) / 2**20, 0),
            ]
        rows["memory"].append(memory)
        forward = res["flops"]["forward_flops"]
        achieved = 3 * forward * s["median"] if s.get("median") else None
        rows["achieved"].append(
            [
                name,
                size,
                batch,
                fmt(forward / 1e9, 2),
                fmt(3 * forward / 1e9, 2),
                fmt(s.get("median"), 2),
                fmt(achieved / 1e9 if achieved else None, 1),
                fmt(100 * ratio(achieved, peak * 1e9) if achieved and peak else None, 1),
            ]
        )
    return rows


def render(state: dict) -> str:
    args = state["args"]
    sections = state["sections"]
    info = state.get("info", {})
    machine = state["machine"]
    gpus = info.get("gpus") or []
    lines = [f"# QUBIQ U-Net benchmark, {state['started_utc']}", ""]
    lines.append(f"Command: `{state['command']}`" + (" (quick mode)" if args["quick"] else ""))
    lines.append("")
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in machine["flags"].items())
    versions = info.get("versions", {})
    lines += table(
        ["what", "value"],
        [
            ["host", state["host"]],
            ["CPU", machine["model"]],
            [
                "cores",
                f"{machine['logical_cores']} logical, {machine['usable_cores']} usable"
                + (f", cgroup limit {machine['cgroup_cpu_limit']}" if machine.get("cgroup_cpu_limit") else ""),
            ],
            ["CPU flags", flags],
            ["memory", f"{machine['memory_gib']} GiB"],
            [
                "GPU",
                "; ".join(
                    g.get("device_name", g["name"])
                    + (f" (compute capability {g['compute_capability']})" if g.get("compute_capability") else "")
                    for g in gpus
                )
                or NO_GPU,
            ],
            ["versions", ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")],
            ["platform", versions.get("platform", platform.platform())],
            ["load average (1/5/15 min) at start / end", f"{state['load_start']} / {state.get('load_end')}"],
            ["sections", ", ".join(s for s in SECTIONS if s in sections)],
            ["repeats", args["repeats"]],
        ],
    )
    lines.append("")
    if not gpus:
        lines += [f"**{NO_GPU}.**", ""]
    peak = matmul_best(state.get("flops", {}).get("matmul"))
    configs = state.get("configs")
    if configs:
        rows = config_rows(configs["results"], state, peak, sections, bool(gpus))
        skipped = ", ".join(f"{s['preset']} {s['builder']} {s['size']} px" for s in configs["skipped"])
        skipped_line = f"Skipped ({'--quick' if args['quick'] else ''}): {skipped}." if skipped else "Nothing skipped."
        if "throughput" in sections:
            lines += [
                "## 1. Training throughput",
                "",
                "Kidney demo cases (16 training cases of the seed's split) through "
                "`common.training.trainer.training_dataset` (in-graph augmentation on, parallel map, prefetch), "
                "the project's `build_model` and `compile_for` "
                "(Adam, soft Dice). Measured with `model.fit`: one untimed warm-up call (tracing, compilation), then "
                f"{args['repeats']} timed calls of a fixed number of steps; a per-step timestamp callback gives "
                "images/s between the end of the first and the last step of each call. Each configuration runs in "
                "a fresh subprocess. Input img/s: the pipeline alone at the same size and "
                "batch (section 2); ratio = input / training.",
                "",
            ]
            lines += table(
                [
                    "network",
                    "px",
                    "batch",
                    "img/s (median)",
                    "min-max",
                    "n",
                    "steps/call",
                    "warm-up call s",
                    "input img/s",
                    "input/train",
                ],
                rows["throughput"],
            )
            lines += ["", skipped_line, ""]
        if "input" in sections and state.get("input"):
            lines += input_section(state)
        if "inference" in sections:
            lines += [
                "## 3. Inference per case",
                "",
                "`model.predict` on one prepared case (batch 1), after 2 warm-up calls; milliseconds. "
                "`predict_on_batch` runs the same compiled predict function without `predict`'s per-call set-up "
                "(data adapter, iterator), i.e. the network's own time.",
                "",
            ]
            lines += table(
                ["network", "px", "predict ms (median)", "min-max", "n", "predict_on_batch ms", "min-max"],
                rows["inference"],
            )
            lines += ["", skipped_line, ""]
        if "memory" in sections:
            lines += [
                "## 4. Peak memory",
                "",
                "Peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) of the configuration's own "
                "subprocess, after loading the data, after the training steps and after inference (MiB; includes "
                "the TensorFlow runtime, about the 'after data' figure)."
                + (
                    " GPU: `tf.config.experimental.get_memory_info('GPU:0')['peak']`, reset before training "
                    "and before inference."
                    if gpus
                    else ""
                ),
                "",
            ]
            header = ["network", "px", "batch", "RSS after data", "peak RSS after training", "peak RSS after inference"]
            if gpus:
                header += ["GPU peak training MiB", "GPU peak inference MiB"]
            lines += table(header, rows["memory"])
            lines += ["", skipped_line, ""]
    elif "input" in sections and state.get("input"):
        lines += input_section(state)
    if "flops" in sections and state.get("flops"):
        lines += flops_section(state, configs, peak)
    if "tuning" in state:
        lines += tuning_section(state)
    if "experts" in state:
        lines += experts_section(state)
    if "score" in state:
        lines += score_section(state)
    if "suite" in state:
        lines += suite_section(state)
    if "gpu" in sections:
        lines += gpu_section(state)
    lines += ["## Benchmark wall time", ""]
    lines += table(["section", "seconds"], [[k, fmt(v, 0)] for k, v in state["section_seconds"].items()])
    lines += [""]
    return "\n".join(lines)


def input_section(state: dict) -> list[str]:
    data = state["input"]
    lines = ["## 2. Input pipeline alone", ""]
    if "error" in data:
        return lines + [f"failed: {data['error'][:500]}", ""]
    lines += [
        "Iterating `common.training.trainer.training_dataset` (augmented batches; the images are preloaded numpy "
        "arrays, so there is no decoding in it) without a model, after 2 warm-up batches. Loading and preparing: the "
        "project's `load_case` (NIfTI) and `prepare_case` (CT window, resampling to the input size), once per "
        "kidney training case (20 cases, 497 x 497), per case.",
        "",
    ]
    rows = []
    for entry in data["sizes"]:
        for batch, got in entry["by_batch"].items():
            rows.append(
                [
                    entry["size"],
                    batch,
                    fmt(got["summary"]["median"], 1),
                    spread(got["summary"], 1),
                    fmt(entry["load_summary"]["median"], 1),
                    fmt(entry["prepare_summary"]["median"], 1),
                ]
            )
    lines += table(["px", "batch", "augmented img/s (median)", "min-max", "load ms/case", "prepare ms/case"], rows)
    if data.get("skipped_sizes"):
        lines += ["", f"Skipped sizes (--quick): {', '.join(map(str, data['skipped_sizes']))}."]
    lines.append("")
    return lines


def flops_section(state: dict, configs: dict | None, peak: float | None) -> list[str]:
    data = state["flops"]
    lines = ["## 5. Floating-point operations", ""]
    if "error" in data:
        return lines + [f"failed: {data['error'][:500]}", ""]
    lines += [
        "Counted analytically from the built Keras model: Conv2D (output pixels x kernel size), Conv2DTranspose "
        "(input pixels x kernel size), ConvLSTM2D (per time step its input and recurrent convolutions, 4 gates; "
        "2 steps here), Dense; forward FLOPs = 2 x MACs; biases, batch norm, activations, pooling and gate "
        "products are not counted. A training step costs about 3 x the forward FLOPs (forward, plus the "
        "gradients with respect to activations and to weights, each about one forward). Cross-check: TensorFlow's "
        "v1 profiler (`tf.compat.v1.profiler`, float_operation) on the frozen forward graph at batch 1; it has "
        "FLOP statistics for Conv2D but none for Conv2DBackpropInput (the transposed convolutions), so it is "
        "compared with the analytic count without Conv2DTranspose.",
        "",
    ]
    rows = []
    for e in data["configs"]:
        prof = e.get("profiler") or {}
        analytic_conv = 2 * (e["macs"] - e["macs_by_type"].get("Conv2DTranspose", 0))
        prof_conv = (prof.get("by_op") or {}).get("Conv2D")
        rows.append(
            [
                f"{e['preset']} {e['builder']}",
                e["size"],
                f"{e['parameters']:,}",
                fmt(e["forward_flops"] / 1e9, 3),
                fmt(3 * e["forward_flops"] / 1e9, 3),
                fmt(analytic_conv / 1e9, 3) if prof else "",
                (fmt(prof_conv / 1e9, 3) if prof_conv else prof.get("error", "-")[:60]) if prof else "",
                fmt(ratio(prof_conv, analytic_conv), 4) if prof_conv else "",
            ]
        )
    lines += table(
        [
            "network",
            "px",
            "parameters",
            "forward GFLOP/img",
            "training GFLOP/img (3x)",
            "analytic w/o transposed",
            "profiler Conv2D",
            "profiler/analytic",
        ],
        rows,
    )
    lines += [
        "",
        "Measured matmul peak (chains of dependent square matmuls in one `tf.function`, best of the repeats):",
        "",
    ]
    mm_rows = []
    for m in data.get("matmul", []):
        if "summary" in m:
            mm_rows.append(
                [
                    m["dtype"],
                    m["n"],
                    fmt(m["summary"]["max"], 1),
                    fmt(m["summary"]["median"], 1),
                    spread(m["summary"], 1),
                ]
            )
        else:
            mm_rows.append([m.get("dtype"), m.get("n"), "failed", m.get("error", "")[:60], ""])
    lines += table(["dtype", "n", "GFLOP/s best", "median", "min-max"], mm_rows)
    lines.append("")
    if configs:
        rows = config_rows(configs["results"], state, peak, state["sections"], False)["achieved"]
        lines += [
            f"Achieved training FLOP/s = 3 x forward FLOPs x images/s (section 1); fraction of the "
            f"measured float32 matmul peak ({fmt(peak, 1)} GFLOP/s):",
            "",
        ]
        lines += table(
            [
                "network",
                "px",
                "batch",
                "forward GFLOP/img",
                "training GFLOP/img",
                "img/s",
                "achieved GFLOP/s",
                "% of matmul peak",
            ],
            rows,
        )
        lines.append("")
    return lines


def tuning_section(state: dict) -> list[str]:
    data = state["tuning"]
    args = state["args"]
    rule = "square-root" if data["lr_rule"] == "sqrt" else "linear"
    ref_batch, ref_lr = data["lr_reference"]["batch"], data["lr_reference"]["lr"]
    lines = [
        "## 6. Baseline (the study's way) vs tuned",
        "",
        f"Model: {data['model']}. Every variant is trained with `model.fit` on {data['images_per_segment']} "
        "images per timed call (at least 3 timed steps), after an untimed warm-up call; the variants of one worker "
        "share a process, thread settings get their own worker (set before TensorFlow starts). Order: round-robin "
        f"over the repeats (all variants once, then again), {args['repeats']} repeats. Learning rate: {rule} "
        f"scaling from the demo preset (batch {ref_batch}, {ref_lr:g}): lr = {ref_lr:g} x "
        f"{'sqrt' if data['lr_rule'] == 'sqrt' else ''}(batch / {ref_batch}). "
        "Baseline: batch 1, a Python generator augmenting numpy arrays with scipy.ndimage (rotation up to 10 degrees, "
        "shift up to 0.1, no flip for kidney), wrapped as `tf.data.Dataset.from_generator` without prefetch. Given "
        "directly to `fit`, Keras 3 wraps a generator with `prefetch(AUTOTUNE)` itself (second row; the study's "
        "`fit_generator` had a 10-batch queue in a thread). No cache variant: the pipeline's images are in-memory "
        "constants already, and caching after augmentation would freeze it.",
        "",
    ]
    rows = []
    for v in data["variants"]:
        s = data["summaries"][v["id"]]
        readiness = next(
            (r["ready"].get(v["id"]) for r in data["ready"].values() if v["id"] in r.get("ready", {})), None
        )
        note = ""
        if readiness:
            if v.get("jit") and not readiness.get("jit_compile"):
                note = "XLA not applied"
            elif readiness.get("jit_compile") and not v.get("jit"):
                note = "XLA on (Keras auto)"
        rows.append(
            [
                v["label"],
                v["batch"],
                f"{v['lr']:.2g}",
                fmt(s["median"], 2),
                spread(s, 2),
                s["n"],
                fmt(s.get("ratio_to_baseline"), 2) + "x" if s.get("ratio_to_baseline") else "-",
                note,
            ]
        )
    lines += table(["variant", "batch", "lr", "img/s (median)", "min-max", "n", "vs baseline", "note"], rows)
    for key, error in data.get("errors", {}).items():
        lines += ["", f"Worker for threads {key} failed: {error.strip().splitlines()[-1][:200]}"]
    lines += ["", f"Fastest plain tf.data batch size: {data['best_batch']}."]
    if data.get("skipped"):
        lines += ["", "Skipped (--quick): " + "; ".join(data["skipped"]) + "."]
    lines.append("")
    return lines


def experts_section(state: dict) -> list[str]:
    data = state["experts"]
    lines = [
        "## 7. Several networks in one process",
        "",
        f"{data['networks']} kidney demo networks (ConvLSTM, depth 4, 8 filters, 128 px, batch 2) trained one after "
        f"another in one process, {data['epochs']} epoch(s) each on 12 training and 4 validation cases, each with "
        "its own seed, through `common.training.trainer.train_expert` (the first step's tracing included), then "
        "`common.training.inference.Predictor` of 16 cases from the saved model; once with a new network built for "
        "each (`NETWORKS.enabled = False`, `keras.backend.clear_session()` after each), once with the pooled network "
        "(`common.training.trainer.NetworkPool`). Seconds and resident memory (MiB) after each network.",
        "",
    ]
    runs = data["runs"]
    header = ["network"]
    for name in runs:
        header += [f"{name}: train s", "predict s", "MiB after"]
    rows = []
    for index in range(data["networks"]):
        row = [index + 1]
        for run in runs.values():
            nets = run.get("networks", [])
            if index < len(nets):
                n = nets[index]
                row += [fmt(n["train_s"], 1), fmt(n["predict_s"], 1), fmt(n["rss_mb_after"], 0)]
            else:
                row += ["failed" if "error" in run else "-", "", ""]
        rows.append(row)
    lines += table(header, rows)
    lines.append("")
    return lines


def score_section(state: dict) -> list[str]:
    data = state["score"]
    tolerance = state["args"]["score_tolerance"]
    lines = [
        "## 8. Score at equal model",
        "",
        f"Kidney task 1 (demo preset: ConvLSTM U-Net, depth 4, 8 filters, 128 px), experts {data['experts']}, "
        "no early stopping, seed 0, through `common.runs.pipeline.run_plan` (split, best-epoch choice on the "
        "validation cases, prediction, ensemble, QUBIQ score on the 4 held-out cases) every time, each run in "
        "its own process. Baseline: the study's way, a `common.training.trainer.Trainer` whose stream is the "
        "study's Python generator without prefetch, batch 1, and which builds and traces a new network "
        "for every expert (`Trainer(stream=..., reuse_networks=False)`, passed to `run_plan` as `train`). "
        "Tuned: the project's pipeline as is (tf.data stream, one pooled network for all experts) at the batch, "
        f"learning rate and epochs of the row ({data['batch_chosen_by']}). Speed-up: the baseline's wall time "
        f"over the run's. A score more than {tolerance} below the baseline's counts as worse.",
        "",
    ]
    runs = data["runs"]
    base = runs.get("baseline", {})
    rows = []
    for label, r in runs.items():
        if "error" in r:
            rows.append([label, "failed: " + r["error"].strip().splitlines()[-1][:100], "", "", "", "", ""])
            continue
        s = r["settings"]
        speed, delta, verdict = "", "", ""
        if label != "baseline" and "score" in base:
            speed = fmt(ratio(base["wall_seconds"], r["wall_seconds"]), 2) + "x"
            change = r["score"] - base["score"]
            delta = f"{change:+.4f}"
            # a difference of exactly the tolerance counts as within it (float rounding of the subtraction aside)
            verdict = "no worse" if change >= -tolerance - 1e-12 else "WORSE"
        rows.append(
            [
                f"{label} (batch {s['batch_size']}, lr {s['learning_rate']:.2g}, {s['epochs']} epochs)"
                if label == "baseline"
                else label,
                fmt(r["score"], 4),
                fmt(r["training_seconds"], 0),
                fmt(r["wall_seconds"], 0),
                speed,
                delta,
                verdict,
            ]
        )
    lines += table(["run", "QUBIQ score", "training s", "wall s", "speed-up", "score - baseline", "verdict"], rows)
    if "score" in base and len(base.get("generator_streams_used", [])) != len(data["experts"]):
        lines += ["", "WARNING: the baseline did not train every network from the study-style generator."]
    per_network = [
        [label, n["network"], fmt(n["seconds"], 1), fmt(n["rss_mb_after"], 0)]
        for label, r in runs.items()
        for n in r.get("per_network", [])
    ]
    if per_network:
        lines += ["", "Each network's training (first step's tracing included) and the process's memory after it:", ""]
        lines += table(["run", "network", "training s", "resident MiB after"], per_network)
    lines += [
        "",
        f"{len(data['experts'])} network(s) per run, 4 held-out cases, one seed: a noisy check, not a significance "
        "test.",
        "",
    ]
    return lines


def suite_section(state: dict) -> list[str]:
    data = state["suite"]
    quick = state["args"]["quick"]
    lines = [
        "## 9. Demo suite",
        "",
        "Each task as `python <Script>.py --demo --task T --quiet --no-plots --out <tmp>`"
        + (" --epochs 1 --image-size 32 (--quick)" if quick else "")
        + ", one subprocess each.",
        "",
    ]
    rows = [
        [r["script"], r["task"], r.get("networks") or "-", r.get("epochs") or "-", r.get("held_out") or "-",
         fmt(r["seconds"], 0),
         fmt(r["score"], 4), fmt(r.get("best_single"), 4), fmt(r.get("all_foreground"), 4),
         fmt(r.get("all_background"), 4), r["returncode"]]
        for r in data["tasks"]
    ]  # fmt: skip
    rows.append(["total", "", sum(r.get("networks") or 0 for r in data["tasks"]), "", "", fmt(data["total_seconds"], 0),
                 "", "", "", "", ""])  # fmt: skip
    heads = ["script", "task", "networks", "epochs", "held-out cases", "seconds", "QUBIQ score",
             "best single network", "all-foreground", "all-background", "exit"]  # fmt: skip
    lines += table(heads, rows)
    lines.append("")
    return lines


def gpu_section(state: dict) -> list[str]:
    data = state.get("gpu", {})
    lines = ["## 10. GPU", ""]
    if not data.get("gpus"):
        if "error" in data:
            return lines + [f"failed: {data['error'][:500]}", ""]
        return lines + [NO_GPU + ".", ""]
    names = "; ".join(g.get("device_name", g["name"]) for g in data["gpus"])
    peak = matmul_best(data.get("matmul"))
    lines += [
        f"{names}. Study networks (depth 5, 16 filters), kidney cases, `model.fit` as in section 1 (Keras compiles "
        "with XLA on GPUs by default: `jit_compile='auto'`); TF32 for float32 matmuls/convolutions: "
        f"{data.get('tf32_enabled')}.",
        "",
    ]
    mm_rows = [
        [m["dtype"], m["n"], fmt(m["summary"]["max"], 0), fmt(m["summary"]["median"], 0)]
        for m in data.get("matmul", [])
        if "summary" in m
    ]
    lines += table(["matmul dtype", "n", "GFLOP/s best", "median"], mm_rows)
    lines.append("")
    rows = []
    for res in data.get("configs", []):
        job = res.get("job", {})
        if "error" in res:
            rows.append([job.get("builder"), job.get("size"), job.get("batch"), "failed"] + [""] * 7)
            continue
        s = res["train"]["summary"]
        inf = res["infer"]["summary"]
        achieved = 3 * res["flops"]["forward_flops"] * s["median"] if s.get("median") else None
        rows.append(
            [
                job["builder"],
                job["size"],
                res["batch"],
                fmt(s["median"], 1),
                spread(s, 1),
                fmt(inf["median"], 2),
                fmt(res["infer"].get("predict_on_batch_summary", {}).get("median"), 2),
                fmt((res.get("gpu_peak_train_bytes") or 0) / 2**20, 0),
                fmt((res.get("gpu_peak_infer_bytes") or 0) / 2**20, 0),
                fmt(achieved / 1e12 if achieved else None, 2),
                fmt(100 * ratio(achieved, peak * 1e9) if achieved and peak else None, 1),
            ]
        )
    lines += table(
        [
            "builder",
            "px",
            "batch",
            "train img/s",
            "min-max",
            "predict ms/case",
            "predict_on_batch ms",
            "GPU peak train MiB",
            "GPU peak infer MiB",
            "achieved TFLOP/s",
            "% of fp32 matmul peak",
        ],
        rows,
    )
    if data.get("skipped"):
        lines += [
            "",
            "Skipped: "
            + "; ".join(f"{s['builder']} {s['size']} px batch {s['batch']} ({s['why']})" for s in data["skipped"]),
        ]
    lines.append("")
    return lines


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


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
        from common.demo import ensure_demo_data

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
    with tempfile.TemporaryDirectory(prefix="qubiq-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        t0 = time.perf_counter()
        state["info"] = bench.run({"kind": "info"})
        state["section_seconds"]["info"] = time.perf_counter() - t0
        steps = [
            ("flops", {"flops"}, section_flops),
            ("input", {"input"}, section_input),
            ("throughput/inference/memory", {"throughput", "inference", "memory"}, section_configs),
            ("tuning", {"tuning"}, section_tuning),
            ("experts", {"experts"}, section_experts),
            ("score", {"score"}, section_score),
            ("suite", {"suite"}, section_suite),
            ("gpu", {"gpu"}, section_gpu),
        ]
        for name, wanted, function in steps:
            if not wanted & sections:
                continue
            t0 = time.perf_counter()
            try:
                function(bench, state)
            except Exception:
                state.setdefault("failures", {})[name] = traceback.format_exc()
                say(f"[{name}] failed:\n{traceback.format_exc()}")
            state["section_seconds"][name] = time.perf_counter() - t0
    state["load_end"] = load_average()
    state["finished_utc"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    report = render(state)
    if state.get("failures"):
        report += (
            "\n## Failures\n\n"
            + "\n".join(f"- {k}: `{v.strip().splitlines()[-1]}`" for k, v in state["failures"].items())
            + "\n"
        )
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
