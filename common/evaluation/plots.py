"""The run's figures: Dice against threshold, one held-out case, the experts' training curves.

Each ``plot_*`` function takes plain data, writes one PNG (dpi 150) atomically -- into a temporary file in
the target folder, then a rename -- creating the folder if needed, and returns the path. Each has a
``figure_*`` twin that only builds and returns the :class:`matplotlib.figure.Figure`, which is what the tests
inspect. Lines and markers carry a ``gid`` (``"ensemble"``, ``"expert:seg01"``, ``"loss:seg01"``, ...) so
that a figure can be checked without relying on drawing order.

Only matplotlib's object API is used (``Figure`` with an Agg canvas): pyplot is never imported, so no
global backend or figure registry is touched, and a figure is freed like any object once unreferenced
(there is nothing to close). No TensorFlow either.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 150
#: One colour per expert, in the order given; the same expert has the same colour in every figure.
EXPERT_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
ENSEMBLE_COLOUR = "black"
#: Consensus and probability share one perceptually uniform map and the range 0..1.
PROBABILITY_CMAP = "viridis"
ENSEMBLE_CONTOUR_COLOUR = "white"  # sits where p crosses 0.5: mid-map teal, so white stands out
_FONT = {"title": 11, "suptitle": 13, "label": 10, "tick": 9, "legend": 9}


def expert_colour(index: int) -> str:
    return EXPERT_COLOURS[index % len(EXPERT_COLOURS)]


# ----------------------------------------------------------------------------------------------------------
# Dice against threshold


def figure_dice_vs_threshold(
    thresholds: Sequence[float],
    ensemble: Sequence[float],
    experts: Mapping[str, Sequence[float]],
    title: str,
    reference: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Mean Dice at each threshold: the ensemble thick with markers, each expert's network thin, references dashed.

    Args:
        thresholds: the x values, e.g. ``0.1 .. 0.9``.
        ensemble: the ensemble's mean Dice at each threshold.
        experts: per expert label (``"seg01"``), its own network's mean Dice at each threshold.
        title: names the dataset, task and cases.
        reference: optional trivial predictions (e.g. ``{"all_foreground": [...]}``), drawn dashed grey.

    Every legend label carries the curve's mean over the thresholds, e.g. ``"seg01 (0.912)"``.
    """
    thresholds = _as_values("thresholds", thresholds)
    if thresholds.size == 0:
        raise ValueError("thresholds is empty; expected e.g. the nine thresholds 0.1 .. 0.9")
    ensemble = _dice_curve("ensemble", ensemble, thresholds.size)
    experts = {str(name): _dice_curve(f"expert {name!r}", values, thresholds.size) for name, values in experts.items()}
    reference = {
        str(name): _dice_curve(f"reference {name!r}", values, thresholds.size)
        for name, values in (reference or {}).items()
    }

    fig = _new_figure((8.6, 4.8))
    ax = fig.add_subplot()
    for index, (name, values) in enumerate(experts.items()):
        ax.plot(
            thresholds,
            values,
            color=expert_colour(index),
            linewidth=1.2,
            alpha=0.85,
            marker="o",
            markersize=3,
            label=f"{name} ({values.mean():.3f})",
            gid=f"expert:{name}",
            zorder=2,
        )
    for index, (name, values) in enumerate(reference.items()):
        ax.plot(
            thresholds,
            values,
            color=("0.45", "0.65", "0.3", "0.8")[index % 4],
            linestyle=("--", ":", "-.", (0, (5, 1, 1, 1)))[index % 4],
            linewidth=1.4,
            label=f"{name.replace('_', '-')} ({values.mean():.3f})",
            gid=f"reference:{name}",
            zorder=1,
        )
    ax.plot(
        thresholds,
        ensemble,
        color=ENSEMBLE_COLOUR,
        linewidth=2.8,
        marker="o",
        markersize=6,
        label=f"ensemble ({ensemble.mean():.3f})",
        gid="ensemble",
        zorder=3,
    )

    ax.set_xlabel("threshold t (prediction >= t vs. consensus >= t)", fontsize=_FONT["label"])
    ax.set_ylabel("mean Dice over cases (0..1)", fontsize=_FONT["label"])
    ax.set_title(title, fontsize=_FONT["title"])
    ax.set_ylim(0.0, 1.02)  # a little headroom so markers at Dice 1 are not cut in half
    ax.set_yticks(np.linspace(0, 1, 6))
    pad = 0.04 * max(float(np.ptp(thresholds)), 0.1)
    ax.set_xlim(float(thresholds.min()) - pad, float(thresholds.max()) + pad)
    ax.set_xticks(thresholds)
    ax.set_xticklabels([f"{t:g}" for t in thresholds])
    ax.tick_params(labelsize=_FONT["tick"])
    ax.grid(True, alpha=0.3)
    ax.legend(
        title="network (mean over thresholds)",
        fontsize=_FONT["legend"],
        title_fontsize=_FONT["legend"],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )  # never over a curve
    return fig


