"""Keys: generate, load, sign DSSE envelopes, verify them.

Verification speaks every key the formats around us use: ECDSA on P-256, P-384 and P-521 with
the hash each curve implies (SHA-256/384/512, DER signatures, as OMS, cosign and
securesystemslib do), Ed25519, and RSA of at least 2048 bits with PSS or PKCS#1 v1.5
(SHA-256/384/512). Keygen writes ECDSA (P-256 by default) or Ed25519 keys; RSA keys sign with
PSS over SHA-256, the scheme securesystemslib names rsassa-pss-sha256.

Private keys are PKCS#8 PEM (optionally encrypted) or a PKCS#11 URI
(`verifier.formats.pkcs11`); public keys SubjectPublicKeyInfo PEM; which keys are accepted is
`verifier.formats.keytypes`. A verifier is given the keys it trusts; the keyid/hint in a
bundle is never used to pick or trust a key.
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

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.envelope import Bundle, make_key_bundle, make_parent, pae, write_atomic
from verifier.formats.keytypes import check_key_type, curve_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

Algorithm = Literal["p256", "p384", "p521", "ed25519"]
ALGORITHMS: tuple[str, ...] = ("p256", "p384", "p521", "ed25519")
# Earlier names keep working: scripts written for the first keygen must not break.
ALIASES = {"ecdsa-p256": "p256", "ecdsa-p384": "p384", "ecdsa-p521": "p521"}
PASSWORD_VARIABLE = "MODEL_VERIFIER_KEY_PASSWORD"
_CURVES = {"p256": "SECP256R1", "p384": "SECP384R1", "p521": "SECP521R1"}


def canonical_algorithm(name: str) -> str:
    """The keygen algorithm a name (or an old alias) stands for; InputError when unknown."""
    chosen = ALIASES.get(name, name)
    if chosen not in ALGORITHMS:
        raise InputError(f"unknown key algorithm {name!r}; use one of {', '.join(ALGORITHMS)}.")
    return chosen


def sign_message(key: object, message: bytes, *, deterministic: bool = False) -> bytes:
    """Sign with a cryptography private key in the scheme its type implies (see module doc)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(curve_hash(key),  # type: ignore[arg-type]
                                          deterministic_signing=deterministic))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                             salt_length=padding.PSS.DIGEST_LENGTH),
                        hashes.SHA256())
    return key.sign(message)  # type: ignore[attr-defined]  # Ed25519: deterministic


def key_hint(public_pem: bytes) -> str:
    """The publicKey hint written in bundles: sha256 of the public key PEM (a hint only)."""
    return hashlib.sha256(public_pem).hexdigest()


