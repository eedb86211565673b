"""`stagesearch report`: one self-contained HTML report of a study, its figures also saved beside it."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import base64  # noqa: E402
import html  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from dashboards.report_baseline import baseline_section  # noqa: E402
from dashboards.report_cohort import cohort_section  # noqa: E402
from dashboards.report_estimates import estimates_section  # noqa: E402
from dashboards.report_methods import methods_section  # noqa: E402
from dashboards.report_sites import sites_section  # noqa: E402
from dashboards.report_winner import winner_section  # noqa: E402
from search.figures import figure_roc, palette, roc_points, save  # noqa: E402
from search.study import (  # noqa: E402
    FORMAT_VERSION,
    Locations,
    StorageError,
    StudyPaths,
    add_location_flags,
    backbone_of,
    count_trials,
    exit_error,
    failure_counts,
    family_attr,
    folder_format,
    format_failures,
    from_args,
    leaderboard,
    read_json,
    read_oof,
)


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
    config = read_json(paths.config)
    if min(folder_format(config), config.get("upgraded_from_format", FORMAT_VERSION)) < FORMAT_VERSION:
        return None, "no oof.csv (trial from before study-folder format 2; its MLflow run holds oof_predictions.csv)"
    return None, "no out-of-fold table in the study folder"


def figure_history(trials: list[FrozenTrial], path: Path, colors: dict[str, Any]) -> Path:
    """cv_auc per trial number: complete (filled) and pruned (crosses) by backbone, best-so-far line."""
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    shown = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    for backbone in sorted({backbone_of(t) for t in shown}):
        mine, color = [t for t in shown if backbone_of(t) == backbone], colors[backbone]
        done = [t for t in mine if t.state == TrialState.COMPLETE and t.value is not None]
        ax.scatter([t.number for t in done], [t.value for t in done], s=46, color=color, zorder=3,
                   edgecolor="black", linewidth=0.5, label=f"{backbone}: complete")  # fmt: skip
        pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in mine
                  if t.state == TrialState.PRUNED and t.intermediate_values]  # fmt: skip
        if pruned:
            ax.scatter(*zip(*pruned, strict=True), s=46, marker="x", color=color, zorder=3,
                       label=f"{backbone}: pruned (last mean fold AUC)")  # fmt: skip
    complete = sorted(
        (t.number, t.value) for t in shown if t.state == TrialState.COMPLETE and t.value is not None
    )
    if complete:
        xs = [n for n, _ in complete] + [max(t.number for t in trials)]
        ys = list(itertools.accumulate((v for _, v in complete), max))
        ax.step(xs, ys + ys[-1:], where="post", color="black", lw=1.6, label="best cv_auc so far")
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set(xlabel="trial number", ylabel="cv_auc (pooled out-of-fold AUC)", ylim=(-0.02, 1.02),
           title="Optimisation history")  # fmt: skip
    if not shown:
        ax.text(0.5, 0.7, "no finished trial yet", ha="center", fontsize=13, transform=ax.transAxes)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8.5)
    return save(fig, path)


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the parameters for cv_auc, or why there are none."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 2:
        return None, f"Parameter importances need at least 2 complete trials; this study has {n}."
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # tiny or degenerate studies (one value per parameter, constant cv_auc, ...)
        return None, f"Parameter importances could not be computed on {n} complete trials: {exc}"
    if not values or not all(math.isfinite(v) for v in values.values()):
        return None, f"Parameter importances are undefined on these {n} complete trials."
    return values, f"fANOVA importance of each parameter for cv_auc, over {n} complete trials."


def figure_importance(values: dict[str, float], path: Path) -> Path:
    """Horizontal bars, most important on top."""
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v + 0.01, i, f"{v:.2f}", va="center", fontsize=9)
    ax.set(xlim=(0, max(1.0, max(v for _, v in items) + 0.1)), xlabel="importance (sums to 1)",
           title="Parameter importances for cv_auc")  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def families(trials: list[FrozenTrial]) -> dict[str, str]:
    """Backbone -> family, as the search recorded it on the trials."""
    return {backbone_of(t): family_attr(t) for t in trials if family_attr(t) != "-"}


def figure_folds(best: dict[str, FrozenTrial], path: Path, colors: dict[str, Any], family: dict[str, str]) -> Path:
    """Per backbone (best complete trial): mean fold AUC with its fold-to-fold sd, and the pooled cv_auc."""
    names = list(best)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(names) + 2.5), 5))
    low, high = 0.0, 1.0
    for i, name in enumerate(names):
        t = best[name]
        mean, sd = t.user_attrs.get("fold_auc_mean"), t.user_attrs.get("fold_auc_sd") or 0.0
        if mean is not None:
            ax.errorbar(i - 0.1, mean, yerr=sd, fmt="o", ms=8, capsize=8, lw=2, color=colors[name],
                        label="mean fold AUC ± sd" if i == 0 else None)  # fmt: skip
            ax.annotate(f"{mean:.2f} ± {sd:.2f}", (i - 0.1, mean), xytext=(-10, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=8.5)  # fmt: skip
            low, high = min(low, mean - sd), max(high, mean + sd)
        ax.scatter(i + 0.15, t.value, marker="D", s=46, color="black", zorder=3,
                   label="pooled cv_auc" if i == 0 else None)  # fmt: skip
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set_xticks(range(len(names)), [f"{n}\n({family.get(n, '-')})" for n in names], fontsize=9)
    ax.set(xlim=(-0.7, len(names) - 0.4), ylim=(low - 0.05, high + 0.05), ylabel="AUC",
           title="Fold-to-fold spread of the best trial per backbone")  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    return save(fig, path)


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "-"}[v]
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _config(params: dict[str, Any]) -> str:
    parts = [f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()]
    return html.escape(", ".join(p for p in parts if not p.startswith("backbone ")))


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption} (<a href=\"{path.name}\">{path.name}</a>)</figcaption></figure>")  # fmt: skip


def _holdout_section(paths: StudyPaths, best_value: float | None, out: Path) -> str:
    winner = read_json(paths.winner)
    held = winner.get("holdout") if winner else None
    patients = read_json(paths.holdout).get("patients") or []
    parts = []
    if winner:
        model = f"{winner.get('model_name')} version {winner.get('model_version')}"
        parts.append(f"<p>Winner: trial {winner.get('trial')}, {_fmt(winner.get('backbone'))} "
                     f"({_fmt(winner.get('family'))}), cv_auc {_fmt(winner.get('cv_auc'))}, registered as "
                     f"<code>{html.escape(model)}</code>.</p>")  # fmt: skip
    if held:
        parts.append(f'<p class="big">Held-out AUC {held["auc"]:.3f} (95% CI {held["ci_low"]:.3f} to '
                     f"{held['ci_high']:.3f}) on {held['n_patients']} patients that no trial saw.</p>")  # fmt: skip
        points = roc_points(held.get("predictions") or [])
        if points:
            label = {"holdout": f"winner ({winner.get('backbone')}), {held['n_patients']} patients"}
            path = figure_roc(
                {"holdout": points}, label, "ROC on the held-out patients", out / "holdout_roc.png"
            )
            parts.append(_figure(path, "The winner (ensemble of its fold models) on the held-out patients."))
        return "".join(parts)
    best = f" ({best_value:.3f})" if best_value is not None else ""
    parts.append(f"<p>No held-out result: the best trial's cv_auc{best} is <b>optimistic</b>, because that trial "
                 "was selected on the same folds it is scored on. Judge the winner on patients no trial has seen "
                 "(search with <code>--holdout 0.2</code>, then <code>stagesearch register</code>).</p>")  # fmt: skip
    if patients:
        parts.append(f"<p>{len(patients)} patients are held out for this study (holdout.json); the winner has not "
                     "been evaluated on them yet.</p>")  # fmt: skip
    return "".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f2f2f2}figure{margin:1em 0 2em}img{max-width:100%}figcaption{font-size:13px;
color:#555}.big{font-size:1.2em}code{background:#f4f4f4;padding:1px 4px}"""


