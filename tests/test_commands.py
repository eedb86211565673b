"""`stagesearch` and each subcommand start from any folder, and say what they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stagesearch.cli import COMMANDS, main, usage

ROOT = Path(__file__).resolve().parents[1]


def stagesearch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `stagesearch` script beside this Python, else `python -m stagesearch` on this checkout."""
    script = Path(sys.executable).parent / "stagesearch"
    if script.exists():
        cmd, env = [str(script)], None
    else:  # an environment that installed the project before the command existed
        cmd, env = [sys.executable, "-m", "stagesearch"], {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180, cwd=cwd, env=env)


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    done = stagesearch("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in COMMANDS:
        assert f"  {name} " in done.stdout
    assert done.stdout.strip() == usage()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help_from_another_folder(name: str, tmp_path: Path) -> None:
    done = stagesearch(name, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: stagesearch {name}"), done.stdout[:200]
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_unknown_or_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonesuch"]) == 2
    assert "unknown command 'nonesuch'" in capsys.readouterr().err
    assert main([]) == 2


def test_commands_name_importable_modules_with_main() -> None:
    import importlib.util

    for name, command in COMMANDS.items():
        assert importlib.util.find_spec(command.module) is not None, name


def test_version_is_the_installed_one(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = stagesearch("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"stagesearch {version('stagesearch')}"
