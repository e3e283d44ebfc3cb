"""The run's figures: valid PNGs written atomically, and figures that show what they claim."""

import math
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgba
from matplotlib.contour import ContourSet
from matplotlib.image import AxesImage

from common.evaluation import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THRESHOLDS = [j / 10 for j in range(1, 10)]
ENSEMBLE = [0.80, 0.85, 0.88, 0.90, 0.91, 0.90, 0.88, 0.84, 0.70]
EXPERTS = {
    "seg01": [0.78, 0.83, 0.86, 0.88, 0.89, 0.88, 0.86, 0.80, 0.65],
    "seg02": [0.70, 0.75, 0.80, 0.82, 0.84, 0.83, 0.80, 0.75, 0.60],
    "seg03": [0.75, 0.80, 0.84, 0.86, 0.86, 0.85, 0.83, 0.79, 0.62],
}


def assert_png(path):
    """A PNG file that decodes to a picture with more than one colour in it."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.01


def only_file(folder, name):
    """Nothing but the finished PNG is left: no temporary file."""
    assert sorted(p.name for p in folder.iterdir()) == [name]


def lines_by_gid(fig):
    return {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}


def contour_sets(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def case_data(rows=24, cols=40, experts=3, channels=None, empty=()):
    """An ellipse marked by each expert a little larger than the last; some experts' masks empty."""
    yy, xx = np.mgrid[:rows, :cols]
    masks = np.stack(
        [((yy - rows / 2) / (rows / 4 + e)) ** 2 + ((xx - cols / 2) / (cols / 4 + e)) ** 2 < 1 for e in range(experts)]
    )
    for e in empty:
        masks[e] = False
    probability = masks.mean(axis=0) * 0.9
    image = (yy + 2 * xx).astype(np.float32)
    if channels:
        image = np.stack([image * (c + 1) for c in range(channels)], axis=-1)
    return image, masks, probability


def fake_log(n_epochs, best_epoch, with_val=True):
    loss = [1.0 / (e + 1) for e in range(n_epochs)]
    log = {"epoch": list(range(1, n_epochs + 1)), "loss": loss}
    if with_val:
        log["val_loss"] = [0.5 + abs(e + 1 - best_epoch) / 10 for e in range(n_epochs)]
    return log


# ---------------------------------------------------------------------------------------------------------
# Dice against threshold


def test_dice_vs_threshold_writes_a_png(tmp_path):
    folder = tmp_path / "made" / "here"
    path = plots.plot_dice_vs_threshold(
        folder / "dice.png", THRESHOLDS, ENSEMBLE, EXPERTS, "Kidney CT, task 1", reference={"all_foreground": [0.3] * 9}
    )
    assert path == folder / "dice.png"
    assert_png(path)
    only_file(folder, "dice.png")


def test_dice_vs_threshold_curves_are_the_inputs():
    fig = plots.figure_dice_vs_threshold(
        THRESHOLDS, ENSEMBLE, EXPERTS, "Kidney CT, task 1", reference={"all_foreground": [0.3] * 9}
    )
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1 + len(EXPERTS) + 1
    lines = lines_by_gid(fig)
    np.testing.assert_allclose(lines["ensemble"].get_xdata(), THRESHOLDS)
    np.testing.assert_allclose(lines["ensemble"].get_ydata(), ENSEMBLE)
    for name, values in EXPERTS.items():
        np.testing.assert_allclose(lines[f"expert:{name}"].get_ydata(), values)
        assert lines[f"expert:{name}"].get_linewidth() < lines["ensemble"].get_linewidth()
    assert lines["ensemble"].get_marker() not in (None, "None", "")
    reference = lines["reference:all_foreground"]
    assert reference.get_linestyle() == "--"
    red, green, blue, _ = to_rgba(reference.get_color())
    assert red == green == blue and 0 < red < 1  # grey
    assert ax.get_title() == "Kidney CT, task 1"
    low, high = ax.get_ylim()
    assert low == 0 and 1 <= high <= 1.05
    assert ax.get_xlabel() and ax.get_ylabel()


