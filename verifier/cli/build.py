"""Record and rebuild: `record` runs one build step and signs its attestation, `rebuild` re-runs
recorded steps in fresh sandboxes.

Parses and prints only; the work is the library's, imported inside each command so that
`--help` starts fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.cli.common import (
    CacheOpt,
    DigestOpt,
    IdentityTokenOpt,
    JsonFlag,
    PasswordStdinFlag,
    PlainHttpFlag,
    QuietFlag,
    SigstoreFlag,
    TrustConfigOpt,
    UsernameOpt,
    _algorithms,
    _blob_cache,
    _open_registry,
    _signer,
    app,
)
from verifier.cli.output import (
    _emit_json,
    _guard,
    _hasher_with_progress,
    _say,
    _size,
    _warn,
)
from verifier.errors import StepFailed

SandboxOpt = Annotated[str, typer.Option(
    "--sandbox", help="auto (bubblewrap when installed and usable, else none with a warning), "
    "bwrap, or none. Inside bubblewrap: read-only system, no network, private /tmp, no home "
    "directory; the workspace is the only writable place.")]
# rebuild runs someone else's step: auto never falls back to none (a machine without
# bubblewrap says --sandbox none, or MODEL_VERIFIER_SANDBOX=none, itself).
RebuildSandboxOpt = Annotated[str, typer.Option(
    "--sandbox", envvar="MODEL_VERIFIER_SANDBOX",
    help="auto (bubblewrap when installed and usable; without it rebuild refuses), bwrap, or "
    "none (default from MODEL_VERIFIER_SANDBOX). Inside bubblewrap: read-only system, no "
    "network, private /tmp, no home directory; the workspace is the only writable place.")]

NetworkFlag = Annotated[bool, typer.Option(
    "--network", help="Let the sandboxed step reach the network (recorded).")]

DeviceOpt = Annotated[list[str] | None, typer.Option(
    "--device", help="Pass this device node into the sandbox, e.g. /dev/nvidia0 (repeatable; "
    "recorded).")]


def _sandbox(choice: str, network: bool, devices: list[str] | None) -> Any:
    from verifier.steps.sandbox import resolve

    # Its warning (no bubblewrap here) is shown once the step is about to run or has run:
    # a command refused for bad input says one sentence, nothing more.
    return resolve(choice, network=network, devices=devices or [])


def _pairs(values: list[str] | None, option: str, shape: str, *, path_first: bool
           ) -> list[tuple[Any, Any]]:
    """KIND=PATH or PATH=EXPR option values, split at the first '='."""
    from verifier.errors import InputError

    found: list[tuple[Any, Any]] = []
    for value in values or []:
        left, sep, right = value.partition("=")
        if not sep or not left or not right:
            raise InputError(f"{option} {value!r}: expected {shape}.")
        found.append((Path(left), right) if path_first else (left, Path(right)))
    return found


@app.command(context_settings={"allow_interspersed_args": False})
def record(
    command: Annotated[list[str], typer.Argument(metavar="COMMAND",
        help="The command to run, after `--`.")],
    step: Annotated[str, typer.Option(help="The step's name, e.g. train.")],
    material: Annotated[list[Path] | None, typer.Option(
        help="An input file or directory (repeatable).")] = None,
    product: Annotated[list[Path] | None, typer.Option(
        help="An output file or directory (repeatable).")] = None,
    key: Annotated[Path | None, typer.Option(
        help="Private key to sign with (PEM file or pkcs11: URI).")] = None,
    password: Annotated[str | None, typer.Option(help="The key's password.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for NAME.intoto.json.")] = Path(
        "attestations"),
    env: Annotated[list[str] | None, typer.Option(
        help="Record and pass this variable (NAME or NAME=VALUE; repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing attestation.")] = False,
    oms: Annotated[bool, typer.Option(
        "--oms", help="Also write an OMS model.sig into each product directory "
        "(for a packaging step).")] = False,
    sigstore: SigstoreFlag = False,
    identity_token: IdentityTokenOpt = None,
    trust_config: TrustConfigOpt = None,
    digest_algorithm: DigestOpt = "sha256",
    sandbox: SandboxOpt = "auto",
    network: NetworkFlag = False,
    device: DeviceOpt = None,
    component: Annotated[list[str] | None, typer.Option(
        help="Declare a material or product as an openness component, KIND=PATH (e.g. "
        "training-data=build/data; repeatable; signed; see docs/openness.md).")] = None,
    material_license: Annotated[list[str] | None, typer.Option(
        help="The SPDX licence expression of a material or product, PATH=EXPR (repeatable; "
        "signed; judged by the policy's licenses rule).")] = None,
    record_digests: Annotated[list[Path] | None, typer.Option(
        help="Write salted digests of this data file's records and word 13-grams to "
        "OUT/record-digests/STEP/PATH.mvrd, signed as a byproduct, for `contamination` "
        "(repeatable).")] = None,
    record_unit: Annotated[str | None, typer.Option(
        help="What one record of the --record-digests files is: paragraph (text, the "
        "default: 13-grams run across its line breaks), line, or field (JSON Lines, the "
        "default: each string value).")] = None,
    trace: Annotated[bool | None, typer.Option(
        "--trace/--no-trace", help="Follow the command with strace and list the files it read "
        "that are not declared materials (default: on where strace is installed).")] = None,
    strict: Annotated[bool, typer.Option(
        help="Refuse the step when it read a file that is not a declared material.")] = False,
    attest_existing: Annotated[bool, typer.Option(
        help="Attest products that existed before the command ran (made by an earlier, "
        "unrecorded process); signed as existingProducts. Without it such a product is "
        "refused.")] = False,
    python: Annotated[Path | None, typer.Option(
        "--python", metavar="PATH", help="The Python interpreter the step runs, when argv does "
        "not say (e.g. `-- sh -c 'venv/bin/python train.py'`): its version and packages are "
        "recorded. Default: argv[0] when it is a Python, a script's #! line, else the PATH's "
        "python3.")] = None,
    checkpoints: Annotated[Path | None, typer.Option(
        "--checkpoints", metavar="DIR", help="The directory the step writes its checkpoints "
        "into (one subdirectory each, named by its step number): each is a product, and their "
        "log is signed for segment replay (docs/replay.md). Needs --resume.")] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="TEMPLATE", help="The command that continues the run from one "
        "checkpoint to the next, with {checkpoint}, {step} and {out} (signed; replayers run "
        "exactly it).")] = None,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Run one build step and write its signed attestation.

    Example: model-verifier record --step train --material build/data
    --product build/weights.npz --key keys/builder.key --env OMP_NUM_THREADS=1
    -- python train.py

    Keyless, in CI: model-verifier record --step package --sigstore --product build/model
    -- python package.py

    A training run whose checkpoints can be replayed in segments (docs/replay.md):
    model-verifier record --step train --material data --product model --checkpoints ckpt
    --resume "python train.py --from {checkpoint} --until {step} --out {out}"
    --key keys/builder.key -- python train.py --out ckpt

    The step runs in the bubblewrap sandbox when it is installed (--sandbox; --network and
    --device to let the network or a GPU in, both recorded) and is traced with strace when that
    is installed: files it read that are not declared materials are signed into the
    attestation as undeclaredInputs, and --strict refuses the step instead. A product that
    existed before the command and that it did not write is refused. See docs/rebuild.md.
    """
    def action() -> int:
        from verifier.errors import InputError
        from verifier.steps import trace as tracing
        from verifier.steps.record import record_step, termination_as_interrupt

        signer = _signer(key, password, sigstore, identity_token, trust_config)
        tracer, why_not = tracing.usable() if trace is not False else (None, None)
        if trace and tracer is None:
            raise InputError(f"--trace: {why_not}; pass --no-trace to record without it.")
        untraced = (f"{why_not}; the step is recorded untraced." if trace is None
                    and tracer is None and tracing.available() is not None else None)
        chosen = _sandbox(sandbox, network, device)
        if oms:
            from verifier.neighbours.oms import refuse_stale_signatures

            refuse_stale_signatures(product or [])
        hasher, progress = _hasher_with_progress(quiet, "hashing", _algorithms(digest_algorithm))
        try:
            # With --json the step's own output goes to stderr, so stdout holds the JSON alone.
            with contextlib.redirect_stdout(sys.stderr if as_json else sys.stdout), \
                    termination_as_interrupt():
                result = record_step(
                    components=_pairs(component, "--component", "KIND=PATH", path_first=False),
                    material_licenses=_pairs(material_license, "--material-license",
                                             "PATH=EXPR", path_first=True),
                    record_digests=record_digests or [], record_unit=record_unit,
                    step=step, argv=command, materials=material or [], products=product or [],
                    signer=signer, out_dir=out, env_names=env or [], force=force, hasher=hasher,
                    sandbox=chosen, tracer=tracer, strict=strict,
                    attest_existing=attest_existing,
                    hidden=[key] if key is not None else [], python=python,
                    checkpoint_dir=checkpoints, resume=resume,
                )
        except StepFailed as failure:
            from verifier.formats.terminal import clean

            sys.stderr.write(f"error: {clean(str(failure))}\n")
            return failure.exit_code
        finally:
            progress.close()
        signatures = []
        if oms:
            from verifier.neighbours.oms import sign_directory

            signatures = [
                sign_directory(path, key=key, signer=signer if sigstore else None,
                               password=password, hasher=hasher)
                for path in product or [] if path.is_dir()
            ]
        subjects = result.statement["subject"]
        log = result.checkpoint_log
        _warn([untraced, chosen.warning, *result.warnings])
        if as_json:
            _emit_json({"attestation": str(result.attestation), "step": step,
                        "signer": result.identity, "subjects": subjects,
                        "sandbox": chosen.describe(), "warnings": result.warnings,
                        "undeclared_inputs": result.undeclared_inputs,
                        **({"checkpoints": {"root": log.root, "count": len(log.entries),
                                            "directory": log.directory}} if log else {}),
                        **({"oms": [s.to_dict() for s in signatures]} if oms else {})})
        else:
            signer_name = (result.identity if result.identity.startswith("sigstore:")
                           else f"{result.identity[:20]}…")
            _say(f"recorded step {step!r}: {len(subjects)} subject(s), signed by "
                 f"{signer_name}, wrote {result.attestation}")
            if log:
                _say(f"signed the checkpoint log of {log.directory}: {len(log.entries)} "
                     f"checkpoint(s), root {log.root}")
            for written in signatures:
                _say(f"wrote {written.signature}: OMS v1.0 signature of {written.files} file(s)")
        return 0

    _guard(as_json, action)


