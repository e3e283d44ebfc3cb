"""Shared fixtures."""

import importlib

import pytest

from common.demo import ensure_demo_dataset

SCRIPTS = ("Brain_Growth", "Brain_Tumor", "Kidney", "Prostate")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """All four demo datasets, generated once per test session (seed 0)."""
    root = tmp_path_factory.mktemp("demo")
    for script in SCRIPTS:
        ensure_demo_dataset(importlib.import_module(script).DATASET, root, seed=0)
    return root
