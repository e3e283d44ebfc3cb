"""How fast ``python -m common.predict`` applies a run's networks, against the way a run predicts its own cases.

::

    python bench/predict.py RUN [RUN ...] [--images 24] [--repeats 3]

For each run folder (a run or a cross-validation folder), the same images (the first ``--images`` of the
run's data: its training and validation images, linked into a flat folder) are predicted at ``--tta none``
two ways, each in a fresh process (so that TensorFlow's start and the tracing are paid as a user pays them):

- **predict**: ``common.runs.predict.predict``: every network read once (the first whole, the others' weights
  into it), then the images in chunks through every network, the ensemble map written per image. The
  one-time load and the prediction are timed apart;
- **run's way**: what a run does for its held-out cases (``common.runs.execute`` then the gather step): for each
  network a new predictor loads its file and predicts every image, each member's map is written, then the
  maps are read back, averaged and the ensemble map written.

Both write the same ensemble maps (checked to 1e-6). Prints a markdown table (median and range of the
repeats) with the machine; writes nothing else.

::

    python bench/predict.py --tta-effect RUN [RUN ...]

instead predicts each run's held-out cases (a run folder, or a cross-validation's ``foldK`` folders: each
fold's own networks on its own held-out cases) with ``--tta none`` and ``--tta flip``, scores both with
``common.score`` against the experts' masks, and prints the QUBIQ score of each, per run and pooled over
the cases, and how many cases each way wins.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.data_check import cpu_name  # noqa: E402


def images_of(run: Path, count: int, folder: Path) -> list[Path]:
    """The first ``count`` training and validation images of the run's data, linked into ``folder``."""
    from common.data.cases import discover_cases
    from common.runs.trained import open_trained

    trained = open_trained(run)
    config = trained.config
    root, name = Path(config["data_root"]), trained.spec.name
    release = (config.get("release") or {}).get("release")
    cases = discover_cases(root, name, "train", release=release) + discover_cases(
        root, name, "validation", release=release
    )
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases[:count]:
        (folder / f"{case.case_id}.nii.gz").symlink_to(case.image_path.resolve())
    return sorted(folder.iterdir())


def worker_predict(run: Path, images: Path, out: Path) -> dict:
    from common.runs.predict import predict
    from common.training import inference  # noqa: F401 - the backend imported before the clock starts, as below

    started = time.perf_counter()
    record = predict(run, images, out, log=None, tta="none")
    return {
        "load_s": record["seconds"]["load"],
        "predict_s": record["seconds"]["predict"],
        "total_s": time.perf_counter() - started,
        "images": record["predicted"],
        "networks": len(record["networks"]),
    }


def worker_run_way(run: Path, images: Path, out: Path) -> dict:
    """One network at a time, its maps through the disk, as a run's execute and gather steps do."""
    import numpy as np

    from common.data.cases import load_image
    from common.data.preprocessing import Geometry, from_input, normalise_image, to_input
    from common.evaluation.ensemble import MapAverager
    from common.evaluation.predictions import read_prediction, write_prediction
    from common.runs.trained import open_trained
    from common.training.inference import Predictor

    started = time.perf_counter()
    trained = open_trained(run)
    settings, channels = trained.settings, trained.spec.channels
    paths = sorted(images.iterdir())
    loaded = [load_image(p, channels) for p in paths]
    geometries = [Geometry.fit(image.shape[:2], settings.input_size, settings.fit) for image, _ in loaded]
    batch = np.stack(
        [
            to_input(normalise_image(image, settings.ct_window), g)
            for (image, _), g in zip(loaded, geometries, strict=True)
        ]
    )
    written = []
    for network in trained.networks:
        predictor = Predictor(settings.batch_size)
        maps = predictor.predict(predictor.load(network.model), batch)
        for channel, member in enumerate(network.members):
            for index, path in enumerate(paths):
                target = out / "members" / member / path.name
                write_prediction(target, from_input(maps[index, ..., channel], geometries[index]), loaded[index][1])
                written.append((path.name, target))
    averager = MapAverager()
    for name, target in written:
        averager.add(name, read_prediction(target))
    references = {path.name: reference for path, (_, reference) in zip(paths, loaded, strict=True)}
    for name, mean in averager.mean().items():
        write_prediction(out / name, mean, references[name])
    total = time.perf_counter() - started
    return {
        "load_s": None,
        "predict_s": None,
        "total_s": total,
        "images": len(paths),
        "networks": len(trained.networks),
    }


