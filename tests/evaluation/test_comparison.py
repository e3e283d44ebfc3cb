"""Paired comparison of experiment variants on tiny hand-computed scores."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.evaluation.comparison import (
    VariantResult,
    comparison_csv,
    comparison_rows,
    format_comparison,
    paired_comparison,
)

PROJECT = Path(__file__).resolve().parents[2]
BASE = [0.80, 0.82, 0.84]


def variant(folds, cases=None, name="other", changes=None, seconds=60.0, parameters=1000, networks=6):
    return VariantResult(
        name=name,
        changes=changes if changes is not None else {},
        fold_scores=list(folds),
        case_scores=dict(cases or {}),
        seconds=seconds,
        parameters=parameters,
        networks=networks,
    )


def signed_cases(better, worse, tied):
    """Baseline case scores 0.5; the other variant's 0.6 (better), 0.4 (worse) or 0.5 + 1e-13 (a tie)."""
    ids = [f"case{i:02d}" for i in range(better + worse + tied)]
    other = [0.6] * better + [0.4] * worse + [0.5 + 1e-13] * tied
    return dict.fromkeys(ids, 0.5), dict(zip(ids, other, strict=True))


@pytest.mark.parametrize(
    "folds, mean, std",
    [
        (BASE, 0.82, 0.02),
        ([0.85, 0.86, 0.88], 0.8633333333, 0.0152752523),
        ([0.7], 0.7, 0.0),
        ([0.6, 0.8], 0.7, 0.1414213562),
    ],
)
def test_variant_mean_and_sample_std(folds, mean, std):
    result = variant(folds)
    assert result.mean == pytest.approx(mean)
    assert result.std == pytest.approx(std)


@pytest.mark.parametrize(
    "base, other, differences, mean, std, signs, verdict",
    [
        # Every fold better and mean 0.0433 > std 0.0058.
        (BASE, [0.85, 0.86, 0.88], [0.05, 0.04, 0.04], 0.0433333333, 0.0057735027, (3, 0, 0), "better"),
        # Mixed signs.
        (BASE, [0.83, 0.81, 0.86], [0.03, -0.01, 0.02], 0.0133333333, 0.0208166600, (2, 1, 0), "within"),
        # Every fold better but mean 0.0173 < std 0.0283: within the noise.
        (BASE, [0.801, 0.821, 0.89], [0.001, 0.001, 0.05], 0.0173333333, 0.0282901632, (3, 0, 0), "within"),
        # Every fold worse and |mean| 0.0467 > std 0.0058.
        (BASE, [0.75, 0.77, 0.80], [-0.05, -0.05, -0.04], -0.0466666667, 0.0057735027, (0, 3, 0), "worse"),
        # Every fold worse but |mean| 0.0433 < std 0.0493.
        (BASE, [0.70, 0.80, 0.83], [-0.10, -0.02, -0.01], -0.0433333333, 0.0493288286, (0, 3, 0), "within"),
        # Identical scores: all tied.
        (BASE, BASE, [0.0, 0.0, 0.0], 0.0, 0.0, (0, 0, 3), "within"),
        # One tied fold (exactly 0) and one within 1e-12: not every fold better.
        (BASE, [0.80, 0.82 + 1e-13, 0.89], [0.0, 1e-13, 0.05], 0.0166666667, 0.0288675135, (1, 0, 2), "within"),
        # A single fold cannot be assessed, whatever its difference.
        ([0.8], [0.9], [0.1], 0.1, 0.0, (1, 0, 0), "not assessed"),
    ],
)
def test_paired_comparison_of_folds(base, other, differences, mean, std, signs, verdict):
    result = paired_comparison(variant(base, name="baseline"), variant(other))
    assert result["fold_differences"] == pytest.approx(differences, abs=1e-12)
    assert result["mean_difference"] == pytest.approx(mean, abs=1e-10)
    assert result["std_difference"] == pytest.approx(std, abs=1e-10)
    assert (result["folds_better"], result["folds_worse"], result["folds_tied"]) == signs
    assert result["verdict"].startswith(verdict)


