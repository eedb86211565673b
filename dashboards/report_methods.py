"""The report's methods: a table of every setting that decides what the study computed and a paragraph written
from it, so that a reader can run the same study again (or describe it in a paper).

Read from the study itself: `config.json` (settings, each session's command line, and, from sessions that
recorded them, the sampler, the early stopping and the software versions:
`search.study.config`), the search space as Optuna recorded its distributions (the space's own ranges, narrowing included; the dashboards may not
import `spaces/`, which needs the trainers), `folds.json` and `holdout.json`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from dashboards.report_tables import export_table
from search.study import CONFIG_ATTR, StudyConfig, StudyPaths, StudySettings, read_config, read_json
from search.study.config import SOFTWARE, software_versions

#: Order of the hyperparameters in the table (others follow alphabetically).
PARAMS = ("backbone", "resolution", "lr", "aug_strength", "weight_decay", "batch_size", "channels")
PREPROCESSING = {
    2: "each scan oriented to RAS, resampled to 0.8 x 0.8 x 4 mm, clipped to its 0.5-99.5 "
    "percentiles and z-scored, cropped to a square around the tumour mask plus 15 mm (around the "
    "body outline without a mask); the 3 axial slices with the largest tumour area, each with its "
    "two neighbours, cached at 256 px and resized to the trial's resolution"
}


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def space_ranges(study: optuna.Study) -> dict[str, str]:
    """Each hyperparameter's range as the trials sampled it (union over trials), fixed values from the trials'
    recorded configuration; plain text, e.g. "1e-05 to 0.003 (log-uniform)"."""
    dists: dict[str, Any] = {}
    fixed: dict[str, set[str]] = {}
    for t in study.get_trials(deepcopy=False):
        dists.update(t.distributions)
        for k, v in (t.user_attrs.get(CONFIG_ATTR) or t.params).items():  # as sampled, not as trained
            fixed.setdefault(k, set()).add(_num(v))
    out = {}
    for name in sorted(set(dists) | set(fixed), key=lambda k: (PARAMS.index(k) if k in PARAMS else 99, k)):
        d = dists.get(name)
        if isinstance(d, CategoricalDistribution):
            out[name] = "one of " + ", ".join(_num(c) for c in d.choices)
        elif isinstance(d, FloatDistribution | IntDistribution):
            out[name] = f"{_num(d.low)} to {_num(d.high)} ({'log-uniform' if d.log else 'uniform'})"
        else:
            out[name] = "fixed at " + ", ".join(sorted(fixed[name]))
    return out


def _holdout_kind(settings: StudySettings) -> str:
    share = settings.holdout
    share = f"{100 * share:.0f}% of the cohort" if isinstance(share, int | float) else "part of the cohort"
    if settings.cv_group == "site":
        return f"{share}, whole sites"
    return f"{share}, stratified by stage"


def recorded(config: StudyConfig, key: str) -> list[dict[str, Any]]:
    """`key` ("search" or "software") of every session that recorded it."""
    return [s[key] for s in config.sessions if isinstance(s.get(key), dict)]


def software_rows(config: StudyConfig) -> list[list[str]]:
    """One row per package: the versions the sessions ran on, or the installed one when none was recorded."""
    runs = recorded(config, "software")
    now = software_versions()
    rows = []
    for name in ("python", *SOFTWARE):
        seen = list(dict.fromkeys(s[name] for s in runs if name in s))
        if seen:
            rows.append(
                [
                    name,
                    " / ".join(seen),
                    "recorded by the search" + (" (differs between sessions)" if len(seen) > 1 else ""),
                ]
            )
        else:
            rows.append([name, now[name], "installed now (the study did not record it)"])
    return rows


def _sampler(search: dict[str, Any] | None, seed: Any) -> tuple[str, str]:
    """(sampler, early stopping) in words, from a session's record."""
    if not search:
        return ("not recorded (a session from before this record; see its command line)",) * 2
    if search.get("sampler") == "tpe":
        sampler = (
            f"Optuna TPE (multivariate, grouped), {search.get('startup_trials')} random start-up trials, "
            f"seed {seed} plus the number of trials already in the study when a session starts"
        )
    else:
        sampler = (
            f"Optuna random sampling, seed {seed} plus the trials already in the study at a session's start"
        )
    if search.get("scheduler") == "asha":
        stopping = (
            f"ASHA on the per-epoch mean fold AUC: grace period {search.get('grace_epochs')} epoch(s), "
            f"reduction factor {_num(search.get('reduction_factor'))}, at most "
            f"{search.get('max_epochs')} epochs"
        )
    else:
        stopping = "none (every trial trains all its epochs)"
    first = []
    if search.get("study_first"):
        first.append("each backbone family's study configuration (the trainer's defaults) first")
    if search.get("per_family"):
        first.append(f"{search['per_family']} trials of every family in turns")
    if first:  # the comparison trials are queued first and never stopped early
        sampler = f"{' and '.join(first)}, each run to its last epoch; then {sampler}"
    return sampler, stopping