def run_worker(mode: str, run: Path, images: Path, out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, str(run), str(images), str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"worker {mode} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def same_maps(a: Path, b: Path) -> float:
    import numpy as np

    from common.evaluation.predictions import read_prediction

    return max(
        float(np.abs(read_prediction(p) - read_prediction(b / p.name)).max()) for p in sorted(a.glob("*.nii.gz"))
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/predict.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="finished run or cross-validation folders")
    parser.add_argument("--images", type=int, default=24, metavar="N", help="images to predict (default: %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=3, metavar="N", help="repeats of each measurement (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; --tta none; "
        f"median (min-max) of {args.repeats} repeats, each in a fresh process"
    )
    print(
        "| run | networks | images | way | load once (s) | after the load (s) | in all (s) | images/s in all | "
        "images/s after the load | whole process (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        with tempfile.TemporaryDirectory() as scratch:
            images = Path(scratch) / "images"
            count = len(images_of(run, args.images, images))
            rows: dict[str, list[dict]] = {"predict": [], "run's way": []}
            slugs = {"predict": "predict", "run's way": "runs-way"}
            for repeat in range(args.repeats):
                for mode in rows:
                    rows[mode].append(run_worker(slugs[mode], run, images, Path(scratch) / f"{slugs[mode]}-{repeat}"))
            gap = same_maps(Path(scratch) / "predict-0", Path(scratch) / "runs-way-0")
            if gap > 1e-6:
                raise SystemExit(f"{run}: the two ways' maps differ by {gap:g}")
            for mode, results in rows.items():
                load = [r["load_s"] for r in results if r["load_s"] is not None]
                after = [r["predict_s"] for r in results if r["predict_s"] is not None]
                total = [r["total_s"] for r in results]
                print(
                    f"| {run.name} | {results[0]['networks']} | {count} | {mode} | {spread(load) if load else '-'} | "
                    f"{spread(after) if after else '-'} | {spread(total)} | "
                    f"{spread([r['images'] / r['total_s'] for r in results])} | "
                    f"{spread([count / a for a in after]) if after else '-'} | "
                    f"{spread([r['process_s'] for r in results])} |"
                )


def held_out_scores(run: Path, tta: str, scratch: Path) -> dict[str, float]:
    """The QUBIQ score per held-out case of ``run``'s own networks at ``tta`` (maps via common.predict)."""
    from common.data.cases import discover_cases
    from common.runs.predict import predict
    from common.runs.trained import open_trained
    from common.score import score_folder

    trained = open_trained(run)
    config = trained.config
    root, name, task = Path(config["data_root"]), trained.spec.name, trained.task
    release = (config.get("release") or {}).get("release")
    held = set(config["split"]["held_out"])
    splits = {}
    for split in ("train", "validation"):
        for case in discover_cases(root, name, split, release=release):
            if case.case_id in held:
                splits.setdefault(split, []).append(case)
    images = scratch / f"{run.name}-in"
    if not images.exists():
        images.mkdir(parents=True)
        for case in (c for cases in splits.values() for c in cases):
            (images / case.case_id).symlink_to(case.folder.resolve())
    out = scratch / f"{run.name}-{tta}"
    predict(run, images, out, log=None, tta=tta)
    scores = {}
    for split, cases in splits.items():
        scored = score_folder(out, root, name, split, task, cases=[c.case_id for c in cases], release=release)
        scores.update(scored["per_case"])
    return scores


def tta_effect(runs: list[Path]) -> None:
    import numpy as np

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; each run's own networks on its own held-out cases")
    print("| run | cases | QUBIQ, --tta none | QUBIQ, --tta flip | flip - none | cases better / worse with flip |")
    print("|---|---|---|---|---|---|")
    pooled: dict[str, list[float]] = {"none": [], "flip": []}
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs:
            scores = {tta: held_out_scores(run, tta, Path(scratch)) for tta in ("none", "flip")}
            cases = list(scores["none"])
            none, flip = (np.array([scores[t][c] for c in cases]) for t in ("none", "flip"))
            pooled["none"] += none.tolist()
            pooled["flip"] += flip.tolist()
            print(
                f"| {run.parent.name + '/' if run.name.startswith('fold') else ''}{run.name} | {len(cases)} | "
                f"{none.mean():.4f} | {flip.mean():.4f} | {flip.mean() - none.mean():+.4f} | "
                f"{int((flip > none).sum())} / {int((flip < none).sum())} |"
            )
    none, flip = np.array(pooled["none"]), np.array(pooled["flip"])
    print(
        f"| all | {len(none)} | {none.mean():.4f} | {flip.mean():.4f} | {flip.mean() - none.mean():+.4f} | "
        f"{int((flip > none).sum())} / {int((flip < none).sum())} |"
    )


def worker_main(argv: list[str]) -> None:
    mode, run, images, out = argv
    result = (worker_predict if mode == "predict" else worker_run_way)(Path(run), Path(images), Path(out))
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--tta-effect":
        tta_effect([Path(a) for a in sys.argv[2:]])
    else:
        main()
