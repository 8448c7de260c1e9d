"""Hardware keys through PKCS#11: `--key pkcs11:token=…;object=…?module-path=…&pin-source=…`.

The URI is RFC 7512's, with the attributes cosign accepts: in the path `token` (label),
`object` (key label), `id` (percent-encoded CKA_ID), `slot-id`, `serial`; in the query
`module-path` (the PKCS#11 library, required), `pin-source` (a file holding the user PIN;
`file:` prefix optional) or `pin-value`. The private key never leaves the token: the token
signs, in the same schemes as file keys (ECDSA with the curve's hash, DER-encoded; Ed25519;
RSA-PSS over SHA-256), so that whatever verifies a file key's signature verifies the token's.

The PIN is read when the signer is opened and is never written anywhere. `python-pkcs11` is
imported only here, only when a pkcs11: key is given.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.keytypes import check_key_type

_PATH_ATTRIBUTES = ("token", "object", "id", "slot-id", "serial", "manufacturer", "model",
                    "library-manufacturer", "library-description", "library-version", "type")
MAX_PIN_BYTES = 4 * readers.KIB  # a PIN is a line; PKCS#11 allows at most a few hundred bytes
_QUERY_ATTRIBUTES = ("module-path", "module-name", "pin-source", "pin-value")


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None
    label: str | None
    key_id: bytes | None
    slot_id: int | None
    serial: str | None
    module_path: str
    pin_source: str | None
    pin_value: str | None

    @property
    def safe_text(self) -> str:
        """The URI for messages: never the PIN."""
        parts = [f"token={self.token}" if self.token else "",
                 f"object={self.label}" if self.label else "",
                 f"id={self.key_id.hex()}" if self.key_id else ""]
        return "pkcs11:" + ";".join(p for p in parts if p)


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse an RFC 7512 PKCS#11 URI; InputError (one sentence) for anything unusable."""
    if not text.startswith("pkcs11:"):
        raise InputError(f"{text!r} is not a pkcs11: URI.")
    path, _, query = text[len("pkcs11:"):].partition("?")
    fields: dict[str, str] = {}
    for part, allowed, separator in ((path, _PATH_ATTRIBUTES, ";"),
                                     (query, _QUERY_ATTRIBUTES, "&")):
        for item in filter(None, part.split(separator)):
            name, equals, value = item.partition("=")
            if not equals or name not in allowed:
                raise InputError(f"pkcs11 URI: {name!r} is not a PKCS#11 URI attribute "
                                 f"model-verifier reads (use {', '.join(allowed)}).")
            if name in fields:
                raise InputError(f"pkcs11 URI: {name!r} is given twice.")
            fields[name] = value
    if "module-path" not in fields:
        raise InputError("pkcs11 URI: give the PKCS#11 library with ?module-path=FILE.")
    if "object" not in fields and "id" not in fields:
        raise InputError("pkcs11 URI: name the key with object=LABEL or id=ID.")
    if "pin-source" in fields and "pin-value" in fields:
        raise InputError("pkcs11 URI: give pin-source or pin-value, not both.")
    slot = fields.get("slot-id")
    if slot is not None and not slot.isdigit():
        raise InputError(f"pkcs11 URI: slot-id {slot!r} is not a number.")
    return Pkcs11Uri(
        token=unquote(fields["token"]) if "token" in fields else None,
        label=unquote(fields["object"]) if "object" in fields else None,
        key_id=unquote_to_bytes(fields["id"]) if "id" in fields else None,
        slot_id=int(slot) if slot is not None else None,
        serial=unquote(fields["serial"]) if "serial" in fields else None,
        module_path=unquote(fields["module-path"]),
        pin_source=unquote(fields["pin-source"]) if "pin-source" in fields else None,
        pin_value=unquote(fields["pin-value"]) if "pin-value" in fields else None,
    )


def pin_file(uri: Pkcs11Uri) -> Path | None:
    """The file the PIN is read from (pin-source, a path or a file: URI), if any."""
    if uri.pin_source is None:
        return None
    return Path(uri.pin_source.removeprefix("file://").removeprefix("file:"))


def _read_pin(uri: Pkcs11Uri) -> str | None:
    if uri.pin_value is not None:
        return uri.pin_value
    if (path := pin_file(uri)) is None:
        return None
    source = str(path)
    # A PIN is a line of text; the cap keeps a link to /dev/zero from filling memory.
    text = readers.read_text(Path(source), "PIN file (pin-source of the pkcs11 key)",
                             MAX_PIN_BYTES, missing=f"{source}: no such PIN file (pin-source "
                             "of the pkcs11 key).")
    return text.rstrip("\r\n")


@functools.lru_cache(maxsize=4)
def _library(module_path: str) -> Any:
    import pkcs11

    if not Path(module_path).is_file():
        raise InputError(f"{module_path}: no such PKCS#11 module (module-path of the pkcs11 "
                         "key).")
    try:
        return pkcs11.lib(module_path)
    except Exception as error:  # the loader's own errors: not a PKCS#11 library
        raise InputError(f"{module_path}: is not a usable PKCS#11 module "
                         f"({type(error).__name__}).") from None


