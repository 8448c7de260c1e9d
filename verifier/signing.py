"""Local keys: generate, load, sign DSSE envelopes, verify them.

ECDSA P-256 (SHA-256, DER signatures) by default, Ed25519 on request. Private keys are PKCS#8
PEM (optionally encrypted), public keys SubjectPublicKeyInfo PEM. A verifier is given the keys
it trusts; the keyid/hint in a bundle is never used to pick or trust a key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from verifier import readers
from verifier.envelope import Bundle, make_key_bundle, make_parent, pae, write_atomic
from verifier.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

Algorithm = Literal["ecdsa-p256", "ed25519"]
ALGORITHMS: tuple[str, ...] = ("ecdsa-p256", "ed25519")
PASSWORD_VARIABLE = "MODEL_VERIFIER_KEY_PASSWORD"


def key_hint(public_pem: bytes) -> str:
    """The publicKey hint written in bundles: sha256 of the public key PEM (a hint only)."""
    return hashlib.sha256(public_pem).hexdigest()


def generate_keypair(prefix: Path, algorithm: str = "ecdsa-p256", password: str | None = None,
                     *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.is_dir():
            raise InputError(f"{path}: is a directory, so the key cannot be written there.")
        if os.path.lexists(path) and not overwrite:  # a dangling link planted there too
            raise InputError(f"{path}: already exists; pass --force to replace it.")
    if algorithm == "ecdsa-p256":
        key: EllipticCurvePrivateKey | Ed25519PrivateKey = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise InputError(
            f"unknown key algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}."
        )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    make_parent(private_path)
    _write_private(private_path, private_pem)
    write_atomic(public_path, public_pem.decode(), overwrite=True)
    return private_path, public_path


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key through a fresh file that nobody else can have prepared: created
    with O_EXCL|O_NOFOLLOW under an unpredictable name, mode 0600 from the start, then renamed
    over `path` (a rename replaces a link planted at `path`, it never writes through it)."""
    for _ in range(16):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise InputError(f"{path}: cannot be written ({error.strerror}).") from None
    else:
        raise InputError(f"{path}: cannot be written (no fresh temporary name).")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read_key_file(path: Path) -> bytes:
    return readers.read_bytes(path, "key file", readers.MAX_KEY_BYTES,
                              missing=f"{path}: no such key file.")


@dataclass(frozen=True)
class PublicKey:
    """A trusted public key, with the file it came from (for messages)."""

    source: str
    key: object  # cryptography public key
    pem: bytes

    @property
    def hint(self) -> str:
        return key_hint(self.pem)

    @functools.cached_property
    def _check(self) -> tuple[Callable[[bytes, bytes], object] | None, tuple[type, ...]]:
        """The key's verify call and the errors that mean "does not verify", resolved once:
        an audit checks thousands of bundles against the same few keys."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        key, failures = self.key, (InvalidSignature, ValueError)
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = ec.ECDSA(hashes.SHA256())

            def ecdsa(signature: bytes, data: bytes) -> object:
                return key.verify(signature, data, algorithm)

            return ecdsa, failures
        if isinstance(key, ed25519.Ed25519PublicKey):
            return key.verify, failures
        return None, failures

    def verify(self, signature: bytes, data: bytes) -> bool:
        check, failures = self._check
        if check is None:
            return False
        try:
            check(signature, data)
        except failures:
            return False
        return True


def load_public_key(path: Path) -> PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(f"{path}: is not a PEM public key.") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp256r1":
        raise InputError(f"{path}: ECDSA keys must be on P-256, this one is on {key.curve.name}.")
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise InputError(f"{path}: only ECDSA P-256 and Ed25519 public keys are supported.")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(str(path), key, pem)


class KeySigner:
    """Signs DSSE envelopes with a local private key."""

    def __init__(self, path: Path, password: str | None = None) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        data = _read_key_file(path)
        secret = password if password is not None else os.environ.get(PASSWORD_VARIABLE)
        try:
            key = serialization.load_pem_private_key(
                data, password=secret.encode() if secret else None
            )
        except TypeError:
            raise InputError(
                f"{path}: the key is encrypted; give its password with --password or "
                f"{PASSWORD_VARIABLE}."
            ) from None
        except ValueError:
            raise InputError(
                f"{path}: is not a PEM private key, or the password is wrong."
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise InputError(f"{path}: only ECDSA P-256 and Ed25519 private keys are supported.")
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name != "secp256r1":
            raise InputError(f"{path}: ECDSA keys must be on P-256.")
        self._key = key
        self.source = str(path)
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def identity(self) -> str:
        return f"key:{key_hint(self.public_pem)}"

    def sign_dsse(self, payload: bytes, payload_type: str) -> dict:
        """Sign the payload's PAE; return the bundle v0.3 as a JSON-ready dict."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        message = pae(payload_type, payload)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            signature = self._key.sign(message, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self._key.sign(message)
        return make_key_bundle(payload, payload_type, signature, key_hint(self.public_pem))


def bundle_signed_by(bundle: Bundle, key: PublicKey) -> bool:
    """True when any DSSE signature in the bundle verifies under key (hints ignored)."""
    message = pae(bundle.payload_type, bundle.payload)
    return any(key.verify(entry.sig, message) for entry in bundle.signatures)