@app.command("rebuild")
def rebuild_command(
    attestations: Annotated[list[Path], typer.Argument(metavar="ATTESTATIONS",
        help="Step attestations (files or directories) to rebuild.")],
    key: Annotated[Path | None, typer.Option(
        help="The rebuilder's private key (PEM file or pkcs11: URI).")] = None,
    password: Annotated[str | None, typer.Option(help="The key's password.")] = None,
    source: Annotated[Path, typer.Option(
        help="The git repository (or tree) the recorded source is taken from: the recorded "
        "commit, or the tracked files, or the declared materials.")] = Path("."),
    workspace: Annotated[Path | None, typer.Option(
        help="Where workspaces are made (default: a temporary directory).")] = None,
    step: Annotated[str | None, typer.Option(help="Rebuild this step alone.")] = None,
    materials_from: Annotated[list[str] | None, typer.Option(
        metavar="DIR|oci://HOST/REPO@sha256:…",
        help="Central intermediates, found by digest: a directory, or a model in a registry "
        "(fetched, each file checked by digest, and removed afterwards; a differing product "
        "is diffed against it). Repeatable.")] = None,
    env: Annotated[list[str] | None, typer.Option(
        help="Override a declared variable, NAME=VALUE, to probe sensitivity (repeatable).")
    ] = None,
    out: Annotated[Path, typer.Option(
        help="Directory for rebuild attestations; each rebuilder writes into its own folder "
        "there (OUT/NAME/STEP.rebuild.intoto.json).")] = Path("rebuilds"),
    as_name: Annotated[str | None, typer.Option("--as", metavar="NAME",
        help="This rebuilder's folder under --out (default: the key file's name without its "
        "suffix, the PKCS#11 key's label, or 'keyless').")] = None,
    keep_workspace: Annotated[bool, typer.Option(help="Keep workspaces for inspection.")] = False,
    force: Annotated[bool, typer.Option(help="Replace existing rebuild attestations.")] = False,
    trust_key: Annotated[list[Path] | None, typer.Option(
        help="Run only steps whose attestation this public key signed (repeatable).")] = None,
    trust_identity: Annotated[list[str] | None, typer.Option(
        help="Run only steps signed keylessly by this identity (with --trust-issuer; "
        "repeatable).")] = None,
    trust_issuer: Annotated[str | None, typer.Option(
        help="The OIDC issuer of --trust-identity, e.g. "
        "https://token.actions.githubusercontent.com.")] = None,
    trusted_root: Annotated[Path | None, typer.Option(
        help="Sigstore trusted root JSON for --trust-identity (default: public-good).")] = None,
    policy: Annotated[Path | None, typer.Option(
        help="Run only steps signed by the signers this policy names for each step.")] = None,
    allow_env: Annotated[list[str] | None, typer.Option(
        help="Let a step set this variable although it changes what runs (PATH, LD_*, "
        "PYTHONPATH, ...; repeatable).")] = None,
    sandbox: RebuildSandboxOpt = "auto",
    network: NetworkFlag = False,
    device: DeviceOpt = None,
    sigstore: SigstoreFlag = False,
    identity_token: IdentityTokenOpt = None,
    trust_config: TrustConfigOpt = None,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
    segments: Annotated[str | None, typer.Option(metavar="K|all",
        help="Replay K segments of a checkpointed step, chosen at random by --seed, or all of "
        "them (docs/replay.md).")] = None,
    segment: Annotated[list[str] | None, typer.Option(metavar="STEP",
        help="Replay the segment ending at checkpoint STEP (repeatable).")] = None,
    seed: Annotated[str | None, typer.Option(metavar="HEX",
        help="The seed of the random choice (default: 32 bytes drawn now).")] = None,
    checkpoints_from: Annotated[str | None, typer.Option(metavar="DIR|oci://HOST/REPO@sha256:…",
        help="Where the logged checkpoints are: a directory (default: the recorded one under "
        "--source), or the model in a registry they were pushed beside (push --checkpoints), "
        "of which only the segments' start and end checkpoints are fetched.")] = None,
    update_rtol: Annotated[float | None, typer.Option(
        help="Accept a replayed segment whose distance is at most this share of its update "
        "(at most 0.1).")] = None,
    plain_http: PlainHttpFlag = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinFlag = False,
    cache: CacheOpt = None,
) -> None:
    """Re-run recorded steps in fresh sandboxed workspaces and attest whether they reproduced.

    A rebuild runs the commands the attestations name, so it runs nothing unless each one is
    signed by a signer you trust: --trust-key, --trust-identity with --trust-issuer (keyless),
    or --policy (the signers it names for each step). It shows the plan (each step's command,
    working directory and variables) before anything runs. Each workspace is made from the
    recorded git commit (or the declared materials), never from your working tree.

    Exit 0 when every step reproduced bit for bit, 1 when any differed or could not run, 2 when
    nothing ran (untrusted attestation, a refused variable, a sandbox that cannot start).

    Example (writes rebuilds/rebuilder/*.rebuild.intoto.json): model-verifier rebuild
    attestations/ --source . --key keys/rebuilder.key --trust-key keys/builder.pub --out rebuilds

    Keyless: model-verifier rebuild attestations --sigstore --trust-issuer
    https://token.actions.githubusercontent.com --trust-identity
    https://github.com/OWNER/REPO/.github/workflows/train.yml@refs/heads/main

    A rebuilder without the central files, diffing a differing product against the model in
    the registry: model-verifier rebuild attestations --materials-from
    oci://ghcr.io/acme/tiny-model@sha256:4f1c… --trust-key keys/builder.pub --key
    keys/rebuilder.key

    Replay 3 segments of a checkpointed training step, chosen at random (docs/replay.md):
    model-verifier rebuild attestations/train.intoto.json --segments 3
    --trust-key keys/builder.pub --key keys/rebuilder.key --out rebuilds

    The same, fetching only the checkpoints those segments need from the registry:
    model-verifier rebuild attestations/train.intoto.json --segments 3
    --checkpoints-from oci://ghcr.io/acme/tiny-model@sha256:4f1c…
    --trust-key keys/builder.pub --key keys/rebuilder.key
    """
    def action() -> int:
        # The registry's copies of --materials-from oci:// live until the rebuild is done.
        with contextlib.ExitStack() as stack:
            return rebuild_action(stack)

    def rebuild_action(stack: contextlib.ExitStack) -> int:
        from verifier.errors import InputError
        from verifier.formats.signing import load_public_key
        from verifier.judgement.policy import KeylessIdentity, load_policy
        from verifier.steps.admission import Trust, load_steps
        from verifier.steps.rebuild import RebuildOptions, rebuild, rebuilder_name
        from verifier.steps.record import termination_as_interrupt

        overrides = {}
        for item in env or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise InputError(f"--env {item!r}: expected NAME=VALUE.")
            overrides[name] = value
        if bool(trust_identity) != (trust_issuer is not None):
            raise InputError("--trust-identity and --trust-issuer go together: the identity "
                             "alone names no one.")
        trust = Trust(
            keys=[load_public_key(path) for path in trust_key or []],
            identities=[KeylessIdentity(issuer=trust_issuer or "", identity=identity)
                        for identity in trust_identity or []],
            policy=load_policy(policy) if policy is not None else None,
            trusted_root=trusted_root,
        )
        records = load_steps(attestations, trust)
        options = RebuildOptions(
            source=source, workspace_root=workspace,
            out_dir=out / rebuilder_name(as_name, None if sigstore or key is None else str(key)),
            signer=_signer(key, password, sigstore, identity_token, trust_config),
            materials_from=[_central_materials(stack, where, plain_http, username,
                                               password_stdin, cache, as_json or quiet)
                            for where in materials_from or []],
            env_overrides=overrides,
            keep_workspace=keep_workspace, force=force,
            sandbox=_sandbox(sandbox, network, device), allowed_env=frozenset(allow_env or []),
        )

        def plan_shown(entries: list[dict[str, Any]]) -> None:
            _warn([options.sandbox.warning])  # everything was checked: the steps run now
            _print_plan(entries, options.out_dir)

        hasher, progress = _hasher_with_progress(quiet, "hashing")
        try:
            with termination_as_interrupt():
                if segments is not None or segment:
                    from verifier.steps.replay import parse_selection, replay

                    chosen = parse_selection(segments, segment or [], seed)
                    with contextlib.ExitStack() as stack:
                        if as_json:
                            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
                        where: Any = None if checkpoints_from is None else Path(checkpoints_from)
                        if checkpoints_from is not None and checkpoints_from.startswith("oci://"):
                            from verifier.interop.oci.checkpoints import from_registry

                            reference, registry = _open_registry(
                                checkpoints_from, plain_http, username, password_stdin)
                            where = stack.enter_context(
                                from_registry(registry, reference, _blob_cache(cache)))
                        done = replay(records, options, chosen, only_step=step, hasher=hasher,
                                      checkpoints_from=where,
                                      update_rtol=update_rtol, on_plan=plan_shown,
                                      on_segment=None if as_json else _print_segment)
                    if as_json:
                        _emit_json(done.to_dict())
                    else:
                        if not isinstance(where, Path | None):
                            _say(f"fetched checkpoints {', '.join(where.fetched)} from "
                                 f"{checkpoints_from} ({_size(where.fetched_bytes)} downloaded)")
                        # Where every segment's workspace came from (a commit, the declared
                        # materials): one line for all of them, as --json has it.
                        for note in done.notes:
                            _say(f"  {note}")
                        _say(f"wrote {done.rebuild_attestation}")
                    return 0 if done.accepted else 1
                if as_json:
                    # The steps' own output goes to stderr, so that stdout holds the JSON alone.
                    with contextlib.redirect_stdout(sys.stderr):
                        outcomes = rebuild(records, options, only_step=step, hasher=hasher,
                                           on_plan=plan_shown)
                    _emit_json([o.to_dict() for o in outcomes])
                else:
                    outcomes = rebuild(records, options, only_step=step, hasher=hasher,
                                       on_step=_print_outcome, on_plan=plan_shown)
        finally:
            progress.close()
        return 0 if all(o.status == "reproduced" for o in outcomes) else 1

    _guard(as_json, action)


