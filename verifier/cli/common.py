"""The applications and the options and input helpers several groups of commands share.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

EPILOG_MAIN = """Examples:

  model-verifier keygen keys/builder

  model-verifier record --step train --material build/data --product build/weights.npz
  --key keys/builder.key --env OMP_NUM_THREADS -- python train.py

  model-verifier rebuild attestations/*.intoto.json --trust-key keys/builder.pub
  --key keys/rebuilder.key --out rebuilds

  verify-model build/model/model.safetensors --policy model-policy.yaml
"""

app = typer.Typer(
    name="model-verifier",
    help="Record, rebuild and verify machine-learning model builds with signed attestations.",
    epilog=EPILOG_MAIN,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object.")]

QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]

DigestOpt = Annotated[str, typer.Option(
    "--digest", help="sha256 (default), or blake3: BLAKE3 of each file alongside its sha256 "
    "(a parallel digest for very large files; see docs/digests.md).")]


def _algorithms(choice: str) -> tuple[str, ...]:
    from verifier.errors import InputError

    if choice not in ("sha256", "blake3"):
        raise InputError(f"--digest {choice}: unknown digest; choose sha256 or blake3.")
    return ("sha256",) if choice == "sha256" else ("sha256", "blake3")


SigstoreFlag = Annotated[bool, typer.Option(
    "--sigstore", help="Sign keylessly through Sigstore with an OIDC identity (CI's ambient "
    "credential, --identity-token or SIGSTORE_ID_TOKEN).")]

IdentityTokenOpt = Annotated[str | None, typer.Option(
    help="OIDC identity token for --sigstore (default: SIGSTORE_ID_TOKEN or the CI's).")]

TrustConfigOpt = Annotated[Path | None, typer.Option(
    help="Sigstore ClientTrustConfig JSON for staging or a private instance "
    "(default: public-good Sigstore).")]


def _signer(key: Path | None, password: str | None, sigstore: bool = False,
            identity_token: str | None = None, trust_config: Path | None = None) -> Any:
    from verifier.errors import InputError

    if sigstore:
        if key is not None:
            raise InputError("--key and --sigstore exclude each other; choose one way to sign.")
        from verifier.formats.keyless import SigstoreSigner

        return SigstoreSigner(identity_token, trust_config)
    if identity_token is not None or trust_config is not None:
        raise InputError("--identity-token and --trust-config need --sigstore.")
    from verifier.formats.signing import open_signer

    if key is None:
        raise InputError("no signing key given; pass --key FILE (see `model-verifier keygen`) "
                         "or --sigstore.")
    return open_signer(key, password)


def _refuse_existing(path: Path, force: bool) -> None:
    """Before any work: an output file that exists (a link included) is replaced only with
    --force; the writer checks again when it writes."""
    from verifier.errors import InputError

    if os.path.lexists(path) and not force:
        raise InputError(f"{path}: already exists; pass --force to replace it.")


AttestationsOpt = Annotated[list[Path] | None, typer.Option(
    help="Directory (or file) of attestations; repeatable. Default: attestations/.")]

PolicyOpt = Annotated[Path | None, typer.Option(
    help="Policy YAML. Default: model-policy.yaml in the current directory.")]

LayoutOpt = Annotated[Path | None, typer.Option(
    help="Verify against this signed in-toto layout instead of a policy.")]

LayoutKeyOpt = Annotated[list[Path] | None, typer.Option(
    help="Public key (PEM) that must have signed the layout (repeatable).")]

TrustedRootOpt = Annotated[Path | None, typer.Option(
    help="Sigstore trusted root JSON for keyless signers (overrides the policy's trusted_root; "
    "default: the public-good root shipped with model-verifier).")]

IgnoreOpt = Annotated[list[str] | None, typer.Option(
    "--ignore", metavar="PATTERN",
    help="For a directory artifact: leave files matching this glob out of its digest (added to "
    "the policy's ignore list; * within a name, ** across folders; a folder pattern covers its "
    "files); repeatable. Every file left out is listed in the report.")]

VsaOpt = Annotated[Path | None, typer.Option(
    help="Also write the verdict as a signed SLSA verification summary (VSA) to this file; "
    "sign it with --key or --sigstore.")]

VsaKeyOpt = Annotated[Path | None, typer.Option(
    "--key", help="Private key (PEM file or pkcs11: URI) that signs the --vsa summary.")]

VsaPasswordOpt = Annotated[str | None, typer.Option(
    "--password", help="The --key's password.")]


PlainHttpFlag = Annotated[bool, typer.Option(
    "--plain-http", help="Speak plain HTTP to a registry on loopback (tests); refused for any "
    "other host.")]

UsernameOpt = Annotated[str | None, typer.Option(
    help="Registry user name (default: the Docker config's credentials for the registry).")]

PasswordStdinFlag = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the registry password or token from standard input.")]

CacheOpt = Annotated[Path | None, typer.Option(
    help="Blob cache directory (default: $MODEL_VERIFIER_CACHE, else "
    "$XDG_CACHE_HOME/model-verifier). Cached blobs are re-hashed on every use.")]

OciAttestationsOpt = Annotated[list[Path] | None, typer.Option(
    help="Directory (or file) of attestation bundles to attach; repeatable.")]


def _input_error(message: str) -> Any:
    from verifier.errors import InputError

    return InputError(message)


def _open_registry(text: str, plain_http: bool, username: str | None, password_stdin: bool
                   ) -> tuple[Any, Any]:
    """(Reference, Registry) for an oci:// argument, with its credentials."""
    from verifier.interop.oci.auth import Credentials, docker_credentials
    from verifier.interop.oci.client import Registry
    from verifier.interop.oci.reference import parse_reference

    reference = parse_reference(text)
    if password_stdin and username is None:
        raise _input_error("--password-stdin needs --username.")
    if username is not None:
        if not password_stdin:
            raise _input_error("--username needs --password-stdin (a password is never "
                               "taken on the command line).")
        secret = sys.stdin.readline().rstrip("\r\n")
        credentials = Credentials(username, secret)
    else:
        credentials = docker_credentials(reference.registry)
    return reference, Registry(reference, credentials=credentials, plain_http=plain_http)


def _blob_cache(directory: Path | None) -> Any:
    from verifier.interop.oci.cache import BlobCache, default_cache_dir

    return BlobCache(directory or default_cache_dir())
