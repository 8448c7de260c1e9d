"""The attestations given to a command: which files they are, and the bundles they hold.

Bundles are read once each, and a signed envelope found several times (a replayed copy, the same
file in two directories) is kept once: every later judgement then costs the same for 8,000
copies of one bundle as for one. The first copy, in file order, is the one kept and named.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.envelope import Bundle, read_bundles

SUFFIXES = (".json", ".jsonl")


def attestation_files(directories: Iterable[Path]) -> list[Path]:
    """Every *.json / *.jsonl file under the directories (or the files given), in a stable
    order. A path given that is neither a regular file nor a directory is refused; a special
    file found inside a directory is listed, for its reader to refuse unopened like any other
    unusable file there. Links to directories are not followed (no cycles)."""
    found: list[Path] = []
    for directory in directories:
        try:
            mode = os.stat(directory).st_mode
        except FileNotFoundError:
            raise InputError(f"{directory}: no such attestations directory.") from None
        except OSError as error:
            raise InputError(f"{directory}: cannot be read ({error.strerror}).") from None
        if stat.S_ISREG(mode):
            found.append(directory)
        elif stat.S_ISDIR(mode):
            found.extend(sorted(_walk(directory), key=str))
        else:
            raise InputError(f"{directory}: is {readers.kind_of(mode)}, expected a file or a "
                             "directory of attestations.")
    return found


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            raise InputError(f"{directory}: cannot list directory ({error.strerror}).") from None
        for entry in entries:
            path = directory / entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
                continue
            if os.path.splitext(entry.name)[1] not in SUFFIXES:
                continue
            try:
                mode = entry.stat().st_mode  # through a link: what is actually read
            except FileNotFoundError:
                continue  # a dangling link holds no attestation
            except OSError:  # a link loop, a name too long: the reader says which it is
                found.append(path)
                continue
            if stat.S_ISDIR(mode):
                continue  # a link to a directory: not followed
            found.append(path)  # not a regular file: the reader refuses it, as for any bad file
    return found


def envelope_key(bundle: Bundle) -> bytes:
    """What makes two bundles the same evidence: payload type, payload and signatures."""
    digest = hashlib.sha256()
    for part in (bundle.payload_type.encode(), bundle.payload,
                 *(p for s in bundle.signatures for p in (s.sig, s.keyid.encode()))):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(b"certificate" if bundle.has_certificate else b"key")
    return digest.digest()


def load_bundles(directories: Iterable[Path], notes: list[str]) -> list[Bundle]:
    """Read every bundle once; a file that is not a bundle is noted and counts for nothing, and
    so does a copy of an envelope already read (one note per envelope copied)."""
    bundles: list[Bundle] = []
    first: dict[bytes, int] = {}
    copies: dict[int, list[str]] = {}
    for path in attestation_files(directories):
        bad_lines: list[InputError] = []
        try:
            for bundle in read_bundles(path, bad_lines):
                key = envelope_key(bundle)
                index = first.get(key)
                if index is None:
                    first[key] = len(bundles)
                    bundles.append(bundle)
                else:
                    copies.setdefault(index, []).append(bundle.source)
        except InputError as error:
            notes.append(f"ignored {error}")
        notes.extend(f"ignored {error}" for error in bad_lines)
    for index, sources in copies.items():
        shown = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3
                                          else "")
        notes.append(f"ignored {len(sources)} copies of {bundles[index].source} (the same "
                     f"signed envelope, counted once): {shown}.")
    return bundles
