"""Verification: `verify-bundle`, `verify-vsa` and the deployment gate `verify-model` (also
`model-verifier verify`), for local files and oci:// artifacts.

Parses and prints only; the work is the library's, imported inside each command so that
`--help` starts fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import os
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.cli.common import (
    AttestationsOpt,
    CacheOpt,
    IdentityTokenOpt,
    IgnoreOpt,
    JsonFlag,
    LayoutKeyOpt,
    LayoutOpt,
    PasswordStdinFlag,
    PlainHttpFlag,
    PolicyOpt,
    QuietFlag,
    SigstoreFlag,
    TrustConfigOpt,
    TrustedRootOpt,
    UsernameOpt,
    VsaKeyOpt,
    VsaOpt,
    VsaPasswordOpt,
    _blob_cache,
    _input_error,
    _open_registry,
    _refuse_existing,
    _signer,
    app,
)
from verifier.cli.output import (
    _emit_json,
    _fail,
    _guard,
    _hasher_with_progress,
    _print_fetched,
    _Progress,
    _say,
)
from verifier.errors import VerifierError


def _print_report(report: Any, quiet: bool = False) -> None:
    verdict = "PASS" if report.passed else "FAIL"
    algorithm, value = next(iter(report.digest.items()))
    _say(f"{verdict}  {report.artifact}  ({algorithm} {value[:16]}…)")
    _say(f"  policy: {report.policy}")
    left_out = getattr(report, "ignored", [])
    if left_out:
        _say(f"  ignored (left out of the digest): {len(left_out)} file(s)")
        for item in [] if quiet else left_out:  # --quiet: the count alone
            _say(f"    {item['file']}  (pattern {item['pattern']!r}, {item['by']})")
    for step in report.steps:
        _say(f"  step {step['step']:<14} signed by {', '.join(step['signed_by'])}"
             f"  ({step['attestation']})")
    pinned = sum(1 for s in report.sources if s["pinned"])
    if report.sources:
        _say(f"  sources: {pinned} pinned, {len(report.sources) - pinned} unpinned")
    several = Counter(q.step for q in report.rebuilds)
    for quorum in report.rebuilds:
        which = f" ({quorum.attestation})" if several[quorum.step] > 1 else ""
        _say(f"  rebuilds of {quorum.step}{which}: {len(quorum.counted)}/{quorum.quorum} "
              f"matching ({', '.join(quorum.matched) or 'none'})")
        if getattr(quorum, "summary", ""):
            _say(f"    {quorum.summary}")
        for dissent in quorum.dissent:
            for file in dissent["files"]:
                _say(f"    signed dissent from {dissent['rebuilder']}: {_file_outcome(file)} "
                      f"({dissent['attestation']})")
            if dissent.get("cause"):
                _say(f"      likely cause: {dissent['cause']}")
        for probe in quorum.probes:
            overrides = " ".join(f"{k}={v}" for k, v in probe["overrides"].items())
            outcome = "reproduced every product" if not probe["files"] else "changed"
            _say(f"    probe by {probe['rebuilder']} with {overrides}, not counted: {outcome} "
                  f"({probe['attestation']})")
            for file in probe["files"]:
                _say(f"      {_file_outcome(file)}")
        for informational in getattr(quorum, "informational", []):
            for file in informational["files"]:
                _say(f"    informational from {informational['rebuilder']}: "
                      f"{_file_outcome(file)} (not judged)")
        for ignored in quorum.ignored:
            _say(f"    counted for nothing: {ignored}")
    for evidence in getattr(report, "oms", []):
        _print_oms(evidence)
    if report.problems:
        _say("  problems:")
        for problem in report.problems:
            _say(f"   - {problem.message}")
    for note in report.notes:
        _say(f"  note: {note}")


def _file_outcome(file: dict[str, Any]) -> str:
    """One rebuilt file that did not match: its verdict and, for tensors, the worst one."""
    tensors = file.get("tensors") or []
    worst = (f", {file.get('changed_tensors', len(tensors))} tensor(s) differ, "
             f"worst {tensors[0]['name']} (relative L2 {tensors[0]['rel_l2']:.3g})"
             if tensors and isinstance(tensors[0].get("rel_l2"), int | float) else "")
    return f"{file['name']} {file['verdict']}{worst}"


def _print_oms(evidence: dict[str, Any]) -> None:
    if evidence["verdict"] == "unreadable":
        _say(f"  OMS signature {evidence['signature']}: unreadable (see the problems or notes)")
        return
    who = ", ".join(evidence["signed_by"]) or "no signer the policy names"
    state = {"verified": f"all {evidence['files']} signed files match",
             "mismatch": "files differ from the signed manifest",
             "unattributed": "not counted"}[evidence["verdict"]]
    _say(f"  OMS signature {evidence['signature']} signed by {who}: {state} "
         f"(root sha256 {evidence['root_sha256'][:16]}…)")


def _verify(artifact: Path, attestations: list[Path] | None, policy: Path | None,
            as_json: bool, quiet: bool, trusted_root: Path | None = None,
            layout: Path | None = None, layout_keys: list[Path] | None = None,
            vsa: Path | None = None, signing: tuple[Any, ...] = (),
            force: bool = False, ignore: list[str] | None = None) -> None:
    """`signing` = (key, password, sigstore, identity_token, trust_config) for the --vsa."""
    def action() -> int:
        hasher, progress = _hasher_with_progress(quiet, "verifying")
        if artifact.is_dir() and not ignore:  # a dirHash is sha256 whatever the policy: hash
            hasher.prefetch([artifact])  # while we import (its ignore list is not known yet)
        try:
            return checked(hasher)
        finally:
            progress.close()

    def checked(hasher: Any) -> int:
        import dataclasses

        from verifier.errors import InputError
        from verifier.judgement.policy import DEFAULT_POLICY, load_policy
        from verifier.judgement.verify import artifact_algorithms, verify_artifact

        vsa_signer = None
        if vsa is not None:
            if layout is not None:
                raise InputError("--vsa summarises a verification against a policy; it cannot "
                                 "be combined with --layout.")
            _refuse_existing(vsa, force)
            vsa_signer = _signer(*signing)
        elif signing[0] is not None or signing[2]:
            raise InputError("--key and --sigstore sign the verification summary; give --vsa "
                             "FILE too.")
        if layout is not None or layout_keys:
            if ignore:
                raise InputError("--ignore adds to a policy's ignore list; it cannot be "
                                 "combined with --layout.")
            if layout is None or policy is not None:
                raise InputError("--layout-key needs --layout, and --layout replaces --policy; "
                                 "give --layout FILE --layout-key PUB without --policy.")
            from verifier.judgement.layout import verify_with_layout

            report = verify_with_layout(artifact, layout, layout_keys or [],
                                        attestations or [Path("attestations")], hasher=hasher)
            return _show_report(report, as_json)
        loaded = load_policy(policy or DEFAULT_POLICY)
        if trusted_root is not None:
            loaded = dataclasses.replace(loaded, trusted_root=trusted_root)
        if artifact.is_file():  # the policy says which digest; hash while signatures are checked
            hasher.prefetch([artifact], artifact_algorithms(loaded, artifact))
        report = verify_artifact(artifact, loaded, attestations or [Path("attestations")],
                                 hasher=hasher, ignore=ignore or ())
        if vsa is not None:
            from verifier.judgement.vsa import write_vsa

            write_vsa(vsa, report, loaded, vsa_signer, overwrite=force)
        return _show_report(report, as_json, vsa, quiet)

    _guard(as_json, action)


def _show_report(report: Any, as_json: bool, vsa: Path | None = None,
                 quiet: bool = False) -> int:
    if as_json:
        _emit_json({**report.to_dict(), **({"vsa": str(vsa)} if vsa is not None else {})})
    else:
        _print_report(report, quiet)
        if vsa is not None:
            _say(f"wrote signed verification summary {vsa} "
                 f"({'PASSED' if report.passed else 'FAILED'})")
    return 0 if report.passed else 1


@app.command("verify-bundle")
def verify_bundle(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE",
        help="A Sigstore bundle (.intoto.json, .sigstore.json).")],
    artifact: Annotated[str, typer.Option(
        metavar="PATH|sha256:HEX",
        help="The file or directory it should cover, or sha256:HEX to check by digest.")],
    key: Annotated[Path | None, typer.Option(
        help="The signer's public key (PEM), for a key-signed bundle.")] = None,
    identity: Annotated[str | None, typer.Option(
        help="Keyless: the certificate identity (SAN) that must have signed.")] = None,
    issuer: Annotated[str | None, typer.Option(
        help="Keyless: the OIDC issuer of that identity.")] = None,
    trusted_root: Annotated[Path | None, typer.Option(
        help="Sigstore trusted root JSON. Keyless: the root the certificate, log entry and "
        "timestamps must chain to (default: the public-good root shipped with "
        "model-verifier). With --key: check the bundle's log entries and timestamps "
        "against it (without it they are reported as unchecked).")] = None,
    staging: Annotated[bool, typer.Option(
        help="Keyless: use the Sigstore staging trusted root shipped with model-verifier.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check one bundle: signature, payload type, and that the artifact is covered.

    Verification is offline. A DSSE bundle must name the artifact among its subjects; a
    message-signature bundle (from `sigstore sign` or `cosign sign-blob`) must sign the
    artifact's own digest. A keyless bundle is checked against a Sigstore trusted root and the
    identity and issuer given; a key-signed one against the key, and its log entries and
    timestamps against --trusted-root when given.

    Example: model-verifier verify-bundle attestations/package.intoto.json
    --artifact build/model/model.safetensors --key keys/builder.pub

    By digest, with a managed key and its Sigstore instance: model-verifier verify-bundle
    model.bin.sigstore.json --artifact sha256:a0cf...01bf --key cosign.pub
    --trusted-root trusted_root.json

    Keyless: model-verifier verify-bundle attestations/package.intoto.json
    --artifact build/model --issuer https://token.actions.githubusercontent.com
    --identity https://github.com/OWNER/REPO/.github/workflows/train.yml@refs/heads/main
    """
    def action() -> int:
        from verifier.errors import InputError
        from verifier.formats.bundlecheck import ArtifactRef, check_bundle

        target = ArtifactRef.parse(artifact)
        if key is not None:
            if identity or issuer or staging:
                raise InputError("--key excludes --identity, --issuer and --staging; a bundle "
                                 "is either key-signed or keyless.")
            result = check_bundle(bundle, target, key, trusted_root)
            signer = str(key)
        elif identity and issuer:
            from verifier.formats.keyless import check_keyless_bundle, shipped_trusted_root
            from verifier.judgement.policy import KeylessIdentity

            if staging and trusted_root is not None:
                raise InputError("--staging and --trusted-root exclude each other.")
            root = shipped_trusted_root(staging=True) if staging else trusted_root
            result = check_keyless_bundle(
                bundle, target, KeylessIdentity(issuer=issuer, identity=identity), root)
            signer = f"{identity} ({issuer})"
        else:
            raise InputError("verify-bundle needs --key PUB for a key-signed bundle, or "
                             "--identity ID and --issuer URL for a keyless one.")
        if as_json:
            _emit_json(result.to_dict())
        elif result.ok:
            covered = (f"a message signature over {artifact}"
                       if result.kind == "message-signature"
                       else f"{artifact} is subject {result.subject_name}")
            _say(f"OK  {bundle}: signed by {signer}, {covered}")
            if result.verified_times:
                _say(f"  log entries and timestamps verified against {trusted_root}; "
                      f"verified signing time(s): {', '.join(result.verified_times)}")
            for note in result.notes:
                _say(f"  note: {note}")
        else:
            _say(f"FAIL  {result.message}")
        return 0 if result.ok else 1

    _guard(as_json, action)


