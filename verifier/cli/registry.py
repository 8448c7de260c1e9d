"""The registry: `push`, `attach` and `pull` of a model as an OCI artifact with its attestations.

Parses and prints only; the work is the library's, imported inside each command so that
`--help` starts fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.cli.common import (
    CacheOpt,
    JsonFlag,
    OciAttestationsOpt,
    PasswordStdinFlag,
    PlainHttpFlag,
    QuietFlag,
    UsernameOpt,
    _blob_cache,
    _input_error,
    _open_registry,
    app,
)
from verifier.cli.output import (
    _emit_json,
    _guard,
    _hasher_with_progress,
    _print_fetched,
    _Progress,
    _say,
    _size,
)

CheckpointsOpt = Annotated[Path | None, typer.Option(metavar="DIR",
    help="A step's checkpoint directory (each subdirectory a checkpoint, as record "
    "--checkpoints logs them): each checkpoint becomes a referrer of the model, so a replayer "
    "fetches only those it needs (rebuild --checkpoints-from oci://…).")]


def _print_checkpoints(pushed: list[Any]) -> None:
    for item in pushed:
        verb = "already attached, skipped" if item.status == "already attached" else item.status
        _say(f"  {verb}: checkpoint {item.name} (step {item.step}, {item.files} file(s), "
             f"{_size(item.uploaded_bytes)} uploaded; referrer {item.manifest_digest})")


def _print_attached(attached: list[Any]) -> None:
    for item in attached:
        verb = "already attached, skipped" if item.status == "already attached" else item.status
        what = " (record digests)" if item.kind == "record-digests" else ""
        _say(f"  {verb}: {item.source}{what} (referrer {item.manifest_digest})")


@app.command("push")
def push_command(
    model: Annotated[Path, typer.Argument(metavar="MODEL",
        help="The model file or directory to upload.")],
    target: Annotated[str, typer.Argument(metavar="REFERENCE",
        help="oci://HOST[:PORT]/REPO[:TAG]; without a tag the model is stored by digest only.")],
    attestations: OciAttestationsOpt = None,
    checkpoints: CheckpointsOpt = None,
    plain_http: PlainHttpFlag = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinFlag = False,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Upload a model as an OCI artifact and attach its attestations as referrers.

    One layer per file (CNCF ModelPack, raw layers; each file's path in its
    org.opencontainers.image.title annotation); every bundle under --attestations becomes a
    referrer of the model's manifest, and so does every record-digest file (*.mvrd) there.
    Prints the manifest digest, the name to deploy by.

    Example: model-verifier push build/model oci://ghcr.io/acme/tiny-model:v1
    --attestations attestations

    With the checkpoints a replayer fetches one by one (rebuild --checkpoints-from):
    model-verifier push model oci://ghcr.io/acme/tiny-model:v1 --attestations attestations
    --checkpoints ckpt
    """
    def action() -> None:
        from verifier.interop.oci import store
        from verifier.interop.oci.checkpoints import attach_checkpoints, read_checkpoints

        bundles = store.bundle_files(attestations or [])
        digest_files = store.record_digest_files(attestations or [])
        found = [] if checkpoints is None else read_checkpoints(checkpoints)
        reference, registry = _open_registry(target, plain_http, username, password_stdin)
        hasher, progress = _hasher_with_progress(quiet, "hashing")
        upload = _Progress("uploading", not quiet)
        try:
            result = store.push_model(model, reference, registry, hasher=hasher,
                                      progress=upload.advance, on_total=upload.expect)
        finally:
            progress.close()
            upload.close()
        result.attached = (store.attach(registry, result.digest, bundles, digest_files)
                           if bundles or digest_files else [])
        pushed = attach_checkpoints(registry, result.digest, found) if found else []
        if as_json:
            _emit_json({**result.to_dict(), "checkpoints": [c.to_dict() for c in pushed]})
            return
        tag = f" (tag {result.tag})" if result.tag else ""
        _say(f"pushed {model} as {result.reference}{tag}")
        _say(f"  {result.files} file(s), {_size(result.bytes)}: "
              f"{_size(result.uploaded_bytes)} uploaded, "
              f"{_size(result.bytes - result.uploaded_bytes)} already in the registry")
        _print_attached(result.attached)
        _print_checkpoints(pushed)
        _say(result.digest)

    _guard(as_json, action)


