"""What a registered version records so that the promotion gate can be honest: the selection-bias-corrected
estimate, whether the winner was shown to beat chance, which kind of estimate the gate compares, and the
operating threshold the model stages patients at.

Pure functions of the leaderboard, the hold-out result and the out-of-fold table; `search.models.register`
writes their output as version tags and `search.registry.gate` reads them back.
"""

from __future__ import annotations

from typing import Any

from trainers.metrics import is_finite


def _finite(*values: Any) -> bool:
    return all(is_finite(v) for v in values)


def operating_threshold(oof: list[dict[str, Any]]) -> tuple[float, str]:
    """(threshold, how it was chosen): Youden's J on the registered fold models' own out-of-fold predictions,
    0.5 when J is undefined or not positive.

    Why Youden and not 0.5: the fold models' probabilities are not calibrated (class-balanced loss, few epochs,
    small networks); P(T2) is often squeezed around 0.5 or shifted, and a fixed 0.5 can then call every patient
    T1 (or T2) although the ranking (the AUC) is good. The out-of-fold predictions were made by exactly the
    registered fold models on patients each had not trained on, so the cut is chosen on out-of-sample
    probabilities at no cost in data, where these models separate the classes (max sensitivity + specificity,
    the balanced choice that the class-balanced training loss aims at). The price: the cut is noisy on ~100
    patients and its out-of-fold sensitivity/specificity are optimistic; the hold-out, when there is one, is
    scored at this threshold and gives the honest figures. With one class, or J <= 0 (no better than chance),
    there is no meaningful cut, so 0.5 is kept and said.
    """
    import numpy as np

    from trainers.metrics import threshold_metrics, youden_threshold

    y = np.asarray([int(r["label"]) for r in oof])
    p = np.asarray([float(r["prob"]) for r in oof])
    if len(np.unique(y)) < 2:
        return 0.5, "0.5 (the out-of-fold table has a single class)"
    cut = youden_threshold(y, p)
    m = threshold_metrics(y, p, cut)
    j = m["recall"] + m["specificity"] - 1
    if j <= 0:
        return 0.5, "0.5 (Youden's J is not positive on the out-of-fold predictions)"
    return cut, f"youden_oof (J {j:.3f} on {len(y)} out-of-fold patients)"


def beats_chance(corrected_flag: Any, corrected_ci: Any, holdout_ci: Any) -> str:
    """ "true" when every interval there is lies above 0.5, "false" when one includes 0.5 (or lies below it),
    "unknown" without any. The corrected estimate's own verdict (`corrected.beats_chance`) wins over its
    interval; a hold-out CI that includes 0.5 makes it false whatever the corrected estimate says."""
    verdicts = []
    if isinstance(corrected_flag, bool):
        verdicts.append(corrected_flag)
    elif isinstance(corrected_ci, list | tuple) and len(corrected_ci) == 2 and _finite(*corrected_ci):
        verdicts.append(corrected_ci[0] > 0.5)
    if isinstance(holdout_ci, list | tuple) and len(holdout_ci) == 2 and _finite(*holdout_ci):
        verdicts.append(holdout_ci[0] > 0.5)
    if not verdicts:
        return "unknown"
    return "true" if all(verdicts) else "false"


def kind_estimate(board: Any, kind: str) -> tuple[float | None, list[float] | None]:
    """A kind's corrected AUC and interval (the deep ensemble, radiomics): the whole selection's when the search
    chose that kind (that is what registering it estimates), else the kind's own (None, None without one)."""
    candidates = getattr(board, "candidates", None) or {}
    entry = (candidates.get("kinds") or {}).get(kind)
    if not entry:
        return None, None
    if candidates.get("registered") == kind:
        entry = candidates["selection"]
    return entry["corrected_auc"], entry["corrected_auc_ci"]


def estimate_tags(
    board: Any, trial: int, held: dict[str, Any] | None, kind: str = "single"
) -> tuple[dict[str, str], list[str]]:
    """(tags, notes): corrected_auc with its interval (only when `trial` is the leaderboard's winner: the
    corrected estimate is of the search's selected model; for another `kind`, `kind_estimate`),
    beats_chance, and `estimate`, the kind of score the promotion gate compares: "holdout" when the hold-out
    gave an AUC, else "corrected_cv", else "cv"."""
    tags: dict[str, str] = {}
    notes: list[str] = []
    corrected_ci, flag = None, None
    if kind != "single":
        value, corrected_ci = kind_estimate(board, kind)
        if value is not None and corrected_ci:
            tags.update(
                corrected_auc=f"{value:.4f}",
                corrected_auc_ci_low=f"{corrected_ci[0]:.4f}",
                corrected_auc_ci_high=f"{corrected_ci[1]:.4f}",
            )
    elif board is not None and board.corrected_auc is not None:
        winner = board.rows[0].trial if board.rows else None
        if winner == trial:
            corrected_ci, flag = board.corrected_auc_ci, (board.corrected or {}).get("beats_chance")
            tags["corrected_auc"] = f"{board.corrected_auc:.4f}"
            if isinstance(corrected_ci, list | tuple) and len(corrected_ci) == 2:
                tags.update(
                    corrected_auc_ci_low=f"{corrected_ci[0]:.4f}",
                    corrected_auc_ci_high=f"{corrected_ci[1]:.4f}",
                )
        else:
            notes.append(
                f"the corrected estimate is of the search's winner, trial {winner}, not of trial {trial}: "
                "not recorded on this version"
            )
    holdout_ci = [held["ci_low"], held["ci_high"]] if held else None
    tags["beats_chance"] = beats_chance(flag, corrected_ci, holdout_ci)
    if held and _finite(held.get("auc")):
        tags["estimate"] = "holdout"
    else:
        tags["estimate"] = "corrected_cv" if "corrected_auc" in tags else "cv"
    return tags, notes


def chance_note(tags: dict[str, str]) -> str | None:
    """The plain sentence for a version not shown to beat chance, naming each interval that says so (None when
    the version is not tagged beats_chance=false)."""
    if tags.get("beats_chance") != "false":
        return None
    said = []
    for key, words in (("corrected_auc", "corrected AUC"), ("holdout_auc", "hold-out AUC")):
        low, high = tags.get(f"{key}_ci_low"), tags.get(f"{key}_ci_high")
        if low is None or high is None or not float(low) <= 0.5:
            continue
        where = "lies below 0.5" if float(high) < 0.5 else "includes 0.5"
        said.append(f"{words} {tags[key]} [{low}, {high}] {where}")
    why = "; ".join(said) or "tagged so by the search"
    return (
        f"the search could not show that this model beats chance ({why}): it is registered for inspection "
        "only, tagged beats_chance=false, and `stagesearch promote` refuses to make it @champion without "
        "--force"
    )