def test_verdict_strings():
    base = variant(BASE, name="baseline")
    better = paired_comparison(base, variant([0.85, 0.86, 0.88]))
    worse = paired_comparison(base, variant([0.75, 0.77, 0.80]))
    within = paired_comparison(base, variant([0.83, 0.81, 0.86]))
    assert better["verdict"] == "better: larger than the fold-to-fold noise"
    assert worse["verdict"] == "worse: larger than the fold-to-fold noise"
    assert within["verdict"] == "within the fold-to-fold noise"
    single = paired_comparison(variant([0.8]), variant([0.9]))
    assert single["verdict"] == "not assessed: needs 2 or more folds"


@pytest.mark.parametrize(
    "better, worse, tied, p",
    [
        (8, 2, 0, 2 * (1 + 10 + 45) / 1024),  # 0.109375
        (2, 8, 1, 0.109375),  # symmetric; the tie is left out
        (5, 0, 0, 2 / 32),  # 0.0625
        (0, 5, 0, 0.0625),
        (10, 0, 0, 2 / 1024),
        (3, 3, 0, 1.0),  # 2 * (1 + 6 + 15 + 20) / 64 > 1: clipped
        (1, 0, 0, 1.0),
        (0, 0, 3, 1.0),  # no untied case
        (0, 0, 0, 1.0),  # no case at all
    ],
)
def test_sign_test_on_cases(better, worse, tied, p):
    base_cases, other_cases = signed_cases(better, worse, tied)
    result = paired_comparison(variant(BASE, base_cases), variant(BASE, other_cases))
    assert (result["cases_better"], result["cases_worse"], result["cases_tied"]) == (better, worse, tied)
    assert result["sign_test_p"] == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize(
    "base_ids, other_ids, message",
    [
        (["case01", "case02", "case03"], ["case01", "case02", "case04"], r"'other': \['case03'\].*\['case04'\]"),
        (["case01"], ["case01", "case02"], r"'other': \[\].*'baseline': \['case02'\]"),
        (["case01", "case02"], ["case01"], r"'other': \['case02'\].*'baseline': \[\]"),
    ],
)
def test_mismatched_cases_raise_naming_the_missing_ids(base_ids, other_ids, message):
    base = variant(BASE, dict.fromkeys(base_ids, 0.5), name="baseline")
    other = variant(BASE, dict.fromkeys(other_ids, 0.5))
    with pytest.raises(ValueError, match=message):
        paired_comparison(base, other)


def test_mismatched_fold_counts_raise():
    with pytest.raises(ValueError, match="2 folds but baseline .* has 3"):
        paired_comparison(variant(BASE, name="baseline"), variant([0.8, 0.9]))
    with pytest.raises(ValueError, match="folds"):
        format_comparison([variant(BASE, name="baseline"), variant([0.8, 0.9])], "t")


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="no fold scores"):
        variant([])
    for function in (comparison_rows, comparison_csv, lambda variants: format_comparison(variants, "t")):
        with pytest.raises(ValueError, match="no variants"):
            function([])


def comparison_variants():
    base_cases, other_cases = signed_cases(8, 2, 1)
    return [
        variant(BASE, base_cases, name="baseline", seconds=252, parameters=1234567, networks=6),
        variant(
            [0.85, 0.86, 0.88],
            other_cases,
            name="dropout=standard",
            changes={"dropout": "standard", "seed": "1"},
            seconds=52.4,
            parameters=1234567,
            networks=6,
        ),
        variant([0.75, 0.77, 0.80], base_cases, name="dropout=none", changes={"dropout": "none"}, seconds=7500),
    ]