def test_dice_vs_threshold_legend_carries_the_means():
    fig = plots.figure_dice_vs_threshold(THRESHOLDS, ENSEMBLE, EXPERTS, "t")
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert f"ensemble ({np.mean(ENSEMBLE):.3f})" in labels
    for name, values in EXPERTS.items():
        assert f"{name} ({np.mean(values):.3f})" in labels
    assert len(labels) == 1 + len(EXPERTS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ensemble": ENSEMBLE[:-1]}, "ensemble has 8 value"),
        ({"experts": {"seg01": EXPERTS["seg01"] + [0.5]}}, "'seg01' has 10 value"),
        ({"reference": {"all_foreground": [0.2] * 3}}, "'all_foreground' has 3 value"),
        ({"thresholds": []}, "thresholds is empty"),
        ({"ensemble": [1.2] + ENSEMBLE[1:]}, r"\[0, 1\]"),
        ({"ensemble": [math.nan] + ENSEMBLE[1:]}, r"\[0, 1\]"),
    ],
)
def test_dice_vs_threshold_rejects_bad_input(kwargs, message):
    arguments = {"thresholds": THRESHOLDS, "ensemble": ENSEMBLE, "experts": EXPERTS, "title": "t", **kwargs}
    with pytest.raises(ValueError, match=message):
        plots.figure_dice_vs_threshold(**arguments)


# ---------------------------------------------------------------------------------------------------------
# One case


def test_case_writes_a_png(tmp_path):
    image, masks, probability = case_data()
    path = plots.plot_case(tmp_path / "case_case01.png", image, masks, probability, "Kidney CT, task 1: case01")
    assert_png(path)
    only_file(tmp_path, "case_case01.png")


def test_case_has_three_panels_contours_and_a_shared_0_1_range():
    image, masks, probability = case_data(experts=3)
    fig = plots.figure_case(image, masks, probability, "Kidney CT, task 1: case01", expert_labels=["a", "b", "c"])
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 3
    shown, consensus, ensemble = (ax.get_images()[0] for ax in panels)
    np.testing.assert_array_equal(shown.get_array(), image)
    assert shown.get_cmap().name == "gray"
    np.testing.assert_allclose(consensus.get_array(), masks.mean(axis=0))
    np.testing.assert_allclose(ensemble.get_array(), probability)
    assert consensus.get_clim() == (0.0, 1.0) and ensemble.get_clim() == (0.0, 1.0)
    assert consensus.get_cmap().name == ensemble.get_cmap().name
    assert sum(isinstance(a, AxesImage) for ax in fig.axes for a in ax.get_images()) == 3  # colour bars: 2 more axes
    assert len(fig.axes) == 5

    expert_contours = contour_sets(panels[0])
    assert [c.get_gid() for c in expert_contours] == ["expert:a", "expert:b", "expert:c"]
    for index, contours in enumerate(expert_contours):
        assert list(contours.levels) == [0.5]
        assert to_hex(contours.get_edgecolor()[0]) == to_hex(plots.expert_colour(index))
    (ensemble_contour,) = contour_sets(panels[2])
    assert list(ensemble_contour.levels) == [0.5]
    assert not contour_sets(panels[1])
    assert fig.get_suptitle() == "Kidney CT, task 1: case01"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["a", "b", "c"]


def test_case_ensemble_contour_outlines_p_at_least_0_5():
    image, masks, _ = case_data(rows=20, cols=30)
    probability = np.zeros((20, 30))
    probability[5:10, 8:20] = 0.5  # exactly 0.5 counts, as in the score (>=)
    probability[10:12, 8:20] = 0.49
    fig = plots.figure_case(image, masks, probability, "t")
    (contour,) = contour_sets([ax for ax in fig.axes if ax.get_images()][2])
    vertices = np.concatenate([path.vertices for path in contour.get_paths()])
    assert vertices[:, 0].min() == pytest.approx(7.5) and vertices[:, 0].max() == pytest.approx(19.5)
    assert vertices[:, 1].min() == pytest.approx(4.5) and vertices[:, 1].max() == pytest.approx(9.5)


