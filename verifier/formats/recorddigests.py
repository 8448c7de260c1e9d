"""Per-record digests of training data: proof of what was in it without publishing it.

`record --record-digests FILE` writes, beside the attestation, a file of salted 64-bit digests
of FILE's normalised records and of their word 13-grams; its sha256 is signed into the step as
a byproduct. `contamination` normalises a benchmark the same way and looks its items up.

Records are units the recording user chooses (UNITS): a text file's `paragraph`s (runs of
lines between blank lines; the default) or `line`s; a JSON Lines file's string values
(`field`, the default: each string anywhere in a line's JSON value, so that a benchmark question
planted in a `text` field is found whatever the schema) or whole JSON `line`s (their strings in
key order); a CSV file's rows after its header row (`line`), cells joined by a space. A
record's 13-grams run over its word stream, across the line breaks inside it: a hard-wrapped
corpus (a few words a line) holds almost no 13-gram within one line, so with `line` records a
benchmark passage wrapped across lines is not found at all.
Normalisation: Unicode NFC, case-fold, NFC again (case-folding can decompose), whitespace runs
collapsed to one space and trimmed. Words are the whitespace-separated tokens of a normalised
record. Records of fewer
than MIN_WORDS words are neither stored nor looked up: "b", "yes" or "42" appear everywhere
and say nothing about contamination, and storing them would only make the file easier to
probe.

File format v2 (little-endian; v1 is v2 without the unit, and is still read, as `line`):

    8 bytes   magic "MVRDIG02" (v1: "MVRDIG01")
    32 bytes  sha256 of the data file the digests were computed from
    32 bytes  salt = BLAKE2b-256(SALT_CONTEXT || that sha256)
    8 bytes   number of record digests R;  8 bytes  number of 13-gram digests G
    8 bytes   the record unit: 1 line, 2 paragraph, 3 field (v2 only)
    R x 8     record digests, sorted ascending, distinct
    G x 8     13-gram digests, sorted ascending, distinct

A digest is BLAKE2b with an 8-byte output, keyed with the salt, personalised "record" or
"13gram", of the normalised UTF-8 text (a 13-gram's words joined by one space). A lookup is
a binary search, so a false positive needs a 64-bit collision: about N / 2^64 per lookup for
N stored digests (5e-13 for ten million). The salt is derived from the data's digest, not
random, so the same data always gives the same file; it stops one precomputed dictionary from
serving every published file. It cannot stop someone who guesses a record from testing the
guess against one file, because that is exactly the check the file exists for; MIN_WORDS
keeps the cheapest guesses out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verifier.errors import InputError
from verifier.formats import readers

MAGIC_V1 = b"MVRDIG01"
MAGIC = b"MVRDIG02"
MAGICS = (MAGIC, MAGIC_V1)
SALT_CONTEXT = b"model-verifier record digests v1\x00"  # unchanged in v2: same data, same salt
HEADER_V1 = len(MAGIC) + 32 + 32 + 16
HEADER = HEADER_V1 + 8
UNITS = {"line": 1, "paragraph": 2, "field": 3}
# The units each kind of data file can be split into, its default first.
_UNITS_BY_KIND = {"text": ("paragraph", "line"), "jsonl": ("field", "line"), "csv": ("line",)}
NGRAM = 13
MIN_WORDS = 5
MAX_RECORD_CHARS = 1 << 20  # one record of a megabyte is kept, past that it is cut
MAX_JSON_DEPTH = 64
_BATCH = 1 << 16


def normalise(text: str) -> str:
    """NFC, case-fold, NFC, whitespace collapsed: the one normalisation on both sides."""
    if text.isascii():  # NFC changes no ASCII text, and case-folding it is lower-casing
        return " ".join(text.lower().split())
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
    return " ".join(folded.split())


def salt_for(source_sha256: str) -> bytes:
    return hashlib.blake2b(SALT_CONTEXT + bytes.fromhex(source_sha256), digest_size=32).digest()


class _Digester:
    """The keyed 8-byte digests of a record and of its 13-grams, as raw little-endian bytes
    (numpy reads them in bulk, with no Python int per digest)."""

    def __init__(self, salt: bytes) -> None:
        self._record = hashlib.blake2b(key=salt, digest_size=8, person=b"record")
        self._gram = hashlib.blake2b(key=salt, digest_size=8, person=b"13gram")

    def record_hash(self) -> Any:
        return self._record.copy()

    def record(self, normalised: str) -> bytes:
        h = self._record.copy()
        h.update(normalised.encode())
        return h.digest()

    def grams(self, normalised: str) -> bytes:
        """Each 13-gram is the normalised record's bytes from its first word to its 13th:
        the words joined by one space, taken as one slice."""
        encoded = normalised.encode()
        starts = [0]
        for word in encoded.split(b" "):
            starts.append(starts[-1] + len(word) + 1)
        base = self._gram
        out = bytearray()
        for index in range(len(starts) - NGRAM):
            h = base.copy()
            h.update(encoded[starts[index]:starts[index + NGRAM] - 1])
            out += h.digest()
        return bytes(out)


# -- reading records ----------------------------------------------------------------------------


def items(path: Path) -> Iterator[list[str]]:
    """The file's items (a line, a JSON line, a CSV row), each as its records' raw texts."""
    kind = path.suffix.lower()
    try:
        stream = readers.open_stream(path, "text, JSONL or CSV file",
                                     missing=f"{path}: no such file.")
        with io.TextIOWrapper(stream, encoding="utf-8", newline="") as handle:
            if kind == ".csv":
                rows = csv.reader(handle)
                next(rows, None)  # the header names columns; it is no record
                for row in rows:
                    yield [" ".join(row)]
                return
            for number, line in enumerate(handle, 1):
                if kind in (".jsonl", ".ndjson"):
                    if not line.strip():
                        continue
                    try:
                        value = json.loads(line)
                    except (ValueError, RecursionError):
                        raise InputError(f"{path}: line {number} is not JSON.") from None
                    yield list(_strings(value, 0))
                else:
                    yield [line]
    except UnicodeDecodeError:
        raise InputError(f"{path}: is not UTF-8 text, so its records cannot be read.") from None
    except csv.Error as error:
        raise InputError(f"{path}: is not valid CSV ({error}).") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; name a text, JSONL or CSV file.") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror}).") from None


def _strings(value: object, depth: int) -> Iterator[str]:
    if depth > MAX_JSON_DEPTH:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _strings(value[key], depth + 1)


def _usable(raw: str) -> str | None:
    """The normalised record, or None when it is too short to say anything."""
    normalised = normalise(raw[:MAX_RECORD_CHARS])
    return normalised if normalised.count(" ") + 1 >= MIN_WORDS and normalised else None


# -- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestSet:
    source_sha256: str
    records: np.ndarray  # sorted distinct uint64
    grams: np.ndarray
    unit: str = "line"  # a v1 file's records were lines (JSON strings, CSV rows)
    version: int = 2

    @property
    def salt(self) -> bytes:
        return salt_for(self.source_sha256)

    def to_bytes(self) -> bytes:
        header = (MAGIC + bytes.fromhex(self.source_sha256) + self.salt
                  + len(self.records).to_bytes(8, "little") + len(self.grams).to_bytes(8, "little")
                  + UNITS[self.unit].to_bytes(8, "little"))
        return (header + self.records.astype("<u8").tobytes()
                + self.grams.astype("<u8").tobytes())


class _Accumulator:
    """Digests collected as bytes and sorted in fixed-size numpy batches, so a billion words
    never become a billion Python objects at once."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.pending = bytearray()

    def add(self, digests: bytes) -> None:
        self.pending += digests
        if len(self.pending) >= 8 * _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.parts.append(np.unique(np.frombuffer(bytes(self.pending), dtype="<u8")))
            self.pending = bytearray()

    def result(self) -> np.ndarray:
        self._flush()
        if not self.parts:
            return np.zeros(0, dtype=np.uint64)
        return np.unique(np.concatenate(self.parts)).astype(np.uint64)