def plot_dice_vs_threshold(
    path: str | os.PathLike,
    thresholds: Sequence[float],
    ensemble: Sequence[float],
    experts: Mapping[str, Sequence[float]],
    title: str,
    reference: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Write :func:`figure_dice_vs_threshold` to ``path`` (PNG); returns the path."""
    return save_figure(figure_dice_vs_threshold(thresholds, ensemble, experts, title, reference), path)


# ----------------------------------------------------------------------------------------------------------
# One held-out case


def figure_case(
    image: np.ndarray,
    masks: np.ndarray,
    probability: np.ndarray,
    title: str,
    channel_names: Sequence[str] | None = None,
    expert_labels: Sequence[str] | None = None,
) -> Figure:
    """One held-out case in three panels.

    1. the image in grey (a multi-channel ``(rows, cols, C)`` image: its first channel, named) with each
       expert's mask outline at level 0.5, one colour per expert;
    2. the experts' consensus, the mean of the masks (values ``k/n``), on a 0..1 colour map;
    3. the ensemble's probability map on the same colour map and range, outlined where ``p >= 0.5``.

    Args:
        image: ``(rows, cols)`` or ``(rows, cols, C)``.
        masks: binary (bool or 0/1), ``(experts, rows, cols)``.
        probability: the ensemble's map in [0, 1], ``(rows, cols)``.
        title: names the dataset, task and case.
        channel_names: optional names of the image's channels (one per channel).
        expert_labels: optional legend labels, one per expert (default ``"expert 1" .. "expert n"``).

    An expert whose mask is empty (or covers the whole image) has no outline; its legend entry says so.
    """
    image, masks, probability = _check_case(image, masks, probability)
    n_experts = masks.shape[0]
    channels = image.shape[2]
    if channel_names is not None and len(channel_names) != channels:
        raise ValueError(f"channel_names has {len(channel_names)} name(s) for an image with {channels} channel(s)")
    if expert_labels is None:
        expert_labels = [f"expert {i + 1}" for i in range(n_experts)]
    elif len(expert_labels) != n_experts:
        raise ValueError(f"expert_labels has {len(expert_labels)} label(s) for {n_experts} expert mask(s)")
    expert_labels = [str(label) for label in expert_labels]

    rows, cols = probability.shape
    panel_w = 3.6
    panel_h = min(max(panel_w * rows / cols, 1.8), 7.0)
    fig = _new_figure((3 * panel_w + 1.2, panel_h + 1.6), layout="compressed")  # compressed: fixed-aspect images
    axes = fig.subplots(1, 3, sharex=True, sharey=True)

    shown = image[:, :, 0]
    low, high = _display_range(shown)
    axes[0].imshow(shown, cmap="gray", vmin=low, vmax=high, interpolation="nearest", aspect="equal")
    channel = channel_names[0] if channel_names is not None else None
    if channels > 1:
        what = f"image, channel 1 of {channels}" + (f" ({channel})" if channel else "")
    else:
        what = "image" + (f" ({channel})" if channel else "")
    axes[0].set_title(f"{what}\nwith expert outlines", fontsize=_FONT["title"])
    handles = []
    for index, (label, mask) in enumerate(zip(expert_labels, masks, strict=True)):
        colour = expert_colour(index)
        if _has_boundary(mask):
            contours = axes[0].contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.3)
            contours.set_gid(f"expert:{label}")
            handles.append(Line2D([], [], color=colour, linewidth=1.6, label=label))
        else:
            state = "empty" if not mask.any() else "whole image"
            handles.append(Line2D([], [], color=colour, linewidth=1.6, linestyle=":", label=f"{label} ({state})"))

    consensus = masks.mean(axis=0)
    bar_aspect = 20 * max(1.0, rows / cols)  # a colour bar as tall as a tall image, not as tall as it is wide
    image_consensus = axes[1].imshow(
        consensus, cmap=PROBABILITY_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal"
    )
    image_consensus.set_gid("consensus")
    axes[1].set_title(f"expert consensus\n(mean of {n_experts} mask(s))", fontsize=_FONT["title"])
    bar = fig.colorbar(image_consensus, ax=axes[1], pad=0.02, fraction=0.05, aspect=bar_aspect)
    bar.set_label("fraction of experts k/n", fontsize=_FONT["label"])
    if n_experts <= 8:
        bar.set_ticks([k / n_experts for k in range(n_experts + 1)])
        bar.set_ticklabels([f"{k}/{n_experts}" for k in range(n_experts + 1)])
    bar.ax.tick_params(labelsize=_FONT["tick"])

    image_probability = axes[2].imshow(
        probability, cmap=PROBABILITY_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal"
    )
    image_probability.set_gid("probability")
    predicted = probability >= 0.5
    if _has_boundary(predicted):
        contours = axes[2].contour(
            predicted.astype(np.float32), levels=[0.5], colors=[ENSEMBLE_CONTOUR_COLOUR], linewidths=1.5
        )
        contours.set_gid("ensemble:0.5")
        outline = "outlined: p >= 0.5"
    else:
        outline = "p >= 0.5 " + ("everywhere" if predicted.any() else "nowhere")
    axes[2].set_title(f"ensemble probability\n({outline})", fontsize=_FONT["title"])
    bar = fig.colorbar(image_probability, ax=axes[2], pad=0.02, fraction=0.05, aspect=bar_aspect)
    bar.set_label("probability", fontsize=_FONT["label"])
    bar.ax.tick_params(labelsize=_FONT["tick"])

    for ax in axes:
        ax.tick_params(labelsize=_FONT["tick"])
        ax.set_xlabel("column (pixel)", fontsize=_FONT["label"])
    axes[0].set_ylabel("row (pixel)", fontsize=_FONT["label"])
    fig.legend(
        handles=handles,
        title="expert outlines (left panel)",
        loc="outside lower center",
        ncol=min(n_experts, 7),
        fontsize=_FONT["legend"],
        title_fontsize=_FONT["legend"],
        frameon=False,
        handlelength=1.8,
        columnspacing=1.2,
    )
    fig.suptitle(title, fontsize=_FONT["suptitle"])
    return fig


def plot_case(
    path: str | os.PathLike,
    image: np.ndarray,
    masks: np.ndarray,
    probability: np.ndarray,
    title: str,
    channel_names: Sequence[str] | None = None,
    expert_labels: Sequence[str] | None = None,
) -> Path:
    """Write :func:`figure_case` to ``path`` (PNG); returns the path."""
    return save_figure(figure_case(image, masks, probability, title, channel_names, expert_labels), path)


# ----------------------------------------------------------------------------------------------------------
# Training curves


def read_training_log(csv_path: str | os.PathLike) -> dict[str, list[float]]:
    """A Keras-style CSV training log as ``{column: values}``, one value per row (epoch).

    ``epoch`` becomes a list of ints; every other column a list of floats (an empty cell is NaN). Columns are
    whatever the file has (``loss``, ``val_loss``, ``dice_coefficient``, ...); ``val_loss`` may be missing,
    ``loss`` may not.
    """
    csv_path = Path(csv_path)
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise ValueError(f"{csv_path}: empty training log (no header row)")
        columns = [name.strip() for name in reader.fieldnames]
        if "loss" not in columns:
            raise ValueError(f"{csv_path}: no 'loss' column in the training log (columns: {', '.join(columns)})")
        log: dict[str, list] = {name: [] for name in columns}
        for line, row in enumerate(reader, start=2):
            for raw_name, name in zip(reader.fieldnames, columns, strict=True):
                cell = (row.get(raw_name) or "").strip()
                try:
                    if name == "epoch":
                        log[name].append(int(float(cell)))
                    else:
                        log[name].append(float(cell) if cell else math.nan)
                except ValueError:
                    raise ValueError(f"{csv_path}, line {line}: column {name!r} holds {cell!r}, not a number") from None
    return log


def figure_training_curves(logs: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> Figure:
    """One panel per expert: training loss (solid) and validation loss (dashed) per epoch, best epoch dotted.

    Args:
        logs: per expert label (``"seg01"``), its log as from :func:`read_training_log`: ``"loss"`` and
            optionally ``"val_loss"``, one value per epoch; epochs are numbered 1..n in row order.
        title: names the dataset and task.

    The best epoch is the one with the lowest ``val_loss`` (the one whose model is kept); an expert without
    ``val_loss`` gets no marker. Panels share their axes so experts compare at a glance.
    """
    if not logs:
        raise ValueError("no training log to plot (logs is empty)")
    curves = {}
    for name, log in logs.items():
        if "loss" not in log:
            raise ValueError(f"training log of {name!r} has no 'loss' (keys: {', '.join(map(str, log))})")
        loss = _as_values(f"loss of {name!r}", log["loss"])
        if loss.size == 0:
            raise ValueError(f"training log of {name!r} is empty (no epoch)")
        val = None
        if log.get("val_loss") is not None and len(log["val_loss"]) > 0:
            val = _as_values(f"val_loss of {name!r}", log["val_loss"])
            if val.size != loss.size:
                raise ValueError(
                    f"training log of {name!r}: {loss.size} loss value(s) but {val.size} val_loss value(s)"
                )
        curves[str(name)] = (loss, val)

    n = len(curves)
    ncols = n if n <= 3 else math.ceil(n / 2)
    nrows = math.ceil(n / ncols)
    fig = _new_figure((3.6 * ncols + 0.6, 3.0 * nrows + 1.0))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for index, (ax, (name, (loss, val))) in enumerate(zip(axes, curves.items(), strict=False)):  # spares stay empty
        colour = expert_colour(index)
        epochs = np.arange(1, loss.size + 1)
        ax.plot(epochs, loss, color=colour, linewidth=1.6, label="training loss", gid=f"loss:{name}")
        heading = name
        if val is not None:
            ax.plot(
                epochs,
                val,
                color=colour,
                linewidth=1.6,
                linestyle="--",
                label="validation loss",
                gid=f"val_loss:{name}",
            )
            if np.isfinite(val).any():
                best = int(np.nanargmin(val))
                ax.plot(
                    [epochs[best]],
                    [val[best]],
                    linestyle="none",
                    marker="o",
                    markersize=8,
                    color=colour,
                    markeredgecolor="black",
                    zorder=4,
                    label=f"best: epoch {epochs[best]}",
                    gid=f"best:{name}",
                )
                heading = f"{name} (best val_loss {val[best]:.3f}, epoch {epochs[best]})"
        ax.set_title(heading, fontsize=_FONT["title"])
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=_FONT["tick"], labelbottom=True, labelleft=True)
        ax.legend(fontsize=_FONT["legend"] - 1, loc="upper right", framealpha=0.85)
        if index % ncols == 0:
            ax.set_ylabel("loss", fontsize=_FONT["label"])
        ax.set_xlabel("epoch", fontsize=_FONT["label"])
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=_FONT["suptitle"])
    return fig


def plot_training_curves(
    path: str | os.PathLike, logs: Mapping[str, Mapping[str, Sequence[float]]], title: str
) -> Path:
    """Write :func:`figure_training_curves` to ``path`` (PNG); returns the path."""
    return save_figure(figure_training_curves(logs, title), path)


# ----------------------------------------------------------------------------------------------------------
# Saving and checks


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG at :data:`DPI` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    try:
        canvas.print_figure(tmp, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.15)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when saving failed
    return path


def _new_figure(size: tuple[float, float], layout: str = "constrained") -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout=layout, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _as_values(what: str, values) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be a list of numbers ({error})") from None
    if array.ndim != 1:
        raise ValueError(f"{what} must be one list of numbers; got an array of shape {array.shape}")
    return array


def _dice_curve(what: str, values, expected: int) -> np.ndarray:
    array = _as_values(what, values)
    if array.size != expected:
        raise ValueError(f"{what} has {array.size} value(s) for {expected} threshold(s)")
    if not np.isfinite(array).all() or (array < 0).any() or (array > 1).any():
        raise ValueError(f"{what} must hold Dice values in [0, 1]; got {array.tolist()}")
    return array


def _check_case(image, masks, probability) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(image)
    masks = np.asarray(masks)
    probability = np.asarray(probability)
    if probability.ndim != 2:
        raise ValueError(f"probability must be a (rows, cols) map; got shape {probability.shape}")
    if masks.ndim != 3 or masks.shape[0] < 1:
        raise ValueError(
            f"masks must be stacked as (experts, rows, cols) with at least one expert; got shape {masks.shape}"
        )
    if masks.shape[1:] != probability.shape:
        raise ValueError(
            f"masks of shape {masks.shape} do not match probability of shape {probability.shape}: "
            f"expected masks (experts, {probability.shape[0]}, {probability.shape[1]})"
        )
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.ndim != 3 or image.shape[:2] != probability.shape:
        raise ValueError(
            f"image of shape {image.shape} does not match probability of shape {probability.shape}: "
            f"expected ({probability.shape[0]}, {probability.shape[1]}) or (rows, cols, channels)"
        )
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be binary (bool or 0/1)")
        masks = masks.astype(bool)
    if not np.isfinite(probability).all():
        raise ValueError("probability holds NaN or infinite values")
    if probability.size and (probability.min() < 0 or probability.max() > 1):
        raise ValueError(f"probability must be in [0, 1]; found values in [{probability.min()}, {probability.max()}]")
    return image.astype(np.float64, copy=False), masks, probability.astype(np.float64, copy=False)


def _has_boundary(mask: np.ndarray) -> bool:
    """A 0.5 contour exists: the mask is neither empty nor everywhere (else matplotlib warns and draws nothing)."""
    return bool(mask.any()) and not bool(mask.all())


def _display_range(channel: np.ndarray) -> tuple[float, float]:
    """Grey levels from the 0.5th to the 99.5th percentile, so a few extreme voxels do not wash out the image."""
    finite = channel[np.isfinite(channel)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1.0
    return low, high


__all__ = [
    "DPI",
    "EXPERT_COLOURS",
    "expert_colour",
    "figure_case",
    "figure_dice_vs_threshold",
    "figure_training_curves",
    "plot_case",
    "plot_dice_vs_threshold",
    "plot_training_curves",
    "read_training_log",
    "save_figure",
]