def test_case_with_empty_masks_draws_no_contour_for_them_and_does_not_warn(tmp_path):
    image, masks, _ = case_data(experts=4, empty=(1, 3))
    probability = np.zeros(masks.shape[1:])  # nothing predicted either
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.figure_case(image, masks, probability, "t", expert_labels=["s1", "s2", "s3", "s4"])
        plots.plot_case(tmp_path / "empty.png", image, np.zeros_like(masks), probability, "all empty")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [c.get_gid() for c in contour_sets(panels[0])] == ["expert:s1", "expert:s3"]
    assert contour_sets(panels[2]) == []
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["s1", "s2 (empty)", "s3", "s4 (empty)"]
    assert_png(tmp_path / "empty.png")


def test_case_keeps_the_aspect_ratio_of_a_non_square_image():
    image, masks, probability = case_data(rows=16, cols=48)
    fig = plots.figure_case(image, masks, probability, "wide")
    fig.canvas.draw()
    for ax in (ax for ax in fig.axes if ax.get_images()):
        assert ax.get_images()[0].get_array().shape == (16, 48)
        assert ax.get_aspect() == 1.0
        box = ax.get_window_extent()
        assert box.width / box.height == pytest.approx(48 / 16, rel=0.02)


def test_case_of_a_four_channel_image_shows_the_first_channel_by_name():
    image, masks, probability = case_data(channels=4)
    fig = plots.figure_case(
        image, masks, probability, "Brain tumor MRI, task 1: case29", channel_names=["FLAIR", "T1w", "T1gd", "T2w"]
    )
    panel = next(ax for ax in fig.axes if ax.get_images())
    np.testing.assert_array_equal(panel.get_images()[0].get_array(), image[..., 0])
    assert "FLAIR" in panel.get_title() and "1 of 4" in panel.get_title()


def test_case_accepts_a_trailing_singleton_channel_and_0_1_masks():
    image, masks, probability = case_data()
    fig = plots.figure_case(image[..., None], masks.astype(np.uint8), probability, "t")
    assert len([ax for ax in fig.axes if ax.get_images()]) == 3


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda i, m, p: (i, m[:, :-1], p),
            r"masks of shape \(3, 23, 40\) do not match probability of shape \(24, 40\)",
        ),
        (lambda i, m, p: (i, m, p.T), r"masks of shape \(3, 24, 40\) do not match probability of shape \(40, 24\)"),
        (lambda i, m, p: (i[:, :-1], m, p), r"image of shape \(24, 39, 1\) does not match probability"),
        (lambda i, m, p: (i, m[0], p), r"\(experts, rows, cols\)"),
        (lambda i, m, p: (i, m * 2, p), "binary"),
        (lambda i, m, p: (i, m, p + 0.5), r"\[0, 1\]"),
        (lambda i, m, p: (i, m, np.full_like(p, np.nan)), "NaN"),
    ],
)
def test_case_rejects_bad_input(change, message):
    image, masks, probability = change(*case_data())
    with pytest.raises(ValueError, match=message):
        plots.figure_case(image, masks, probability, "t")


def test_case_rejects_label_counts_that_do_not_match():
    image, masks, probability = case_data(experts=3, channels=4)
    with pytest.raises(ValueError, match="2 label"):
        plots.figure_case(image, masks, probability, "t", expert_labels=["a", "b"])
    with pytest.raises(ValueError, match="1 name"):
        plots.figure_case(image, masks, probability, "t", channel_names=["FLAIR"])


# ---------------------------------------------------------------------------------------------------------
# Training curves


def test_read_training_log(tmp_path):
    path = tmp_path / "training_log.csv"
    path.write_text(
        "epoch,dice_coefficient,loss,val_dice_coefficient,val_loss\n"
        "1,0.5,0.5,0.4,0.6\n2,0.7,0.3,0.6,0.4\n3,0.8,0.2,,0.45\n"
    )
    log = plots.read_training_log(path)
    assert log["epoch"] == [1, 2, 3] and all(isinstance(e, int) for e in log["epoch"])
    assert log["loss"] == [0.5, 0.3, 0.2]
    assert log["val_loss"] == [0.6, 0.4, 0.45]
    assert log["dice_coefficient"] == [0.5, 0.7, 0.8]
    assert log["val_dice_coefficient"][:2] == [0.4, 0.6] and math.isnan(log["val_dice_coefficient"][2])


