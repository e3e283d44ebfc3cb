"""Shared fixtures."""

import pytest

from common.data.demo.generate import ensure_demo_dataset
from common.datasets import DATASETS


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The four 2D demo datasets, generated once per test session (seed 0)."""
    root = tmp_path_factory.mktemp("demo")
    for entry in DATASETS.values():
        if not entry.spec.volumetric:  # the 3D sets' demo is of the 2021 release: a root of its own
            ensure_demo_dataset(entry.spec, root, seed=0)
    return root