class Pkcs11Key:
    """A private key on a token: `public_key()` and `sign_message()`, as KeySigner expects.

    Each use opens a session, logs in and closes it again, so that no login outlives the
    operation (PKCS#11 logins belong to the application and end with its last session)."""

    def __init__(self, uri: Pkcs11Uri, token: Any, pin: str | None) -> None:
        self.uri = uri
        self._token = token
        self._pin = pin
        self._public_key: Any = None

    @classmethod
    def open(cls, text: str) -> Pkcs11Key:
        """Find the token and the key now, so that a wrong PIN or label fails before a step
        runs; InputError (one sentence) for anything unusable."""
        uri = parse_uri(text)
        try:
            from pkcs11.exceptions import PKCS11Error
        except ImportError:
            raise InputError("a pkcs11: key needs the python-pkcs11 package; install "
                             "model-verifier[pkcs11].") from None
        pin = _read_pin(uri)  # first: a bad pin-source is the user's to fix, token or not
        library = _library(uri.module_path)
        try:
            tokens = [t for t in library.get_tokens(token_label=uri.token, token_serial=(
                uri.serial.encode() if uri.serial else None))
                      if uri.slot_id is None or t.slot.slot_id == uri.slot_id]
        except PKCS11Error as error:
            raise InputError(f"{uri.safe_text}: the token list cannot be read "
                             f"({type(error).__name__}).") from None
        if len(tokens) != 1:
            raise InputError(f"{uri.safe_text}: {'no' if not tokens else 'more than one'} "
                             "token matches.")
        key = cls(uri, tokens[0], pin)
        with key._session() as session:
            _, public = key._keys(session)
            key._public_key = key._to_cryptography(public)
        check_key_type(key._public_key, uri.safe_text)
        return key

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        from pkcs11.exceptions import PKCS11Error

        try:
            session = self._token.open(user_pin=self._pin)
        except PKCS11Error as error:
            raise InputError(f"{self.uri.safe_text}: cannot log in to the token "
                             f"({type(error).__name__}; is the PIN right?).") from None
        try:
            yield session
        finally:
            session.close()

    def _keys(self, session: Any) -> tuple[Any, Any]:
        from pkcs11 import Attribute, ObjectClass
        from pkcs11.exceptions import PKCS11Error

        query: dict[Any, Any] = {}
        if self.uri.label is not None:
            query[Attribute.LABEL] = self.uri.label
        if self.uri.key_id is not None:
            query[Attribute.ID] = self.uri.key_id
        try:
            privates = list(session.get_objects({**query,
                                                 Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
            publics = list(session.get_objects({**query,
                                                Attribute.CLASS: ObjectClass.PUBLIC_KEY}))
        except PKCS11Error as error:
            raise InputError(f"{self.uri.safe_text}: the token cannot be searched "
                             f"({type(error).__name__}).") from None
        if len(privates) != 1 or len(publics) != 1:
            found = "no" if not privates or not publics else "more than one"
            raise InputError(f"{self.uri.safe_text}: {found} private key with its public key "
                             "matches on the token.")
        return privates[0], publics[0]

    def _to_cryptography(self, public: Any) -> Any:
        from cryptography.hazmat.primitives import serialization
        from pkcs11 import KeyType
        from pkcs11.util.ec import encode_ec_public_key
        from pkcs11.util.rsa import encode_rsa_public_key

        key_type = public.key_type
        if key_type == KeyType.EC_EDWARDS:
            from cryptography.hazmat.primitives.asymmetric import ed25519
            from pkcs11 import Attribute

            point = bytes(public[Attribute.EC_POINT])
            if len(point) == 34 and point[:2] == b"\x04\x20":  # DER OCTET STRING, as 2.40 says
                point = point[2:]
            try:
                return ed25519.Ed25519PublicKey.from_public_bytes(point)
            except ValueError:
                raise InputError(f"{self.uri.safe_text}: the token's Edwards key is not an "
                                 "Ed25519 key.") from None
        if key_type == KeyType.EC:
            return serialization.load_der_public_key(encode_ec_public_key(public))
        if key_type == KeyType.RSA:
            return serialization.load_der_public_key(_rsa_spki(encode_rsa_public_key(public)))
        raise InputError(f"{self.uri.safe_text}: the token key is {key_type.name}; "
                         "model-verifier signs with EC, Ed25519 and RSA token keys.")

    def public_key(self) -> Any:
        return self._public_key

    def sign_message(self, message: bytes) -> bytes:
        """Sign on the token, in the scheme a file key of the same type uses."""
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from pkcs11 import MGF, Mechanism
        from pkcs11.exceptions import PKCS11Error
        from pkcs11.util.ec import encode_ecdsa_signature

        public = self._public_key
        try:
            with self._session() as session:
                private, _ = self._keys(session)
                if isinstance(public, ed25519.Ed25519PublicKey):
                    return bytes(private.sign(message, mechanism=Mechanism.EDDSA))
                if isinstance(public, ec.EllipticCurvePublicKey):
                    name = {"secp256r1": "sha256", "secp384r1": "sha384",
                            "secp521r1": "sha512"}[public.curve.name]
                    digest = hashlib.new(name, message).digest()
                    raw = private.sign(digest, mechanism=Mechanism.ECDSA)
                    return bytes(encode_ecdsa_signature(raw))
                return bytes(private.sign(
                    message, mechanism=Mechanism.SHA256_RSA_PKCS_PSS,
                    mechanism_param=(Mechanism.SHA256, MGF.SHA256, 32)))
        except PKCS11Error as error:
            raise InputError(f"{self.uri.safe_text}: the token refused to sign "
                             f"({type(error).__name__}).") from None


def _rsa_spki(pkcs1: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (rsaEncryption, NULL params)."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _length(len(pkcs1) + 1) + b"\x00" + pkcs1
    body = algorithm + bit_string
    return b"\x30" + _length(len(body)) + body


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded
