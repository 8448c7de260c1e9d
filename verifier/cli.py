"""Command line: parses arguments, calls the library, prints. Nothing else lives here.

Heavy modules (cryptography, numpy, sigstore, yaml) are imported inside the commands that need
them so that `--help` and `digest` start fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from verifier.errors import StepFailed, VerifierError

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


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _say(line: str) -> None:
    """Print one line of output. File names, step names and every other string an input put
    in it are escaped (verifier.formats.terminal), so no input can move the cursor, forge a line or
    fail to encode on a strict UTF-8 stream; --json output is escaped by the JSON encoder."""
    from verifier.formats.terminal import clean

    print(clean(line))


def _fail(error: VerifierError, as_json: bool) -> NoReturn:
    from verifier.formats.terminal import clean

    if as_json:
        _emit_json({"error": str(error), "exit_code": error.exit_code})
    else:
        sys.stderr.write(f"error: {clean(str(error))}\n")
    raise typer.Exit(error.exit_code)


def _guard(as_json: bool, action: Callable[[], int | None]) -> None:
    """Run a command body: library errors become one sentence and an exit code."""
    try:
        code = action()
    except VerifierError as error:
        _fail(error, as_json)
    except KeyboardInterrupt as interruption:
        sys.stderr.write("interrupted; nothing was written.\n")
        raise typer.Exit(128 + getattr(interruption, "signal_number", 2)) from None
    raise typer.Exit(code or 0)


class _Progress:
    """A one-line progress bar on stderr with bytes per second and time left, on a terminal only.

    Each batch the hasher announces (`expect`) gets its own bar, drawn once the batch is large
    (64 MiB) or has taken half a second, and wiped when the batch is done, so that the output of
    a recorded or rebuilt command never lands on a half-drawn bar.
    """

    LARGE = 64 * 1024 * 1024
    DELAY_S = 0.5

    def __init__(self, label: str, enabled: bool) -> None:
        import threading
        import time

        self._label = label
        self._enabled = enabled and sys.stderr.isatty()
        self._lock = threading.Lock()
        self._time = time.monotonic
        self._total = self._done = 0
        self._start = self._last = 0.0
        self._shown = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def expect(self, total: int) -> None:
        with self._lock:
            self._total, self._done = total, 0
            self._start, self._last = self._time(), 0.0

    def advance(self, count: int) -> None:
        if not self._enabled or self._total <= 0:
            return
        with self._lock:
            self._done += count
            now = self._time()
            if self._done >= self._total:
                self._wipe()
                return
            elapsed = now - self._start
            if not self._shown and self._total < self.LARGE and elapsed < self.DELAY_S:
                return
            if now - self._last < 0.2:
                return
            self._last = now
            rate = self._done / max(elapsed, 1e-6)
            left = (self._total - self._done) / rate if rate else 0.0
            width = 24
            filled = int(width * self._done / self._total)
            sys.stderr.write(
                f"\r{self._label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self._done / 1e9:5.2f}/{self._total / 1e9:.2f} GB "
                f"{rate / 1e9:5.2f} GB/s {left:4.0f}s left "
            )
            sys.stderr.flush()
            self._shown = True

    def _wipe(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()
            self._shown = False

    def close(self) -> None:
        with self._lock:
            self._wipe()


def _hasher_with_progress(quiet: bool, label: str, algorithms: tuple[str, ...] = ("sha256",)
                          ) -> tuple[Any, _Progress]:
    """A hasher whose batches draw a progress bar (unless --quiet or not on a terminal)."""
    from verifier.formats.digest import Hasher

    progress = _Progress(label, not quiet)
    if not progress.enabled:
        return Hasher(algorithms=algorithms), progress
    hasher = Hasher(progress=progress.advance, on_total=progress.expect, algorithms=algorithms)
    return hasher, progress


def _algorithms(choice: str) -> tuple[str, ...]:
    from verifier.errors import InputError

    if choice not in ("sha256", "blake3"):
        raise InputError(f"--digest {choice}: unknown digest; choose sha256 or blake3.")
    return ("sha256",) if choice == "sha256" else ("sha256", "blake3")


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


SigstoreFlag = Annotated[bool, typer.Option(
    "--sigstore", help="Sign keylessly through Sigstore with an OIDC identity (CI's ambient "
    "credential, --identity-token or SIGSTORE_ID_TOKEN).")]
IdentityTokenOpt = Annotated[str | None, typer.Option(
    help="OIDC identity token for --sigstore (default: SIGSTORE_ID_TOKEN or the CI's).")]
TrustConfigOpt = Annotated[Path | None, typer.Option(
    help="Sigstore ClientTrustConfig JSON for staging or a private instance "
    "(default: public-good Sigstore).")]


SandboxOpt = Annotated[str, typer.Option(
    "--sandbox", help="auto (bubblewrap when installed and usable, else none with a warning), "
    "bwrap, or none. Inside bubblewrap: read-only system, no network, private /tmp, no home "
    "directory; the workspace is the only writable place.")]
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


def _warn(warnings: list[str | None]) -> None:
    from verifier.formats.terminal import clean

    for warning in warnings:
        if warning:
            sys.stderr.write(f"warning: {clean(warning)}\n")


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
            from verifier.interop.oms import refuse_stale_signatures

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
                    record_digests=record_digests or [],
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
            from verifier.interop.oms import sign_directory

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


def _print_report(report: Any) -> None:
    verdict = "PASS" if report.passed else "FAIL"
    algorithm, value = next(iter(report.digest.items()))
    _say(f"{verdict}  {report.artifact}  ({algorithm} {value[:16]}…)")
    _say(f"  policy: {report.policy}")
    left_out = getattr(report, "ignored", [])
    if left_out:
        _say(f"  ignored (left out of the digest): {len(left_out)} file(s)")
        for item in left_out:
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
        _say(f"  OMS signature {evidence['signature']}: unreadable (see problems)")
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
            from verifier.interop.intoto_links import verify_with_layout

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
        return _show_report(report, as_json, vsa)

    _guard(as_json, action)


def _show_report(report: Any, as_json: bool, vsa: Path | None = None) -> int:
    if as_json:
        _emit_json({**report.to_dict(), **({"vsa": str(vsa)} if vsa is not None else {})})
    else:
        _print_report(report)
        if vsa is not None:
            _say(f"wrote signed verification summary {vsa} "
                 f"({'PASSED' if report.passed else 'FAILED'})")
    return 0 if report.passed else 1


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
    materials_from: Annotated[list[Path] | None, typer.Option(
        help="Directory of central intermediates, found by digest (repeatable).")] = None,
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
    sandbox: SandboxOpt = "auto",
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
    checkpoints_from: Annotated[Path | None, typer.Option(
        help="Where the logged checkpoints are (default: the recorded directory under "
        "--source).")] = None,
    update_rtol: Annotated[float | None, typer.Option(
        help="Accept a replayed segment whose distance is at most this share of its update "
        "(at most 0.1).")] = None,
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
    """
    def action() -> int:
        from verifier.errors import InputError
        from verifier.formats.signing import load_public_key
        from verifier.judgement.policy import KeylessIdentity, load_policy
        from verifier.steps.rebuild import (
            RebuildOptions,
            Trust,
            load_steps,
            rebuild,
            rebuilder_name,
        )
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
            materials_from=materials_from or [], env_overrides=overrides,
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
                    with contextlib.redirect_stdout(sys.stderr) if as_json else \
                            contextlib.nullcontext():
                        done = replay(records, options, chosen, only_step=step, hasher=hasher,
                                      checkpoints_from=checkpoints_from,
                                      update_rtol=update_rtol, on_plan=plan_shown,
                                      on_segment=None if as_json else _print_segment)
                    if as_json:
                        _emit_json(done.to_dict())
                    else:
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
    label = {"reproduced": "REPRODUCED", "differs": "DIFFERS", "stopped": "NOT RUN",
             "failed": f"FAILED (exit {outcome.exit_code})"}
    _say(f"{label[outcome.status]:<11} step {outcome.step!r} ({outcome.attestation})")
    if outcome.message:
        _say(f"  {outcome.message}")
    for note in outcome.notes:
        _say(f"  {note}")
    for name, value in outcome.env_overrides.items():
        _say(f"  environment override: {name}={value} (chosen by the rebuilder)")
    for result in outcome.results:
        if result["verdict"] != "IDENTICAL":
            diff = result.get("diff") or {}
            tensors = [t for t in diff.get("tensors", []) if t.get("status") != "equal"]
            detail = (f"; {len(tensors)} tensor(s) differ, worst {tensors[0]['name']} "
                      f"(max abs diff {tensors[0].get('max_abs_diff')})" if tensors else "")
            _say(f"  {result['name']}: {result['verdict']}{detail}")
    from verifier.steps.drift import order_drift

    for change in order_drift(outcome.drift)[:10]:
        _say(f"  environment drift: {change['field']}: recorded {change['recorded']!r}, "
             f"now {change['current']!r}")
    if len(outcome.drift) > 10:
        _say(f"  ... and {len(outcome.drift) - 10} more environment differences")
    if outcome.rebuild_attestation:
        _say(f"  wrote {outcome.rebuild_attestation}")
    if outcome.workspace:
        _say(f"  workspace kept at {outcome.workspace}")


