"""Case discovery and NIfTI reading on small temporary QUBIQ trees."""

import os
import re
import warnings

import numpy as np
import pytest
from helpers import write_case, write_cases, write_nifti

from common.data.cases import (
    DataError,
    DataWarning,
    MaskValueWarning,
    case_key,
    discover_cases,
    load_case,
    load_image,
    load_mask,
)
from common.spec import DatasetSpec

SPEC = DatasetSpec(
    name="toy",
    title="Toy",
    modality="MRI",
    channels=1,
    tasks=2,
    experts=3,
    image_shape=(4, 5),
    n_train=3,
    n_validation=1,
    n_test=1,
    n_held_out=1,
)
SPEC4 = DatasetSpec(
    name="toy4",
    title="Toy 4",
    modality="MRI",
    channels=4,
    tasks=1,
    experts=2,
    image_shape=(4, 5),
    n_train=2,
    n_validation=1,
    n_test=1,
    n_held_out=1,
)


def square(value=1, shape=(4, 5), dtype=np.uint8):
    mask = np.zeros(shape, dtype=dtype)
    mask[1:3, 1:3] = value
    return mask


@pytest.mark.parametrize("inner", ["Training", None])
def test_discovery_with_and_without_training_level(tmp_path, inner):
    base = tmp_path / "training_data_v2" / "toy"
    if inner:
        base = base / inner
    for number in (10, 2, 1):
        write_case(base / f"case{number:02d}", np.zeros((4, 5)), {(1, 1): square()})
    cases = discover_cases(tmp_path, "toy", "train")
    assert [c.case_id for c in cases] == ["case01", "case02", "case10"]
    assert all(c.split == "train" for c in cases)


def test_masks_paired_by_name_not_position(tmp_path):
    folder = tmp_path / "validation_data_v2" / "toy" / "Validation" / "case35"
    write_case(folder, np.zeros((4, 5)), {(2, 3): square(), (1, 1): square(), (1, 3): square()})
    (case,) = discover_cases(tmp_path, "toy", "validation")
    assert set(case.masks) == {(1, 1), (1, 3), (2, 3)}
    assert case.experts_for(1) == [1, 3]
    assert case.experts_for(2) == [3]
    assert case.masks[(2, 3)].name == "task02_seg03.nii.gz"


def test_missing_expert_is_simply_absent(tmp_path):
    folder = tmp_path / "training_data_v2" / "toy" / "Training" / "case01"
    write_case(folder, np.zeros((4, 5)), {(1, 1): square(), (1, 2): np.zeros((4, 5), np.uint8)})
    (case,) = discover_cases(tmp_path, "toy", "train")
    loaded = load_case(case, SPEC, task=1)
    assert sorted(loaded.masks) == [1, 2]
    assert loaded.mask_stack().shape == (2, 4, 5)


@pytest.mark.parametrize(
    "stored, dtype",
    [
        (square(1, (4, 5), np.uint8), np.uint8),
        (square(1.0, (4, 5), np.float32), np.float32),
        (square(1, (4, 5), np.uint8)[..., None], np.uint8),  # trailing singleton axis
    ],
)
def test_masks_binarised_whatever_dtype(tmp_path, stored, dtype):
    path = write_nifti(tmp_path / "m.nii.gz", stored.astype(dtype))
    mask = load_mask(path)
    assert mask.dtype == bool and mask.shape == (4, 5)
    assert np.array_equal(mask, square(1).astype(bool))


def test_empty_mask_stays_empty(tmp_path):
    path = write_nifti(tmp_path / "m.nii.gz", np.zeros((4, 5), np.float32))
    mask = load_mask(path)
    assert not mask.any()


@pytest.mark.parametrize(
    "stored, channels, shape",
    [
        (np.arange(20, dtype=np.int16).reshape(4, 5), 1, (4, 5, 1)),
        (np.arange(20, dtype=np.float32).reshape(4, 5, 1), 1, (4, 5, 1)),
        (np.arange(80, dtype=np.float32).reshape(4, 5, 4), 4, (4, 5, 4)),
    ],
)
def test_image_shapes(tmp_path, stored, channels, shape):
    image, nifti = load_image(write_nifti(tmp_path / "i.nii.gz", stored), channels)
    assert image.shape == shape and image.dtype == np.float32
    assert np.array_equal(image.reshape(-1), stored.astype(np.float32).reshape(-1))
    assert np.array_equal(nifti.affine, np.eye(4))


def test_wrong_channel_count_names_the_file(tmp_path):
    path = write_nifti(tmp_path / "i.nii.gz", np.zeros((4, 5, 3), np.float32))
    with pytest.raises(DataError, match=r"i\.nii\.gz.*4 channel"):
        load_image(path, 4)


