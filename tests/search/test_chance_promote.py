"""End to end: a search on a phantom whose labels are permuted registers its winner tagged beats_chance=false
(from the search's own corrected estimate), and `promote --best` refuses it without --force.

One local Ray session for the module; a tiny space, 20 patients, 1 epoch, 2 trials, no hold-out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from search.commands.promote import main as promote_main
from search.commands.run import main
from search.study import default_tracking_uri
from tests.search.conftest import search_args
from tests.search.test_chance import permuted_cohort  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(permuted_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:  # noqa: F811
    """(runs folder, console) of a 2-trial search on the permuted phantom that registers its winner."""
    import contextlib
    import io

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = tmp_path_factory.mktemp("chance_promote") / "runs"
    args = search_args(
        permuted_cohort,
        runs,
        "chance",
        "--budget",
        "2",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "1",
    )
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert main(args) == 0
    finally:
        ray.shutdown()
    return runs, out.getvalue()


def test_chance_level_winner_is_tagged_and_best_refuses(registered: tuple[Path, str], capsys) -> None:
    runs, console = registered
    print(console)  # for the record (pytest -s)
    board = json.loads((runs / "chance" / "leaderboard.json").read_text())
    assert board["corrected"]["beats_chance"] is False
    kind = json.loads((runs / "chance" / "winner.json").read_text())["kind"]  # the kind the search chose
    candidates = board["candidates"]
    assert kind == candidates["registered"]
    # the registered version's estimate: its kind's, the whole selection's as the search chose that kind
    low, high = board["corrected_auc_ci"] if kind == "single" else candidates["selection"]["corrected_auc_ci"]
    assert low < 0.5 < high
    tags = MlflowClient(default_tracking_uri(runs)).get_model_version("cervical-staging", "1").tags
    assert tags["beats_chance"] == "false" and tags["estimate"] == "corrected_cv"
    assert (tags["corrected_auc_ci_low"], tags["corrected_auc_ci_high"]) == (f"{low:.4f}", f"{high:.4f}")
    assert (
        console.count("the search could not show that the winner beats chance") == 1
    )  # said once, by the summary
    assert "\npromote: best on corrected AUC among cohort " in console
    assert "--best would refuse it: v1 was not shown to beat chance" in console  # the hint ...

    assert promote_main(["--runs-dir", str(runs), "--best"]) == 2  # ... is true
    err = capsys.readouterr().err
    print(err)
    assert (
        f"v1 was not shown to beat chance: its corrected AUC {float(tags['corrected_auc']):.3f} (95% interval "
        f"{low:.3f}-{high:.3f}) includes 0.5"
    ) in err and "pass --force" in err
    assert (
        "champion"
        not in MlflowClient(default_tracking_uri(runs)).get_registered_model("cervical-staging").aliases
    )
    assert promote_main(["--runs-dir", str(runs), "--best", "--force"]) == 0
