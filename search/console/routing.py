"""What a command shows on the terminal: our own lines (and a live table of running trials:
`search.console.live`), while the libraries' logging (Ray, MLflow, Optuna, alembic, warnings, ...) goes to a
log file in the study folder.

Why: a search runs for hours, and the lines that matter (the status, failed trials with their reason, warnings
in our words) were buried under the libraries' INFO lines, a repeated `UserWarning` and progress bars. Nothing
is thrown away: every line the terminal shows is also written to the log file, beside the libraries' records,
so the file tells the whole story. `--verbose` shows the libraries' records on the terminal too; `--quiet`
shows only warnings, errors (failed trials among them) and the final summary. A library's ERROR record still
reaches the terminal as one line naming the log file, and a crash prints its traceback as always.

The session is a context manager that restores everything it changed (logger handlers, `sys.stdout`/`sys.stderr`,
warnings capture, MLflow's event stream), so an in-process caller (a test, a notebook) is left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import logging.handlers
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

QUIET, NORMAL, VERBOSE = "quiet", "normal", "verbose"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Our terminal lines in the log file come from these loggers (one per stream).
OUT_LOGGER, ERR_LOGGER = "stagesearch.stdout", "stagesearch.stderr"
#: Lines `--quiet` still shows before the summary: warnings and errors in our words, failed and interrupted trials.
ALERT = re.compile(r"\s*(warning|error|interrupted|trial \d+ failed)\b", re.IGNORECASE)
#: Tune logs a failed trial's traceback at ERROR ("Trial task failed for trial ..."); the search prints that trial
#: and its reason itself (search.tune.progress), so that record stays in the log file.
REPORTED_BY_US = re.compile(r"Trial task failed for trial ")

_ACTIVE: ConsoleSession | None = None


def add_console_flags(parser: argparse.ArgumentParser) -> None:
    """--verbose / --quiet (dest `verbosity`: "verbose", "quiet", or None for neither)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--verbose",
        "-v",
        dest="verbosity",
        action="store_const",
        const=VERBOSE,
        default=None,
        help="also show the libraries' log records (Ray, MLflow, Optuna, warnings) on the terminal; "
        "they always go to logs/<command>.log in the study folder",
    )
    group.add_argument(
        "--quiet",
        "-q",
        dest="verbosity",
        action="store_const",
        const=QUIET,
        help="show only warnings, errors (failed trials among them) and the final summary",
    )


def log_file(study_root: Path, command: str = "search") -> Path:
    """`<study folder>/logs/<command>.log`."""
    return Path(study_root) / "logs" / f"{command}.log"


def active() -> ConsoleSession | None:
    """The console session of this process, if one is open."""
    return _ACTIVE


def reroute() -> None:
    """Move the console handlers of libraries imported since the session attached its log file (no-op without
    a session)."""
    if _ACTIVE is not None:
        _ACTIVE.route()


@contextlib.contextmanager
def quiet_console(verbosity: str | None, study_dir: Path | None, command: str) -> Iterator[ConsoleSession]:
    """A console session for a command on an existing study (e.g. `stagesearch register`): its log goes to
    `<study>/logs/<command>.log`; without a study folder nothing is written (the records are dropped)."""
    with ConsoleSession(verbosity) as session:
        if study_dir is not None and Path(study_dir).is_dir() and session.path is None:
            session.attach(log_file(study_dir, command), preload=("mlflow",))
        yield session


