"""How a study's candidates read: each kind's name and chosen candidate, the summary's lines, the parent run's
metrics, and deep learning against radiomics in words. Reads `leaderboard.json`'s `candidates` only (no
trainers), so the report imports it; `search.stats.study_candidates` computes them."""

from __future__ import annotations

from typing import Any

from trainers.feature_sets import feature_words

#: kinds of candidate, simplest first: of two within `TIE` of each other the earlier one wins
KINDS = ("radiomics", "single", "ensemble")
TIE = 0.01
NAMES = {"radiomics": "radiomics", "single": "single trial", "ensemble": "deep ensemble"}
CLASSIFIERS = {
    "logistic": "logistic regression",
    "random_forest": "random forest",
    "hist_gb": "gradient boosting",
}


def describe_classifier(config: dict[str, Any]) -> str:
    """A radiomics configuration (`spaces.radiomics_space`) in words: `random forest (n_estimators 200, max_depth 4)`."""
    rest = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in config.items()
        if k not in ("classifier", "features")
    )
    return f"{CLASSIFIERS.get(config.get('classifier'), config.get('classifier'))} ({rest})"


def candidate_lines(candidates: dict[str, Any] | None) -> list[str]:
    """The summary's lines on the candidates: each kind's corrected estimate, the whole selection's, the
    registered kind, deep against radiomics."""
    if not candidates or candidates.get("error") or not candidates.get("kinds"):
        why = (candidates or {}).get("error")
        return [f"candidates: not compared ({why})"] if why else []
    lines = ["candidates by kind (corrected estimate, 95% CI; each chosen inside every bootstrap resample):"]
    for kind in KINDS:
        entry = candidates["kinds"].get(kind)
        if entry:
            low, high = entry["corrected_auc_ci"]
            lines.append(
                f"  {NAMES[kind]:<14} {entry['corrected_auc']:.3f} ({low:.3f}-{high:.3f})  "
                f"{describe(kind, entry)}, apparent AUC {entry['apparent_auc']:.3f}"
            )
    whole = candidates["selection"]
    low, high = whole["corrected_auc_ci"]
    chosen = candidates["registered"]
    lines.append(
        f"  whole selection {whole['corrected_auc']:.3f} ({low:.3f}-{high:.3f}), the estimate of what is "
        f"registered; best kind: {NAMES[chosen]} (a simpler kind wins within 0.01) <- quote this"
    )
    if candidates.get("difference"):
        lines.append(f"  {candidates['difference']['words']}")
    return lines


def describe(kind: str, entry: dict[str, Any]) -> str:
    """What a kind's chosen candidate is, in a few words."""
    if kind == "ensemble":
        members = entry["members"]
        shown = ", ".join(f"{m['trial']}x{m['weight']}" for m in members[:6])
        more = f", {len(members) - 6} more" if len(members) > 6 else ""
        return f"mean of {len(members)} trials ({shown}{more})"
    if kind == "radiomics" and entry.get("config"):
        return f"trial {entry['candidate']}: {describe_classifier(entry['config'])} on {feature_words(entry['config'])}"
    if kind == "radiomics":
        return "logistic regression on hand-made features (the baseline)"
    return f"trial {entry['candidate']}"


def candidate_metrics(candidates: dict[str, Any] | None) -> dict[str, float]:
    """The parent MLflow run's metrics of the candidates: each kind's corrected AUC and the whole selection's."""
    if not candidates or not candidates.get("kinds"):
        return {}
    out = {f"corrected_auc_{kind}": entry["corrected_auc"] for kind, entry in candidates["kinds"].items()}
    low, high = candidates["selection"]["corrected_auc_ci"]
    out.update(
        corrected_auc_selection=candidates["selection"]["corrected_auc"],
        corrected_auc_selection_ci_low=low,
        corrected_auc_selection_ci_high=high,
    )
    if candidates.get("difference"):
        out["deep_minus_radiomics"] = candidates["difference"]["mean"]
    return out


def difference_words(difference: dict[str, Any] | None) -> str:
    """The paired difference as a clinician reads it: "radiomics is better by 0.21 (95% CI 0.05 to 0.37)",
    or "no difference shown (deep - radiomics -0.02, 95% CI -0.12 to 0.08)"."""
    if not difference:
        return ""
    mean, (low, high) = difference["mean"], difference["ci"]
    if low > 0:
        return f"deep learning is better than radiomics by {mean:.2f} (95% CI {low:.2f} to {high:.2f})"
    if high < 0:
        return f"radiomics is better than deep learning by {-mean:.2f} (95% CI {-high:.2f} to {-low:.2f})"
    return f"no difference shown between deep learning and radiomics (deep - radiomics {mean:+.2f}, 95% CI {low:+.2f} to {high:+.2f})"


def radiomics_rows(candidates: dict[str, Any] | None) -> str:
    """The best radiomics trial of each classifier as more lines of the leaderboard's table ("" without)."""
    lines = []
    for fam in (candidates or {}).get("families") or []:
        name = CLASSIFIERS.get(fam["family"], fam["family"])
        config = describe_classifier(fam["config"]).split(" (", 1)[-1].rstrip(")")
        lines.append(
            f"\n{'Radiomics':<11} {name:<22} {fam['trial']:>5} {fam['cv_auc']:>6.3f}  "
            f"{'':>27}  {config}; {feature_words(fam['config'])}; {fam['trials']} trials"
        )
    return "".join(lines)
