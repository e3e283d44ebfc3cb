"""The standalone scorer (python -m common.score) on a tiny hand-computed tree."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import write_case, write_nifti

from common.data.cases import DataError
from common.evaluation.predictions import prediction_path, write_prediction
from common.evaluation.scoring import score_cases
from common.score import main, score_folder

PROJECT = Path(__file__).resolve().parents[2]

# Voxels A, B of 1 x 2 images.
# case01: expert 1 marks A and B, expert 2 marks A: consensus A = 1, B = 1/2. Map (0.8, 0.2):
#   t = 0.1, 0.2: {A, B} vs {A, B} -> 1;  t = 0.3-0.5: {A} vs {A, B} -> 2/3;  t = 0.6-0.8: {A} vs {A} -> 1;
#   t = 0.9: {} vs {A} -> 0.  Mean 7/9.
# case02: only expert 1 (expert 2 did not annotate it) marks B. Map (0, 0.5) stored as float32 (exactly 0.5):
#   t <= 0.5: {B} vs {B} -> 1;  t >= 0.6: {} vs {B} -> 0.  Mean 5/9.
CASE01 = [1, 1, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 0]
CASE02 = [1] * 5 + [0] * 4
SCORE = (7 / 9 + 5 / 9) / 2
PER_THRESHOLD = [(a + b) / 2 for a, b in zip(CASE01, CASE02, strict=True)]


@pytest.fixture
def tree(tmp_path):
    """train: case01, case02 (+ case03 without a map); validation: case35; test: case40 (no masks).

    The prediction folder is laid out as a run writes it: held-out, validation and test cases together.
    """
    root, pred = tmp_path / "data", tmp_path / "pred"
    train = root / "training_data_v2" / "prostate" / "Training"
    image = np.zeros((1, 2), np.float32)
    write_case(train / "case01", image, {(1, 1): np.array([[1, 1]], np.uint8), (1, 2): np.array([[1, 0]], np.uint8)})
    write_case(train / "case02", image, {(1, 1): np.array([[0, 1]], np.float32)})
    write_case(train / "case03", image, {(1, 1): np.array([[0, 1]], np.uint8)})
    write_case(
        root / "validation_data_v2" / "prostate" / "Validation" / "case35",
        image,
        {(1, 1): np.array([[1, 0]], np.uint8)},
    )
    write_case(root / "test" / "prostate" / "Testing" / "case40", image, {})
    ref = nib.load(str(train / "case01" / "image.nii.gz"))
    for case, values in [
        ("case01", [[0.8, 0.2]]),
        ("case02", [[0.0, 0.5]]),
        ("case35", [[1.0, 0.0]]),
        ("case40", [[0.0, 0.0]]),
    ]:
        write_prediction(prediction_path(pred, "prostate", case, 1), np.array(values), ref)
    return root, pred


def argv(root, pred, *extra, split="train", task="1"):
    where = ["--pred", str(pred), "--data-root", str(root)]
    return [*where, "--dataset", "prostate", "--split", split, "--task", task, *extra]


def expected_map(pred, case):
    """What not_scored and the error messages name for a case without a map."""
    return (pred / "prostate" / case / "task01.nii.gz").resolve()


def no_map(pred, case):
    return f"no map (expected {expected_map(pred, case)})"


def test_hand_computed_score(tree):
    root, pred = tree
    result = score_folder(pred, root, "prostate", "train", 1, allow_missing=True)
    assert result["cases"] == ["case01", "case02"]  # case03 has no map; case35 and case40 are other splits'
    assert result["dice"][0] == pytest.approx(CASE01) and result["dice"][1] == pytest.approx(CASE02)
    assert result["per_case"] == pytest.approx({"case01": 7 / 9, "case02": 5 / 9})
    assert list(result["per_threshold"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    assert list(result["per_threshold"].values()) == pytest.approx(PER_THRESHOLD)
    assert result["score"] == pytest.approx(SCORE)
    assert result["not_scored"] == {"case03": no_map(pred, "case03"), "case35": "validation", "case40": "test"}
    assert result["held_out_from"] is None
    assert (result["dataset"], result["split"], result["task"]) == ("prostate", "train", 1)
    assert result["pred_dir"] == str(pred.resolve()) and result["data_root"] == str(root.resolve())


def test_dataset_folder_cases_and_another_split(tree):
    root, pred = tree
    only02 = score_folder(pred / "prostate", root, "prostate", "train", 1, cases=["case02"])
    assert only02["cases"] == ["case02"] and only02["score"] == pytest.approx(5 / 9)
    assert only02["not_scored"] == {"case01": "not in --cases", "case35": "validation", "case40": "test"}
    validation = score_folder(pred, root, "prostate", "validation", 1)
    assert validation["cases"] == ["case35"] and validation["score"] == 1.0
    assert validation["not_scored"] == {"case01": "train", "case02": "train", "case40": "test"}


def test_maps_read_back_score_exactly_as_in_memory(tmp_path):
    """float32 maps with values at k/3 and within a float32 step of every threshold score as in memory."""
    rng = np.random.default_rng(0)
    shape = (6, 9)
    masks = {(1, e): (rng.random(shape) < 0.5).astype(np.uint8) for e in (1, 2, 3)}
    write_case(tmp_path / "data" / "training_data_v2" / "prostate" / "case01", np.zeros(shape), masks)
    near = [np.float32(j / 10 + d) for j in range(1, 10) for d in (-1e-6, -1e-7, 0, 1e-7)]
    values = np.array(near + [np.float32(k / 3) for k in range(4)] + list(rng.random(14)), np.float32)
    in_memory = rng.permutation(values).reshape(shape)
    ref = nib.load(str(tmp_path / "data" / "training_data_v2" / "prostate" / "case01" / "image.nii.gz"))
    write_prediction(prediction_path(tmp_path / "pred", "prostate", "case01", 1), in_memory, ref)
    truth = np.stack([masks[(1, e)] for e in (1, 2, 3)]).astype(bool)
    expected = score_cases({"case01": in_memory}, {"case01": truth})
    result = score_folder(tmp_path / "pred", tmp_path / "data", "prostate", "train", 1)
    assert result["dice"] == expected["dice"] and result["score"] == expected["score"]


def test_main_writes_results_and_prints_the_score_last(tree, capsys):
    root, pred = tree
    assert main(argv(root, pred, "--allow-missing")) == 0  # case03 has no map
    printed = capsys.readouterr().out.strip().splitlines()
    out = pred / "scores-prostate-train-task1"
    saved = json.loads((out / "results.json").read_text())
    assert saved["score"] == pytest.approx(SCORE)
    assert saved["per_case"] == pytest.approx({"case01": 7 / 9, "case02": 5 / 9})
    assert (saved["pred_dir"], saved["data_root"]) == (str(pred.resolve()), str(root.resolve()))
    assert (saved["dataset"], saved["split"], saved["task"]) == ("prostate", "train", 1)
    assert printed[-1] == f"QUBIQ score: {SCORE:.4f}" == "QUBIQ score: 0.6667"
    assert any(
        line.startswith("case01 ") and line.split()[1:] == [f"{v:.3f}" for v in CASE01] + [f"{7 / 9:.3f}"]
        for line in printed
    )
    assert "Not scored (cases of other splits): case35 (validation), case40 (test)" in printed
    assert f"Not scored (no map, --allow-missing): case03 (expected {expected_map(pred, 'case03')})" in printed
    assert saved["not_scored"] == {"case03": no_map(pred, "case03"), "case35": "validation", "case40": "test"}
    rows = list(csv.reader((out / "dice_matrix.csv").read_text().splitlines()))
    assert rows[0] == ["case", *[f"t=0.{j}" for j in range(1, 10)], "mean"]
    assert [r[0] for r in rows[1:]] == ["case01", "case02", "mean"]
    assert [float(v) for v in rows[-1][1:]] == pytest.approx([*PER_THRESHOLD, SCORE], abs=1e-6)

    with pytest.raises(SystemExit) as exit_info:  # never overwrites an earlier result
        main(argv(root, pred, "--allow-missing"))
    assert exit_info.value.code == 2
    assert f"output folder {out} exists and is not empty" in capsys.readouterr().err


def test_out_option_creates_the_folder(tree, capsys):
    root, pred = tree
    out = root.parent / "elsewhere" / "scores"
    assert main(argv(root, pred, "--out", str(out), "--cases", "case02")) == 0
    assert json.loads((out / "results.json").read_text())["cases"] == ["case02"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"QUBIQ score: {5 / 9:.4f}"


ALLOW = ["--allow-missing"]


def overwrite_map(pred, values):
    write_nifti(pred / "prostate" / "case01" / "task01.nii.gz", np.array(values, np.float32))


@pytest.mark.parametrize(
    "setup, extra, options, message",
    [
        # the prediction folder is missing, or holds no map
        (None, ["--pred", "{tmp}/nowhere"], {}, "prediction folder {tmp}/nowhere does not exist"),
        ("empty", ["--pred", "{tmp}/empty"], {}, "no prediction of task 1 in {tmp}/empty"),
        (None, [], {"task": "2"}, "no prediction of task 2 in {tmp}/pred/prostate"),
        # a map of a case that is not in the split
        (
            "case99",
            [],
            {},
            "case99.task01.nii.gz: case case99 is not a train case of prostate .nor a case of any other",
        ),
        ("case99", ["--cases", "case01"], {}, "case99.task01.nii.gz: case case99 is not a train case of prostate .nor"),
        (None, ["--cases", "case35"], {}, r"case case35 is not a train case of prostate \(it is a validation case\)"),
        # a bad map (case03 has none: --allow-missing lets the check reach case01's)
        ("shape", ALLOW, {}, r"case01.task01.nii.gz: prediction of shape \(1, 3\) differs from the masks' \(1, 2\)"),
        ("range", ALLOW, {}, r"case01.task01.nii.gz: prediction must be within \[0, 1\]; found values in \[0, 2\]"),
        ("nan", ALLOW, {}, "case01.task01.nii.gz: prediction holds 1 NaN or infinite values"),
        (None, [], {"split": "test"}, r"case case40 has no mask for task 1 \(.*case40; it has no masks at all\)"),
        (None, [], {"split": "holdout"}, "argument --split: invalid choice: 'holdout'"),
        (None, [], {"task": "0"}, "argument --task: expected a task number >= 1, got 0"),
        # a task the dataset does not have is refused first, naming the valid ones (as the scripts do)
        (None, [], {"task": "7"}, "task 7 does not exist for prostate; valid tasks: 1, 2$"),
        # a dataset the project does not know is argparse's error, listing the choices
        (None, ["--dataset", "toy"], {}, "argument --dataset: invalid choice: 'toy' .choose from .*kidney"),
        (None, ["--cases", "case01,case01"], {}, "argument --cases: a case is named twice"),
    ],
)
def test_errors_exit_2_with_a_message(tree, capsys, setup, extra, options, message):
    root, pred = tree
    tmp = root.parent
    if setup == "empty":
        (tmp / "empty").mkdir()
    if setup == "case99":
        write_prediction(
            prediction_path(pred, "prostate", "case99", 1),
            np.zeros((1, 2)),
            nib.load(str(root / "training_data_v2" / "prostate" / "Training" / "case01" / "image.nii.gz")),
        )
    if setup == "shape":
        overwrite_map(pred, [[0.0, 0.0, 0.0]])
    if setup == "range":
        overwrite_map(pred, [[2.0, 0.0]])
    if setup == "nan":
        overwrite_map(pred, [[np.nan, 0.0]])
    out = tmp / "out"
    args = argv(root, pred, "--out", str(out), *[a.replace("{tmp}", str(tmp)) for a in extra], **options)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message.replace("{tmp}", str(tmp)), err[-1]), err
    assert err[-1].startswith("python -m common.score: error: ")
    assert len(err) == 1 or message.startswith("argument")  # argparse's own errors come after the usage line
    assert not out.exists()


def test_score_folder_checks_split_and_task(tree):
    root, pred = tree
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        score_folder(pred, root, "prostate", "holdout", 1)
    with pytest.raises(DataError, match="task must be >= 1, got 0"):
        score_folder(pred, root, "prostate", "train", 0)


def test_command_line_in_a_subprocess_exits_2_on_bad_input(tree):
    root, pred = tree
    overwrite_map(pred, [[0.0, 0.0, 0.0]])
    done = subprocess.run(
        [sys.executable, "-m", "common.score", *argv(root, pred, "--allow-missing")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m common.score: error: {pred / 'prostate' / 'case01' / 'task01.nii.gz'}: prediction of shape (1, 3) "
        "differs from the masks' (1, 2)"
    ]


PER_CASE = {"case01": 7 / 9, "case02": 5 / 9, "case35": 1.0}  # the hand-computed scores above; case35 is all right
OTHERS = {"case35": "validation", "case40": "test"}  # not_scored of the train split: the other splits' maps
MISSING = "missing"  # stands for no_map(pred, case) in the tables below


def remove_maps(pred, *cases):
    for case in cases:
        (pred / "prostate" / case / "task01.nii.gz").unlink()


def run_main_expecting_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "removed, extra, split, header, listed",
    [
        # the default: every train case must have a map, and case03 has none
        ((), [], "train", "for 1 of the 3 case(s) of the train split of prostate (--allow-missing scores", ["case03"]),
        # every missing case is named, each on its own line
        (["case02"], [], "train", "for 2 of the 3 case(s) of the train split of prostate", ["case02", "case03"]),
        # a case named by --cases
        ((), ["--cases", "case01,case03"], "train", "for 1 of the 2 case(s) named by --cases", ["case03"]),
        # the only validation case has no map: nothing to score
        (
            ["case35"],
            [],
            "validation",
            "for 1 of the 1 case(s) of the validation split of prostate: nothing",
            ["case35"],
        ),
        # no map at all for the split is an error even with --allow-missing
        (["case01", "case02"], ALLOW, "train", "for 3 of the 3 case(s) of the train split of prostate: nothing", []),
    ],
)
def test_a_missing_map_is_refused(tree, capsys, removed, extra, split, header, listed):
    root, pred = tree
    remove_maps(pred, *removed)
    out = root.parent / "out"
    err = run_main_expecting_exit_2(argv(root, pred, "--out", str(out), *extra, split=split), capsys)
    assert err[0].startswith(f"python -m common.score: error: no map of task 1 in {pred / 'prostate'} {header}"), err
    listed = listed or ["case01", "case02", "case03"]
    assert err[1 : 1 + len(listed)] == [f"  no map for case {c}: expected {expected_map(pred, c)}" for c in listed]
    assert not out.exists()  # refused before anything is written


def test_nothing_to_score_names_the_other_splits_maps(tree, capsys):
    root, pred = tree
    remove_maps(pred, "case01", "case02")
    err = run_main_expecting_exit_2(argv(root, pred, "--allow-missing"), capsys)
    assert err[-1] == "  the maps there are of other splits' cases: case35 (validation), case40 (test)"


@pytest.mark.parametrize(
    "removed, extra, cases, not_scored",
    [
        # case03 has no map: case01 and case02 are scored
        ((), [], ["case01", "case02"], {**OTHERS, "case03": MISSING}),
        # case02's map removed too: case01 alone
        (["case02"], [], ["case01"], {**OTHERS, "case02": MISSING, "case03": MISSING}),
        # --cases: the named case without a map is listed, and so is the map of the case not named
        ((), ["--cases", "case01,case03"], ["case01"], {**OTHERS, "case02": "not in --cases", "case03": MISSING}),
    ],
)
def test_allow_missing_scores_the_rest_and_records_not_scored(tree, capsys, removed, extra, cases, not_scored):
    root, pred = tree
    remove_maps(pred, *removed)
    out = root.parent / "out"
    assert main(argv(root, pred, "--out", str(out), "--allow-missing", *extra)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    saved = json.loads((out / "results.json").read_text())
    score = np.mean([PER_CASE[c] for c in cases])
    assert saved["cases"] == cases and saved["score"] == pytest.approx(score)
    assert saved["not_scored"] == {c: no_map(pred, c) if why == MISSING else why for c, why in not_scored.items()}
    assert list(saved["not_scored"]) == sorted(not_scored)  # in case order
    missing = [c for c in sorted(not_scored) if not_scored[c] == MISSING]
    listed = ", ".join(f"{c} (expected {expected_map(pred, c)})" for c in missing)
    assert f"Not scored (no map, --allow-missing): {listed}" in printed
    assert printed[-1] == f"QUBIQ score: {score:.4f}"


def as_run(pred, held_out, validation=(), train=("case03",), dataset="prostate", task=1, split=True):
    """Move the prediction folder into a run folder ``run/predictions`` with the ``config.json`` a run writes."""
    run = pred.parent / "run"
    run.mkdir()
    pred.rename(run / "predictions")
    config = {"dataset": {"name": dataset, "title": dataset.title()}, "task": task}
    if split:
        roles = {"train": list(train), "validation": list(validation), "held_out": list(held_out)}
        config["split"] = {**roles, "per_expert": {}}
    (run / "config.json").write_text(json.dumps(config))
    return run


NOT_HELD = "not held out by the run: its validation case"


@pytest.mark.parametrize(
    "held_out, validation, removed, split, folder, cases, not_scored",
    [
        # a run holding out case01 and case02, trained on case03: case03's missing map is no error
        (["case01", "case02"], ["case35"], (), "train", "", ["case01", "case02"], OTHERS),
        # --pred the <dataset> folder inside predictions/: the same
        (["case01", "case02"], ["case35"], (), "train", "prostate", ["case01", "case02"], OTHERS),
        # the run's validation case has no map: not an error either, it is not held out
        (["case01", "case02"], ["case35"], ["case35"], "train", "", ["case01", "case02"], {"case40": "test"}),
        # a cross-validation fold holding out case01 (train) and case35 (validation), validating on case02,
        # whose map it wrote too: the train split scores case01 only, the validation split case35
        (["case01", "case35"], ["case02"], (), "train", "", ["case01"], {**OTHERS, "case02": NOT_HELD}),
        (["case01", "case35"], ["case02"], (), "validation", "", ["case35"], {"case01": "train", "case02": "train"}),
    ],
)
def test_a_runs_predictions_folder_scores_its_held_out_cases(
    tree, capsys, held_out, validation, removed, split, folder, cases, not_scored
):
    root, pred = tree
    remove_maps(pred, *removed)
    run = as_run(pred, held_out, validation)
    out = root.parent / "out"
    assert main(argv(root, run / "predictions" / folder, "--out", str(out), split=split)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    saved = json.loads((out / "results.json").read_text())
    assert saved["cases"] == cases and saved["score"] == pytest.approx(np.mean([PER_CASE[c] for c in cases]))
    assert saved["not_scored"] == (not_scored if split == "train" else {**not_scored, "case40": "test"})
    config = str((run / "config.json").resolve())
    assert saved["held_out_from"] == config
    assert printed[1] == f"Cases: the run's held-out cases of the {split} split ({config})"


@pytest.mark.parametrize(
    "run_options, extra, split, message",
    [
        # a held-out case without a map
        ({"held_out": ["case01", "case03"]}, [], "train", r"for 1 of the 2 held-out case\(s\) of the run in the train"),
        # a run of another dataset or task, also with --cases
        ({"held_out": ["case01"], "dataset": "kidney"}, [], "train", r"json: the run in .*run is of dataset 'kidney'"),
        (
            {"held_out": ["case01"], "task": 2},
            [],
            "train",
            "is of dataset 'prostate', task 2, not --dataset prostate --task 1",
        ),
        ({"held_out": ["case01"], "dataset": "kidney"}, ["--cases", "case01"], "train", "of dataset 'kidney', task 1"),
        # a run that records no split (yet), or held-out cases that the data does not have
        ({"held_out": ["case01"], "split": False}, [], "train", "config.json: the run records no split"),
        ({"held_out": ["case01", "case99"]}, [], "train", r"held-out case\(s\) case99 are not cases of prostate under"),
        # no held-out case in the chosen split
        (
            {"held_out": ["case01", "case02"]},
            [],
            "validation",
            r"holds out no validation case of prostate \(its held-out",
        ),
    ],
)
def test_a_runs_folder_is_refused_when_it_does_not_match(tree, capsys, run_options, extra, split, message):
    root, pred = tree
    run = as_run(pred, **run_options)
    out = root.parent / "out"
    err = run_main_expecting_exit_2(argv(root, run / "predictions", "--out", str(out), *extra, split=split), capsys)
    assert err[0].startswith("python -m common.score: error: ")
    assert re.search(message, err[0]), err
    assert not out.exists()


def test_an_unreadable_run_config_is_refused(tree):
    root, pred = tree
    run = as_run(pred, ["case01"])
    (run / "config.json").write_text("{not json")
    with pytest.raises(DataError, match=r"config.json: cannot read the run's config"):
        score_folder(run / "predictions", root, "prostate", "train", 1)


def test_does_not_import_tensorflow():
    code = "import sys, common.score; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True)
