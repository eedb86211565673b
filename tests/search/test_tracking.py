"""Closing the tracking runs a stopped search left open: finished in Optuna -> FINISHED, else KILLED."""

from __future__ import annotations

from search.tracking import StudyTracker


def test_close_stale_children_reconciles_with_optuna(tmp_path) -> None:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s", tmp_path / "artifacts")
    tracker.open_parent(None, {"budget": 2}, {"study": "s"})
    done = tracker.start_trial(0, {"lr": 1e-3}, {"backbone": "tiny_cnn"})
    cut = tracker.start_trial(1, {"lr": 1e-4}, {"backbone": "tiny_cnn"})
    killed = tracker.close_stale_children({0: ("complete", {"cv_auc": 0.7, "accuracy": 0.6})})
    assert killed == 1
    a, b = tracker.client.get_run(done), tracker.client.get_run(cut)
    assert a.info.status == "FINISHED" and a.data.tags["state"] == "complete"
    assert a.data.metrics["cv_auc"] == 0.7 and a.data.metrics["accuracy"] == 0.6
    assert b.info.status == "KILLED"
    assert tracker.close_stale_children({}) == 0  # nothing left running
