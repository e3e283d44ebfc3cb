"""Case discovery and NIfTI reading on small temporary QUBIQ trees."""

import numpy as np
import pytest
from helpers import write_case, write_nifti

from common.data import DataError, MaskValueWarning, discover_cases, load_case, load_image, load_mask
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
