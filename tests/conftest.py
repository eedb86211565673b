"""Shared fixtures: a private cache folder and one tiny phantom cohort per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from search.tune.local_ray import prepare_local_ray

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything
# ... nor send usage telemetry: MLflow looks up config.mlflow-telemetry.io (outside CI), and huggingface_hub
# fetches a registry from its endpoint on its first request when not offline (the weights tests go online).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
prepare_local_ray(None)  # the tests' own local Ray sessions on 127.0.0.1, before any test module imports ray


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


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri():
    """`mlflow.set_tracking_uri` in one test (or in code it calls) must not leak into the next."""
    import mlflow.tracking._model_registry.utils as registry
    import mlflow.tracking._tracking_service.utils as tracking

    before = tracking._tracking_uri, registry._registry_uri
    yield
    tracking.set_tracking_uri(before[0])  # also restores MLFLOW_TRACKING_URI in the environment
    registry._registry_uri = before[1]
