"""What a rebuild will run, checked before anything runs, and shown to the rebuilder.

An attestation is input from someone else, even when a trusted signer signed it: its command
line and variables must not reach outside the workspace, and variables that change which code
runs (the loader's LD_*, PYTHONPATH, PATH, a shell's BASH_ENV, ...) are refused unless the
rebuilder allows each by name (--allow-env). The sandbox is the real wall; these checks make an
attempt to climb it visible and refused up front.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection
from pathlib import PurePosixPath
from typing import Any

from verifier.errors import InputError
from verifier.formats.statement import StepRecord
from verifier.steps.sandbox import is_system_path

# Variables that decide which program, library or startup code runs.
CODE_VARIABLES = frozenset({
    "PATH", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH",
    "GLOBIGNORE", "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS",
    "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "GCONV_PATH", "HOSTALIASES", "LOCPATH", "NLSPATH", "HOME", "XDG_CONFIG_HOME", "TMPDIR",
    "CONDA_PREFIX", "VIRTUAL_ENV",
})
CODE_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "GIT_", "PYTHON", "MALLOC_", "GLIBC_TUNABLES")
# PYTHON* variables that change no code path worth refusing: hashing seed, buffering, encoding.
HARMLESS_PYTHON = frozenset({
    "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
    "PYTHONUTF8", "PYTHONFAULTHANDLER",
})


def changes_what_runs(name: str) -> bool:
    if name in HARMLESS_PYTHON:
        return False
    return name in CODE_VARIABLES or name.startswith(CODE_PREFIXES)


def _escapes(text: str) -> bool:
    """A path-shaped argument that leaves the workspace: absolute outside the system
    directories, or relative climbing above it with '..'."""
    candidates = [text]
    if text.startswith("-") and "=" in text:
        candidates.append(text.partition("=")[2])
    for candidate in candidates:
        if "\x00" in candidate:
            return True
        path = PurePosixPath(candidate)
        if path.is_absolute():
            if " " not in candidate and not is_system_path(candidate):
                return True
            continue
        depth = 0
        for part in path.parts:
            if part == "..":
                depth -= 1
                if depth < 0:
                    return True
            elif part != ".":
                depth += 1
    return False


def check_step(record: StepRecord, allowed_env: Collection[str]) -> None:
    """Refuse a step whose argv or variables reach outside the workspace or change what runs."""
    for argument in record.argv[1:]:
        if _escapes(argument):
            raise InputError(f"{record.source}: the recorded command names {argument!r}, which "
                             "leaves the workspace; refusing to run it.")
    for name, value in sorted(record.declared_env.items()):
        if changes_what_runs(name) and name not in allowed_env:
            raise InputError(f"{record.source}: the step sets {name}, which changes what runs; "
                             f"refusing unless you pass --allow-env {name}.")
        if _escapes(value) and name not in allowed_env:
            raise InputError(f"{record.source}: the step sets {name}={value!r}, a path that "
                             "leaves the workspace; refusing to run it.")


def describe(record: StepRecord, workdir: str, env: dict[str, str], sandbox: dict[str, Any],
             workspace: str) -> dict[str, Any]:
    """One entry of the plan shown before anything runs."""
    return {"step": record.step, "attestation": record.source,
            "command": shlex.join(record.argv), "working_directory": workdir,
            "env": dict(sorted(env.items())), "sandbox": sandbox, "workspace": workspace}