def generate_keypair(prefix: Path, algorithm: str = "p256", password: str | None = None,
                     *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    algorithm = canonical_algorithm(algorithm)
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.is_dir():
            raise InputError(f"{path}: is a directory, so the key cannot be written there.")
        if os.path.lexists(path) and not overwrite:  # a dangling link planted there too
            raise InputError(f"{path}: already exists; pass --force to replace it.")
    if algorithm == "ed25519":
        key: EllipticCurvePrivateKey | Ed25519PrivateKey = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(getattr(ec, _CURVES[algorithm])())
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
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        key, failures = self.key, (InvalidSignature, ValueError)
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = ec.ECDSA(curve_hash(key))  # type: ignore[arg-type]

            def ecdsa(signature: bytes, data: bytes) -> object:
                return key.verify(signature, data, algorithm)

            return ecdsa, failures
        if isinstance(key, ed25519.Ed25519PublicKey):
            return key.verify, failures
        if isinstance(key, rsa.RSAPublicKey):
            # An RSA key does not say its padding or hash; each of these schemes is sound on
            # its own, so accepting a signature under any of them forges nothing.
            schemes = [(pad, digest) for digest in (hashes.SHA256(), hashes.SHA384(),
                                                    hashes.SHA512())
                       for pad in (padding.PSS(mgf=padding.MGF1(digest),
                                               salt_length=padding.PSS.AUTO),
                                   padding.PKCS1v15())]

            def rsa_any(signature: bytes, data: bytes) -> object:
                for pad, digest in schemes:
                    try:
                        return key.verify(signature, data, pad, digest)
                    except InvalidSignature:
                        continue
                raise InvalidSignature

            return rsa_any, failures
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

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(f"{path}: is not a PEM public key.") from None
    except Exception:  # an unsupported algorithm raises its own type
        raise InputError(f"{path}: holds a public key of a kind model-verifier cannot use.") \
            from None
    return public_key_from(key, str(path))


def public_key_from(key: object, source: str) -> PublicKey:
    """A PublicKey from a cryptography public key, after checking its type and size."""
    from cryptography.hazmat.primitives import serialization

    check_key_type(key, source)
    pem = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(source, key, pem)


def open_signer(key: str | Path, password: str | None = None) -> KeySigner:
    """The signer for --key: a PEM private key file, or a `pkcs11:` URI naming a token key."""
    text = str(key)
    if text.startswith("pkcs11:"):
        from verifier.formats.pkcs11 import Pkcs11Key

        token_key = Pkcs11Key.open(text)
        return KeySigner.from_key(token_key, token_key.uri.safe_text)  # never the PIN
    return KeySigner(Path(key), password)


def secret_files(key: str | Path) -> list[Path]:
    """The files a --key reads its secret from, to be kept from a recorded step: the PEM file,
    or the pin-source file of a pkcs11: URI (the token itself holds the key)."""
    text = str(key)
    if text.startswith("pkcs11:"):
        from verifier.formats.pkcs11 import parse_uri, pin_file

        pin = pin_file(parse_uri(text))
        return [] if pin is None else [pin]
    return [Path(key)]


class KeySigner:
    """Signs DSSE envelopes with a private key: a PEM file, or a key object with `sign` and
    `public_key` (a PKCS#11 token key) that signs in the same schemes."""

    def __init__(self, path: Path, password: str | None = None) -> None:
        from cryptography.hazmat.primitives import serialization

        data = _read_key_file(path)
        secret = password if password is not None else os.environ.get(PASSWORD_VARIABLE)
        try:
            key = serialization.load_pem_private_key(
                data, password=secret.encode() if secret else None
            )
        except TypeError:
            # cryptography raises TypeError both ways: a password for a plain key, and none for
            # an encrypted one. Say which, and where the password came from.
            if secret:
                given = "--password" if password is not None else PASSWORD_VARIABLE
                raise InputError(
                    f"{path}: the key is not encrypted, but a password was given ({given}); "
                    "give none for this key."
                ) from None
            raise InputError(
                f"{path}: the key is encrypted; give its password with --password or "
                f"{PASSWORD_VARIABLE}."
            ) from None
        except ValueError:
            raise InputError(
                f"{path}: is not a PEM private key, or the password is wrong."
            ) from None
        except Exception:  # an unsupported algorithm raises its own type
            raise InputError(f"{path}: holds a private key of a kind model-verifier cannot "
                             "use.") from None
        check_key_type(key, str(path))
        self._init(key, str(path))

    @classmethod
    def from_key(cls, key: object, source: str) -> KeySigner:
        signer = cls.__new__(cls)
        signer._init(key, source)
        return signer

    def _init(self, key: object, source: str) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = key
        self.source = source
        self.public_key = key.public_key()  # type: ignore[attr-defined]
        self.public_pem = self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def private_key(self) -> object:
        return self._key

    @property
    def identity(self) -> str:
        return f"key:{key_hint(self.public_pem)}"

    def sign(self, message: bytes, *, deterministic: bool = False) -> bytes:
        """A signature over message in the scheme the key type implies (module doc)."""
        custom = getattr(self._key, "sign_message", None)
        if custom is not None:
            return custom(message)
        return sign_message(self._key, message, deterministic=deterministic)

    def sign_dsse(self, payload: bytes, payload_type: str) -> dict:
        """Sign the payload's PAE; return the bundle v0.3 as a JSON-ready dict."""
        signature = self.sign(pae(payload_type, payload))
        return make_key_bundle(payload, payload_type, signature, key_hint(self.public_pem))


def bundle_signed_by(bundle: Bundle, key: PublicKey) -> bool:
    """True when any DSSE signature in the bundle verifies under key (hints ignored)."""
    message = pae(bundle.payload_type, bundle.payload)
    return any(key.verify(entry.sig, message) for entry in bundle.signatures)
