"""Volumes: the layout that tells them from 2D images, the slices that train, one scale per volume, the
round trip of a map onto a volume's grid, and the groups that keep a patient's volumes together."""

import dataclasses
import warnings

import nibabel as nib
import numpy as np
import pytest

from common.data.cases import DataError, DataWarning, case_group, discover_cases, grouped, load_case
from common.data.check import check_run_data
from common.data.layout import Planar, Volume, layout_of
from common.data.prepared import prepare_case, slice_cases
from common.data.volumes import intensity_bounds, keep_slices, plot_slice, training_slices
from common.datasets import KIDNEY, PANCREAS
from common.evaluation.predictions import read_prediction, write_prediction
from common.runs.crossval import check_folds, make_folds
from common.runs.plan import check_split, choose_held_out
from common.spec import ConfigError

VOLUME = Volume(0, (512, 512))


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((40, 512, 512), None),
        ((40, 512, 512, 1), None),  # a trailing singleton axis
        ((1, 512, 512), None),  # a volume of one slice is still a volume
        ((512, 512, 40), "its slices lie along axis 2 \\(the axes permuted\\?\\)"),
        ((40, 256, 256), "no axis leaves that in-plane size"),
        ((512, 512), "a 2D image \\(512 x 512\\) where a volume is expected: volumes \\(slices x 512 x 512\\)"),
        ((512, 512, 1), "512 x 512 x 1 does not fit.*along axis 2"),  # a 2D image, or one slice stored last
        ((4, 40, 512, 512), "a 4-dimensional array"),
    ],
)
def test_the_volume_layout_tells_a_volume_and_its_slice_axis_by_shape(shape, expected):
    problem = VOLUME.shape_problem(shape)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and __import__("re").search(expected, problem), problem


def test_a_2d_layout_refuses_a_volume_naming_both_readings():
    problem = Planar(1).shape_problem((40, 512, 512))
    assert "a 3D array (40 x 512 x 512): a volume of 512 slices, or an image of 512 channels" in problem


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_canonical_arrays_put_the_slices_first_and_go_back_to_the_stored_order(axis):
    layout = Volume(axis, (6, 5))
    stored_shape = [6, 5]
    stored_shape.insert(axis, 3)
    stored = np.arange(np.prod(stored_shape), dtype=np.float32).reshape(stored_shape)
    canonical = layout.mask(stored, "x")
    assert canonical.shape == (3, 6, 5)
    assert np.array_equal(canonical[1], np.take(stored, 1, axis=axis))
    assert np.array_equal(layout.to_file(canonical, tuple(stored_shape)), stored)
    assert layout.image(stored, "x").shape == (3, 6, 5, 1)
    assert np.array_equal(layout.from_file(stored, "x"), canonical)


