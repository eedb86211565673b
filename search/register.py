"""`python search/register.py --study NAME`: turn a study's winner into a registered MLflow model.

The winning configuration's k fold models are trained again on the study's folds (the same seeds, so the
same models the trial scored), evaluated once on the held-out patients when the study has them (AUC with a
bootstrap 95% CI), and registered as an ensemble: the average of the fold models, exactly how the
out-of-fold predictions behind `cv_auc` were made.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

ROOT = Path(__file__).resolve().parents[1]


class RegisterError(Exception):
    """A study that cannot be registered (no complete trial, changed cohort, ...)."""


def best_trial(study: Any, number: int | None = None) -> Any:
    """The chosen trial: `number`, else the complete trial with the highest cv_auc."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if number is not None:
        found = [t for t in complete if t.number == number]
        if not found:
            raise RegisterError(f"trial {number} is not a complete trial of study {study.study_name}")
        return found[0]
    if not complete:
        raise RegisterError(f"study {study.study_name} has no complete trial yet")
    return max(complete, key=lambda t: t.value)


def evaluate_holdout(ensemble: Any, cohort: Any, patients: list[str], seed: int = 0) -> dict[str, Any]:
    """Winner's AUC on held-out patients with a bootstrap 95% CI, and its threshold metrics."""
    import dataclasses

    import numpy as np

    from trainers.metrics import auc, bootstrap_auc_ci, threshold_metrics
    from trainers.preprocess import load_rois

    wanted = set(patients)
    held = dataclasses.replace(cohort, scans=tuple(s for s in cohort.scans if s.patient_id in wanted))
    rois = load_rois(held, ensemble.params, progress=False)
    per_scan = ensemble.predict_rois(rois)
    by_patient: dict[str, list[float]] = {}
    for roi, p in zip(rois, per_scan, strict=True):
        by_patient.setdefault(roi.patient_id, []).append(float(p))
    labels = held.patient_labels()
    ids = sorted(by_patient)
    y = np.asarray([labels[p] for p in ids])
    prob = np.asarray([float(np.mean(by_patient[p])) for p in ids])
    lo, hi = bootstrap_auc_ci(y, prob, seed=seed)
    return {
        "auc": auc(y, prob),
        "ci_low": lo,
        "ci_high": hi,
        "n_patients": len(ids),
        **{f"{k}": v for k, v in threshold_metrics(y, prob, ensemble.threshold).items()},
        "predictions": [
            {"patient_id": p, "label": int(lab), "prob": pr} for p, lab, pr in zip(ids, y, prob, strict=True)
        ],
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ["torch", "torchvision", "timm", "monai", "nibabel", "pydicom", "pillow", "numpy", "pandas",
             "scikit-learn", "mlflow"]  # fmt: skip
    return [f"{n}=={version(n)}" for n in names]


def register_study(
    locations: Any, model_name: str, trial_number: int | None = None, log: Any = print
) -> dict[str, Any]:
    """Retrain the winner's fold models, evaluate the holdout, register the ensemble; returns winner.json."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(locations.tracking_uri):  # leaves the caller's MLflow URI as it was
        return _register_study(locations, model_name, trial_number, log)


def _register_study(locations: Any, model_name: str, trial_number: int | None, log: Any) -> dict[str, Any]:
    import mlflow
    import optuna
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    from search.study import StudyPaths, read_json, write_json
    from trainers.backbones import family_of
    from trainers.config import TrainConfig
    from trainers.cv import prepare_cohort
    from trainers.ensemble import Ensemble
    from trainers.folds import load_or_make_holdout
    from trainers.manifest import load_manifest
    from trainers.preprocess import PreprocessParams
    from trainers.train import train_folds

    name = locations.require_study()
    paths = StudyPaths(locations.study_dir)
    config = read_json(paths.config)
    settings = config["settings"]
    study = optuna.load_study(study_name=name, storage=locations.storage)
    trial = best_trial(study, trial_number)

    cohort = load_manifest(config["manifest_path"], folds=settings["folds"], cv_group=settings["cv_group"])
    if cohort.content_hash() != config["cohort_hash"]:
        raise RegisterError(
            f"the cohort of study {name} changed since the search (files differ); cannot refit"
        )
    holdout = []
    if settings.get("holdout"):
        holdout = load_or_make_holdout(
            paths.holdout,
            cohort.patient_labels(),
            settings["holdout"],
            settings["seed"],
            config["cohort_hash"],
        )
    prepared = prepare_cohort(
        config["manifest_path"], settings["folds"], settings["seed"], settings["cv_group"], paths.folds,
        cohort=cohort, exclude=holdout,
    )  # fmt: skip
    cfg = TrainConfig.from_dict(
        {
            "epochs": settings["max_epochs"],
            "seed": settings["seed"],
            "pretrained": settings["pretrained"],
            **trial.params,
        }  # fmt: skip
    )
    log(f"registering trial {trial.number} of study {name}: {cfg.backbone}, cv_auc {trial.value:.3f}; "
        f"training its {len(prepared.folds)} fold models again ...")  # fmt: skip
    result, models = train_folds(
        prepared.slice_data(cfg.resolution, cfg.channels), prepared.folds, cfg, log=None
    )
    ensemble = Ensemble(models, cfg, PreprocessParams())
    held = evaluate_holdout(ensemble, cohort, holdout, settings["seed"]) if holdout else None

    tags = {
        "study": name, "trial": str(trial.number), "backbone": cfg.backbone, "family": family_of(cfg.backbone),
        "cv_auc": f"{trial.value:.4f}", "refit_cv_auc": f"{result.cv_auc:.4f}",
        "cohort_hash": config["cohort_hash"], "pretrained": str(result.pretrained).lower(),
    }  # fmt: skip
    if held:
        tags.update(holdout_auc=f"{held['auc']:.4f}", holdout_auc_ci_low=f"{held['ci_low']:.4f}",
                    holdout_auc_ci_high=f"{held['ci_high']:.4f}", holdout_patients=str(held["n_patients"]))  # fmt: skip
    client = MlflowClient(locations.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    parent = read_json(paths.state).get("parent_run_id")
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "image"),
                ColSpec("string", "mask", required=False),
                ColSpec("string", "patient_id", required=False),
            ]
        ),  # fmt: skip
        outputs=Schema(
            [ColSpec("string", "patient_id"), ColSpec("double", "p_t2"), ColSpec("string", "stage")]
        ),
    )
    example = pd.DataFrame(
        {"image": ["scan_t2.nii.gz"], "mask": ["scan_mask.nii.gz"], "patient_id": ["new-1"]}
    )
    run_tags = {
        "role": "model",
        "optuna_trial": str(trial.number),
        **({"mlflow.parentRunId": parent} if parent else {}),
    }
    with mlflow.start_run(experiment_id=experiment.experiment_id if experiment else None,
                          run_name=f"model-trial-{trial.number:04d}", tags=run_tags) as run:  # fmt: skip
        mlflow.log_params(cfg.to_dict())
        metrics = {"cv_auc": trial.value, "refit_cv_auc": result.cv_auc}
        if held:
            metrics.update({f"holdout_{k}": v for k, v in held.items() if isinstance(v, float | int)})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        # The input example names placeholder files, so MLflow's trial prediction on it can only fail: quiet
        # that warning; the example is still stored with the model.
        quiet = logging.getLogger("mlflow.models.model")
        level = quiet.level
        with tempfile.TemporaryDirectory() as tmp:
            quiet.setLevel(logging.ERROR)
            folder = ensemble.save(Path(tmp) / "ensemble")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(ROOT / "search" / "staging_model.py"),
                artifacts={"ensemble": str(folder)},
                code_paths=[str(ROOT / "trainers")],
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
                registered_model_name=model_name,
            )
            quiet.setLevel(level)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    summary = (f"{cfg.backbone} ensemble of {len(models)} fold models from study {name}, trial {trial.number}; "
               f"cv_auc {trial.value:.3f}" + (f", holdout AUC {held['auc']:.3f} [{held['ci_low']:.3f}, "
               f"{held['ci_high']:.3f}] on {held['n_patients']} patients" if held else ""))  # fmt: skip
    client.update_model_version(model_name, version, description=summary)
    winner = {
        "trial": trial.number, "backbone": cfg.backbone, "family": family_of(cfg.backbone), "cv_auc": trial.value,
        "refit_cv_auc": result.cv_auc, "holdout": held, "model_name": model_name, "model_version": int(version),
        "model_uri": f"models:/{model_name}/{version}", "run_id": run.info.run_id, "params": trial.params,
        "pretrained": result.pretrained,
    }  # fmt: skip
    write_json(paths.root / "winner.json", winner)
    log(f"registered {model_name} version {version}: {summary}")
    if not held:
        log("note: no held-out patients in this study, so cv_auc of the best trial is optimistic "
            "(selected on the same folds); use --holdout on the next search for an honest estimate")  # fmt: skip
    return winner


def build_parser() -> argparse.ArgumentParser:
    """Flags: where the study is, which model name, which trial."""
    from dashboards.locations import add_location_flags
    from search.registry import DEFAULT_MODEL_NAME

    p = argparse.ArgumentParser(
        prog="python search/register.py",
        description="Register a study's winning configuration (ensemble of its fold models) in the MLflow "
        "Model Registry, with its cv_auc and held-out AUC (95%% CI) as tags.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_location_flags(p, study_required=True)
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name")
    p.add_argument("--trial", type=int, default=None, help="register this trial instead of the best one")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors exit with code 2."""
    from dashboards.locations import from_args
    from trainers.manifest import ManifestError

    args = build_parser().parse_args(argv)
    locations = from_args(args)
    try:
        register_study(locations, args.model_name, args.trial)
    except (RegisterError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
