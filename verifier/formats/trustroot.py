"""Sigstore trusted roots and bundle files as read from disk, shared by the checks of keyless
bundles (keyless), of log entries and timestamps (transparency) and of key-signed bundles
(bundlecheck), so that none of those needs another to read its input.

`sigstore` is imported inside functions only, so that `--help` and key-only runs stay fast.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.envelope import decode_json

if TYPE_CHECKING:
    from sigstore.verify import Verifier


def _one_line(error: BaseException) -> str:
    """An exception's text as one clause: sigstore's messages can span lines."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text.rstrip(".")


def _verifier(root: str) -> Verifier:
    """The verifier for a trusted root file, read every time (a relative name, or a file
    replaced since, is never answered from memory); only the same bytes' parse is kept."""
    path = Path(root)
    data = readers.read_bytes(path, "Sigstore trusted root", readers.MAX_TRUST_BYTES,
                              missing=f"{path}: no such Sigstore trusted root file.")
    try:
        return _verifier_for(data)
    except Exception as error:  # pydantic, protobuf, cryptography: all mean "not a root"
        raise InputError(
            f"{path}: is not a usable Sigstore trusted root ({_one_line(error)})."
        ) from None


@functools.lru_cache(maxsize=8)
def _verifier_for(data: bytes) -> Verifier:
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.trustroot import v1 as trustroot_v1

    return Verifier(trusted_root=TrustedRoot(trustroot_v1.TrustedRoot.from_json(data)))


def read_bundle_json(path: Path) -> dict[str, Any]:
    """One bundle file as a JSON object, read bounded; InputError with a sentence otherwise."""
    text = readers.read_text(path, "bundle file", readers.MAX_BUNDLE_BYTES)
    data = decode_json(text, str(path))
    if not isinstance(data, dict):
        raise InputError(f"{path}: is not a Sigstore bundle (expected a JSON object).")
    return data
