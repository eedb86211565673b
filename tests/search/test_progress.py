"""The live status line: counts, best so far, running trials' epochs, printed on Tune's step hook."""

from __future__ import annotations

import io
from types import SimpleNamespace

from search.study.results import TrialEpoch
from search.tune.progress import Progress


def test_status_line_on_step_and_trial_end() -> None:
    out = io.StringIO()
    p = Progress(budget=10, already={"complete": 2, "pruned": 1}, best=None, every=0.0, out=out)
    trial = SimpleNamespace(
        config={"_optuna_trial": 3, "backbone": "resnet50", "resolution": 64, "lr": 1e-3, "aug_strength": 0.5}
    )
    p.on_trial_start(0, [], trial)
    p.on_trial_result(0, [], trial, {"epoch": 2, "mean_fold_auc": 0.71})
    p.on_step_end(0, [])
    line = out.getvalue().strip().splitlines()[-1]
    assert line.startswith("[   3/10] complete 2 pruned 1 failed 0 running 1")
    assert "trial 3: epoch 2, mean_fold_auc 0.710" in line
    final = TrialEpoch(
        epoch=2,
        final=True,
        cv_auc=0.8,
        mean_fold_auc=0.7,
        fold_auc_sd=0.1,
        train_loss=0.5,
        metrics={},
        pretrained=False,
        pretrained_note="",
    )
    p.trial_finished(trial, "complete", final)
    line = out.getvalue().strip().splitlines()[-1]
    assert line.startswith("[   4/10] complete 3 pruned 1 failed 0 running 0")
    assert "best cv_auc 0.800 (resnet50, 64 px" in line and "left" in line and "trial 3:" not in line


def test_time_left_follows_the_later_half_of_the_trials() -> None:
    """Trials that speed up (ASHA prunes more as its rungs fill): the estimate uses the later half's rate."""
    from search.tune.progress import estimate_left

    assert estimate_left([], 5.0, 10) is None and estimate_left([1.0], 1.0, 0) is None
    assert estimate_left([10.0, 20.0], 20.0, 8) == 80.0  # few trials: the rate since the start
    slow_then_fast = [10.0 * i for i in range(1, 11)] + [100.0 + 2.0 * i for i in range(1, 11)]  # 20 trials
    # the later 10 took 2 s each (100 s -> 120 s): 10 left take 20 s; the rate since the start would say 60 s
    assert estimate_left(slow_then_fast, 120.0, 10) == 20.0