@app.command("attach")
def attach_command(
    target: Annotated[str, typer.Argument(metavar="REFERENCE",
        help="The model in the registry, by digest: oci://HOST/REPO@sha256:….")],
    bundles: Annotated[list[Path] | None, typer.Argument(metavar="BUNDLES",
        help="Bundle files or directories of them (.json, .jsonl; record-digest files, .mvrd, "
        "go too).")] = None,
    checkpoints: CheckpointsOpt = None,
    plain_http: PlainHttpFlag = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Attach attestations (a rebuild, a later step's) to a model already in a registry.

    A bundle already attached (the same bytes) is never attached twice. The model is named by
    digest: a tag can move, and evidence must stay with the bytes it speaks of.

    Example: model-verifier attach oci://ghcr.io/acme/tiny-model@sha256:4f1c…
    rebuilds/rebuilder-a

    Checkpoints for replayers, after the model was pushed: model-verifier attach
    oci://ghcr.io/acme/tiny-model@sha256:4f1c… --checkpoints ckpt
    """
    def action() -> None:
        from verifier.interop.oci import store
        from verifier.interop.oci.checkpoints import attach_checkpoints, read_checkpoints

        found = store.bundle_files(bundles or [])
        digest_files = store.record_digest_files(bundles or [])
        if not bundles and checkpoints is None:
            raise _input_error("attach needs bundles to attach, or --checkpoints DIR.")
        if bundles and not found and not digest_files:
            raise _input_error(f"{', '.join(map(str, bundles))}: holds no bundle or "
                               "record-digest file to attach.")
        checkpoint_files = [] if checkpoints is None else read_checkpoints(checkpoints)
        reference, registry = _open_registry(target, plain_http, username, password_stdin)
        if reference.digest is None:
            raise _input_error(f"{target}: attach needs the model's digest "
                               "(oci://HOST/REPO@sha256:…); a tag can move.")
        attached = (store.attach(registry, reference.digest, found, digest_files)
                    if found or digest_files else [])
        pushed = (attach_checkpoints(registry, reference.digest, checkpoint_files)
                  if checkpoint_files else [])
        if as_json:
            _emit_json({"reference": reference.pinned(),
                        "attached": [a.to_dict() for a in attached],
                        "checkpoints": [c.to_dict() for c in pushed]})
            return
        new = sum(1 for a in [*attached, *pushed] if a.status == "attached")
        _say(f"{reference.pinned()}: {new} attached, {len(attached) + len(pushed) - new} "
             "already there")
        _print_attached(attached)
        _print_checkpoints(pushed)

    _guard(as_json, action)


@app.command("pull")
def pull_command(
    source: Annotated[str, typer.Argument(metavar="REFERENCE",
        help="oci://HOST/REPO@sha256:… (or :TAG, resolved and printed).")],
    out: Annotated[Path, typer.Argument(metavar="DIR",
        help="Directory to create: DIR/NAME is the model, DIR/attestations its bundles.")],
    force: Annotated[bool, typer.Option(help="Replace DIR if it exists.")] = False,
    plain_http: PlainHttpFlag = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinFlag = False,
    cache: CacheOpt = None,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Fetch a model and every attestation attached to it, for offline verification.

    Layers are checked against their digests as they stream; DIR appears whole or not at all.

    Example: model-verifier pull oci://ghcr.io/acme/tiny-model@sha256:4f1c… tiny && verify-model
    tiny/model --attestations tiny/attestations --policy model-policy.yaml
    """
    def action() -> None:
        from verifier.interop.oci import store

        reference, registry = _open_registry(source, plain_http, username, password_stdin)
        progress = _Progress("fetching", not quiet)
        try:
            fetched = store.pull(registry, reference, _blob_cache(cache), out, force=force,
                                 progress=progress.advance, on_total=progress.expect)
        finally:
            progress.close()
        if as_json:
            _emit_json(fetched.to_dict())
            return
        _print_fetched(reference, fetched)
        _say(f"  wrote {fetched.model} and {len(fetched.referrers)} bundle(s) in "
              f"{fetched.bundles_dir}")
        if fetched.record_digests:
            _say(f"  and {len(fetched.record_digests)} record-digest file(s) in "
                 f"{fetched.bundles_dir / 'record-digests'} (for contamination "
                 f"--digests-from {fetched.bundles_dir})")
        _say(f"  verify offline: verify-model {fetched.model} --attestations "
              f"{fetched.bundles_dir} --policy POLICY")

    _guard(as_json, action)