def _leaderboard(study: optuna.Study, paths: StudyPaths) -> str:
    rows = [[_fmt(r.family), _fmt(r.backbone), str(r.trial), _fmt(r.cv_auc)]
            + [_fmt(r.metrics.get(k)) for k in ("accuracy", "precision", "recall", "f1")]
            + [_config(r.params), _fmt(r.pretrained)]
            for r in leaderboard(study, paths).rows]  # fmt: skip
    head = "family backbone trial cv_auc accuracy precision recall F1 config pretrained".split()
    return _table(head, rows) if rows else "<p>No complete trial yet.</p>"


def _backbones(trials: list[FrozenTrial], best: dict[str, FrozenTrial], family: dict[str, str]) -> str:
    rows = []
    for backbone in sorted({backbone_of(t) for t in trials}):
        mine = [t for t in trials if backbone_of(t) == backbone]
        n = [
            sum(t.state == st for t in mine)
            for st in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        ]
        b, spread = best.get(backbone), "-"
        if b is not None and b.user_attrs.get("fold_auc_mean") is not None:
            spread = f"{b.user_attrs['fold_auc_mean']:.3f} ± {b.user_attrs.get('fold_auc_sd') or 0:.3f}"
        rows.append([_fmt(backbone), _fmt(family.get(backbone, "-")), str(len(mine)), *map(str, n),
                     _fmt(b.value if b else None), str(b.number) if b else "-", spread])  # fmt: skip
    head = ["backbone", "family", "trials", "complete", "pruned", "failed or interrupted", "best cv_auc",
            "best trial", "fold AUC mean ± sd"]  # fmt: skip
    return _table(head, rows)


def _roc_section(best: dict[str, FrozenTrial], paths: StudyPaths, out: Path, colors: dict[str, Any],
                 family: dict[str, str]) -> str:  # fmt: skip
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
    return _figure(roc, "ROC curves of the best complete trial of each backbone on its pooled out-of-fold, "
                        f"patient-level predictions. Source: {source}.")  # fmt: skip


def _figures(study: optuna.Study, best: dict[str, FrozenTrial], paths: StudyPaths, out: Path) -> str:
    trials = study.get_trials(deepcopy=False)
    colors = palette(list({backbone_of(t) for t in trials}))
    family = families(trials)
    parts = [_roc_section(best, paths, out, colors, family)]
    history = figure_history(trials, out / "history.png", colors)
    parts.append(_figure(history, "cv_auc of every finished trial by trial number; pruned trials (stopped early "
                                  "by ASHA) are shown at their last per-epoch mean fold AUC; the line is the best "
                                  "cv_auc so far."))  # fmt: skip
    values, note = param_importances(study)
    if values:
        parts.append(_figure(figure_importance(values, out / "importance.png"), html.escape(note)))
    else:
        parts.append(f"<p>{html.escape(note)}</p>")
    if best:
        parts.append(_figure(figure_folds(best, out / "folds.png", colors, family),
                             "Mean and standard deviation of the per-fold AUCs of the best trial of each "
                             "backbone (dots, bars) next to its pooled out-of-fold cv_auc (diamonds)."))  # fmt: skip
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
    config = read_json(paths.config)
    s = config.get("settings", {})
    settings = ", ".join(f"{k} {s[k]}" for k in ("space", "folds", "max_epochs", "seed", "holdout") if k in s)
    if s.get("pseudonymise"):
        settings += "; patient ids pseudonymised (salted hashes; the salt stays in the study folder)"
    states = ("complete", "pruned", "failed", "interrupted", "running")
    why = format_failures(failure_counts(study))
    failed = f"<p>Failed trials by reason: {html.escape(why)}.</p>" if why else ""
    name = html.escape(study.study_name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>stagesearch report: {name}</title>
<style>{STYLE}</style></head><body>
<h1>Study {name}</h1>
<p>{config.get("patients", "?")} patients, cohort {html.escape(str(config.get("cohort_hash", "?")))}; {html.escape(settings)}.
Report written {time.strftime("%Y-%m-%d %H:%M")}.</p>
<h2>Trials</h2>
{_table(["complete", "pruned (stopped early)", "failed", "interrupted", "running"], [[str(counts[k]) for k in states]])}
{failed}
<h2>Best trial per backbone family</h2>
<p>cv_auc is the pooled out-of-fold, patient-level AUC; the other metrics are at probability 0.5.</p>
{_leaderboard(study, paths)}
{estimates_section(paths)}
{winner_section(study, paths, out)}
{baseline_section(paths)}
<h2>Backbones</h2>
{_backbones(trials, best, families(trials))}
<h2>Figures</h2>
{_figures(study, best, paths, out)}
<h2>Held-out test</h2>
{_holdout_section(paths, max((t.value for t in best.values()), default=None), out)}
{sites_section(paths)}
{cohort_section(paths, out)}
{methods_section(study, paths, out)}
</body></html>
"""  # fmt: skip


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
    """Write the report and print its path."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(build_report(from_args(args), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
