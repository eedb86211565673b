"""Every measured figure the README and the documentation site quote is the one in its file under bench/results/.

A figure carries an HTML comment right after it, invisible on the page:

    AUC 0.784 (95% CI 0.720-0.848) <!-- bench AMD-EPYC/generalise.json: auc | _ | auc_ci_low | auc_ci_high -->

The comment names a results file (relative to bench/results/) and one JSON path per number, matched to the last
numbers of the text before it (since the line's start or the comment before it); `_` skips a number (the 95
here). A path's keys and list indices are separated by `/`; a suffix converts the stored value: `:%` a
fraction shown in percent, `:min` seconds shown in minutes, `:m` and `:s` seconds shown as `N min M s`. The
shown number must be the stored one rounded to the decimals shown. docs/architecture.md says the same for
contributors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
COMMENT = re.compile(r"<!--\s*bench\s+(?P<file>\S+?):\s*(?P<paths>.*?)\s*-->")
TOKEN = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
# The sections whose every table row quotes measurements: each row must carry at least one source.
SOURCED_TABLES = [(ROOT / "docs" / "search.md", "## How long it takes")]


def numbers_in(text: str) -> list[str]:
    """The numbers of a text as shown: not the digits inside a name (patch16_224, H200, bf16); a sign only where
    a word starts (the dash of 0.720-0.848 is a range, not a minus); a trailing x of 3.16x is a times sign."""
    found = []
    for m in TOKEN.finditer(text):
        token, before = m.group(), text[m.start() - 1] if m.start() else " "
        after = text[m.end() : m.end() + 2]
        if token[0] in "+-" and (before.isalnum() or before in "._"):
            token, before = token[1:], token[0]
        if before.isalnum() or before in "._":
            continue
        if after[:1].isalnum() or after[:1] == "_":
            if not (after[0] == "x" and not (after[1:2].isalnum() or after[1:2] == "_")):
                continue
        found.append(token)
    return found


def lookup(data: object, path: str) -> float:
    """The number at `path` (keys and indices separated by /) of a results file's JSON."""
    for key in path.split("/"):
        data = data[int(key)] if isinstance(data, list) else data[key]  # type: ignore[index]
    if not isinstance(data, int | float):
        raise TypeError(f"{path} is {data!r}, not a number")
    return float(data)


def shown_value(stored: float, unit: str) -> float:
    """What the page should show for a stored value, before rounding."""
    if unit == "%":
        return stored * 100
    if unit == "min":
        return stored / 60
    if unit == "m":
        return float(math.floor(stored / 60))
    if unit == "s":
        return stored - 60 * math.floor(stored / 60)
    if unit:
        raise ValueError(f"unknown unit :{unit}")
    return stored


def matches(text: str, stored: float, unit: str) -> bool:
    """`text` (a number as the page shows it) is `stored` rounded to the decimals shown."""
    shown = float(text.replace(",", ""))
    decimals = len(text.split(".")[1]) if "." in text else 0
    expected = shown_value(stored, unit)
    if unit == "m":
        return shown == expected
    return abs(shown - expected) <= 0.5 * 10**-decimals + 1e-9


def figures(page: Path) -> list[tuple[int, str, str, str]]:
    """(line number, shown number, results file, path) for every sourced number of a page."""
    found = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        start = 0
        for comment in COMMENT.finditer(line):
            before = re.sub(r"[*`]", "", line[start : comment.start()])
            start = comment.end()
            paths = [p.strip() for p in comment["paths"].split("|")]
            numbers = numbers_in(before)
            assert len(numbers) >= len(paths), (
                f"{page.name}:{number}: {len(paths)} path(s) but only {numbers} before the comment"
            )
            for shown, path in zip(numbers[-len(paths) :], paths, strict=True):
                if path != "_":
                    found.append((number, shown, comment["file"], path))
    return found


ALL = [(page, *figure) for page in PAGES for figure in figures(page)]


def test_pages_quote_sourced_figures() -> None:
    """The README and the pages that quote benchmarks have sources at all (the mechanism is in use)."""
    quoting = {page.name for page, *_ in ALL}
    assert {"README.md", "search.md", "PERFORMANCE.md"} <= quoting, quoting


@pytest.mark.parametrize(
    ("page", "line", "shown", "file", "path"), ALL, ids=lambda v: getattr(v, "name", None)
)
def test_figure_is_the_results_file_s(page: Path, line: int, shown: str, file: str, path: str) -> None:
    results = RESULTS / file
    assert results.is_file(), f"{page.name}:{line}: no results file {results.relative_to(ROOT)}"
    key, _, unit = path.partition(":")
    stored = lookup(json.loads(results.read_text()), key)
    assert matches(shown, stored, unit), (
        f"{page.name}:{line}: shows {shown}, but {file} {key} is {stored} (shown{':' + unit if unit else ''} "
        f"as {shown_value(stored, unit):.4g})"
    )


@pytest.mark.parametrize(("page", "heading"), SOURCED_TABLES, ids=lambda v: getattr(v, "name", v))
def test_every_row_of_a_figures_table_has_a_source(page: Path, heading: str) -> None:
    text = page.read_text()
    assert heading in text, f"{page.name} has no section {heading!r}"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| what |")]
    assert rows, f"no table under {heading!r}"
    unsourced = [r[:80] for r in rows if not COMMENT.search(r)]
    assert not unsourced, f"rows of {page.name} {heading!r} without a bench source: {unsourced}"


@pytest.mark.parametrize("name", ["efficiency.png", "simulate-report.png"])
def test_copied_figures_are_the_bench_s(name: str) -> None:
    """A bench's figure shown on the site is a copy inside docs/ (MkDocs serves only docs/): the same bytes."""
    copy, original = ROOT / "docs" / name, RESULTS / "AMD-EPYC" / name
    assert copy.read_bytes() == original.read_bytes(), f"docs/{name} differs from the bench's figure"


@pytest.mark.parametrize(
    ("shown", "stored", "unit", "ok"),
    [
        ("0.784", 0.78376, "", True),
        ("0.785", 0.78376, "", False),
        ("22", 22.34, "", True),
        ("1,598", 1598.49, "", True),
        ("+24", 0.2359, "%", True),
        ("-7", -0.065, "%", True),
        ("62", 3692.6, "min", True),
        ("55", 3301, "m", True),
        ("1", 3301, "s", True),
        ("2", 3301, "s", False),
    ],
)
def test_matching_rule(shown: str, stored: float, unit: str, ok: bool) -> None:
    assert matches(shown, stored, unit) is ok


def test_numbers_before_a_comment() -> None:
    line = "| vit_tiny_patch16_224 on H200 | AUC **0.784** (95% CI 0.720-0.848), -0.07 s, 1,598 img/s |"
    assert numbers_in(re.sub(r"[*`]", "", line)) == ["0.784", "95", "0.720", "0.848", "-0.07", "1,598"]
    assert numbers_in("3.16x the images, 170, 135 and +24 %") == ["3.16", "170", "135", "+24"]
