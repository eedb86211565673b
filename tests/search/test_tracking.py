"""Closing the tracking runs a stopped search left open (finished in Optuna -> FINISHED, else KILLED); a trial
that Tune restarts keeps its one run."""

from __future__ import annotations

from search.tracking.tracker import StudyTracker


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


def test_a_restarted_trial_keeps_its_run_and_says_why(tmp_path) -> None:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s", tmp_path / "artifacts")
    tracker.open_parent(None, {"budget": 1}, {"study": "s"})
    first = tracker.start_trial(0, {"lr": 1e-3}, {"backbone": "tiny_cnn"})
    tracker.tag_trial(0, {"node": "10.0.0.2"})
    tracker.retry_trial(0, 1, "Failure # 1\nThe actor abc is unavailable: Socket closed\n")
    again = tracker.start_trial(0, {"lr": 1e-3}, {"backbone": "tiny_cnn"})  # Tune starts it again
    tracker.tag_trial(0, {"node": "10.0.0.1"})
    tracker.finish_trial(0, "complete", None)
    assert again == first
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string="tags.role = 'trial'")
    assert [r.info.run_id for r in runs] == [first]
    tags = runs[0].data.tags
    assert tags["retries"] == "1" and tags["retry_1_reason"] == "The actor abc is unavailable: Socket closed"
    assert tags["node"] == "10.0.0.1" and runs[0].info.status == "FINISHED"
