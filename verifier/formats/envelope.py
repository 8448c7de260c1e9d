"""DSSE envelopes inside Sigstore bundle v0.3 JSON files: reading, writing, PAE.

A bundle signed with a local key carries `verificationMaterial.publicKey.hint` and no log entry,
the shape OpenSSF Model Signing uses. A keyless bundle carries a certificate and log entries, as
sigstore-python writes it. Nothing here trusts anything: the hint is only a hint, and signature
checks live in `signing`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from verifier.errors import InputError
from verifier.formats import readers

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ACCEPTED_MEDIA_TYPES = (
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle.v0.2+json",
)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"  # what an in-toto payload holds
MAX_BUNDLE_BYTES = readers.MAX_BUNDLE_BYTES
# DSSE allows several signatures, but an honest envelope carries one or two. Every signature is
# checked against the trusted keys, so their count bounds the work an envelope can cause.
MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE Pre-Authentication Encoding: the exact bytes a DSSE signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def b64decode(text: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding (DSSE allows both)."""
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    padded = text + "=" * (-len(text) % 4)
    alphabet = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(padded, altchars=alphabet, validate=True)
    except binascii.Error as error:
        raise ValueError(str(error)) from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class DsseSignature:
    sig: bytes
    keyid: str


@dataclass(frozen=True)
class Bundle:
    """One Sigstore bundle holding a DSSE envelope, as read from disk."""

    source: str  # the file (and line, for JSON lines) it came from, for messages
    raw: dict[str, Any]
    payload: bytes
    payload_type: str
    signatures: tuple[DsseSignature, ...]
    public_key_hint: str | None
    has_certificate: bool = field(default=False)

    @property
    def is_keyless(self) -> bool:
        return self.has_certificate

    def to_json(self) -> str:
        return json.dumps(self.raw, indent=2, sort_keys=True) + "\n"


def make_key_bundle(payload: bytes, payload_type: str, signature: bytes, hint: str) -> dict:
    """A bundle v0.3 for a signature made with a local key (public key hint, no log entry)."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64encode(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": b64encode(signature), "keyid": hint}],
        },
    }


def parse_bundle(data: Any, source: str) -> Bundle:
    """Check the shape of a decoded bundle and pull out its DSSE envelope."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: is not a Sigstore bundle (expected a JSON object).")
    media_type = data.get("mediaType")
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise InputError(f"{source}: is not a Sigstore bundle v0.3 "
                         f"(mediaType is {readers.brief(media_type)}).")
    material = data.get("verificationMaterial")
    envelope = data.get("dsseEnvelope")
    if not isinstance(material, dict):
        raise InputError(f"{source}: bundle has no verificationMaterial.")
    if not isinstance(envelope, dict):
        raise InputError(f"{source}: bundle holds no DSSE envelope (dsseEnvelope is missing).")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise InputError(f"{source}: DSSE envelope has no payloadType.")
    try:
        payload = b64decode(envelope.get("payload"))
    except ValueError:
        raise InputError(f"{source}: DSSE payload is not valid base64.") from None
    raw_signatures = envelope.get("signatures")
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise InputError(f"{source}: DSSE envelope has no signatures.")
    if len(raw_signatures) > MAX_SIGNATURES:
        raise InputError(f"{source}: DSSE envelope carries {len(raw_signatures)} signatures; "
                         f"more than {MAX_SIGNATURES} are refused.")
    signatures = []
    for entry in raw_signatures:
        if not isinstance(entry, dict):
            raise InputError(f"{source}: a DSSE signature entry is not an object.")
        try:
            sig = b64decode(entry.get("sig"))
        except ValueError:
            raise InputError(f"{source}: a DSSE signature is not valid base64.") from None
        keyid = entry.get("keyid", "")
        signatures.append(DsseSignature(sig, keyid if isinstance(keyid, str) else ""))
    public_key = material.get("publicKey")
    hint = public_key.get("hint") if isinstance(public_key, dict) else None
    has_certificate = bool(material.get("certificate") or material.get("x509CertificateChain"))
    return Bundle(
        source=source,
        raw=data,
        payload=payload,
        payload_type=payload_type,
        signatures=tuple(signatures),
        public_key_hint=hint if isinstance(hint, str) else None,
        has_certificate=has_certificate,
    )


def _read_text(path: Path) -> str:
    return readers.read_text(path, "bundle file", MAX_BUNDLE_BYTES)


# A bundle holds a few dozen JSON objects (its statement is a base64 string, parsed on its own).
# Objects are what costs memory when JSON is decoded, a few hundred bytes each: without a
# count, a bundle file under the size cap could still hold millions of them.
MAX_JSON_OBJECTS = 10_000


