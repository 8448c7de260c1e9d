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
    "CONDA_PREFIX", "VIRTUAL_ENV", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    "CUDA_INJECTION64_PATH", "OMP_TOOL", "OMP_TOOL_LIBRARIES", "NCCL_NET_PLUGIN",
    "NCCL_TUNER_PLUGIN", "NCCL_PROFILER_PLUGIN",
})
# Entries of /proc/<pid>/ that lead to the whole filesystem, a directory or open files.
_PROC_DOORS = frozenset({"root", "cwd", "fd", "map_files", "exe", "fdinfo"})
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
            # `..` in an absolute path only ever climbs out of where it seems to be
            # (/etc/../root); /proc/<pid>/root and its like lead to the host's whole filesystem.
            if ".." in path.parts or (len(path.parts) > 3 and path.parts[1] == "proc"
                                      and path.parts[3] in _PROC_DOORS):
                return True
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
    program = record.argv[0]
    # The program may be an absolute path (the interpreter it was recorded with), but a relative
    # one must not climb out of the workspace.
    if not PurePosixPath(program).is_absolute() and _escapes(program):
        raise InputError(f"{record.source}: the recorded program {program!r} lies outside the "
                         "workspace; refusing to run it.")
    for argument in record.argv[1:]:
        if _escapes(argument):
            raise InputError(f"{record.source}: the recorded command names {argument!r}, which "
                             "leaves the workspace; refusing to run it.")
    for name in _env_assignments(record.argv):
        if changes_what_runs(name) and name not in allowed_env:
            raise InputError(f"{record.source}: the recorded command sets {name} through `env`, "
                             f"which changes what runs; refusing unless you pass --allow-env "
                             f"{name}.")
    for name, value in sorted(record.declared_env.items()):
        if changes_what_runs(name) and name not in allowed_env:
            raise InputError(f"{record.source}: the step sets {name}, which changes what runs; "
                             f"refusing unless you pass --allow-env {name}.")
        if _escapes(value) and name not in allowed_env:
            raise InputError(f"{record.source}: the step sets {name}={value!r}, a path that "
                             "leaves the workspace; refusing to run it.")


def _env_assignments(argv: tuple[str, ...] | list[str]) -> list[str]:
    """The variable names `env [OPTION]... NAME=VALUE... PROGRAM` sets, where argv (or the
    program `env` runs, again) is such a command."""
    names: list[str] = []
    words = list(argv)
    while words and PurePosixPath(words[0]).name == "env":
        words = words[1:]
        while words and (words[0].startswith("-") or "=" in words[0]):
            word = words.pop(0)
            if not word.startswith("-"):
                names.append(word.partition("=")[0])
            elif word in ("-u", "--unset", "-C", "--chdir", "-S", "--split-string"):
                if word in ("-S", "--split-string") and words:
                    names.extend(w.partition("=")[0] for w in words[0].split() if "=" in w)
                if words:
                    words.pop(0)
    return names


def describe(record: StepRecord, workdir: str, env: dict[str, str], sandbox: dict[str, Any],
             workspace: str) -> dict[str, Any]:
    """One entry of the plan shown before anything runs."""
    return {"step": record.step, "attestation": record.source,
            "command": shlex.join(record.argv), "working_directory": workdir,
            "env": dict(sorted(env.items())), "sandbox": sandbox, "workspace": workspace}
