"""The end of a search session: the leaderboard and its estimates, the parent run's summary, registering the
winner, and what the console says about the outcome."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from typing import Any

import optuna

from search.console.routing import OUT_LOGGER, reroute
from search.stats.baseline_text import baseline_row, parent_fields, print_baseline
from search.stats.candidates_text import candidate_lines, candidate_metrics, radiomics_rows
from search.stats.estimates import parent_metrics, summary_lines, with_estimate
from search.stats.sites import holdout_per_site, site_estimates
from search.stats.sites import outcome_lines as site_lines
from search.stats.sites import parent_metrics as site_metrics
from search.stats.study_candidates import candidate_fields
from search.study import (
    HIDDEN,
    STORAGE_ENV,
    Leaderboard,
    StudyPaths,
    backbone_of,
    finished_trials,
    format_failures,
    format_leaderboard,
    format_missing,
    leaderboard,
    missing_families,
    write_leaderboard,
)
from search.tracking.outbox import first_line, tracking_errors


def family(trial: optuna.trial.FrozenTrial) -> str:
    from trainers.backbones import UnknownBackboneError, family_of

    try:
        return family_of(backbone_of(trial))
    except UnknownBackboneError:
        return "-"


def summarise(args: Any, config: dict, paths: StudyPaths, session: Any, inputs: Any = None) -> Leaderboard:
    """The session's leaderboard in memory (`search.session.runner.Session`): trials, estimates, families with
    no complete trial, sites, the non-deep baseline on the folds of `inputs` (`StudyInputs`) and the candidates
    of every kind. Nothing is written: `publish` writes it once, after registration."""
    from search.session.baseline import attach_baseline

    board = with_estimate(leaderboard(session.study, paths, family=family), session.study, paths, config)
    board = dataclasses.replace(board, missing=missing_families(session.study, space_families(config)))
    board = dataclasses.replace(board, **site_estimates(config, paths, board))
    board = attach_baseline(
        board, paths, inputs and inputs.prepared, session.tracker, int(config.settings.seed)
    )
    return dataclasses.replace(board, candidates=_candidates(args, config, paths, session, inputs))


def with_holdout(board: Leaderboard, winner: Mapping[str, Any] | None) -> Leaderboard:
    """The leaderboard with the registered winner's per-site hold-out results (known only after registering)."""
    held = holdout_per_site(winner, board)
    if held is None or board.per_site is None:
        return board
    return dataclasses.replace(board, per_site={**board.per_site, "holdout": held})


def publish(
    args: Any, paths: StudyPaths, session: Any, board: Leaderboard, status: str, stopped: str | None = None
) -> None:
    """`leaderboard.json` and the parent run's summary (failures by reason, why the search stopped), each
    written once, when everything they hold is known. A tracking failure is a warning: Optuna and the
    leaderboard hold the results, MLflow mirrors them."""
    counts = board.counts
    best = board.rows[0] if board.rows else None
    base_metrics, base_tags = parent_fields(board)
    write_leaderboard(paths, board)  # the study's own record first
    try:
        session.tracker.log_parent_summary(
            {
                "best_cv_auc": best.cv_auc if best else float("nan"),
                **{f"trials_{k}": v for k, v in counts.items()},
                **{f"trials_failed_{k}": v for k, v in board.failures.items()},
                **parent_metrics(board),
                **site_metrics(board),
                **base_metrics,
                **candidate_metrics(board.candidates),
            },
            {
                "best_trial": str(best.trial) if best else "",
                **({"stopped": stopped} if stopped else {}),
                **base_tags,
                **({"registered_kind": board.candidates["registered"]} if _compared(board) else {}),
            },
            status if counts["finished"] < args.budget or stopped else "FINISHED",
        )
    except tracking_errors() as exc:
        print(
            f"warning: the search's summary was not logged to MLflow ({first_line(exc)})",
            file=sys.stderr,
            flush=True,
        )


def _candidates(args: Any, config: dict, paths: StudyPaths, session: Any, inputs: Any) -> dict:
    """The radiomics trials still missing run, then every kind of candidate compared (`candidates`)."""
    from search.session.radiomics_trials import run_radiomics

    if inputs is not None and inputs.prepared is not None:
        trials, seed = int(getattr(args, "radiomics_trials", 0)), int(config.settings.seed)
        run_radiomics(paths, session.storage, config.study, inputs.prepared, trials, seed)
    finished = {n: state for n, (state, _) in finished_trials(session.study).items()}
    families = {t.number: family(t) for t in session.study.get_trials(deepcopy=False) if t.number in finished}
    return candidate_fields(paths, config, finished, families)


def _compared(board: Leaderboard) -> bool:
    return bool(board.candidates and board.candidates.get("registered"))


def space_families(config: dict) -> dict[str, str]:
    """The study's space as backbone -> family (every family the leaderboard must account for)."""
    from search.study.inputs import study_space
    from trainers.backbones import family_of

    return {b: family_of(b) for b in study_space(config.settings).backbones}


def register(args: Any, config: dict, board: Leaderboard, session: Any, inputs: Any) -> dict | None:
    """Register the winner the leaderboard `board` chose, from what the driver holds in memory (the config, the
    session's Optuna study, the prepared `inputs`); evaluates the held-out patients once."""
    from search.models.refit import HeldStudy
    from search.models.register import RegisterError, register_study
    from search.study import resolve

    print()
    reroute()  # libraries imported since the search started (the model flavour's) log to the file too
    try:
        where = resolve(args.runs_dir, config.study, config.storage, config.tracking_uri)
        kind = None if getattr(args, "register_kind", "auto") == "auto" else args.register_kind
        held = HeldStudy(config, session.study, inputs)
        return register_study(where, args.model_name, log=_register_line, kind=kind, board=board, held=held)
    except RegisterError as exc:
        print(f"not registered: {exc}", flush=True)
        return None


def _register_line(line: str) -> None:
    """What registering says, at the end of a search: the line saying it starts (it retrains, which takes a
    while) on the terminal; the rest only in the log file, since the summary below says it again (the version
    and its threshold, the chance warning, the promote hint, the note on the hold-out)."""
    if line.startswith("registering "):
        print(line, flush=True)
    else:
        logging.getLogger(OUT_LOGGER).info(line)


def print_outcome(board: Any, config: dict, paths: StudyPaths, winner: dict | None) -> None:
    counts, rows = board.counts, board.rows
    print()
    why = format_failures(board.failures)
    print(
        f"study {config.study}: {counts['complete']} complete, {counts['pruned']} pruned (stopped early), "
        f"{counts['failed']} failed" + (f" ({why})" if why else "")
    )
    if rows:
        print("\nbest trial per backbone family (cv_auc = pooled out-of-fold patient-level AUC):")
        extra = radiomics_rows(board.candidates)
        print(format_leaderboard(rows) + extra + baseline_row(board) + format_missing(board.missing))
        _print_winner(board, winner)
    elif board.missing:
        print("\nno backbone family has a complete trial:" + format_missing(board.missing))
    print_baseline(board)
    print(f"\nstudy folder: {paths.root}")
    print("report:            stagesearch report" + _where_flags(paths, config))
    print("optuna-dashboard:  stagesearch dashboard" + _where_flags(paths, config))
    print("MLflow UI:         stagesearch mlflow-ui" + _where_flags(paths, config))
    if HIDDEN in config.storage + config.tracking_uri:
        print(
            "the study records its stores without their passwords: give them to these commands in the "
            f"environment (PGPASSWORD or ~/.pgpass for PostgreSQL, or {STORAGE_ENV} with the storage URL)"
        )


def _print_winner(board: Any, winner: dict | None) -> None:
    """The winner, its estimates (each said once), and where it was registered with its threshold."""
    w = board.rows[0]
    line = f"\nwinner: trial {w.trial}, {w.backbone} ({w.family}), cv_auc {w.cv_auc:.3f}"
    held = (winner or {}).get("holdout")
    if held:
        print(
            f"{line} | held-out AUC {held['auc']:.3f} (95% CI {held['ci_low']:.3f}-{held['ci_high']:.3f}, "
            f"{held['n_patients']} patients never seen by any trial)"
        )
    else:
        print(line)
    estimates = summary_lines(board, winner)
    for text in [*estimates, *candidate_lines(board.candidates)]:
        print(text)
    if not held:
        optimistic = (
            ""
            if any("optimistic" in text for text in estimates)
            else ("the best of many trials' cv_auc is optimistic (it was selected on the same folds); ")
        )
        print(
            f"note: no held-out patients in this study: {optimistic}run with --holdout 0.2 to test the winner on "
            "patients no trial has seen"
        )
    for site_line in site_lines(board, winner):
        print(site_line)
    if winner:
        threshold = winner.get("threshold")
        at = f", stages T2 at P(T2) >= {threshold:.3f} ({winner.get('threshold_rule')})" if threshold else ""
        what = {
            "ensemble": f" (the deep ensemble of trials {_members(winner)})",
            "radiomics": f" (the radiomics model: {winner.get('params', {}).get('model', 'hand-made features')})",
        }.get(winner.get("kind"), "")
        print(f"registered: {winner['model_uri']} @challenger{what}{at}")
        print(f"promote: {winner.get('next', '--best')}")


def _members(winner: dict) -> str:
    return ", ".join(f"{m['trial']} x{m['weight']:g}" for m in winner.get("members", []))


def _where_flags(paths: StudyPaths, config: dict) -> str:
    """The flags that point a later command at this study from any folder."""
    return f" --runs-dir {paths.root.parent.resolve()} --study {config.study}"