def test_format_comparison_table():
    text = format_comparison(comparison_variants(), "Dropout")
    lines = text.splitlines()
    assert lines[0] == "### Dropout"
    assert lines[2] == (
        "| variant | QUBIQ (mean ± std) | per fold | Δ vs baseline (per fold) | folds +/−/= | cases +/− (sign p) "
        "| verdict | training time | networks | parameters |"
    )
    assert lines[3] == "|" + "---|" * 10
    baseline, better, worse = lines[4:7]
    assert baseline == (
        "| baseline | 0.8200 ± 0.0200 | 0.8000 / 0.8200 / 0.8400 | — | — | — | baseline | 4 min 12 s | 6 | 1,234,567 |"
    )
    assert better == (
        "| dropout=standard | 0.8633 ± 0.0153 | 0.8500 / 0.8600 / 0.8800 "
        "| +0.0433 (+0.0500 / +0.0400 / +0.0400) | 3/0/0 | 8/2 (p=0.11) "
        "| better: larger than the fold-to-fold noise | 52 s | 6 | 1,234,567 |"
    )
    # Mean 0.77333, std 0.02517; differences -0.05, -0.05, -0.04; every case tied.
    assert worse == (
        "| dropout=none | 0.7733 ± 0.0252 | 0.7500 / 0.7700 / 0.8000 "
        "| -0.0467 (-0.0500 / -0.0500 / -0.0400) | 0/3/0 | 0/0 (p=1.00) "
        "| worse: larger than the fold-to-fold noise | 2 h 05 min | 6 | 1,000 |"
    )
    assert "−" not in "\n".join(lines[4:])  # the proper minus sign only in the header
    assert lines[7] == ""
    assert lines[8].startswith("Verdict:") and "not a significance test" in lines[8]
    assert len(lines) == 9


@pytest.mark.parametrize("seconds, shown", [(0, "0 s"), (52.4, "52 s"), (59.6, "1 min 0 s"), (3599, "59 min 59 s")])
def test_training_time_in_table(seconds, shown):
    assert f"| {shown} |" in format_comparison([variant(BASE, seconds=seconds)], "t")


def test_small_sign_test_p_in_table():
    base_cases, other_cases = signed_cases(10, 0, 0)
    text = format_comparison([variant(BASE, base_cases), variant(BASE, other_cases)], "t")
    assert "10/0 (p=2.0e-03)" in text


def test_comparison_rows_fields():
    rows = comparison_rows(comparison_variants())
    assert list(rows[1]) == [
        "variant",
        "changes",
        "mean",
        "std",
        "fold_1",
        "fold_2",
        "fold_3",
        "delta_mean",
        "delta_std",
        "delta_fold_1",
        "delta_fold_2",
        "delta_fold_3",
        "folds_better",
        "folds_worse",
        "folds_tied",
        "cases_better",
        "cases_worse",
        "cases_tied",
        "sign_test_p",
        "verdict",
        "seconds",
        "networks",
        "parameters",
    ]
    assert list(rows[0]) == list(rows[1])
    assert rows[0]["delta_mean"] is None and rows[0]["verdict"] == "baseline"
    assert rows[1]["changes"] == "dropout=standard;seed=1"
    assert rows[1]["delta_mean"] == pytest.approx(0.0433333333)
    assert rows[1]["delta_fold_1"] == pytest.approx(0.05)
    assert (rows[1]["cases_better"], rows[1]["cases_worse"], rows[1]["cases_tied"]) == (8, 2, 1)
    assert rows[1]["sign_test_p"] == 0.109375
    assert rows[2]["verdict"].startswith("worse")


def test_comparison_csv_parses_back_to_the_same_numbers():
    variants = comparison_variants()
    rows = comparison_rows(variants)
    text = comparison_csv(variants)
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[0] == ",".join(rows[0])
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == len(rows)
    for row, back in zip(rows, parsed, strict=True):
        assert list(back) == list(row)
        for key, value in row.items():
            if value is None:
                assert back[key] == ""
            elif isinstance(value, str):
                assert back[key] == value
            elif isinstance(value, int):
                assert int(back[key]) == value
            else:
                assert float(back[key]) == value  # full precision: exactly equal


def test_module_does_not_import_tensorflow():
    code = "import sys, common.evaluation.comparison; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=PROJECT).returncode == 0


