"""Which files a step read: the command followed with strace (ptrace), and what it opened.

strace writes one log per process (-ff) with every string in hex (-xx), so that no file name,
however odd, can break the parsing or forge a line; each successful open is followed by the
absolute path the kernel resolved for the new descriptor (-y). A file whose first open by the
step could read it is an input; one it first created or truncated is its own output. Links and
renames are followed too: a name the step gave a file stands for that file.
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

# Besides opens, the calls that give a file another name: a step could otherwise read an
# undeclared file through a hard link it then removes, or rename it in, read it, rename it back.
TRACED_CALLS = "open,openat,openat2,creat,link,linkat,rename,renameat,renameat2"
_HEX = r"(?:\\x[0-9a-f]{2})*"
_LINE = re.compile(
    r"^(?P<time>\d+\.\d+) (?P<call>open|openat|openat2|creat)\((?P<args>.*)\) = "
    rf"(?P<fd>\d+)<(?P<path>{_HEX})>\s*$"
)
_NAMING = re.compile(
    r"^(?P<time>\d+\.\d+) (?P<call>link|linkat|rename|renameat|renameat2)\((?P<args>.*)\) "
    r"= 0\s*$"
)
# One path argument: for the *at calls the directory descriptor, which -y shows resolved.
_NAME_ARG = re.compile(rf'(?:(?:AT_FDCWD|\d+)(?:<(?P<dir>{_HEX})>)?, )?"(?P<name>{_HEX})"')
_CWD = re.compile(rf"AT_FDCWD<(?P<cwd>{_HEX})>")
# An open makes a file the step's own only when it surely replaced or created it: O_TRUNC,
# O_CREAT with O_EXCL, creat(). O_RDWR without those reads what was there (O_CREAT or not),
# and O_WRONLY without them neither reads nor owns: a later read of the file still counts.
_SKIP_FLAGS = ("O_PATH", "O_DIRECTORY")
READ, OWN, NEUTRAL, NAMED = "read", "own", "neutral", "named"


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
    # Path arguments (of link and rename too) are printed whole; -s cuts other strings only.
    return [strace, "-f", "-ff", "--seccomp-bpf", "-z", "-qq", "-y", "-xx", "-ttt", "-e",
            f"trace={TRACED_CALLS}", "-o", str(log_dir / "trace"), "--", *argv]


def _unhex(text: str) -> str:
    return bytes.fromhex(text.replace("\\x", "")).decode("utf-8", "surrogateescape")


@dataclass
class Accesses:
    """The regular files the traced processes opened: read first, or written first."""

    read: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)


def _open_kind(call: str, args: str) -> str:
    flags = set(re.findall(r"\bO_[A-Z]+\b", args))
    if call == "creat" or "O_TRUNC" in flags or {"O_CREAT", "O_EXCL"} <= flags:
        return OWN
    return NEUTRAL if "O_WRONLY" in flags else READ


def _resolve(name: str, directory: str) -> str:
    """An absolute path as the kernel resolves it for an open (the parent's links followed),
    so that it compares with what -y printed for opens."""
    path = os.path.normpath(os.path.join(directory, name))
    parent, base = os.path.split(path)
    try:
        return os.path.join(os.path.realpath(parent), base) if base else path
    except ValueError:  # a NUL byte: no name the kernel took, but the log is text we parse
        return path


def parse_logs(log_dir: Path, cwd: Path | None = None) -> Accesses:
    """Every open, link and rename in the logs, in time order across processes. `cwd` is where
    the traced command started, for relative names given to link() and rename()."""
    start = str(cwd) if cwd is not None else os.getcwd()
    events: list[tuple[float, str, str, str]] = []  # (time, kind, path, new name or "")
    for log in sorted(log_dir.glob("trace*")):
        directory = start  # the process's working directory, as its *at calls show it
        with open(log, encoding="ascii", errors="replace") as handle:
            for line in handle:
                seen = _CWD.search(line)
                if seen is not None:
                    directory = _unhex(seen["cwd"])
                match = _LINE.match(line)
                if match is not None:
                    args = match["args"]
                    if any(flag in args for flag in _SKIP_FLAGS):
                        continue
                    events.append((float(match["time"]), _open_kind(match["call"], args),
                                   _unhex(match["path"]), ""))
                    continue
                match = _NAMING.match(line)
                if match is None:
                    continue
                names = [_resolve(_unhex(found["name"]),
                                  _unhex(found["dir"]) if found["dir"] else directory)
                         for found in _NAME_ARG.finditer(match["args"])]
                if len(names) != 2:
                    continue
                exchange = "RENAME_EXCHANGE" in match["args"]
                kind = "link" if match["call"].startswith("link") else (
                    "exchange" if exchange else "rename")
                events.append((float(match["time"]), f"{NAMED}:{kind}", names[0], names[1]))
    return _replay(sorted(events))


def _replay(events: list[tuple[float, str, str, str]]) -> Accesses:
    """First access decides, through the names links and renames gave files: a read of a new
    name is a read of the file it names, and naming a file is reading it (its content is now
    under a name the step may read, or take away as its product)."""
    aliases: dict[str, str] = {}  # a name the step made -> the file it stands for

    def original(path: str) -> str:
        prefix = path
        while True:  # the name, or a directory above it renamed as a whole
            if prefix in aliases:
                return aliases[prefix] + path[len(prefix):]
            parent = os.path.dirname(prefix)
            if parent == prefix:
                return path
            prefix = parent

    accesses = Accesses()

    def touch(path: str, kind: str) -> None:
        if path not in accesses.read and path not in accesses.written:
            (accesses.written if kind == OWN else accesses.read).add(path)

    for _, kind, path, new in events:
        if not kind.startswith(NAMED):
            if kind != NEUTRAL:
                touch(original(path), kind)
            continue
        source, target = original(path), original(new)
        touch(source, READ)
        if kind.endswith(":exchange"):
            touch(target, READ)
            aliases[path] = target
        elif kind.endswith(":rename"):
            aliases.pop(path, None)
        aliases[new] = source
        for name in (path, new):
            if aliases.get(name) == name:
                del aliases[name]  # renamed back: the name is itself again
    return accesses


def undeclared_inputs(read: Iterable[str], *, workspace: Path, declared: Sequence[Path],
                      ignored_roots: Sequence[Path], private_tmp: bool,
                      created: Sequence[Path] = ()) -> list[str]:
    """The files read that no declared material (a file, or a directory and all under it)
    accounts for, sorted: names relative to the workspace inside it, absolute paths outside.
    System directories, the interpreter's own prefix and bytecode caches are no inputs of the
    step. Paths are compared as the kernel resolved them (links followed)."""
    base = Path(os.path.realpath(workspace))
    # A product the step created (absent before it ran) opened O_RDWR is its own output read
    # back (a database, an HDF5 file), never an input.
    materials = [Path(os.path.realpath(path)) for path in (*declared, *created)]
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

