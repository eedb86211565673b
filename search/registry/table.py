"""The registered versions as an aligned text table, one line per version (`stagesearch promote --list`)."""

from __future__ import annotations

from typing import Any

from search.registry.gate import CORRECTED, CV, HOLDOUT, beats_chance, estimate_kind, tag_float


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(tags: dict[str, str], metric: str) -> str:
    auc = tag_float(tags, metric)
    if auc is None:
        return "-"
    low, high = tag_float(tags, f"{metric}_ci_low"), tag_float(tags, f"{metric}_ci_high")
    return f"{auc:.3f}" + ("" if low is None or high is None else f" [{low:.3f}, {high:.3f}]")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The versions as an aligned text table, one line per version."""
    head = [
        "version",
        "aliases",
        "study",
        "trial",
        "backbone",
        "cv_auc",
        "corrected AUC [95%]",
        "holdout AUC [95% CI]",
        "estimate",
        "cohort",
        "beats chance",
        "threshold",
        "pretrained",
        "created (UTC)",
    ]
    body = []
    for r in rows:
        t = r["tags"]
        body.append(
            [
                f"v{r['version']}",
                ",".join(f"@{a}" for a in r["aliases"]) or "-",
                t.get("study", "-"),
                t.get("trial", "-"),
                t.get("backbone", "-"),
                _num(tag_float(t, CV)),
                _interval(t, CORRECTED),
                _interval(t, HOLDOUT),
                estimate_kind(t) or "-",
                t.get("cohort_hash", "-"),
                beats_chance(t),
                _num(tag_float(t, "threshold")),
                t.get("pretrained", "-"),
                (r["created"] or "-").replace("T", " ").removesuffix("Z"),
            ]
        )
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *body]
    )
