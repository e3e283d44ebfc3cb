"""The benchmark script's logic (bench/benchmark.py and its parts, bench/benchmarking/): no training, no timing."""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pytest

from bench.backends import ROOT, parse_variant
from bench.benchmark import parse_sections, parse_tuned_run
from bench.benchmarking.flops import count_flops
from bench.benchmarking.report import experts_section, results_paths, score_section, suite_section
from bench.benchmarking.sections import run_label, suite_scores, tuned_runs
from bench.benchmarking.settings import DEFAULT_SECTIONS, SECTIONS
from bench.benchmarking.stats import (
    batch_sizes,
    interleaved_order,
    ratio,
    scaled_learning_rate,
    segment_throughput,
    summarise,
)
from bench.benchmarking.study import rotation_shift_flip_matrix, study_augment, study_generator


def test_flops_of_one_conv_by_hand():
    import keras

    inputs = keras.Input((4, 4, 1))
    same = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    model = keras.Model(inputs, same)
    # 4 x 4 output pixels x 2 output channels x (3 x 3 kernel x 1 input channel) = 288 MACs
    counted = count_flops(model)
    assert counted["macs"] == 4 * 4 * 2 * 3 * 3 * 1 == 288
    assert counted["forward_flops"] == 576
    assert counted["uncounted"] == []

    valid = keras.layers.Conv2D(2, 3, padding="valid")(inputs)
    assert count_flops(keras.Model(inputs, valid))["macs"] == 2 * 2 * 2 * 9  # 2 x 2 output pixels


def test_flops_of_transposed_conv_convlstm_and_dense_by_hand():
    import keras

    image = keras.Input((4, 4, 1))
    # every one of the 4 x 4 input pixels scatters a 3 x 3 x (1 -> 2) kernel: 16 * 18 = 288 MACs
    up = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")(image)
    assert count_flops(keras.Model(image, up))["macs"] == 16 * 9 * 2

    sequence = keras.Input((2, 4, 4, 1))
    lstm = keras.layers.ConvLSTM2D(1, 3, padding="same")(sequence)
    # per step: input conv 4*4 px * 4 gates * 9 * 1 input channel + recurrent conv 4*4 * 4 * 9 * 1 unit; 2 steps
    assert count_flops(keras.Model(sequence, lstm))["macs"] == 2 * (16 * 4 * 9 + 16 * 4 * 9)

    vector = keras.Input((5,))
    dense = keras.layers.Dense(3)(vector)
    assert count_flops(keras.Model(vector, dense))["macs"] == 15


def test_summary_median_spread_and_ratio():
    s = summarise([3.0, 1.0, 2.0, float("nan"), None])
    assert s == {"n": 3, "median": 2.0, "min": 1.0, "max": 3.0, "spread": 2.0, "relative_spread": 1.0}
    assert summarise([1.0, 2.0, 3.0, 4.0])["median"] == 2.5
    assert summarise([])["median"] is None
    assert ratio(6.0, 2.0) == 3.0
    assert ratio(None, 2.0) is None and ratio(1.0, 0.0) is None


def test_interleaved_order_is_round_robin():
    order = interleaved_order(["a", "b", "c"], 3)
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c")]
    assert all(x[1] != y[1] for x, y in zip(order, order[1:], strict=False))  # never one variant twice in a row


def test_learning_rate_scaling_and_batch_accounting():
    assert scaled_learning_rate(8, "sqrt", (2, 1e-3)) == pytest.approx(2e-3)
    assert scaled_learning_rate(8, "linear", (2, 1e-3)) == pytest.approx(4e-3)
    with pytest.raises(ValueError):
        scaled_learning_rate(8, "cubic")
    assert batch_sizes(5, 2, 5) == [2, 2, 1, 2, 2]
    # 3 steps, the first excluded: 2 + 1 images in 2 seconds
    assert segment_throughput([0.0, 1.0, 2.0], [2, 2, 1]) == pytest.approx(1.5)
    assert segment_throughput([1.0], [2]) is None


def test_study_augmentation_keeps_image_and_mask_aligned_and_binary():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32, 1), np.float32)
    mask[6:20, 9:25] = 1
    mask[22:28, 4:8] = 1
    image = np.concatenate([mask, 1 - mask], axis=-1)  # two channels that are the mask and its complement
    changed = 0
    for _ in range(20):
        warped_image, warped_mask = study_augment(image, mask, rng, rotation=10, shift=0.1, flip=True)
        assert warped_image.shape == image.shape and warped_mask.shape == mask.shape
        assert set(np.unique(warped_mask)) <= {0.0, 1.0}
        # the same transform: the image's mask channel, thresholded, is the warped mask
        assert np.array_equal(warped_image[..., 0] >= 0.5, warped_mask[..., 0] == 1)
        changed += not np.array_equal(warped_mask, mask)
    assert changed >= 15


