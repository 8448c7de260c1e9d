"""Test certificate authorities made with `cryptography`, for certificate-signer tests.

    issue(subject, *, ca=False, issuer=None, key=None, code_signing=True, san=None,
          sans=None, not_before=None, not_after=None) -> (certificate, private key)

`subject` is RFC 4514 text ("CN=release,O=Example"); without `issuer` the certificate is
self-signed. `san` is an e-mail SAN; `sans` adds any x509 general names (x509.DNSName(...)).
Leaves get key usage digital signature and, unless code_signing=False, the code signing
extended key usage; CAs get basic constraints CA and key usage certificate signing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID


def issue(subject: str, *, ca: bool = False, issuer: tuple[Any, Any] | None = None,
          key: Any = None, code_signing: bool = True, san: str | None = None,
          sans: list[x509.GeneralName] | None = None,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
          ) -> tuple[x509.Certificate, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string(subject)
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - dt.timedelta(days=1))
               .not_valid_after(not_after or now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),
            critical=False)
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    usage["key_cert_sign" if ca else "digital_signature"] = True
    if ca:
        usage["crl_sign"] = True
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    if not ca and code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    names = ([x509.RFC822Name(san)] if san is not None else []) + list(sans or [])
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key
