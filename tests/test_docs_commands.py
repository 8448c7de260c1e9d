"""Every flag a documented command line uses is one its command has.

The command lines are taken from the docs a newcomer copies from (the README, docs/ and each
example's README): every `model-verifier …` or `verify-model …` in a fenced code block or an
inline code span (or a span such as `rebuild --segments 3`), continuation lines joined. Each
`--flag` up to a bare `--` (after which the step's own command begins) must be listed in that
command's `--help`. Placeholders (`--<flag>`, `--FLAG`, `--…`) are skipped. The examples in the
commands' own `--help` are checked the same way.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verifier.cli import app, verify_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").glob("*/README.md"))]
# A command starts a line (after a prompt) or follows a shell operator, `env` or VAR=value;
# "== verify-model again: …" in a demo's printed output is no command.
PROGRAM = re.compile(r"(?:^\s*(?:\$\s+)?|(?:&&|\|\|?|;|\(|\bthen|\bdo|\bif|!)\s+)"
                     r"(?:env\s+)?(?:\w+=\S*\s+)*(model-verifier|verify-model)(?=\s)")
FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")
# Where a command line ends in a shell line: a pipe, a list, a subshell's end, a redirection.
END = re.compile(r"\s(?:\|\|?|&&|;|>>?|2>)\s|\)\s*$|\s#\s")
WITH_SUBCOMMANDS = {"policy"}
SUBCOMMANDS = {"keygen", "digest", "record", "rebuild", "verify-bundle", "verify-vsa", "export",
               "sign-model", "diff", "audit", "openness", "contamination", "push", "attach",
               "pull", "verify", "policy"}
LABEL = re.compile(r"^.{1,200}?:\s+(?=(?:\w+=\S*\s+)*(?:model-verifier|verify-model)\s)")


def _code(text: str) -> list[str]:
    """The lines of every fenced block and every inline code span, continuations joined; a
    span that starts with a command's name and uses a flag (`rebuild --segments 3`) is that
    command's line."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line)
            continue
        for span in re.findall(r"`([^`]+)`", line):
            words = span.split()
            if len(words) > 1 and words[0] in SUBCOMMANDS and FLAG.search(span):
                span = f"model-verifier {span}"
            lines.append(span)
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line)
    return joined


def command_lines(text: str) -> list[tuple[str, list[str]]]:
    """(program, its arguments) for each command line in the text."""
    found = []
    for line in _code(text):
        for match in PROGRAM.finditer(line):
            rest = line[match.end(1):]
            if end := END.search(rest):
                rest = rest[:end.start()]
            try:
                words = shlex.split(rest, comments=False)
            except ValueError:
                words = rest.split()
            if "--" in words:
                words = words[:words.index("--")]
            found.append((match.group(1), words))
    return found


def _command(program: str, words: list[str]) -> list[str]:
    if program == "verify-model":
        return []
    names = [w for w in words if not w.startswith("-")]
    if not names:
        return []
    return names[:2] if names[0] in WITH_SUBCOMMANDS and len(names) > 1 else names[:1]


@cache
def help_flags(program: str, command: tuple[str, ...]) -> frozenset[str] | None:
    application = verify_app if program == "verify-model" else app
    result = CliRunner().invoke(application, [*command, "--help"], terminal_width=200)
    if result.exit_code != 0:
        return None
    return frozenset(FLAG.findall(result.stdout))


def _used_flags(words: list[str]) -> list[str]:
    flags = []
    for word in words:
        flag = word.split("=", 1)[0]
        if FLAG.fullmatch(flag):
            flags.append(flag)
    return flags


def problems(where: str, text: str) -> list[str]:
    found = []
    for program, words in command_lines(text):
        command = _command(program, words)
        if program == "model-verifier" and not command:
            continue  # the bare name (pip install model-verifier, `model-verifier --help`)
        known = help_flags(program, tuple(command))
        shown = " ".join([program, *command])
        if known is None:
            found.append(f"{where}: `{shown}` is no command")
            continue
        found += [f"{where}: `{shown}` has no {flag}" for flag in _used_flags(words)
                  if flag not in known]
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_flag_is_in_its_command_s_help(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.parent == ROOT or path.name == "replay.md":
        assert command_lines(text), f"{path}: no command line found"
    assert problems(str(path.relative_to(ROOT)), text) == []


def _commands() -> list[list[str]]:
    from typer.main import get_command

    root = get_command(app)
    listed = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        listed += [[name, sub] for sub in subcommands] if subcommands else [[name]]
    return listed


# Each new way to use a command is shown in its --help, as the older ways are.
EXAMPLES_OF = {
    ("record",): ["--checkpoints", "--resume"],
    ("rebuild",): ["--segments", "--checkpoints-from oci://"],
    ("push",): ["--checkpoints"],
    ("attach",): ["--checkpoints"],
    ("verify",): ["hf://"],
    ("policy", "check"): ["replay"],
}


@pytest.mark.parametrize("command", EXAMPLES_OF, ids=" ".join)
def test_the_help_shows_an_example_of_the_new_flags(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=1000)
    examples = " ".join(" ".join(p.split()) for p in result.stdout.split("\n\n")
                        if re.search(r"(?:model-verifier|verify-model) ", p)
                        and not p.lstrip().startswith("Usage:"))
    missing = [text for text in EXAMPLES_OF[command] if text not in examples]
    assert missing == [], f"model-verifier {' '.join(command)} --help shows no {missing}"


def test_the_examples_in_every_help_use_real_flags() -> None:
    found: list[str] = []
    for command in [*_commands(), None]:
        program = "verify-model" if command is None else "model-verifier"
        application = verify_app if command is None else app
        result = CliRunner().invoke(application, [*(command or []), "--help"],
                                    terminal_width=1000)
        assert result.exit_code == 0, result.output
        # An example is one paragraph ("Example: model-verifier …", "Keyless: …"); click
        # wraps it, so its lines are joined first and its label taken off.
        paragraphs = [LABEL.sub("", " ".join(p.split())) for p in result.stdout.split("\n\n")]
        examples = [p for p in paragraphs if PROGRAM.match(p)]
        if command is not None and command != ["verify"]:  # verify: verify-model's own help
            assert examples, f"model-verifier {' '.join(command)} --help: no example"
        found += problems(f"{' '.join([program, *(command or [])])} --help",
                          "\n".join(f"```\n{p}\n```" for p in examples))
    assert found == []


def test_the_extraction_sees_what_it_should() -> None:
    text = ("Run `model-verifier rebuild a.json --segments 3 --seed=ab` or:\n\n```bash\n"
            "$ model-verifier record --step s \\\n  --product p -- python t.py --data d\n"
            "verify-model m --policy p.yaml | tee log\n== verify-model again: --env\n```\n")
    assert command_lines(text) == [
        ("model-verifier", ["rebuild", "a.json", "--segments", "3", "--seed=ab"]),
        ("model-verifier", ["record", "--step", "s", "--product", "p"]),
        ("verify-model", ["m", "--policy", "p.yaml"])]
    assert problems("x", "`model-verifier rebuild a --no-such-flag`") == [
        "x: `model-verifier rebuild` has no --no-such-flag"]
    assert problems("x", "`attach --attestations a`") == [
        "x: `model-verifier attach` has no --attestations"]


def test_the_commands_named_here_are_the_cli_s() -> None:
    assert {c[0] for c in _commands()} == SUBCOMMANDS
