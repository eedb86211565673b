"""A real sqlite MLflow registry holding a tiny pyfunc model, with versions tagged as a search tags them: for the
tests of search/commands/promote.py and search/registry/versions.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow.pyfunc
from mlflow.tracking import MlflowClient

from search.registry.versions import DEFAULT_MODEL_NAME, HOLDOUT
from search.study import default_tracking_uri

NAME = DEFAULT_MODEL_NAME


class ConstantStager(mlflow.pyfunc.PythonModel):
    """Predicts P(T2) = 0.5 for every patient: enough to register, alias and load."""

    def predict(self, context: object, model_input: list[float], params: dict | None = None) -> list[float]:
        return [0.5 for _ in model_input]


def version_tags(
    study: str, trial: int, backbone: str, cv: float, holdout: tuple[float, float, float] | None
) -> dict:
    tags = {
        "study": study,
        "trial": str(trial),
        "backbone": backbone,
        "family": backbone.split("_")[0],
        "cv_auc": str(cv),
        "cohort_hash": "c0ffee",
        "pretrained": "false",
    }
    if holdout is not None:
        tags.update(zip((HOLDOUT, f"{HOLDOUT}_ci_low", f"{HOLDOUT}_ci_high"), map(str, holdout), strict=True))
    return tags


WITH_HOLDOUT = [  # v3 has the best cv_auc, v2 the best holdout AUC
    version_tags("s1", 3, "resnet50", 0.84, (0.79, 0.70, 0.88)),
    version_tags("s2", 7, "hrnet_w18_small_v2", 0.80, (0.83, 0.74, 0.91)),
    version_tags("s3", 1, "vit_small_patch16_224", 0.88, (0.76, 0.66, 0.85)),
]
CV_ONLY = [
    version_tags("s1", 0, "resnet50", 0.81, None),
    version_tags("s2", 4, "densenet121", 0.86, None),
    version_tags("s3", 2, "regnety_008", 0.78, None),
]


def make_template(root: Path) -> tuple[Path, Path]:
    """(an initialised empty sqlite store, a saved pyfunc model) under `root`: creating the schema takes seconds,
    so a module makes this once (the `template` fixture in conftest.py) and each test copies the store."""
    mlflow.pyfunc.save_model(str(root / "model"), python_model=ConstantStager(), pip_requirements=["mlflow"])
    db = root / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    assert db.exists()
    return db, root / "model"


def make_registry(runs: Path, template: tuple[Path, Path], versions: list[dict]) -> MlflowClient:
    """`runs/mlflow.db` with model `cervical-staging` holding one version per tag set, each from its own run."""
    db, model_dir = template
    runs.mkdir(parents=True)
    shutil.copy(db, runs / "mlflow.db")
    uri = default_tracking_uri(runs)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("studies", artifact_location=(runs / "artifacts").as_uri())
    client.create_registered_model(NAME)
    for tags in versions:
        run = client.create_run(exp, tags={"role": "search", "study": tags["study"]})
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
        client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags)
    return client


def holder(client: MlflowClient, alias: str = "champion") -> int | None:
    """The version number holding `alias`, read back from the registry."""
    found = client.get_registered_model(NAME).aliases.get(alias)
    return None if found is None else int(found)


def vtags(client: MlflowClient, version: int) -> dict[str, str]:
    return client.get_model_version(NAME, str(version)).tags


GOOD = dict(
    version_tags("good", 1, "resnet50", 0.84, (0.80, 0.70, 0.90)), beats_chance="true", estimate="holdout"
)
LUCKY = dict(  # the higher hold-out AUC, but its intervals include 0.5
    version_tags("lucky", 2, "densenet121", 0.90, (0.85, 0.48, 1.0)),
    beats_chance="false",
    estimate="holdout",
    corrected_auc="0.55",
    corrected_auc_ci_low="0.47",
    corrected_auc_ci_high="0.63",
)
