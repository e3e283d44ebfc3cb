"""Which QUBIQ release a data root holds: folder names, nesting, and the refusals that name what was expected."""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import write_cases

from common.data.cases import DataError, Release, case_key, discover_cases, find_release, load_case
from common.spec import RELEASES, SPLIT_FOLDERS, ConfigError, DatasetSpec

PROSTATE = DatasetSpec(
    name="prostate",
    title="Prostate",
    modality="MRI",
    channels=1,
    tasks=2,
    experts=6,
    image_shape=(8, 8),
    n_train=3,
    n_validation=2,
    n_test=2,
    n_held_out=1,
)
ONE = {"case01": [(1, 1)]}


def make_tree(root: Path, paths: list[str], dataset: str = "toy") -> Path:
    """``root/<path>/<dataset>/case01`` for each split folder path (``training_data_v3_QC/training_data_v3_QC``)."""
    for path in paths:
        write_cases(root / path / dataset, ONE, shape=(2, 2))
    return root


def test_the_table_names_both_releases_and_the_demo_layout_is_2020():
    assert list(RELEASES) == ["2020", "2021"]
    assert all(list(splits) == ["train", "validation", "test"] for splits in RELEASES.values())
    assert SPLIT_FOLDERS == {
        "train": ("training_data_v2", "Training"),
        "validation": ("validation_data_v2", "Validation"),
        "test": ("test", "Testing"),
    }


@pytest.mark.parametrize(
    "paths, release, describe",
    [
        (
            ["training_data_v2", "validation_data_v2", "test"],
            "2020",
            "QUBIQ 2020 release: training_data_v2, validation_data_v2, test",
        ),
        (
            ["training_data_v3_QC/training_data_v3_QC", "validation_data_qubiq2021_QC", "QUBIQ21_test"],
            "2021",
            "QUBIQ 2021 release: training_data_v3_QC/training_data_v3_QC, validation_data_qubiq2021_QC, QUBIQ21_test",
        ),
        (  # the non-QC copies; the inner folder may carry the other accepted name of its split
            ["training_data_v3", "validation_data_qubiq2021/validation_data_qubiq2021_QC", "QUBIQ21_test/QUBIQ21_test"],
            "2021",
            "QUBIQ 2021 release: training_data_v3, validation_data_qubiq2021/validation_data_qubiq2021_QC, "
            "QUBIQ21_test/QUBIQ21_test",
        ),
        (["test/test"], "2020", "QUBIQ 2020 release: test/test"),
        (["training_data_v3_QC"], "2021", "QUBIQ 2021 release: training_data_v3_QC"),
    ],
)
def test_finds_the_release_and_un_nests_its_folders(tmp_path, paths, release, describe):
    make_tree(tmp_path, paths)
    found = find_release(tmp_path)
    splits = [split for split, tops in RELEASES[release].items() if any(p.split("/")[0] in tops for p in paths)]
    assert (found.name, found.root) == (release, tmp_path.resolve())
    assert found.folders == {split: tmp_path.resolve() / path for split, path in zip(splits, paths, strict=True)}
    assert found.describe() == describe
    assert found.to_dict() == {"release": release, "folders": {s: str(f) for s, f in found.folders.items()}}
    assert found.dataset_folder("toy", splits[0]) == tmp_path.resolve() / paths[0] / "toy"
    assert [c.case_id for c in discover_cases(tmp_path, "toy", splits[0])] == ["case01"]


def test_a_nested_folder_beside_housekeeping_folders_is_un_nested(tmp_path):
    make_tree(tmp_path, ["training_data_v3_QC/training_data_v3_QC"])
    (tmp_path / "training_data_v3_QC" / "__MACOSX").mkdir()
    (tmp_path / "training_data_v3_QC" / ".Trash").mkdir()
    assert find_release(tmp_path).folders["train"] == tmp_path.resolve() / "training_data_v3_QC" / "training_data_v3_QC"


