"""What `stagesearch promote` refuses and what `--list` hints: the chance guard, like-with-like comparison
(cohort, kind of estimate), ties, and the exact command each refusal or hint names."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.commands.promote import main
from search.models.register import make_challenger
from search.study import default_tracking_uri
from tests.search.registry_helpers import (
    GOOD,
    LUCKY,
    NAME,
    WITH_HOLDOUT,
    holder,
    make_registry,
    version_tags,
    vtags,
)


def test_chance_guard_refuses_a_lucky_winner_and_lets_a_good_one_through(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [GOOD, LUCKY])
    flags = ["--runs-dir", str(runs)]
    assert main(["--list", *flags]) == 0  # v2 scores higher but is at chance: --best ranks v1, and says so
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"best on holdout AUC among cohort c0ffee: v1: promote it with `stagesearch promote --runs-dir {runs} --best`"
    )
    assert main(["--best", *flags]) == 0  # a good winner, promoted without --force
    assert holder(client) == 1 and vtags(client, 1)["promoted_champion_forced"] == "false"
    capsys.readouterr()
    assert main(["--list", *flags]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == "best on holdout AUC among cohort c0ffee: v1, already @champion"
    )

    assert main(["--version", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert (
        "v2 was not shown to beat chance: its corrected AUC 0.550 (95% interval 0.470-0.630) includes 0.5 "
        "and its hold-out AUC 0.850 (95% interval 0.480-1.000) includes 0.5"
    ) in err
    assert "pass --force" in err and holder(client) == 1
    assert (
        main(["--version", "2", "--alias", "challenger", *flags]) == 0
    )  # the guard keeps only serving aliases
    assert main(["--version", "2", "--force", *flags]) == 0
    assert holder(client) == 2 and vtags(client, 2)["promoted_champion_forced"] == "true"
    assert vtags(client, 2)["promoted_champion_reason"].startswith(
        "forced over v1: v2 was not shown to beat chance"
    )
    capsys.readouterr()
    assert main(["--list", *flags]) == 0  # a model shown to beat chance may replace a forced chance-level one
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"best on holdout AUC among cohort c0ffee: v1: promote it with `stagesearch promote --runs-dir {runs} --best`"
    )
    assert main(["--best", *flags]) == 0 and holder(client) == 1
    assert vtags(client, 1)["promoted_champion_reason"] == (
        "v1 was shown to beat chance and current @champion v2 was not (holdout AUC 0.800, was 0.850)"
    )


def test_best_refuses_when_the_only_winner_is_at_chance(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [LUCKY])
    flags = ["--runs-dir", str(runs)]
    assert main(["--list", *flags]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint.startswith(
        "best on holdout AUC among cohort c0ffee: v1; --best would refuse it: v1 was not shown"
    )
    assert hint.endswith(
        f"; to promote it anyway: `stagesearch promote --runs-dir {runs} --version 1 --force`"
    )
    assert main(["--best", *flags]) == 2  # the hint was true
    err = capsys.readouterr().err
    assert "v1 was not shown to beat chance" in err and "pass --force" in err and holder(client) is None
    assert main(["--best", "--force", *flags]) == 0 and holder(client) == 1
    assert vtags(client, 1)["promoted_champion_reason"].startswith("forced: v1 was not shown to beat chance")


def test_gate_compares_only_the_same_cohort_and_kind_of_estimate(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = dict(version_tags("other", 5, "densenet121", 0.95, (0.93, 0.85, 0.99)), cohort_hash="beef01")
    cv_only = dict(version_tags("cv", 6, "regnety_008", 0.97, None))
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [WITH_HOLDOUT[0], other, WITH_HOLDOUT[1], cv_only])
    flags = ["--runs-dir", str(runs)]

    def hint() -> str:
        assert main(["--list", *flags]) == 0
        return capsys.readouterr().out.splitlines()[-1]

    # no champion yet: the newest version's cohort (c0ffee) on its most honest estimate (holdout): v3
    assert hint() == (
        f"best on holdout AUC among cohort c0ffee: v3: promote it with `stagesearch promote --runs-dir "
        f"{runs} --best`; left out (another cohort or kind of estimate, not comparable): v2, v4 (promote "
        f"one with `stagesearch promote --runs-dir {runs} --version N --force`)"
    )
    assert main(["--version", "1", *flags]) == 0
    capsys.readouterr()
    assert main(["--version", "2", *flags]) == 2
    assert (
        "v2 was made on cohort beef01 but current @champion v1 on cohort c0ffee: AUCs measured on different "
        "patients are not comparable; pass --force"
    ) in capsys.readouterr().err
    assert main(["--version", "4", *flags]) == 2
    assert (
        "v4 is scored on cv_auc but current @champion v1 on holdout AUC: different kinds of estimate are not "
        "comparable"
    ) in capsys.readouterr().err
    assert holder(client) == 1
    assert hint().startswith(
        "best on holdout AUC among cohort c0ffee: v3: promote it with `stagesearch promote"
    )
    assert main(["--best", *flags]) == 0 and holder(client) == 3  # not v2 (0.93 on another cohort), not v4
    assert (
        "@champion -> cervical-staging v3 (previous: v1): holdout AUC 0.830 (was v1 0.790)"
        in capsys.readouterr().out
    )
    assert hint().startswith("best on holdout AUC among cohort c0ffee: v3, already @champion; left out")
    assert main(["--best", *flags]) == 0 and "already holds" in capsys.readouterr().out

    assert main(["--version", "2", "--force", "--reason", "new cohort", *flags]) == 0 and holder(client) == 2
    assert vtags(client, 2)["promoted_champion_reason"] == "new cohort"
    assert "forced over v3: v2 was made on cohort beef01" in client.get_model_version(NAME, "2").description
    capsys.readouterr()
    assert hint() == (
        "best on holdout AUC among cohort beef01: v2, already @champion; left out (another cohort or "
        "kind of estimate, not comparable): v1, v3, v4 (promote one with `stagesearch promote "
        f"--runs-dir {runs} --version N --force`)"
    )


def test_registration_moves_challenger_to_the_newest_version(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [GOOD, LUCKY, WITH_HOLDOUT[1]])
    uri = default_tracking_uri(runs)
    flags = ["--runs-dir", str(runs)]
    assert make_challenger(uri, NAME, "1") == (
        "best on holdout AUC among cohort c0ffee: v3: promote it with `stagesearch promote --best`"
    )
    assert holder(client, "challenger") == 1
    assert main(["--best", *flags]) == 0 and holder(client) == 3
    hint = make_challenger(uri, NAME, "2")  # a chance-level version is registered after a champion
    assert holder(client, "challenger") == 2 and holder(client) == 3
    assert hint == "best on holdout AUC among cohort c0ffee: v3, already @champion"
    capsys.readouterr()
    assert (
        main(["--best", *flags]) == 0 and "already holds" in capsys.readouterr().out
    )  # true after registration


def test_a_tie_keeps_the_holder_so_list_says_nothing_to_promote(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same study registered twice gives two versions with equal scores: once one of them is promoted,
    `--list` must not tell the user to promote the other (a promotion that changes nothing)."""
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [GOOD, dict(GOOD)])
    flags = ["--runs-dir", str(runs)]
    assert main(["--version", "1", *flags]) == 0 and holder(client) == 1
    capsys.readouterr()
    assert main(["--list", *flags]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "best on holdout AUC among cohort c0ffee: v1, already @champion"
    assert "promote it with" not in out
    assert main(["--best", *flags]) == 0 and "already holds @champion" in capsys.readouterr().out


def test_refusal_and_hints_name_the_exact_command(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused promotion ends with the command that forces it; another model name and alias are carried."""
    runs = tmp_path / "runs"
    make_registry(runs, template, [LUCKY])
    assert main(["--version", "1", "--runs-dir", str(runs)]) == 2
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith(
            f"pass --force to promote v1 anyway: `stagesearch promote --runs-dir {runs} --version 1 --force`"
        )
    )
    assert main(["--list", "--alias", "staging", "--runs-dir", str(runs)]) == 0
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(
            f"to promote it anyway: `stagesearch promote --runs-dir {runs} --version 1 --force --alias staging`"
        )
    )
