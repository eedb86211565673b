"""Turn a study's winner into a registered MLflow model (`stagesearch register --study NAME`).

The winning trial's k fold models, as the trial kept them (`search.study.trial_models`; else trained again on
the study's folds with the same seeds: on the CPU the models the trial scored, up to float rounding), are evaluated once on the held-out patients when the study has them (AUC with a
bootstrap 95% CI), and registered as an ensemble: the average of the fold models, exactly how the
out-of-fold predictions behind `cv_auc` were made.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from search.guard.kill_points import kill_point
from search.models.explain import explain_registered
from search.models.model_card import describe_version
from search.models.model_spec import requirements, signature
from search.models.refit import Refit, RegisterError, refit_for
from search.registry.gate import CHALLENGER
from search.registry.version_tags import chance_note, estimate_tags
from search.study import read_json, trial_config, write_json

ROOT = Path(__file__).resolve().parents[2]


__all__ = ["RegisterError", "register_study", "make_challenger"]


def register_study(
    locations: Any,
    model_name: str,
    trial_number: int | None = None,
    log: Any = print,
    kind: str | None = None,
    board: Any = None,
    held: Any = None,
) -> dict[str, Any]:
    """The winner's models (kept or retrained), evaluated on the holdout, registered; returns winner.json.
    `kind`: "single" (the best trial, or `trial_number`) or "ensemble" (the leaderboard's deep ensemble); None:
    the kind the search chose (`search.stats.study_candidates.registrable`). `board`: the leaderboard the
    search holds in memory (at the end of a search); by default the study's `leaderboard.json`. `held`
    (`search.models.refit.HeldStudy`): the config, Optuna study and inputs the search's driver holds; by default
    read from the study folder."""
    from search.tracking.tracker import tracking_uri

    with tracking_uri(locations.tracking_url()):  # leaves the caller's MLflow URI as it was
        board = board if board is not None else _leaderboard(locations.paths)
        refit = refit_for(locations, board, trial_number, kind, log, held)
        return _register_study(locations, model_name, refit, log, board, held and held.inputs)


def _register_study(
    locations: Any, model_name: str, refit: Refit, log: Any, board: Any, inputs: Any = None
) -> dict[str, Any]:
    from search.study import where_flags

    explained = explain_registered(locations, refit, log, inputs)
    run_id, version = _log_model(locations, refit, model_name, explained)
    kill_point("registering")
    summary, tags = _tag_version(locations.tracking_url(), model_name, version, refit, board, log)
    describe_version(locations, model_name, version, run_id, refit, board, summary, tags)
    hint = make_challenger(locations.tracking_url(), model_name, version, where_flags(locations))
    winner = {
        "kind": refit.kind,
        **({"members": refit.members} if refit.members else {}),
        "trial": refit.trial.number,
        "backbone": refit.backbone,
        "family": refit.result.family,
        "cv_auc": refit.cv_auc,
        "refit_cv_auc": refit.result.cv_auc,
        "holdout": refit.holdout,
        "model_name": model_name,
        "model_version": int(version),
        "model_uri": f"models:/{model_name}/{version}",
        "run_id": run_id,
        "params": refit.train_params if refit.kind == "radiomics" else trial_config(refit.trial),
        "pretrained": refit.result.pretrained,
        "beats_chance": tags["beats_chance"],
        "estimate": tags["estimate"],
        "threshold": refit.ensemble.threshold,
        "threshold_rule": refit.threshold_rule,
        "next": hint,
    }
    write_json(locations.paths.winner, winner)
    log(f"registered {model_name} version {version} (@{CHALLENGER}): {summary}")
    log(f"operating threshold: P(T2) >= {refit.ensemble.threshold:.3f} is staged T2 ({refit.threshold_rule})")
    if chance_note(tags):
        log(f"warning: {chance_note(tags)}")
    log(f"promote: {hint}")
    if not refit.holdout:
        honest = (
            "the corrected AUC is the honest estimate"
            if "corrected_auc" in tags
            else "there is no honest estimate"
        )
        log(
            f"note: no held-out patients in this study: cv_auc of the best trial is optimistic (selected on the same "
            f"folds), {honest}; use --holdout on the next search to test the winner on unseen patients"
        )
    return winner


def _leaderboard(paths: Any) -> Any:
    """The study's leaderboard.json with its estimates (None when there is none or it cannot be read)."""
    from search.study import StudyFormatError, read_leaderboard

    try:
        return read_leaderboard(paths)
    except (StudyFormatError, KeyError, TypeError, ValueError):
        return None


def make_challenger(uri: str, model_name: str, version: str, where: str = "") -> str:
    """Give the new version the @challenger alias (moved from the previous one); what `promote --best` would do,
    with the command to run (`where`: the location flags it carries, see `search.study.where_flags`)."""
    from mlflow.tracking import MlflowClient

    from search.registry.versions import RegistryError, next_step

    client = MlflowClient(uri, uri)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    try:
        return next_step(client, model_name, where=where)
    except RegistryError as exc:
        return f"--best: {exc}"


def _log_model(
    locations: Any, refit: Refit, model_name: str, explained: Path | None = None
) -> tuple[str, str]:
    """A `model` run nested under the search with the ensemble as a registered pyfunc, and the input and
    saliency figures (`explained`) as its `explain/` artifacts; (run id, version)."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(locations.tracking_url()).get_experiment_by_name(refit.name)
    parent = read_json(locations.paths.state).get("parent_run_id")
    run_tags = {
        "role": "model",
        **({"optuna_trial": str(refit.trial.number)} if refit.kind == "single" else {}),
        "kind": refit.kind,
        **({"mlflow.parentRunId": parent} if parent else {}),
    }
    example = pd.DataFrame(
        {"image": ["scan_t2.nii.gz"], "mask": ["scan_mask.nii.gz"], "patient_id": ["new-1"]}
    )
    with mlflow.start_run(
        experiment_id=experiment.experiment_id if experiment else None,
        run_name=refit.run_name,
        tags=run_tags,
    ) as run:
        mlflow.log_params(refit.train_params)
        metrics = {
            "cv_auc": refit.cv_auc,
            "refit_cv_auc": refit.result.cv_auc,
            "threshold": refit.ensemble.threshold,
        }
        if refit.holdout:
            metrics.update(
                {f"holdout_{k}": v for k, v in refit.holdout.items() if isinstance(v, float | int)}
            )
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        if explained is not None:
            mlflow.log_artifacts(str(explained), "explain")
        # The input example names placeholder files, so MLflow's trial prediction on it can only fail: quiet
        # that warning; the example is still stored with the model.
        quiet = logging.getLogger("mlflow.models.model")
        level = quiet.level
        with tempfile.TemporaryDirectory() as tmp:
            quiet.setLevel(logging.ERROR)
            try:
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(ROOT / "search" / "models" / "staging_model.py"),
                    artifacts={"ensemble": str(refit.ensemble.save(Path(tmp) / "ensemble"))},
                    code_paths=[str(ROOT / "trainers")],
                    signature=signature(),
                    input_example=example,
                    pip_requirements=requirements(),
                    registered_model_name=model_name,
                )
            finally:
                quiet.setLevel(level)
    return run.info.run_id, str(info.registered_model_version)


def _tag_version(
    uri: str, model_name: str, version: str, refit: Refit, board: Any, log: Any = print
) -> tuple[str, dict[str, str]]:
    """Scores, the honest estimate, the chance verdict, the threshold and provenance as version tags, and a
    one-line description; returns (that line, the tags)."""
    from mlflow.tracking import MlflowClient

    trial, result, held = refit.trial, refit.result, refit.holdout
    tags = {
        "study": refit.name,
        "trial": str(trial.number) if refit.kind != "radiomics" else "-",
        "backbone": refit.backbone,
        "family": result.family,
        "cv_auc": f"{refit.cv_auc:.4f}",
        "refit_cv_auc": f"{result.cv_auc:.4f}",
        "cohort_hash": refit.config.cohort_hash,
        "pretrained": str(result.pretrained).lower(),
        "threshold": f"{refit.ensemble.threshold:.6g}",
        "threshold_rule": refit.threshold_rule,
        "kind": refit.kind,
    }
    if held:
        tags.update(
            holdout_auc=f"{held['auc']:.4f}",
            holdout_auc_ci_low=f"{held['ci_low']:.4f}",
            holdout_auc_ci_high=f"{held['ci_high']:.4f}",
            holdout_patients=str(held["n_patients"]),
        )
    if refit.kind == "ensemble":
        tags["members"] = ",".join(f"{m['trial']}x{m['weight']:g}" for m in refit.members)
    if refit.kind == "radiomics":
        tags.update(features=str(len(result.features)), masks=str(result.masks).lower())
    estimates, notes = estimate_tags(board, trial.number, held, refit.kind)
    tags.update(estimates)
    for note in notes:
        log(f"note: {note}")
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return _summary(refit, tags), tags


def _summary(refit: Refit, tags: dict[str, str]) -> str:
    """The version's one-line description: what it is, its scores and estimates, the verdict on chance."""
    trial, result, held = refit.trial, refit.result, refit.holdout
    corrected = (
        f", corrected AUC {tags['corrected_auc']} [{tags['corrected_auc_ci_low']}, "
        f"{tags['corrected_auc_ci_high']}]"
        if "corrected_auc_ci_low" in tags
        else ""
    )
    if refit.kind == "single":
        what = (
            f"{refit.backbone} ensemble of {len(refit.ensemble.models)} fold models from study {refit.name}, "
            f"trial {trial.number}; cv_auc {trial.value:.3f} (best of the search, optimistic){corrected}"
        )
    elif refit.kind == "radiomics":
        what = (
            f"radiomics model ({refit.train_params['model']}, {len(result.features)} features) of "
            f"{len(refit.ensemble.models)} fold models from study {refit.name}; cv_auc {result.cv_auc:.3f}"
            f"{corrected}"
        )
    else:
        what = (
            f"deep ensemble of {len(refit.members)} trials ({tags['members']}; {tags['backbone']}), "
            f"{len(refit.ensemble.models)} fold models from study {refit.name}; out-of-fold AUC "
            f"{result.cv_auc:.3f} (built on the same folds, optimistic){corrected}"
        )
    summary = (
        what
        + (
            f", holdout AUC {held['auc']:.3f} [{held['ci_low']:.3f}, {held['ci_high']:.3f}] on "
            f"{held['n_patients']} patients"
            if held
            else ""
        )
        + f"; compared on {tags['estimate']}; beats chance: {tags['beats_chance']}"
    )
    return summary
