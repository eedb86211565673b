"""`stagesearch run --pseudonymise`: no real patient id anywhere a search writes, stable pseudonyms on resume.

One tiny search on a 16-patient phantom whose patients are renamed to ids that cannot occur by chance (letters
no hex digest has, with the ids in the scans' file names too), with a hold-out and registration, then a resume.
Every file of the runs folder (study folder, Ray's results, MLflow's sqlite store and artifacts, the report),
everything MLflow's API returns and every artifact it hands back is searched byte by byte for each real id.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import stat
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow.tracking import MlflowClient

from search.commands.run import main
from search.session.options import build_parser
from search.study import default_tracking_uri, read_oof, resolve
from search.study.pseudonyms import CHECK_KEY, pseudonym
from tests.search.conftest import search_args

pytestmark = pytest.mark.slow

STUDY = "ps"


def _secret_id(n: int) -> str:
    return f"MRN-ZQX{n:04d}"  # Z, Q, X, R, M, N: never in a hex digest


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A 16-patient phantom whose patient ids (and scan file names) are the secret ids."""
    from trainers.phantom import generate_cohort

    src = generate_cohort(tmp_path_factory.mktemp("phantom16"), patients=16, seed=3, matrix=48).manifest
    out = tmp_path_factory.mktemp("secret_cohort")
    (out / "images").mkdir()
    (out / "masks").mkdir()
    rows = []
    with src.open() as fh:
        for n, row in enumerate(csv.DictReader(fh), start=1):
            pid = _secret_id(n)
            image, mask = f"images/{pid}_t2.nii.gz", f"masks/{pid}_mask.nii.gz"
            shutil.copy(src.parent / row["image"], out / image)
            shutil.copy(src.parent / row["mask"], out / mask)
            rows.append({**row, "patient_id": pid, "image": image, "mask": mask})
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _real_ids(manifest: Path) -> list[str]:
    with manifest.open() as fh:
        return [r["patient_id"] for r in csv.DictReader(fh)]


def _args(cohort: Path, runs: Path, *extra: str) -> list[str]:
    return search_args(
        cohort,
        runs,
        STUDY,
        "--holdout",
        "0.25",
        "--force-small-holdout",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "1",
        *extra,
    )


@pytest.fixture(scope="module")
def search(cohort, tmp_path_factory) -> dict:
    """A pseudonymised search (2 trials, winner registered), what it wrote, then a resume to 3 trials."""
    runs = tmp_path_factory.mktemp("pseudo") / "runs"
    folder = runs / STUDY
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(_args(cohort, runs, "--budget", "2", "--pseudonymise")) == 0
        first = {
            "folds": (folder / "folds.json").read_text(),
            "holdout": (folder / "holdout.json").read_text(),
            "oof0": {r["patient_id"] for r in read_oof(folder / "trials" / "0" / "oof.csv")},
        }
        # the flag is not needed again; the registration above already covered the refit
        assert main(_args(cohort, runs, "--budget", "3", "--resume", "--no-register")) == 0
        session_dir = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    finally:
        ray.shutdown()
    from dashboards.report import build_report

    report = build_report(resolve(runs, STUDY))
    return {"runs": runs, "folder": folder, "first": first, "report": report, "ray_session": session_dir}


