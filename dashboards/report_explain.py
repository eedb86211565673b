"""The report's "What the model sees" section: the registered model's input slices per stage and its saliency
maps for correct and wrong calls (drawn at registration by `search.models.explain`; this module only shows them
and imports no torch)."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

from dashboards.report_html import figure
from search.study import StudyPaths, read_json


def explain_section(paths: StudyPaths, out: Path) -> str:
    """`<h2>` section: the two figures (copied beside the report with their SVGs) and what they show."""
    head = "<h2>What the model sees</h2>"
    facts = read_json(paths.explain / "explain.json") if (paths.explain / "explain.json").exists() else {}
    if not facts:
        return f"{head}<p>No figures yet: they are drawn when a model is registered.</p>"
    for f in paths.explain.glob("*.*"):
        if f.suffix in (".png", ".svg"):
            shutil.copyfile(f, out / f"explain-{f.name}")
    parts = [head]
    size = facts.get("resolution")
    parts.append(
        figure(
            out / "explain-inputs.png",
            f"The registered model's input: each patient's ROI slice with the most tumour, at the trained "
            f"resolution ({size} px), the tumour mask outlined in red, with its out-of-fold P(T2) and the call "
            f"at the registered threshold {facts['threshold']:.3f}.",
        )
    )
    if (out / "explain-saliency.png").exists():
        shares = [p for p in facts["patients"] if p.get("lesion_share") is not None]
        mean = (
            f" Over these patients {sum(p['lesion_share'] for p in shares) / len(shares):.0%} of the map's mass "
            f"lies inside the mask, which covers {sum(p['uniform_share'] for p in shares) / len(shares):.0%} of "
            "the slice."
            if shares
            else ""
        )
        parts.append(
            figure(
                out / "explain-saliency.png",
                f"Where the model looks: {html.escape(facts['method'])}, of the fold model that did not train "
                "on the patient, for the most confident correct and wrong calls of each stage (cyan: tumour mask)."
                + mean,
            )
        )
    else:
        parts.append(f"<p>{html.escape(facts.get('no_saliency') or 'No saliency map.')}.</p>")
    return "".join(parts)