def test_study_flip_only_mirrors_and_generator_batches():
    rng = np.random.default_rng(1)
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    mask = (image > 7).astype(np.float32)
    seen = set()
    for _ in range(20):
        out, _ = study_augment(image, mask, rng, rotation=0, shift=0, flip=True)
        assert np.allclose(out, image) or np.allclose(out, image[:, ::-1])
        seen.add(bool(np.allclose(out, image)))
    assert seen == {True, False}
    stream = study_generator(np.stack([image] * 5), np.stack([mask] * 5), 2, seed=0)
    assert [next(stream)[0].shape[0] for _ in range(4)] == [2, 2, 1, 2]


def test_rotation_matrix_rotates_about_the_centre():
    matrix, offset = rotation_shift_flip_matrix(math.pi / 2, 0.0, 0.0, (5, 5))
    centre = np.array([2.0, 2.0])
    assert np.allclose(matrix @ centre + offset, centre)
    matrix, offset = rotation_shift_flip_matrix(0.0, 1.0, 2.0, (5, 5))
    assert np.allclose(matrix @ np.array([3.0, 4.0]) + offset, [2.0, 2.0])  # output (3, 4) reads input (2, 2)


def test_results_paths_never_reuse_a_name(tmp_path):
    md, js = results_paths(tmp_path, "my host/1", "20260101T000000Z")
    assert md.name == "my-host-1-20260101T000000Z.md" and js.suffix == ".json"
    md.write_text("x")
    md2, js2 = results_paths(tmp_path, "my host/1", "20260101T000000Z")
    assert md2.name == "my-host-1-20260101T000000Z-2.md" and js2.name == "my-host-1-20260101T000000Z-2.json"


def test_sections_and_aliases():
    assert parse_sections(["baseline,input", "tuned"]) == {"tuning", "input"}
    assert parse_sections(["experts", "score"]) == {"experts", "score"}
    assert set(DEFAULT_SECTIONS) <= set(SECTIONS) and {"suite", "gpu"}.isdisjoint(DEFAULT_SECTIONS)
    with pytest.raises(Exception, match="unknown section"):
        parse_sections(["nope"])


def _score_run(mode, batch, epochs, score, wall, networks):
    return {
        "mode": mode,
        "settings": {"batch_size": batch, "learning_rate": 1e-3, "epochs": epochs},
        "score": score,
        "training_seconds": wall - 2,
        "wall_seconds": wall,
        "generator_streams_used": [16] * len(networks) if mode == "baseline" else [],
        "per_network": [{"network": str(n), "seconds": s, "rss_mb_after": m} for n, s, m in networks],
    }


@pytest.mark.parametrize(
    ("tuned_score", "verdict"), [(0.89, "no worse"), (0.88, "no worse"), (0.87, "WORSE"), (0.95, "no worse")]
)
def test_score_report_speed_up_and_verdict(tuned_score, verdict):
    label = run_label({"batch": 2, "lr": 1e-3, "epochs": 40})
    state = {
        "args": {"score_tolerance": 0.02},
        "score": {
            "batch_chosen_by": "--tuned-run",
            "epochs": 60,
            "experts": [1, 2],
            "runs": {
                "baseline": _score_run("baseline", 1, 60, 0.9, 300.0, [(1, 150, 900), (2, 150, 1000)]),
                label: _score_run("tuned", 2, 40, tuned_score, 100.0, [(1, 60, 900), (2, 40, 910)]),
                "tuned: batch 4, lr 0.002, 60 epochs": {"error": "Traceback ...\nValueError: boom"},
            },
        },
    }
    text = "\n".join(score_section(state))
    change = f"{tuned_score - 0.9:+.4f}"
    # 0.88 is exactly the tolerance below: within it, although 0.88 - 0.9 < -0.02 in floating point
    assert (
        f"| tuned: batch 2, lr 0.001, 40 epochs | {tuned_score:.4f} | 98 | 100 | 3.00x | {change} | {verdict} |" in text
    )
    assert "| baseline (batch 1, lr 0.001, 60 epochs) | 0.9000 | 298 | 300 |  |  |  |" in text
    assert "| tuned: batch 4, lr 0.002, 60 epochs | failed: ValueError: boom |" in text
    assert "| baseline | 2 | 150.0 | 1000 |" in text  # per-network seconds and memory
    assert "WARNING" not in text


