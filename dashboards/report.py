"""`python dashboards/report.py`: one self-contained HTML report of a study, its figures also saved beside it."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `dashboards/` must not shadow the optuna and mlflow packages
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import base64  # noqa: E402
import csv  # noqa: E402
import html  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from dashboards.locations import Locations, add_location_flags, fail, from_args, sqlite_path  # noqa: E402
from search.study import count_trials, read_json  # noqa: E402

OOF_ARTIFACT = "oof_predictions.csv"
OPTUNA_NUMBER_KEY = "_optuna_trial"  # how the search tags each Ray trial's config with its Optuna number


def _family(backbone: str) -> str:
    from trainers.backbones import family_of  # torch and timm: only once a report is being built

    try:
        return family_of(backbone)
    except (KeyError, ValueError):
        return "?"


def best_per_backbone(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Best COMPLETE trial of every backbone, best first."""
    best: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = str(t.params.get("backbone", "?"))
        if name not in best or t.value > best[name].value:
            best[name] = t
    return dict(sorted(best.items(), key=lambda kv: -kv[1].value))


def oof_from_mlflow(tracking_uri: str, run_id: str) -> list[dict[str, Any]] | None:
    """A trial run's `oof_predictions.csv` artifact as rows (None when it cannot be read)."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = MlflowClient(tracking_uri=tracking_uri).download_artifacts(run_id, OOF_ARTIFACT, tmp)
            with open(path, newline="") as fh:
                return [{**r, "label": int(r["label"]), "prob": float(r["prob"])} for r in csv.DictReader(fh)]
    except Exception:  # a deleted run, a missing artifact, an unreachable server: the caller falls back
        return None


def oof_from_ray(study_dir: Path, number: int) -> list[dict[str, Any]] | None:
    """The out-of-fold rows Optuna trial `number` reported last to Ray Tune (`oof_json`), if any."""
    for params in sorted((study_dir / "ray").glob("*/*/params.json")):
        try:
            if json.loads(params.read_text()).get(OPTUNA_NUMBER_KEY) != number:
                continue
            lines = (params.parent / "result.json").read_text().splitlines()
        except (OSError, ValueError):
            continue
        for line in reversed(lines):
            rows = json.loads(line).get("oof_json") if line.strip() else None
            if rows:
                return json.loads(rows)
    return None


def load_oof(trial: FrozenTrial, where: Locations) -> tuple[list[dict[str, Any]] | None, str]:
    """Out-of-fold predictions of a trial and where they came from (MLflow first, then Ray's results)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    rows = oof_from_mlflow(where.tracking_uri, run_id) if run_id else None
    if rows:
        return rows, "MLflow"
    rows = oof_from_ray(where.study_dir, trial.number) if where.study_dir else None
    return (rows, "Ray results") if rows else (None, "")


def roc_points(rows: list[dict[str, Any]]) -> tuple[Any, Any, float] | None:
    """(fpr, tpr, auc) of prediction rows, None with a single class."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = [int(r["label"]) for r in rows]
    p = [float(r["prob"]) for r in rows]
    if len(set(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr, float(roc_auc_score(y, p))


def palette(names: list[str]) -> dict[str, Any]:
    """One colour per name (a study's backbones keep theirs across all figures)."""
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(sorted(names))}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_roc(curves: dict[str, tuple[Any, Any, float]], labels: dict[str, str], title: str, path: Path,
               colors: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """ROC curves (one per key), AUC in the legend, chance diagonal."""
    fig, ax = plt.subplots(figsize=(6, 5.6))
    colors = colors or palette(list(curves))
    for key, (fpr, tpr, auc) in sorted(curves.items(), key=lambda kv: -kv[1][2]):
        ax.step(fpr, tpr, where="post", lw=2.2, color=colors[key], label=f"{labels[key]}  AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title=title)  # fmt: skip
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    return _save(fig, path)


def figure_history(trials: list[FrozenTrial], path: Path, colors: dict[str, Any]) -> Path:
    """cv_auc per trial number: complete (filled) and pruned (crosses) by backbone, best-so-far line."""
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    shown = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    for backbone in sorted({str(t.params.get("backbone", "?")) for t in shown}):
        mine, color = [t for t in shown if str(t.params.get("backbone", "?")) == backbone], colors[backbone]
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
    return _save(fig, path)


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
    return _save(fig, path)


def figure_folds(best: dict[str, FrozenTrial], path: Path, colors: dict[str, Any]) -> Path:
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
    ax.set_xticks(range(len(names)), [f"{n}\n({_family(n)})" for n in names], fontsize=9)
    ax.set(xlim=(-0.7, len(names) - 0.4), ylim=(low - 0.05, high + 0.05), ylabel="AUC",
           title="Fold-to-fold spread of the best trial per backbone")  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    return _save(fig, path)


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


def _holdout_section(where: Locations, best_value: float | None, out: Path) -> str:
    study_dir = where.study_dir or Path(".")
    winner = read_json(study_dir / "winner.json")
    held = winner.get("holdout") if winner else None
    patients = read_json(study_dir / "holdout.json").get("patients") or []
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
                 "(search with <code>--holdout 0.2</code>, then <code>python search/register.py</code>).</p>")  # fmt: skip
    if patients:
        parts.append(f"<p>{len(patients)} patients are held out for this study (holdout.json); the winner has not "
                     "been evaluated on them yet.</p>")  # fmt: skip
    return "".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f2f2f2}figure{margin:1em 0 2em}img{max-width:100%}figcaption{font-size:13px;
color:#555}.big{font-size:1.2em}code{background:#f4f4f4;padding:1px 4px}"""


def _leaderboard(study: optuna.Study) -> str:
    from search.progress import leaderboard_rows

    rows = [[_fmt(r["family"]), _fmt(r["backbone"]), str(r["trial"])]
            + [_fmt(r[k]) for k in ("cv_auc", "accuracy", "precision", "recall", "f1")]
            + [_config(study.trials[r["trial"]].params), _fmt(r["pretrained"])]
            for r in leaderboard_rows(study)]  # fmt: skip
    head = "family backbone trial cv_auc accuracy precision recall F1 config pretrained".split()
    return _table(head, rows) if rows else "<p>No complete trial yet.</p>"


def _backbones(trials: list[FrozenTrial], best: dict[str, FrozenTrial]) -> str:
    rows = []
    for backbone in sorted({str(t.params.get("backbone", "?")) for t in trials}):
        mine = [t for t in trials if str(t.params.get("backbone", "?")) == backbone]
        n = [
            sum(t.state == st for t in mine)
            for st in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        ]
        b, spread = best.get(backbone), "-"
        if b is not None and b.user_attrs.get("fold_auc_mean") is not None:
            spread = f"{b.user_attrs['fold_auc_mean']:.3f} ± {b.user_attrs.get('fold_auc_sd') or 0:.3f}"
        rows.append([_fmt(backbone), _fmt(_family(backbone)), str(len(mine)), *map(str, n),
                     _fmt(b.value if b else None), str(b.number) if b else "-", spread])  # fmt: skip
    head = ["backbone", "family", "trials", "complete", "pruned", "failed or interrupted", "best cv_auc",
            "best trial", "fold AUC mean ± sd"]  # fmt: skip
    return _table(head, rows)


def _figures(study: optuna.Study, best: dict[str, FrozenTrial], where: Locations, out: Path) -> str:
    trials = study.get_trials(deepcopy=False)
    colors = palette(list({str(t.params.get("backbone", "?")) for t in trials}))
    curves, labels, sources = {}, {}, []
    for backbone, t in best.items():
        rows, source = load_oof(t, where)
        points = roc_points(rows) if rows else None
        if points:
            curves[backbone], labels[backbone] = points, f"{backbone} ({_family(backbone)}), trial {t.number}"
        sources.append(f"{backbone}: {source if points else 'no out-of-fold predictions found'}")
    source = html.escape("; ".join(sources) or "no complete trial")
    parts = []
    if curves:
        roc = figure_roc(
            curves, labels, "ROC, best trial per backbone (out-of-fold)", out / "roc.png", colors
        )
        parts.append(_figure(roc, "ROC curves of the best complete trial of each backbone on its pooled "
                                  f"out-of-fold, patient-level predictions. Source: {source}."))  # fmt: skip
    else:
        parts.append(f"<p>No ROC curves: {source}.</p>")
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
        parts.append(_figure(figure_folds(best, out / "folds.png", colors),
                             "Mean and standard deviation of the per-fold AUCs of the best trial of each "
                             "backbone (dots, bars) next to its pooled out-of-fold cv_auc (diamonds)."))  # fmt: skip
    return "".join(parts)


def build_report(where: Locations, out_dir: Path | None = None) -> Path:
    """Write `<study>/report/report.html` with its PNGs beside it; returns the HTML path."""
    name = where.require_study()
    path = sqlite_path(str(where.storage))
    if path is not None and not path.exists():
        raise fail(f"no Optuna storage at {path}")
    try:
        study = optuna.load_study(study_name=name, storage=where.storage)
    except KeyError:
        raise fail(f"study {name!r} is not in {where.storage}") from None
    out = out_dir or (where.study_dir or Path(".")) / "report"
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(study)
    best = best_per_backbone(study)
    config = read_json(where.study_dir / "config.json") if where.study_dir else {}
    s = config.get("settings", {})
    settings = ", ".join(f"{k} {s[k]}" for k in ("space", "folds", "max_epochs", "seed", "holdout") if k in s)
    states = ("complete", "pruned", "failed", "interrupted", "running")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>stagesearch report: {html.escape(name)}</title>
<style>{STYLE}</style></head><body>
<h1>Study {html.escape(name)}</h1>
<p>{config.get("patients", "?")} patients, cohort {html.escape(str(config.get("cohort_hash", "?")))}; {html.escape(settings)}.
Report written {time.strftime("%Y-%m-%d %H:%M")}.</p>
<h2>Trials</h2>
{_table(["complete", "pruned (stopped early)", "failed", "interrupted", "running"], [[str(counts[k]) for k in states]])}
<h2>Best trial per backbone family</h2>
<p>cv_auc is the pooled out-of-fold, patient-level AUC; the other metrics are at probability 0.5.</p>
{_leaderboard(study)}
<h2>Backbones</h2>
{_backbones(trials, best)}
<h2>Figures</h2>
{_figures(study, best, where, out)}
<h2>Held-out test</h2>
{_holdout_section(where, max((t.value for t in best.values()), default=None), out)}
</body></html>
"""  # fmt: skip
    target = out / "report.html"
    target.write_text(page)
    return target


def build_parser() -> argparse.ArgumentParser:
    """Flags of the report."""
    parser = argparse.ArgumentParser(
        prog="python dashboards/report.py",
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
