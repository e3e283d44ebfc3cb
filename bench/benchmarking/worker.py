"""Worker processes: everything that imports TensorFlow, always inside a function.

The parent runs every measurement as ``python bench/benchmark.py --worker JSON``; :func:`worker_main`
runs the job's handler and writes its answer as one ``@@BENCH {json}`` line on stdout (:func:`emit`).
Each job starts a fresh process, so its peak RSS is its own and its thread settings, which TensorFlow
reads only when it starts (:func:`start_tensorflow`), can differ from the other workers'. The tuning
worker stays alive and answers one timed segment per command read from stdin.
"""

from __future__ import annotations

import json
import math
import platform
import re
import sys
import time
import traceback
from pathlib import Path

from bench.benchmarking.flops import count_flops, matmul_peak
from bench.benchmarking.machine import gpu_details, load_average
from bench.benchmarking.settings import MARKER, PRESETS
from bench.benchmarking.stats import batch_sizes, segment_throughput, summarise
from bench.benchmarking.study import study_generator


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
    from common.training.stream import fit_input, training_dataset
    from common.training.trainer import augmentation_of

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

    from common.training.networks import build_model, compile_for

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
    """A stand-in for ``common.training.stream.training_dataset``: the study's Python generator, no prefetch.

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
    from common.training.networks import NETWORKS

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
        "networks_reused": NETWORKS.reused,
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
    from common.training.inference import Predictor
    from common.training.networks import NETWORKS
    from common.training.trainer import train_expert

    NETWORKS.enabled = job["pool"]
    arrays = load_kidney(job["data_root"], 128)
    images, masks = arrays["images"], arrays["masks"]
    settings = kidney_module().demo.replace(epochs=job["epochs"], patience=0)
    out = Path(job["out"])
    rows = []
    for number in range(1, job["networks"] + 1):
        t0 = time.perf_counter()
        result = train_expert(
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
    return {"pool": job["pool"], "epochs": job["epochs"], "networks": rows, "reused": NETWORKS.reused}


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
