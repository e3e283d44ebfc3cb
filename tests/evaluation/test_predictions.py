"""Probability maps written as NIfTI: the image's grid, affine and header, exact values, atomic writes."""

import nibabel as nib
import numpy as np
import pytest
from helpers import write_nifti

from common.data.cases import DataError
from common.evaluation.predictions import find_predictions, prediction_path, read_prediction, write_prediction

#: 0.8 mm pixels, 3 mm slices, shifted: a map written with the identity instead would not overlay the image
AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]])


def reference(tmp_path, shape):
    """An int16 image on disk with a non-identity affine, distinct qform/sform codes, a display range,
    and a header carrying scaling (as an in-memory reference may: nibabel resets it on load)."""
    image = nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), AFFINE)
    image.header.set_qform(AFFINE, code=1)  # scanner
    image.header.set_sform(AFFINE, code=2)  # aligned
    image.header.set_xyzt_units("mm", "sec")
    image.header["cal_min"], image.header["cal_max"] = -1024, 1051
    path = tmp_path / "image.nii.gz"
    nib.save(image, str(path))
    loaded = nib.load(str(path))
    loaded.header.set_slope_inter(2.0, -5.0)
    return loaded


def probabilities(shape=(4, 5)):
    """float32 values in [0, 1] with the awkward ones: 0, 1, float32(0.7) < 0.7, and many random bits."""
    values = np.random.default_rng(0).random(shape).astype(np.float32)
    values.flat[:3] = [0.0, 1.0, np.float32(0.7)]
    return values


@pytest.mark.parametrize(
    "image_shape, stored_shape",
    [
        ((4, 5), (4, 5)),  # 2D image: 2D map
        ((4, 5, 1), (4, 5, 1)),  # trailing singleton axis (prostate): kept
        ((4, 5, 4), (4, 5)),  # 4 channels last (brain tumour): one 2D map
    ],
)
def test_round_trip_is_exact_and_keeps_grid_affine_and_header(tmp_path, image_shape, stored_shape):
    ref = reference(tmp_path, image_shape)
    probability = probabilities()
    path = write_prediction(prediction_path(tmp_path / "pred", "toy", "case01", 2), probability, ref)
    assert path == tmp_path / "pred" / "toy" / "case01" / "task02.nii.gz"

    written = nib.load(str(path))
    assert written.shape == stored_shape
    assert written.get_data_dtype() == np.float32
    assert np.array_equal(written.affine, ref.affine)
    assert np.array_equal(written.get_sform(), ref.get_sform()) and np.array_equal(written.get_qform(), ref.get_qform())
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (1, 2)
    assert written.header.get_zooms() == ref.header.get_zooms()[: len(stored_shape)]
    assert written.header.get_xyzt_units() == ("mm", "sec")
    assert written.header.get_slope_inter() == (None, None)  # no scaling: stored values are the map's values
    assert (float(written.header["cal_min"]), float(written.header["cal_max"])) == (0.0, 1.0)
    assert np.asanyarray(written.dataobj).dtype == np.float32

    read = read_prediction(path)
    assert read.dtype == np.float32 and read.shape == (4, 5)
    assert np.array_equal(read, probability)


def test_float64_map_is_stored_as_float32(tmp_path):
    probability = np.array([[0.1, 0.2], [0.7, 1.0]])
    path = write_prediction(tmp_path / "task01.nii", probability, reference(tmp_path, (2, 2)))  # uncompressed too
    assert nib.load(str(path)).get_data_dtype() == np.float32
    assert np.array_equal(read_prediction(path), probability.astype(np.float32))


def test_expert_path():
    expert_map = prediction_path("p", "kidney", "case03", 1, expert=2)
    assert expert_map.as_posix() == "p/kidney/case03/experts/task01_seg02.nii.gz"
    assert prediction_path("p", "kidney", "case03", 11).as_posix() == "p/kidney/case03/task11.nii.gz"


