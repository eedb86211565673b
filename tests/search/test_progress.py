"""The live status line: counts, best so far, running trials' epochs, printed on Tune's step hook."""

from __future__ import annotations

import io
from types import SimpleNamespace

from search.progress import Progress
from search.results import TrialEpoch


def test_status_line_on_step_and_trial_end() -> None:
    out = io.StringIO()
    p = Progress(budget=10, already={"complete": 2, "pruned": 1}, best=None, every=0.0, out=out)
    trial = SimpleNamespace(config={"_optuna_trial": 3, "backbone": "resnet50", "resolution": 64, "lr": 1e-3,
                                    "aug_strength": 0.5})  # fmt: skip
    p.on_trial_start(0, [], trial)
    p.on_trial_result(0, [], trial, {"epoch": 2, "mean_fold_auc": 0.71})
    p.on_step_end(0, [])
    line = out.getvalue().strip().splitlines()[-1]
    assert line.startswith("[   3/10] complete 2 pruned 1 failed 0 running 1")
    assert "trial 3: epoch 2, mean_fold_auc 0.710" in line
    final = TrialEpoch(epoch=2, final=True, cv_auc=0.8, mean_fold_auc=0.7, fold_auc_sd=0.1, train_loss=0.5,
                       metrics={}, pretrained=False, pretrained_note="")  # fmt: skip
    p.trial_finished(trial, "complete", final)
    line = out.getvalue().strip().splitlines()[-1]
    assert line.startswith("[   4/10] complete 3 pruned 1 failed 0 running 0")
    assert "best cv_auc 0.800 (resnet50, 64 px" in line and "left" in line and "trial 3:" not in line
