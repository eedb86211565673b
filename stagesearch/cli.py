"""`stagesearch <command> [flags]`: each command is the `main(argv)` of one module, listed in COMMANDS.

The top of the import graph: it may import every layer; nothing imports it. A command's module is imported
only when that command runs, so `stagesearch --help` is quick and `stagesearch report` never loads Ray.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from trainers.privacy import no_telemetry


@dataclass(frozen=True)
class Command:
    """One subcommand: the module whose `main(argv) -> int` it runs, and a line for `stagesearch --help`."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "run": Command(
        "search.commands.run", "search backbones with Ray Tune + Optuna (TPE, ASHA), scored by CV AUC"
    ),
    "register": Command(
        "search.commands.register", "register a study's winner (fold-model ensemble) in MLflow"
    ),
    "sync-tracking": Command(
        "search.commands.sync_tracking", "send to MLflow what a search kept while its tracking failed"
    ),
    "promote": Command(
        "search.commands.promote", "list registered versions, or move the @champion alias, gated"
    ),
    "predict": Command("search.commands.predict", "P(T2) and stage for new scans from a registered model"),
    "report": Command("dashboards.report", "write a study's self-contained HTML report"),
    "dashboard": Command("dashboards.optuna_ui", "open optuna-dashboard on a study (127.0.0.1)"),
    "mlflow-ui": Command("dashboards.mlflow_ui", "open the MLflow UI on the tracking store (127.0.0.1)"),
    "check-manifest": Command("trainers.check_manifest", "validate a cohort manifest without training"),
}


def version() -> str:
    """The installed distribution's version (what `pip install` recorded), else "unknown" (run from a checkout
    without installing)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("stagesearch")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def usage() -> str:
    """The top-level help: every command and what it does."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: stagesearch <command> [flags]   (stagesearch <command> --help for its flags; --version)",
        "",
        "MRI T-staging model search: Ray Tune + Optuna over backbones, patient-grouped CV AUC, MLflow tracking.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for an unknown command)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"stagesearch {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    no_telemetry()
    command = COMMANDS.get(name)
    if command is None:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(command.module).main(rest) or 0)