def kind_of(path: Path) -> str:
    """"jsonl", "csv" or "text", by the file's suffix (as `items` reads it)."""
    suffix = path.suffix.lower()
    return "jsonl" if suffix in (".jsonl", ".ndjson") else "csv" if suffix == ".csv" else "text"


def unit_for(path: Path, unit: str | None) -> str:
    """The record unit for a data file: the one asked for, or the file kind's default
    (InputError when the kind cannot be split that way)."""
    allowed = _UNITS_BY_KIND[kind_of(path)]
    if unit is None:
        return allowed[0]
    if unit not in allowed:
        raise InputError(f"{path}: a {kind_of(path)} file cannot be split into {unit!r} "
                         f"records; use {' or '.join(repr(u) for u in allowed)}.")
    return unit


def _pieces(path: Path, unit: str) -> Iterator[str | None]:
    """The file's raw texts (lines, JSON strings, CSV rows) in order, with None where a record
    of `unit` ends."""
    paragraphs = unit == "paragraph"
    for item in items(path):
        for raw in item:
            if paragraphs and not raw.strip():
                yield None
                continue
            yield raw
            if unit == "field":
                yield None
        if unit == "line":
            yield None


class _Stream:
    """One record being read piece by piece: its digest grows as it goes, and its 13-grams
    run across the pieces, carrying the last NGRAM - 1 words over each break."""

    def __init__(self, digester: _Digester, records: _Accumulator,
                 grams: _Accumulator) -> None:
        self._digester, self._records, self._grams = digester, records, grams
        self._reset()

    def _reset(self) -> None:
        self._hash = self._digester.record_hash()
        self._carry: list[str] = []
        self._words = 0
        self._pieces = 0

    def feed(self, raw: str) -> None:
        normalised = normalise(raw[:MAX_RECORD_CHARS])
        if not normalised:
            return
        words = normalised.split(" ")
        # Each piece is a record of its own as well, so a unit of several pieces finds all
        # that records of one piece (the `line` unit) find.
        if len(words) >= MIN_WORDS:
            self._records.add(self._digester.record(normalised))
        self._hash.update((b" " if self._pieces else b"") + normalised.encode())
        window = [*self._carry, *words]
        if len(window) >= NGRAM:
            self._grams.add(self._digester.grams(" ".join(window)))
        self._carry = window[-(NGRAM - 1):]
        self._words += len(words)
        self._pieces += 1

    def end(self) -> None:
        if self._pieces > 1 and self._words >= MIN_WORDS:
            self._records.add(self._hash.digest())
        self._reset()


