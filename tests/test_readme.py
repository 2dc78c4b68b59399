"""The README's commands, as a newcomer pastes them after `make setup` and
`source .venv/bin/activate`: each must name a make target, module, parameter or deployment
that exists."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
TOOLS = {"dvc", "prefect", "dask", "python", "git", "make", "source", "export"}


def commands() -> list[str]:
    """Every command line of the README's bash blocks (continuations joined, comments cut), and
    the commands quoted inline as `make …` or `python -m …`."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    found += [c for c in re.findall(r"`((?:make [\w-]+|python -m [\w.]+)[^`]*)`", README) if "<" not in c]
    return found


def param_exists(line: str, key: str) -> None:
    node = PARAMS
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"{line!r}: params.yaml has no {key}"
        node = node[part]


def check(line: str) -> None:
    for command in re.split(r"\s*(?:&&|\|\||;)\s*", line):
        words = shlex.split(command)
        while words[0] == "time" or re.match(r"^[A-Z_]+=", words[0]):  # `time …`, `NAME=value …`
            words = words[1:]
        tool = words[0]
        assert tool in TOOLS, f"{line!r}: {tool} is not one of the environment's commands"
        if tool == "make":
            variables = {w for w in words[1:] if re.match(r"^[A-Z_]+=", w)}  # make study SET="k=v ..."
            assert set(words[1:]) - variables <= TARGETS, f"{line!r}: no make target {set(words[1:]) - TARGETS}"
            for variable in variables:
                name, _, value = variable.partition("=")
                assert name == "SET", f"{line!r}: the Makefile reads no variable {name}"
                for item in value.split():
                    param_exists(line, item.split("=")[0])
        if tool == "python" and words[1:2] == ["-m"]:
            assert importlib.util.find_spec(words[2]) is not None, f"{line!r}: no module {words[2]}"
        if tool in ("dvc", "prefect", "dask"):
            assert (Path(sys.executable).parent / tool).exists(), f"{tool} is not in the environment"
        for i, word in enumerate(words):
            if word in ("-S", "--set-param", "--set") and tool != "git":
                param_exists(line, words[i + 1].split("=")[0])
        if words[:3] == ["prefect", "deployment", "run"]:
            assert words[3] == f"train-compare/{PARAMS['deploy']['name']}", f"{line!r}: no such deployment"


@pytest.mark.parametrize("line", commands())
def test_the_readme_command_is_valid(line):
    check(line)


def test_the_check_catches_what_a_newcomer_would_trip_on():
    for wrong in ("make fast", "python -m benchmarks.nothing", "dvc exp run -S train.epoch=3",
                  "prefect deployment run train-compare/daily", "uv-dvc repro", "make study SET=train.epoch=3",
                  "make study EPOCHS=3"):
        with pytest.raises(AssertionError):
            check(wrong)