def test_four_channel_case(tmp_path):
    folder = tmp_path / "training_data_v2" / "toy4" / "Training" / "case01"
    image = np.random.default_rng(0).normal(size=(4, 5, 4)).astype(np.float32)
    write_case(folder, image, {(1, 1): square(), (1, 2): square()})
    (case,) = discover_cases(tmp_path, "toy4", "train")
    loaded = load_case(case, SPEC4, task=1)
    assert loaded.image.shape == (4, 5, 4)
    assert np.allclose(loaded.image, image)


def test_mask_shape_mismatch_names_both(tmp_path):
    folder = tmp_path / "training_data_v2" / "toy" / "Training" / "case01"
    write_case(folder, np.zeros((4, 5)), {(1, 1): np.zeros((5, 5), np.uint8)})
    (case,) = discover_cases(tmp_path, "toy", "train")
    with pytest.raises(DataError, match=r"task01_seg01.*\(5, 5\).*\(4, 5\)"):
        load_case(case, SPEC, task=1)


def test_missing_root_and_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data-root"):
        discover_cases(tmp_path / "nowhere", "toy", "train")
    with pytest.raises(DataError, match="is empty; expected training_data_v2/"):
        discover_cases(tmp_path, "toy", "train")
    (tmp_path / "training_data_v2" / "other").mkdir(parents=True)
    with pytest.raises(DataError, match="training_data_v2/toy"):
        discover_cases(tmp_path, "toy", "train")
    (tmp_path / "training_data_v2" / "toy").mkdir(parents=True)
    with pytest.raises(DataError, match="no case found"):
        discover_cases(tmp_path, "toy", "train")


def test_corrupt_file_names_itself(tmp_path):
    path = write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 5), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="image.nii.gz"):
        load_image(path, 1)


def test_other_on_value_warns_and_is_foreground(tmp_path):
    path = write_nifti(tmp_path / "task01_seg02.nii.gz", square(255))
    with pytest.warns(MaskValueWarning, match=r"task01_seg02.*on-value is 255"):
        mask = load_mask(path)
    assert np.array_equal(mask, square(1).astype(bool))  # no division by the maximum


@pytest.mark.parametrize("values", [[0, 1, 2], [0.0, 0.5, 1.0]])
def test_non_binary_mask_is_refused(tmp_path, values):
    mask = np.zeros((4, 5), np.float32)
    mask[0, : len(values)] = values
    path = write_nifti(tmp_path / "task01_seg01.nii.gz", mask)
    with pytest.raises(DataError, match=r"task01_seg01.*expected a binary mask.*3 values"):
        load_mask(path)


def test_nan_voxels_are_refused(tmp_path):
    image = np.zeros((4, 5), np.float32)
    image[1, 1] = np.nan
    with pytest.raises(DataError, match=r"i\.nii\.gz: image has 1 NaN"):
        load_image(write_nifti(tmp_path / "i.nii.gz", image), 1)
    mask = np.zeros((4, 5), np.float32)
    mask[0, 0] = np.inf
    with pytest.raises(DataError, match=r"m\.nii\.gz: mask has NaN"):
        load_mask(write_nifti(tmp_path / "m.nii.gz", mask))


def test_case_without_image_is_named(tmp_path):
    base = tmp_path / "training_data_v2" / "toy" / "Training"
    write_case(base / "case01", np.zeros((4, 5)), {(1, 1): square()})
    write_nifti(base / "case02" / "task01_seg01.nii.gz", square())
    with pytest.raises(DataError, match=r"case02 has masks but no image\.nii\.gz"):
        discover_cases(tmp_path, "toy", "train")


def test_masks_without_image_are_refused_whatever_their_letter_case(tmp_path):
    base = tmp_path / "training_data_v2" / "toy" / "Training"
    write_case(base / "case01", np.zeros((4, 5)), {(1, 1): square()})
    write_nifti(base / "case02" / "Task01_Seg01.nii.gz", square())
    with pytest.raises(DataError, match=r"case02 has masks but no image\.nii\.gz"), pytest.warns(DataWarning):
        discover_cases(tmp_path, "toy", "train")


@pytest.mark.parametrize(
    "case_id, key",
    [
        ("case01", "case1"),
        ("case1", "case1"),
        ("Case001", "case1"),
        ("CASE10", "case10"),
        ("case0", "case0"),
        ("case00", "case0"),
        ("case1-01", "case1-1"),
        ("case35", "case35"),
    ],
)
def test_case_key(case_id, key):
    assert case_key(case_id) == key


TRAIN = ("training_data_v2", "toy", "Training")


def train_folder(root):
    return root.joinpath(*TRAIN)


