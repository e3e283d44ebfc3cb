"""Apply a finished run's (or a cross-validation's) networks to new images: ``python -m common.predict``.

::

    python -m common.predict RUN -i INPUT -o OUTPUT [--fold 1,3] [--tta none|flip] [--save-members]
                                                    [--uncertainty] [--batch-size N] [--continue]

Each image is preprocessed exactly as the run's images were (its ``config.json``: channels, CT window,
fit, input size), put through every network of the ensemble (each averaged over the test-time views),
the members' maps are put back on the image's own grid and averaged (:class:`MapAverager`, the gather
step's mechanism), and the mean is written with the image's affine and header. What the output folder
holds::

    OUTPUT/<stem>.nii.gz                  the ensemble's probability map (float32, the input's grid)
    OUTPUT/members/<member>/<stem>.nii.gz each network's (or head's) map          (--save-members)
    OUTPUT/std/<stem>.nii.gz              the members' per-pixel standard deviation (--uncertainty)
    OUTPUT/entropy/<stem>.nii.gz          the binary entropy of the ensemble's map, in bits (--uncertainty)
    OUTPUT/predict.json                   the run, its networks and folds, the options, the versions, and
                                          each input with its outputs

``<stem>`` is the input file's name without ``.nii(.gz)``, or ``<case>/taskTT`` for a QUBIQ case folder
(the layout of a submission); ``<member>`` is ``seg01`` ..., a consensus network's name, or in a
cross-validation ``fold2-seg01`` (:mod:`common.runs.trained`). Each network's outputs become its members'
maps on the image's grid by the run's strategy (:meth:`common.strategies.Strategy.member_maps`), as in
the gather step.

Everything that can be known before the first map is checked first, every problem listed: the run, the
options, each input's header (channels against the run's, 2D), and the output names. Maps are written
atomically, one image at a time, so ``--continue`` finishes an interrupted prediction: it skips the images
whose outputs are all there, and refuses a folder whose ``predict.json`` names another run, input or
options (the batch size may change: it changes no map beyond float rounding).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.cases import DataError, load_image
from common.data.inputs import InputImage, find_inputs, read_header
from common.data.layout import layout_of
from common.data.preprocessing import Geometry, from_input, normalise_image, to_input
from common.evaluation.ensemble import MapAverager, binary_entropy_bits
from common.runs.folder import unreadable_network
from common.runs.trained import TrainedRun, open_trained
from common.spec import ConfigError
from common.storage import StorageError, write_json
from common.strategies import strategy
from common.training.tta import TTA

PREDICT_FILE = "predict.json"
MEMBERS_FOLDER, STD_FOLDER, ENTROPY_FOLDER = "members", "std", "entropy"
#: Images read and put through every network at a time (rounded up to a multiple of the batch size).
CHUNK_IMAGES = 8
#: The predict.json entries that --continue must find unchanged.
CONTINUE_KEYS = ("run", "folds", "input", "tta", "save_members", "uncertainty")


def default_tta(run: TrainedRun) -> str:
    """``flip`` where the run trained with horizontal flips (``augment`` and ``flip``), else ``none``."""
    return "flip" if run.settings.augment and run.settings.flip else "none"


@dataclass
class PredictOptions:
    """The command's options besides RUN, INPUT and OUTPUT (each default once)."""

    folds: list[int] | None = None  # a cross-validation's folds to use (default: all)
    tta: str | None = None  # "none" or "flip" (default: default_tta)
    batch_size: int | None = None  # images per network step (default: the run's)
    save_members: bool = False
    uncertainty: bool = False
    resume: bool = False  # --continue


