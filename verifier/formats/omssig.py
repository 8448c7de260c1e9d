"""Whether a file is an OpenSSF Model Signing (OMS) signature, decided by its bytes.

Kept on the ground floor because every directory digest asks it (verifier.formats.digest leaves
an OMS `model.sig` out of the directory it signs); reading and checking OMS signatures is
verifier.neighbours.oms.
"""

from __future__ import annotations

import json
from pathlib import Path

from verifier.errors import InputError
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE, read_bundle

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
OLD_PREDICATE_TYPE = "https://model_signing/Digests/v0.1"


def is_oms_signature(path: Path) -> bool:
    """Whether a file is an OMS signature at all (a bundle of an OMS statement, current or
    withdrawn), whatever its signer and whether or not this tool can check it: such a file is
    about a directory and never one of its files."""
    try:
        bundle = read_bundle(path)
    except InputError:
        return False
    if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
        return False
    try:
        statement = json.loads(bundle.payload)
    except (ValueError, RecursionError):
        return False
    return (isinstance(statement, dict) and statement.get("_type") == STATEMENT_TYPE
            and statement.get("predicateType") in (PREDICATE_TYPE, OLD_PREDICATE_TYPE))
