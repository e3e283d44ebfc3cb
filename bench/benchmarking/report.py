"""The markdown report: :func:`render` turns a run's ``state`` (as ``main`` builds it, or as read back
from its JSON file) into the report's text, one function per section; :func:`results_paths` names its files.

Nothing here measures or imports TensorFlow; every figure comes from ``state``.
"""

from __future__ import annotations

import math
import platform
import re
from pathlib import Path

from bench.benchmarking.settings import NO_GPU, SECTIONS
from bench.benchmarking.stats import ratio


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


def matmul_best(matmul: list[dict], dtype: str = "float32") -> float | None:
    for entry in matmul or []:
        if entry.get("dtype") == dtype and "summary" in entry:
            return entry["summary"]["max"]
    return None


def config_rows(results: list[dict], state: dict, peak: float | None, gpu: bool) -> dict:
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
    """The whole report: the machine, then each section that ran, then the wall time of each."""
    sections = state["sections"]
    gpus = state.get("info", {}).get("gpus") or []
    lines = header_lines(state, gpus)
    peak = matmul_best(state.get("flops", {}).get("matmul"))
    configs = state.get("configs")
    if configs:
        lines += configs_sections(state, configs, peak, gpus)
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


def header_lines(state: dict, gpus: list[dict]) -> list[str]:
    """The title, the command and the table of the machine, versions, load and sections (and a no-GPU line)."""
    args = state["args"]
    info = state.get("info", {})
    machine = state["machine"]
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
            ["sections", ", ".join(s for s in SECTIONS if s in state["sections"])],
            ["repeats", args["repeats"]],
        ],
    )
    lines.append("")
    if not gpus:
        lines += [f"**{NO_GPU}.**", ""]
    return lines


def configs_sections(state: dict, configs: dict, peak: float | None, gpus: list[dict]) -> list[str]:
    """Sections 1, 3 and 4 (the per-configuration workers' figures), with section 2 after the first."""
    args = state["args"]
    sections = state["sections"]
    rows = config_rows(configs["results"], state, peak, bool(gpus))
    skipped = ", ".join(f"{s['preset']} {s['builder']} {s['size']} px" for s in configs["skipped"])
    skipped_line = f"Skipped ({'--quick' if args['quick'] else ''}): {skipped}." if skipped else "Nothing skipped."
    lines = []
    if "throughput" in sections:
        lines += throughput_section(args["repeats"], rows["throughput"], skipped_line)
    if "input" in sections and state.get("input"):
        lines += input_section(state)
    if "inference" in sections:
        lines += inference_section(rows["inference"], skipped_line)
    if "memory" in sections:
        lines += memory_section(rows["memory"], skipped_line, bool(gpus))
    return lines


def throughput_section(repeats: int, rows: list[list], skipped_line: str) -> list[str]:
    lines = [
        "## 1. Training throughput",
        "",
        "Kidney demo cases (16 training cases of the seed's split) through "
        "`common.training.stream.training_dataset` (in-graph augmentation on, parallel map, prefetch), "
        "the project's `build_model` and `compile_for` "
        "(Adam, soft Dice). Measured with `model.fit`: one untimed warm-up call (tracing, compilation), then "
        f"{repeats} timed calls of a fixed number of steps; a per-step timestamp callback gives "
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
        rows,
    )
    return lines + ["", skipped_line, ""]


def inference_section(rows: list[list], skipped_line: str) -> list[str]:
    lines = [
        "## 3. Inference per case",
        "",
        "`model.predict` on one prepared case (batch 1), after 2 warm-up calls; milliseconds. "
        "`predict_on_batch` runs the same compiled predict function without `predict`'s per-call set-up "
        "(data adapter, iterator), i.e. the network's own time.",
        "",
    ]
    lines += table(["network", "px", "predict ms (median)", "min-max", "n", "predict_on_batch ms", "min-max"], rows)
    return lines + ["", skipped_line, ""]


def memory_section(rows: list[list], skipped_line: str, gpu: bool) -> list[str]:
    lines = [
        "## 4. Peak memory",
        "",
        "Peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) of the configuration's own "
        "subprocess, after loading the data, after the training steps and after inference (MiB; includes "
        "the TensorFlow runtime, about the 'after data' figure)."
        + (
            " GPU: `tf.config.experimental.get_memory_info('GPU:0')['peak']`, reset before training "
            "and before inference."
            if gpu
            else ""
        ),
        "",
    ]
    header = ["network", "px", "batch", "RSS after data", "peak RSS after training", "peak RSS after inference"]
    if gpu:
        header += ["GPU peak training MiB", "GPU peak inference MiB"]
    lines += table(header, rows)
    return lines + ["", skipped_line, ""]


def input_section(state: dict) -> list[str]:
    data = state["input"]
    lines = ["## 2. Input pipeline alone", ""]
    if "error" in data:
        return lines + [f"failed: {data['error'][:500]}", ""]
    lines += [
        "Iterating `common.training.stream.training_dataset` (augmented batches; the images are preloaded numpy "
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
        rows = config_rows(configs["results"], state, peak, False)["achieved"]
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
        "(`common.training.networks.NetworkPool`). Seconds and resident memory (MiB) after each network.",
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


def failures_appendix(state: dict) -> str:
    """The sections that raised, each with its exception's last line (appended after the report; empty if none)."""
    if not state.get("failures"):
        return ""
    return (
        "\n## Failures\n\n"
        + "\n".join(f"- {k}: `{v.strip().splitlines()[-1]}`" for k, v in state["failures"].items())
        + "\n"
    )
