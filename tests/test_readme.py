"""The README's commands cannot rot: every `edgeinfer ...` line in it parses with today's CLI, and
the two fresh-machine commands exist and are what CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edgeinfer.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", README)  # shell line continuations
    found = []
    for line in joined.splitlines():
        text = line.strip()
        if text.startswith("edgeinfer "):
            found.append(text.split("  #")[0].strip())
    return found


def test_readme_has_commands() -> None:
    assert len(_commands()) >= 10


@pytest.mark.parametrize("command", _commands())
def test_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.handler), command


def test_fresh_machine_commands_exist_and_ci_runs_the_test_one() -> None:
    assert "    scripts/demo\n" in README and "    scripts/test\n" in README
    for script in ("demo", "test", "setup"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
