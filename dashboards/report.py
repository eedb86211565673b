"""`stagesearch report`: one self-contained HTML report of a study, its figures also saved beside it."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import html  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from dashboards.report_baseline import baseline_section  # noqa: E402
from dashboards.report_candidates import candidates_section  # noqa: E402
from dashboards.report_cohort import cohort_section  # noqa: E402
from dashboards.report_estimates import estimates_section  # noqa: E402
from dashboards.report_explain import explain_section  # noqa: E402
from dashboards.report_figures import (  # noqa: E402
    families,
    figure_folds,
    figure_history,
    figure_importance,
    fold_aucs,
    fold_summary,
    param_importances,
)
from dashboards.report_html import STYLE, figure, fmt, table  # noqa: E402
from dashboards.report_methods import methods_section  # noqa: E402
from dashboards.report_sites import sites_section  # noqa: E402
from dashboards.report_winner import winner_section  # noqa: E402
from search.study import (  # noqa: E402
    FORMAT_VERSION,
    Locations,
    StorageError,
    StudyFormatError,
    StudyPaths,
    add_location_flags,
    backbone_of,
    count_trials,
    exit_error,
    failure_counts,
    format_failures,
    from_args,
    leaderboard,
    read_config,
    read_json,
    read_leaderboard,
    read_oof,
)
from search.tracking.figures import figure_roc, palette, roc_points  # noqa: E402


def best_per_backbone(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Best COMPLETE trial of every backbone, best first."""
    best: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = backbone_of(t)
        if name not in best or t.value > best[name].value:
            best[name] = t
    return dict(sorted(best.items(), key=lambda kv: -kv[1].value))


def load_oof(trial: FrozenTrial, paths: StudyPaths) -> tuple[list[dict[str, Any]] | None, str]:
    """A trial's out-of-fold table from the study folder, or why there is none."""
    rows = read_oof(paths.oof(trial.number))
    if rows:
        return rows, f"trials/{trial.number}/oof.csv"
    config = read_config(paths)
    if min(config.format, config.upgraded_from_format or FORMAT_VERSION) < FORMAT_VERSION:
        return (
            None,
            "no oof.csv (trial from before study-folder format 2; its MLflow run holds oof_predictions.csv)",
        )
    return None, "no out-of-fold table in the study folder"


def _holdout_section(paths: StudyPaths, best_value: float | None, out: Path) -> str:
    winner = read_json(paths.winner)
    held = winner.get("holdout") if winner else None
    patients = read_json(paths.holdout).get("patients") or []
    parts = []
    if winner:
        model = f"{winner.get('model_name')} version {winner.get('model_version')}"
        kind = winner.get("kind", "single")
        what = (
            f"trial {winner.get('trial')}"
            if kind == "single"
            else {"ensemble": "the deep ensemble", "radiomics": "the radiomics model"}.get(kind, kind)
        )
        parts.append(
            f"<p>Winner: {what}, {fmt(winner.get('backbone'))} "
            f"({fmt(winner.get('family'))}), cv_auc {fmt(winner.get('cv_auc'))}, registered as "
            f"<code>{html.escape(model)}</code>.</p>"
        )
    if held:
        parts.append(
            f'<p class="big">Held-out AUC {held["auc"]:.3f} (95% CI {held["ci_low"]:.3f} to '
            f"{held['ci_high']:.3f}) on {held['n_patients']} patients that no trial saw.</p>"
        )
        points = roc_points(held.get("predictions") or [])
        if points:
            label = {"holdout": f"winner ({winner.get('backbone')}), {held['n_patients']} patients"}
            path = figure_roc(
                {"holdout": points}, label, "ROC on the held-out patients", out / "holdout_roc.png"
            )
            parts.append(figure(path, "The winner (ensemble of its fold models) on the held-out patients."))
        return "".join(parts)
    best = f" ({best_value:.3f})" if best_value is not None else ""
    parts.append(
        f"<p>No held-out result: the best trial's cv_auc{best} is <b>optimistic</b>, because that trial "
        "was selected on the same folds it is scored on. Judge the winner on patients no trial has seen "
        "(search with <code>--holdout 0.2</code>, then <code>stagesearch register</code>).</p>"
    )
    if patients:
        parts.append(
            f"<p>{len(patients)} patients are held out for this study (holdout.json); the winner has not "
            "been evaluated on them yet.</p>"
        )
    return "".join(parts)


def _config(params: dict[str, Any]) -> str:
    parts = [f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()]
    return html.escape(", ".join(p for p in parts if not p.startswith("backbone ")))


def _leaderboard(study: optuna.Study, paths: StudyPaths) -> str:
    rows = [
        [fmt(r.family), fmt(r.backbone), str(r.trial), fmt(r.cv_auc)]
        + [fmt(r.metrics.get(k)) for k in ("accuracy", "precision", "recall", "f1")]
        + [_config(r.params), fmt(r.pretrained)]
        for r in leaderboard(study, paths).rows
    ]
    head = "family backbone trial cv_auc accuracy precision recall F1 config pretrained".split()
    return (table(head, rows) if rows else "<p>No complete trial yet.</p>") + _missing(paths)


def _missing(paths: StudyPaths) -> str:
    """A line for each family of the space without a complete trial, from `leaderboard.json` (saying why)."""
    try:
        board = read_leaderboard(paths)
    except StudyFormatError:
        return ""
    items = [
        f"<li><b>{html.escape(m['family'])}</b> ({html.escape(', '.join(m.get('backbones', [])))}): no complete "
        f"trial, {html.escape(m['why'])}</li>"
        for m in (board.missing if board else None) or []
    ]
    return f'<ul class="missing">{"".join(items)}</ul>' if items else ""


def _backbones(
    trials: list[FrozenTrial], best: dict[str, FrozenTrial], family: dict[str, str], paths: StudyPaths
) -> str:
    rows = []
    for backbone in sorted({backbone_of(t) for t in trials}):
        mine = [t for t in trials if backbone_of(t) == backbone]
        n = [
            sum(t.state == st for t in mine)
            for st in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        ]
        b = best.get(backbone)
        spread = fold_summary(fold_aucs(load_oof(b, paths)[0])) if b is not None else "-"
        rows.append(
            [
                fmt(backbone),
                fmt(family.get(backbone, "-")),
                str(len(mine)),
                *map(str, n),
                fmt(b.value if b else None),
                str(b.number) if b else "-",
                spread,
            ]
        )
    head = [
        "backbone",
        "family",
        "trials",
        "complete",
        "pruned",
        "failed or interrupted",
        "best cv_auc",
        "best trial",
        "fold AUC mean (lowest to highest fold)",
    ]
    return table(head, rows)


def _roc_section(
    best: dict[str, FrozenTrial], paths: StudyPaths, out: Path, colors: dict[str, Any], family: dict[str, str]
) -> str:
    curves, labels, sources = {}, {}, []
    for backbone, t in best.items():
        rows, source = load_oof(t, paths)
        points = roc_points(rows) if rows else None
        if points:
            curves[backbone] = points
            labels[backbone] = f"{backbone} ({family.get(backbone, '-')}), trial {t.number}"
        sources.append(f"{backbone}: {source}")
    source = html.escape("; ".join(sources) or "no complete trial")
    if not curves:
        return f"<p>No ROC curves: {source}.</p>"
    roc = figure_roc(curves, labels, "ROC, best trial per backbone (out-of-fold)", out / "roc.png", colors)
    return figure(
        roc,
        "ROC curves of the best complete trial of each backbone on its pooled out-of-fold, "
        f"patient-level predictions. Source: {source}.",
    )


