"""What a search registered against its best single deep trial, on the same patients no trial saw, paired.

A search may register a deep ensemble or a radiomics model instead of its best single trial when the corrected
estimate says it is better (docs/search.md, "The best model of any kind"). Whether that choice pays is a
question for patients outside the study: this bench registers the study's best single deep trial as one more
version of the study's registered model (`stagesearch register --kind single`: its kept fold models, no
training; the version is tagged `bench=paired`), then puts back what registering changes (the @challenger
alias, `winner.json`, `model_card.md`, `explain/`), predicts an independent phantom (by default 1,000 patients of seed 12, as
`bench.confirm` scores) through both registered versions exactly as `stagesearch predict` does, and reports
AUC(registered) - AUC(best single) with a paired bootstrap interval (each resample scores both models on the
same patients). When the search registered that single trial itself the difference is 0 by construction.

    python -m bench.paired --runs confirm-work/default-2/runs
    python -m bench.paired --runs confirm-work/default-0/runs --patients 1000 --phantom-seed 12
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._common import describe_machine, table, write_result

SHOWN = ("study", "registered", "single", "auc_registered", "auc_single", "difference", "ci")


def build_parser() -> argparse.ArgumentParser:
    """Flags: the finished search's runs folder, the independent phantom, where results go."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.paired",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=Path, required=True, help="runs folder of a finished search (one study)")
    ap.add_argument("--patients", type=int, default=1000, help="independent phantom's patients [1000]")
    ap.add_argument("--phantom-seed", type=int, default=12, help="its seed [12]")
    ap.add_argument("--matrix", type=int, default=None, help="its in-plane matrix (default: the phantom's)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples [2000]")
    ap.add_argument("--out", default=None, help="results folder (default: bench/results/<machine>)")
    return ap


#: What `stagesearch register` writes into a study folder: kept aside and put back around the bench's version.
WRITTEN = ("winner.json", "model_card.md", "explain")


@contextmanager
def put_back(folder: Path) -> Iterator[None]:
    """`folder`'s registration outputs (`WRITTEN`) as they were before the block, afterwards."""
    with tempfile.TemporaryDirectory(prefix="paired-") as keep:
        kept = [name for name in WRITTEN if (folder / name).exists()]
        for name in kept:
            (shutil.copytree if (folder / name).is_dir() else shutil.copy2)(folder / name, Path(keep) / name)
        try:
            yield
        finally:
            for name in WRITTEN:
                target = folder / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
                if name in kept:
                    (shutil.copytree if (Path(keep) / name).is_dir() else shutil.copy2)(
                        Path(keep) / name, target
                    )


def register_single(runs: Path, study: str, chosen: dict[str, Any]) -> dict[str, Any]:
    """Register the study's best single deep trial as a new version tagged `bench=paired`, the study's own
    @challenger and files put back; that version's winner.json."""
    import mlflow

    from search.commands.register import main as register
    from search.registry.gate import CHALLENGER
    from search.study import resolve
    from search.tracking.tracker import tracking_uri

    with put_back(runs / study):
        if register(["--runs-dir", str(runs), "--study", study, "--kind", "single", "--quiet"]) != 0:
            raise SystemExit(f"{study}: registering its best single trial failed")
        single = json.loads((runs / study / "winner.json").read_text())
    name = chosen["model_name"]
    with tracking_uri(resolve(runs, study).tracking_url()):
        client = mlflow.MlflowClient()
        client.set_model_version_tag(name, str(single["model_version"]), "bench", "paired")
        client.set_registered_model_alias(name, CHALLENGER, str(chosen["model_version"]))
    return single


def predictions(runs: Path, study: str, model_uri: str, rows: list[dict[str, str]]) -> dict[str, float]:
    """Patient id -> P(T2) of the registered version `model_uri` of the study in `runs`."""
    import mlflow

    from bench.generalise import predict_in_chunks
    from search.study import resolve
    from search.tracking.tracker import tracking_uri

    with tracking_uri(resolve(runs, study).tracking_url()):
        out = predict_in_chunks(mlflow.pyfunc.load_model(model_uri), rows)
    return dict(zip(out["patient_id"], out["p_t2"].astype(float), strict=True))


def compare(runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both versions' AUC on the independent phantom and their paired difference."""
    from bench.confirm import registered, study_of
    from bench.generalise import independent_cohort
    from trainers.metrics import auc, bootstrap_auc_difference

    study = study_of(runs)
    chosen = registered(runs / study)
    rows, oracle, oracle_auc = independent_cohort(
        argparse.Namespace(patients=args.patients, seed=args.phantom_seed, matrix=args.matrix)
    )
    labels = [int(r["label"]) for r in oracle]
    single = register_single(runs, study, chosen)
    probs = {}
    for what, winner in (("registered", chosen), ("single", single)):
        print(f"predicting {len(rows)} patients through the {what} model ({winner['model_uri']})", flush=True)
        by_id = predictions(runs, study, winner["model_uri"], rows)
        probs[what] = [by_id[r["patient_id"]] for r in oracle]
    difference, lo, hi = bootstrap_auc_difference(
        labels, probs["registered"], probs["single"], args.resamples
    )
    return {
        "study": study,
        "registered": f"{chosen['kind']} (trial {chosen['trial']}, {chosen['backbone']})",
        "registered_kind": chosen["kind"],
        "single": f"trial {single['trial']} ({single['backbone']}, cv_auc {single['cv_auc']:.3f})",
        "single_trial": single["trial"],
        "auc_registered": auc(labels, probs["registered"]),
        "auc_single": auc(labels, probs["single"]),
        "difference": difference,
        "difference_ci": [lo, hi],
        "patients": args.patients,
        "phantom_seed": args.phantom_seed,
        "oracle_auc": oracle_auc,
    }


def main(argv: list[str] | None = None) -> int:
    """Compare, print one row, write `paired-<study>.json` under the results folder."""
    from trainers.privacy import no_telemetry

    args = build_parser().parse_args(argv)
    no_telemetry()
    if not (args.runs.is_dir() and any(args.runs.glob("*/winner.json"))):
        print(
            f"error: {args.runs}: no finished, registered study there (no <study>/winner.json)",
            file=sys.stderr,
        )
        return 2
    result = {**compare(args.runs, args), "machine": describe_machine()}
    low, high = result["difference_ci"]
    print(table([{**{k: result.get(k) for k in SHOWN}, "ci": f"{low:.3f}..{high:.3f}"}], SHOWN))
    print(f"wrote {write_result('paired-' + result['study'], result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