class ConsoleSession:
    """One command's console: third-party logging to the log file, our lines to the terminal and the log file.

    Until `attach` names the log file (known only once the flags are checked and the study folder exists),
    records are held in memory; a command that stops before (a validation error) writes no file.
    """

    def __init__(self, verbosity: str | None = NORMAL) -> None:
        self.verbosity = verbosity or NORMAL
        self.path: Path | None = None
        self.summary_open = verbosity != QUIET
        self.live: Any = None  # a LiveTrials while the table of running trials is shown
        self._held = logging.handlers.MemoryHandler(capacity=10**6, flushLevel=logging.CRITICAL + 1)
        self._file: logging.Handler | None = None
        self._terminal = _TerminalHandler(self)
        self._saved: dict[str, tuple[list, bool]] = {}  # logger -> (handlers, propagate) before routing
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> ConsoleSession:
        global _ACTIVE
        if _ACTIVE is not None:  # a command run from within another (register at the end of a search)
            return _ACTIVE
        _ACTIVE = self
        root = logging.getLogger()
        for handler in (self._held, self._terminal):
            root.addHandler(handler)
            self._undo.append(lambda h=handler: root.removeHandler(h))
        for name in (OUT_LOGGER, ERR_LOGGER):
            ours = logging.getLogger(name)
            before = ours.level, ours.propagate
            ours.setLevel(logging.INFO)
            ours.propagate = False  # into the log file only (the tee writes the terminal itself)
            ours.addHandler(self._held)
            self._undo.append(
                lambda lg=ours, was=before: (
                    lg.removeHandler(self._held),
                    lg.setLevel(was[0]),
                    setattr(lg, "propagate", was[1]),
                )
            )
        self._capture_warnings()
        self.stdout, self.stderr = _Tee(sys.stdout, self, OUT_LOGGER), _Tee(sys.stderr, self, ERR_LOGGER)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.route()
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        global _ACTIVE
        if _ACTIVE is not self:
            return
        if isinstance(exc, Exception):
            self.crashed(exc)
        self.close()
        _ACTIVE = None

    def attach(self, path: Path, preload: Iterable[str] = ()) -> Path:
        """Write the log to `path` (appended: a resumed study keeps one log), with what was held so far.

        `preload`: libraries that install their own console handler when first imported (Ray, MLflow): imported
        here so that handler is moved to the log file before they log anything."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = _LogFile(path, self)
        self._file.setFormatter(logging.Formatter(LOG_FORMAT))
        self._held.setTarget(self._file)
        self._held.flush()
        for name in ("", OUT_LOGGER, ERR_LOGGER):
            logger = logging.getLogger(name or None)
            logger.removeHandler(self._held)
            logger.addHandler(self._file)
            self._undo.append(lambda lg=logger: lg.removeHandler(self._file))
        for module in preload:
            importlib.import_module(module)
        self._quiet_mlflow_events()
        self.route()
        return path

    def route(self) -> None:
        """Every library logger that prints by itself (its own handlers, or no propagation) now propagates to
        the root logger, whose handlers are the log file and the terminal filter."""
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if not isinstance(logger, logging.Logger) or name.startswith("stagesearch"):
                continue
            if logger.handlers or not logger.propagate:
                self._saved.setdefault(name, (list(logger.handlers), logger.propagate))
                logger.handlers = []
                logger.propagate = True

    def open_summary(self) -> None:
        """From here on `--quiet` shows everything too: the final summary."""
        self.summary_open = True

    def shows(self, text: str) -> bool:
        """Whether a line starting with `text` goes to the terminal (all but `--quiet`'s progress lines)."""
        return self.summary_open or bool(ALERT.match(text))

    def crashed(self, exc: Exception) -> None:
        """A crash: its traceback into the log file, and a line naming the file (Python prints the traceback)."""
        logging.getLogger(ERR_LOGGER).error("crashed", exc_info=exc)
        where = f"; the log of this run: {self.path}" if self.path else ""
        self.stderr.show(f"error: crashed with {type(exc).__name__}: {exc}{where}\n")

    def close(self) -> None:
        """Restore the loggers, streams, warnings capture and MLflow's event stream; close the log file."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        for stream in (self.stdout, self.stderr):
            stream.flush_log()
        sys.stdout, sys.stderr = self.stdout.terminal, self.stderr.terminal
        for name, (handlers, propagate) in self._saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        for undo in reversed(self._undo):
            undo()
        self._held.close()
        if self._file is not None:
            self._file.close()

    def _capture_warnings(self) -> None:
        """Python warnings become records of the `py.warnings` logger (so: the log file), once per place."""
        was = logging._warnings_showwarning is not None  # type: ignore[attr-defined]
        logging.captureWarnings(True)
        if not was:
            self._undo.append(lambda: logging.captureWarnings(False))

    def _quiet_mlflow_events(self) -> None:
        """MLflow prints some events ("Successfully registered model ...", "Created version ...") straight to
        stderr through its own stream, past logging (and its own code turns that stream back on after it has
        been disabled): its writes become records of the `mlflow.events` logger. Our own lines say the same.
        Left alone with --verbose."""
        if self.verbosity == VERBOSE or "mlflow" not in sys.modules:
            return
        from search.adapters import route_mlflow_events

        lines = _LogLines(logging.getLogger("mlflow.events"))
        undo = route_mlflow_events(lines.write)
        if undo is not None:
            self._undo.append(undo)


class _LogLines:
    """A text stream whose complete lines become INFO records of a logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.pending = ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.info(line.rstrip("\r"))
        return len(text)

    def close(self) -> None:
        if self.pending.strip():
            self.logger.info(self.pending)
        self.pending = ""


class _LogFile(logging.FileHandler):
    """The log file. When it cannot be written (a full disk), one line says so on the real terminal and the
    file takes no more records: logging's own error report would go to sys.stderr, which writes to this
    file again (a recursion that ended the process)."""

    def __init__(self, path: Path, session: ConsoleSession) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.session = session
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.broken:
            return
        self.broken = True
        error = sys.exc_info()[1]
        terminal = getattr(self.session.stderr, "terminal", sys.__stderr__)
        with contextlib.suppress(Exception):
            terminal.write(
                f"warning: the log file {self.baseFilename} cannot be written ({error}); its records are lost from here on\n"
            )
            terminal.flush()


class _TerminalHandler(logging.Handler):
    """The libraries' records on the terminal: all of them with --verbose; else only ERROR and above, as one
    line naming the log file (failed trials, which Tune logs at ERROR, the search reports itself)."""

    def __init__(self, session: ConsoleSession) -> None:
        super().__init__(logging.INFO if session.verbosity == VERBOSE else logging.ERROR)
        self.session = session
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        session = self.session
        try:
            if session.verbosity == VERBOSE:
                text = self.format(record)
            elif record.name.startswith("ray.tune") and REPORTED_BY_US.match(record.getMessage()):
                return
            else:
                first = (record.getMessage().strip().splitlines() or [""])[0]
                where = f" (the full record is in {session.path})" if session.path else ""
                text = f"error: {record.name}: {first}{where}"
            session.stderr.show(text + "\n")
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


class _Tee:
    """sys.stdout or sys.stderr during a session: each line to the terminal (unless --quiet holds it back; above
    the live table while one is shown) and to the log file."""

    def __init__(self, terminal: TextIO, session: ConsoleSession, logger: str) -> None:
        self.terminal = terminal
        self.session = session
        self._log = _LogLines(logging.getLogger(logger))
        self._at_line_start = True
        self._passing = True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._at_line_start and text:
            self._passing = self.session.shows(text)
        if self._passing:
            self.show(text)
        if text:
            self._at_line_start = text.endswith("\n")
        return len(text)

    def show(self, text: str) -> None:
        """To the terminal only (or above the live table)."""
        live = self.session.live
        if live is not None:
            live.write(text)
        else:
            self.terminal.write(text)
            self.terminal.flush()

    def flush(self) -> None:
        self.terminal.flush()

    def flush_log(self) -> None:
        self._log.close()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, buffer, ... of the real stream
        return getattr(self.terminal, name)
