"""The MNI152 anatomy demo (common/data/anatomy.py) and its shipped template slices (common/data/assets).

Kept cheap: the full brain-growth dataset is generated once for the module (about 10 s on two
busy cores); determinism, seeds and the generate-once rules use a reduced spec of a few cases.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data import anatomy
from common.data.cases import discover_cases, load_case
from common.data.demo import generate, layout
from common.spec import ConfigError

SPEC = generate.project_specs()["brain-growth"]
SMALL = dataclasses.replace(SPEC, n_train=2, n_validation=1, n_test=1, n_held_out=1)
FOLDERS = {"train": "training_data_v2", "validation": "validation_data_v2", "test": "test"}


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def files(root: Path) -> dict[str, bytes]:
    """Every file of a generated dataset (not the marker folder), by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*.nii.gz"))
        if not p.relative_to(root).as_posix().startswith(".demo")
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mni152")
    assert anatomy.ensure_anatomy_demo(SPEC, out, seed=0) == out
    return out


# ----------------------------------------------------------------------------------------------
# The shipped asset
# ----------------------------------------------------------------------------------------------


def test_asset_has_the_expected_arrays_and_is_small():
    assert anatomy.ASSET.stat().st_size < 1_000_000
    with np.load(anatomy.ASSET, allow_pickle=False) as npz:
        assert {"t1", "gm", "wm", "z_mm", "source"} <= set(npz.files)
        shape = npz["t1"].shape
        assert len(shape) == 3 and 24 <= shape[0] <= 32 and min(shape[1:]) >= 64
        for name in ("t1", "gm", "wm"):
            assert npz[name].dtype == np.uint8 and npz[name].shape == shape
            assert npz[name].max() >= 250  # the full 0..255 range is used
        z = npz["z_mm"]
        assert z.shape == (shape[0],) and np.all(np.diff(z) > 0) and z[0] < 10 < 50 < z[-1]
        source = str(npz["source"])
        assert "nilearn" in source and "sym_09a" in source
        # tissue sits inside the (skull-stripped) T1: hardly any tissue where the T1 is background
        tissue = npz["gm"].astype(int) + npz["wm"]
        assert ((npz["t1"] == 0) & (tissue > 76)).sum() < 0.001 * (tissue > 127).sum()


def test_licence_file_names_the_source_and_carries_the_notice():
    text = anatomy.LICENSE.read_text()
    assert "mni152_slices.npz" in text and "nilearn" in text
    assert "MNI ICBM 152 non-linear symmetric 2009a" in text
    assert "tools/derive_mni152_slices.py" in text
    assert "Copyright (C) 1993-2009 Louis Collins" in text
    assert "Permission to use, copy, modify, and distribute this software" in text


def test_template_loads_as_probabilities():
    tpl = anatomy.load_template()
    assert tpl.t1.dtype == np.float32 and tpl.tissue.dtype == np.float32
    assert 0 <= tpl.tissue.min() and tpl.tissue.max() <= 1 and tpl.t1.max() <= 1
    assert len(tpl.sha256) == 64 and tpl.n == len(tpl.z_mm)


# ----------------------------------------------------------------------------------------------
# The generated dataset
# ----------------------------------------------------------------------------------------------


def test_layout_counts_shapes_and_binary_masks(root):
    expected = {"train": SPEC.n_train, "validation": SPEC.n_validation, "test": SPEC.n_test}
    inner = {"train": "Training", "validation": "Validation", "test": "Testing"}
    numbers = layout.case_numbers(SPEC)
    for split, count in expected.items():
        folder = root / FOLDERS[split] / "brain-growth" / inner[split]
        cases = sorted(p.name for p in folder.iterdir())
        assert cases == [f"case{n:02d}" for n in numbers[split]] and len(cases) == count
        for name in cases[:3]:
            image = load(folder / name / "image.nii.gz")
            assert image.shape == (256, 256) and image.dtype == np.float32
            masks = sorted(p.name for p in (folder / name).glob("task*_seg*.nii.gz"))
            if split == "test":
                assert masks == []  # QUBIQ's test cases come without masks
                continue
            assert masks == [f"task01_seg{e:02d}.nii.gz" for e in range(1, 8)]
            for mask_name in masks:
                mask = load(folder / name / mask_name)
                assert mask.dtype == np.uint8 and mask.shape == (256, 256)
                assert set(np.unique(mask)) == {0, 1}
    info = json.loads(anatomy.anatomy_marker_path(SPEC, root).read_text())
    assert info["complete"] and info["generator"] == "common.data.anatomy" and info["seed"] == 0
    assert info["counts"] == expected and len(info["expert_levels"]) == 7


def test_project_loader_reads_the_data(root):
    cases = discover_cases(root, "brain-growth", "train")
    assert len(cases) == SPEC.n_train and cases[0].case_id == "case01"
    loaded = load_case(cases[0], SPEC, task=1)
    assert loaded.image.shape == (256, 256, 1) and loaded.image.dtype == np.float32
    assert sorted(loaded.masks) == list(range(1, 8))
    stack = loaded.mask_stack()
    assert stack.shape == (7, 256, 256) and stack.dtype == bool
    # the brain is bright tissue, the background is dark noise
    assert loaded.image[stack.all(0)][:, 0].mean() > 4 * loaded.image[~stack.any(0)][:, 0].mean()
    test_cases = discover_cases(root, "brain-growth", "test")
    assert len(test_cases) == SPEC.n_test and all(not c.masks for c in test_cases)
    assert len(discover_cases(root, "brain-growth", "validation")) == SPEC.n_validation


