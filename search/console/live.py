"""The live table of running trials: redrawn in place on a terminal (rich `Live`) while what our code prints
goes above it, through the console session's streams (`search.console.routing`), so it also reaches the log
file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from search.console.routing import active


def interactive() -> bool:
    """Whether the terminal can redraw a live table (a TTY that is not TERM=dumb; rich's TTY_INTERACTIVE and
    TTY_COMPATIBLE override): else, e.g. in CI or a pipe, progress is printed as plain lines."""
    from rich.console import Console

    session = active()
    return bool(Console(file=session.stdout.terminal if session else sys.stdout).is_interactive)


def trials_table(columns: list[str], rows: list[list[str]], status: str) -> Any:
    """The status line, then a rich table with one row per running trial."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 1 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if not rows:
        table.add_row(*(["-"] + [""] * (len(columns) - 1)))
    return Group(Text(status), table)


class LiveTrials:
    """A renderable redrawn in place on the terminal (rich `Live`) while the search runs; what our code prints
    meanwhile is printed above it (through the session's streams, so it also reaches the log file)."""

    def __init__(self, render: Callable[[], Any], console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._session = active()
        if console is None:
            console = Console(file=self._session.stdout.terminal if self._session else sys.stdout)
        self.console = console
        self._pending = ""
        # Without a session, rich itself redirects sys.stdout/sys.stderr above the table.
        alone = self._session is None
        self._live = Live(
            get_renderable=render,
            console=console,
            refresh_per_second=2,
            transient=True,
            redirect_stdout=alone,
            redirect_stderr=alone,
        )

    def start(self) -> LiveTrials:
        self._live.start(refresh=True)
        if self._session is not None:
            self._session.live = self
        return self

    def write(self, text: str) -> None:
        """Print complete lines above the table (a partial line waits for its end)."""
        from rich.text import Text

        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self.console.print(Text.from_ansi(line))

    def refresh(self) -> None:
        self._live.refresh()

    def stop(self) -> None:
        """Remove the table (it shows only running trials) and give the terminal back to plain printing."""
        if self._session is not None and self._session.live is self:
            self._session.live = None
        if self._pending:
            self.write("\n")
        self._live.stop()