def test_a_volume_map_round_trips_onto_its_images_grid_affine_and_header(tmp_path):
    affine = np.array([[0.8, 0, 0, -120.5], [0, 0.8, 0, 33.0], [0, 0, 2.5, -7.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.zeros((4, 6, 5), dtype=np.int16), affine)
    image.header.set_xyzt_units("mm")
    reference = nib.load(nib.save(image, tmp_path / "image.nii.gz") or tmp_path / "image.nii.gz")
    layout = Volume(0, (6, 5))
    probability = np.random.default_rng(0).random((4, 6, 5)).astype(np.float32)
    path = write_prediction(tmp_path / "out" / "task01.nii.gz", probability, reference, layout)
    written = nib.load(path)
    assert written.shape == (4, 6, 5) and written.get_data_dtype() == np.float32
    assert np.allclose(written.affine, affine) and written.header.get_xyzt_units() == ("mm", "unknown")
    assert np.array_equal(read_prediction(path, layout), probability)
    with pytest.raises(ValueError, match="does not match the image's grid \\(4, 6, 5\\)"):
        write_prediction(tmp_path / "bad.nii.gz", probability[:3], reference, layout)
    with pytest.raises(DataError, match="expected a volume's probability map"):
        read_prediction(
            write_prediction(
                tmp_path / "flat.nii.gz", probability[0], nib.Nifti1Image(np.zeros((6, 5), np.int16), affine)
            ),
            layout,
        )


def _masks(depth: int, marked: list[list[int]]) -> dict[int, np.ndarray]:
    """Expert e marks one voxel in each slice of ``marked[e - 1]``."""
    masks = {}
    for expert, slices in enumerate(marked, start=1):
        mask = np.zeros((depth, 4, 4), dtype=bool)
        mask[slices, 1, 1] = True
        masks[expert] = mask
    return masks


@pytest.mark.parametrize(
    "depth, marked, margin, expected",
    [
        (10, [[4], []], 0, [4]),
        (10, [[4], []], 1, [3, 4, 5]),
        (10, [[4], [5]], 1, [3, 4, 5, 6]),  # the union of the experts' marked slices
        (10, [[0], []], 2, [0, 1, 2]),  # clipped at the volume's first slice
        (10, [[9], [9]], 3, [6, 7, 8, 9]),
        (10, [[1], [8]], 1, [0, 1, 2, 7, 8, 9]),  # two runs, the gap between them left out
        (10, [[1, 2, 3], []], 5, list(range(9))),
        (6, [[2], []], None, list(range(6))),  # every slice
        (6, [[], []], 5, []),  # no marked slice: nothing under a margin
        (6, [[], []], None, list(range(6))),
    ],
)
def test_the_slices_a_volume_trains_on(depth, marked, margin, expected):
    assert training_slices(_masks(depth, marked), margin).tolist() == expected


def _loaded_volume(tmp_path, depth=8, marked=(3, 4)):
    rng = np.random.default_rng(1)
    folder = tmp_path / "training_data_v3_QC" / "pancreas" / "case1-1"
    folder.mkdir(parents=True)
    image = rng.normal(0, 300, (depth, 16, 16)).astype(np.int16)
    image[0] = -2048  # a slice outside the field of view: per slice it would be stretched to 0..1
    mask = np.zeros((depth, 16, 16), dtype=np.uint8)
    mask[list(marked), 4:9, 5:10] = 1
    for name, array in (("image", image), ("task01_seg01", mask), ("task01_seg02", mask)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), folder / f"{name}.nii.gz")
    spec = dataclasses.replace(PANCREAS.spec, image_shape=(16, 16))
    (case,) = discover_cases(tmp_path, "pancreas", "train")
    return spec, load_case(case, spec, 1)


def test_a_reduced_training_volume_keeps_the_whole_volumes_intensity_scale(tmp_path):
    spec, loaded = _loaded_volume(tmp_path)
    settings = PANCREAS.demo.replace(input_size=16, depth=2, slice_margin=1)
    reduced = keep_slices(loaded, settings.slice_margin, settings.ct_window)
    assert reduced.slice_index.tolist() == [2, 3, 4, 5] and reduced.image.shape == (4, 16, 16, 1)
    assert np.array_equal(reduced.bounds, intensity_bounds(loaded.image, settings.ct_window))
    whole = slice_cases(prepare_case(loaded, settings), reduced.slice_index)
    part = slice_cases(prepare_case(reduced, settings))
    assert len(whole) == len(part) == 4
    for a, b in zip(whole, part, strict=True):
        assert np.allclose(a.image, b.image, atol=1e-6) and np.array_equal(a.masks[1], b.masks[1])
    # per slice, the same HU would be scaled differently: the slices' own min-max differs from the volume's
    own = (loaded.image[2] - loaded.image[2].min()) / np.ptp(loaded.image[2])
    assert not np.allclose(own, np.clip((loaded.image[2] - (-100)) / 340, 0, 1))


@pytest.mark.parametrize(
    "coverage, expected",
    [
        ([0, 3, 5, 5, 1], 2),  # the first of equals
        ([0, 0, 0, 0, 0], 2),  # nothing marked: the middle slice
        ([7, 0, 0, 0, 0], 0),
    ],
)
def test_the_plotted_slice_is_where_the_consensus_covers_the_most(coverage, expected):
    masks = np.zeros((2, len(coverage), 4, 4), dtype=bool)
    for index, count in enumerate(coverage):
        masks[0, index].flat[:count] = True
    assert plot_slice(masks) == expected


@pytest.mark.parametrize(
    "case_id, group",
    [("case1-1", "case1"), ("case01-2", "case1"), ("case13-1", "case13"), ("case10", "case10"), ("Case01", "case1")],
)
def test_a_case_group_is_its_case_number_prefix(case_id, group):
    assert case_group(case_id) == group


def test_held_out_volumes_keep_their_group_and_2d_cases_are_drawn_as_before():
    ids = ["case1-1", "case1-2", "case2-1", "case3-1", "case3-2", "case4-1", "case5-1", "case6-1"]
    for seed in range(20):
        held = choose_held_out(ids, 3, seed)
        assert len(held) >= 3
        for group in grouped(ids):
            assert set(group) <= set(held) or not set(group) & set(held), (seed, held)
    plain = [f"case{n:02d}" for n in range(1, 21)]
    expected = np.random.default_rng(7).choice(20, size=4, replace=False)
    assert choose_held_out(plain, 4, 7) == [plain[i] for i in sorted(expected)]


def test_folds_keep_groups_on_one_side_and_a_split_that_parts_a_group_is_refused():
    ids = ["case1-1", "case1-2", "case2-1", "case3-1", "case3-2", "case4-1", "case5-1", "case6-1", "case6-2"]
    folds = make_folds(ids, 3, seed=0, validation_fraction=0.15)
    check_folds(folds, ids)
    for fold in folds:
        for group in grouped(ids):
            roles = {role for role in fold for case in group if case in fold[role]}
            assert len(roles) == 1, (group, fold)
    cases = _cases(["case1-1", "case1-2", "case2-1"])
    with pytest.raises(ConfigError, match="holds out case1-2 but puts case1-1 in train"):
        check_split({"train": ["case1-1", "case2-1"], "held_out": ["case1-2"]}, cases)
    parted = [
        {"train": ["case1-1", "case2-1"], "validation": [], "held_out": ["case1-2"]},
        {"train": ["case1-2"], "validation": [], "held_out": ["case1-1", "case2-1"]},
    ]
    with pytest.raises(ConfigError, match="--splits s.json: fold 1 holds out case1-2 but puts case1-1 in train"):
        check_folds(parted, where="--splits s.json")


def _cases(ids):
    from common.data.cases import Case

    return [Case(i, "train", __import__("pathlib").Path(i)) for i in ids]


def test_2d_folds_are_dealt_as_before_volumes_existed():
    ids = [f"case{n:02d}" for n in range(1, 25)]
    folds = make_folds(ids, 3, seed=0, validation_fraction=4 / 24)
    order = np.random.default_rng(0).permutation(24)
    assert [sorted(f["held_out"]) for f in folds] == [sorted(ids[i] for i in part) for part in np.array_split(order, 3)]


def _write(folder, name, array, affine=None):
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), folder / f"{name}.nii.gz")


