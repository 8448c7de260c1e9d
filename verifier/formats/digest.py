"""Parallel sha256 (and optionally BLAKE3) of files, and in-toto `dirHash` of directories.

A file's digest is plain sha256, so anyone can recompute it with `openssl dgst -sha256`.
A directory's `dirHash` is the in-toto DigestSet `dirHash` (Go's dirhash "h1", in hex):
sha256 over the lines "<sha256 hex>  <relative path>\\n", paths sorted by code point, which is
what `find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum` prints
inside the directory.

One rule says whether a signature kept beside the files is part of a directory: a `model.sig` at
its top that is an OpenSSF Model Signing (OMS) signature is about the directory, never one of its
files (OMS signs the files without it, and an attestation may be made before it is added), so it
is left out of the directory's digest here, where every command (record, rebuild, verify-model,
the VSA, verify-vsa, push) hashes a directory; anything else under that name is an ordinary file.

How the bytes reach the hash was chosen by measurement (docs/benchmarks.md):
- Large files are memory-mapped 8 MiB at a time and each window is handed to the hash as is:
  no copy into a user buffer, which cost about 15% more CPU per byte than mapping; mapping one
  window at a time keeps the resident size small however large the file. The next window is
  announced to the kernel (POSIX_FADV_WILLNEED) so a cold disk reads ahead while we hash.
- Small files are read with one `readv` into a buffer each thread owns, so a tree of tens of
  thousands of files costs a few system calls per file and no allocation.
- Files are spread over one thread per core, largest first; hashlib and blake3 release the GIL
  while hashing, so threads scale across cores. sha256 of one file is sequential by nature, so
  a single huge file hashes on one core; BLAKE3 (optional) is a tree hash and uses them all.

Within one `Hasher` a file is hashed at most once per algorithm: the memo is keyed by the
file's identity and modification stamp, re-checked after hashing, and never outlives a command.
A file truncated by another process while it is mapped ends the process with SIGBUS, as with
every mmap-based hasher (b3sum, blake3's update_mmap); a file that changes size or time while
being hashed is refused with a sentence.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from verifier.errors import InputError

WINDOW_SIZE = 8 * 1024 * 1024  # bytes mapped and hashed at a time
SMALL_FILE_SIZE = 1024 * 1024  # below this a file is read into a buffer rather than mapped
READ_SIZE = SMALL_FILE_SIZE  # the per-thread read buffer
SERIAL_BELOW = 32 * 1024  # smaller files are hashed by one thread at a time (see Hasher._run)
ALGORITHMS = ("sha256", "blake3")
# Digests that establish a match only where a policy lists them under `digests.accept`.
OPT_IN_DIGESTS = ("blake3",)
# What may establish that two artifacts are the same: sha256 and the sha256-based dirHash, and
# an opt-in digest where the policy accepts it. md5, sha1 or a name nobody knows never do.
BASE_DIGESTS = ("sha256", "dirHash")


def usable_digests(digest: dict[str, str], accepted: Iterable[str]) -> dict[str, str]:
    """The part of a digest set that may establish a match under `accepted` (a policy's
    `digests.accept`)."""
    accepted = tuple(accepted)
    return {a: v for a, v in digest.items()
            if a in BASE_DIGESTS or (a in OPT_IN_DIGESTS and a in accepted)}

ProgressCallback = Callable[[int], None]
_NOTHING: dict[str, str] = {}

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us


class FileStamp(NamedTuple):
    """What identifies one version of a file cheaply: a change to any field means re-hash.

    A tuple rather than a dataclass: one is made per file, and tuples are made fastest.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(algorithms))
    unknown = [a for a in chosen if a not in ALGORITHMS]
    if unknown or not chosen:
        raise InputError(f"digest {', '.join(unknown) or '(none)'}: unknown algorithm; "
                         f"choose from {', '.join(ALGORITHMS)}.")
    return chosen


def _new_hash(algorithm: str, size: int) -> Any:
    if algorithm == "sha256":
        return hashlib.sha256()
    try:
        from blake3 import blake3
    except ImportError:
        raise InputError("the blake3 digest needs the Python package blake3 "
                         "(pip install blake3).") from None
    # Its tree lets several threads share one large file; small files gain nothing from that.
    return blake3(max_threads=blake3.AUTO if size >= WINDOW_SIZE else 1)


