"""A search space as data: the choices its define-by-run sampler picks from, checked against the backbone registry.

`Space.space(trial)` uses Optuna's trial API only and does no computation: the search's searcher runs it on
the trial `study.ask()` returns (`search.tune.searcher`), the simulator the same way. A list with one choice is fixed, not sampled. `check_space` holds every backbone to its own
registry entry (size rules such as HRNet's multiple of 32 or a ViT's patch size live there, not here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Space:
    """The choices of one search space; `purpose` says what it is sized for."""

    name: str
    purpose: str
    backbones: tuple[str, ...]
    resolutions: tuple[int, ...]
    max_epochs: int
    lr: tuple[float, float] = (1e-5, 3e-3)
    aug_strength: tuple[float, float] = (0.0, 1.0)
    weight_decay: tuple[float, float] | float = (1e-6, 1e-2)
    batch_sizes: tuple[int, ...] = (16,)
    channels: tuple[int, ...] = (1,)

    @property
    def description(self) -> str:
        """One line for the start of a search and `--help`."""
        px = "-".join(str(r) for r in sorted({min(self.resolutions), max(self.resolutions)}))
        return (
            f"{len(self.backbones)} backbone(s), {px} px, lr {self.lr[0]:g}..{self.lr[1]:g}, "
            f"aug {self.aug_strength[0]:g}..{self.aug_strength[1]:g} ({self.purpose})"
        )

    def space(self, trial: Any) -> dict[str, Any]:
        """Define-by-run sampling of one training configuration."""

        def pick(name: str, options: tuple) -> Any:
            return options[0] if len(options) == 1 else trial.suggest_categorical(name, list(options))

        wd = self.weight_decay
        return {
            "backbone": pick("backbone", self.backbones),
            "resolution": pick("resolution", self.resolutions),
            "lr": trial.suggest_float("lr", *self.lr, log=True),
            "aug_strength": trial.suggest_float("aug_strength", *self.aug_strength),
            "weight_decay": wd
            if isinstance(wd, float)
            else trial.suggest_float("weight_decay", *wd, log=True),
            "batch_size": pick("batch_size", self.batch_sizes),
            "channels": pick("channels", self.channels),
        }

    def study_points(self) -> list[dict[str, Any]]:
        """The seed study's method as Optuna parameters: each backbone once, in the space's order, at the
        trainer's default settings (`TrainConfig`: lr, augmentation, weight decay) clipped into the space's ranges,
        at its first resolution, batch size and channels. Choices the space fixes are left out (not sampled)."""
        from trainers.config import TrainConfig

        d = TrainConfig()

        def clip(value: float, bounds: tuple[float, float]) -> float:
            return min(max(value, bounds[0]), bounds[1])

        shared: dict[str, Any] = {
            "lr": clip(d.lr, self.lr),
            "aug_strength": clip(d.aug_strength, self.aug_strength),
        }
        if not isinstance(self.weight_decay, float):
            shared["weight_decay"] = clip(d.weight_decay, self.weight_decay)
        for name, options in (
            ("resolution", self.resolutions),
            ("batch_size", self.batch_sizes),
            ("channels", self.channels),
        ):
            if len(options) > 1:
                shared[name] = options[0]
        if len(self.backbones) == 1:
            return [shared]
        return [{"backbone": b, **shared} for b in self.backbones]

    def narrowed(self, backbones: list[str] | None = None, resolutions: list[int] | None = None) -> Space:
        """The same space over a subset of its backbones and resolutions; ValueError naming the flag otherwise."""
        problems = []
        for flag, given, own in (
            ("--backbones", backbones, self.backbones),
            ("--resolutions", resolutions, self.resolutions),
        ):
            outside = [str(v) for v in given or [] if v not in own]
            if outside:
                problems.append(
                    f"{flag}: {', '.join(outside)} not in space {self.name!r} "
                    f"(its choices: {', '.join(str(v) for v in own)})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return dataclasses.replace(
            self,
            backbones=tuple(backbones or self.backbones),
            resolutions=tuple(resolutions or self.resolutions),
        )


def space_problems(space: Space) -> list[str]:
    """Every way `space` disagrees with the backbone registry or is empty (no list means a valid space)."""
    from trainers.backbones import check_resolution, get_spec

    problems = [
        f"space {space.name!r}: no {what}"
        for what in ("backbones", "resolutions", "batch_sizes", "channels")
        if not getattr(space, what)
    ]
    for name in space.backbones:
        try:
            get_spec(name)
        except KeyError as exc:
            problems.append(f"space {space.name!r}: {exc}")
            continue
        for resolution in space.resolutions:
            try:
                check_resolution(name, resolution)
            except ValueError as exc:
                problems.append(f"space {space.name!r}: {exc}")
    if space.max_epochs < 1:
        problems.append(f"space {space.name!r}: max_epochs must be >= 1")
    return problems
