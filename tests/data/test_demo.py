"""The synthetic QUBIQ demo data (common/data/demo/; the command common/demo.py): layout, quirks, determinism,
generate-once.

Kept cheap: the full kidney and brain-tumor datasets are generated once per session (a few
seconds); prostate quirks are checked on one reduced generation (fewer cases, same quirks).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common import demo as command
from common.data.demo import designs, generate, layout, once, writer

SPECS = generate.project_specs()
KIDNEY, TUMOR, PROSTATE = SPECS["kidney"], SPECS["brain-tumor"], SPECS["prostate"]
SMALL_KIDNEY = dataclasses.replace(KIDNEY, n_train=2, n_validation=1, n_test=1, n_held_out=1)
SMALL_PROSTATE = dataclasses.replace(PROSTATE, n_train=6, n_validation=1, n_test=1, n_held_out=1)


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def case_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def masks_of(case: Path) -> dict[int, dict[int, np.ndarray]]:
    out: dict[int, dict[int, np.ndarray]] = {}
    for f in sorted(case.glob("task*_seg*.nii.gz")):
        out.setdefault(int(f.name[4:6]), {})[int(f.name[10:12])] = load(f)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """kidney and brain-tumor at full size, into one root."""
    out = tmp_path_factory.mktemp("demo")
    for spec in (KIDNEY, TUMOR):
        generate.generate_dataset(spec, out, seed=0)
    return out


@pytest.fixture(scope="module")
def prostate_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prostate")
    generate.generate_dataset(SMALL_PROSTATE, out, seed=0)
    return out


def test_project_specs_are_the_four_scripts():
    assert set(SPECS) == {"brain-growth", "brain-tumor", "kidney", "prostate"}
    assert set(designs.DESIGNS) == set(SPECS)


@pytest.mark.parametrize("spec", [KIDNEY, TUMOR], ids=lambda s: s.name)
def test_layout_and_counts_match_the_spec(root, spec):
    train = root / "training_data_v2" / spec.name / ("" if spec.name == "kidney" else "Training")
    folders = {
        "train": train,
        "validation": root / "validation_data_v2" / spec.name / "Validation",
        "test": root / "test" / spec.name / "Testing",
    }
    assert layout.split_folder(spec, root, "train") == train
    expected = {
        "train": list(range(1, spec.n_train + 1)),
        "validation": list(range(spec.n_train + 1, spec.n_train + spec.n_validation + 1)),
        "test": list(range(spec.n_train + spec.n_validation + 1, spec.n_train + spec.n_validation + spec.n_test + 1)),
    }
    all_files = list((root / "training_data_v2" / spec.name).rglob("*.nii.gz"))
    all_files += list((root / "validation_data_v2" / spec.name).rglob("*.nii.gz"))
    all_files += list((root / "test" / spec.name).rglob("*.nii.gz"))
    n_files = 0
    for split, folder in folders.items():
        cases = case_dirs(folder)
        assert [c.name for c in cases] == [f"case{n:02d}" for n in expected[split]], split
        for case in cases:
            names = sorted(f.name for f in case.iterdir())
            if split == "test":
                assert names == ["image.nii.gz"]
            else:
                want = ["image.nii.gz"] + [
                    f"task{t:02d}_seg{e:02d}.nii.gz"
                    for t in range(1, spec.tasks + 1)
                    for e in range(1, spec.experts + 1)
                ]
                assert names == sorted(want)
            n_files += len(names)
    assert len(all_files) == n_files  # nothing anywhere else
    if spec.name == "kidney":
        assert not (root / "training_data_v2" / "kidney" / "Training").exists()
    else:
        assert (root / "training_data_v2" / spec.name / "Training" / "case01" / "image.nii.gz").is_file()


@pytest.mark.parametrize("spec", [KIDNEY, TUMOR], ids=lambda s: s.name)
def test_files_hold_binary_masks_identity_affine_and_match_generate_case(root, spec):
    case = layout.split_folder(spec, root, "validation") / f"case{spec.n_train + 1:02d}"
    image, masks = generate.generate_case(spec, 0, spec.n_train + 1)
    img = nib.load(str(case / "image.nii.gz"))
    assert np.array_equal(img.affine, np.eye(4))
    assert np.array_equal(np.asarray(img.dataobj), image)
    stored = masks_of(case)
    for t, per_expert in stored.items():
        for e, m in per_expert.items():
            assert set(np.unique(m)) <= {0, 1}
            assert m.dtype == masks[t][e].dtype and np.array_equal(m, masks[t][e])


def test_mask_dtypes_vary_between_files(root):
    dtypes = set()
    for spec in (KIDNEY, TUMOR):
        for case in case_dirs(layout.split_folder(spec, root, "train"))[:2]:
            for f in case.glob("task*_seg*.nii.gz"):
                dtypes.add(nib.load(str(f)).get_data_dtype().name)
    assert dtypes == {"uint8", "float32"}


def test_same_seed_same_arrays_other_seed_differs():
    a_img, a_masks = generate.generate_case(KIDNEY, 0, 3)
    b_img, b_masks = generate.generate_case(KIDNEY, 0, 3)
    c_img, c_masks = generate.generate_case(KIDNEY, 1, 3)
    assert np.array_equal(a_img, b_img)
    assert all(np.array_equal(a_masks[1][e], b_masks[1][e]) for e in a_masks[1])
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_masks[1][1], c_masks[1][1])
    # another case of the same dataset, or the same case number of another dataset, differs too
    assert not np.array_equal(a_img, generate.generate_case(KIDNEY, 0, 4)[0])


def test_same_seed_gives_byte_identical_files(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    generate.generate_dataset(SMALL_KIDNEY, first, seed=5)
    generate.generate_dataset(SMALL_KIDNEY, second, seed=5)
    files = sorted(p.relative_to(first) for p in first.rglob("*.nii.gz"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.nii.gz"))
    assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(-60, 60, dtype=np.int16).reshape(12, 10),
        (np.arange(63).reshape(7, 9, 1) % 2).astype(np.uint8),
        (np.arange(30).reshape(6, 5) % 3 == 0).astype(np.float32),
        np.linspace(0, 1, 120, dtype=np.float32).reshape(6, 5, 4),
    ],
)
def test_nifti_bytes_are_what_nibabel_writes(arr):
    assert writer.nifti_bytes(arr) == nib.Nifti1Image(arr, np.eye(4)).to_bytes()


def test_brain_tumor_channels_nested_tasks_and_empty_enhancing(root):
    empty = {"train": 0, "validation": 0}
    non_empty = 0
    for split in empty:
        for case in case_dirs(layout.split_folder(TUMOR, root, split)):
            image = load(case / "image.nii.gz")
            assert image.shape == (240, 240, 4) and image.dtype == np.int16
            # four different sequences, not one copied four times
            assert all(not np.array_equal(image[..., 0], image[..., c]) for c in (1, 2, 3))
            masks = masks_of(case)
            assert set(masks) == {1, 2, 3}
            for e in masks[1]:
                m1, m2, m3 = (masks[t][e] > 0 for t in (1, 2, 3))
                assert m1.any() and m2.any()
                assert not (m2 & ~m1).any() and not (m3 & ~m2).any()
                assert m2.sum() < m1.sum()
            third = [masks[3][e].any() for e in masks[3]]
            if not any(third):
                empty[split] += 1
            else:
                non_empty += 1
    assert empty["train"] >= 2 and empty["validation"] >= 1
    total = TUMOR.n_train + TUMOR.n_validation
    assert 0.15 <= sum(empty.values()) / total <= 0.35
    assert non_empty > 0


def test_brain_tumor_sequences_show_the_regions(root):
    """FLAIR: whole tumour brighter than the brain; T1c: the enhancing part brightest."""
    flair_gap, t1c_gap = [], []
    for case in case_dirs(layout.split_folder(TUMOR, root, "train")):
        image = load(case / "image.nii.gz").astype(float)
        masks = masks_of(case)
        whole = np.mean([m > 0 for m in masks[1].values()], axis=0) >= 1
        enh = np.mean([m > 0 for m in masks[3].values()], axis=0) >= 1
        brain = (image[..., 0] > 0) & (np.mean([m > 0 for m in masks[1].values()], axis=0) == 0)
        flair_gap.append(image[..., 0][whole].mean() / image[..., 0][brain].mean())
        if enh.sum() > 20:
            t1c_gap.append(image[..., 2][enh].mean() / image[..., 2][whole & ~enh].mean())
    assert np.mean(flair_gap) > 1.2
    assert np.mean(t1c_gap) > 1.2


def test_prostate_singleton_axis_tall_images_and_one_case_with_five_experts(prostate_root):
    shapes, experts = [], {}
    for split in ("train", "validation"):
        for case in case_dirs(layout.split_folder(SMALL_PROSTATE, prostate_root, split)):
            image = load(case / "image.nii.gz")
            assert image.ndim == 3 and image.shape[2] == 1
            shapes.append(image.shape)
            masks = masks_of(case)
            assert set(masks) == {1, 2}
            assert set(masks[1]) == set(masks[2])  # a missing expert is missing in every task
            experts[case.name] = len(masks[1])
            for e in masks[1]:
                assert masks[1][e].shape == image.shape and masks[2][e].shape == image.shape
                assert not ((masks[2][e] > 0) & ~(masks[1][e] > 0)).any()
            if len(masks[1]) == 5:
                assert not list(case.glob("*_seg06.nii.gz"))
                assert split == "train"
    assert (960, 640, 1) in shapes and (640, 640, 1) in shapes
    assert sorted(experts.values()) == [5] + [6] * (len(experts) - 1)


def test_prostate_plan_of_the_full_dataset():
    _, plan = generate.case_plan(PROSTATE, 0)
    tall = [n for n, p in plan.items() if p["shape"] == (960, 640)]
    assert 0.1 <= len(tall) / len(plan) <= 0.3
    assert any(plan[n]["split"] == "train" for n in tall)
    short = [n for n, p in plan.items() if len(p["experts"]) == 5]
    assert len(short) == 1 and plan[short[0]]["split"] == "train"
    assert plan[short[0]]["experts"] == [1, 2, 3, 4, 5]


def test_kidney_is_int16_hounsfield_and_needs_a_window(root):
    stats = []
    for case in case_dirs(layout.split_folder(KIDNEY, root, "train")):
        image = load(case / "image.nii.gz")
        assert image.dtype == np.int16 and image.shape == (497, 497)
        assert image.min() == -1024 and image.max() <= 1051
        assert image.max() >= 700  # bone
        masks = masks_of(case)
        g = np.mean([m > 0 for m in masks[1].values()], axis=0)
        kidney = g >= 1
        hu = image.astype(float)
        soft = (g == 0) & (hu > 0) & (hu < 100)  # soft tissue (muscle, organs) around 40 HU
        minmax = (hu - hu.min()) / (hu.max() - hu.min())
        window = np.clip(hu, 0, 255) / 255
        stats.append(
            (
                hu[kidney].mean(),
                minmax[kidney].mean() - minmax[soft].mean(),
                window[kidney].mean() - window[soft].mean(),
            )
        )
    hu_kidney, minmax_gap, window_gap = np.mean(stats, axis=0)
    assert 100 <= hu_kidney <= 220
    assert minmax_gap < 0.1 and window_gap > 0.2


@pytest.mark.parametrize("spec", [KIDNEY, TUMOR], ids=lambda s: s.name)
def test_experts_disagree_at_the_boundary_but_agree_mostly(root, spec):
    largest, rim = [], []
    for case in case_dirs(layout.split_folder(spec, root, "train")):
        masks = masks_of(case)[1]
        experts = list(masks.values())
        assert any(not np.array_equal(experts[0], m) for m in experts[1:])
        pairs = [dice(a, b) for a, b in itertools.combinations(experts, 2)]
        assert np.mean(pairs) > 0.7, case.name
        g = np.mean([m > 0 for m in experts], axis=0)
        graded = (g > 0) & (g < 1)
        assert graded.any()
        rim.append(graded.sum() / (g > 0).sum())
        areas = {e: int((m > 0).sum()) for e, m in masks.items()}
        largest.append(max(areas, key=areas.get))
    assert np.mean(rim) < 0.4  # the disagreement is a rim at the boundary
    # each expert's bias is consistent: the same expert draws loosest in most cases
    assert np.bincount(largest).max() >= 0.6 * len(largest)


def test_cases_differ_in_size_and_contrast(root):
    areas, contrast = [], []
    for case in case_dirs(layout.split_folder(KIDNEY, root, "train")):
        image = load(case / "image.nii.gz").astype(float)
        g = np.mean([m > 0 for m in masks_of(case)[1].values()], axis=0)
        areas.append((g > 0).sum())
        contrast.append(image[g >= 1].mean())
    assert np.std(areas) / np.mean(areas) > 0.15
    assert np.max(contrast) - np.min(contrast) > 40  # some cases are harder (weaker enhancement)


def test_ensure_generates_once(tmp_path, monkeypatch):
    root = tmp_path / "data"
    assert generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0) == root
    marker = root / ".demo" / "kidney.json"
    info = json.loads(marker.read_text())
    assert info["complete"] and info["seed"] == 0 and info["generator_version"] == generate.GENERATOR_VERSION
    assert info["counts"] == {"train": 2, "validation": 1, "test": 1}
    image = root / "training_data_v2" / "kidney" / "case01" / "image.nii.gz"
    before = (image.stat().st_mtime_ns, marker.stat().st_mtime_ns)
    assert not [p for p in (root / ".demo").iterdir() if p.name.startswith("tmp-")]

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(generate, "generate_dataset", fail)
    generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0)
    assert (image.stat().st_mtime_ns, marker.stat().st_mtime_ns) == before
    with pytest.raises(AssertionError, match="regenerated"):  # another seed does regenerate
        generate.ensure_demo_dataset(SMALL_KIDNEY, root, 1)


def test_ensure_replaces_its_own_output_for_another_seed(tmp_path):
    root = tmp_path / "data"
    generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0)
    image = root / "training_data_v2" / "kidney" / "case01" / "image.nii.gz"
    first = load(image)
    generate.ensure_demo_dataset(SMALL_KIDNEY, root, 1)
    assert json.loads((root / ".demo" / "kidney.json").read_text())["seed"] == 1
    assert not np.array_equal(first, load(image))
    assert np.array_equal(load(image), generate.generate_case(SMALL_KIDNEY, 1, 1)[0])


def test_ensure_refuses_to_overwrite_a_foreign_folder(tmp_path):
    root = tmp_path / "data"
    foreign = root / "validation_data_v2" / "kidney"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="validation_data_v2/kidney"):
        generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0)
    assert (foreign / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    assert not (root / "training_data_v2" / "kidney").exists()
    assert not (root / ".demo" / "kidney.json").exists()
    with pytest.raises(FileExistsError):  # the low-level writer refuses too
        generate.generate_dataset(SMALL_KIDNEY, root, 0)


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "data"
    real = generate.save_nifti
    calls = {"n": 0}

    def flaky(arr, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(arr, path)

    monkeypatch.setattr(generate, "save_nifti", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0)
    assert not (root / "training_data_v2" / "kidney").exists()
    assert not json.loads((root / ".demo" / "kidney.json").read_text())["complete"]
    monkeypatch.setattr(generate, "save_nifti", real)

    # interrupted while moving the finished folders into place: the marker does not say complete
    real_rename = os.rename
    renames = {"n": 0}

    def flaky_rename(src, dst):
        renames["n"] += 1
        if renames["n"] == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(once.os, "rename", flaky_rename)
    with pytest.raises(KeyboardInterrupt):
        generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0)
    monkeypatch.setattr(once.os, "rename", real_rename)
    assert (root / "training_data_v2" / "kidney").exists()  # one folder moved, the others not
    assert not json.loads((root / ".demo" / "kidney.json").read_text())["complete"]
    assert not [p for p in (root / ".demo").iterdir() if p.name.startswith("tmp-")]

    generate.ensure_demo_dataset(SMALL_KIDNEY, root, 0)  # recognises its own half-moved output
    assert json.loads((root / ".demo" / "kidney.json").read_text())["complete"]
    assert len(case_dirs(root / "training_data_v2" / "kidney")) == 2
    assert len(case_dirs(root / "test" / "kidney" / "Testing")) == 1


def test_main_generates_the_named_datasets(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(command, "project_specs", lambda: {"kidney": SMALL_KIDNEY, "prostate": SMALL_PROSTATE})
    out = tmp_path / "out"
    assert command.main(["--out", str(out), "--seed", "2", "--datasets", "kidney"]) == 0
    assert (out / ".demo" / "kidney.json").is_file()
    assert not (out / "training_data_v2" / "prostate").exists()
    assert "kidney" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        command.main(["--out", str(out), "--datasets", "liver"])


def test_other_image_shapes_scale_the_phantoms():
    for spec in SPECS.values():
        small = dataclasses.replace(spec, image_shape=(64, 80))
        image, masks = generate.generate_case(small, 0, 1)
        assert image.shape[:2] == (64, 80)
        assert all(m.shape[:2] == (64, 80) and (m > 0).any() for m in masks[1].values())
