"""`stagesearch run` flags, and their validation before anything starts or is written."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from search.console.routing import add_console_flags
from search.registry import DEFAULT_MODEL_NAME
from search.study.config import StudySettings
from spaces import list_spaces
from trainers.cli import HelpFormatter


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. resnet50,densenet121")
    return names


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated pixel sizes, e.g. 128,192 (got {text!r})"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected comma-separated pixel sizes, e.g. 128,192")
    return sizes


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def build_parser() -> argparse.ArgumentParser:
    """All flags of the search, with defaults shown in --help."""
    p = argparse.ArgumentParser(
        prog="stagesearch run",
        description=(
            "Search backbones, augmentation strength, learning rate and input resolution for T1-vs-T2 staging: "
            "Ray Tune runs an Optuna TPE search with ASHA early stopping; every trial is scored by "
            "patient-grouped, stratified k-fold cross-validated AUC and logged to MLflow. Without --manifest it "
            "runs on the embedded phantom MRI cohort."
        ),
        formatter_class=HelpFormatter,
    )
    _what_flags(p)
    _where_flags(p)
    _compute_flags(p)
    add_console_flags(p)
    return p


def _what_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to search")
    g.add_argument("--budget", type=int, default=200, help="total finished trials in the study")
    g.add_argument(
        "--space",
        choices=list_spaces(),
        default=None,
        help="search space (default: paper when a GPU is visible, else cpu)",
    )
    g.add_argument(
        "--backbones",
        type=_names,
        default=None,
        metavar="A,B",
        help="search only these backbones of the space (default: all of them)",
    )
    g.add_argument(
        "--resolutions",
        type=_sizes,
        default=None,
        metavar="N,M",
        help="search only these input sizes of the space (default: all of them)",
    )
    g.add_argument(
        "--manifest", type=Path, help="cohort CSV patient_id,image,mask,label[,site] (default: phantom)"
    )
    g.add_argument("--phantom-patients", type=int, default=None, help="size of the phantom cohort [112]")
    g.add_argument("--folds", type=int, default=None, help="cross-validation folds [5]")
    g.add_argument(
        "--cv-group", choices=("patient", "site"), default=None, help="what folds keep apart [patient]"
    )
    g.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="fraction of patients set aside (stratified) before the search, to test the winner once [0: none]",
    )
    g.add_argument(
        "--allow-duplicate-scans",
        action="store_true",
        default=None,
        help="search even when patient ids share a scan (identical voxel data), which validation "
        "otherwise refuses; recorded in the study",
    )
    g.add_argument(
        "--force-small-holdout",
        action="store_true",
        help="accept a hold-out with fewer than 10 patients of a class (its AUC's CI is too wide to "
        "test anything; refused by default)",
    )
    _policy_flags(g)


def _policy_flags(g: argparse._ArgumentGroup) -> None:
    """How the search trains and chooses: epochs, weights, sampler, early stopping, seed."""
    g.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default: the space's)")
    g.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ImageNet weights: from the local caches, else downloaded once before the first trial "
        "(never with HF_HUB_OFFLINE=1); where there are none, random init, recorded [on]",
    )
    g.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="how Optuna proposes configurations"
    )
    g.add_argument(
        "--study-first",
        "--warm-start",
        dest="study_first",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a new study first runs the seed study's comparison: each backbone family of the space once at "
        "the trainer's defaults, to its last epoch (never stopped early), counted in --budget; the sampler "
        "goes on from those results. --warm-start is the same flag",
    )
    g.add_argument(
        "--per-family",
        type=int,
        default=0,
        metavar="N",
        help="a fair comparison: at least N complete trials of every family (the study point and N-1 sampled "
        "ones, each run to its last epoch) before the search goes on freely [0: off]",
    )
    g.add_argument("--scheduler", choices=("asha", "fifo"), default="asha", help="early stopping, or none")
    g.add_argument("--grace-epochs", type=int, default=1, help="ASHA: epochs every trial gets")
    g.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA: keep 1/factor at each rung")
    g.add_argument("--seed", type=int, default=None, help="seeds sampler, folds and training [0]")


def _where_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("where results go")
    s.add_argument(
        "--study", help="study name (default: a new timestamped one; an existing name continues it)"
    )
    s.add_argument(
        "--resume", action="store_true", help="continue --study, or the latest study in --runs-dir"
    )
    s.add_argument("--runs-dir", type=Path, default=Path("runs"), help="folder holding one folder per study")
    s.add_argument("--storage", help="Optuna RDB URL (default: sqlite in the study folder)")
    s.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite mlflow.db in --runs-dir)")
    s.add_argument(
        "--pseudonymise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace patient ids by stable salted hashes in everything the study writes (folds, "
        "trials, Ray, MLflow, report); the salt stays in the study folder. Fixed when the study "
        "is created [off]",
    )
    s.add_argument("--no-register", action="store_true", help="do not register the winner at the end")
    s.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name for the winner")
    s.add_argument(
        "--radiomics-trials",
        type=int,
        default=20,
        metavar="N",
        help="radiomics candidates: scikit-learn classifiers on lesion features (with masks: hand-made, "
        "PyRadiomics' IBSI features or both, searched too; without: the hand-made ROI features), tried by Optuna "
        "after the deep search (seconds each, each classifier's reference first; not taken from --budget; 0: "
        "none, the baseline stands for radiomics)",
    )
    s.add_argument(
        "--register-kind",
        choices=("auto", "single", "ensemble", "radiomics"),
        default="auto",
        help="what the search registers: the kind of candidate with the best corrected estimate (auto), the best "
        "single trial, the deep ensemble of the complete trials, or the radiomics model",
    )


def _compute_flags(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("compute")
    r.add_argument(
        "--address",
        help="existing Ray cluster: its head's host:port, auto (RAY_ADDRESS or the cluster started on "
        "this machine) or ray://host:10001 (Ray Client) (default: a local Ray)",
    )
    r.add_argument(
        "--max-retries",
        type=int,
        default=1,
        help="restarts of a trial from scratch when it fails, e.g. because its node or worker died; "
        "after that it is recorded as failed with the reason",
    )
    r.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPU share per trial, fractions allowed: 0.25 = four trials per GPU (default: 0.25 with GPUs, else 0)",
    )
    r.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        help="CPUs per trial, also its torch threads (default: 2 with GPUs, 1 without)",
    )
    r.add_argument(
        "--max-concurrent", type=int, default=0, help="cap on trials at once; 0 = as many as resources allow"
    )
    r.add_argument("--num-cpus", type=int, default=None, help="local Ray: CPUs to use (default: all)")
    r.add_argument("--num-gpus", type=int, default=None, help="local Ray: GPUs to use (default: all visible)")


def validate(args: argparse.Namespace) -> list[str]:
    """Every problem with the flags, as messages naming the flag."""
    problems = []
    if args.budget < 1:
        problems.append(f"--budget must be >= 1 (got {args.budget})")
    if args.folds is not None and args.folds < 2:
        problems.append(f"--folds must be >= 2 (got {args.folds})")
    if args.max_epochs is not None and args.max_epochs < 1:
        problems.append(f"--max-epochs must be >= 1 (got {args.max_epochs})")
    if args.phantom_patients is not None and args.phantom_patients < 2 * (args.folds or 5):
        problems.append(f"--phantom-patients must be at least 2 x --folds (got {args.phantom_patients})")
    if args.holdout is not None and not 0 <= args.holdout <= 0.5:
        problems.append(f"--holdout must be in [0, 0.5] (got {args.holdout})")
    if args.per_family < 0:
        problems.append(f"--per-family must be >= 0 (got {args.per_family})")
    if args.grace_epochs < 1:
        problems.append(f"--grace-epochs must be >= 1 (got {args.grace_epochs})")
    if args.reduction_factor <= 1:
        problems.append(f"--reduction-factor must be > 1 (got {args.reduction_factor})")
    if args.gpus_per_trial is not None and not 0 <= args.gpus_per_trial <= 8:
        problems.append(f"--gpus-per-trial must be in [0, 8] (got {args.gpus_per_trial})")
    if args.gpus_per_trial and args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        problems.append(f"--gpus-per-trial above 1 must be whole (got {args.gpus_per_trial})")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        problems.append(f"--cpus-per-trial must be > 0 (got {args.cpus_per_trial})")
    if args.max_retries < 0:
        problems.append(f"--max-retries must be >= 0 (got {args.max_retries})")
    if args.max_concurrent < 0:
        problems.append(f"--max-concurrent must be >= 0 (got {args.max_concurrent})")
    if args.study is not None and not STUDY_NAME.match(args.study):
        problems.append(f"--study {args.study!r}: use letters, digits, '.', '_' or '-' (up to 100)")
    if args.address and not (args.address == "auto" or re.match(r"^(ray://)?[\w.-]+:\d+$", args.address)):
        problems.append(f"--address {args.address!r}: expected 'auto', 'host:port' or 'ray://host:port'")
    if args.storage and not re.match(r"^[a-z0-9+]+://", args.storage):
        problems.append(f"--storage {args.storage!r}: expected an RDB URL such as sqlite:///path/optuna.db")
    if args.manifest is not None and not args.manifest.exists():
        problems.append(f"--manifest {args.manifest}: file not found")
    return problems


def _conflict(key: str, given: object, stored: object) -> str:
    """Why a flag cannot change a setting of an existing study."""
    if key == "pseudonymise":
        if stored:
            return (
                "--no-pseudonymise: this study was created with --pseudonymise and stays pseudonymised "
                "(its folds and trials name patients by pseudonyms); drop the flag, or start a new --study"
            )
        return (
            "--pseudonymise: this study was created without it and has already recorded real patient ids "
            "(folds, trials, MLflow), so it cannot be pseudonymised mid-study; start a new --study with "
            "--pseudonymise"
        )
    flag = "--" + key.replace("_", "-")
    return f"{flag} {given} conflicts with this study's {stored} (start a new --study)"


def resolve_settings(
    args: argparse.Namespace, stored: StudySettings | None
) -> tuple[StudySettings, list[str]]:
    """Study settings from the stored study (if any), the CLI, then defaults; conflicts are problems. Each is
    fixed when a study is created (a setting an older study did not record reads as its default)."""
    chosen, problems = {}, []
    for key, default in StudySettings.defaults().items():
        given = getattr(args, key)  # None: not given on the command line
        given = str(given) if isinstance(given, Path) else given
        kept = getattr(stored, key) if stored is not None else None
        if kept is not None:
            if given is not None and given != kept:
                problems.append(_conflict(key, given, kept))
            chosen[key] = kept
        else:
            chosen[key] = given if given is not None else default
    return StudySettings(**chosen, extra=stored.extra if stored is not None else {}), problems


def comparison_trials(args: argparse.Namespace, families: int) -> int:
    """Trials a new study runs before the search goes on freely: N per family with --per-family N, else one per
    family with --study-first, else none. Each runs to its last epoch."""
    return families * max(args.per_family, 1 if args.study_first else 0)


def comparison_problems(args: argparse.Namespace, families: int, space: str) -> list[str]:
    """A budget too small for the comparison asked for, as a message naming the flags (exit 2 before anything)."""
    needed = comparison_trials(args, families)
    if needed <= args.budget:
        return []
    if args.per_family:
        return [
            f"--per-family {args.per_family} needs {needed} trials ({args.per_family} for each of the {families} "
            f"backbone families of space {space!r}); --budget is {args.budget}: raise --budget to at least "
            f"{needed}, or lower --per-family"
        ]
    return [
        f"--budget {args.budget} cannot hold the study's comparison: each of the {families} backbone families of "
        f"space {space!r} runs once first (--study-first, the default); raise --budget to at least {needed}, "
        "narrow --backbones, or pass --no-study-first"
    ]
