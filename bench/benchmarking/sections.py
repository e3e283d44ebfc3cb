"""The parent's orchestration: one function per section, each running its workers and filling ``state``.

The parent never imports TensorFlow: every measurement is a worker subprocess (:class:`Bench` runs one
job and reads its last ``@@BENCH`` answer; :class:`TuningWorker` keeps one alive for the tuning
section's interleaved segments). :func:`run_sections` runs the chosen sections in order, timing each
and recording a failure instead of stopping.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.benchmarking.report import fmt
from bench.benchmarking.settings import (
    BUILDERS,
    ENTRY,
    FULL_STEPS,
    LR_REFERENCE,
    MARKER,
    NO_GPU,
    PRESETS,
    QUICK_CONFIGS,
    ROOT,
    SIZES,
    SUITE_TASKS,
)
from bench.benchmarking.stats import interleaved_order, ratio, scaled_learning_rate, summarise
from common.runs.folder import RESULTS_FILE


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
        command = [sys.executable, str(ENTRY), "--worker", json.dumps(job)]
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
        command = [sys.executable, str(ENTRY), "--worker", json.dumps(job)]
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
                     "command": command[1:], **suite_scores(folder / RESULTS_FILE)})  # fmt: skip
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


#: The sections in the order they run: the name their time and failure are recorded under, the
#: sections (of --sections) they serve, and the function that runs them.
STEPS = (
    ("flops", {"flops"}, section_flops),
    ("input", {"input"}, section_input),
    ("throughput/inference/memory", {"throughput", "inference", "memory"}, section_configs),
    ("tuning", {"tuning"}, section_tuning),
    ("experts", {"experts"}, section_experts),
    ("score", {"score"}, section_score),
    ("suite", {"suite"}, section_suite),
    ("gpu", {"gpu"}, section_gpu),
)


def run_sections(args: argparse.Namespace, state: dict) -> None:
    """The info worker, then every step serving one of ``state["sections"]``, in a temporary folder.

    Each step's seconds go to ``state["section_seconds"]``; a step that raises is recorded in
    ``state["failures"]`` (its traceback) and the next one runs.
    """
    sections = state["sections"]
    with tempfile.TemporaryDirectory(prefix="qubiq-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        t0 = time.perf_counter()
        state["info"] = bench.run({"kind": "info"})
        state["section_seconds"]["info"] = time.perf_counter() - t0
        for name, wanted, function in STEPS:
            if not wanted & sections:
                continue
            t0 = time.perf_counter()
            try:
                function(bench, state)
            except Exception:
                state.setdefault("failures", {})[name] = traceback.format_exc()
                say(f"[{name}] failed:\n{traceback.format_exc()}")
            state["section_seconds"][name] = time.perf_counter() - t0