def _figures(study: optuna.Study, best: dict[str, FrozenTrial], paths: StudyPaths, out: Path) -> str:
    trials = study.get_trials(deepcopy=False)
    colors = palette(list({backbone_of(t) for t in trials}))
    family = families(trials)
    parts = [_roc_section(best, paths, out, colors, family)]
    history = figure_history(trials, out / "history.png", colors)
    parts.append(
        figure(
            history,
            "Every finished trial by trial number, coloured by backbone. A complete trial "
            "(dot) is at its cv_auc, the pooled out-of-fold AUC of its final epoch. A pruned "
            "trial (cross; stopped early by ASHA) has no cv_auc: it is at its mean_fold_auc, "
            "the mean of its per-fold AUCs at the last epoch it ran, which is what ASHA "
            "compared. The line is the best cv_auc so far.",
        )
    )
    values, note = param_importances(study)
    if values:
        parts.append(figure(figure_importance(values, out / "importance.png"), html.escape(note)))
    else:
        parts.append(f"<p>{html.escape(note)}</p>")
    if best:
        per_fold = {name: fold_aucs(load_oof(t, paths)[0]) for name, t in best.items()}
        parts.append(
            figure(
                figure_folds(best, per_fold, out / "folds.png", colors, family),
                "The per-fold AUCs of the best trial of each backbone (dots; from its out-of-fold "
                "table), their range from the lowest to the highest fold (bar) and their mean "
                "(line), next to its pooled out-of-fold cv_auc (diamond). The bar is the range, not "
                "mean ± sd: with 3 to 5 folds an sd bar can reach below 0 or above 1.",
            )
        )
    return "".join(parts)


def load_study(where: Locations) -> optuna.Study:
    """The study's Optuna record; exits with code 2 when its storage or the study is missing."""
    name = where.require_study()
    try:
        return optuna.load_study(study_name=name, storage=where.open_storage())
    except StorageError as exc:
        raise exit_error(str(exc)) from None
    except KeyError:
        raise exit_error(f"study {name!r} is not in {where.storage}") from None


def _page(study: optuna.Study, paths: StudyPaths, out: Path) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(study)
    best = best_per_backbone(study)
    config = read_config(paths)
    s = config.settings
    shown = {k: getattr(s, k) for k in ("space", "folds", "max_epochs", "seed", "holdout")}
    settings = ", ".join(f"{k} {v}" for k, v in shown.items() if v is not None)
    if s.pseudonymise:
        settings += "; patient ids pseudonymised (salted hashes; the salt stays in the study folder)"
    states = ("complete", "pruned", "failed", "interrupted", "running")
    why = format_failures(failure_counts(study))
    failed = f"<p>Failed trials by reason: {html.escape(why)}.</p>" if why else ""
    name = html.escape(study.study_name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>stagesearch report: {name}</title>
<style>{STYLE}</style></head><body>
<h1>Study {name}</h1>
<p>{config.patients or "?"} patients, cohort {html.escape(config.cohort_hash or "?")}; {html.escape(settings)}.
Report written {time.strftime("%Y-%m-%d %H:%M")}.</p>
<h2>Trials</h2>
{table(["complete", "pruned (stopped early)", "failed", "interrupted", "running"], [[str(counts[k]) for k in states]])}
{failed}
<h2>Best trial per backbone family</h2>
<p>cv_auc is the pooled out-of-fold, patient-level AUC; the other metrics are at probability 0.5.</p>
{_leaderboard(study, paths)}
{estimates_section(paths)}
{winner_section(study, paths, out)}
{baseline_section(paths)}
{candidates_section(paths)}
{explain_section(paths, out)}
<h2>Backbones</h2>
{_backbones(trials, best, families(trials), paths)}
<h2>Figures</h2>
{_figures(study, best, paths, out)}
<h2>Held-out test</h2>
{_holdout_section(paths, max((t.value for t in best.values()), default=None), out)}
{sites_section(paths)}
{cohort_section(paths, out)}
{methods_section(study, paths, out)}
</body></html>
"""


def build_report(where: Locations, out_dir: Path | None = None) -> Path:
    """Write `<study>/report/report.html` with its PNGs beside it; returns the HTML path."""
    study = load_study(where)
    paths = where.paths
    out = out_dir or paths.report
    out.mkdir(parents=True, exist_ok=True)
    target = out / "report.html"
    target.write_text(_page(study, paths, out))
    return target


def build_parser() -> argparse.ArgumentParser:
    """Flags of the report."""
    parser = argparse.ArgumentParser(
        prog="stagesearch report",
        description="Write a self-contained HTML report of a study (leaderboard, ROC, history, importances).",
    )
    add_location_flags(parser, study_required=True)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the report (default: <study>/report)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the report; print its absolute path and a `file://` URL (what a terminal lets one click)."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    page = build_report(from_args(args), args.out).resolve()
    print(f"report written: {page}")
    print(f"open it in a browser: {page.as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
