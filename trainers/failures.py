"""Why a training run fails, told apart so a search can end that one trial and say why.

Four reasons: a non-finite training loss (`nan_loss`, found at the step it happens), running out of device
memory (`out_of_memory`), cached input a trial cannot use (`unreadable_data`), anything else (`exception`).

`Fault` is a test-only hook: it injects one of these into a real training run, so that the code which detects
and handles each fault is the code under test (a NaN loss comes from a NaN batch, an out-of-memory error is
the exception type a CUDA allocation failure raises).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

NAN_LOSS = "nan_loss"
OUT_OF_MEMORY = "out_of_memory"
UNREADABLE_DATA = "unreadable_data"
EXCEPTION = "exception"
REASONS = (NAN_LOSS, OUT_OF_MEMORY, UNREADABLE_DATA, EXCEPTION)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; says where (fold, epoch, step) and how many steps had run."""

    def __init__(self, value: float, fold: int, epoch: int, step: int, steps_run: int) -> None:
        super().__init__(
            f"training loss is {value} at fold {fold}, epoch {epoch}, step {step} of the run "
            "(diverged: try a lower learning rate)"
        )
        self.fold, self.epoch, self.step, self.steps_run = fold, epoch, step, steps_run


class UnreadableDataError(ValueError):
    """Cached ROI arrays that cannot be used (wrong shape, non-finite values); the message names the patients."""


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure: `torch.OutOfMemoryError` (what CUDA raises), or a RuntimeError saying so
    (other backends and some cuDNN/cuBLAS paths report it as plain text)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def failure_reason(exc: BaseException) -> str:
    """The reason a training run ended with `exc`: one of REASONS."""
    if isinstance(exc, NonFiniteLossError):
        return NAN_LOSS
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY
    if isinstance(exc, UnreadableDataError):
        return UNREADABLE_DATA
    return EXCEPTION


def describe(exc: BaseException, limit: int = 500) -> str:
    """One short line: the exception type, the first line of its message, and its notes."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    notes = getattr(exc, "__notes__", None) or []
    return "; ".join([text, *notes])[:limit]


class LossCheck:
    """Finds a non-finite training loss within the epoch, at the step it happens, without a host sync per step.

    On the CPU the loss is read at once (there is nothing to wait for). On CUDA each step's loss is copied
    asynchronously into pinned host memory behind an event and read one step later, once the GPU has passed
    that event: the CPU stays one step ahead of the GPU instead of waiting for every step, and a NaN stops the
    run one step after the step that produced it (the error names that step).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.steps = 0  # optimiser steps run so far in this training run (all folds, all epochs)
        self._pending: tuple[tuple[int, int, int], torch.Tensor, Any] | None = None
        self._slots = torch.zeros(2, dtype=torch.float32, pin_memory=True) if self.cuda else None

    def push(self, loss: torch.Tensor, fold: int, epoch: int) -> None:
        """Record the loss of the step just run (raises NonFiniteLossError for this one or the one before)."""
        self.steps += 1
        where = (fold, epoch, self.steps)
        if not self.cuda:
            self._check(where, float(loss))
            return
        slot = self._slots[self.steps % 2]
        slot.copy_(loss.detach().float(), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        previous, self._pending = self._pending, (where, slot, event)
        if previous is not None:
            previous[2].synchronize()
            self._check(previous[0], float(previous[1]))

    def flush(self) -> None:
        """Check the last step still in flight (call at the end of every fold epoch)."""
        if self._pending is not None:
            where, slot, event = self._pending
            self._pending = None
            event.synchronize()
            self._check(where, float(slot))

    def _check(self, where: tuple[int, int, int], value: float) -> None:
        if not math.isfinite(value):
            self._pending = None
            fold, epoch, step = where
            raise NonFiniteLossError(value, fold, epoch, step, self.steps)


@dataclass(frozen=True)
class Fault:
    """Test-only: one fault to inject into a training run at optimiser step `step` (1-based, counted over the
    whole run: all folds, all epochs). `out_of_memory` fires only while the batch size is above `above_batch`
    (0: always), so a retry with a smaller batch can get past it."""

    kind: str
    step: int = 1
    above_batch: int = 0

    def __post_init__(self) -> None:
        if self.kind not in REASONS:
            raise ValueError(f"fault kind must be one of {', '.join(REASONS)} (got {self.kind!r})")

    def on_step(self, step: int, xb: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The batch of step `step`, made to fail as this fault says (unchanged at other steps)."""
        if step != self.step:
            return xb
        if self.kind == NAN_LOSS:
            return xb * float("nan")  # the real forward pass and loss turn this into a NaN loss
        if self.kind == OUT_OF_MEMORY and batch_size > self.above_batch:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (injected by a test at batch size {batch_size})"
            )
        if self.kind == EXCEPTION:
            raise RuntimeError(f"fault injected by a test at step {step}")
        return xb

    def damage(self, rois: Sequence[Any]) -> list[Any]:
        """`unreadable_data`: the first scan's cached array as a damaged file gives it (non-finite values)."""
        rois = list(rois)
        if self.kind == UNREADABLE_DATA and rois:
            rois[0] = dataclasses.replace(rois[0], slabs=rois[0].slabs * float("nan"))
        return rois


def parse_faults(text: str) -> dict[str, Fault]:
    """Test-only faults by Optuna trial number ("*": every trial) from JSON such as
    `{"1": {"kind": "nan_loss", "step": 2}, "3": {"kind": "out_of_memory", "above_batch": 8}}`."""
    if not text.strip():
        return {}
    return {str(key): Fault(**spec) for key, spec in json.loads(text).items()}