def _open_error(path: Path, error: OSError) -> InputError:
    if error.errno == errno.ENOENT:
        return InputError(f"{path}: no such file.")
    if error.errno in (errno.EACCES, errno.EPERM):
        return InputError(f"{path}: permission denied.")
    if error.errno == errno.ELOOP:
        return InputError(f"{path}: is a symbolic link; links are refused because the digest "
                          "would not say what they point to.")
    return InputError(f"{path}: cannot be read ({error.strerror}).")


def _read_ahead(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start reading a range we will hash next (not on every platform)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def _hash_descriptor(fd: int, size: int, algorithms: Sequence[str], buffer: bytearray,
                     progress: ProgressCallback | None) -> dict[str, str]:
    """Hash an open regular file of the given size with each algorithm, in one pass."""
    hashes = [_new_hash(a, size) for a in algorithms]
    if size < SMALL_FILE_SIZE:
        view, done = memoryview(buffer), 0
        # Stop at the size fstat gave (growth shows in the stamp checked afterwards), saving
        # the read that would return 0; an empty-looking file is read to its real end.
        while (done < size or size == 0) and (count := os.readv(fd, [buffer])):
            done += count
            for h in hashes:
                h.update(view[:count])
            if progress is not None:
                progress(count)
    else:
        _read_ahead(fd, 0, min(size, 2 * WINDOW_SIZE))
        for offset in range(0, size, WINDOW_SIZE):
            length = min(WINDOW_SIZE, size - offset)
            ahead = offset + WINDOW_SIZE
            if ahead < size:
                _read_ahead(fd, ahead, WINDOW_SIZE)
            with mmap.mmap(fd, length, offset=offset, access=mmap.ACCESS_READ) as window:
                for h in hashes:
                    h.update(window)
            if progress is not None:
                progress(length)
    return {a: h.hexdigest() for a, h in zip(algorithms, hashes, strict=True)}


def sha256_file(path: Path, progress: ProgressCallback | None = None) -> str:
    """sha256 hex of one file (no memo; see `Hasher` for many files)."""
    return Hasher(1, progress, allow_symlinks=True).hash_files([path])[0]


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


# (relative POSIX path, whether it is a regular file) -> left out of the digest
IgnoreRule = Callable[[str, bool], bool]
# A link's path -> the regular file it may stand for, or InputError naming the link. Given only
# where a layout of links is known to be sound (a Hugging Face snapshot: verifier.neighbours.hub).
LinkRule = Callable[[str], str]


def _scan(root: Path, allow_symlinks: bool, ignore: IgnoreRule | None = None,
          ignored: list[str] | None = None, links: LinkRule | None = None,
          resolved: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """(relative POSIX path, size) of every regular file under root, sorted by path.

    With `links`, a symbolic link is accepted when the rule gives the regular file it stands
    for: its name maps to that file in `resolved`, and that file is what is hashed.
    An entry `ignore` accepts (a file, link or anything but a directory) is neither opened nor
    refused: its name goes to `ignored` and it is left out. Directories are always entered, so
    every ignored file is named, not only the directory holding it.

    Names are built as strings, not Path objects: on a tree of many small files the
    per-file cost of pathlib was a large share of the whole.
    """
    found: list[tuple[str, int]] = []
    pending = [(os.fspath(root), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            raise InputError(f"{directory}: cannot list directory ({error.strerror}).") from None
        for entry in entries:
            name = entry.name
            if "\n" in name:
                raise InputError(f"{entry.path}: file names with a newline are refused.")
            if not _is_utf8(name):
                shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
                raise InputError(
                    f"{shown}: the file name is not UTF-8; digests name files in UTF-8 only."
                )
            target: str | None = None
            if links is not None and resolved is not None and entry.is_symlink():
                # A snapshot's link stands for the blob it leads to: a regular file, or refused.
                target = links(entry.path)
                try:
                    st = os.lstat(target)
                except OSError as error:
                    raise _open_error(Path(entry.path), error) from None
                if not stat.S_ISREG(st.st_mode):
                    raise InputError(f"{entry.path}: links to {target}, which is not a regular "
                                     "file.")
            regular = target is not None or entry.is_file(follow_symlinks=False)
            if (ignore is not None and ignored is not None
                    and not entry.is_dir(follow_symlinks=False)
                    and ignore(prefix + name, regular)):
                ignored.append(prefix + name)
                continue
            if target is not None and resolved is not None:
                resolved[prefix + name] = target
                found.append((prefix + name, st.st_size))
                continue
            if not allow_symlinks and entry.is_symlink():
                raise InputError(
                    f"{entry.path}: is a symbolic link; links are refused because the "
                    "digest would not say what they point to."
                )
            if entry.is_dir():
                pending.append((entry.path, f"{prefix}{name}/"))
            elif entry.is_file():
                try:
                    size = entry.stat().st_size
                except OSError as error:
                    raise _open_error(Path(entry.path), error) from None
                found.append((prefix + name, size))
            else:
                raise InputError(f"{entry.path}: is not a regular file or directory.")
    found.sort()
    return found


SIGNATURE_NAME = "model.sig"  # where OMS keeps a directory's signature


def _detached_signature(root: Path, entries: list[tuple[str, int]],
                        resolved: dict[str, str]) -> str | None:
    """SIGNATURE_NAME when the directory's top holds an OMS signature under it, else None.

    Decided by the file's bytes (a Sigstore bundle of an OMS statement), never by its name
    alone, so the same bytes give the same answer in every command."""
    if not any(name == SIGNATURE_NAME for name, _ in entries):
        return None
    from verifier.formats.omssig import is_oms_signature

    path = Path(resolved.get(SIGNATURE_NAME, root / SIGNATURE_NAME))
    return SIGNATURE_NAME if is_oms_signature(path) else None


def list_files(root: Path, *, allow_symlinks: bool = False) -> list[str]:
    """Relative POSIX paths of every regular file under root, sorted by code point."""
    return [name for name, _ in _scan(root, allow_symlinks)]


@dataclass(frozen=True)
class PathDigest:
    """The digest of one path given by the user: a file, or a directory and all its files."""

    path: Path
    is_dir: bool
    sha256: str | None  # files (None when only blake3 was asked for)
    dir_hash: str | None  # directories
    files: dict[str, str]  # directories: {relative posix path: sha256}
    blake3: str | None = None  # files, when blake3 was asked for
    files_blake3: dict[str, str] = field(default_factory=dict)  # directories, likewise
    # Directories: files present but left out of `files` and the dirHash by an ignore rule.
    ignored: tuple[str, ...] = ()
    # Directories: the OMS signature at its top left out of the digest (see the module's rule).
    signature: str | None = None
    # Directories hashed with a LinkRule: {relative name: the file its link stands for}.
    links: dict[str, str] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        if self.is_dir:
            return "dirHash"
        return "sha256" if self.sha256 is not None else "blake3"

    @property
    def value(self) -> str:
        if self.is_dir:
            return self.dir_hash or ""
        return self.sha256 or self.blake3 or ""

    def digest_set(self) -> dict[str, str]:
        """The in-toto DigestSet of this path: every digest computed for it."""
        if self.is_dir:
            return {"dirHash": self.dir_hash or ""}
        found = {"sha256": self.sha256, "blake3": self.blake3}
        return {name: value for name, value in found.items() if value is not None}

    def file_digest_set(self, name: str) -> dict[str, str]:
        """The DigestSet of one file of a directory, by its relative name."""
        found = {"sha256": self.files.get(name), "blake3": self.files_blake3.get(name)}
        return {algorithm: value for algorithm, value in found.items() if value is not None}


class _Job(NamedTuple):
    path: str | Path  # a plain string for the files of a directory (cheaper than a Path)
    size: int  # for scheduling and progress; 0 when unknown
    algorithms: tuple[str, ...]


class Hasher:
    """Hashes many files in parallel; each file at most once per Hasher (per command).

    `algorithms` are what `digest_paths` computes for files given directly; files inside a
    directory always get sha256 (the dirHash is made of it), plus blake3 when it was asked for.
    `on_total`, when given, is told how many bytes a batch is about to hash (a progress bar's
    total); `progress` is then told each chunk's size as it is hashed, from any thread.
    """

    def __init__(
        self,
        workers: int | None = None,
        progress: ProgressCallback | None = None,
        *,
        allow_symlinks: bool = False,
        algorithms: Iterable[str] = ("sha256",),
        on_total: ProgressCallback | None = None,
    ) -> None:
        self._workers = workers or os.cpu_count() or 1
        self._progress = progress
        self._on_total = on_total
        self._allow_symlinks = allow_symlinks
        self._algorithms = _check_algorithms(algorithms)
        self._memo: dict[FileStamp, dict[str, str]] = {}
        self._busy: dict[FileStamp, threading.Lock] = {}  # held while a file is being hashed
        self._open_flags = _OPEN_FLAGS | (0 if allow_symlinks else os.O_NOFOLLOW)
        self._lock = threading.Lock()

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._algorithms

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

    def _digest_file(self, job: _Job, buffer: bytearray) -> dict[str, str]:
        # The hot path for trees of small files: kept to a few system calls and cheap objects.
        try:
            fd = os.open(job.path, self._open_flags)
        except OSError as error:
            raise _open_error(job.path, error) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{job.path}: is a directory, expected a file."
                                 if stat.S_ISDIR(st.st_mode)
                                 else f"{job.path}: is not a regular file.")
            stamp = FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            waited = False
            while True:
                with self._lock:
                    known = self._memo.get(stamp, _NOTHING)  # replaced, never changed in place
                    missing = [a for a in job.algorithms if a not in known]
                    busy = self._busy.get(stamp) if missing else None
                    if missing and busy is None:
                        mine = self._busy[stamp] = threading.Lock()
                        mine.acquire()
                if not missing:
                    if self._progress is not None and not waited:
                        self._progress(st.st_size)  # hashed before: the bar still advances
                    return {a: known[a] for a in job.algorithms}
                if busy is not None:  # another thread is hashing this very file: wait for it
                    with busy:
                        waited = True
                    continue
                try:
                    self._hash_into_memo(job, fd, stamp, missing, buffer)
                finally:
                    with self._lock:
                        del self._busy[stamp]
                    mine.release()
        finally:
            os.close(fd)

    def _hash_into_memo(self, job: _Job, fd: int, stamp: FileStamp, missing: list[str],
                        buffer: bytearray) -> None:
        try:
            computed = _hash_descriptor(fd, stamp.size, missing, buffer, self._progress)
            after = FileStamp.of(os.fstat(fd))
        except OSError as error:
            raise _open_error(job.path, error) from None
        if after != stamp:
            raise InputError(f"{job.path}: changed while it was being hashed; hash it "
                             "again once nothing is writing to it.")
        with self._lock:
            self._memo[stamp] = {**self._memo.get(stamp, {}), **computed}

    def _run(self, jobs: list[_Job]) -> list[dict[str, str]]:
        """Digest every job: larger files on up to `workers` threads, largest first; small
        files on one thread at a time, in name order.

        Hashing a small file takes less time than the Python around it, so threads would only
        contend for the interpreter lock: two threads took 1.3x the CPU of one on a tree of
        16 KiB files. A file of unknown size (0) counts as large.
        """
        if self._on_total is not None:
            self._on_total(sum(job.size for job in jobs))
        results: list[dict[str, str]] = [{} for _ in jobs]
        large = sorted((i for i, job in enumerate(jobs) if not 0 < job.size < SERIAL_BELOW),
                       key=lambda i: -jobs[i].size)
        small = [i for i, job in enumerate(jobs) if 0 < job.size < SERIAL_BELOW]
        next_large, next_small = iter(large), iter(small)
        take, small_lane = threading.Lock(), threading.Lock()
        failures: list[BaseException] = []

        def digest(index: int, buffer: bytearray) -> bool:
            try:
                results[index] = self._digest_file(jobs[index], buffer)
            except BaseException as error:  # handed to the calling thread, raised there
                failures.append(error)
                return False
            return True

        def work() -> None:
            buffer = bytearray(READ_SIZE)
            while not failures:
                with take:
                    index = next(next_large, None)
                if index is None:
                    break
                if not digest(index, buffer):
                    return
            if small_lane.acquire(blocking=False):  # else another thread has the small files
                try:
                    for index in next_small:
                        if failures or not digest(index, buffer):
                            return
                finally:
                    small_lane.release()

        threads = min(self._workers, len(large) + (1 if small else 0))
        helpers = [threading.Thread(target=work, daemon=True) for _ in range(threads - 1)]
        for helper in helpers:
            helper.start()
        try:
            work()  # the calling thread is one of the workers
        except BaseException as error:  # e.g. Ctrl-C between two files: stop the helpers too
            failures.append(error)
        if not any(isinstance(f, KeyboardInterrupt) for f in failures):
            for helper in helpers:  # they stop after their current file once one failed
                helper.join()
        if failures:
            raise failures[0]
        return results

    def hash_files(self, paths: Iterable[Path]) -> list[str]:
        """sha256 of each path, in order, in parallel."""
        jobs = [_Job(Path(p), self._size_or_zero(Path(p)), ("sha256",)) for p in paths]
        return [found["sha256"] for found in self._run(jobs)]

    def _size_or_zero(self, path: Path) -> int:
        """A file's size for scheduling; 0 (unknown) when it cannot be had, the error being
        reported when the file is opened."""
        try:
            return (os.stat(path) if self._allow_symlinks else os.lstat(path)).st_size
        except OSError:
            return 0

    def total_bytes(self, paths: Iterable[Path]) -> int:
        """Bytes the given files and directories hold (for a progress bar)."""
        total = 0
        for path in paths:
            st = self._stat_file(path)
            if stat.S_ISDIR(st.st_mode):
                total += sum(size for _, size in _scan(path, self._allow_symlinks))
            else:
                total += st.st_size
        return total

    def digest_paths(self, paths: Iterable[Path], algorithms: Iterable[str] | None = None,
                     ignore: IgnoreRule | None = None,
                     links: LinkRule | None = None) -> list[PathDigest]:
        """Digest files and directories; every file of every directory goes into one pool.

        `algorithms` overrides, for this call, what files given directly are hashed with.
        `ignore` leaves files inside directories out of their digest (never a path given
        directly); each PathDigest names the ones it left out. `links` lets a link inside a
        directory stand for the file the rule resolves it to (each PathDigest names them).
        """
        chosen = self._algorithms if algorithms is None else _check_algorithms(algorithms)
        in_directories = ("sha256", *(a for a in chosen if a != "sha256"))
        plan: list[tuple[Path, list[str] | None, tuple[str, ...], str | None,
                         dict[str, str]]] = []
        jobs: list[_Job] = []
        for path in paths:
            st = self._stat_file(path)
            if stat.S_ISDIR(st.st_mode):
                left_out: list[str] = []
                resolved: dict[str, str] = {}
                entries = _scan(path, self._allow_symlinks, ignore, left_out, links, resolved)
                signature = _detached_signature(path, entries, resolved)
                entries = [e for e in entries if e[0] != signature]
                resolved.pop(signature or "", None)
                plan.append((path, [name for name, _ in entries], tuple(sorted(left_out)),
                             signature, resolved))
                root = os.fspath(path)
                jobs.extend(_Job(resolved.get(name) or f"{root}/{name}", size, in_directories)
                            for name, size in entries)
            elif stat.S_ISREG(st.st_mode):
                plan.append((path, None, (), None, {}))
                jobs.append(_Job(path, st.st_size, chosen))
            else:
                raise InputError(f"{path}: is not a regular file or directory.")
        digests = iter(self._run(jobs))
        results: list[PathDigest] = []
        for path, names, left_out, signature, resolved in plan:
            if names is None:
                found = next(digests)
                results.append(PathDigest(path, False, found.get("sha256"), None, {},
                                          blake3=found.get("blake3")))
                continue
            members = {name: next(digests) for name in names}
            files = {name: found["sha256"] for name, found in members.items()}
            files_blake3 = {name: found["blake3"] for name, found in members.items()
                            if "blake3" in found}
            results.append(PathDigest(path, True, None, dir_hash(files), files,
                                      files_blake3=files_blake3, ignored=left_out,
                                      signature=signature, links=resolved))
        return results

    def prefetch(self, paths: Iterable[Path], algorithms: Iterable[str] | None = None,
                 ignore: IgnoreRule | None = None) -> None:
        """Start digesting in the background and return at once.

        A later `digest_paths` of the same files takes the results from the memo, or waits for
        a file still being hashed, instead of reading it again; so a command can hash its input
        while it imports and loads everything else. Errors are left to that later call.
        """
        requested = list(paths)

        def work() -> None:
            try:
                self.digest_paths(requested, algorithms, ignore)
            except Exception:  # the caller's own digest_paths meets it again and reports it
                return

        threading.Thread(target=work, name="prefetch", daemon=True).start()

    def stamp(self, path: Path) -> FileStamp:
        return FileStamp.of(self._stat_file(path))


def digest_path(path: Path) -> PathDigest:
    """Convenience: the digest of one file or directory."""
    return Hasher().digest_paths([path])[0]