@app.command("verify-vsa")
def verify_vsa(
    vsa: Annotated[Path, typer.Argument(metavar="VSA",
        help="A signed verification summary (what verify-model --vsa writes).")],
    artifact: Annotated[Path, typer.Option(help="The file or directory it must be about.")],
    key: Annotated[Path | None, typer.Option(
        help="The verifier's public key (PEM), for a key-signed summary.")] = None,
    identity: Annotated[str | None, typer.Option(
        help="Keyless: the certificate identity (SAN) of the verifier.")] = None,
    issuer: Annotated[str | None, typer.Option(
        help="Keyless: the OIDC issuer of that identity.")] = None,
    trusted_root: TrustedRootOpt = None,
    policy: Annotated[Path | None, typer.Option(
        help="The policy the verification must have used (compared by sha256).")] = None,
    max_age: Annotated[str | None, typer.Option(
        help="Refuse a summary verified longer ago than this (30m, 24h, 7d).")] = None,
    ignore: Annotated[list[str] | None, typer.Option(
        help="Accept a summary made with verify-model --ignore PATTERN (a pattern its policy "
        "does not hold); repeatable.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Gate on a verification summary: exit 0 only for a PASSED VSA about this artifact.

    Checked: the signature (--key, or --identity and --issuer), that it is a SLSA VSA, that a
    subject has the artifact's digest, that verificationResult is PASSED, with --policy that
    the policy's sha256 is the one recorded, with --max-age that it is recent enough. Every
    failure is listed; a FAILED summary exits 1 even though its signature is good.

    A directory is hashed without the files the summary's recorded ignore patterns match, and
    each file left out is listed; a pattern given to that verification with --ignore, outside
    its policy, fails unless this command names it with --ignore too.

    Example: model-verifier verify-vsa model.vsa.intoto.json
    --artifact build/model/model.safetensors --key keys/verifier.pub
    --policy model-policy.yaml --max-age 7d
    """
    def action() -> int:
        from verifier.errors import InputError
        from verifier.formats.envelope import read_bundle
        from verifier.judgement.vsa_check import check_vsa, parse_duration

        age = parse_duration(max_age) if max_age is not None else None
        bundle = read_bundle(vsa)
        if key is not None:
            if identity or issuer:
                raise InputError("--key excludes --identity and --issuer.")
            from verifier.formats.signing import bundle_signed_by, load_public_key

            verified = not bundle.is_keyless and bundle_signed_by(bundle, load_public_key(key))
            signer = f"the key {key}"
        elif identity and issuer:
            from verifier.formats.keyless import check_keyless
            from verifier.judgement.policy import KeylessIdentity

            spec = KeylessIdentity(issuer=issuer, identity=identity)
            verified = bundle.is_keyless and check_keyless(bundle, spec, trusted_root) is not None
            signer = f"{identity} ({issuer})"
        else:
            raise InputError("verify-vsa needs --key PUB, or --identity ID and --issuer URL, "
                             "naming the verifier that must have signed it.")
        result = check_vsa(bundle, verified, signer, artifact, accept_ignores=ignore or [],
                           policy=policy, max_age=age)
        if as_json:
            _emit_json(result.to_dict())
            return 0 if result.passed else 1
        if result.passed:
            _say(f"PASS  {vsa}: PASSED for {artifact}, signed by {signer}"
                  f", verified {result.summary.get('timeVerified')}")
        else:
            _say(f"FAIL  {vsa}")
            for failure in result.failures:
                _say(f"   - {failure}")
        left_out = result.summary.get("ignored", [])
        if left_out:
            _say(f"  ignored (left out of the digest, as the summary records): "
                 f"{len(left_out)} file(s)")
            for name in left_out:
                _say(f"    {name}")
        return 0 if result.passed else 1

    _guard(as_json, action)


def _verify_oci(artifact: str, attestations: list[Path] | None, policy: Path | None,
                as_json: bool, quiet: bool, trusted_root: Path | None, layout: Path | None,
                vsa: Path | None, signing: tuple[Any, ...], remote: tuple[Any, ...],
                ignore: list[str] | None = None) -> None:
    """verify-model oci://…: fetch the model and its referrers, then verify them exactly as
    local files, with any --attestations added."""
    plain_http, username, password_stdin, cache = remote

    def action() -> int:
        import dataclasses

        from verifier.interop.oci import store
        from verifier.judgement.policy import DEFAULT_POLICY, load_policy
        from verifier.judgement.verify import verify_artifact

        if layout is not None:
            raise _input_error("--layout verifies local files; pull the model first "
                               "(model-verifier pull) and verify the copy.")
        vsa_signer = None
        if vsa is not None:
            vsa_signer = _signer(*signing)
        elif signing[0] is not None or signing[2]:
            raise _input_error("--key and --sigstore sign the verification summary; give --vsa "
                               "FILE too.")
        loaded = load_policy(policy or DEFAULT_POLICY)
        if trusted_root is not None:
            loaded = dataclasses.replace(loaded, trusted_root=trusted_root)
        reference, registry = _open_registry(artifact, plain_http, username, password_stdin)
        fetching = _Progress("fetching", not quiet)
        hasher, progress = _hasher_with_progress(quiet, "verifying")
        try:
            with store.checkout(registry, reference, _blob_cache(cache),
                                progress=fetching.advance, on_total=fetching.expect) as fetched:
                fetching.close()
                dirs = [fetched.bundles_dir, *(attestations or [])]
                report = verify_artifact(fetched.model, loaded, dirs, hasher=hasher,
                                         ignore=ignore or ())
                report.notes[:0] = fetched.notes
                labels = fetched.labels()
                if vsa is not None:
                    store.write_vsa(vsa, report, loaded, vsa_signer, labels)
                report = store.relabel(report, labels)
        finally:
            fetching.close()
            progress.close()
        if as_json:
            summary = {k: v for k, v in fetched.to_dict().items()
                       if k not in ("model", "attestations", "notes")}
            _emit_json({**report.to_dict(), "oci": summary,
                        **({"vsa": str(vsa)} if vsa is not None else {})})
            return 0 if report.passed else 1
        _print_fetched(reference, dataclasses.replace(fetched, notes=[]))  # in the report's
        _print_report(report, quiet)
        if vsa is not None:
            _say(f"wrote signed verification summary {vsa} "
                  f"({'PASSED' if report.passed else 'FAILED'})")
        return 0 if report.passed else 1

    _guard(as_json, action)


verify_app = typer.Typer(
    name="verify-model",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@verify_app.command()
def verify_model(
    artifact: Annotated[str, typer.Argument(metavar="ARTIFACT",
        help="The model file or directory to check, or oci://HOST/REPO@sha256:… (or :TAG) "
        "in a registry, with every attestation attached to it, or hf://ORG/NAME@REVISION "
        "in the Hugging Face cache.")],
    attestations: AttestationsOpt = None,
    policy: PolicyOpt = None,
    trusted_root: TrustedRootOpt = None,
    layout: LayoutOpt = None,
    layout_key: LayoutKeyOpt = None,
    vsa: VsaOpt = None,
    key: VsaKeyOpt = None,
    password: VsaPasswordOpt = None,
    sigstore: SigstoreFlag = False,
    identity_token: IdentityTokenOpt = None,
    trust_config: TrustConfigOpt = None,
    plain_http: PlainHttpFlag = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinFlag = False,
    cache: CacheOpt = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --vsa file.")] = False,
    ignore: IgnoreOpt = None,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Gate a deployment: verify a model artifact's build chain against a policy.

    Exit 0 when the policy holds, 1 when it does not, 2 when the input cannot be used.

    Example: verify-model build/model/model.safetensors --policy model-policy.yaml
    --attestations attestations --attestations rebuilds

    With an in-toto layout: verify-model build/model --layout root.layout
    --layout-key keys/owner.pub --attestations attestations

    A downloaded model directory, without what the download added: verify-model
    ./tiny-gpt --policy model-policy.yaml --ignore '.cache/huggingface/**'
    --ignore .gitattributes

    A signed summary for a deployment system: verify-model build/model/model.safetensors
    --policy model-policy.yaml --vsa model.vsa.intoto.json --key keys/verifier.key

    A Hub model as from_pretrained cached it, by commit (its attestations are found in the
    revision's .attestations/ folder): HF_HUB_OFFLINE=1 verify-model hf://acme/tiny-gpt@0123abcd…
    --policy model-policy.yaml

    From a registry, by digest (every attestation attached to the model is fetched; a tag is
    resolved and its digest printed): verify-model
    oci://ghcr.io/acme/tiny-model@sha256:4f1c… --policy model-policy.yaml

    From the Hugging Face cache, offline, with the attestations the repository keeps in
    .attestations/: verify-model hf://acme/tiny-model@0123abcd… --policy model-policy.yaml
    """
    signing = (key, password, sigstore, identity_token, trust_config)
    from verifier.interop.oci.reference import is_oci

    if is_oci(artifact):
        if vsa is not None and os.path.lexists(vsa) and not force:
            _fail(_input_error(f"{vsa}: already exists; pass --force to replace it."), as_json)
        _verify_oci(artifact, attestations, policy, as_json, quiet, trusted_root, layout,
                    vsa, signing, (plain_http, username, password_stdin, cache), ignore)
        return
    if plain_http or username or password_stdin or cache:
        _fail(_input_error("--plain-http, --username, --password-stdin and --cache are for an "
                           "oci:// artifact."), as_json)
    if artifact.startswith("hf://"):  # the cached snapshot, found offline by huggingface_hub
        from verifier.neighbours.hub import resolve

        try:
            artifact = str(resolve(artifact).path)
        except VerifierError as error:
            _fail(error, as_json)
    _verify(Path(artifact), attestations, policy, as_json, quiet, trusted_root, layout,
            layout_key, vsa, signing, force, ignore)
