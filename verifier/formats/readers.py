"""Bounded reads of regular files: the one way the verifier reads an input file whole.

Inputs come from strangers (CI gates, admission hooks), so a path may name a FIFO that never
delivers, a device that never ends (`/dev/zero` behind a symlink), a socket, or a file far larger
than any honest input. Every reader therefore opens without blocking, checks with fstat on the
open descriptor (no window between check and read) that it holds a regular file, and reads at
most its cap plus one byte: `st_size` is not trusted as a bound (procfs and similar files say 0,
a file may grow while read), the byte count actually read is.

The caps are the documented limits of docs/threat-model.md ("Resource exhaustion").
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from verifier.errors import InputError

KIB = 1024
MIB = 1024 * KIB

MAX_POLICY_BYTES = 1 * MIB  # a policy is a page or two of YAML
MAX_KEY_BYTES = 256 * KIB  # a PEM key is a few KiB; room left for a certificate chain
MAX_BUNDLE_BYTES = 64 * MIB  # one bundle file, or a JSON-lines store of many
MAX_TRUST_BYTES = 4 * MIB  # a Sigstore trusted root or trust config: tens of KiB of JSON
MAX_SAFETENSORS_HEADER_BYTES = 100 * MIB  # the limit the safetensors format sets itself

_CHUNK = 1 * MIB
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: opening a FIFO returns


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words for a sentence."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size_words(count: int) -> str:
    if count >= 1024 * MIB:
        return f"{count / (1024 * MIB):.1f} GiB".replace(".0 ", " ")
    if count >= MIB:
        return f"{count / MIB:.1f} MiB".replace(".0 ", " ")
    if count >= KIB:
        return f"{count / KIB:.1f} KiB".replace(".0 ", " ")
    return f"{count} bytes"


def open_regular(path: Path, what: str, missing: str | None = None) -> int:
    """A read-only descriptor on `path`, which must be a regular file; InputError otherwise.

    Symbolic links are followed (a key file may well be a link), but what they lead to must be
    a regular file too. The descriptor is in blocking mode again once it is known to be one.
    `missing` replaces the sentence for a file that does not exist.
    """
    try:
        # stat before open: opening some devices has effects of its own (a watchdog, a tape)
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: is {kind_of(mode)}, expected a {what}; only regular "
                             "files are read.")
        fd = os.open(path, _OPEN_FLAGS)  # fstat below: it may have been swapped since
    except FileNotFoundError:
        raise InputError(missing or f"{path}: no such file (expected a {what}).") from None
    except ValueError:  # a NUL byte: no file can have that name
        raise InputError(f"{str(path)!r}: is no file name (it holds a NUL byte).") from None
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket (or a FIFO with no writer on some systems)
            try:
                kind = kind_of(os.stat(path).st_mode)
            except OSError:
                kind = "not a regular file"
            raise InputError(f"{path}: is {kind}, expected a {what}.") from None
        raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: is {kind_of(mode)}, expected a {what}; only regular "
                             "files are read.")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, what: str, limit: int, missing: str | None = None) -> bytes:
    """The whole content of a regular file of at most `limit` bytes; InputError otherwise."""
    fd = open_regular(path, what, missing)
    try:
        return read_descriptor(fd, path, what, limit)
    finally:
        os.close(fd)


def open_stream(path: Path, what: str, missing: str | None = None) -> BinaryIO:
    """A binary stream on a regular file, for readers that stream rather than read whole (a
    benchmark, a model file to upload): the same checks as `open_regular`, no size cap."""
    return os.fdopen(open_regular(path, what, missing), "rb")


def read_descriptor(fd: int, path: Path, what: str, limit: int) -> bytes:
    """Read an open descriptor to its end, refusing more than `limit` bytes."""
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise InputError(_too_large(path, what, limit, size))
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InputError(_too_large(path, what, limit, None))
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
    return b"".join(parts)


def _too_large(path: Path, what: str, limit: int, size: int | None) -> str:
    actual = f"{_size_words(size)}, " if size is not None else ""
    return (f"{path}: is {actual}larger than the {_size_words(limit)} a {what} may have; "
            "it is refused.")


def read_text(path: Path, what: str, limit: int, missing: str | None = None) -> str:
    """Like `read_bytes`, decoded as UTF-8; InputError for other bytes."""
    data = read_bytes(path, what, limit, missing)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: is not UTF-8 text, so not a {what}.") from None


def brief(value: object, limit: int = 60) -> str:
    """A value from an input file as a sentence may quote it: scalars by repr, cut to `limit`
    characters; containers by kind only, so no message ever grows with what it quotes."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return "a huge number"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