def _central_materials(stack: contextlib.ExitStack, where: str, plain_http: bool,
                       username: str | None, password_stdin: bool, cache: Path | None,
                       silent: bool) -> Path:
    """The directory of --materials-from WHERE: as given, or for oci:// the model fetched into
    a private directory of the blob cache (each file checked by digest), gone when `stack`
    closes."""
    if not where.startswith("oci://"):
        return Path(where)
    from verifier.interop.oci.store import checkout

    reference, registry = _open_registry(where, plain_http, username, password_stdin)
    fetched = stack.enter_context(checkout(registry, reference, _blob_cache(cache)))
    if not silent:
        if reference.digest is None:
            _say(f"resolved {reference} to {fetched.digest}")
        _say(f"central products: {fetched.files} file(s), {_size(fetched.bytes)} of "
             f"{fetched.reference}")
    return fetched.model.parent


def _print_plan(entries: list[dict[str, Any]], out_dir: Path) -> None:
    _say(f"plan: {len(entries)} step(s), each in a fresh workspace; attestations to {out_dir}/")
    for entry in entries:
        sandbox = entry["sandbox"]
        where = ("no sandbox" if sandbox["kind"] == "none" else
                 f"{sandbox['kind']} sandbox, network {sandbox['network']}"
                 + (f", devices {' '.join(sandbox['devices'])}" if sandbox["devices"] else ""))
        _say(f"  {entry['step']} ({entry['attestation']}; {where})")
        _say(f"    command: {entry['command']}")
        _say(f"    in:      {entry['working_directory']}")
        for name, value in entry["env"].items():
            _say(f"    sets:    {name}={value}")
    sys.stdout.flush()