def test_bad_volumes_are_named_before_anything_trains(tmp_path):
    spec = dataclasses.replace(PANCREAS.spec, image_shape=(8, 8))
    base = tmp_path / "training_data_v3_QC" / "pancreas"
    mask = np.zeros((5, 8, 8), np.uint8)
    mask[2, 2:4, 2:4] = 1
    _write(base / "case1-1", "image", np.zeros((8, 8), np.int16))  # a 2D image where a volume is expected
    _write(base / "case1-1", "task01_seg01", mask)
    _write(base / "case2-1", "image", np.zeros((5, 8, 8), np.int16))
    _write(base / "case2-1", "task01_seg01", np.zeros((4, 8, 8), np.uint8))  # another slice count
    _write(base / "case3-1", "image", np.zeros((5, 8, 8), np.int16))
    _write(base / "case3-1", "task01_seg01", mask)
    _write(base / "case3-1", "task01_seg02", np.zeros((5, 8, 6), np.uint8))  # raters' masks of different shapes
    cases = discover_cases(tmp_path, "pancreas", "train")
    with pytest.raises(DataError) as caught:
        check_run_data(spec, 1, {"train": cases}, {"seg01": [1]})
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert "case1-1/image.nii.gz: a 2D image (8 x 8) where a volume is expected" in message
    assert "case2-1/task01_seg01.nii.gz: mask shape (4, 8, 8) differs from the image's (5, 8, 8)" in message
    assert "case3-1/task01_seg02.nii.gz: a volume of shape 5 x 8 x 6 does not fit" in message


