"""Training failures told apart: a NaN loss stops the run at its step, out of memory is retried once with half
the batch size, unusable cached arrays are named; each fault injected through trainers.failures.Fault."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.config import TrainConfig
from trainers.cv import prepare_cohort
from trainers.data import build_slice_data
from trainers.failures import (
    Fault,
    NonFiniteLossError,
    UnreadableDataError,
    describe,
    failure_reason,
    parse_faults,
)
from trainers.preprocess import PreprocessParams, load_rois, scan_key
from trainers.train import cross_validate

# 12 patients, 3 folds: 8 training patients x 3 slices per fold = 24 slices, 3 steps of 8 per fold epoch,
# 9 optimiser steps per epoch of the run.
CFG = TrainConfig(backbone="tiny_cnn", epochs=2, resolution=32, batch_size=8, aug_strength=0.0, device="cpu")


@pytest.fixture(scope="module")
def prepared(tiny_cohort, tmp_path_factory):
    return prepare_cohort(tiny_cohort, folds=3, folds_path=tmp_path_factory.mktemp("f") / "folds.json")


def _run(prepared, cfg=CFG, **kw):
    reports = []
    result = cross_validate(
        prepared.slice_data(32), prepared.folds, cfg, on_epoch=reports.append, log=None, **kw
    )
    return result, reports


@pytest.mark.parametrize(("step", "fold", "epoch", "reported"), [(5, 1, 1, []), (12, 0, 2, [1])])
def test_a_nan_loss_stops_the_run_at_its_step(prepared, step, fold, epoch, reported) -> None:
    reports = []
    with pytest.raises(NonFiniteLossError) as caught:
        cross_validate(
            prepared.slice_data(32),
            prepared.folds,
            CFG,
            on_epoch=reports.append,
            log=None,
            fault=Fault("nan_loss", step=step),
        )
    err = caught.value
    # On the CPU the check reads every step's loss: no step runs after the bad one (the fold epoch had more).
    assert (err.step, err.steps_run, err.fold, err.epoch) == (step, step, fold, epoch)
    assert f"fold {fold}, epoch {epoch}, step {step}" in str(err) and "nan" in str(err)
    assert failure_reason(err) == "nan_loss"
    assert [r.epoch for r in reports] == reported  # nothing reported for the epoch it happened in


def test_out_of_memory_is_retried_once_with_half_the_batch(prepared) -> None:
    """Out of memory in epoch 2 at batch 8: trained again from the start at 4, each epoch reported once, and
    the result is exactly what batch 4 trains (so a refit at the recorded batch size reproduces it)."""
    logs: list[str] = []
    reports = []
    result = cross_validate(
        prepared.slice_data(32),
        prepared.folds,
        CFG,
        on_epoch=reports.append,
        log=logs.append,
        oom_retry=True,
        fault=Fault("out_of_memory", step=12, above_batch=4),
    )
    assert [(r.epoch, r.batch_size) for r in reports] == [(1, 8), (2, 4)]
    assert result.config["batch_size"] == 4 and result.epochs_completed == 2
    assert any("out of memory at batch size 8" in line and "batch size 4" in line for line in logs)
    direct, _ = _run(prepared, TrainConfig(**{**CFG.to_dict(), "batch_size": 4}))
    assert result.cv_auc == direct.cv_auc and result.oof == direct.oof
    assert result.history[-1]["train_loss"] == direct.history[-1]["train_loss"]


def test_out_of_memory_again_after_the_retry_fails(prepared) -> None:
    with pytest.raises(torch.OutOfMemoryError) as caught:
        _run(prepared, oom_retry=True, fault=Fault("out_of_memory", step=2))
    assert caught.value.batch_size == 4 and failure_reason(caught.value) == "out_of_memory"
    assert "again after retrying with 4" in describe(caught.value)
    with pytest.raises(torch.OutOfMemoryError) as caught:  # no retry unless asked
        _run(prepared, fault=Fault("out_of_memory", step=2))
    assert caught.value.batch_size == 8 and not getattr(caught.value, "__notes__", None)


def test_other_errors_are_not_retried(prepared) -> None:
    with pytest.raises(RuntimeError, match="injected by a test at step 3") as caught:
        _run(prepared, oom_retry=True, fault=Fault("exception", step=3))
    assert failure_reason(caught.value) == "exception" and caught.value.batch_size == 8


def test_reasons() -> None:
    assert failure_reason(RuntimeError("CUDA error: out of memory")) == "out_of_memory"
    assert (
        failure_reason(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
        == "out_of_memory"
    )
    assert failure_reason(UnreadableDataError("x")) == "unreadable_data"
    assert failure_reason(ValueError("x")) == "exception"
    assert describe(ValueError("first line\nsecond")) == "ValueError: first line"
    faults = parse_faults(
        '{"1": {"kind": "nan_loss", "step": 2}, "*": {"kind": "out_of_memory", "above_batch": 8}}'
    )
    assert faults == {"1": Fault("nan_loss", 2), "*": Fault("out_of_memory", 1, 8)}
    assert parse_faults("") == {}
    with pytest.raises(ValueError, match="fault kind"):
        Fault("nonesuch")


def test_unusable_cached_arrays_are_named(prepared) -> None:
    rois = Fault("unreadable_data").damage(prepared.rois)
    with pytest.raises(UnreadableDataError, match=f"patient\\(s\\) {rois[0].patient_id}"):
        build_slice_data(rois, 32)
    assert np.isfinite(prepared.rois[0].slabs).all()  # the damage was to a copy
    flat = [type(prepared.rois[0])(prepared.rois[0].patient_id, 0, np.zeros(10, np.float16), np.zeros(1))]
    with pytest.raises(UnreadableDataError, match="shape"):
        build_slice_data(flat, 32)


def test_an_unreadable_cache_entry_is_preprocessed_again(prepared, tmp_path, capsys) -> None:
    first = load_rois(prepared.cohort, cache_dir=tmp_path, progress=False)
    scan = prepared.cohort.scans[0]
    entry = tmp_path / f"{scan_key(scan, PreprocessParams())}.npz"
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated file
    again = load_rois(prepared.cohort, cache_dir=tmp_path, progress=False)
    assert "unreadable" in capsys.readouterr().err
    assert np.array_equal(again[0].slabs, first[0].slabs)
    with np.load(entry) as z:  # and the entry was replaced
        assert np.array_equal(z["slabs"], first[0].slabs)
