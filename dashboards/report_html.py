"""Small HTML pieces every report section uses: number formatting, a plain table, an embedded figure, the style.

The page is one file: figures are embedded as base64 PNGs (it opens anywhere, e.g. attached to an email) and
each figure's caption links its PNG and SVG files beside the page.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f2f2f2}figure{margin:1em 0 2em}img{max-width:100%}figcaption{font-size:13px;
color:#555}.big{font-size:1.2em}code{background:#f4f4f4;padding:1px 4px}"""


def fmt(v: Any, digits: int = 3) -> str:
    """A cell: floats rounded, booleans as yes/no, None as '-', everything else escaped."""
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "-"}[v]
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table of cells that are already HTML (see `fmt`)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def figure(path: Path, caption: str) -> str:
    """The PNG at `path` embedded in the page, with its caption (HTML) and links to the PNG and its SVG."""
    data = base64.b64encode(path.read_bytes()).decode()
    svg = path.with_suffix(".svg")
    links = f'<a href="{path.name}">{path.name}</a>' + (
        f', <a href="{svg.name}">{svg.name}</a>' if svg.exists() else ""
    )
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption} ({links})</figcaption></figure>"
    )