@dataclass
class Prediction:
    """A checked prediction, before anything is written: the run, the inputs and every output path."""

    run: TrainedRun
    input: Path
    output: Path
    options: PredictOptions
    tta: str
    batch_size: int
    inputs: list[InputImage]
    outputs: dict[str, dict[str, Path]]  # input name -> kind ("map", "std", "entropy", "member:<m>") -> path
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    done: set[str] = field(default_factory=set)  # inputs whose outputs are complete (--continue)
    slices: dict[str, int] = field(default_factory=dict)  # input name -> its slices (1 for a 2D image)

    def place(self, item: InputImage) -> int:
        """The place of ``item``'s first slice among all the inputs' slices (a sampler's noise follows it)."""
        before = self.inputs[: self.inputs.index(item)]
        return sum(self.slices.get(other.name, 1) for other in before)

    def record(self) -> dict:
        """What ``predict.json`` holds."""
        from common.evaluation.report import versions

        settings = self.run.settings
        return {
            "run": str(self.run.folder.resolve()),
            "kind": self.run.kind,
            "folds": list(self.run.folds) or None,
            "input": str(self.input.resolve()),
            "tta": self.tta,
            "save_members": self.options.save_members,
            "uncertainty": self.options.uncertainty,
            "batch_size": self.batch_size,
            "dataset": self.run.spec.name,
            "task": self.run.task,
            "strategy": settings.strategy,
            "preprocessing": {
                "channels": self.run.spec.channels,
                "ct_window": settings.ct_window,
                "fit": settings.fit,
                "input_size": settings.input_size,
            },
            "networks": [
                {"name": n.name, "fold": n.fold, "model": str(n.model), "members": list(n.members)}
                for n in self.run.networks
            ],
            "versions": versions(),
            "inputs": [
                {
                    "name": item.name,
                    "image": str(item.path),
                    "outputs": {k: str(p.relative_to(self.output)) for k, p in self.outputs[item.name].items()},
                }
                for item in self.inputs
            ],
        }


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output(output: Path, input_path: Path, run: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ConfigError(f"-o {output} is a file; name a folder for the maps (nothing is overwritten)")
    if input_path.is_dir() and _inside(output, input_path):
        raise ConfigError(f"-o {output} lies inside the input folder {input_path}; choose a folder outside it")
    if _inside(output, run):
        raise ConfigError(f"-o {output} lies inside the run folder {run}; choose a folder outside it")


def output_paths(item: InputImage, output: Path, members: list[str], options: PredictOptions) -> dict[str, Path]:
    paths = {"map": output / item.output}
    if options.uncertainty:
        paths["std"] = output / STD_FOLDER / item.output
        paths["entropy"] = output / ENTROPY_FOLDER / item.output
    if options.save_members:
        paths.update({f"member:{m}": output / MEMBERS_FOLDER / m / item.output for m in members})
    return paths


def check_headers(run: TrainedRun, inputs: list[InputImage]) -> tuple[list[str], list[str], dict[str, int]]:
    """Every input's header read: the problems (one line each), the warnings (a border cropped off) and each
    input's slice count (1 for a 2D image). A run on volumes takes volumes (:mod:`common.data.layout`), one on
    2D images takes 2D images (the channel rule of :mod:`common.data.inputs`); the other kind is refused."""
    problems, notes, slices = [], [], {}
    settings, layout = run.settings, layout_of(run.spec)
    for item in inputs:
        try:
            shape = tuple(int(d) for d in read_header(item.path).shape)
        except DataError as error:
            problems.append(str(error))
            continue
        problem = layout.shape_problem(shape)
        if problem is not None:
            problems.append(f"{item.path}: {problem}")
            continue
        grid, slices[item.name] = layout.in_plane(shape), layout.depth(shape)
        geometry = Geometry.fit(grid, settings.input_size, settings.fit)
        if geometry.crops:
            kept = geometry.extent or geometry.resized
            notes.append(
                f"{item.path}: {grid[0]} x {grid[1]} is larger than the run's {settings.input_size} px input and "
                f"the run fits by cropping (fit=crop): outside the central {kept[0]} x {kept[1]} the map is "
                "background (probability 0)"
            )
    return problems, notes, slices


def plan_prediction(run_dir: Path, input_path: Path, output: Path, options: PredictOptions) -> Prediction:
    """Every check that can be made before a map is written; nothing is created.

    Raises:
        ConfigError, DataError: the reason, naming the file or option (several problems: one line each).
    """
    run_dir, input_path, output = Path(run_dir), Path(input_path), Path(output)
    run = open_trained(run_dir, options.folds)
    members = run.members
    for flag, wanted in (("--save-members", options.save_members), ("--uncertainty", options.uncertainty)):
        if wanted and len(members) < 2:
            raise ConfigError(
                f"{flag}: {run.folder} has one map ({members[0]}, strategy {run.settings.strategy}) and no members "
                "to save or to disagree; a cross-validation folder of it has one per fold"
            )
    tta = options.tta or default_tta(run)
    if tta not in TTA:
        raise ConfigError(f"--tta must be one of {', '.join(TTA)}, got {tta!r}")
    if options.batch_size is not None and options.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {options.batch_size}")
    check_output(output, input_path, run_dir)
    inputs, skipped = find_inputs(input_path, run.task)
    problems, notes, slices = check_headers(run, inputs)
    outputs, owner = {}, {}
    for item in inputs:
        outputs[item.name] = output_paths(item, output, members, options)
        for path in outputs[item.name].values():
            if path in owner:
                problems.append(f"{owner[path]} and {item.path} would both write {path}; rename one of them")
            owner.setdefault(path, item.path)
    if problems:
        head = f"{len(problems)} input problem(s), nothing was written:\n  " if len(problems) > 1 else ""
        raise DataError(head + "\n  ".join(problems))
    batch_size = options.batch_size or run.settings.batch_size
    plan = Prediction(run, input_path, output, options, tta, batch_size, inputs, outputs, skipped, notes, slices=slices)
    check_existing(plan)
    return plan


def check_existing(plan: Prediction) -> None:
    """An existing non-empty output folder: refused, or with ``--continue`` checked against its
    ``predict.json``, and the inputs whose outputs are complete marked done."""
    output = plan.output
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not plan.options.resume:
        hint = " (or --continue to finish the prediction in it)" if (output / PREDICT_FILE).is_file() else ""
        raise ConfigError(f"-o {output} exists and is not empty; choose another folder{hint} (nothing is overwritten)")
    try:
        saved = json.loads((output / PREDICT_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--continue: {output} holds no {PREDICT_FILE}: not a prediction folder") from None
    except ValueError as error:
        raise ConfigError(f"--continue: unreadable {output / PREDICT_FILE} ({error})") from error
    wanted = plan.record()
    differing = [f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in CONTINUE_KEYS if saved.get(k) != wanted[k]]
    if differing:
        raise ConfigError(
            f"--continue: {output / PREDICT_FILE} was written for another prediction ({'; '.join(differing)}); "
            "continue it with its own run, input and options, or choose another folder"
        )
    plan.done = {name for name, paths in plan.outputs.items() if all(p.is_file() for p in paths.values())}


class Progress:
    """One line per image with elapsed and remaining time; on a terminal one line redrawn as a bar."""

    def __init__(self, total: int, echo: Callable[[str], None] | None, stream=None):
        self.total, self.echo, self.stream = total, echo, stream or sys.stdout
        self.started, self.count = time.perf_counter(), 0
        self.bar = echo is not None and hasattr(self.stream, "isatty") and self.stream.isatty()

    def step(self, name: str, written: int | None = None) -> None:
        """Image ``name`` is done; ``written`` images are done in all (its chunk's last), which sets the rate."""
        self.count += 1
        if self.echo is None:
            return
        elapsed = time.perf_counter() - self.started
        done = max(written or self.count, self.count)
        left = elapsed / done * (self.total - done)
        text = f"[{self.count}/{self.total}] {name}: {elapsed:.1f} s elapsed, about {left:.1f} s left"
        if self.bar:
            filled = round(30 * self.count / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text[text.index(']') + 2 :]}\033[K")
            if self.count == self.total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            self.echo(text)


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def run_prediction(plan: Prediction, log: Callable[[str], None] | None = print, warn=warn) -> dict:
    """Write every map of the plan (see the module's docstring); return ``predict.json``'s record with timings.

    ``log`` takes the progress lines (None: none); ``warn`` each skipped entry and cropped border, even then.
    """
    from common.training.inference import Predictor

    say = log or (lambda _: None)
    for line in plan.skipped + plan.warnings:
        warn(line)
    record = plan.record()
    plan.output.mkdir(parents=True, exist_ok=True)
    write_json(plan.output / PREDICT_FILE, {**record, "complete": False})
    todo = [item for item in plan.inputs if item.name not in plan.done]
    say(
        f"{plan.run.describe()}; test-time augmentation {plan.tta}; {len(todo)} image(s) to predict"
        + (f", {len(plan.done)} already done" if plan.done else "")
        + f" into {plan.output}"
    )
    started = time.perf_counter()
    predictor = Predictor(plan.batch_size, TTA[plan.tta], unreadable=unreadable_network)
    learner = strategy(plan.run.settings.strategy)
    saved = [
        predictor.load(network.model, learner.sampler(plan.run.settings, network.network.seed))
        for network in plan.run.networks
    ]
    loaded = time.perf_counter() - started
    say(f"loaded {len(saved)} network(s) in {loaded:.1f} s")
    progress = Progress(len(todo), log)
    # a volume is a chunk of its own: its slices are already many images
    chunk = 1 if plan.run.spec.volumetric else plan.batch_size * -(-CHUNK_IMAGES // plan.batch_size)
    for first in range(0, len(todo), chunk):
        try:
            done = predict_chunk(plan, predictor, saved, todo[first : first + chunk])
        except DataError as error:  # an image's data (NaN, a short file) is only read here
            raise DataError(
                f"{error}; fix or move that image, then finish with the same command and --continue"
            ) from error
        for item in done:
            progress.step(item.name, written=first + len(done))
    seconds = time.perf_counter() - started - loaded
    result = {
        **record,
        "complete": True,
        "seconds": {"load": round(loaded, 3), "predict": round(seconds, 3)},
        "predicted": len(todo),
    }
    write_json(plan.output / PREDICT_FILE, result)
    say(f"{len(todo)} image(s) predicted in {seconds:.1f} s after loading; maps in {plan.output}")
    return result


def predict_chunk(plan: Prediction, predictor, saved: list, items: list[InputImage]) -> list[InputImage]:
    """Read, preprocess and predict ``items`` through every network; write each one's maps (a volume's
    slices are predicted and stacked back, :mod:`common.data.layout`)."""
    settings, layout = plan.run.settings, layout_of(plan.run.spec)
    references, geometries, images, counts = {}, {}, [], []
    for item in items:
        image, references[item.name] = load_image(item.path, layout)
        planes = layout.slices(normalise_image(image, settings.ct_window))  # one intensity scale per case
        geometries[item.name] = Geometry.fit(planes.shape[1:3], settings.input_size, settings.fit)
        images.extend(to_input(plane, geometries[item.name]) for plane in planes)
        counts.append(len(planes))
    batch = np.stack(images)
    averager = MapAverager()
    learner = strategy(settings.strategy)
    first = plan.place(items[0])  # the chunk's place in the prediction (a sampler's noise follows it)
    starts = np.cumsum([0, *counts])
    for network, weights in zip(plan.run.networks, saved, strict=True):
        maps = predictor.predict(weights, batch, first=first)
        for index, item in enumerate(items):
            stack = maps[starts[index] : starts[index + 1]]
            outputs = [
                layout.from_slices(np.stack([from_input(plane[..., c], geometries[item.name]) for plane in stack]))
                for c in range(maps.shape[-1])
            ]
            for member, on_case in zip(network.members, learner.member_maps(network.network, outputs), strict=True):
                averager.add(item.name, on_case)
                if plan.options.save_members:
                    write_map(plan.outputs[item.name][f"member:{member}"], on_case, references[item.name], layout)
    means = averager.mean()
    spread = averager.std() if plan.options.uncertainty else {}
    for item in items:
        paths, reference = plan.outputs[item.name], references[item.name]
        if plan.options.uncertainty:
            write_map(paths["std"], spread[item.name], reference, layout)
            write_map(paths["entropy"], binary_entropy_bits(means[item.name]), reference, layout)
        write_map(paths["map"], means[item.name], reference, layout)  # last: an image is done once its map is there
    return items


def write_map(path: Path, array: np.ndarray, reference, layout=None) -> None:
    from common.evaluation.predictions import write_prediction

    write_prediction(path, np.clip(array, 0.0, 1.0), reference, layout)


def predict(
    run_dir: Path, input_path: Path, output: Path, log: Callable[[str], None] | None = print, **options
) -> dict:
    """Plan and run a prediction (``options``: the fields of :class:`PredictOptions`); see the module's docstring.

    Raises:
        ConfigError, DataError: a refusal before any map is written, or an unreadable image met while running.
        StorageError: a map could not be written (a full disk); the message names ``--continue``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nibabel's header notes; the inputs' own are listed
        plan = plan_prediction(run_dir, input_path, output, PredictOptions(**options))
    try:
        return run_prediction(plan, log)
    except StorageError as error:
        raise error.advise(f"finish the prediction with the same command and --continue (-o {output})") from error
