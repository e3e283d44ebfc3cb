"""The data check before any training (common.data.check): every problem at once, nothing created."""

import gzip

import nibabel as nib
import numpy as np
import pytest
from helpers import SPEC, TINY, make_toy_root, write_nifti

from common.data.cases import DataError, discover_cases
from common.data.check import check_run_data
from common.runs.pipeline import run_task


@pytest.fixture()
def toy_root(tmp_path):
    return make_toy_root(tmp_path / "qubiq")


def roles_of(root, held_out=("case04", "case05")):
    train = discover_cases(root, "toy", "train")
    validation = discover_cases(root, "toy", "validation")
    return {
        "train": [c for c in train if c.case_id not in held_out],
        "validation": validation,
        "held_out": [c for c in train if c.case_id in held_out],
    }


def case_folder(root, case_id):
    return next(p.parent for p in root.rglob("image.nii.gz") if p.parent.name == case_id)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nan_mask(path):
    mask = np.zeros((20, 24), np.float32)
    mask[2, 2] = np.nan
    write_nifti(path, mask)


def misshaped(path):
    write_nifti(path, np.zeros((10, 10), np.uint8))


def label_map(path):
    write_nifti(path, np.arange(20 * 24, dtype=np.uint8).reshape(20, 24) % 3)


def garbage_image(path):
    path.write_bytes(gzip.compress(b"not a nifti file"))


@pytest.mark.parametrize(
    "case_id, name, damage, expected",
    [
        ("case06", "task01_seg01.nii.gz", truncate, r"case06/task01_seg01.nii.gz"),  # a validation case
        ("case04", "task01_seg02.nii.gz", nan_mask, r"case04/task01_seg02.nii.gz: mask has NaN"),  # held out
        ("case01", "task01_seg01.nii.gz", misshaped, r"case01/task01_seg01.nii.gz: mask shape \(10, 10\) differs"),
        ("case02", "task01_seg02.nii.gz", label_map, r"case02/task01_seg02.nii.gz: expected a binary mask"),
        ("case07", "image.nii.gz", garbage_image, r"cannot read .*case07/image.nii.gz"),
    ],
)
def test_a_bad_file_anywhere_is_named(toy_root, case_id, name, damage, expected):
    damage(case_folder(toy_root, case_id) / name)
    with pytest.raises(DataError, match=expected):
        check_run_data(SPEC, 1, roles_of(toy_root), {"seg01": [1], "seg02": [2]})


def test_every_problem_is_reported_not_only_the_first(toy_root):
    truncate(case_folder(toy_root, "case01") / "task01_seg01.nii.gz")
    misshaped(case_folder(toy_root, "case01") / "task01_seg02.nii.gz")
    nan_mask(case_folder(toy_root, "case06") / "task01_seg02.nii.gz")
    for path in case_folder(toy_root, "case05").glob("task01_seg*"):
        path.unlink()  # a held-out case without masks
    with pytest.raises(DataError) as caught:
        check_run_data(SPEC, 1, roles_of(toy_root), {"seg01": [1], "seg02": [2]})
    message = str(caught.value)
    assert message.startswith("the data check found 4 problem(s); nothing was created or trained")
    for part in (
        "case01/task01_seg01.nii.gz",
        "case01/task01_seg02.nii.gz: mask shape (10, 10)",
        "case06/task01_seg02.nii.gz: mask has NaN",
        "held-out case case05",
    ):
        assert part in message, part


@pytest.mark.parametrize(
    "networks, expected",
    [
        ({"seg02": [2]}, r"seg02: expert 2 has no mask of task 1 in any of the 3 training cases"),
        ({"multi-head": [1, 2]}, r"multi-head \(its head for seg02\): expert 2 has no mask"),
        ({"soft-label": [None]}, r"soft-label: none of the 3 training cases has a mask of task 1"),
    ],
)
def test_an_expert_without_training_masks_is_refused_before_training(toy_root, networks, expected):
    for case in roles_of(toy_root)["train"]:
        for path in case.folder.glob("task01_seg02*" if networks != {"soft-label": [None]} else "task01_seg*"):
            path.unlink()
    with pytest.raises(DataError, match=expected):
        check_run_data(SPEC, 1, roles_of(toy_root), networks)


