"""The model card of a registered version (markdown), and the registered model's own description.

The card is what a reader of the registry needs before using a version: what it is for (research only, not a
medical device), what it was made from (the cohort, in counts: never a patient id), how good it is (every
estimate with its 95% interval, and which one to quote), and how it decides (the threshold and its rule).
`search.models.register` writes it as the version's description (the MLflow UI renders it as markdown), as
`model_card.md` among the model run's artifacts, and beside the study's `winner.json`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from search.study.config import StudySettings
from trainers.feature_sets import FEATURE_WORDS

MODEL_DESCRIPTION_HEAD = "Cervical cancer T-staging (T1 vs T2) from T2-weighted MRI"

INTENDED_USE = (
    "**Research use only. Not a medical device.** This model stages cervical cancer as T1 or T2 from a "
    "T2-weighted MRI scan (and optionally its tumour mask) for research on automated staging. It has not been "
    "clinically validated or approved by any regulator, and must not be used to diagnose, stage or treat "
    "individual patients. Its estimates below hold for patients like those of its cohort (scanners, sites, "
    "protocol); on others they are unknown."
)


def model_description(name: str) -> str:
    """The registered model's description: what every version is, how versions are chosen, where cards are."""
    return f"""{MODEL_DESCRIPTION_HEAD}, made by stagesearch.

{INTENDED_USE}

Each version is the ensemble of a search winner's cross-validation fold models (a new scan's P(T2) is their
mean), or the deep ensemble of several trials' (their weighted mean). Input: a table with `image` (path to a NIfTI file, DICOM series folder or PNG/JPEG), optional `mask`
and `patient_id`; output per patient: `patient_id`, `p_t2`, `stage` (T2 when P(T2) >= the version's
threshold). Each version's description is its model card: cohort, estimates with 95% intervals, threshold.

Aliases: `@challenger` is the newest registration; `@champion` is moved only by `stagesearch promote`, which
compares versions made on the same cohort and scored on the same kind of estimate, and keeps it for versions
shown to beat chance (unless forced, on the record). Load with `models:/{name}@champion`.
"""


