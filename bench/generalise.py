"""How the registered winner does on patients from outside its study: an independent phantom, scored from the registry.

The best cv_auc of a search is optimistic (it picked the best of many trials on the same folds). This bench
takes the model a search registered (by default `models:/cervical-staging@champion`, else `@challenger`),
generates an independent phantom cohort (by default 200 patients, seed 1: no patient of the default seed-0
cohort), predicts every patient through the registered model exactly as `stagesearch predict` does, and
scores it: AUC with a 95% bootstrap interval, accuracy, sensitivity and specificity at the model's own
threshold, and the phantom's oracle AUC (its latent score), with the target 0.85 x oracle.

    python -m bench.generalise                      # the latest study's registry under ./runs
    python -m bench.generalise --model models:/cervical-staging/3 --patients 200 --seed 1
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from typing import Any

from bench._common import table, write_result
from search.registry import DEFAULT_MODEL_NAME

TARGET_SHARE_OF_ORACLE = 0.85


def build_parser() -> argparse.ArgumentParser:
    """Flags: the model, the independent cohort, where the registry is."""
    from search.study import add_location_flags

    ap = argparse.ArgumentParser(
        prog="python -m bench.generalise",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--model",
        default=None,
        help="registry URI (default: models:/cervical-staging@champion, else @challenger)",
    )
    ap.add_argument(
        "--patients", type=int, default=200, help="patients in the independent phantom (default 200)"
    )
    ap.add_argument(
        "--seed", type=int, default=1, help="its seed; the search's default cohort uses 0 (default 1)"
    )
    ap.add_argument("--matrix", type=int, default=None, help="in-plane matrix (default: the phantom's)")
    ap.add_argument("--out", default=None, help="results folder (default: bench/results/<machine>)")
    add_location_flags(ap, study_required=False)
    return ap


def resolve_model(client: Any, uri: str | None, name: str = DEFAULT_MODEL_NAME) -> tuple[str, str]:
    """(model URI, version) to score: the given URI, else @champion, else @challenger of `name`."""
    from mlflow.exceptions import MlflowException

    if uri:
        path = uri.removeprefix("models:/")
        model, _, ref = path.partition("@") if "@" in path else path.partition("/")
        version = client.get_model_version_by_alias(model, ref).version if "@" in path else ref
        return uri, str(version)
    for alias in ("champion", "challenger"):
        try:
            return f"models:/{name}@{alias}", str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            continue
    raise SystemExit(
        f"error: no model {name!r} with alias champion or challenger in this registry; run a "
        "search (it registers its winner) or give --model"
    )


def score(labels: list[int], probs: list[float], threshold: float) -> dict[str, float]:
    """AUC with its 95% bootstrap interval, and accuracy/sensitivity/specificity at `threshold`."""
    from trainers.metrics import auc, bootstrap_auc_ci, confusion, rates

    low, high = bootstrap_auc_ci(labels, probs, seed=0)
    r = rates(confusion(labels, probs, threshold))
    return {
        "auc": auc(labels, probs),
        "auc_ci_low": low,
        "auc_ci_high": high,
        "accuracy": r["accuracy"],
        "sensitivity": r["sensitivity"],
        "specificity": r["specificity"],
    }


SHOWN = (
    "model",
    "version",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "accuracy",
    "sensitivity",
    "specificity",
    "oracle_auc",
    "target_auc",
    "met",
)


def independent_cohort(args: argparse.Namespace) -> tuple[list[dict[str, str]], list[dict[str, str]], float]:
    """The independent phantom: (manifest rows to predict, oracle rows with labels, the oracle's AUC)."""
    import numpy as np

    from trainers.phantom import default_cohort, roc_auc

    sizing = {"matrix": args.matrix} if args.matrix else {}
    manifest = default_cohort(patients=args.patients, seed=args.seed, **sizing)
    with open(manifest.parent / "oracle.csv") as fh:
        oracle = list(csv.DictReader(fh))
    labels = np.array([int(r["label"]) for r in oracle])
    oracle_auc = roc_auc(np.array([float(r["latent"]) for r in oracle]), labels)
    with open(manifest) as fh:
        rows = [
            {
                "patient_id": r["patient_id"],
                "image": str(manifest.parent / r["image"]),
                "mask": str(manifest.parent / r["mask"]),
            }
            for r in csv.DictReader(fh)
        ]
    return rows, oracle, oracle_auc


def registered_model(args: argparse.Namespace) -> tuple[Any, str, str, str | None]:
    """(the loaded pyfunc, its URI, its version, the study it came from) from the registry."""
    import mlflow

    from search.study import from_args
    from search.tracking.tracker import tracking_uri

    where = from_args(args)
    with tracking_uri(where.tracking_url()):
        client = mlflow.MlflowClient()
        uri, version = resolve_model(client, args.model)
        registered = uri.removeprefix("models:/").split("@")[0].split("/")[0]
        study = where.study or client.get_model_version(registered, version).tags.get("study")
        return mlflow.pyfunc.load_model(uri), uri, version, study


def predict_in_chunks(model: Any, rows: list[dict[str, str]], chunk: int = 100) -> Any:
    """The model's predictions of every row, `chunk` patients at a time, with a progress line after each (a
    1,000-patient phantom through an ensemble takes minutes on a CPU)."""
    import pandas as pd

    start, parts = time.perf_counter(), []
    for first in range(0, len(rows), chunk):
        parts.append(model.predict(pd.DataFrame(rows[first : first + chunk])))
        done = min(first + chunk, len(rows))
        print(f"  predicted {done}/{len(rows)} patients ({time.perf_counter() - start:.0f} s)", flush=True)
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the independent phantom, predict it from the registry, print and write the scores."""

    from trainers.privacy import no_telemetry

    args = build_parser().parse_args(argv)
    no_telemetry()
    rows, oracle, oracle_auc = independent_cohort(args)
    model, uri, version, study = registered_model(args)
    threshold = float(getattr(model.unwrap_python_model(), "threshold", 0.5) or 0.5)
    start = time.perf_counter()
    out = predict_in_chunks(model, rows)
    took = time.perf_counter() - start
    by_id = dict(zip(out["patient_id"], out["p_t2"], strict=True))
    labels = [int(r["label"]) for r in oracle]
    result = score(labels, [float(by_id[r["patient_id"]]) for r in oracle], threshold)
    target = TARGET_SHARE_OF_ORACLE * oracle_auc
    payload = {
        "model": uri,
        "version": version,
        "patients": args.patients,
        "seed": args.seed,
        "threshold": threshold,
        "oracle_auc": oracle_auc,
        "target_auc": target,
        "met": result["auc"] >= target,
        "predict_s": took,
        **result,
    }
    print(table([{k: payload[k] for k in SHOWN}]))
    # one file per study (and model version), so that scoring several searches keeps every result
    name = "-".join(["generalise", *([study] if study else []), f"v{version}"])
    print(f"wrote {write_result(name, {**payload, 'study': study}, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
