"""Shared fixtures: a private cache folder and one tiny phantom cohort per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the preprocessing cache and phantom cohorts of the tests out of the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["STAGESEARCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-patient phantom cohort with small volumes; returns the manifest path."""
    from trainers.phantom import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    return generate_cohort(out, patients=12, seed=3, matrix=48).manifest