def compute(path: Path, source_sha256: str, unit: str | None = None) -> DigestSet:
    """The digest set of a data file whose sha256 (as attested) is `source_sha256`, its
    records split by `unit` (unit_for: None is the file kind's default)."""
    unit = unit_for(path, unit)
    records, grams = _Accumulator(), _Accumulator()
    stream = _Stream(_Digester(salt_for(source_sha256)), records, grams)
    for piece in _pieces(path, unit):
        if piece is None:
            stream.end()
        else:
            stream.feed(piece)
    stream.end()
    return DigestSet(source_sha256, records.result(), grams.result(), unit)


# -- reading a digest file --------------------------------------------------------------------


def parse(data: bytes, source: str) -> DigestSet:
    """Read a digest file, checking its structure (InputError naming `source` otherwise)."""
    version = {MAGIC: 2, MAGIC_V1: 1}.get(data[:len(MAGIC)])
    header = HEADER if version == 2 else HEADER_V1
    if version is None or len(data) < header:
        raise InputError(f"{source}: is not a record-digest file (no MVRDIG02 or MVRDIG01 "
                         "header).")
    offset = len(MAGIC)
    source_sha256 = data[offset:offset + 32].hex()
    salt = data[offset + 32:offset + 64]
    counts = data[offset + 64:offset + 80]
    records_n = int.from_bytes(counts[:8], "little")
    grams_n = int.from_bytes(counts[8:], "little")
    unit = "line"
    if version == 2:
        code = int.from_bytes(data[HEADER_V1:HEADER], "little")
        unit = next((name for name, value in UNITS.items() if value == code), "")
        if not unit:
            raise InputError(f"{source}: names an unknown record unit ({code}).")
    if salt != salt_for(source_sha256):
        raise InputError(f"{source}: its salt is not the one derived from its data digest.")
    if len(data) != header + 8 * (records_n + grams_n):
        raise InputError(f"{source}: its length does not match the counts in its header.")
    records = np.frombuffer(data, dtype="<u8", count=records_n, offset=header)
    grams = np.frombuffer(data, dtype="<u8", count=grams_n, offset=header + 8 * records_n)
    for array, what in ((records, "record"), (grams, "13-gram")):
        if len(array) > 1 and not bool(np.all(array[1:] > array[:-1])):
            raise InputError(f"{source}: its {what} digests are not sorted and distinct.")
    return DigestSet(source_sha256, records, grams, unit, version)


