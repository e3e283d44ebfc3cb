"""Fold splitting (a table of small cases) and one short cross-validation on the toy data."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SPEC, TINY, make_toy_root

from common.data.cases import DataError
from common.runs.crossval import (
    RESULTS_FILE,
    SPLITS_FILE,
    check_folds,
    fold_statistics,
    make_folds,
    pooled_cases,
    read_splits,
    run_cross_validation,
    validation_fraction,
    write_splits,
)
from common.runs.plan import check_roles
from common.spec import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def ids(n):
    return [f"case{i:02d}" for i in range(1, n + 1)]


@pytest.mark.parametrize(
    "n, k, fraction, held_sizes, validation_sizes",
    [
        (24, 3, 4 / 24, [8, 8, 8], [3, 3, 3]),  # kidney: 16 left per fold, round(16 * 4 / 24) = 3
        (10, 3, 0.2, [4, 3, 3], [1, 1, 1]),  # uneven folds differ by at most one
        (7, 2, 2 / 7, [4, 3], [1, 1]),  # 3 left -> round(0.857) = 1; 4 left -> round(1.14) = 1
        (4, 4, 0.5, [1, 1, 1, 1], [2, 2, 2, 2]),  # 3 left -> round(1.5) = 2, one still trains
        (3, 3, 0.9, [1, 1, 1], [1, 1, 1]),  # 2 left: at most 1 validates so one trains
        (6, 2, 0.0, [3, 3], [1, 1]),  # at least one validation case
    ],
)
def test_make_folds(n, k, fraction, held_sizes, validation_sizes):
    cases = ids(n)
    folds = make_folds(cases, k, seed=0, validation_fraction=fraction)
    assert [len(f["held_out"]) for f in folds] == held_sizes
    assert [len(f["validation"]) for f in folds] == validation_sizes
    held_once = sorted(c for f in folds for c in f["held_out"])
    assert held_once == cases  # every case held out exactly once
    for fold in folds:
        roles = [set(fold[r]) for r in ("train", "validation", "held_out")]
        assert set.union(*roles) == set(cases)  # every case has a role in every fold ...
        assert sum(map(len, roles)) == n  # ... and only one
        assert fold["train"]
    check_folds(folds, cases)


def test_folds_follow_the_seed():
    cases = ids(24)
    assert make_folds(cases, 3, 0, 0.2) == make_folds(list(reversed(cases)), 3, 0, 0.2)  # order of discovery
    assert make_folds(cases, 3, 0, 0.2) != make_folds(cases, 3, 1, 0.2)


@pytest.mark.parametrize(
    "n, k, message",
    [(5, 1, "--folds must be at least 2"), (3, 4, "--folds 4: only 3 cases")],
)
def test_make_folds_refuses(n, k, message):
    with pytest.raises(ConfigError, match=message):
        make_folds(ids(n), k, 0, 0.2)


GOOD = [
    {"train": ["case01"], "validation": ["case02"], "held_out": ["case03"]},
    {"train": ["case03"], "validation": [], "held_out": ["case01", "case02"]},
]


@pytest.mark.parametrize(
    "folds, cases, message",
    [
        (GOOD[:1], None, "needs at least 2 folds"),
        ([GOOD[0], {**GOOD[1], "train": ["case01"]}], None, "fold 2 puts case.* case01 in both train and held_out"),
        (
            [GOOD[0], {**GOOD[1], "train": ["case02"], "held_out": ["case01", "case03"]}],
            None,
            "case03 are held out in more than one fold",
        ),
        ([GOOD[0], {"train": ["case03"], "held_out": ["case01"]}], None, "fold 2 must have exactly the keys"),
        (GOOD, ["case01", "case02", "case03", "case04"], "case04 are never held out"),
        (GOOD, ["case01", "case02"], "names case.* not in the data: case03"),
    ],
)
def test_check_folds_refuses(folds, cases, message):
    with pytest.raises(ConfigError, match=message):
        check_folds(folds, cases)


def roles(train, validation, held_out):
    return {"train": train, "validation": validation, "held_out": held_out}


BOTH_ROLES = "needs at least one training case and one held-out case"


@pytest.mark.parametrize(
    "roles, message",
    [
        (
            roles(["case10", "case2"], ["case2", "case10"], ["case3"]),
            r"puts case\(s\) case2, case10 in both train and validation",
        ),
        (roles(["case1"], ["case4"], ["case4"]), r"puts case\(s\) case4 in both validation and held_out"),
        (roles([], ["case1"], ["case2"]), BOTH_ROLES),
        (roles(["case1"], [], []), BOTH_ROLES),
        (roles(["case1-1"], [], ["case1-2"]), "holds out case1-2 but puts case1-1 in train"),
    ],
)
def test_a_split_and_a_fold_are_refused_alike(roles, message):
    """One check for a run's split and a fold: the same refusal, started by where it was found."""
    with pytest.raises(ConfigError, match=f"^the split {message}"):
        check_roles(roles, "the split")
    with pytest.raises(ConfigError, match=f"^splits: fold 2 {message}"):
        check_folds([GOOD[0], roles])