def test_prostate_2021_as_distributed(tmp_path):
    """Doubled folders, no Training/ level, case09 without expert 3, test cases numbered after validation."""
    six = [(task, expert) for task in (1, 2) for expert in range(1, 7)]
    five = [(task, expert) for (task, expert) in six if expert != 3]
    write_cases(
        tmp_path / "training_data_v3_QC" / "training_data_v3_QC" / "prostate",
        {"case01": six, "case02": six, "case09": five},
    )
    write_cases(
        tmp_path / "validation_data_qubiq2021_QC" / "validation_data_qubiq2021_QC" / "prostate" / "Validation",
        {"case49": six, "case55": six},
    )
    write_cases(tmp_path / "QUBIQ21_test" / "QUBIQ21_test" / "prostate" / "Testing", {"case56": [], "case68": []})
    release = find_release(tmp_path)
    assert release.describe() == (
        "QUBIQ 2021 release: training_data_v3_QC/training_data_v3_QC, "
        "validation_data_qubiq2021_QC/validation_data_qubiq2021_QC, QUBIQ21_test/QUBIQ21_test"
    )
    train = discover_cases(tmp_path, "prostate", "train", release="2021")
    validation = discover_cases(tmp_path, "prostate", "validation")
    test = discover_cases(tmp_path, "prostate", "test")
    assert [c.case_id for c in train] == ["case01", "case02", "case09"]
    assert [c.case_id for c in validation] == ["case49", "case55"]
    assert [c.case_id for c in test] == ["case56", "case68"]
    assert train[0].folder == release.folders["train"] / "prostate" / "case01"
    case09 = train[2]
    assert case09.experts_for(1) == case09.experts_for(2) == [1, 2, 4, 5, 6]
    assert case09.masks[(2, 4)].name == "task02_seg04.nii.gz"
    assert [train[0].experts_for(task) for task in (1, 2)] == [[1, 2, 3, 4, 5, 6]] * 2
    assert all(not c.masks for c in test)
    loaded = load_case(case09, PROSTATE, task=2)
    assert sorted(loaded.masks) == [1, 2, 4, 5, 6] and loaded.mask_stack().shape == (5, 8, 8)
    assert np.all(loaded.image == 2)  # case09's own image, the third one written
    keys = [{case_key(c.case_id) for c in split} for split in (train, validation, test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def nowhere(tmp):
    return tmp / "nowhere"


def a_file(tmp):
    (tmp / "data.zip").write_bytes(b"PK")
    return tmp / "data.zip"


def empty(tmp):
    return tmp


def datasets_only(tmp):
    (tmp / "kidney").mkdir()
    (tmp / "notes.txt").write_text("")
    return tmp


def split_folder(tmp):
    make_tree(tmp, ["training_data_v3_QC"], dataset="kidney")
    return tmp / "training_data_v3_QC"


def outer_of_nested(tmp):
    make_tree(tmp, ["training_data_v3_QC/training_data_v3_QC"], dataset="kidney")
    return tmp / "training_data_v3_QC"


def inner_of_nested(tmp):
    make_tree(tmp, ["training_data_v3_QC/training_data_v3_QC"], dataset="kidney")
    return tmp / "training_data_v3_QC" / "training_data_v3_QC"


def dataset_of_split(tmp):
    make_tree(tmp, ["training_data_v2"], dataset="kidney")
    return tmp / "training_data_v2" / "kidney"


def level_of_dataset(tmp):
    write_cases(tmp / "validation_data_v2" / "kidney" / "Validation", ONE, shape=(2, 2))
    return tmp / "validation_data_v2" / "kidney" / "Validation"


EXPECTED = re.escape(
    "training_data_v2/, validation_data_v2/ and test/ (QUBIQ 2020), or training_data_v3_QC/ (or training_data_v3/), "
    "validation_data_qubiq2021_QC/ (or validation_data_qubiq2021/) and QUBIQ21_test/ (QUBIQ 2021)"
)

SPLIT_LIKE = (
    "data root {root} holds no QUBIQ release folder and looks like a split folder, not the folder that holds them"
)


@pytest.mark.parametrize(
    "make_root, message",
    [
        (nowhere, "data root {root} does not exist; pass --data-root .*" + EXPECTED),
        (a_file, "data root {root} is a file; --data-root must name the folder that holds .*" + EXPECTED),
        (empty, "data root {root} is empty; expected " + EXPECTED),
        (
            datasets_only,
            r"data root {root} holds no QUBIQ release folder \(expected " + EXPECTED + r"\); it holds "
            r"kidney/, notes\.txt$",
        ),
        (split_folder, SPLIT_LIKE + ".*{root} is named like the QUBIQ 2021 train folder; pass --data-root {tmp}$"),
        (outer_of_nested, SPLIT_LIKE + ".*pass --data-root {tmp}$"),
        (inner_of_nested, SPLIT_LIKE + ".*pass --data-root {tmp}$"),
        (
            dataset_of_split,
            SPLIT_LIKE + ".*{tmp}/training_data_v2 is named like the QUBIQ 2020 train folder; pass --data-root {tmp}$",
        ),
        (level_of_dataset, "looks like a split folder.*2020 validation folder; pass --data-root {tmp}$"),
    ],
)
def test_a_wrong_data_root_is_named_with_what_was_expected(tmp_path, make_root, message):
    root = make_root(tmp_path)
    pattern = message.format(root=re.escape(str(root)), tmp=re.escape(str(tmp_path)))
    for call in (lambda: find_release(root), lambda: discover_cases(root, "kidney", "train")):
        with pytest.raises(DataError, match=pattern) as error:
            call()
        assert "\n" not in str(error.value)


BOTH = ["training_data_v2", "test", "training_data_v3_QC"]


@pytest.mark.parametrize(
    "paths, release, outcome",
    [
        (
            BOTH,
            None,
            r"holds 2 QUBIQ releases: 2020 \(training_data_v2, test\) and 2021 \(training_data_v3_QC\); "
            r"choose one with --release 2020 or --release 2021, or move the other's folders out of {root}$",
        ),
        (BOTH, "2020", "2020"),
        (BOTH, "2021", "2021"),
        (BOTH, 2021, "2021"),  # a number read from a config file
        (
            ["training_data_v2"],
            "2021",
            r"--release 2021: data root {root} holds no QUBIQ 2021 folder \(expected "
            r"training_data_v3_QC/ \(or training_data_v3/\), .*QUBIQ21_test/\); it holds the 2020 release "
            r"\(training_data_v2\)$",
        ),
        (
            ["training_data_v3_QC", "training_data_v3"],
            None,
            "data root {root} holds 2 copies of the QUBIQ 2021 train "
            "folder: training_data_v3_QC and training_data_v3; move all but one out of {root}",
        ),
        (["training_data_v3_QC", "training_data_v3", "training_data_v2"], "2020", "2020"),  # the other release's copies
        (
            ["training_data_v3_QC/training_data_v3_QC", "training_data_v3_QC/kidney"],
            None,
            "training_data_v3_QC holds "
            "both a nested training_data_v3_QC/ .* and other folders \\(kidney\\); keep one level",
        ),
    ],
)
def test_choosing_between_releases_and_copies(tmp_path, paths, release, outcome):
    make_tree(tmp_path, paths)
    if outcome in RELEASES:
        assert find_release(tmp_path, release).name == outcome
        assert discover_cases(tmp_path, "toy", "train", release=release)[0].case_id == "case01"
        return
    with pytest.raises(DataError, match=outcome.format(root=re.escape(str(tmp_path)))):
        find_release(tmp_path, release)


@pytest.mark.parametrize("release", ["2019", "v2", "QC"])
def test_an_unknown_release_is_a_config_error(tmp_path, release):
    make_tree(tmp_path, ["training_data_v2"])
    message = f"release must be one of 2020, 2021, got '{release}'"
    with pytest.raises(ConfigError, match=message):
        find_release(tmp_path, release)
    with pytest.raises(ConfigError, match=message):
        discover_cases(tmp_path, "toy", "train", release=release)


def test_a_split_the_release_lacks_is_named(tmp_path):
    make_tree(tmp_path, ["training_data_v3_QC"])
    release = find_release(tmp_path)
    message = re.escape(
        f"no validation data for toy: the QUBIQ 2021 release under {tmp_path.resolve()} has no validation folder "
        "(expected validation_data_qubiq2021_QC/ (or validation_data_qubiq2021/))"
    )
    with pytest.raises(DataError, match=message):
        release.dataset_folder("toy", "validation")
    with pytest.raises(DataError, match=message):
        discover_cases(tmp_path, "toy", "validation")
    with pytest.raises(ValueError, match="split must be one of train, validation, test, got 'holdout'"):
        release.dataset_folder("toy", "holdout")


def test_a_missing_dataset_folder_lists_the_datasets_there(tmp_path):
    make_tree(tmp_path, ["training_data_v3_QC"], dataset="kidney")
    folder = tmp_path.resolve() / "training_data_v3_QC"
    with pytest.raises(
        DataError, match=re.escape(f"folder {folder / 'prostate'} does not exist; {folder} holds kidney")
    ):
        discover_cases(tmp_path, "prostate", "train")


def test_release_is_a_frozen_value():
    release = Release(name="2020", root=Path("/data"), folders={"train": Path("/data/training_data_v2")})
    with pytest.raises(AttributeError):
        release.name = "2021"
    assert hash(release) == hash(Release(name="2020", root=Path("/data"), folders={}))
