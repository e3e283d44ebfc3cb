"""Images to predict: a flat folder named any way, a QUBIQ tree, one file; the channel rule on headers."""

import re

import numpy as np
import pytest
from helpers import write_case, write_nifti

from common.data.cases import DataError
from common.data.inputs import find_inputs, image_grid, nifti_name, read_header


@pytest.mark.parametrize(
    "name, stem",
    [
        ("scan.nii.gz", "scan"),
        ("scan 7.nii", "scan 7"),
        ("Patient.A.NII.GZ", "Patient.A"),
        ("image.nii.gz", "image"),
        ("notes.txt", None),
        ("scan.nii.gz.bak", None),
        (".nii.gz", None),
    ],
)
def test_nifti_names(tmp_path, name, stem):
    assert nifti_name(tmp_path / name) == stem


def test_a_flat_folder_lists_what_it_skips(tmp_path):
    write_nifti(tmp_path / "b 2.nii.gz", np.zeros((4, 4)))
    write_nifti(tmp_path / "a10.nii", np.zeros((4, 4)))
    write_nifti(tmp_path / "a9.nii.gz", np.zeros((4, 4)))
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / "other").mkdir()
    inputs, skipped = find_inputs(tmp_path, task=1)
    assert [(i.name, i.output) for i in inputs] == [("a9", "a9.nii.gz"), ("a10", "a10.nii.gz"), ("b 2", "b 2.nii.gz")]
    assert skipped == [
        f"{tmp_path / 'other'}: a folder without image.nii.gz under it; skipped",
        f"{tmp_path / 'readme.md'}: not a NIfTI file (.nii.gz or .nii); skipped",
    ]


def test_a_qubiq_tree_is_read_as_the_scripts_read_it(tmp_path):
    dataset = tmp_path / "kidney"
    for case_id in ("case10", "case2"):
        write_case(dataset / "Testing" / case_id, np.zeros((4, 4)), {(1, 1): np.zeros((4, 4), np.uint8)})
    write_nifti(dataset / "Testing" / "case2" / "extra.nii.gz", np.zeros((4, 4)))
    inputs, skipped = find_inputs(dataset, task=2)
    assert [(i.name, i.output) for i in inputs] == [
        ("case2", "case2/task02.nii.gz"),
        ("case10", "case10/task02.nii.gz"),
    ]
    assert len(skipped) == 1 and "extra.nii.gz: a NIfTI file that is neither image.nii.gz nor a mask" in skipped[0]
    one, _ = find_inputs(dataset / "Testing" / "case10", task=1)  # a case folder alone
    assert [i.output for i in one] == ["case10/task01.nii.gz"]
    write_case(dataset / "Testing" / "case02", np.zeros((4, 4)), {})
    with pytest.raises(DataError, match="name the same case"):
        find_inputs(dataset, task=1)


def test_one_file_and_refusals(tmp_path):
    write_nifti(tmp_path / "x.nii.gz", np.zeros((4, 4)))
    inputs, skipped = find_inputs(tmp_path / "x.nii.gz", task=1)
    assert [i.output for i in inputs] == ["x.nii.gz"] and skipped == []
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="not a NIfTI file"):
        find_inputs(tmp_path / "x.png", task=1)
    with pytest.raises(DataError, match="no such file or folder"):
        find_inputs(tmp_path / "missing", task=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image to predict.*the folder is empty"):
        find_inputs(tmp_path / "empty", task=1)
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(DataError, match="broken.nii.gz: cannot be read as NIfTI"):
        read_header(tmp_path / "broken.nii.gz")


@pytest.mark.parametrize(
    "shape, channels, expected",
    [
        ((20, 24), 1, (20, 24)),
        ((20, 24, 1), 1, (20, 24)),  # a trailing singleton axis
        ((20, 24, 1, 1), 1, (20, 24)),
        ((240, 240, 4), 4, (240, 240)),  # channels last
        ((240, 240, 4, 1), 4, (240, 240)),
        ((240, 240, 4), 1, "a volume of 4 slices, or an image of 4 channels"),
        ((512, 512, 80), 1, "a volume of 80 slices"),
        ((240, 240), 4, "a 2D image of one channel \\(240 x 240\\); the run was trained on rows x cols x 4 channels"),
        ((240, 240, 3), 4, "3 values per pixel in the last axis"),
        ((8, 8, 4, 2), 4, "a 4-dimensional array"),
        ((8,), 1, "not an image"),
    ],
)
def test_the_rule_that_tells_channels_from_slices(shape, channels, expected):
    grid = image_grid(shape, channels)
    if isinstance(expected, tuple):
        assert grid == expected
    else:
        assert isinstance(grid, str)
        assert re.search(expected, grid), grid
