"""The files a rebuilt step starts from: the recorded source, and nothing else.

When the step recorded a git commit, its workspace is that commit's tree (the directory the step
ran in), taken blob by blob from the git repository of --source: never the rebuilder's
working tree, so no untracked or ignored file (keys, attestations, earlier outputs, a stray
secret) can reach the step. Without a recorded commit it is the files git tracks in --source,
or, outside git, nothing at all; the declared materials are then placed by digest.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from verifier.errors import InputError

_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
# Never let the repository's own configuration run a program (fsmonitor, a pager).
_GIT = ("git", "-c", "core.fsmonitor=false", "-c", "core.pager=cat")

GIT_COMMIT = "git-commit"
GIT_TRACKED = "git-tracked"
MATERIALS_ONLY = "declared-materials"


@dataclass(frozen=True)
class Origin:
    """Where a workspace came from: the method, the commit used (if any), and a sentence."""

    method: str
    commit: str | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "commit": self.commit}


def _git(source: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess[Any]:
    return subprocess.run([*_GIT, "-C", str(source), *args], capture_output=True, timeout=600,
                          check=False, text=not binary, stdin=subprocess.DEVNULL)


def git_state(source: Path) -> dict[str, Any] | None:
    """The commit --source is at and whether its tracked files differ from it; None outside
    git."""
    if shutil.which("git") is None:
        return None
    head = _git(source, "rev-parse", "--verify", "-q", "HEAD")
    if head.returncode != 0:
        return None
    status = _git(source, "status", "--porcelain", "--untracked-files=no")
    return {"commit": head.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def recorded_revision(environment: dict[str, Any], source: str) -> tuple[str, str] | None:
    """(commit, directory inside the repository) the step recorded, checked as attestation input
    must be: a full hex commit id and a relative path that stays inside the repository."""
    git = environment.get("git")
    if not isinstance(git, dict) or git.get("commit") in (None, ""):
        return None
    commit, prefix = git.get("commit"), git.get("path", "")
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        raise InputError(f"{source}: the recorded git commit {commit!r} is not a commit id; "
                         "refusing to use it.")
    if not isinstance(prefix, str):
        raise InputError(f"{source}: the recorded git path is not a string.")
    path = PurePosixPath(prefix)
    if (path.is_absolute() or ".." in path.parts or prefix.startswith("-")
            or any(c in prefix for c in "\x00\n:")):
        raise InputError(f"{source}: the recorded git path {prefix!r} leaves the repository; "
                         "refusing to use it.")
    return commit, path.as_posix().strip("/") if prefix else ""


def check_available(source: Path, revision: tuple[str, str] | None, attestation: str) -> None:
    """Refuse, before anything runs, a recorded commit that --source cannot give."""
    if revision is None:
        return
    commit, _ = revision
    if git_state(source) is None and not (source / ".git").exists():
        raise InputError(f"{attestation}: the step was recorded at git commit {commit[:12]}, "
                         f"but --source {source} is not a git checkout; give the repository it "
                         "came from.")
    if _git(source, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise InputError(f"{attestation}: the recorded git commit {commit} is not in the "
                         f"repository of --source {source}; fetch it first.")


def populate(source: Path, workspace: Path, revision: tuple[str, str] | None) -> Origin:
    """Fill the (new, empty) workspace with the recorded source."""
    workspace.mkdir(parents=True, exist_ok=True)
    if revision is not None:
        commit, prefix = revision
        # A commit names its root tree as <commit>^{tree} (`cat-file -t` of the commit alone
        # says "commit").
        tree = f"{commit}:{prefix}" if prefix else f"{commit}^{{tree}}"
        kind = _git(source, "cat-file", "-t", tree)
        if kind.returncode != 0 or kind.stdout.strip() != "tree":
            return Origin(GIT_COMMIT, commit, f"the recorded commit {commit[:12]} has no "
                          f"directory {prefix!r}; the workspace holds the declared materials "
                          "alone.")
        top = _git(source, "rev-parse", "--show-toplevel")
        # From a subdirectory git would read the tree's paths relative to it: work from the top.
        _extract(Path(top.stdout.strip()) if top.returncode == 0 else source, tree, workspace)
        return Origin(GIT_COMMIT, commit, f"workspace from the recorded git commit "
                      f"{commit[:12]}" + (f" ({prefix}/)" if prefix else "") + ".")
    if git_state(source) is not None:
        listed = _git(source, "ls-files", "-z", "--cached", "--", ".", binary=True)
        if listed.returncode == 0:
            _copy_tracked(source, workspace, listed.stdout.split(b"\0"))
            return Origin(GIT_TRACKED, None, "the step recorded no git commit: the workspace "
                          "holds the files git tracks in --source and the declared materials.")
    return Origin(MATERIALS_ONLY, None, "the step recorded no git commit and --source is not "
                  "in git: the workspace holds the declared materials alone.")


def _extract(source: Path, tree: str, workspace: Path) -> None:
    """Write the tree's files into the workspace exactly as committed: blobs through
    `git cat-file`, so that no .gitattributes rule (export-ignore, export-subst, a filter)
    changes or drops a file on the way, as `git archive` would let it."""
    listing = _git(source, "ls-tree", "-r", "-z", tree, binary=True)
    if listing.returncode != 0:
        reason = (listing.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise InputError(f"{source}: git ls-tree {tree} failed ({reason}).")
    entries: list[tuple[str, str, PurePosixPath]] = []
    for raw in listing.stdout.split(b"\0"):
        if not raw:
            continue
        meta, _, name = raw.partition(b"\t")
        mode, kind, sha = meta.decode("ascii", "replace").split(" ")
        path = PurePosixPath(os.fsdecode(name))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise InputError(f"{source}: the commit holds a path {str(path)!r} that leaves the "
                             "workspace; refusing to use it.")
        if any(part.lower() == ".git" for part in path.parts):
            # Only a crafted tree holds one: its config (an fsmonitor, hooks) would run
            # programs on the rebuilder's next `git status` in a kept workspace.
            continue
        if kind == "blob":  # a submodule ("commit") is not part of this repository's source
            entries.append((mode, sha, path))
    _check_entries(source, tree, [path for _, _, path in entries])
    process = subprocess.Popen([*_GIT, "-C", str(source), "cat-file", "--batch"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    assert process.stdin is not None and process.stdout is not None
    feeder = threading.Thread(target=_feed, args=(process.stdin, [e[1] for e in entries]),
                              daemon=True)
    feeder.start()
    made: set[PurePosixPath] = set()
    try:
        for mode, sha, path in entries:
            header = process.stdout.readline().split()
            if len(header) != 3 or header[0].decode() != sha:
                raise InputError(f"{source}: git cat-file did not give blob {sha}.")
            size = int(header[2])
            _make_directories(workspace, path.parent, made)
            target = workspace / path
            if mode == "120000":
                os.symlink(os.fsdecode(process.stdout.read(size)), target)
            else:
                # O_EXCL|O_NOFOLLOW: a name is written once, never through a link.
                descriptor = os.open(target, _NEW_FILE, 0o755 if mode == "100755" else 0o644)
                with open(descriptor, "wb") as handle:
                    _copy_exactly(process.stdout, handle, size)
                    os.fchmod(handle.fileno(), 0o755 if mode == "100755" else 0o644)
            process.stdout.read(1)  # the newline after each blob
    except (OSError, ValueError) as error:
        raise InputError(f"{source}: the recorded commit's files could not be written into "
                         f"the workspace ({error}).") from None
    finally:
        process.kill()
        process.wait()
        feeder.join()


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _check_entries(source: Path, tree: str, paths: list[PurePosixPath]) -> None:
    """Refuse a tree (only a crafted one can hold this) that names a path twice, or a path
    inside a file or link it also names: written in order, `out -> /somewhere` and then
    `out/file` would write outside the workspace."""
    seen: set[PurePosixPath] = set()
    for path in paths:
        if path in seen:
            raise InputError(f"{source}: the tree {tree} names {str(path)!r} twice; refusing "
                             "to use it.")
        seen.add(path)
    for path in paths:
        for parent in list(path.parents)[:-1]:
            if parent in seen:
                raise InputError(f"{source}: the tree {tree} holds {str(path)!r} inside "
                                 f"{str(parent)!r}, which it names as a file or link; refusing "
                                 "to use it.")


def _make_directories(workspace: Path, relative: PurePosixPath,
                      made: set[PurePosixPath]) -> None:
    """Make workspace/relative one directory at a time, refusing any that is a link: nothing
    is ever written through a link into a place outside the workspace."""
    current = PurePosixPath()
    for part in relative.parts:
        current = current / part
        if current in made:
            continue
        path = workspace / current
        try:
            os.mkdir(path)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise InputError(f"{workspace}: {current.as_posix()!r} is a link or a file, "
                                 "so nothing is written inside it.") from None
        made.add(current)


def _feed(stdin: Any, shas: list[str]) -> None:
    try:
        for sha in shas:
            stdin.write(sha.encode() + b"\n")
        stdin.close()
    except OSError:
        pass  # the reader gave up; it says why


def _copy_exactly(source: Any, sink: Any, size: int) -> None:
    left = size
    while left:
        chunk = source.read(min(left, 1 << 20))
        if not chunk:
            raise ValueError("the blob ended early")
        sink.write(chunk)
        left -= len(chunk)


def _copy_tracked(source: Path, workspace: Path, names: list[bytes]) -> None:
    made: set[PurePosixPath] = set()
    for raw in names:
        if not raw:
            continue
        name = os.fsdecode(raw)
        origin, target = source / name, workspace / name
        if not origin.is_symlink() and not origin.is_file():
            continue  # deleted in the working tree, or a submodule
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise InputError(f"{source}: git lists a path {name!r} that leaves the workspace; "
                             "refusing to use it.")
        try:
            _make_directories(workspace, relative.parent, made)
            if os.path.lexists(target):
                raise InputError(f"{source}: git lists {name!r} twice; refusing to use it.")
            shutil.copy2(origin, target, follow_symlinks=False)
        except OSError as error:
            raise InputError(f"{origin}: could not be copied into the workspace "
                             f"({error.strerror}).") from None


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove(root: Path, relative: PurePosixPath) -> None:
    """Remove root/relative (a file, a link or a whole directory) without following any link:
    each directory on the way is opened relative to the one before and never through a link,
    so a committed link (`out -> /home/someone`) can never lead a removal outside root. A path
    that passes through a link or a file is left alone: nothing of it lies inside root."""
    parts = [part for part in relative.parts if part not in ("", ".")]
    if not parts or relative.is_absolute() or ".." in parts:
        return
    descriptor = os.open(root, _DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIRECTORY, dir_fd=descriptor)
            except OSError:
                return  # missing, a file, or a link (ELOOP/ENOTDIR): nothing inside to remove
            os.close(descriptor)
            descriptor = child
        try:
            info = os.stat(parts[-1], dir_fd=descriptor, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(parts[-1], dir_fd=descriptor)
        else:
            os.unlink(parts[-1], dir_fd=descriptor)
    finally:
        os.close(descriptor)


def remove_repositories(root: Path) -> list[str]:
    """Remove every `.git` (directory, file or link) under root, never following a link, and
    name what was removed: a kept workspace holds files, not a repository whose configuration
    would run programs when its user runs git there."""
    removed: list[str] = []
    for top, directories, files in os.walk(root):
        for name in [*directories, *files]:
            if name.lower() == ".git":
                relative = PurePosixPath(Path(top, name).relative_to(root).as_posix())
                remove(root, relative)
                removed.append(relative.as_posix())
        directories[:] = [d for d in directories if d.lower() != ".git"]
    return sorted(removed)