def test_read_training_log_without_val_loss(tmp_path):
    path = tmp_path / "training_log.csv"
    path.write_text("epoch,loss\n0,0.9\n1,0.7\n")
    assert plots.read_training_log(path) == {"epoch": [0, 1], "loss": [0.9, 0.7]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty training log"),
        ("epoch,val_loss\n1,0.5\n", "no 'loss' column"),
        ("epoch,loss\n1,abc\n", "line 2: column 'loss' holds 'abc'"),
    ],
)
def test_read_training_log_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "training_log.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        plots.read_training_log(path)


def test_training_curves_write_a_png(tmp_path):
    logs = {"seg01": fake_log(6, 4), "seg02": fake_log(6, 2), "seg03": fake_log(6, 5, with_val=False)}
    path = plots.plot_training_curves(tmp_path / "curves" / "training_curves.png", logs, "Kidney CT, task 1")
    assert_png(path)
    only_file(tmp_path / "curves", "training_curves.png")


def test_training_curves_lines_and_best_epoch_markers():
    logs = {"seg01": fake_log(8, 5), "seg02": fake_log(8, 2), "seg03": fake_log(8, 7, with_val=False)}
    fig = plots.figure_training_curves(logs, "Kidney CT, task 1: training")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 3
    lines = lines_by_gid(fig)
    assert len(lines) == 3 + 2 + 2  # loss each, val_loss and best marker for the two with validation
    for name, log in logs.items():
        np.testing.assert_allclose(lines[f"loss:{name}"].get_xdata(), range(1, 9))
        np.testing.assert_allclose(lines[f"loss:{name}"].get_ydata(), log["loss"])
    for name, best in (("seg01", 5), ("seg02", 2)):
        np.testing.assert_allclose(lines[f"val_loss:{name}"].get_ydata(), logs[name]["val_loss"])
        assert lines[f"val_loss:{name}"].get_linestyle() == "--"
        marker = lines[f"best:{name}"]
        assert list(marker.get_xdata()) == [best]
        assert list(marker.get_ydata()) == [pytest.approx(min(logs[name]["val_loss"]))]
        assert marker.get_marker() == "o"
    assert "best:seg03" not in lines and "val_loss:seg03" not in lines
    assert fig.get_suptitle() == "Kidney CT, task 1: training"
    assert all(ax.get_xlabel() == "epoch" for ax in panels)


def test_training_curves_best_epoch_skips_nan():
    log = {"loss": [0.9, 0.8, 0.7], "val_loss": [math.nan, 0.6, 0.65]}
    marker = lines_by_gid(plots.figure_training_curves({"seg01": log}, "t"))["best:seg01"]
    assert list(marker.get_xdata()) == [2]


def test_training_curves_of_seven_experts_fill_a_grid():
    logs = {f"seg{i:02d}": fake_log(4, 1 + i % 4) for i in range(1, 8)}
    fig = plots.figure_training_curves(logs, "Brain growth, task 1: training")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 7 and len(fig.axes) == 8
    assert [ax.get_title().split()[0] for ax in visible] == list(logs)


@pytest.mark.parametrize(
    "logs, message",
    [
        ({}, "logs is empty"),
        ({"seg01": {"val_loss": [0.5]}}, "'seg01' has no 'loss'"),
        ({"seg01": {"loss": []}}, "'seg01' is empty"),
        ({"seg01": {"loss": [0.5, 0.4], "val_loss": [0.6]}}, "2 loss value.* but 1 val_loss"),
    ],
)
def test_training_curves_reject_bad_logs(logs, message):
    with pytest.raises(ValueError, match=message):
        plots.figure_training_curves(logs, "t")


# ---------------------------------------------------------------------------------------------------------
# Saving


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "dice.png"
    target.write_bytes(b"old")

    def broken(self, filename, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots.FigureCanvasAgg, "print_figure", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_dice_vs_threshold(target, THRESHOLDS, ENSEMBLE, EXPERTS, "t")
    assert target.read_bytes() == b"old"
    only_file(tmp_path, "dice.png")


def test_importing_plots_touches_neither_pyplot_nor_tensorflow():
    code = (
        "import sys, common.evaluation.plots; "
        "assert 'matplotlib.pyplot' not in sys.modules; assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