def test_lower_levels_draw_larger_masks_and_the_consensus_is_graded(root):
    levels = anatomy.expert_levels(SPEC, 0)
    assert levels.min() < 0.35 and levels.max() > 0.65 and len(np.unique(np.round(levels, 3))) == 7
    cases = discover_cases(root, "brain-growth", "train")
    areas = np.zeros(7)
    graded, inside = 0, 0
    for case in cases:
        stack = load_case(case, SPEC, task=1).mask_stack()
        areas += stack.sum(axis=(1, 2))
        consensus = stack.mean(axis=0)
        graded += int(((consensus > 0) & (consensus < 1)).sum())
        inside += int((consensus > 0).sum())
    order = np.argsort(levels)
    assert np.all(np.diff(areas[order]) < 0), (levels[order], areas[order])  # looser experts draw more
    assert 0.05 < graded / inside < 0.5  # the experts disagree at the boundary, agree inside


def test_cases_use_different_slices_and_transforms(root):
    info = json.loads(anatomy.anatomy_marker_path(SPEC, root).read_text())
    z = list(info["case_z_mm"].values())
    assert len(set(z)) == anatomy.load_template().n  # every template slice is used
    first = [load(p / "image.nii.gz") for p in sorted((root / "training_data_v2/brain-growth/Training").iterdir())]
    assert all(not np.array_equal(first[0], other) for other in first[1:])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    anatomy.generate_anatomy_dataset(SMALL, a, 0)
    anatomy.generate_anatomy_dataset(SMALL, b, 0)
    anatomy.generate_anatomy_dataset(SMALL, c, 1)
    fa, fb, fc = files(a), files(b), files(c)
    assert len(fa) == 2 * 8 + 1 * 8 + 1 and fa == fb
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa)


def test_ensure_generates_once_and_regenerates_its_own_for_another_seed(tmp_path, monkeypatch):
    root = tmp_path / "data"
    anatomy.ensure_anatomy_demo(SMALL, root, 0)
    marker = anatomy.anatomy_marker_path(SMALL, root)
    image = root / "training_data_v2" / "brain-growth" / "Training" / "case01" / "image.nii.gz"
    before = (image.stat().st_mtime_ns, marker.stat().st_mtime_ns)
    assert not [p for p in marker.parent.iterdir() if p.name.startswith("tmp")]
    first = load(image)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(anatomy, "generate_anatomy_dataset", fail)
        anatomy.ensure_anatomy_demo(SMALL, root, 0)  # nothing to do
        assert (image.stat().st_mtime_ns, marker.stat().st_mtime_ns) == before
        with pytest.raises(AssertionError, match="regenerated"):
            anatomy.ensure_anatomy_demo(SMALL, root, 1)
    anatomy.ensure_anatomy_demo(SMALL, root, 1)  # its own output: replaced
    assert json.loads(marker.read_text())["seed"] == 1 and not np.array_equal(first, load(image))


def test_foreign_folders_are_refused_both_ways(tmp_path):
    root = tmp_path / "data"
    foreign = root / "validation_data_v2" / "brain-growth" / "Validation" / "case03"
    foreign.mkdir(parents=True)
    (foreign / "image.nii.gz").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="validation_data_v2/brain-growth.*not generated by common.data.anatomy"):
        anatomy.ensure_anatomy_demo(SMALL, root, 0)
    assert (foreign / "image.nii.gz").read_bytes() == b"mine"
    assert not (root / "training_data_v2").exists() and not anatomy.anatomy_marker_path(SMALL, root).exists()
    with pytest.raises(FileExistsError):
        anatomy.generate_anatomy_dataset(SMALL, root, 0)
    # common.demo's synthetic data and this generator's never replace each other
    other = tmp_path / "other"
    anatomy.ensure_anatomy_demo(SMALL, other, 0)
    with pytest.raises(FileExistsError, match="not generated by common.demo"):
        generate.ensure_demo_dataset(SMALL, other, 0)


def test_only_single_channel_single_task_specs():
    with pytest.raises(ConfigError, match="one task"):
        anatomy.check_spec(generate.project_specs()["brain-tumor"])


def test_command_line(root, tmp_path, capsys):
    assert anatomy.main(["--out", str(root), "--seed", "0"]) == 0  # already there: nothing to do
    assert "training_data_v2/brain-growth/Training" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        anatomy.main(["--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed must be >= 0" in capsys.readouterr().err
    foreign = tmp_path / "test" / "brain-growth"
    foreign.mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        anatomy.main(["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "test/brain-growth exists but was not generated" in err


# ----------------------------------------------------------------------------------------------
# The brain-growth script on it
# ----------------------------------------------------------------------------------------------


def test_brain_growth_script_runs_on_the_anatomy_demo(root, tmp_path, capsys):
    """``Brain_Growth.py --demo mni152``: the demo is found (not regenerated) and scored end to end."""
    import Brain_Growth

    marker = anatomy.anatomy_marker_path(SPEC, root).read_bytes()
    argv = ["--demo", "mni152", "--data-root", str(root), "--out", str(tmp_path / "run"), "--experts", "1,2"]
    argv += ["--epochs", "1", "--image-size", "32", "--depth", "1", "--base-filters", "4", "--no-plots", "--quiet"]
    results = Brain_Growth.main(Brain_Growth.DATASET, Brain_Growth.STUDY, Brain_Growth.DEMO, 1, argv)
    assert anatomy.anatomy_marker_path(SPEC, root).read_bytes() == marker
    assert len(results["cases"]) == SPEC.n_held_out and 0.0 <= results["score"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["demo"] == "mni152" and config["data_root"] == str(root.resolve())
    assert "on the MNI152 2009a template" in capsys.readouterr().out