@dataclass
class ItemMatch:
    number: int  # 1-based item (line or row) of the benchmark file
    exact: bool
    grams: int  # how many of its 13-grams the training data holds


def match(digests: DigestSet, benchmark: Iterable[list[str]]) -> tuple[int, list[ItemMatch]]:
    """Look every item of a benchmark up: (items with at least one usable record, matches)."""
    digester = _Digester(digests.salt)
    usable = 0
    found: list[ItemMatch] = []
    for number, item in enumerate(benchmark, 1):
        exact, grams, any_usable = False, 0, False
        for raw in item:
            normalised = _usable(raw)
            if normalised is None:
                continue
            any_usable = True
            record = int.from_bytes(digester.record(normalised), "little")
            exact = exact or _contains(digests.records, record)
            gram_values = np.frombuffer(digester.grams(normalised), dtype="<u8").astype(
                np.uint64)
            if len(gram_values):
                grams += int(np.count_nonzero(_contains_many(digests.grams, gram_values)))
        usable += any_usable
        if exact or grams:
            found.append(ItemMatch(number, exact, grams))
    return usable, found


def _contains(array: np.ndarray, value: int) -> bool:
    index = int(np.searchsorted(array, np.uint64(value)))
    return index < len(array) and int(array[index]) == value


def _contains_many(array: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not len(array):
        return np.zeros(len(values), dtype=bool)
    index = np.minimum(np.searchsorted(array, values), len(array) - 1)
    return array[index] == values


def read_file(path: Path, max_bytes: int = 1 << 34) -> bytes:
    """A digest file's bytes (bounded: a hostile directory cannot fill memory)."""
    return readers.read_bytes(path, "record-digest file", max_bytes)



def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with readers.open_stream(path, "record-digest file") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def recompute(declared: Iterable[tuple[str, str]], workspace: Path, prefix: str
              ) -> list[dict[str, object]]:
    """A rebuild's results for the record-digest files a step signed, as for its products: for
    each (data name, signed digest-file sha256), the sha256 of the digest file computed again
    from the data as the rebuild's workspace holds it. A builder's doctored file (a row left
    out) then differs from what every rebuilder computes. Data reached through a link, or not a
    regular file, is not read (MISSING), as a product would not be."""
    results: list[dict[str, object]] = []
    for name, signed in sorted(declared):
        expected = {"sha256": signed}
        path = workspace / name
        entry: dict[str, object] = {"name": prefix + name, "expected": expected,
                                    "actual": None, "verdict": "MISSING"}
        if _plain_file(workspace, name):
            try:
                data = compute(path, file_sha256(path)).to_bytes()
            except (InputError, OSError):
                pass  # records that cannot be read reproduce nothing: MISSING
            else:
                actual = hashlib.sha256(data).hexdigest()
                entry["actual"] = {"sha256": actual}
                entry["verdict"] = "IDENTICAL" if actual == signed else "DIVERGED"
        results.append(entry)
    return results


def _plain_file(workspace: Path, name: str) -> bool:
    """Whether workspace/name is a regular file reached through no symbolic link (lstat of
    every component, never following one)."""
    current = workspace
    parts = Path(name).parts
    for index, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode) or (index == len(parts) - 1 and not stat.S_ISREG(mode)):
            return False
    return True


def write(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write a digest file atomically (a temporary file renamed); never clobber unasked."""
    from verifier.formats.envelope import write_atomic

    write_atomic(path, data, overwrite=overwrite)
