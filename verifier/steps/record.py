"""Record one build step: hash materials, run the command, hash products, sign, write.

The command runs with no timeout (training runs for days), its output streams through while
being hashed, and its exit code is passed on. Only a step that succeeded, whose materials did
not change under it and whose products all exist and were written by it, gets an attestation.

The command runs in a sandbox (verifier.steps.sandbox) when one is given, and is followed
with strace
(verifier.steps.trace) when tracing is on: the files it read that are not declared materials are
listed in the signed predicate (`undeclaredInputs`), or refuse the step when strict.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from verifier.errors import InputError, StepFailed
from verifier.formats.checkpoint_log import CheckpointLog
from verifier.formats.digest import Hasher, PathDigest
from verifier.formats.envelope import (  # Signer: rebuild and callers import it here
    INTOTO_PAYLOAD_TYPE,
    Signer,
    canonical_bundle_text,
    write_atomic,
)
from verifier.formats.signing import secret_files
from verifier.formats.statement import canonical_json, descriptors, step_statement
from verifier.steps import checkpoints, environment, trace
from verifier.steps.sandbox import Sandbox, interpreter_roots, is_system_path

NO_SANDBOX = Sandbox("none", True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: handled as an interruption, with the signal it was."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """While recording or rebuilding, SIGTERM and SIGHUP interrupt like Ctrl-C: the step's
    process group gets the same signal, nothing is written and temporary files are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, _frame: Any) -> None:
        raise Terminated(number)

    previous = {number: signal.signal(number, interrupt)
                for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout_sha256: str
    stderr_sha256: str
    started_on: str
    finished_on: str
    stderr_tail: bytes = b""  # the last few KiB, to say why a command failed


@dataclass(frozen=True)
class RecordResult:
    attestation: Path
    statement: dict[str, Any]
    identity: str
    warnings: list[str] = field(default_factory=list)
    undeclared_inputs: list[str] | None = None  # None: not traced
    checkpoint_log: CheckpointLog | None = None  # record --checkpoints


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def relative_name(path: Path, base: Path) -> str:
    """The POSIX name a path is recorded under: relative to the working directory, inside it."""
    absolute = Path(os.path.abspath(base / path))
    try:
        relative = absolute.relative_to(Path(os.path.abspath(base)))
    except ValueError:
        raise InputError(
            f"{path}: is outside the working directory {base}; materials and products must be "
            "inside it so that a rebuilder can find them."
        ) from None
    return relative.as_posix() or "."


_TAIL = 4096


def _pump(source: IO[bytes], sink: IO[bytes], hasher: Any, tail: bytearray) -> None:
    for chunk in iter(lambda: source.read1(65536), b""):
        hasher.update(chunk)
        sink.write(chunk)
        sink.flush()
        tail.extend(chunk)
        del tail[:-_TAIL]


def run_streaming(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> RunResult:
    """Run a command to completion, streaming and hashing its stdout and stderr.

    The command gets a session and process group of its own (no controlling terminal to
    reach through); an interruption of ours is passed on to that whole group.
    """
    started = utc_now()
    try:
        process = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    except FileNotFoundError:
        raise InputError(f"{argv[0]}: command not found.") from None
    except PermissionError:
        raise InputError(f"{argv[0]}: is not executable.") from None
    hashes = (hashlib.sha256(), hashlib.sha256())
    tails = (bytearray(), bytearray())
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        threading.Thread(target=_pump,
                         args=(process.stdout, sys.stdout.buffer, hashes[0], tails[0])),
        threading.Thread(target=_pump,
                         args=(process.stderr, sys.stderr.buffer, hashes[1], tails[1])),
    ]
    for pump in pumps:
        pump.daemon = True
        pump.start()
    try:
        returncode = process.wait()
    except KeyboardInterrupt as interruption:
        # The step runs in its own process group, so neither Ctrl-C nor a SIGTERM sent to us
        # reaches it: pass the same signal on to the whole group (a training run must not go
        # on for days), then wait for the child to end.
        number = getattr(interruption, "signal_number", signal.SIGINT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, number)
        while True:
            try:
                process.wait()
                break
            except KeyboardInterrupt:
                # A second interruption while we wait: the user means it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
        raise
    for pump in pumps:
        pump.join()
    return RunResult(returncode, hashes[0].hexdigest(), hashes[1].hexdigest(), started,
                     utc_now(), bytes(tails[1]))


def check_command(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
    """Refuse a command that cannot start, before it is wrapped in a sandbox or a tracer (whose
    own failure would hide the reason)."""
    program = argv[0]
    if "/" in program:
        path = cwd / program
        if not path.is_file():
            raise InputError(f"{program}: command not found.")
        if not os.access(path, os.X_OK):
            raise InputError(f"{program}: is not executable.")
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise InputError(f"{program}: command not found.")


def resolve_declared_env(names: Sequence[str], source: dict[str, str]) -> dict[str, str]:
    """Values of the variables the user declared with --env; a declared variable must be set,
    and must not look secret (its value is signed)."""
    declared: dict[str, str] = {}
    for name in names:
        key, _, value = name.partition("=")
        if not key:
            raise InputError(f"--env {name!r}: expected NAME or NAME=VALUE.")
        if "=" in name:
            declared[key] = value
        elif key in source:
            declared[key] = source[key]
        else:
            raise InputError(f"--env {key}: the variable is not set, so it cannot be recorded.")
        environment.check_declared(key, declared[key])
    return dict(sorted(declared.items()))


def record_step(
    *,
    step: str,
    argv: Sequence[str],
    materials: Sequence[Path],
    products: Sequence[Path],
    signer: Signer,
    out_dir: Path,
    env_names: Sequence[str] = (),
    cwd: Path | None = None,
    force: bool = False,
    hasher: Hasher | None = None,
    sandbox: Sandbox = NO_SANDBOX,
    tracer: str | None = None,
    components: Sequence[tuple[str, Path]] = (),
    material_licenses: Sequence[tuple[Path, str]] = (),
    record_digests: Sequence[Path] = (),
    record_unit: str | None = None,
    strict: bool = False,
    attest_existing: bool = False,
    hidden: Sequence[Path] = (),
    python: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: str | None = None,
) -> RecordResult:
    """Run and attest one step. Raises StepFailed when the command fails (nothing written).

    `tracer` is the strace executable to follow the command with (None: not traced); with
    `strict`, any undeclared input refuses the step. A product that existed before the command
    ran and that it did not write is refused, unless `attest_existing` says that attesting
    products an earlier, unrecorded process made is the point (signed as existingProducts).
    `hidden` signing keys (--key: a PEM file, or a pkcs11: URI whose pin-source file is its
    secret) read as empty inside the sandbox. `python` is the step's
    interpreter when argv does not say (environment.step_interpreter): its version and packages
    are recorded, asked from it in the sandbox. `record_unit` splits the `record_digests`
    files into records (recorddigests.UNITS; None: each file kind's default). `checkpoint_dir`
    and `resume` (together) sign the checkpoint log of a training step
    (verifier.steps.checkpoints).
    """
    base = Path(cwd or Path.cwd())
    if not argv:
        raise InputError("record: no command given; put it after `--`.")
    if not step or "/" in step or step.startswith("."):
        raise InputError(f"--step {step!r}: a step name must be a plain name such as 'train'.")
    if strict and tracer is None:
        raise InputError("--strict needs tracing to know what the step read; install strace "
                         "or leave out --no-trace.")
    attestation = out_dir / f"{step}.intoto.json"
    if attestation.exists() and not force:
        raise InputError(f"{attestation}: already exists; pass --force to replace it.")
    # Found out before the step runs (it may run for days), not when writing its attestation.
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: is not a directory; --out must name a directory.")
    if attestation.is_dir():
        raise InputError(f"{attestation}: is a directory, so the attestation cannot go there.")
    hasher = hasher or Hasher()
    material_names = [relative_name(p, base) for p in materials]
    product_names = [relative_name(p, base) for p in products]
    claimed = _declarations(base, material_names, product_names, components,
                            material_licenses, record_digests, out_dir, step, force,
                            record_unit)
    plan = checkpoints.plan(checkpoint_dir, resume, base, lambda p: _product_stamp(hasher, p))
    clash = plan and checkpoints.overlapping_material(PurePosixPath(plan.directory),
                                                      material_names)
    if clash:
        raise InputError(f"--checkpoints {plan.directory}: overlaps the material {clash!r}; a "
                         "replay places checkpoints there, so it would not run on the signed "
                         "materials. Keep checkpoints apart from the materials.")
    material_paths = [base / name for name in material_names]
    material_digests = hasher.digest_paths(material_paths)
    stamps = _stamps(hasher, material_digests)
    before = {name: _product_stamp(hasher, base / name) for name in product_names}
    # The checkpoint directory is attested (its checkpoints become products after the scan),
    # so what the step writes there is no stray file.
    watched = product_names + ([] if plan is None else [plan.directory])
    beside = _beside_products(base, watched)

    declared = resolve_declared_env(env_names, dict(os.environ))
    env, withheld = environment.step_environment(os.environ, declared)
    check_command(argv, base, env)
    interpreter = environment.step_interpreter(argv, env.get("PATH"), base, python)
    captured = environment.capture(
        base, declared, interpreter=interpreter, env=env,
        wrap=lambda probe: sandbox.wrap(probe, base, base, env))
    captured["sandbox"] = sandbox.describe()
    captured["withheld"] = withheld
    roots = interpreter_roots(argv[0], env.get("PATH"), base)
    # The interpreter found by --python, a #! line or the PATH is mounted read-only like argv[0]'s
    # own: the step runs it.
    named_roots = ([] if interpreter is None
                   else interpreter_roots(str(interpreter.path), None, base))
    roots = sorted({*roots, *named_roots})
    with tempfile.TemporaryDirectory(prefix="mv-record-") as log_dir, \
            environment.report_file() as report_path:
        # The step may write its own settings there (environment.read_report).
        env[environment.REPORT_VARIABLE] = str(report_path)
        real_base = Path(os.path.realpath(base))
        linked_out = [p for p in material_paths
                      if not Path(os.path.realpath(p)).is_relative_to(real_base)]
        blank = Path(log_dir) / "blank"
        blank.touch()
        # The workspace is the recorder's checkout (its .git, its keys/): the step writes only
        # where its products go, and reads no private key there (sandbox.workspace_mounts).
        command = sandbox.wrap(argv, base, base, env, readable=[*linked_out, *named_roots],
                               hidden=[base / p for k in hidden for p in secret_files(k)],
                               blank=blank,
                               writable=[report_path.parent],
                               products=[base / name for name in product_names],
                               materials=material_paths)
        if tracer is not None:
            command = trace.traced_argv(tracer, command, Path(log_dir))
        run = run_streaming(command, base, env)
        if run.returncode != 0:
            raise StepFailed(
                f"step {step!r}: the command exited with status {run.returncode}; "
                "no attestation was written.",
                run.returncode,
            )
        accesses = None if tracer is None else trace.parse_logs(Path(log_dir), cwd=base)
        undeclared = None if accesses is None else trace.undeclared_inputs(
            accesses.read, workspace=base,
            declared=material_paths, ignored_roots=roots, private_tmp=sandbox.isolated,
            created=[base / name for name in product_names if before[name] is None])
        threaded = None if accesses is None else trace.threaded_libraries(accesses.read)
        report_warning = _add_step_report(captured, report_path, step,
                                          environment.secret_values(env))
    _check_materials_unchanged(hasher, material_digests, stamps, set(product_names),
                               material_names)
    product_paths = [base / name for name in product_names]
    for name, path in zip(product_names, product_paths, strict=True):
        if not path.exists():
            raise InputError(
                f"{name}: the step {step!r} did not produce this product; no attestation written."
            )
        if (not attest_existing and before[name] is not None
                and before[name] == _product_stamp(hasher, path)):
            raise InputError(
                f"{name}: this product existed before the step {step!r} ran and the step did "
                "not write it; no attestation written (remove it first, or declare it a "
                "material if the step only reads it)."
            )
    warnings: list[str] = [] if report_warning is None else [report_warning]
    if left := sorted(_beside_products(base, watched) - beside):
        listed = ", ".join(left[:10]) + (" …" if len(left) > 10 else "")
        warnings.append(f"step {step!r} left {len(left)} new file(s) beside its products in "
                        f"your checkout: {listed} (not attested; look at them, then remove "
                        "them or declare them with --product).")
    if python_warning := _python_warning(captured, step):
        warnings.append(python_warning)
    if (captured.get("git") or {}).get("dirty"):
        # Said now, by name: a rebuild takes the files from the commit, without these changes.
        changed = environment.dirty_files(base)
        listed = ", ".join(changed[:10]) + (" …" if len(changed) > 10 else "")
        warnings.append(f"step {step!r} ran from a dirty git tree: {len(changed)} tracked "
                        f"file(s) differ from commit {captured['git']['commit'][:12]}"
                        f"{': ' + listed if changed else ''} (a rebuild from the commit will "
                        "not have these changes; commit them first).")
    if undeclared:
        listed = ", ".join(undeclared[:10]) + (" …" if len(undeclared) > 10 else "")
        if strict:
            raise InputError(
                f"step {step!r} read {len(undeclared)} file(s) that are not declared materials "
                f"({listed}); --strict refuses it, no attestation written.")
        warnings.append(f"step {step!r} read {len(undeclared)} file(s) that are not declared "
                        f"materials: {listed} (listed in the attestation as undeclaredInputs; "
                        "declare them with --material).")
    if tracer is None:
        warnings.extend(argv_inputs_warnings(argv, base, material_names, roots))
    log = None if plan is None else checkpoints.scan(
        plan, base, hasher, attest_existing, lambda p: _product_stamp(hasher, p))
    if log is not None:
        product_names += checkpoints.product_names(log)
        product_paths += [base / name for name in checkpoints.product_names(log)]
    product_digests = hasher.digest_paths(product_paths)
    if log is not None:
        checkpoints.check_unchanged(log, product_digests[-len(log.entries):])
    statement = step_statement(
        step=step,
        argv=list(argv),
        working_directory=".",
        declared_env=declared,
        environment=captured,
        materials=descriptors(material_digests, material_names),
        products=descriptors(product_digests, product_names),
        invocation_id=str(uuid.uuid4()),
        started_on=run.started_on,
        finished_on=run.finished_on,
        byproducts=[
            {"name": "exit-code", "content": "MA=="},  # base64 of "0"
            {"name": "stderr", "digest": {"sha256": run.stderr_sha256}},
            {"name": "stdout", "digest": {"sha256": run.stdout_sha256}},
        ],
    )
    if undeclared is not None:
        # Present only when the step was traced: absent means nobody looked.
        statement["predicate"]["buildDefinition"]["internalParameters"]["undeclaredInputs"] = (
            undeclared)
        statement["predicate"]["buildDefinition"]["internalParameters"]["threadedLibraries"] = (
            threaded)
    if attest_existing:
        statement["predicate"]["buildDefinition"]["internalParameters"]["existingProducts"] = True
    if log is not None:
        checkpoints.sign_into(statement, log, checkpoints.determinism(captured))
    written = _add_declarations(statement, claimed, base, hasher, force)
    if not statement["subject"]:
        raise InputError(f"step {step!r}: no products given (--product), so nothing to attest.")
    try:
        bundle = signer.sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
        write_atomic(attestation, canonical_bundle_text(bundle), overwrite=force)
    except BaseException:
        for path in written:  # no attestation: nothing it would have vouched for stays
            path.unlink(missing_ok=True)
        raise
    return RecordResult(attestation, statement, signer.identity, warnings, undeclared, log)


def _beside_products(base: Path, product_names: list[str]) -> set[str]:
    """Names in the directories the products go into, other than the products: where a
    sandboxed step may add a file (a .gitattributes, a script) that is no product."""
    products = {PurePosixPath(name) for name in product_names}
    found: set[str] = set()
    for parent in {name.parent for name in products}:
        try:
            entries = list((base / parent).iterdir())
        except OSError:
            continue
        for entry in entries:
            name = PurePosixPath(parent, entry.name)
            if name not in products and not any(p.is_relative_to(name) for p in products):
                found.add(name.as_posix())
    return found


def _add_step_report(captured: dict[str, Any], path: Path, step: str,
                     secrets: Sequence[str]) -> str | None:
    """Merge the settings the step reported into its environment; a warning when the report
    cannot be used (the step succeeded: its products are attested without those settings)."""
    try:
        environment.add_report(captured, environment.read_report(path, secrets))
    except InputError as error:
        return f"step {step!r}: {error} Its settings are not recorded."
    return None


def _python_warning(captured: dict[str, Any], step: str) -> str | None:
    python = captured.get("python")
    if python is None:
        return (f"step {step!r}: no Python interpreter was found for it, so no packages are "
                "recorded; name it with --python.")
    if isinstance(python, dict) and "error" in python:
        return f"{python['error']} No packages are recorded; name it with --python."
    return None


def argv_inputs_warnings(argv: Sequence[str], base: Path, declared: Sequence[str],
                         roots: Sequence[Path]) -> list[str]:
    """Without a trace, the files the command line itself names that are not declared."""
    warnings: list[str] = []
    seen: set[str] = set()
    for argument in argv[1:]:
        candidate = argument.partition("=")[2] if argument.startswith("-") else argument
        if not candidate or "\x00" in candidate:
            continue
        path = Path(os.path.abspath(base / candidate))
        try:
            if not path.is_file():
                continue
        except (OSError, ValueError):
            continue
        if is_system_path(str(path)) or any(path.is_relative_to(r) for r in roots):
            continue
        name = (path.relative_to(Path(os.path.abspath(base))).as_posix()
                if path.is_relative_to(Path(os.path.abspath(base))) else str(path))
        if name in declared or any(name.startswith(d.rstrip("/") + "/") for d in declared):
            continue
        if name not in seen:
            seen.add(name)
            warnings.append(f"the command names {name}, which is not a declared material; "
                            "declare it with --material so that a rebuild has it.")
    return warnings


def _product_stamp(hasher: Hasher, path: Path) -> Any:
    """What tells whether a product was written: every file's (inode, size, times)."""
    from verifier.formats.digest import list_files

    try:
        if path.is_dir():
            return tuple((name, hasher.stamp(path / name)) for name in list_files(path))
        return hasher.stamp(path) if path.exists() else None
    except InputError:
        return None  # unreadable or a link: the product checks after the run say why


def _stamps(hasher: Hasher, digests: list[PathDigest]) -> dict[Path, Any]:
    stamps: dict[Path, Any] = {}
    for digest in digests:
        if digest.is_dir:
            for name in digest.files:
                stamps[digest.path / name] = hasher.stamp(digest.path / name)
        else:
            stamps[digest.path] = hasher.stamp(digest.path)
    return stamps


def _check_materials_unchanged(
    hasher: Hasher,
    digests: list[PathDigest],
    stamps: dict[Path, Any],
    product_names: set[str],
    material_names: list[str],
) -> None:
    """A step may not change its own inputs (unless they are also declared products)."""
    for digest, name in zip(digests, material_names, strict=True):
        if name in product_names:
            continue
        paths = [digest.path / n for n in digest.files] if digest.is_dir else [digest.path]
        if any(not p.exists() or hasher.stamp(p) != stamps.get(p) for p in paths) or (
            digest.is_dir and not _same_listing(digest)
        ):
            again = hasher.digest_paths([digest.path])[0] if digest.path.exists() else None
            if again is None or again.value != digest.value:
                raise InputError(
                    f"{name}: this material changed while the step ran; no attestation written."
                )


def _same_listing(digest: PathDigest) -> bool:
    from verifier.formats.digest import list_files

    return list_files(digest.path) == sorted(digest.files)


# -- what the user declares about the step's files (verifier.judgement.declarations) -----


@dataclass(frozen=True)
class _Declared:
    components: list[tuple[str, str]]
    licenses: list[tuple[str, str]]
    digests: list[tuple[str, Path]]  # data file name, where its digest file goes
    unit: str | None = None  # how the data files split into records (None: by their kind)


def _declarations(base: Path, material_names: list[str], product_names: list[str],
                  components: Sequence[tuple[str, Path]],
                  licenses: Sequence[tuple[Path, str]], record_digests: Sequence[Path],
                  out_dir: Path, step: str, force: bool, unit: str | None = None
                  ) -> _Declared:
    """--component, --material-license and --record-digests, checked before the step runs:
    each must name a declared material or product (so that it is bound to a digest)."""
    from verifier.formats import recorddigests
    from verifier.judgement import declarations, spdx

    names = set(material_names) | set(product_names)

    def bound(path: Path, option: str) -> str:
        name = relative_name(path, base)
        # A declared file, or a file inside a declared directory (recorded file by file).
        if name not in names and not any(name.startswith(f"{n}/") for n in names):
            raise InputError(f"{option} {path}: is neither a --material nor a --product of "
                             "this step, so there is no digest to bind it to.")
        return name

    found_components = []
    for kind, path in components:
        if kind not in declarations.COMPONENTS:
            raise InputError(f"--component {kind}={path}: unknown component; one of "
                             f"{', '.join(declarations.COMPONENTS)}.")
        found_components.append((kind, bound(path, "--component")))
    found_licenses = []
    for path, expression in licenses:
        try:
            spdx.parse(expression)
        except InputError as error:
            raise InputError(f"--material-license {path}: {error}") from None
        found_licenses.append((bound(path, "--material-license"), expression))
    if unit is not None and unit not in recorddigests.UNITS:
        raise InputError(f"--record-unit {unit}: is none of {', '.join(recorddigests.UNITS)}.")
    if unit is not None and not record_digests:
        raise InputError("--record-unit says how to split the --record-digests files, and "
                         "none is given.")
    found_digests = []
    for path in record_digests:
        name = bound(path, "--record-digests")
        if (base / name).is_dir():
            raise InputError(f"--record-digests {path}: is a directory; name the text, JSONL "
                             "or CSV file whose records to digest.")
        try:
            recorddigests.unit_for(Path(name), unit)
        except InputError as error:
            raise InputError(f"--record-unit {unit}: {error}") from None
        target = out_dir / "record-digests" / step / f"{name}.mvrd"
        if target.exists() and not force:
            raise InputError(f"{target}: already exists; pass --force to replace it.")
        found_digests.append((name, target))
    return _Declared(found_components, found_licenses, found_digests, unit)


def _add_declarations(statement: dict[str, Any], declared: _Declared, base: Path,
                      hasher: Hasher, force: bool) -> list[Path]:
    """Sign the declarations into the statement; write the record-digest files (returned, so
    that they are removed again if the attestation is not written)."""
    from verifier.formats import recorddigests
    from verifier.judgement import declarations

    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    described = {d["name"] for d in (
        *statement["predicate"]["buildDefinition"]["resolvedDependencies"],
        *statement["subject"])}
    for name in [n for _, n in declared.components] + [n for n, _ in declared.licenses]:
        if name not in described:
            raise InputError(f"{name}: declared with --component or --material-license, but "
                             "the step's materials and products hold no such file; no "
                             "attestation written.")
    if declared.components:
        internal["components"] = declarations.component_entries(declared.components)
    if declared.licenses:
        internal["licenses"] = declarations.license_entries(declared.licenses)
    written: list[Path] = []
    digests = {d["name"]: d["digest"] for d in (
        *statement["predicate"]["buildDefinition"]["resolvedDependencies"],
        *statement["subject"])}
    byproducts = statement["predicate"]["runDetails"]["byproducts"]
    try:
        # After the three fixed byproducts, sorted by name among themselves.
        for name, target in sorted(declared.digests):
            sha256 = digests[name].get("sha256")
            if sha256 is None:  # the digest file names its data by the sha256 attested here
                raise InputError(f"--record-digests {name}: the step records no sha256 of it"
                                 "; no attestation written.")
            data = recorddigests.compute(base / name, sha256, declared.unit).to_bytes()
            recorddigests.write(target, data, overwrite=force)
            written.append(target)
            byproducts.append({
                "name": declarations.RECORD_DIGESTS_PREFIX + name,
                "digest": {"sha256": hashlib.sha256(data).hexdigest()},
                "annotations": {"format": declarations.RECORD_DIGESTS_FORMAT},
            })
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
