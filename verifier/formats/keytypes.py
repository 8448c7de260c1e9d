"""Which keys model-verifier accepts, and the hash an ECDSA curve implies: shared by key files
(signing) and token keys (pkcs11), so that neither imports the other to check a key.
"""

from __future__ import annotations

from verifier.errors import InputError

MIN_RSA_BITS = 2048
_CURVE_HASHES = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}


def curve_hash(key: object) -> object:
    """The hash an ECDSA key's curve implies (SHA-256/384/512), as a cryptography algorithm."""
    from cryptography.hazmat.primitives import hashes

    name = getattr(getattr(key, "curve", None), "name", "")
    return getattr(hashes, _CURVE_HASHES[name])()


def check_key_type(key: object, source: str) -> None:
    """InputError unless the key is one model-verifier accepts (public or private)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVE_HASHES:
            raise InputError(f"{source}: ECDSA keys must be on P-256, P-384 or P-521, this one "
                             f"is on {key.curve.name}.")
        return
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InputError(f"{source}: the RSA key has {key.key_size} bits; at least "
                             f"{MIN_RSA_BITS} are required.")
        return
    if not isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        raise InputError(f"{source}: only ECDSA (P-256, P-384, P-521), Ed25519 and RSA keys "
                         "are supported.")
