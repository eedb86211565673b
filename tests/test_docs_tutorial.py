"""The tutorial's commands, run in order at tiny size, so docs/tutorial.md stays true.

The page marks each block the test runs with a comment on the line before it, invisible on the page:

    <!-- tutorial: run, exit 0 -->
    ```bash
    stagesearch run --space tiny --budget 8 --no-pretrained
    ```

The commands run in one fresh folder, one after another, as a reader would type them (a block may hold several
lines; each must end with the exit code its marker names: `exit 0 (tiny: 2)` where the page's run and the tiny
one differ, as a gate that lets a model through on 112 patients refuses it on 12). Blocks without a marker (installing, servers that
run until Ctrl-C) are not run. To run at tiny size the test changes the flags below and nothing else: a search
gets the 12-patient phantom (`--manifest`), 3 folds, 4 trials and 3 radiomics trials; a phantom the page
generates gets 12 patients at a 48-voxel matrix. Each block's output must also hold the lines the page shows
after it as `<!-- tutorial: expect TEXT -->`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
MARKER = re.compile(r"<!-- tutorial: run, exit (\d+)(?: \(tiny: (\d+)\))? -->\n```bash\n(.*?)\n```", re.S)
EXPECT = re.compile(r"<!-- tutorial: expect (.*?) -->")
# What tiny size changes: flag -> value (replaced where the command has it, else appended), per command.
TINY = {
    ("stagesearch", "run"): {"--budget": "4", "--folds": "3", "--radiomics-trials": "3"},
    ("python", "-m", "trainers.phantom"): {"--patients": "12", "--matrix": "48"},
}


def blocks(text: str) -> list[tuple[int, list[str], list[str]]]:
    """(exit code at tiny size, commands, expected output fragments) of every marked block, in page order."""
    found = []
    marks = list(MARKER.finditer(text))
    for i, m in enumerate(marks):
        after = text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        commands = [line for line in m[3].splitlines() if line.strip() and not line.startswith("#")]
        found.append((int(m[2] or m[1]), commands, EXPECT.findall(after)))
    return found


def tiny(command: str, manifest: Path) -> list[str]:
    """The command as the test runs it: its flags at tiny size (see the module docstring)."""
    argv = shlex.split(command.split(" #", 1)[0])
    for prefix, flags in TINY.items():
        if tuple(argv[: len(prefix)]) == prefix:
            if prefix == ("stagesearch", "run") and "--manifest" not in argv:
                flags = {**flags, "--manifest": str(manifest)}
            for flag, value in flags.items():
                if flag in argv:
                    argv[argv.index(flag) + 1] = value
                else:
                    argv += [flag, value]
    if argv[0] == "stagesearch":
        argv = [sys.executable, "-m", "stagesearch", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    return argv


def test_the_page_marks_the_steps_a_reader_needs() -> None:
    """The marked blocks cover a search, promotion, a new phantom and a prediction: removing a marker fails."""
    commands = [c for _, cmds, _ in blocks(TUTORIAL.read_text()) for c in cmds]
    for needed in (
        "stagesearch run",
        "stagesearch promote",
        "python -m trainers.phantom",
        "stagesearch predict",
    ):
        assert any(c.startswith(needed) for c in commands), f"no marked block runs {needed!r}: {commands}"


def test_tiny_flags_replace_or_append(tmp_path: Path) -> None:
    argv = tiny("stagesearch run --space tiny --budget 8  # a comment", tmp_path / "m.csv")
    assert argv[4:] == ["--space", "tiny", "--budget", "4", "--folds", "3", "--radiomics-trials", "3"] + [
        "--manifest",
        str(tmp_path / "m.csv"),
    ]
    assert tiny("python -m trainers.phantom --out new --patients 40", tmp_path)[1:] == [
        "-m",
        "trainers.phantom",
        "--out",
        "new",
        "--patients",
        "12",
        "--matrix",
        "48",
    ]


@pytest.mark.slow
def test_tutorial_commands_run(tiny_cohort: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb", "HF_HUB_OFFLINE": "1"}
    for code, commands, expected in blocks(TUTORIAL.read_text()):
        output = ""
        for command in commands:
            argv = tiny(command, tiny_cohort)
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
            output += done.stdout + done.stderr
            assert done.returncode == code, (
                f"{command!r} (run as {shlex.join(argv)}) exited {done.returncode}, the page says {code}:\n"
                f"{output[-4000:]}"
            )
        for fragment in expected:
            assert fragment in output, (
                f"the page says {command!r} prints {fragment!r}; it printed:\n{output[-4000:]}"
            )
