"""A content-addressed blob cache that is never believed: every use re-hashes the blob.

Blobs live at `ROOT/oci/blobs/sha256/HEX`. A download is written to `ROOT/oci/tmp/`, hashed as it
streams, and renamed into place only when its digest and size are the ones asked for, so a
failed or tampered download leaves nothing behind. A cached blob that no longer hashes to its
name (disk corruption, someone editing it) is thrown away and fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from verifier.errors import InputError, VerificationFailure

CACHE_VARIABLE = "MODEL_VERIFIER_CACHE"
ProgressCallback = Callable[[int], None]


def default_cache_dir() -> Path:
    """$MODEL_VERIFIER_CACHE, else $XDG_CACHE_HOME/model-verifier, else ~/.cache/model-verifier."""
    chosen = os.environ.get(CACHE_VARIABLE)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-verifier"


class BlobCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "oci" / "blobs" / "sha256"
        self._tmp = root / "oci" / "tmp"
        self._work = root / "oci" / "work"
        for directory in (self._blobs, self._tmp, self._work):
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as error:
                raise InputError(f"{root}: the cache directory cannot be made "
                                 f"({error.strerror}).") from None
            if not directory.is_dir():
                raise InputError(f"{directory}: is in the cache's way and not a directory.")

    def path(self, digest: str) -> Path:
        return self._blobs / digest.removeprefix("sha256:")

    def verified(self, digest: str, size: int,
                 progress: ProgressCallback | None = None) -> Path | None:
        """The cached blob if it still hashes to its digest; a bad one is removed."""
        from verifier.formats.digest import sha256_file

        path = self.path(digest)
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size != size:
                path.unlink(missing_ok=True)
                return None
            actual = sha256_file(path, progress)
        except (OSError, InputError):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        if f"sha256:{actual}" != digest:
            path.unlink(missing_ok=True)
            return None
        return path

    def store(self, digest: str, size: int, chunks: Iterator[bytes], source: str,
              progress: ProgressCallback | None = None) -> Path:
        """Write `chunks` into the cache under `digest`, only if they hash to it."""
        handle, temporary = tempfile.mkstemp(prefix="blob.", dir=self._tmp)
        try:
            hasher = hashlib.sha256()
            written = 0
            with os.fdopen(handle, "wb") as stream:
                for chunk in chunks:
                    hasher.update(chunk)
                    stream.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            # No fsync: a blob is re-hashed before every use, so one that a crash left
            # half-written on disk is caught and fetched again; durability would only cost
            # a second or two a gigabyte.
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != digest or written != size:
                raise VerificationFailure(
                    f"{source}: the registry served {written} bytes whose sha256 is {actual}, "
                    f"not the {digest} the manifest names; the blob was tampered with or "
                    "corrupted, and nothing was kept.")
            os.chmod(temporary, 0o444)
            os.replace(temporary, self.path(digest))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return self.path(digest)

    def ensure(self, digest: str, size: int, fetch: Callable[[], Iterator[bytes]], source: str,
               progress: ProgressCallback | None = None) -> tuple[Path, bool]:
        """(path, fetched) of a blob: the cached one after re-hashing it, else a fresh download."""
        cached = self.verified(digest, size, progress)
        if cached is not None:
            return cached, False
        return self.store(digest, size, fetch(), source, progress), True

    @contextlib.contextmanager
    def workspace(self) -> Iterator[Path]:
        """A private directory on the cache's file system (so blobs can be hard-linked in),
        removed afterwards whatever happens."""
        directory = Path(tempfile.mkdtemp(prefix="run.", dir=self._work))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def staging(self) -> Path:
        return self._tmp
