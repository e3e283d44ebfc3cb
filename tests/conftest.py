"""Shared fixtures."""

import pytest

from common.datasets import DATASETS
from common.demo import ensure_demo_dataset


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """All four demo datasets, generated once per test session (seed 0)."""
    root = tmp_path_factory.mktemp("demo")
    for entry in DATASETS.values():
        ensure_demo_dataset(entry.spec, root, seed=0)
    return root
