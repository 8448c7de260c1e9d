"""Parallel sha256 of files and in-toto `dirHash` of directories.

A file's digest is plain sha256, so anyone can recompute it with `openssl dgst -sha256`.
A directory's `dirHash` is the in-toto DigestSet `dirHash` (Go's dirhash "h1", in hex):
sha256 over the lines "<sha256 hex>  <relative path>\\n", paths sorted by code point, which is
what `find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum` prints
inside the directory.

Files are hashed on a thread pool with large reads: hashlib releases the GIL on large
buffers, so threads scale across cores. Within one `Hasher` a file is hashed once; the memo
is keyed by the file's identity and modification stamp and never outlives the command.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from verifier.errors import InputError

READ_SIZE = 4 * 1024 * 1024

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file cheaply: a change to any field means re-hash."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: Path, progress: ProgressCallback | None = None) -> str:
    """sha256 hex of one file, read in large chunks into one reused buffer."""
    hasher = hashlib.sha256()
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as stream:
            while True:
                count = stream.readinto(buffer)
                if not count:
                    break
                hasher.update(view[:count])
                if progress is not None:
                    progress(count)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file.") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied.") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
    return hasher.hexdigest()


def dir_hash(files: dict[str, str]) -> str:
    """dirHash of a directory given {relative posix path: sha256 hex} of all its files."""
    summary = hashlib.sha256()
    for name in sorted(files):
        summary.update(f"{files[name]}  {name}\n".encode())
    return summary.hexdigest()


def _is_utf8(name: str) -> bool:
    """False for a name the OS gave us with undecodable bytes (surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_files(root: Path, *, allow_symlinks: bool = False) -> list[str]:
    """Relative POSIX paths of every regular file under root, sorted by code point."""
    found: list[str] = []
    pending = [(root, PurePosixPath())]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            raise InputError(f"{directory}: cannot list directory ({error.strerror}).") from None
        for entry in entries:
            relative = prefix / entry.name
            if "\n" in entry.name:
                raise InputError(f"{Path(entry.path)}: file names with a newline are refused.")
            if not _is_utf8(entry.name):
                shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
                raise InputError(
                    f"{shown}: the file name is not UTF-8; digests name files in UTF-8 only."
                )
            if entry.is_symlink() and not allow_symlinks:
                raise InputError(
                    f"{Path(entry.path)}: is a symbolic link; links are refused because the "
                    "digest would not say what they point to."
                )
            if entry.is_dir():
                pending.append((Path(entry.path), relative))
            elif entry.is_file():
                found.append(relative.as_posix())
            else:
                raise InputError(f"{Path(entry.path)}: is not a regular file or directory.")
    return sorted(found)


@dataclass(frozen=True)
class PathDigest:
    """The digest of one path given by the user: a file, or a directory and all its files."""

    path: Path
    is_dir: bool
    sha256: str | None  # files
    dir_hash: str | None  # directories
    files: dict[str, str]  # directories: {relative posix path: sha256}

    @property
    def algorithm(self) -> str:
        return "dirHash" if self.is_dir else "sha256"

    @property
    def value(self) -> str:
        return (self.dir_hash if self.is_dir else self.sha256) or ""


class Hasher:
    """Hashes many files in parallel; each file at most once per Hasher (per command)."""

    def __init__(
        self,
        workers: int | None = None,
        progress: ProgressCallback | None = None,
        *,
        allow_symlinks: bool = False,
    ) -> None:
        self._workers = workers or os.cpu_count() or 1
        self._progress = progress
        self._allow_symlinks = allow_symlinks
        self._memo: dict[FileStamp, str] = {}
        self._lock = threading.Lock()

    def _stat_file(self, path: Path) -> os.stat_result:
        try:
            st = os.stat(path) if self._allow_symlinks else os.lstat(path)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file or directory.") from None
        except OSError as error:
            raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
        if stat.S_ISLNK(st.st_mode):
            raise InputError(f"{path}: is a symbolic link; links are refused.")
        return st

    def _hash_one(self, path: Path) -> str:
        stamp = FileStamp.of(self._stat_file(path))
        with self._lock:
            known = self._memo.get(stamp)
        if known is not None:
            return known
        value = sha256_file(path, self._progress)
        with self._lock:
            self._memo[stamp] = value
        return value

    def hash_files(self, paths: Iterable[Path]) -> list[str]:
        """sha256 of each path, in order, in parallel."""
        ordered = list(paths)
        if len(ordered) <= 1 or self._workers == 1:
            return [self._hash_one(p) for p in ordered]
        with ThreadPoolExecutor(max_workers=min(self._workers, len(ordered))) as pool:
            return list(pool.map(self._hash_one, ordered))

    def total_bytes(self, paths: Iterable[Path]) -> int:
        """Bytes the given files and directories hold (for a progress bar)."""
        total = 0
        for path in self._expand(paths):
            total += self._stat_file(path).st_size
        return total

    def _expand(self, paths: Iterable[Path]) -> Iterator[Path]:
        for path in paths:
            if stat.S_ISDIR(self._stat_file(path).st_mode):
                for name in list_files(path, allow_symlinks=self._allow_symlinks):
                    yield path / name
            else:
                yield path

    def digest_paths(self, paths: Iterable[Path]) -> list[PathDigest]:
        """Digest files and directories; every file of every directory goes into one pool."""
        requested = list(paths)
        plan: list[tuple[Path, list[str] | None]] = []
        jobs: list[Path] = []
        for path in requested:
            st = self._stat_file(path)
            if stat.S_ISDIR(st.st_mode):
                names = list_files(path, allow_symlinks=self._allow_symlinks)
                plan.append((path, names))
                jobs.extend(path / name for name in names)
            elif stat.S_ISREG(st.st_mode):
                plan.append((path, None))
                jobs.append(path)
            else:
                raise InputError(f"{path}: is not a regular file or directory.")
        digests = iter(self.hash_files(jobs))
        results: list[PathDigest] = []
        for path, names in plan:
            if names is None:
                results.append(PathDigest(path, False, next(digests), None, {}))
            else:
                files = {name: next(digests) for name in names}
                results.append(PathDigest(path, True, None, dir_hash(files), files))
        return results

    def stamp(self, path: Path) -> FileStamp:
        return FileStamp.of(self._stat_file(path))


def digest_path(path: Path) -> PathDigest:
    """Convenience: the digest of one file or directory."""
    return Hasher().digest_paths([path])[0]
