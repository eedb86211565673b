"""`stagesearch register --study NAME`: turn a study's winner into a registered MLflow model
(`search.models.register`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from search.console.routing import add_console_flags, quiet_console  # noqa: E402
from search.models.register import RegisterError, register_study  # noqa: E402
from search.session.driver_lock import StudyBusyError, hold  # noqa: E402
from search.study import add_location_flags, from_args  # noqa: E402
from trainers.cli import HelpFormatter  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Flags: where the study is, which model name, which trial."""
    from search.registry.versions import DEFAULT_MODEL_NAME

    p = argparse.ArgumentParser(
        prog="stagesearch register",
        description="Register a study's winner in the MLflow Model Registry: the best trial (the ensemble of "
        "its fold models) or the deep ensemble of several trials, whichever the search chose, with its cv_auc, "
        "corrected estimate and held-out AUC (95%% CI) as tags.",
        formatter_class=HelpFormatter,
    )
    add_location_flags(p, study_required=True)
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name")
    p.add_argument("--trial", type=int, default=None, help="register this trial instead of the best one")
    p.add_argument(
        "--kind",
        choices=("single", "ensemble", "radiomics"),
        default=None,
        help="register the best single trial, the deep ensemble of the complete trials, or the radiomics model "
        "(leaderboard.json's candidates); default: the kind the search chose by its corrected estimate",
    )
    add_console_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors exit with code 2."""
    from trainers.manifest import ManifestError

    args = build_parser().parse_args(argv)
    locations = from_args(args)
    with quiet_console(args.verbosity, locations.study_dir, "register"):
        try:
            with hold(locations.paths, locations.storage, "register"):
                register_study(locations, args.model_name, args.trial, kind=args.kind)
        except (RegisterError, ManifestError, StudyBusyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