def _print_segment(outcome: Any) -> None:
    """One replayed segment: its steps, verdict, wall time, and for a difference the worst
    tensors and distances."""
    code = f" (exit {outcome.exit_code})" if outcome.verdict == "FAILED" else ""
    _say(f"{outcome.verdict + code:<16} segment {outcome.name}  {outcome.seconds:.2f} s")
    if outcome.message:
        _say(f"  {outcome.message}")
    found = outcome.comparison
    if found is not None and outcome.verdict != "MATCH":
        _say(f"  distance {found.replay_distance:.3g} against an update of "
             f"{found.update_size:.3g} (ratio {found.ratio:.3g})")
        for tensor in found.worst()[:5]:
            _say(f"  {tensor.file} {tensor.tensor}: ratio {tensor.ratio:.3g}, max abs diff "
                 f"{tensor.max_abs_diff:.3g}")
        for file in found.files:
            _say(f"  {file['name']}: {file['verdict']}")


def _print_outcome(outcome: Any) -> None:
    from verifier.diff.drift import describe_change, order_drift
    from verifier.diff.summary import result_line

    label = {"reproduced": "REPRODUCED", "differs": "DIFFERS", "stopped": "NOT RUN",
             "failed": f"FAILED (exit {outcome.exit_code})"}
    _say(f"{label[outcome.status]:<11} step {outcome.step!r} ({outcome.attestation})")
    for result in outcome.results:
        if result["verdict"] != "IDENTICAL":
            _say(f"  {result_line(result)}")
    drift = order_drift(outcome.drift, outcome.imports)
    if drift and outcome.status != "reproduced":
        _say(f"  likely cause: {describe_change(drift[0], outcome.imports)}")
    if outcome.message:
        _say(f"  {outcome.message}")
    for note in outcome.notes:
        _say(f"  {note}")
    for name, value in outcome.env_overrides.items():
        _say(f"  environment override: {name}={value} (chosen by the rebuilder)")
    for change in drift[:10]:
        _say(f"  environment drift: {describe_change(change, outcome.imports)}")
    if len(outcome.drift) > 10:
        _say(f"  ... and {len(outcome.drift) - 10} more environment differences")
    if outcome.rebuild_attestation:
        _say(f"  wrote {outcome.rebuild_attestation}")
    if outcome.workspace:
        _say(f"  workspace kept at {outcome.workspace}")