def test_the_pooled_cases_are_both_folders_and_their_names_must_be_unique(tmp_path):
    root = make_toy_root(tmp_path / "data")
    cases = pooled_cases(root, "toy", None, [])
    assert [c.case_id for c in cases] == [f"case{n:02d}" for n in range(1, 8)]
    shutil.copytree(root / "training_data_v2/toy/Training/case01", root / "validation_data_v2/toy/Validation/case01")
    with pytest.raises(DataError, match="the training and validation folders share case names"):
        pooled_cases(root, "toy", None, [])


def test_splits_file_round_trip(tmp_path):
    path = tmp_path / SPLITS_FILE
    write_splits(path, GOOD, "toy", seed=3)
    assert read_splits(path, "toy", ["case01", "case02", "case03"]) == GOOD
    with pytest.raises(ConfigError, match="made for dataset 'toy', not 'kidney'"):
        read_splits(path, "kidney")
    with pytest.raises(ConfigError, match="no such file"):
        read_splits(tmp_path / "missing.json", "toy")


def test_fold_statistics():
    assert fold_statistics([0.8, 0.9]) == pytest.approx((0.85, 0.0707106781))
    assert fold_statistics([0.7]) == (0.7, 0.0)


def test_validation_fraction():
    assert validation_fraction(SPEC) == pytest.approx(2 / 7)


def test_cross_validation_on_toy_data(tmp_path):
    root = make_toy_root(tmp_path / "data")
    out = tmp_path / "cv"
    lines = []
    settings = TINY.replace(epochs=1)
    summary = run_cross_validation(
        SPEC, settings, 1, root, 2, experts=[1, 2], seed=1, out=out, plots=False, verbose=0, log=lines.append
    )
    splits = json.loads((out / SPLITS_FILE).read_text())["folds"]
    assert len(splits) == 2 and len(summary["folds"]) == 2
    all_cases = {f"case{i:02d}" for i in range(1, 8)}  # training and validation folders together
    assert set(summary["per_case"]) == all_cases
    for number, fold in enumerate(splits, start=1):
        fold_config = json.loads((out / f"fold{number}" / "config.json").read_text())
        used = fold_config["split"]
        held = set(fold["held_out"])
        assert set(used["held_out"]) == held and set(used["validation"]) == set(fold["validation"])
        for expert, parts in used["per_expert"].items():
            assert not held & (set(parts["train"]) | set(parts["validation"])), (number, expert)
        results = json.loads((out / f"fold{number}" / "results.json").read_text())
        assert set(results["cases"]) == held
        assert summary["fold_scores"][number - 1] == results["score"]
    mean, std = fold_statistics(summary["fold_scores"])
    assert (summary["mean"], summary["std"]) == (mean, std)
    assert summary["networks"] == 4 and summary["parameters"] > 0
    assert json.loads((out / RESULTS_FILE).read_text())["mean"] == mean
    assert (
        lines[-1].splitlines()[-1]
        == f"QUBIQ score over 2 folds: {mean:.4f} +/- {std:.4f} (mean +/- standard deviation)"
    )
    assert lines[-1].splitlines()[-2].startswith("Uncertainty metrics (mean over the cases): GED ")
    assert set(summary["uncertainty"]["per_case"]) == all_cases and summary["strategy"] == "per-expert"

    # resumed: nothing is trained again, the folds are those of splits.json
    again = []
    resumed = run_cross_validation(
        SPEC, settings, 1, root, None, experts=[1, 2], seed=1, out=out, resume=True, plots=False, log=again.append
    )
    assert resumed["fold_scores"] == summary["fold_scores"]
    assert sum("already done" in line for line in again) == 2
    # another run reusing the folds (--splits) gets exactly the same folds
    reused = tmp_path / "cv2"
    run_cross_validation(
        SPEC, settings, 1, root, None, experts=[1], out=reused, splits_file=out / SPLITS_FILE, plots=False, log=str
    )
    assert json.loads((reused / SPLITS_FILE).read_text())["folds"] == splits
    with pytest.raises(ConfigError, match="--folds 3, but .* holds 2 folds"):
        run_cross_validation(SPEC, settings, 1, root, 3, out=tmp_path / "cv3", splits_file=out / SPLITS_FILE, log=str)


def test_script_refuses_cross_validation_with_predict_test(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "Kidney.py"), "--folds", "3", "--predict-test", "--data-root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--predict-test applies to a single run, not to cross-validation" in result.stderr
