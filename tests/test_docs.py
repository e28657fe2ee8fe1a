"""The README, docs/ and the commands' --help texts name only what exists: relative links and their anchors, files
of the repository, commands and the options given to them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipelines.config_help import options
from pipelines.config_reference import COMMANDS, config_class

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HELP_SOURCES = sorted((ROOT / "jobs").glob("*.py")) + sorted((ROOT / "pipelines" / "commands").glob("*.py"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A path of the repository; one written as a pattern (zero{2,3}.json, *-paper.yaml, <name>.py) is not matched.
REPO_PATH = re.compile(r"(?<![\w/.$-])((?:jobs|pipelines|sp_core|infra|bench|tests|docs)/[\w./-]*[\w/])(?![\w/.*{<-])")
# The command in a code line -> the config class of its options.
JOB = re.compile(r"(?:^|\s)(?:\S*python\s+)?(jobs/\w+\.py|llava-sp-init|llava-sp-convert)(?=\s|$)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def _code_lines(path: Path) -> list[str]:
    """The lines of fenced code blocks, continuation lines joined."""
    lines, inside, pending = [], False, ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if inside:
            pending += line.rstrip("\\").strip() + " "
            if not line.rstrip().endswith("\\"):
                lines.append(pending.strip())
                pending = ""
    return lines


def _help_command_lines(path: Path) -> list[str]:
    """The example command lines of a command's --help (its module docstring), continuation lines joined."""
    text = path.read_text()
    docstring = text.split('"""')[1] if text.count('"""') >= 2 else ""
    lines, pending = [], ""
    for line in docstring.splitlines():
        if line.startswith("    ") or pending:
            pending += line.rstrip("\\").strip() + " "
            if not line.rstrip().endswith("\\"):
                lines.append(pending.strip())
                pending = ""
    return lines


def _config_of(command: str) -> type:
    for names, target in COMMANDS.items():
        if any(name.split()[-1] == command for name in names.split(", ")):
            return config_class(target)
    raise AssertionError(f"no config for {command}")


def _option_names(schema: type) -> set[str]:
    return {option.name.split(".")[0] for option in options(schema)}


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.name)
def test_every_relative_link_and_anchor_exists(path):
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(linked), f"{path.name} links to {target}: no such heading"


@pytest.mark.parametrize("path", DOCS + HELP_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_file_of_the_repository_named_exists(path):
    for name in REPO_PATH.findall(path.read_text()):
        assert (ROOT / name).exists() or (ROOT / name.rstrip(".")).exists(), f"{path.name} names {name}"


@pytest.mark.parametrize("path", DOCS + HELP_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_command_in_the_docs_and_the_help_exists_and_takes_the_options_given(path):
    for line in _code_lines(path) if path.suffix == ".md" else _help_command_lines(path):
        match = JOB.search(line)
        if not match:
            continue
        command = match.group(1)
        if command.startswith("jobs/"):
            assert (ROOT / command).is_file(), f"{path.name}: {command} does not exist"
        allowed = _option_names(_config_of(command))
        try:
            words = shlex.split(line[match.end():].split(" #")[0])
        except ValueError:  # a quote spans lines: the words on this one are checked as they are
            words = line[match.end():].split()
        for word in words:
            key = word.split("=", 1)[0]
            if "=" not in word or not re.fullmatch(r"[a-z_][\w.]*", key):
                continue
            assert key.split(".")[0] in allowed, f"{path.name}: {command} has no option {key!r} ({line})"