@pytest.mark.parametrize(
    ("text", "given", "expected"),
    [
        ("4", {"batch": 4}, {"batch": 4, "lr": scaled_learning_rate(4, "sqrt"), "epochs": 60}),
        ("4:0.002", {"batch": 4, "lr": 0.002}, {"batch": 4, "lr": 0.002, "epochs": 60}),
        ("2:0.001:40", {"batch": 2, "lr": 0.001, "epochs": 40}, {"batch": 2, "lr": 0.001, "epochs": 40}),
        ("8::30", {"batch": 8, "epochs": 30}, {"batch": 8, "lr": scaled_learning_rate(8, "sqrt"), "epochs": 30}),
    ],
)
def test_tuned_run_option(text, given, expected):
    assert parse_tuned_run(text) == given
    assert tuned_runs([given], 99, 60, "sqrt") == [expected]


@pytest.mark.parametrize("text", ["", "x", "4:fast", "4:0.001:10:1", "0", "4:-1", "4:0.001:0"])
def test_tuned_run_option_refuses_bad_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--tuned-run"):
        parse_tuned_run(text)


def test_default_tuned_run_is_one_at_the_given_batch():
    assert tuned_runs(None, 8, 60, "linear") == [{"batch": 8, "lr": scaled_learning_rate(8, "linear"), "epochs": 60}]


def test_experts_report_lists_every_network_of_both_runs():
    run = {"networks": [{"network": i, "train_s": 10.0 * i, "predict_s": 1.0, "rss_mb_after": 900 + i} for i in (1, 2)]}
    state = {"experts": {"networks": 3, "epochs": 1, "runs": {"each built anew": run, "pooled": {"error": "boom"}}}}
    lines = experts_section(state)
    assert "| 1 | 10.0 | 1.0 | 901 | failed |  |  |" in lines
    assert "| 3 | - |  |  | failed |  |  |" in lines


def test_suite_scores_from_a_results_file(tmp_path):
    import json

    path = tmp_path / "results.json"
    path.write_text(
        json.dumps(
            {
                "score": 0.8,
                "per_case": {"case01": 0.7, "case02": 0.9},
                "per_expert": {"seg01": {"score": 0.75}, "seg02": {"score": 0.85}},
                "reference_scores": {"all_background": 0.0, "all_foreground": 0.05},
                "networks": {"seg01": {"epochs": 60}, "seg02": {"epochs": 41}},
            }
        )
    )
    assert suite_scores(path) == {
        "score": 0.8, "best_single": 0.85, "all_foreground": 0.05, "all_background": 0.0,
        "networks": 2, "epochs": 60, "held_out": 2,
    }  # fmt: skip
    assert suite_scores(tmp_path / "missing.json") == {"score": None}  # a failed run: its row says "-"
    state = {
        "args": {"quick": False},
        "suite": {
            "tasks": [
                {"script": "Kidney", "task": 1, "seconds": 241.0, "returncode": 0, **suite_scores(path)},
                {"script": "Prostate", "task": 2, "seconds": 3.0, "returncode": 1, "score": None},
            ],
            "total_seconds": 244.0,
        },
    }
    text = "\n".join(suite_section(state))
    assert "| Kidney | 1 | 2 | 60 | 2 | 241 | 0.8000 | 0.8500 | 0.0500 | 0.0000 | 0 |" in text
    assert "| Prostate | 2 | - | - | - | 3 | - | - | - | - | 1 |" in text
    assert "| total |  | 2 |" in text


# ------------------------------------------------------------------------------------------------
# bench/backends.py compare: each variant checked before any worker starts


@pytest.mark.parametrize(
    "text, message",
    [
        ("tensorflow", r"expected NAME=PYTHON\[@TREE\]"),
        ("tensorflow=nope/python", "no Python interpreter at .*nope/python"),
        ("tensorflow=no-such-python-here", "no no-such-python-here on PATH"),
        (f"tensorflow={sys.executable}@/", "/ is not a checkout of this project"),
    ],
)
def test_a_compare_variant_is_refused_by_name(text, message):
    with pytest.raises(SystemExit, match=message):
        parse_variant(text)


def test_a_relative_interpreter_is_the_callers_not_the_trees(tmp_path, monkeypatch):
    """The worker runs in the variant's tree, so a relative PYTHON is made absolute against the caller's folder."""
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").write_text("")
    monkeypatch.chdir(tmp_path)
    variant = parse_variant("torch-new=env/bin/python")
    assert variant == {
        "name": "torch-new",
        "python": str(tmp_path / "env" / "bin" / "python"),
        "tree": str(ROOT),
        "backend": "torch",
    }
