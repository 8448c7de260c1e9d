"""Which files a step read: the command followed with strace (ptrace), and what it opened.

strace writes one log per process (-ff) with every string in hex (-xx), so that no file name,
however odd, can break the parsing or forge a line; each successful open is followed by the
absolute path the kernel resolved for the new descriptor (-y). A file whose first open by the
step was for reading is an input; one it first created or truncated is its own output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verifier.steps.sandbox import is_system_path

TRACED_CALLS = "open,openat,openat2,creat"
_LINE = re.compile(
    r"^(?P<time>\d+\.\d+) (?P<call>open|openat|openat2|creat)\((?P<args>.*)\) = "
    r"(?P<fd>\d+)<(?P<path>(?:\\x[0-9a-f]{2})*)>\s*$"
)
# Opened to create or replace: the step's own output. O_RDWR alone reads what was there.
_WRITE_FLAGS = ("O_WRONLY", "O_CREAT", "O_TRUNC")
_SKIP_FLAGS = ("O_PATH", "O_DIRECTORY")


def available() -> str | None:
    return shutil.which("strace")


def usable() -> tuple[str | None, str | None]:
    """(strace, None) when it can follow a command here, else (None, why not): ptrace may be
    forbidden (a container without CAP_SYS_PTRACE, Yama ptrace_scope 3)."""
    strace = available()
    if strace is None:
        return None, "strace is not installed (Debian/Ubuntu: apt-get install strace)"
    true = shutil.which("true") or "/bin/true"
    try:
        probe = subprocess.run([strace, "-f", "--seccomp-bpf", "-qq", "-o", os.devnull, "--",
                                true], capture_output=True, text=True, timeout=60,
                               check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"strace cannot start ({error})"
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no reason given"])[-1]
        return None, f"strace cannot trace here ({reason})"
    return strace, None


def traced_argv(strace: str, argv: Sequence[str], log_dir: Path) -> list[str]:
    return [strace, "-f", "-ff", "--seccomp-bpf", "-z", "-qq", "-y", "-xx", "-ttt", "-e",
            f"trace={TRACED_CALLS}", "-o", str(log_dir / "trace"), "--", *argv]


def _unhex(text: str) -> str:
    return bytes.fromhex(text.replace("\\x", "")).decode("utf-8", "surrogateescape")


@dataclass
class Accesses:
    """The regular files the traced processes opened: read first, or written first."""

    read: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)


def parse_logs(log_dir: Path) -> Accesses:
    """Every open in the logs, in time order across processes."""
    events: list[tuple[float, str, bool]] = []
    for log in sorted(log_dir.glob("trace*")):
        with open(log, encoding="ascii", errors="replace") as handle:
            for line in handle:
                match = _LINE.match(line)
                if match is None:
                    continue
                args = match["args"]
                if any(flag in args for flag in _SKIP_FLAGS):
                    continue
                writes = match["call"] == "creat" or any(f in args for f in _WRITE_FLAGS)
                events.append((float(match["time"]), _unhex(match["path"]), writes))
    accesses = Accesses()
    for _, path, writes in sorted(events):
        if path not in accesses.read and path not in accesses.written:
            (accesses.written if writes else accesses.read).add(path)
    return accesses


def undeclared_inputs(read: Iterable[str], *, workspace: Path, declared: Sequence[Path],
                      ignored_roots: Sequence[Path], private_tmp: bool) -> list[str]:
    """The files read that no declared material (a file, or a directory and all under it)
    accounts for, sorted: names relative to the workspace inside it, absolute paths outside.
    System directories, the interpreter's own prefix and bytecode caches are no inputs of the
    step. Paths are compared as the kernel resolved them (links followed)."""
    base = Path(os.path.realpath(workspace))
    materials = [Path(os.path.realpath(path)) for path in declared]
    found: set[str] = set()
    for text in read:
        if not text.startswith("/") or is_system_path(text) or "/__pycache__/" in text:
            continue
        path = Path(text)
        if any(path.is_relative_to(root) for root in ignored_roots):
            continue
        if any(path.is_relative_to(material) for material in materials):
            continue
        inside = path.is_relative_to(base)
        if private_tmp and not inside and (text == "/tmp" or text.startswith("/tmp/")):
            continue  # the sandbox's own /tmp: only what the step itself wrote there
        if not path.is_file():
            continue
        found.add(path.relative_to(base).as_posix() if inside else text)
    return sorted(found)


# Runtimes that start a pool of threads of their own, by the file name their shared library
# has (wheels rename them: numpy.libs/libscipy_openblas64_-….so, torch.libs/libgomp-….so.1).
# A step that loaded none of them ran no threaded arithmetic, so its thread count cannot
# change its results (reports.audit.environment_risks).
THREADED_LIBRARIES: dict[str, tuple[str, ...]] = {
    "blis": ("libblis",),
    "libgomp": ("libgomp",),
    "libiomp5": ("libiomp5",),
    "libomp": ("libomp.", "libomp-"),
    "mkl": ("libmkl_",),
    "onnxruntime": ("libonnxruntime",),
    "openblas": ("libopenblas", "libscipy_openblas"),
    "tbb": ("libtbb",),
    "tensorflow": ("libtensorflow_framework",),
    "torch": ("libtorch_cpu",),
}


def threaded_libraries(read: Iterable[str]) -> list[str]:
    """The THREADED_LIBRARIES names of the shared libraries among the files read, sorted:
    names from the fixed table only, never a path."""
    found: set[str] = set()
    for text in read:
        base = text.rsplit("/", 1)[-1]
        if ".so" not in base and not base.endswith(".dylib"):
            continue
        found.update(name for name, prefixes in THREADED_LIBRARIES.items()
                     if base.startswith(prefixes))
    return sorted(found)

