"""Report tables leave the page as CSV and LaTeX with the same cells."""

import csv
from pathlib import Path

from dashboards.report_tables import export_table, latex_escape


def test_export_table_writes_csv_latex_and_html(tmp_path: Path) -> None:
    page = export_table(tmp_path, "cohort", ["site", "T1 & T2"], [["a_1", "50%"], ["<b>", "3"]])
    with (tmp_path / "cohort.csv").open() as f:
        assert list(csv.reader(f)) == [["site", "T1 & T2"], ["a_1", "50%"], ["<b>", "3"]]
    tex = (tmp_path / "cohort.tex").read_text()
    assert r"T1 \& T2" in tex and r"a\_1 & 50\% \\" in tex and tex.count(r"\\") == 3
    assert "<td>&lt;b&gt;</td>" in page and 'href="cohort.csv"' in page and 'href="cohort.tex"' in page


def test_latex_escape_leaves_plain_text() -> None:
    assert latex_escape("AUC 0.81 (0.70-0.90)") == "AUC 0.81 (0.70-0.90)"
    assert latex_escape("~^\\") == r"\textasciitilde{}\textasciicircum{}\textbackslash{}"