def test_a_clean_tree_passes_and_counts_what_it_read(toy_root):
    checked = check_run_data(SPEC, 1, roles_of(toy_root), {"seg01": [1], "seg02": [2]})
    assert sorted(checked.loaded) == ["case01", "case02", "case03", "case04", "case05", "case06", "case07"]
    assert checked.files == 7 + 13  # 7 images, 13 masks (case03 lacks expert 2's)
    assert "no problem found" in checked.summary()


def test_warnings_are_collected_for_the_run_log(toy_root):
    mask = case_folder(toy_root, "case02") / "task01_seg01.nii.gz"
    write_nifti(mask, (np.asarray(nib.load(mask).dataobj) * 255).astype(np.uint8))
    seen = []
    checked = check_run_data(SPEC, 1, roles_of(toy_root), {"seg01": [1]}, echo=seen.append)
    assert len(checked.warnings) == 1 and "on-value is 255" in checked.warnings[0] and str(mask) in seen[0]


def test_run_task_refuses_bad_data_before_creating_the_run_folder(toy_root, tmp_path):
    nan_mask(case_folder(toy_root, "case07") / "task01_seg01.nii.gz")
    out = tmp_path / "run"
    with pytest.raises(DataError, match="case07/task01_seg01.nii.gz: mask has NaN"):
        run_task(SPEC, TINY, 1, toy_root, out=out, verbose=0, log=lambda _: None)
    assert not out.exists()


def test_cross_validation_refuses_bad_data_before_creating_its_folder(toy_root, tmp_path):
    from common.runs.crossval import run_cross_validation

    truncate(case_folder(toy_root, "case03") / "task01_seg01.nii.gz")
    out = tmp_path / "cv"
    with pytest.raises(DataError, match="case03/task01_seg01.nii.gz"):
        run_cross_validation(SPEC, TINY, 1, toy_root, 2, out=out, verbose=0, log=lambda _: None)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["run", "cross-validation"])
def test_a_case_folder_without_its_image_is_one_more_listed_problem(toy_root, tmp_path, kind):
    from common.runs.crossval import run_cross_validation

    orphan = case_folder(toy_root, "case02")
    (orphan / "image.nii.gz").unlink()  # its masks stay: a case folder without its image
    nan_mask(case_folder(toy_root, "case07") / "task01_seg01.nii.gz")
    out = tmp_path / kind
    with pytest.raises(DataError) as caught:
        if kind == "run":
            run_task(SPEC, TINY, 1, toy_root, out=out, verbose=0, log=lambda _: None)
        else:
            run_cross_validation(SPEC, TINY, 1, toy_root, 2, out=out, verbose=0, log=lambda _: None)
    message = str(caught.value)
    assert message.startswith("the data check found 2 problem(s); nothing was created or trained"), message
    assert f"case folder {orphan} has masks but no image.nii.gz" in message
    assert "case07/task01_seg01.nii.gz: mask has NaN" in message
    assert not out.exists()


def test_a_case_folder_without_its_image_still_stops_discovery_alone(toy_root):
    (case_folder(toy_root, "case02") / "image.nii.gz").unlink()
    with pytest.raises(DataError, match="case02 has masks but no image.nii.gz"):
        discover_cases(toy_root, "toy", "train")  # a caller that runs no data check is never handed fewer cases
    problems = []
    assert "case02" not in [c.case_id for c in discover_cases(toy_root, "toy", "train", problems=problems)]
    assert len(problems) == 1 and problems[0].endswith("case02 has masks but no image.nii.gz")