def test_a_volume_for_a_2d_dataset_is_refused_naming_the_file(tmp_path):
    base = tmp_path / "training_data_v2" / "kidney" / "case01"
    _write(base, "image", np.zeros((5, 497, 497), np.int16))
    (case,) = discover_cases(tmp_path, "kidney", "train")
    with pytest.raises(DataError, match="case01/image.nii.gz: a 3D array \\(5 x 497 x 497\\): a volume of 497 slices"):
        load_case(case, KIDNEY.spec, 1)


def test_a_differing_affine_is_warned_and_an_unmarked_volume_too(tmp_path):
    spec = dataclasses.replace(PANCREAS.spec, image_shape=(8, 8))
    base = tmp_path / "training_data_v3_QC" / "pancreas"
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    mask = np.zeros((5, 8, 8), np.uint8)
    mask[2, 2:4, 2:4] = 1
    _write(base / "case1-1", "image", np.zeros((5, 8, 8), np.int16))
    _write(base / "case1-1", "task01_seg01", mask, shifted)
    _write(base / "case2-1", "image", np.zeros((5, 8, 8), np.int16))
    _write(base / "case2-1", "task01_seg01", np.zeros((5, 8, 8), np.uint8))
    cases = discover_cases(tmp_path, "pancreas", "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        checked = check_run_data(spec, 1, {"train": cases[:1], "held_out": cases[1:]}, {"seg01": [1]})
    text = "\n".join(checked.warnings)
    assert "case1-1/task01_seg01.nii.gz: its affine differs from its image's" in text and "by up to 5" in text
    assert "case2-1: no expert marked any voxel of task 1 in this volume" in text
    assert "held out, it is scored as all background" in text


def test_layout_of_the_datasets():
    assert layout_of(PANCREAS.spec) == Volume(0, (512, 512)) and layout_of(KIDNEY.spec) == Planar(1)
    assert layout_of(PANCREAS.spec).describe() == "volumes (slices x 512 x 512)"


def test_a_rater_who_marked_nothing_in_a_volume_is_noted_once_per_rater(tmp_path):
    spec = dataclasses.replace(PANCREAS.spec, image_shape=(8, 8))
    base = tmp_path / "training_data_v3_QC" / "pancreas"
    mask = np.zeros((5, 8, 8), np.uint8)
    mask[2, 2:4, 2:4] = 1
    for case in ("case1-1", "case2-1", "case3-1"):
        _write(base / case, "image", np.zeros((5, 8, 8), np.int16))
        _write(base / case, "task01_seg01", mask)
        _write(base / case, "task01_seg02", mask if case == "case2-1" else np.zeros_like(mask))
    cases = discover_cases(tmp_path, "pancreas", "train")
    checked = check_run_data(spec, 1, {"train": cases[:2], "held_out": cases[2:]}, {"seg01": [1], "seg02": [2]})
    assert checked.warnings == [
        "note: expert 2 marked nothing of task 1 in 2 of 3 volumes where another did (case1-1, case3-1); the "
        "consensus there is at most (n - 1) / n"
    ]
