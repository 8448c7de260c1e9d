"""Keys and policy: `keygen`, `digest`, `policy init` and `policy check`.

Parses and prints only; the work is the library's, imported inside each command so that
`--help` starts fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import os
from pathlib import Path
from typing import Annotated

import typer

from verifier.cli.common import DigestOpt, JsonFlag, QuietFlag, _algorithms, app
from verifier.cli.output import _emit_json, _guard, _hasher_with_progress, _say


@app.command()
def keygen(
    prefix: Annotated[Path, typer.Argument(metavar="PREFIX",
        help="Writes PREFIX.key (0600) and PREFIX.pub.")],
    algorithm: Annotated[str, typer.Option(
        help="p256 (ECDSA P-256, the default), p384, p521 or ed25519.")] = "p256",
    password: Annotated[str | None, typer.Option(
        help="Encrypt the private key (or set MODEL_VERIFIER_KEY_PASSWORD).")] = None,
    force: Annotated[bool, typer.Option(help="Replace existing key files.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Generate a signing key pair.

    Example: model-verifier keygen keys/builder --algorithm ed25519
    """
    def action() -> None:
        from verifier.formats.signing import (
            PASSWORD_VARIABLE,
            canonical_algorithm,
            generate_keypair,
        )

        secret = password if password is not None else os.environ.get(PASSWORD_VARIABLE)
        private, public = generate_keypair(prefix, algorithm, secret, overwrite=force)
        if as_json:
            _emit_json({"private_key": str(private), "public_key": str(public),
                        "algorithm": canonical_algorithm(algorithm)})
        else:
            _say(f"wrote {private} (private, mode 0600) and {public} (public)")

    _guard(as_json, action)


@app.command()
def digest(
    paths: Annotated[list[Path], typer.Argument(metavar="PATHS", help="Files and directories.")],
    digest_algorithm: DigestOpt = "sha256",
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Print sha256 of files and in-toto dirHash of directories, like sha256sum.

    Example: model-verifier digest build/model build/model/model.safetensors
    """
    def action() -> None:
        hasher, progress = _hasher_with_progress(quiet, "hashing", _algorithms(digest_algorithm))
        try:
            results = hasher.digest_paths(paths)
        finally:
            progress.close()
        if as_json:
            _emit_json([
                {"path": str(r.path), "digest": r.digest_set(),
                 **({"files": r.files} if r.is_dir else {}),
                 **({"files_blake3": r.files_blake3} if r.files_blake3 else {})}
                for r in results
            ])
        else:
            for r in results:
                label = "dirHash:" if r.is_dir else ""
                _say(f"{label}{r.value}  {r.path}")
                if r.blake3 is not None:
                    _say(f"blake3:{r.blake3}  {r.path}")

    _guard(as_json, action)


policy_app = typer.Typer(
    name="policy", help="Write a policy from a recorded chain, or check one.",
    no_args_is_help=True, rich_markup_mode=None)

app.add_typer(policy_app, name="policy")


@policy_app.command("init")
def policy_init(
    attestations: Annotated[list[Path], typer.Argument(metavar="ATTESTATION_DIR...",
        help="Directories (or files) of the chain's attestations, and of its rebuilds.")],
    signer: Annotated[list[str], typer.Option("--signer", metavar="NAME=KEYFILE",
        help="A policy signer and its public key; the steps it signed are required; "
        "repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="The policy file to write.")],
    rebuilder: Annotated[list[str] | None, typer.Option("--rebuilder", metavar="NAME=KEYFILE",
        help="An independent rebuilder and its public key; adds a rebuild section; "
        "repeatable.")] = None,
    quorum: Annotated[int | None, typer.Option(
        help="Matching rebuilds each step needs (default: every --rebuilder).")] = None,
    rebuild_step: Annotated[list[str] | None, typer.Option("--rebuild-step", metavar="STEP",
        help="A step that must be rebuilt (default: every step); repeatable.")] = None,
    pin_code: Annotated[bool, typer.Option("--pin-code",
        help="Pin code files (*.py, *.sh, ...) by digest too, instead of unpinned patterns.")
        ] = False,
    name: Annotated[str | None, typer.Option(
        help="The policy's name (default: the file name without .yaml).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing FILE.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a commented policy that the recorded chain satisfies, and check that it does.

    Signers, every root input pinned by digest (code as unpinned patterns unless --pin-code),
    the steps in order with their signers and `after`, ignores for Hub downloads, and with
    --rebuilder a rebuild quorum. Exit 0 when the policy verifies every final artifact of the
    chain, 1 when it was written but does not (the reason is printed), 2 on bad input.

    Example: model-verifier policy init attestations rebuilds --signer
    builder=keys/builder.pub --rebuilder rebuilder-a=keys/rebuilder-a.pub --rebuilder
    rebuilder-b=keys/rebuilder-b.pub --out model-policy.yaml
    """
    def action() -> int:
        from verifier.judgement.policy_init import init_policy, parse_named_keys

        result = init_policy(
            attestations, parse_named_keys(signer, "--signer"),
            parse_named_keys(rebuilder or [], "--rebuilder"), out, quorum=quorum,
            pin_code=pin_code, name=name, force=force, rebuild_steps=rebuild_step)
        if as_json:
            _emit_json(result.to_dict())
        else:
            _say(f"wrote {result.path}: {len(result.steps)} step(s) "
                  f"({', '.join(result.steps)}), {result.pinned} pinned source(s)"
                  + (f", unpinned code {', '.join(result.unpinned_patterns)}"
                     if result.unpinned_patterns else "")
                  + (f", rebuilds of {', '.join(result.rebuild_steps)}"
                     if result.rebuild_steps else "")
                  + (f"; no rebuild given of {', '.join(result.unrebuilt_steps)}"
                     if result.unrebuilt_steps else ""))
            for artifact, passed, problem in result.artifacts:
                _say(f"  {'PASS' if passed else 'FAIL'}  {artifact}"
                      + (f": {problem}" if problem else ""))
        return 0 if result.verifies else 1

    _guard(as_json, action)


@policy_app.command("check")
def policy_check(
    policy: Annotated[Path, typer.Argument(metavar="FILE", help="The policy YAML to check.")],
    as_json: JsonFlag = False,
) -> None:
    """Check a policy: every error, with the field's path and a "did you mean" for unknown
    names (fields, signers, steps), and what would make it never pass or pass too easily
    (an expired date, a quorum beyond its rebuilders, two signers with one key, an unreadable
    key file). Exit 0 when valid, 2 when not or unreadable.

    Example: model-verifier policy check model-policy.yaml

    A policy asking for a replay quorum (rebuild.replay: {train: {segments: 3}}, docs/replay.md),
    its problems as JSON: model-verifier policy check --json policy.yaml
    """
    def action() -> int:
        from verifier.judgement.policy_check import check_policy, policy_warnings

        errors = check_policy(policy)
        warnings = policy_warnings(policy)
        if as_json:
            _emit_json({"policy": str(policy), "valid": not errors, "errors": errors,
                        "warnings": warnings})
            return 2 if errors else 0
        if errors:
            _say(f"{policy}: {len(errors)} error(s)")
            for error in errors:
                _say(f"  {error}")
        else:
            _say(f"{policy}: valid")
        for warning in warnings:
            _say(f"  warning: {warning}")
        return 2 if errors else 0

    _guard(as_json, action)