def _cv_folder(root, name, settings, fold_scores, per_case, folds, seed=0):
    import json

    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"seed": seed, "experts": [1, 2], "settings": settings}))
    (folder / "splits.json").write_text(json.dumps({"folds": folds}))
    results = {"dataset": "kidney", "task": 1, "fold_scores": fold_scores, "per_case": per_case,
               "training_seconds": 60.0, "networks": 4, "parameters": 100}  # fmt: skip
    (folder / "cv_results.json").write_text(json.dumps(results))
    return folder


def test_folders_made_apart_are_compared_as_one_experiment(tmp_path, capsys):
    from common.comparison import main
    from common.runs.compare import compare_folders
    from common.spec import Settings

    base = Settings(input_size=64, keep="best").to_dict()
    last = Settings(input_size=64, keep="last").to_dict()
    folds = [{"held_out": ["case01", "case02"]}, {"held_out": ["case03", "case04"]}]
    a = _cv_folder(tmp_path, "a", base, [0.8, 0.6], {"case01": 0.9, "case02": 0.7, "case03": 0.6, "case04": 0.6}, folds)
    b = _cv_folder(tmp_path, "b", last, [0.9, 0.7], {"case01": 1.0, "case02": 0.8, "case03": 0.7, "case04": 0.5}, folds)
    variants, title = compare_folders([a, b])
    assert [v.name for v in variants] == ["baseline (a)", "keep=last"] and variants[1].changes == {"keep": "last"}
    paired = paired_comparison(*variants)
    assert paired["fold_differences"] == pytest.approx([0.1, 0.1])  # by hand: 0.9 - 0.8, 0.7 - 0.6
    assert (paired["cases_better"], paired["cases_worse"]) == (3, 1)
    assert title == "kidney, task 1: 2-fold cross-validations on the same folds, seed 0"
    assert main([str(a), str(b)]) == 0 and "| keep=last | 0.8000 ± 0.1414 |" in capsys.readouterr().out

    other = _cv_folder(tmp_path, "c", last, [0.9, 0.7], {"case01": 1.0}, folds[::-1])
    with pytest.raises(ValueError, match=r"c: its folds \(splits.json\) differ from .*a's"):
        compare_folders([a, other])
    reseeded = _cv_folder(tmp_path, "d", last, [0.9, 0.7], {"case01": 1.0}, folds, seed=1)
    with pytest.raises(ValueError, match="its seed differ"):
        compare_folders([a, reseeded])
    with pytest.raises(SystemExit) as stop:
        main([str(a), str(tmp_path / "missing")])
    assert stop.value.code == 2 and "not a finished cross-validation folder" in capsys.readouterr().err


def test_map_rule_scores_are_columns_before_the_uncertainty_metrics(tmp_path):
    from common.runs.crossval import rule_summary, variant_metrics

    # two folds: one records its rules, one (made before they were recorded) has them in its results.json
    (tmp_path / "fold2").mkdir()
    (tmp_path / "fold2" / "results.json").write_text(json.dumps({"map_rules": {"median": {"score": 0.7}}}))
    folds = [{"map_rules": {"median": 0.9}}, {"run_dir": str(tmp_path / "fold2")}]
    rules = rule_summary(folds)
    assert rules["median"]["fold_scores"] == [0.9, 0.7] and rules["median"]["mean"] == pytest.approx(0.8)
    assert rules["median"]["std"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    summary = {"folds": folds, "uncertainty": {"mean": {"ged": 0.25}}}
    assert variant_metrics(summary) == {"ged": 0.25, "rule:median": pytest.approx(0.8)}
    assert rule_summary([{"map_rules": {}}, {"map_rules": {"median": 0.5}}]) == {}  # not every fold: no column

    base, other = variant([0.8, 0.8]), variant([0.9, 0.7], name="agreement")
    other.metrics = variant_metrics(summary)
    header = format_comparison([base, other], "T").splitlines()[2]
    assert header.index("QUBIQ, median map ↑") < header.index("GED ↓")
    assert comparison_rows([base, other])[1]["rule:median"] == pytest.approx(0.8)
