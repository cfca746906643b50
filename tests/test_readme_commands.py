"""The README's one example per command: every ``mtl`` command has one, and each parses."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest
from conftest import ROOT

from mtlkit.cli import build_parser
from mtlkit.components.host import PluginHost

INTRO = "One example of each"


def readme_examples() -> list[list[str]]:
    """The argument lists of the bash block that follows the README's examples line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(INTRO)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, "no bash block after the README's examples line"
    lines = [line.replace("$R", "runs/quick/x") for line in block.group(1).splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("mtl ")]


def command_names(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every leaf command of the parser, as the words typed after ``mtl``."""
    names = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = command_names(sub, (*prefix, name))
                names |= inner or {" ".join((*prefix, name))}
    return names


@pytest.fixture(scope="module")
def parser():
    return build_parser(PluginHost())


def test_every_command_has_an_example(parser):
    examples = readme_examples()
    shown = {" ".join(argv[:2]) for argv in examples} | {argv[0] for argv in examples}
    missing = sorted(name for name in command_names(parser) if name not in shown)
    assert not missing, f"commands without an example in the README: {missing}"


@pytest.mark.parametrize("argv", readme_examples(), ids=lambda argv: " ".join(argv[:2]))
def test_each_example_parses(parser, argv):
    args = parser.parse_args(argv)
    assert hasattr(args, "command_run")