def find_in_files(root: Path, needles: list[str], skip: tuple[Path, ...] = ()) -> dict[str, list[str]]:
    """{file: needles found in its bytes} for every file under `root` (sqlite stores included, as raw bytes)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path in skip:
            continue
        data = path.read_bytes()
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def test_the_search_finds_a_planted_id(tmp_path, cohort) -> None:
    """The byte search sees an id in a text file and in a sqlite row (so an empty result means something)."""
    ids = _real_ids(cohort)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "oof.csv").write_text(f"patient_id,prob\n{ids[3]},0.5\n")
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("create table params (key text, value text)")
        db.execute("insert into params values ('patient', ?)", (ids[7],))
    assert find_in_files(tmp_path, ids) == {"sub/oof.csv": [ids[3]], "store.db": [ids[7]]}


def test_no_real_id_in_any_file(search, cohort) -> None:
    ids = _real_ids(cohort)
    runs, folder = search["runs"], search["folder"]
    assert (
        (runs / "mlflow.db").exists() and (folder / "ray").is_dir() and (folder / "mlflow-artifacts").is_dir()
    )
    assert list((folder / "ray").rglob("result.json")), "no Ray results to search"
    assert (
        search["report"].is_relative_to(folder)
        and "patient ids pseudonymised" in search["report"].read_text()
    )
    assert find_in_files(runs, ids) == {}
    assert find_in_files(search["report"].parent, ids) == {}
    assert list(search["ray_session"].rglob("*.log")), "no Ray session logs to search"
    assert (
        find_in_files(search["ray_session"], ids) == {}
    )  # Ray's own logs (and spilled objects) of the session


def test_no_real_id_through_mlflow(search, cohort, tmp_path) -> None:
    ids = _real_ids(cohort)
    uri = default_tracking_uri(search["runs"])
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    roles = sorted(r.data.tags.get("role") for r in runs)
    assert roles == ["baseline", "model", "search", "trial", "trial", "trial"], roles
    parent = next(r for r in runs if r.data.tags["role"] == "search")
    assert parent.data.params["pseudonymise"] == "True"
    texts = []
    for run in runs:
        texts += [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(run.data.metrics)]
        target = tmp_path / run.info.run_id
        target.mkdir()
        client.download_artifacts(run.info.run_id, "", str(target))
    versions = client.search_model_versions("name='cervical-staging'")
    assert len(versions) == 1
    for version in versions:  # the registered model's files (MLflow 3 keeps them apart from the run's)
        texts += [json.dumps(version.tags), version.description or "", version.source or ""]
        target = tmp_path / f"model-{version.version}"
        source = client.get_model_version_download_uri(version.name, version.version)
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target))
    oofs = list(tmp_path.rglob("oof_predictions.csv"))
    assert len(oofs) == 4 and list(tmp_path.rglob("features.csv"))  # three trials' and the baseline's
    assert list(tmp_path.rglob("MLmodel")) and list(tmp_path.rglob("input_example.json"))
    assert [i for i in ids if any(i in t for t in texts)] == []
    assert find_in_files(tmp_path, ids) == {}
    assert all(r["patient_id"].startswith("p-") for path in oofs for r in read_oof(path))


def test_pseudonyms_are_the_salted_hashes_and_stable(search, cohort) -> None:
    from trainers.folds import make_folds, split_holdout
    from trainers.manifest import load_manifest

    folder, first = search["folder"], search["first"]
    salt = (folder / "pseudonym_salt").read_text().strip()
    real = load_manifest(cohort, folds=3)
    named = {p: pseudonym(salt, p) for p in real.patients}
    assert len(set(named.values())) == 16 and all(v.startswith("p-") and len(v) == 14 for v in named.values())
    # the resume reused the salt: folds and hold-out untouched, the new trial names patients as the first did
    assert (folder / "folds.json").read_text() == first["folds"]
    assert (folder / "holdout.json").read_text() == first["holdout"]
    held = json.loads(first["holdout"])["patients"]
    folds = json.loads(first["folds"])["folds"]
    new = {r["patient_id"] for r in read_oof(folder / "trials" / "2" / "oof.csv")}
    assert new == first["oof0"] == {p for f in folds for p in f["val"]}
    # pseudonymising changes the names only: the same hold-out and folds the real ids give, renamed
    labels = real.patient_labels()
    real_held = split_holdout(labels, 0.25, 0)
    assert held == sorted(named[p] for p in real_held)
    kept = {p: v for p, v in labels.items() if p not in set(real_held)}
    expected = [{k: sorted(named[p] for p in v) for k, v in f.items()} for f in make_folds(kept, None, 3, 0)]
    assert folds == expected
    winner = json.loads((folder / "winner.json").read_text())
    assert sorted(p["patient_id"] for p in winner["holdout"]["predictions"]) == held


def test_salt_stays_in_the_study_folder(search, tmp_path) -> None:
    runs, folder = search["runs"], search["folder"]
    salt_file = folder / "pseudonym_salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    salt = salt_file.read_text().strip()
    assert len(salt) == 32
    config = json.loads((folder / "config.json").read_text())
    assert config["settings"]["pseudonymise"] is True and config[CHECK_KEY] and salt not in json.dumps(config)
    assert [p for p in runs.rglob("*") if p.is_file() and p.read_bytes().find(salt.encode()) >= 0] == [
        salt_file
    ]


def test_resume_refuses_to_change_the_setting_or_a_lost_salt(search, cohort, capsys) -> None:
    runs, folder = search["runs"], search["folder"]
    config_before = (folder / "config.json").read_text()
    assert main(_args(cohort, runs, "--budget", "4", "--resume", "--no-pseudonymise")) == 2
    assert "stays pseudonymised" in capsys.readouterr().err
    salt_file = folder / "pseudonym_salt"
    salt = salt_file.read_text()
    try:
        salt_file.write_text("0" * 32 + "\n")
        assert main(_args(cohort, runs, "--budget", "4", "--resume")) == 2
        assert "is not the salt the study was created with" in capsys.readouterr().err
        salt_file.unlink()
        assert main(_args(cohort, runs, "--budget", "4", "--resume")) == 2
        assert "salt" in (err := capsys.readouterr().err) and "is missing" in err
    finally:
        salt_file.write_text(salt)
        salt_file.chmod(0o600)
    assert (folder / "config.json").read_text() == config_before  # nothing written by the refused sessions


def test_a_plain_study_cannot_be_pseudonymised_later(cohort, tmp_path, capsys) -> None:
    """Creating a study (config.json only: no search needed), then --pseudonymise on it is refused."""
    from search.session.configure import configure

    runs = tmp_path / "runs"
    args = build_parser().parse_args(_args(cohort, runs, "--budget", "2"))
    configure(args, None)
    assert not (runs / STUDY / "pseudonym_salt").exists()
    assert main(_args(cohort, runs, "--budget", "1", "--resume", "--pseudonymise")) == 2
    assert "cannot be pseudonymised mid-study" in capsys.readouterr().err
    assert not (runs / STUDY / "pseudonym_salt").exists()