@pytest.mark.parametrize(
    "probability, message",
    [
        (
            np.zeros((5, 4)),
            r"task01.nii.gz: probability map of shape \(5, 4\) does not match the image's grid \(4, 5\)"
            r" \(image shape \(4, 5\)\)",
        ),
        (np.zeros((4, 5, 1)), r"shape \(4, 5, 1\) does not match the image's grid \(4, 5\)"),
        (np.full((4, 5), 1.5), r"task01.nii.gz: probability map must be within \[0, 1\]; found values in \[1.5, 1.5\]"),
        (np.full((4, 5), -0.25), r"within \[0, 1\]; found values in \[-0.25, -0.25\]"),
        (np.full((4, 5), np.nan), "task01.nii.gz: probability map holds 20 NaN or infinite values"),
    ],
)
def test_bad_maps_are_refused_and_nothing_is_written(tmp_path, probability, message):
    ref = reference(tmp_path, (4, 5))
    with pytest.raises(ValueError, match=message):
        write_prediction(tmp_path / "out" / "task01.nii.gz", probability, ref)
    assert not (tmp_path / "out").exists()


def test_bad_file_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.nii\.gz or \.nii"):
        write_prediction(tmp_path / "task01.npy", np.zeros((4, 5)), reference(tmp_path, (4, 5)))


def test_overwrite_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    ref = reference(tmp_path, (4, 5))
    path = tmp_path / "case01" / "task01.nii.gz"
    write_prediction(path, np.zeros((4, 5)), ref)
    write_prediction(path, np.ones((4, 5)), ref)
    assert np.array_equal(read_prediction(path), np.ones((4, 5), np.float32))
    assert [p.name for p in path.parent.iterdir()] == ["task01.nii.gz"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    ref = reference(tmp_path, (4, 5))
    path = write_prediction(tmp_path / "case01" / "task01.nii.gz", np.zeros((4, 5)), ref)
    before = path.read_bytes()

    def save_half_then_fail(image, filename):
        with open(filename, "wb") as handle:
            handle.write(b"\x1f\x8b half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_prediction(path, np.ones((4, 5)), ref)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["task01.nii.gz"]  # the half-written temporary is gone
    assert np.array_equal(read_prediction(path), np.zeros((4, 5), np.float32))


def test_find_predictions_with_and_without_the_dataset_level(tmp_path):
    ref = reference(tmp_path, (4, 5))
    root = tmp_path / "pred"
    for case in ("case10", "case2", "case01"):
        write_prediction(prediction_path(root, "toy", case, 1), np.zeros((4, 5)), ref)
        write_prediction(prediction_path(root, "toy", case, 1, expert=1), np.zeros((4, 5)), ref)
    write_prediction(prediction_path(root, "toy", "case03", 2), np.zeros((4, 5)), ref)  # another task only
    (root / "toy" / "scores-toy-train-task1").mkdir()  # e.g. an earlier scoring's output: not a case

    found = find_predictions(root, "toy", 1)
    assert found == {case: root / "toy" / case / "task01.nii.gz" for case in ("case01", "case2", "case10")}
    assert list(found) == ["case01", "case2", "case10"]  # natural order
    assert find_predictions(root / "toy", "toy", 1) == found
    assert find_predictions(root, "toy", 2) == {"case03": root / "toy" / "case03" / "task02.nii.gz"}


def test_find_predictions_errors_name_the_folder(tmp_path):
    (tmp_path / "pred" / "toy" / "case01").mkdir(parents=True)
    with pytest.raises(DataError, match=f"no prediction of task 1 in {tmp_path / 'pred' / 'toy'}"):
        find_predictions(tmp_path / "pred", "toy", 1)
    with pytest.raises(DataError, match=f"prediction folder {tmp_path / 'nowhere'} does not exist"):
        find_predictions(tmp_path / "nowhere", "toy", 1)
    write_nifti(tmp_path / "pred" / "toy" / "case01" / "task01.nii", np.zeros((2, 2), np.float32))
    write_nifti(tmp_path / "pred" / "toy" / "case01" / "task01.nii.gz", np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match="case case01 has two maps of task 1"):
        find_predictions(tmp_path / "pred", "toy", 1)


def test_read_prediction_errors_name_the_file(tmp_path):
    garbage = tmp_path / "garbage" / "task01.nii.gz"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=f"cannot read {garbage}"):
        read_prediction(garbage)
    three_d = write_nifti(tmp_path / "stack" / "task01.nii.gz", np.zeros((4, 5, 3), np.float32))
    with pytest.raises(DataError, match=rf"{three_d}: expected a 2D probability map .* got shape \(4, 5, 3\)"):
        read_prediction(three_d)
