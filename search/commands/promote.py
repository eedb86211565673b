"""`stagesearch promote --best`: list the registered staging models and move the `champion` alias, gated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from search.registry.table import format_table  # noqa: E402
from search.registry.versions import (  # noqa: E402
    DEFAULT_ALIAS,
    DEFAULT_MODEL_NAME,
    PromotionRefused,
    RegistryError,
    best_version,
    command,
    list_versions,
    next_step,
    promote,
)
from search.study import add_location_flags, from_args, sqlite_path, where_flags  # noqa: E402
from trainers.cli import HelpFormatter  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Flags of `stagesearch promote`, with defaults shown in --help."""
    p = argparse.ArgumentParser(
        prog="stagesearch promote",
        description=(
            "List the registered versions of the staging model, or point an alias (default: champion) at one. "
            "The gate compares like with like: only versions made on the same cohort (cohort_hash) and scored "
            "on the same kind of estimate (holdout AUC, corrected AUC or cv_auc); it refuses a version from "
            "another cohort or kind, one that scores lower than the current holder, and one not shown to beat "
            "chance (beats_chance=false: its corrected interval or hold-out CI includes 0.5). --force overrides "
            "it; every promotion is recorded on the version (promoted_<alias>_at/_reason/_previous/_forced tags "
            "and a line in its description)."
        ),
        formatter_class=HelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--list", action="store_true", help="table of every version with its aliases and scores"
    )
    what.add_argument("--version", type=int, metavar="N", help="promote version N")
    what.add_argument(
        "--best",
        action="store_true",
        help="promote the best version comparable with the current holder (same cohort and kind of estimate; "
        "with no holder, those of the newest version's cohort)",
    )
    p.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to set (load it as models:/NAME@ALIAS)")
    p.add_argument(
        "--force",
        action="store_true",
        help="promote even if the gate refuses (lower score, another cohort or kind of estimate, "
        "not shown to beat chance)",
    )
    p.add_argument(
        "--reason", default="", help="why, recorded on the version (default: the score comparison)"
    )
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name")
    add_location_flags(p, study_required=False)
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _missing_sqlite(uri: str) -> Path | None:
    """The database file of a sqlite URI when it does not exist (so listing never creates an empty store)."""
    path = sqlite_path(uri)
    return path if path is not None and not path.exists() else None


def _list(client: MlflowClient, name: str, alias: str, where: str) -> int:
    rows = list_versions(client, name)
    print(f"{name}: {len(rows)} version(s)")
    print(format_table(rows))
    try:
        print(next_step(client, name, alias, where))
    except RegistryError as exc:  # nothing scored: no hint
        print(f"--best: {exc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `stagesearch promote`; returns the exit code (2 for problems the user can fix)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list and (args.force or args.reason):
        parser.error("--force and --reason apply to --version or --best, not --list")
    where = from_args(args)
    uri = where.tracking_uri  # public: a password shows as ***
    missing = _missing_sqlite(uri)
    if missing is not None:
        return _fail(
            f"no MLflow store at {missing}: run `stagesearch run` and register a model first, or pass "
            "--runs-dir/--tracking-uri"
        )

    client = MlflowClient(tracking_uri=where.tracking_url(), registry_uri=where.tracking_url())
    try:
        if args.list:
            return _list(client, args.model_name, args.alias, where_flags(where))
        version = (
            int(best_version(client, args.model_name, args.alias).version) if args.best else args.version
        )
        result = promote(
            client, args.model_name, version, alias=args.alias, force=args.force, reason=args.reason
        )
    except PromotionRefused as exc:
        anyway = command(
            "promote",
            where_flags(where),
            f"--version {exc.version} --force",
            name=args.model_name,
            alias=args.alias,
        )
        return _fail(f"{exc}: {anyway}")
    except RegistryError as exc:
        return _fail(str(exc))
    except MlflowException as exc:
        return _fail(f"MLflow registry at {uri}: {exc.message}")
    print(result.message)
    if result.changed:
        model = (
            "" if result.uri == f"models:/{DEFAULT_MODEL_NAME}@{DEFAULT_ALIAS}" else f" --model {result.uri}"
        )
        print(
            f"load it with: mlflow.pyfunc.load_model('{result.uri}'); predict with: "
            f"{command('predict', where_flags(where), '--image SCAN' + model)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
