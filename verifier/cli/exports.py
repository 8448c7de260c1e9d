"""Exports to the neighbours' formats: `export` (classic in-toto links) and `sign-model` (an
OMS model.sig).

Parses and prints only; the work is the library's, imported inside each command so that
`--help` starts fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
from pathlib import Path
from typing import Annotated

import typer

from verifier.cli.common import (
    IdentityTokenOpt,
    JsonFlag,
    SigstoreFlag,
    TrustConfigOpt,
    _signer,
    app,
)
from verifier.cli.output import _emit_json, _guard, _say


@app.command("export")
def export_command(
    attestations: Annotated[list[Path], typer.Argument(metavar="ATTESTATIONS",
        help="Step attestations (files or directories) to export.")],
    key: Annotated[Path, typer.Option(
        help="Private key to sign the links with: a PEM file, or a pkcs11: URI for a key on a "
        "hardware token.")],
    out: Annotated[Path, typer.Option(help="Directory for the links.")],
    export_format: Annotated[str, typer.Option(
        "--format", help="Output format; in-toto-link is the one there is.")] = "in-toto-link",
    attested_by: Annotated[list[Path] | None, typer.Option(
        help="Also accept attestations signed by this public key (repeatable); by default "
        "only those signed by --key's own key are re-signed.")] = None,
    password: Annotated[str | None, typer.Option(help="The key's password.")] = None,
    force: Annotated[bool, typer.Option(help="Replace existing link files.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write one signed classic in-toto link per step, for in-toto-verify and its layouts.

    Example: model-verifier export attestations/*.intoto.json --format in-toto-link
    --key keys/builder.key --out links && in-toto-verify --layout root.layout
    --verification-keys keys/owner.pub --link-dir links
    """
    def action() -> None:
        from verifier.errors import InputError
        from verifier.neighbours.intoto_links import LINK_FORMAT, export_links

        if export_format != LINK_FORMAT:
            raise InputError(f"--format {export_format!r}: the one export format is "
                             f"{LINK_FORMAT}.")
        notes: list[str] = []
        written = export_links(attestations, key, out, password=password,
                               attested_by=attested_by or [], force=force, notes=notes)
        if as_json:
            _emit_json({"links": [w.to_dict() for w in written], "notes": notes})
            return
        for link in written:
            _say(f"wrote {link.link}  (step {link.step!r}, from {link.attestation})")
        for note in notes:
            _say(f"note: {note}")

    _guard(as_json, action)


@app.command("sign-model")
def sign_model(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="The model directory to sign.")],
    key: Annotated[Path | None, typer.Option(
        help="Private key to sign with: a PEM file, or a pkcs11: URI "
        "(pkcs11:token=T;object=K?module-path=LIB&pin-source=FILE).")] = None,
    password: Annotated[str | None, typer.Option(help="The key's password.")] = None,
    signature: Annotated[Path | None, typer.Option(
        help="Where to write the signature (default: MODEL/model.sig).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing signature.")] = False,
    sigstore: SigstoreFlag = False,
    identity_token: IdentityTokenOpt = None,
    trust_config: TrustConfigOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Write an OpenSSF Model Signing (OMS v1.0) model.sig for a model directory.

    The signature verifies with `model_signing verify key MODEL --signature MODEL/model.sig
    --public_key KEY.pub` (ECDSA P-256 keys; model_signing does not verify Ed25519).

    Example: model-verifier sign-model build/model --key keys/builder.key
    """
    def action() -> None:
        from verifier.neighbours.oms import sign_directory

        if sigstore and key is not None:
            from verifier.errors import InputError

            raise InputError("--key and --sigstore exclude each other; choose one way to sign.")
        keyless = _signer(None, None, True, identity_token, trust_config) if sigstore else None
        result = sign_directory(model, key=key, signer=keyless, password=password,
                                out=signature, force=force)
        if as_json:
            _emit_json(result.to_dict())
        else:
            _say(f"wrote {result.signature}: OMS v1.0, {result.files} file(s), root sha256 "
                 f"{result.root_sha256[:16]}…, signed by {result.signer[:24]}…")

    _guard(as_json, action)