def clean_discovery(root):
    """Discovery that must not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        return discover_cases(root, "toy", "train")


def test_a_clean_tree_does_not_warn(tmp_path):
    write_cases(train_folder(tmp_path), {"case01": [(1, 1)], "case02": [(1, 1), (1, 2)]})
    assert [c.case_id for c in clean_discovery(tmp_path)] == ["case01", "case02"]


def test_mask_value_warning_is_a_data_warning():
    assert issubclass(MaskValueWarning, DataWarning) and issubclass(DataWarning, UserWarning)


def test_linked_case_folder_and_files_are_found(tmp_path):
    """A case folder on another disk, linked in; an image and a mask linked one by one."""
    other = write_cases(tmp_path / "other_disk", {"case07": [(1, 1)], "files": [(1, 2)]})
    base = write_cases(train_folder(tmp_path / "data"), {"case01": [(1, 1)]})
    (base / "case07").symlink_to(other / "case07", target_is_directory=True)
    (base / "case02").mkdir()
    (base / "case02" / "image.nii.gz").symlink_to(other / "files" / "image.nii.gz")
    (base / "case02" / "task01_seg02.nii.gz").symlink_to(other / "files" / "task01_seg02.nii.gz")
    cases = clean_discovery(tmp_path / "data")
    assert [(c.case_id, sorted(c.masks)) for c in cases] == [
        ("case01", [(1, 1)]),
        ("case02", [(1, 2)]),
        ("case07", [(1, 1)]),
    ]
    assert cases[2].folder == base / "case07"  # the path under the data root, not the link's target
    loaded = load_case(cases[1], SPEC, task=1)
    assert sorted(loaded.masks) == [2]


def test_a_linked_split_folder_is_found(tmp_path):
    write_cases(tmp_path / "elsewhere" / "toy", {"case01": [(1, 1)]})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "training_data_v2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert [c.case_id for c in clean_discovery(tmp_path / "data")] == ["case01"]


@pytest.mark.parametrize("name", ["image.nii.gz", "Image.nii.gz", "task01_seg02.nii.gz", "task01_seg02.nii"])
def test_a_broken_link_named_like_data_is_an_error(tmp_path, name):
    base = write_cases(train_folder(tmp_path), {"case01": [(1, 1)]})
    link = base / "case01" / name
    if link.exists():
        link.unlink()
    link.symlink_to(tmp_path / "unmounted" / name)
    with pytest.raises(DataError, match=re.escape(f"{link} is a broken symbolic link (to {tmp_path / 'unmounted'}")):
        discover_cases(tmp_path, "toy", "train")


def test_a_broken_link_under_another_name_warns(tmp_path):
    base = write_cases(train_folder(tmp_path), {"case01": [(1, 1)]})
    (base / "case02").symlink_to(tmp_path / "unmounted" / "case02")
    with pytest.warns(DataWarning, match=re.escape(f"{base / 'case02'} is a broken symbolic link")):
        cases = discover_cases(tmp_path, "toy", "train")
    assert [c.case_id for c in cases] == ["case01"]


@pytest.mark.parametrize("target", [".", "..", "../../.."])
def test_a_link_loop_is_not_followed(tmp_path, target):
    base = write_cases(train_folder(tmp_path), {"case01": [(1, 1)], "case02": [(1, 1)]})
    (base / "case01" / "loop").symlink_to(target, target_is_directory=True)
    with pytest.warns(
        DataWarning, match=re.escape(str(base / "case01" / "loop")) + ".* again, through a symbolic link"
    ):
        cases = discover_cases(tmp_path, "toy", "train")
    assert [c.case_id for c in cases] == ["case01", "case02"]


@pytest.mark.parametrize(
    "link, target, first, second",
    [
        ("case01_copy", "case01", "case01", "case01_copy"),  # one case folder, two names
        ("a_link", "case01", "a_link", "case01"),  # the link sorts first
    ],
)
def test_a_folder_reached_twice_is_refused(tmp_path, link, target, first, second):
    base = write_cases(train_folder(tmp_path), {"case01": [(1, 1)]})
    (base / link).symlink_to(target, target_is_directory=True)
    pattern = re.escape(f"folder {base / first} is reached twice, also as {base / second} (through a symbolic link)")
    with pytest.raises(DataError, match=pattern):
        discover_cases(tmp_path, "toy", "train")


def test_a_second_way_to_the_folder_of_cases_is_refused(tmp_path):
    base = write_cases(train_folder(tmp_path), {"case01": [(1, 1)]})
    (base.parent / "Copy").symlink_to(base, target_is_directory=True)
    pattern = re.escape(f"folder {base.parent / 'Copy'} is reached twice, also as {base}")
    with pytest.raises(DataError, match=pattern):
        discover_cases(tmp_path, "toy", "train")


@pytest.mark.parametrize(
    "first, second",
    [
        ("Training/case1", "Training/case01"),
        ("Training/case01", "Training/Case01"),
        ("case01", "Training/case001"),  # with and without the Training/ level
    ],
)
def test_two_folders_of_one_case_are_refused(tmp_path, first, second):
    toy = tmp_path / "training_data_v2" / "toy"
    write_cases(toy, {first: [(1, 1)], second: [(1, 2)]})
    names = sorted([first, second])
    pattern = re.escape(f"case folders {toy / names[0]} and {toy / names[1]} name the same case (")
    with pytest.raises(DataError, match=pattern):
        discover_cases(tmp_path, "toy", "train")


@pytest.mark.parametrize(
    "name, pair",
    [
        ("Task01_Seg01.nii.gz", (1, 1)),
        ("TASK02_SEG03.NII.GZ", (2, 3)),
        ("task01_Seg02.nii", (1, 2)),
    ],
)
def test_a_mask_in_other_letter_case_is_used_with_a_warning(tmp_path, name, pair):
    folder = write_case(train_folder(tmp_path) / "case01", np.zeros((4, 5)), {})
    write_nifti(folder / name, square())
    with pytest.warns(DataWarning, match=re.escape(f"{folder / name}: named in other letter case")):
        (case,) = discover_cases(tmp_path, "toy", "train")
    assert case.masks == {pair: folder / name}


def test_an_image_in_other_letter_case_is_used_with_a_warning(tmp_path):
    folder = train_folder(tmp_path) / "case01"
    write_nifti(folder / "Image.nii.gz", np.full((4, 5), 3.0, np.float32))
    write_nifti(folder / "task01_seg01.nii.gz", square())
    with pytest.warns(DataWarning, match=re.escape(f"{folder / 'Image.nii.gz'}: named in other letter case")):
        (case,) = discover_cases(tmp_path, "toy", "train")
    assert case.image_path == folder / "Image.nii.gz"
    loaded = load_case(case, SPEC, task=1)
    assert np.all(loaded.image == 3.0) and sorted(loaded.masks) == [1]


def case_sensitive(path):
    (path / "a").touch()
    sensitive = not (path / "A").exists()
    (path / "a").unlink()
    return sensitive


@pytest.mark.parametrize(
    "first, second",
    [
        ("Task01_Seg01.nii.gz", "task01_seg01.nii.gz"),
        ("task01_seg01.nii.gz", "task1_seg1.nii.gz"),
        ("task01_seg01.nii", "task01_seg01.nii.gz"),
        ("task01_seg001.nii.gz", "task001_seg01.nii.gz"),
    ],
)
def test_two_files_of_one_mask_are_refused(tmp_path, first, second):
    folder = write_case(train_folder(tmp_path) / "case01", np.zeros((4, 5)), {})
    if not case_sensitive(folder):
        pytest.skip("the file system ignores letter case")
    write_nifti(folder / first, square())
    write_nifti(folder / second, square())
    first, second = sorted([first, second])  # the order in which the folder is read
    pattern = re.escape(f"{folder / first} and {folder / second} are both the mask of task 1, expert 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match=pattern):
            discover_cases(tmp_path, "toy", "train")


def test_two_images_are_refused(tmp_path):
    folder = write_case(train_folder(tmp_path) / "case01", np.zeros((4, 5)), {})
    if not case_sensitive(folder):
        pytest.skip("the file system ignores letter case")
    write_nifti(folder / "IMAGE.nii.gz", np.zeros((4, 5)))
    pattern = re.escape(f"{folder} holds 2 images: IMAGE.nii.gz and image.nii.gz")
    with pytest.raises(DataError, match=pattern), pytest.warns(DataWarning, match="IMAGE.nii.gz: named in other"):
        discover_cases(tmp_path, "toy", "train")


@pytest.mark.parametrize("name", ["image.nii", "task01-seg01.nii.gz", "mask.NII.GZ", "task01_seg01.nii.gz.nii"])
def test_a_nifti_that_is_neither_image_nor_mask_warns(tmp_path, name):
    folder = write_case(train_folder(tmp_path) / "case01", np.zeros((4, 5)), {(1, 1): square()})
    write_nifti(folder / name, square())
    with pytest.warns(DataWarning, match=re.escape(f"{folder / name}: a NIfTI file that is neither")):
        (case,) = discover_cases(tmp_path, "toy", "train")
    assert list(case.masks) == [(1, 1)]


def test_an_unreadable_folder_is_an_error(tmp_path, monkeypatch):
    """os.walk skips a folder it cannot list unless told otherwise: its cases would be lost silently."""
    base = write_cases(train_folder(tmp_path), {"case01": [(1, 1)], "case02": [(1, 1)]})
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == str(base / "case02"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)  # chmod does not stop root, who may run the tests
    with pytest.raises(DataError, match=re.escape(f"cannot read folder {base / 'case02'}: Permission denied")):
        discover_cases(tmp_path, "toy", "train")