ArtifactArg = Annotated[Path, typer.Argument(metavar="ARTIFACT",
    help="The model file or directory to check.")]
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
        from verifier.interop.intoto_links import LINK_FORMAT, export_links

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
        from verifier.interop.oms import sign_directory

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


@app.command("diff")
def diff_command(
    a: Annotated[Path, typer.Argument(metavar="A",
        help="First file or directory (the one being checked).")],
    b: Annotated[Path, typer.Argument(metavar="B",
        help="Second file or directory (the reference).")],
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance for tensors.")] = None,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance for tensors.")] = None,
    limit: Annotated[int, typer.Option(help="Rows of the tensor table.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Explain how two files or directories differ, tensor by tensor for safetensors
    and GGUF, structurally for JSON (numbers by value, the first differing path).

    A is the side being checked (a rebuilt or downloaded copy), B the reference: in two
    directories a file only in A is ADDED, a file only in B is MISSING (from A).

    Exit 0 when IDENTICAL or CANONICALLY-IDENTICAL (or WITHIN-TOLERANCE with a tolerance given),
    1 otherwise. GGUF: quantized tensors are compared byte by byte, metadata key by key (a
    metadata difference is DIVERGED).

    Example: model-verifier diff rebuilt/model.safetensors build/model/model.safetensors

    Example: model-verifier diff model-q8_0.gguf rebuilt/model-q8_0.gguf
    """
    def action() -> int:
        from verifier.diff.tensordiff import Verdict, diff_paths, render_text

        tolerant = rtol is not None or atol is not None
        result = diff_paths(a, b, rtol=(rtol or 0.0) if tolerant else None,
                            atol=(atol or 0.0) if tolerant else None)
        if as_json:
            _emit_json(result.to_dict())
        else:
            print(render_text(result, limit=limit), end="")
        accepted = {Verdict.IDENTICAL, Verdict.CANONICALLY_IDENTICAL}
        if tolerant:
            accepted.add(Verdict.WITHIN_TOLERANCE)
        return 0 if result.verdict in accepted else 1

    _guard(as_json, action)


@app.command("audit")
def audit_command(
    directories: Annotated[list[Path], typer.Argument(metavar="DIRECTORIES",
        help="Directories (or files) of attestations: steps, rebuilds, JSON lines.")],
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML to check signers and rules against; without it the chain is "
             "reported as unchecked.")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="text, json, dot (Graphviz) or html (one self-contained file).")
    ] = "text",
    output: Annotated[Path | None, typer.Option(
        help="Write the report to this file instead of standard output.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show every attestation as one graph, with every gap and conflict named.

    Exit 0 when no finding is an error, 1 when one is, 2 when the input cannot be used.

    Example: model-verifier audit attestations rebuilds --policy model-policy.yaml
    --format html --output audit.html
    """
    def action() -> int:
        from verifier.errors import InputError
        from verifier.formats.envelope import write_atomic
        from verifier.judgement.policy import load_policy
        from verifier.reports.audit import audit
        from verifier.reports.audit_render import FORMATS, render, summary_line

        if output_format not in FORMATS:
            raise InputError(f"--format {output_format!r}: expected one of {', '.join(FORMATS)}.")
        chosen = "json" if as_json else output_format
        if output is not None:
            _refuse_existing(output, force)
        report = audit(directories, load_policy(policy) if policy is not None else None)
        data = report.to_dict()
        if output is None and chosen == "json":
            _emit_json(data)
        elif output is None:
            sys.stdout.write(render(data, chosen))
        else:
            write_atomic(output, render(data, chosen), overwrite=force)
            if as_json:
                _emit_json({"report": str(output), "verdict": data["verdict"],
                            "summary": data["summary"]})
            else:
                _say(f"wrote {chosen} report {output}  ({summary_line(data)})")
        return report.exit_code

    _guard(as_json, action)


# --- openness and contamination: views of the one evaluation --------------------------------


def _evaluated(artifact: Path, policy: Path | None, attestations: list[Path] | None) -> Any:
    """verify-model's report for the artifact, which carries the evaluation's verdict."""
    from verifier.judgement.policy import DEFAULT_POLICY, load_policy
    from verifier.judgement.verify import verify_artifact

    loaded = load_policy(policy or DEFAULT_POLICY)
    return loaded, verify_artifact(artifact, loaded, attestations or [Path("attestations")])


@app.command("openness")
def openness_command(
    artifact: Annotated[Path, typer.Argument(metavar="ARTIFACT",
        help="The model file or directory.")],
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML (default: model-policy.yaml).")] = None,
    attestations: Annotated[list[Path] | None, typer.Option(
        help="Directory (or file) of attestations; repeatable (default: attestations).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Which openness components the artifact's signed chain attests, pinned and rebuilt,
    under which licences, and the Model Openness Framework class that supports.

    Exit 0 when the chain passes the policy, 1 when it does not, 2 on unusable input.

    Example: model-verifier openness build/model/model.safetensors
    --policy policies/tiny-model-rebuilt.yaml --attestations attestations
    --attestations rebuilds
    """
    def action() -> int:
        from verifier.reports import openness

        _, verified = _evaluated(artifact, policy, attestations)
        assert verified.verdict is not None
        result = openness.report(verified.verdict, str(artifact))
        if not verified.passed and result.passed:  # e.g. the file no longer matches
            result.passed = False
            result.supported_class = None
        result.problems = [p.message for p in verified.problems]
        if as_json:
            _emit_json(result.to_dict())
        else:
            sys.stdout.write(openness.render_text(result))
        return 0 if result.passed else 1

    _guard(as_json, action)


@app.command("contamination")
def contamination_command(
    artifact: Annotated[Path, typer.Argument(metavar="ARTIFACT",
        help="The model file or directory.")],
    benchmark: Annotated[list[Path], typer.Option(
        help="A benchmark's test items: text lines, JSON Lines or CSV (repeatable).")],
    digests_from: Annotated[list[Path], typer.Option(
        help="Directory (or file) holding the record-digest files (*.mvrd) the chain signed; "
        "they are found by their signed sha256 (repeatable).")],
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML (default: model-policy.yaml); data.max_benchmark_overlap is the "
        "threshold (0 when absent).")] = None,
    attestations: Annotated[list[Path] | None, typer.Option(
        help="Directory (or file) of attestations; repeatable (default: attestations).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Whether a benchmark's items were in the training data, from the salted record digests
    the chain's data steps signed (record --record-digests): exact records and word 13-grams.

    Exit 0 when every benchmark's overlap is within the policy's threshold, 1 when one is over
    it or the chain does not pass, 2 on unusable input.

    Example: model-verifier contamination build/model/model.safetensors
    --benchmark eval/test.jsonl --digests-from attestations --policy model-policy.yaml
    """
    def action() -> int:
        from verifier.reports import contamination

        loaded, verified = _evaluated(artifact, policy, attestations)
        if not verified.passed or verified.verdict is None:
            _show_report(verified, as_json)
            if not as_json:
                print("contamination: not checked; the chain does not pass, so no record "
                      "digest in it is vouched for.")
            return 1
        sources = contamination.load_sources(verified.verdict, digests_from)
        threshold = loaded.max_benchmark_overlap or 0.0
        result = contamination.check(sources, benchmark, threshold)
        if as_json:
            _emit_json({"artifact": str(artifact), **result.to_dict()})
            return 0 if result.passed else 1
        print(f"contamination of {artifact}: {'PASS' if result.passed else 'FAIL'} "
              f"(max_benchmark_overlap {threshold:g})")
        for source in result.sources:
            print(f"  record digests of {source.data} from step {source.step!r} "
                  f"({len(source.digests.records)} records, {len(source.digests.grams)} "
                  f"13-grams; {source.file})")
        for bench in result.benchmarks:
            print(f"  {bench.benchmark}: {bench.overlapping}/{bench.items} items overlap "
                  f"({bench.fraction:.2%}): {bench.exact} exact, {bench.ngram} by 13-gram")
            for where in bench.by_source:
                if where.exact or where.ngram:
                    items = ", ".join(map(str, where.items))
                    print(f"    in {where.data} (step {where.step!r}): {where.exact} exact, "
                          f"{where.ngram} by 13-gram; items {items}")
        return 0 if result.passed else 1

    _guard(as_json, action)


# --- OCI registries: push, attach, pull, and verify-model oci://… -----------------------------

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


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _print_attached(attached: list[Any]) -> None:
    for item in attached:
        verb = "attached" if item.status == "attached" else "already attached, skipped"
        what = " (record digests)" if item.kind == "record-digests" else ""
        _say(f"  {verb}: {item.source}{what} (referrer {item.manifest_digest})")


@app.command("push")
def push_command(
    model: Annotated[Path, typer.Argument(metavar="MODEL",
        help="The model file or directory to upload.")],
    target: Annotated[str, typer.Argument(metavar="REFERENCE",
        help="oci://HOST[:PORT]/REPO[:TAG]; without a tag the model is stored by digest only.")],
    attestations: OciAttestationsOpt = None,
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
    """
    def action() -> None:
        from verifier.interop.oci import store

        bundles = store.bundle_files(attestations or [])
        digest_files = store.record_digest_files(attestations or [])
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
        if as_json:
            _emit_json(result.to_dict())
            return
        tag = f" (tag {result.tag})" if result.tag else ""
        _say(f"pushed {model} as {result.reference}{tag}")
        _say(f"  {result.files} file(s), {_size(result.bytes)}: "
              f"{_size(result.uploaded_bytes)} uploaded, "
              f"{_size(result.bytes - result.uploaded_bytes)} already in the registry")
        _print_attached(result.attached)
        _say(result.digest)

    _guard(as_json, action)


@app.command("attach")
def attach_command(
    target: Annotated[str, typer.Argument(metavar="REFERENCE",
        help="The model in the registry, by digest: oci://HOST/REPO@sha256:….")],
    bundles: Annotated[list[Path], typer.Argument(metavar="BUNDLES",
        help="Bundle files or directories of them (.json, .jsonl; record-digest files, .mvrd, "
        "go too).")],
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
    """
    def action() -> None:
        from verifier.interop.oci import store

        found = store.bundle_files(bundles)
        digest_files = store.record_digest_files(bundles)
        if not found and not digest_files:
            raise _input_error(f"{', '.join(map(str, bundles))}: holds no bundle or "
                               "record-digest file to attach.")
        reference, registry = _open_registry(target, plain_http, username, password_stdin)
        if reference.digest is None:
            raise _input_error(f"{target}: attach needs the model's digest "
                               "(oci://HOST/REPO@sha256:…); a tag can move.")
        attached = store.attach(registry, reference.digest, found, digest_files)
        if as_json:
            _emit_json({"reference": reference.pinned(),
                        "attached": [a.to_dict() for a in attached]})
            return
        new = sum(1 for a in attached if a.status == "attached")
        _say(f"{reference.pinned()}: {new} attached, {len(attached) - new} already there")
        _print_attached(attached)

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


def _print_fetched(reference: Any, fetched: Any) -> None:
    if reference.digest is None:
        _say(f"resolved {reference} to {fetched.digest}")
    cached = fetched.bytes - fetched.fetched_bytes
    _say(f"fetched {fetched.reference}: {fetched.files} file(s), {_size(fetched.bytes)}"
          f"{f' ({_size(cached)} from the cache, re-checked)' if cached else ''}; "
          f"{len(fetched.referrers)} attestation(s) via the {fetched.discovery}")
    for note in fetched.notes:
        _say(f"  note: {note}")


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
        _print_fetched(reference, fetched)
        _print_report(report)
        if vsa is not None:
            _say(f"wrote signed verification summary {vsa} "
                  f"({'PASSED' if report.passed else 'FAILED'})")
        return 0 if report.passed else 1

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
            pin_code=pin_code, name=name, force=force)
        if as_json:
            _emit_json(result.to_dict())
        else:
            _say(f"wrote {result.path}: {len(result.steps)} step(s) "
                  f"({', '.join(result.steps)}), {result.pinned} pinned source(s)"
                  + (f", unpinned code {', '.join(result.unpinned_patterns)}"
                     if result.unpinned_patterns else "")
                  + (f", rebuilds of {', '.join(result.rebuild_steps)}"
                     if result.rebuild_steps else ""))
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
    names (fields, signers, steps). Exit 0 when valid, 1 when not, 2 when unreadable.

    Example: model-verifier policy check model-policy.yaml
    """
    def action() -> int:
        from verifier.judgement.policy_check import check_policy

        errors = check_policy(policy)
        if as_json:
            _emit_json({"policy": str(policy), "valid": not errors, "errors": errors})
        elif errors:
            _say(f"{policy}: {len(errors)} error(s)")
            for error in errors:
                _say(f"  {error}")
        else:
            _say(f"{policy}: valid")
        return 1 if errors else 0

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
        "in a registry, with every attestation attached to it.")],
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

    From a registry, by digest (every attestation attached to the model is fetched; a tag is
    resolved and its digest printed): verify-model
    oci://ghcr.io/acme/tiny-model@sha256:4f1c… --policy model-policy.yaml
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
    _verify(Path(artifact), attestations, policy, as_json, quiet, trusted_root, layout,
            layout_key, vsa, signing, force, ignore)


# `model-verifier verify` and `verify-model` are one command with one set of options.
app.command("verify")(verify_model)


def _entry(application: typer.Typer) -> None:
    try:
        application()
    except SystemExit:
        raise
    except Exception as error:  # a bug: still one sentence, never a traceback
        from verifier.formats.terminal import clean

        sys.stderr.write(f"error: internal error ({type(error).__name__}: "
                         f"{clean(str(error))[:300]}); please report it.\n")
        sys.exit(3)


def main() -> None:
    _entry(app)


def verify_model_main() -> None:
    _entry(verify_app)