def cohort_facts(cohort: Any, holdout: list[str]) -> dict[str, Any]:
    """Counts of the cohort a version was made on: patients per class, per site, searched and held out."""
    labels = cohort.patient_labels()
    sites = {s.patient_id: s.site for s in cohort.scans if s.site}
    held = set(holdout)

    def part(ids: list[str]) -> dict[str, int]:
        counts = Counter(labels[p] for p in ids)
        return {"patients": len(ids), "t1": counts[0], "t2": counts[1]}

    per_site = {
        site: part([p for p in labels if sites.get(p) == site]) for site in sorted(set(sites.values()))
    }
    return {
        "all": part(list(labels)),
        "search": part([p for p in labels if p not in held]),
        "holdout": part([p for p in labels if p in held]),
        "sites": per_site,
        "scans": len(cohort.scans),
        "masks": sum(s.mask is not None for s in cohort.scans),
    }


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, gathered at registration."""

    model_name: str
    version: str
    summary: str
    study: str
    trial: int
    family: str
    n_models: int
    train: dict[str, Any]  # the trial's training configuration (TrainConfig.to_dict())
    settings: StudySettings  # the study's settings (config.json)
    preprocess_version: Any
    cohort: dict[str, Any]  # cohort_facts(...)
    tags: dict[str, str]  # the version's tags
    holdout: dict[str, Any] | None
    corrected_method: str | None


def _part(p: dict[str, int]) -> str:
    return f"{p['patients']} patients ({p['t1']} T1, {p['t2']} T2)"


def _cohort_section(f: CardFacts) -> list[str]:
    c, s = f.cohort, f.settings
    if not c:
        return ["## Cohort", "", "- not recorded"]
    lines = [
        "## Cohort",
        "",
        f"- {_part(c['all'])}, {c['scans']} scans ({c['masks']} with a tumour mask); "
        f"manifest content hash `{f.tags.get('cohort_hash', '-')}` (patient ids are not part of this card).",
    ]
    lines.append(
        f"- Search: {_part(c['search'])} in {s.folds}-fold stratified cross-validation grouped by "
        f"{s.cv_group}, seed {s.seed}."
    )
    if c["holdout"]["patients"]:
        lines.append(f"- Held out before the search: {_part(c['holdout'])}, seen by no trial; scored once.")
    else:
        lines.append("- No held-out patients: the only estimates are from cross-validation (see below).")
    if c["sites"]:
        lines.append("- Sites: " + "; ".join(f"{site}: {_part(p)}" for site, p in c["sites"].items()) + ".")
    return lines


def _num(tags: dict[str, str], key: str) -> str:
    value = tags.get(key)
    return "-" if value is None else f"{float(value):.3f}"


def _ci(tags: dict[str, str], key: str) -> str:
    low, high = tags.get(f"{key}_ci_low"), tags.get(f"{key}_ci_high")
    return "-" if low is None or high is None else f"{float(low):.3f}-{float(high):.3f}"


def _estimates_section(f: CardFacts) -> list[str]:
    t = f.tags
    rows = [
        (
            "best trial's cv_auc",
            _num(t, "cv_auc"),
            "-",
            "pooled out-of-fold AUC of the best of the search's trials: optimistic (selected on the same folds)",
        )
    ]
    if "corrected_auc" in t:
        rows.append(
            (
                "corrected AUC",
                _num(t, "corrected_auc"),
                _ci(t, "corrected_auc"),
                f"selection bias removed ({f.corrected_method or 'bootstrap bias-corrected CV'}), "
                "over patients",
            )
        )
    if f.holdout:
        h = f.holdout
        rows.append(
            (
                "hold-out AUC",
                _num(t, "holdout_auc"),
                _ci(t, "holdout_auc"),
                f"{h['n_patients']} patients no trial saw; percentile bootstrap CI over patients",
            )
        )
    quote = {"holdout": "hold-out AUC", "corrected_cv": "corrected AUC", "cv": "best trial's cv_auc"}
    lines = [
        "## Estimates (patient-level AUC)",
        "",
        "| estimate | AUC | 95% interval | what it is |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
    ]
    lines.append(
        f"Quote the {quote.get(t.get('estimate', ''), 'most honest estimate there is')} (the promotion "
        f"gate compares versions on it: `estimate` = `{t.get('estimate', '-')}`). Beats chance: "
        f"**{t.get('beats_chance', 'unknown')}** (`true` when every interval lies above 0.5)."
    )
    if t.get("beats_chance") == "false":
        lines += ["", "This version was **not shown to beat chance**: registered for inspection only."]
    return lines


def _threshold_section(f: CardFacts) -> list[str]:
    t, h = f.tags, f.holdout
    lines = [
        "## Operating threshold",
        "",
        f"A patient is staged T2 when P(T2) >= **{t['threshold']}** (rule: "
        f"`{t.get('threshold_rule', '-')}`). `youden_oof` is the cut that maximises sensitivity + specificity "
        "on the out-of-fold predictions of exactly these fold models: their probabilities are not "
        "calibrated, so a fixed 0.5 can call every patient one class although the ranking is good. The "
        "cut is noisy on a small cohort and its out-of-fold sensitivity and specificity are optimistic.",
    ]
    if h and "recall" in h:
        lines.append(
            f"\nOn the held-out patients at this threshold: sensitivity {h['recall']:.3f}, specificity "
            f"{h['specificity']:.3f}, accuracy {h['accuracy']:.3f}."
        )
    return lines


def model_card(f: CardFacts) -> str:
    """The version's model card as markdown (first line: the one-line summary of the version)."""
    train = f.train
    params = ", ".join(
        f"{k} {train[k]:.3g}" if isinstance(train[k], float) else f"{k} {train[k]}"
        for k in ("resolution", "channels", "lr", "weight_decay", "batch_size", "aug_strength", "epochs")
        if k in train
    )
    model = [
        f"- Ensemble of {f.n_models} fold models of `{train.get('backbone')}` ({f.family}), trial {f.trial} of "
        f"study `{f.study}`; a scan's P(T2) is the mean over the fold models of the mean over its ROI slices.",
        f"- Training: {params}; ImageNet weights: {f.tags.get('pretrained', '-')}.",
    ]
    if f.tags.get("kind") == "ensemble":
        model = [
            f"- Deep ensemble of trials {f.tags.get('members')} (trial x weight; `{f.tags.get('backbone')}`) of "
            f"study `{f.study}`, the best complete trials of each family by their out-of-fold AUC, "
            f"{f.n_models} fold models in all; a scan's P(T2) is the weighted mean of the trials' P(T2), each the "
            "mean over its fold models of the mean over the ROI slices.",
            f"- Training of its best trial ({f.trial}): {params}; ImageNet weights: {f.tags.get('pretrained', '-')}.",
        ]
    if f.tags.get("kind") == "radiomics":
        model = [
            f"- Radiomics model of study `{f.study}`: {train.get('model')}, {train.get('features')} "
            f"{FEATURE_WORDS.get(str(train.get('feature_set', 'handmade')), 'features')} "
            f"({'of the tumour mask' if train.get('masks') else 'of the whole ROI, no masks'}); {f.n_models} fold "
            "models, a scan's P(T2) is their mean. Chosen over the deep candidates by its corrected estimate.",
        ]
        if train.get("masks"):
            model.append("- Needs the tumour mask of every scan: a scan without one is refused.")
    lines = [
        f"# {f.model_name} version {f.version}",
        "",
        f.summary,
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Model",
        "",
        *model,
        f"- Preprocessing version {f.preprocess_version} (RAS, 0.8 x 0.8 x 4 mm, percentile clip and z-score, "
        "ROI around the tumour mask or the body outline).",
        "- Input: a table of `image`, optional `mask` and `patient_id`; output: `patient_id`, `p_t2`, `stage`.",
        "",
    ]
    lines += _cohort_section(f) + [""] + _estimates_section(f) + [""] + _threshold_section(f)
    return "\n".join(lines) + "\n"


def describe_version(
    locations: Any,
    model_name: str,
    version: str,
    run_id: str,
    refit: Any,
    board: Any,
    summary: str,
    tags: dict[str, str],
) -> str:
    """The version's model card as its description, as `model_card.md` in the model run and the study folder;
    the registered model's description when it has none (or ours). Returns the card."""
    from mlflow.tracking import MlflowClient

    facts = CardFacts(
        model_name=model_name,
        version=str(version),
        summary=summary,
        study=refit.name,
        trial=refit.trial.number,
        family=refit.result.family,
        n_models=len(refit.ensemble.models),
        train=refit.train_params,
        settings=refit.config.settings,
        preprocess_version=refit.config.preprocess_version,
        cohort=refit.cohort or {},
        tags=tags,
        holdout=refit.holdout,
        corrected_method=(
            (getattr(board, "corrected", None) or {}).get("method") if board is not None else None
        ),
    )
    card = model_card(facts)
    client = MlflowClient(locations.tracking_url())
    client.update_model_version(model_name, version, description=card)
    client.log_text(run_id, card, "model_card.md")
    (locations.paths.root / "model_card.md").write_text(card)
    current = client.get_registered_model(model_name).description or ""
    if not current.strip() or current.startswith(MODEL_DESCRIPTION_HEAD):
        client.update_registered_model(model_name, description=model_description(model_name))
    return card
