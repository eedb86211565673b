"""What a search registered against its best single deep trial, on the same patients no trial saw, paired.

A search may register a deep ensemble or a radiomics model instead of its best single trial when the corrected
estimate says it is better (docs/search.md, "The best model of any kind"). Whether that choice pays is a
question for patients outside the study: this bench builds the study's best single deep trial in memory as
`stagesearch register --kind single` would register it (its kept fold models, no training; nothing is written to
the study folder or the registry), predicts an independent phantom (by default 1,000 patients of seed 12, as
`bench.confirm` scores) through it and through the registered version, both exactly as `stagesearch predict`
does (the registered model's own `predict`), and reports
AUC(registered) - AUC(best single) with a paired bootstrap interval (each resample scores both models on the
same patients). When the search registered that single trial itself the difference is 0 by construction.

    python -m bench.paired --runs confirm-work/default-2/runs
    python -m bench.paired --runs confirm-work/default-0/runs --patients 1000 --phantom-seed 12
"""

from __future__ import annotations

import argparse
import sys
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


class InMemoryModel:
    """A staging model built in this process, predicting a table of scans as the registered pyfunc does (the
    same `StagingModel.predict`: the scans read, preprocessed and averaged per patient by the same code)."""

    def __init__(self, ensemble: Any) -> None:
        from search.models.staging_model import StagingModel

        self.model = StagingModel()
        self.model.ensemble = ensemble

    def predict(self, table: Any) -> Any:
        return self.model.predict(None, table)


def best_single(runs: Path, study: str) -> tuple[dict[str, Any], InMemoryModel]:
    """The study's best single deep trial as `stagesearch register --kind single` would register it (its kept
    fold models, or trained again when the trial kept none), built in memory: nothing is written to the study
    folder or the registry. (its description, its model)"""
    from search.models.refit import refit_for
    from search.study import resolve

    said: list[str] = []  # refit's own lines speak of registering: kept for the why-retrained case only
    chosen = refit_for(resolve(runs, study), None, None, "single", log=said.append)
    print(
        f"best single deep trial: {said[-1].split(': ', 1)[-1] if said else chosen.trial.number}", flush=True
    )
    single = {
        "trial": chosen.trial.number,
        "backbone": chosen.backbone,
        "cv_auc": chosen.cv_auc,
        "model_uri": f"trial {chosen.trial.number} of study {study}, built in memory",
    }
    return single, InMemoryModel(chosen.ensemble)


def registered_model(runs: Path, study: str, model_uri: str) -> Any:
    """The registered version `model_uri` of the study in `runs`, loaded from its registry."""
    import mlflow

    from search.study import resolve
    from search.tracking.tracker import tracking_uri

    with tracking_uri(resolve(runs, study).tracking_url()):
        return mlflow.pyfunc.load_model(model_uri)


def predictions(model: Any, rows: list[dict[str, str]]) -> dict[str, float]:
    """Patient id -> P(T2) of `model` (a pyfunc model, or one built in memory)."""
    from bench.generalise import predict_in_chunks

    out = predict_in_chunks(model, rows)
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
    single, single_model = best_single(runs, study)
    models = {"registered": registered_model(runs, study, chosen["model_uri"]), "single": single_model}
    probs = {}
    for what, winner in (("registered", chosen), ("single", single)):
        print(f"predicting {len(rows)} patients through the {what} model ({winner['model_uri']})", flush=True)
        by_id = predictions(models[what], rows)
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
