"""The search policies `bench.simulate` replays: today's `stagesearch run` defaults and the alternatives the
learning-curve table judges (sampler, scheduler, ASHA's grace, reduction and brackets, TPE's start-up, the
constant liar, the study-first comparison, the rule that picks the trial to register)."""

from __future__ import annotations

from dataclasses import dataclass

FOLDS = 5  # the table's folds (the study's 5): a trial's epoch trains each of them once


@dataclass(frozen=True)
class Policy:
    """How a search proposes, stops and chooses: the knobs `stagesearch run` has (and some it may get). The
    field defaults are `stagesearch run`'s own (tests/bench/test_simulate.py checks them against its flags)."""

    name: str
    sampler: str = "tpe"  # tpe | random
    scheduler: str = "asha"  # asha | fifo
    grace: int = 1
    reduction: float = 3.0
    brackets: int = 1
    study_first: bool = True  # the seven study configurations first, to their end, exempt from stopping
    only_study: bool = False  # the seven study configurations and nothing else
    startup: int = 10  # TPE's random start-up trials (today's default at --budget 200)
    constant_liar: bool = False
    #: what is registered (`bench.simulate_pick`): registered (single or ensemble, by corrected estimate, as
    #: `--register-kind auto`) | ensemble | best_cv | best_fold_mean | lcb | family | topK (the K best averaged)
    selection: str = "registered"


#: the selection rule the knob variants below pick with: chosen first, on the tuning seeds, with today's search
#: (docs/PERFORMANCE.md: the greedy ensemble and the best cv_auc overfit 112 patients; two per family do not)
CHOSEN = "families2"

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("default"),  # what `stagesearch run` does with no flag
        Policy("no_study_first", study_first=False),  # `--no-study-first`
        Policy("seven", only_study=True, scheduler="fifo", selection="best_cv"),  # the study's comparison
        Policy("seven_registered", only_study=True, scheduler="fifo"),  # the seven, single or their ensemble
        Policy("seven_mean", only_study=True, scheduler="fifo", selection="top7"),  # the seven averaged
        Policy("random_fifo", sampler="random", scheduler="fifo", study_first=False),
        # today's search, other selection rules
        Policy("best_cv", selection="best_cv"),
        Policy("ensemble", selection="ensemble"),
        Policy("lcb", selection="lcb"),
        Policy("fold_mean", selection="best_fold_mean"),
        Policy("family", selection="family"),
        *(Policy(f"top{k}", selection=f"top{k}") for k in (3, 5, 10)),
        *(Policy(f"families{k}".rstrip("1"), selection=f"families{k}".rstrip("1")) for k in (1, 2, 3)),
        Policy("all", selection="all"),
        # the search's knobs, each alone, picking by CHOSEN
        Policy("chosen", selection=CHOSEN),
        Policy("no_study_first_chosen", study_first=False, selection=CHOSEN),
        Policy("random_fifo_chosen", sampler="random", scheduler="fifo", study_first=False, selection=CHOSEN),
        Policy("grace2", grace=2, selection=CHOSEN),
        Policy("grace3", grace=3, selection=CHOSEN),
        Policy("rf2", reduction=2.0, selection=CHOSEN),
        Policy("rf4", reduction=4.0, selection=CHOSEN),
        Policy("brackets2", brackets=2, selection=CHOSEN),
        Policy("startup5", startup=5, selection=CHOSEN),
        Policy("startup20", startup=20, selection=CHOSEN),
        Policy("liar", constant_liar=True, selection=CHOSEN),
        Policy("fifo", scheduler="fifo", selection=CHOSEN),
    )
}
