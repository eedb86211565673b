"""Report tables that also leave the page: each one written as CSV (for a spreadsheet) and LaTeX (for a paper)."""

from __future__ import annotations

import csv
import html
from pathlib import Path

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(head: list[str], rows: list[list[str]]) -> str:
    """A booktabs `tabular` of plain-text cells (needs `\\usepackage{booktabs}`)."""
    cols = "l" + "r" * (len(head) - 1)
    lines = [
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(map(latex_escape, head)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(str(c)) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def export_table(out: Path, stem: str, head: list[str], rows: list[list[str]]) -> str:
    """Write `<out>/<stem>.csv` and `<out>/<stem>.tex`; return the HTML table with links to both.

    Cells are plain text (escaped here for HTML and LaTeX), so the same rows serve all three formats.
    """
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows(rows)
    (out / f"{stem}.tex").write_text(latex_table(head, rows))
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    links = f'<p class="export">Table as <a href="{stem}.csv">CSV</a>, <a href="{stem}.tex">LaTeX</a>.</p>'
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{links}"