def methods_rows(study: optuna.Study, paths: StudyPaths, config: StudyConfig) -> list[list[str]]:
    """(setting, value, source) rows of the methods table."""
    s = config.settings
    search = (recorded(config, "search") or [None])[-1]
    sampler, stopping = _sampler(search, s.seed)
    folds = read_json(paths.folds).get("meta") or {}
    held = read_json(paths.holdout).get("patients") or []
    pre = config.preprocess_version
    rows = [
        ["study", study.study_name, "config.json"],
        [
            "cohort",
            f"{config.patients or '?'} patients, content hash {config.cohort_hash or '?'}",
            "config.json",
        ],
        ["search space", str(s.space or "?"), "config.json"],
    ]
    rows += [[f"space: {k}", v, "Optuna distributions of the trials"] for k, v in space_ranges(study).items()]
    rows += [
        ["trials (budget)", str(search.get("budget")) if search else "not recorded", "last session"],
        ["sampler", sampler, "config.json sessions"],
        ["early stopping", stopping, "config.json sessions"],
        ["epochs per trial (max)", str(s.max_epochs or "?"), "config.json"],
        [
            "cross-validation",
            f"{folds.get('k', s.folds)} folds, stratified by stage, grouped by "
            f"{folds.get('group_by', s.cv_group)}, seed {folds.get('seed', s.seed)}",
            "folds.json",
        ],
        ["objective", "cv_auc: AUC of the pooled out-of-fold, patient-level P(T2)", "stagesearch"],
        [
            "hold-out",
            f"{len(held)} patients ({_holdout_kind(s)}), set aside before the search" if held else "none",
            "holdout.json",
        ],
        ["seed", str(s.seed), "config.json"],
        [
            "pretrained weights",
            "ImageNet where available" if s.pretrained else "none (random init)",
            "config.json",
        ],
        [
            "preprocessing",
            f"version {pre}: {PREPROCESSING.get(pre, 'see the stagesearch version')}",
            "config.json",
        ],
    ]
    return rows + [[f"software: {n}", v, src] for n, v, src in software_rows(config)]


def methods_paragraph(study: optuna.Study, paths: StudyPaths, config: StudyConfig) -> str:
    """The methods in prose (plain text), generated from the same sources as the table."""
    s = config.settings
    ranges = space_ranges(study)
    search = (recorded(config, "search") or [None])[-1]
    sampler, stopping = _sampler(search, s.seed)
    folds = read_json(paths.folds).get("meta") or {}
    held = read_json(paths.holdout).get("patients") or []
    soft = {r[0]: r[1] for r in software_rows(config)}
    space = "; ".join(f"{k} {v}" for k, v in ranges.items())
    budget = f" for {search['budget']} trials" if search else ""
    installed = any(r[2].startswith("installed now") for r in software_rows(config))
    pre = config.preprocess_version
    text = [
        f"The study searched the {s.space or '?'} space ({space}){budget} with Ray Tune "
        f"{soft['ray']} and Optuna {soft['optuna']}. Sampler: {sampler}. Early stopping: {stopping}.",
        f"Preprocessing (version {pre}): {PREPROCESSING.get(pre, 'see that stagesearch version')}."
        if pre
        else "The preprocessing version was not recorded.",
        f"Each configuration was trained for at most {s.max_epochs or '?'} epochs "
        f"({'ImageNet-pretrained where weights were available' if s.pretrained else 'from random initialisation'}) "
        f"and scored by {folds.get('k', s.folds)}-fold cross-validation stratified by T-stage and "
        f"grouped by {folds.get('group_by', s.cv_group)} (folds drawn once with seed "
        f"{folds.get('seed', s.seed)} and shared by every trial); the objective cv_auc is the AUC of "
        "the pooled out-of-fold probabilities of T2, one per patient (the mean over its ROI slices).",
        (
            f"{len(held)} patients ({_holdout_kind(s)}) were set aside before the search and used only to "
            "evaluate the registered winner."
            if held
            else "No patients were held out."
        ),
        f"Cohort: {config.patients or '?'} patients (content hash {config.cohort_hash or '?'}). "
        f"Seed {s.seed}.",
        (
            "Software (installed when this report was written; the study did not record it): "
            if installed
            else "Software: "
        )
        + ", ".join(f"{k} {v}" for k, v in soft.items())
        + ".",
    ]
    return " ".join(text)


def methods_section(study: optuna.Study, paths: StudyPaths, out: Path) -> str:
    """`<h2>Methods</h2>`: the paragraph, the table (CSV, LaTeX) and each session's command line."""
    config = read_config(paths)
    sessions = config.sessions
    commands = "".join(
        f"<li><code>stagesearch run {html.escape(' '.join(s.get('argv') or []))}</code> "
        f"({html.escape(str(s.get('started', '?')))})</li>"
        for s in sessions
    )
    return (
        "<h2>Methods</h2><p>Generated from the study's own record (config.json, the Optuna study, folds.json, "
        "holdout.json); a reader can run the same study from it with the command lines below.</p>"
        f'<p class="methods">{html.escape(methods_paragraph(study, paths, config))}</p>'
        + export_table(out, "methods", ["setting", "value", "source"], methods_rows(study, paths, config))
        + (f"<p>Sessions (passwords shown as ***):</p><ul>{commands}</ul>" if commands else "")
    )
