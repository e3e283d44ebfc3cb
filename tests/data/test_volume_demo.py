"""The synthetic 3D demo of the 2021 release's pancreas sets (common/data/volume_demo.py).

Kept fast: every generation draws a handful of volumes (``counts``), the determinism checks a smaller
in-plane size (``dataclasses.replace`` on the spec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data import volume_demo as vd
from common.data.demo import writer
from common.data.demo.generate import project_specs
from common.datasets import KIDNEY, PANCREAS, PANCREATIC_LESION
from common.spec import ConfigError

PANCREAS_COUNTS = {"train": 2, "validation": 2, "test": 1}
LESION_COUNTS = {"train": 3, "validation": 1, "test": 0}
#: A small in-plane size: the same drawing, scaled, in a fraction of the time.
TINY = dataclasses.replace(PANCREAS.spec, image_shape=(64, 64))
TINY_COUNTS = {"train": 2, "validation": 1, "test": 1}
CASE_ID = re.compile(r"case(\d+)-(\d+)")


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def case_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)


def hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.nii.gz"))
    }


@pytest.fixture(scope="module")
def pancreas_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pancreas")
    assert vd.ensure_volume_demo(PANCREAS.spec, root, 0, PANCREAS_COUNTS) == root
    return root


@pytest.fixture(scope="module")
def lesion_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesion")
    vd.ensure_volume_demo(PANCREATIC_LESION.spec, root, 0, LESION_COUNTS)
    return root


def test_layout_of_the_2021_release(pancreas_root):
    train = pancreas_root / "training_data_v3_QC" / "pancreas"
    validation = pancreas_root / "validation_data_qubiq2021_QC" / "pancreas" / "Validation"
    test = pancreas_root / "QUBIQ21_test" / "pancreas" / "Testing"
    assert vd.volume_split_folder(PANCREAS.spec, pancreas_root, "train") == train
    assert not (train / "Training").exists()  # training volumes sit directly in the dataset folder
    numbers = []
    for split, folder in (("train", train), ("validation", validation), ("test", test)):
        cases = case_dirs(folder)
        assert len(cases) == PANCREAS_COUNTS[split]
        assert all(CASE_ID.fullmatch(c.name) for c in cases), [c.name for c in cases]
        numbers.append(sorted({int(CASE_ID.fullmatch(c.name)[1]) for c in cases}))
        expected = (
            {"image.nii.gz"} if split == "test" else {"image.nii.gz", "task01_seg01.nii.gz", "task01_seg02.nii.gz"}
        )
        assert all({f.name for f in c.iterdir()} == expected for c in cases)  # test volumes: no masks
    assert numbers[0][-1] < numbers[1][0] and numbers[1][-1] < numbers[2][0]  # N runs on across the splits
    assert {c.name for c in case_dirs(train)} == {"case1-1", "case1-2"}  # one N with two volumes
    assert len(case_dirs(validation)) == 2 and len(numbers[1]) == 1


def test_case_numbering_of_the_full_demo():
    for entry, counts in ((PANCREAS, (40, 6, 4)), (PANCREATIC_LESION, (22, 4, 3))):
        assert tuple(vd.demo_counts(entry.spec).values()) == counts
        plan = vd.volume_plan(entry.spec, 0, vd.demo_counts(entry.spec))
        ns = [n for split in ("train", "validation", "test") for n, _ in plan.cases[split]]
        assert ns == sorted(ns) and sorted(set(ns)) == list(range(1, max(ns) + 1))
        pairs = sum(1 for n in set(ns) if ns.count(n) == 2)
        assert 0.15 <= pairs / len(set(ns)) <= 0.35  # about a quarter of the N hold two volumes
        assert set(ns.count(n) for n in ns) == {1, 2}


def test_volumes_shapes_dtypes_affines_and_frame(pancreas_root):
    for case in case_dirs(pancreas_root / "training_data_v3_QC" / "pancreas"):
        image, affine = load(case / "image.nii.gz")
        assert image.dtype == np.int16 and image.shape[1:] == (512, 512)
        assert 10 <= image.shape[0] <= 20  # the slice axis first
        assert np.allclose(np.diag(affine)[:3], 1) and np.any(affine[:3, 3] != 0)  # spacing 1, translated origin
        for corner in (image[:, :8, :8], image[:, -8:, -8:]):
            assert corner.max() < -1500  # outside the field of view
        assert -1100 < np.median(image[:, 30:60, 200:300]) < -900  # air above the body
        assert image.max() > 500  # bone
        masks = [load(case / f"task01_seg0{e}.nii.gz") for e in (1, 2)]
        consensus = np.mean([m for m, _ in masks], axis=0)
        for mask, mask_affine in masks:
            assert mask.dtype == np.uint8 and mask.shape == image.shape
            assert np.array_equal(mask_affine, affine)
            assert set(np.unique(mask)) == {0, 1}
            marked = mask.reshape(len(mask), -1).any(axis=1)
            assert 0 < marked.sum() < len(mask)  # some slices only
        assert set(np.unique(consensus)) == {0.0, 0.5, 1.0}  # the raters disagree at the boundary
        assert 80 < image[consensus == 1].mean() < 150  # an enhanced gland


def test_lesion_set_rater_two_empty_in_some_volumes_never_both(lesion_root):
    empty = {1: 0, 2: 0}
    folders = (
        lesion_root / "training_data_v3_QC" / "pancreatic-lesion",
        lesion_root / "validation_data_qubiq2021_QC" / "pancreatic-lesion" / "Validation",
    )
    for case in (c for folder in folders for c in case_dirs(folder)):
        image, _ = load(case / "image.nii.gz")
        masks = {e: load(case / f"task01_seg0{e}.nii.gz")[0] for e in (1, 2)}
        for e, mask in masks.items():
            empty[e] += int(not mask.any())
        assert any(m.any() for m in masks.values())  # never empty for both raters
        lesion = masks[1] > 0
        slices = lesion.reshape(len(lesion), -1).any(axis=1).sum()
        assert 2 <= slices <= 10 and slices < len(lesion)
        assert image[lesion].mean() < 60  # hypodense
    assert empty == {1: 0, 2: 2}  # 20 % of the training volumes, at least 2


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        vd.generate_volume_dataset(TINY, tmp_path / name, seed, TINY_COUNTS)
    first = hashes(tmp_path / "a")
    assert len(first) == 2 * 3 + 1 * 3 + 1
    assert hashes(tmp_path / "b") == first
    other = hashes(tmp_path / "c")
    assert other.keys() == first.keys() and all(other[k] != first[k] for k in first)


def test_nifti_bytes_are_what_nibabel_writes():
    affine = np.eye(4)
    affine[:3, 3] = (-250.5, -231.0, -480.0)
    for arr in (np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 30, np.eye(4, dtype=np.uint8)[None]):
        assert writer.nifti_bytes(arr, affine) == nib.Nifti1Image(arr, affine).to_bytes()


def test_ensure_generates_once_and_replaces_its_own_output(tmp_path, monkeypatch):
    root = tmp_path / "data"
    vd.ensure_volume_demo(TINY, root, 0, TINY_COUNTS)
    marker = root / ".demo" / "pancreas-2021.json"
    assert not (root / ".demo" / "pancreas.json").exists()  # apart from common.demo's marker
    info = json.loads(marker.read_text())
    assert info["complete"] and info["seed"] == 0 and info["counts"] == TINY_COUNTS
    image = root / "training_data_v3_QC" / "pancreas" / "case1-1" / "image.nii.gz"
    before = (image.stat().st_mtime_ns, marker.stat().st_mtime_ns)
    first = load(image)[0]

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(vd, "generate_volume_dataset", fail)
        vd.ensure_volume_demo(TINY, root, 0, TINY_COUNTS)  # complete: nothing happens
        assert (image.stat().st_mtime_ns, marker.stat().st_mtime_ns) == before
        with pytest.raises(AssertionError, match="regenerated"):  # other counts do regenerate
            vd.ensure_volume_demo(TINY, root, 0, {**TINY_COUNTS, "test": 0})
    assert not json.loads(marker.read_text())["complete"]  # the interrupted generation is not complete
    vd.ensure_volume_demo(TINY, root, 1, TINY_COUNTS)  # its own output, another seed: replaced
    assert json.loads(marker.read_text())["seed"] == 1 and not np.array_equal(first, load(image)[0])


def test_ensure_never_overwrites_a_foreign_folder(tmp_path):
    root = tmp_path / "data"
    foreign = root / "validation_data_qubiq2021_QC" / "pancreas"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="validation_data_qubiq2021_QC/pancreas"):
        vd.ensure_volume_demo(TINY, root, 0, TINY_COUNTS)
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    assert not (root / "training_data_v3_QC" / "pancreas").exists()
    assert not (root / ".demo" / "pancreas-2021.json").exists()
    with pytest.raises(FileExistsError):  # the low-level writer refuses too
        vd.generate_volume_dataset(TINY, root, 0, TINY_COUNTS)


def test_refuses_2d_and_unknown_specs():
    with pytest.raises(ConfigError, match="'kidney'.*2D"):
        vd.ensure_volume_demo(KIDNEY.spec, Path("unused"), 0)
    with pytest.raises(ConfigError, match="'liver'"):
        vd.check_volume_spec(dataclasses.replace(PANCREAS.spec, name="liver"))
    with pytest.raises(ConfigError, match="counts"):
        vd.demo_counts(PANCREAS.spec, {"training": 2})
    assert not any(spec.slice_axis is not None for spec in project_specs().values())


def test_command_line(tmp_path, monkeypatch, capsys):
    tiny = dataclasses.replace(TINY, n_train=2, n_held_out=1, n_validation=1, n_test=0)
    monkeypatch.setattr(vd, "volume_specs", lambda: {"pancreas": tiny})
    out = tmp_path / "out"
    assert vd.main(["--out", str(out), "--seed", "2"]) == 0
    assert json.loads((out / ".demo" / "pancreas-2021.json").read_text())["counts"] == {
        "train": 2,
        "validation": 1,
        "test": 0,
    }
    assert "pancreas" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        vd.main(["--out", str(out), "--datasets", "liver"])
