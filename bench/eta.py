"""How honest the search's time estimate was: the status lines' "~N left" against the time that really remained.

Reads a finished study's `logs/search.log` (the last session in it), where every status line of the search
is kept (`[  50/200] complete ... | 14m10s ~41m20s left`). For each line: the elapsed time, the estimate, and
the time that really remained (the session's last status line minus this one's elapsed time). Prints the
lines nearest to 10 %, 25 %, 50 % and 75 % of the budget; the target is within +-30 % at a quarter.

    python -m bench.eta --runs-dir runs --study NAME
    python -m bench.eta --log runs/NAME/logs/search.log
    python -m bench.eta --log OLD.log --replay    # today's estimator on an older run's timeline

`--replay` recomputes every line's estimate with the status line's current estimator
(`search.tune.progress.estimate_left`) from the times the log's lines show each trial finishing (to the
second),
instead of reading the estimate the line printed: how a changed estimator would have done on a real run.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from bench._common import RESULTS, machine_id, table, write_result

STATUS = re.compile(r"\[\s*(\d+)/(\d+)\] .*\| (\S+)(?: ~(\S+) left)?\s*(?:\||$)")
SESSION_START = "trials finished before this session"
TARGET = 0.30  # relative error allowed at a quarter of the budget
MARKS = (0.10, 0.25, 0.50, 0.75)


def seconds(text: str) -> float:
    """`4m10s` or `1h05m` (the status line's durations) in seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    h, mi, s = (int(g or 0) for g in m.groups())
    return 3600 * h + 60 * mi + s


def status_lines(text: str) -> tuple[int, list[dict[str, Any]]]:
    """Trials finished before the log's last session, and (finished, budget, elapsed s, estimated s left or
    None) of every status line of that session."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if SESSION_START in line]
    before = re.search(r"(\d+) of \d+ " + SESSION_START, lines[starts[-1]]) if starts else None
    rows = []
    for line in lines[starts[-1] if starts else 0 :]:
        m = STATUS.search(line)
        if m:
            rows.append(
                {
                    "finished": int(m[1]),
                    "budget": int(m[2]),
                    "elapsed_s": seconds(m[3]),
                    "estimate_s": seconds(m[4]) if m[4] else None,
                }
            )
    return (int(before[1]) if before else 0), rows


def replay(first: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with each estimate recomputed by today's `estimate_left` from the finish times the lines show
    (a line is printed as trials finish; a count that rose by 2 between lines finished 2 trials then)."""
    from search.tune.progress import estimate_left

    finish_times: list[float] = []
    seen, out = first, []
    for r in rows:
        finish_times += [r["elapsed_s"]] * max(0, r["finished"] - seen)
        seen = max(seen, r["finished"])
        out.append(
            {**r, "estimate_s": estimate_left(finish_times, r["elapsed_s"], r["budget"] - r["finished"])}
        )
    return out


def judge(first: int, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows at the marks of the session's trials (`first` were finished before it): the estimate against what
    remained; and the verdict at a quarter."""
    if not rows or rows[-1]["finished"] < rows[-1]["budget"]:
        raise ValueError(
            "the log's last session did not finish its budget: nothing to compare the estimates with"
        )
    end, budget = rows[-1]["elapsed_s"], rows[-1]["budget"]
    marks = []
    for share in MARKS:
        at = first + share * (budget - first)
        row = next((r for r in rows if r["finished"] >= at and r["estimate_s"] is not None), None)
        if row is None:
            continue
        remained = end - row["elapsed_s"]
        marks.append(
            {
                "share": f"{share:.0%}",
                "finished": row["finished"],
                "elapsed_s": row["elapsed_s"],
                "estimate_s": row["estimate_s"],
                "remained_s": remained,
                "error": (row["estimate_s"] - remained) / remained if remained > 0 else None,
            }
        )
    quarter = next((m for m in marks if m["share"] == "25%"), None)
    error = quarter["error"] if quarter else None
    return marks, {
        "total_s": end,
        "budget": budget,
        "quarter_error": error,
        "met": error is not None and abs(error) <= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--study", help="study name (with --runs-dir)")
    p.add_argument("--log", type=Path, help="a search.log to read instead of the study's")
    p.add_argument(
        "--replay",
        action="store_true",
        help="recompute the estimates with today's estimator instead of reading the printed ones",
    )
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    args = p.parse_args(argv)
    if args.log is None and not args.study:
        p.error("give --study (and --runs-dir) or --log")
    log = args.log or args.runs_dir / args.study / "logs" / "search.log"
    try:
        first, rows = status_lines(log.read_text())
        marks, verdict = judge(first, replay(first, rows) if args.replay else rows)
    except (OSError, ValueError) as exc:
        print(f"error: {log}: {exc}")
        return 2
    print(table([{**m, "error": "-" if m["error"] is None else f"{m['error']:+.0%}"} for m in marks]))
    err = verdict["quarter_error"]
    print(
        f"\nat a quarter of the budget the estimate was off by {err:+.0%} of the time that remained "
        f"(target within +-{TARGET:.0%}): {'met' if verdict['met'] else 'missed'}"
        if err is not None
        else "\nno status line with an estimate at a quarter of the budget"
    )
    out_dir = Path(args.out) if args.out else RESULTS / machine_id()
    name = "eta-replay" if args.replay else "eta"
    path = write_result(
        name, {"log": log.name, "replay": args.replay, "marks": marks, "verdict": verdict}, out_dir
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