class _TooManyObjects(Exception):
    pass


def _loads(text: str, limit: int = MAX_JSON_OBJECTS) -> Any:
    """json.loads, stopping as soon as the text has built more objects than a bundle has."""
    count = 0

    def counted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count > limit:
            raise _TooManyObjects
        return dict(pairs)

    return json.loads(text, object_pairs_hook=counted)


def _too_many(source: object) -> InputError:
    return InputError(f"{source}: holds more than {MAX_JSON_OBJECTS} JSON objects, more than "
                      "any bundle has; it is refused.")


def loads_capped(text: str, source: str, what: str, limit: int) -> Any:
    """json.loads of another signed document (an in-toto link) under its own object cap;
    InputError naming `source` when it holds more, or is no JSON."""
    try:
        return _loads(text, limit)
    except _TooManyObjects:
        raise InputError(f"{source}: holds more than {limit} JSON objects, more than any "
                         f"{what} has; it is refused.") from None
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise InputError(f"{source}: is not a readable {what} (JSON).") from None


def decode_json(text: str, source: str) -> Any:
    """Decode the JSON of one bundle; InputError (naming `source`) for anything else."""
    try:
        return _loads(text)
    except _TooManyObjects:
        raise _too_many(source) from None
    except json.JSONDecodeError as error:
        raise InputError(
            f"{source}: is not valid JSON "
            f"({error.msg} at line {error.lineno} column {error.colno})."
        ) from None
    except RecursionError:
        raise InputError(f"{source}: JSON is nested too deeply to be a bundle.") from None
    except ValueError:  # e.g. an integer beyond Python's digit limit
        raise InputError(f"{source}: holds a JSON value no bundle can hold.") from None


def read_bundle(path: Path) -> Bundle:
    """Read one bundle file (a single JSON object)."""
    return parse_bundle(decode_json(_read_text(path), str(path)), str(path))


def read_bundles(path: Path, bad_lines: list[InputError] | None = None) -> Iterator[Bundle]:
    """Read a bundle file, or a JSON-lines file with one bundle a line.

    With `bad_lines`, a JSON-lines line that is not a bundle is appended there and reading goes
    on with the next line (one corrupt entry must not hide the rest of a store); without it,
    the first bad line raises.
    """
    text = _read_text(path)
    if path.suffix != ".jsonl":
        try:
            data = _loads(text)
        except _TooManyObjects:
            raise _too_many(path) from None
        except json.JSONDecodeError as error:
            if error.msg != "Extra data":
                decode_json(text, str(path))  # raises with the position of the error
        except RecursionError:
            raise InputError(f"{path}: JSON is nested too deeply to be a bundle.") from None
        except ValueError:
            raise InputError(f"{path}: holds a JSON value no bundle can hold.") from None
        else:
            yield parse_bundle(data, str(path))
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            source = f"{path}:{number}"
            try:
                bundle = parse_bundle(decode_json(line, source), source)
            except InputError as error:
                if bad_lines is None:
                    raise
                bad_lines.append(error)
                continue
            yield bundle


class Signer(Protocol):
    """Anything that can sign a DSSE payload into a Sigstore bundle (a local key, Sigstore)."""

    @property
    def identity(self) -> str: ...

    def sign_dsse(self, payload: bytes, payload_type: str) -> dict: ...


def canonical_bundle_text(bundle: dict) -> str:
    return json.dumps(bundle, indent=2, sort_keys=True) + "\n"


def make_parent(path: Path) -> None:
    """Create the directory a file goes into; InputError when something else is in the way."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"{path.parent}: is not a directory, so {path.name} cannot be written there."
        ) from None
    except OSError as error:
        raise InputError(f"{path.parent}: cannot be created ({error.strerror}).") from None


def write_atomic(path: Path, data: str | bytes, *, overwrite: bool,
                 check: Callable[[Path], None] | None = None, suffix: str = "") -> None:
    """Write via a temporary file in the same directory and rename; never half a file.

    `check`, when given, sees the complete temporary file (beside `path`, so that relative
    paths in it resolve) before it is renamed into place; what it raises leaves `path` as it
    was."""
    make_parent(path)
    if os.path.lexists(path) and not overwrite:  # a link planted there counts as a file
        raise InputError(f"{path}: already exists; pass --force to replace it.")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, so it cannot be written as a file.")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                                             dir=path.parent)
    except OSError as error:
        raise InputError(f"{path}: cannot be written ({error.strerror}).") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        if check is not None:
            check(Path(temporary))
            if os.path.lexists(path) and not overwrite:  # appeared while it was checked
                raise InputError(f"{path}: already exists; pass --force to replace it.")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
