"""Rebuild recorded steps independently and attest whether they reproduced.

Nothing runs unless a signer the rebuilder trusts signed the step (a key, a keyless identity,
or the policy's signers of that step), and nothing runs before the whole plan is checked and
shown. Each step runs in a fresh workspace made from the recorded source (verifier.steps.workspace:
the recorded git commit, never the rebuilder's working tree) with its materials placed by
digest (from the source, earlier rebuilt steps, or the central intermediates given with
--materials-from) and checked; it runs in the sandbox (verifier.steps.sandbox) with the recorded
values of its declared variables. Its products are hashed and compared with the attested
subjects, and a tensor diff explains any difference. The user's own files are never written:
everything happens in the workspace, which is removed afterwards unless it should be kept.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.formats.digest import Hasher, list_files
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, write_atomic
from verifier.formats.signing import bundle_signed_by
from verifier.formats.statement import (
    REBUILD_PREDICATE_TYPE,
    STATEMENT_TYPE,
    StepRecord,
    canonical_json,
)
from verifier.steps import environment, plan, workspace
from verifier.steps.admission import _check_paths, _check_text, _safe_relative, order_steps
from verifier.steps.record import (
    NO_SANDBOX,
    RunResult,
    Signer,
    canonical_bundle_text,
    check_command,
    run_streaming,
)
from verifier.steps.sandbox import Sandbox, interpreter_roots

if TYPE_CHECKING:
    pass


@dataclass
class StepOutcome:
    step: str
    attestation: str
    status: str  # "reproduced" | "differs" | "failed" (the command exited non-zero) | "stopped"
    message: str = ""
    exit_code: int | None = None  # the command's, when it ran and failed
    results: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)  # modules the step's own code imports
    env_overrides: dict[str, str] = field(default_factory=dict)
    rebuild_attestation: str | None = None
    workspace: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "attestation": self.attestation, "status": self.status,
            "exit_code": self.exit_code, "message": self.message, "results": self.results,
            "drift": self.drift, "imports": self.imports,
            "env_overrides": self.env_overrides,
            "rebuild_attestation": self.rebuild_attestation, "workspace": self.workspace,
            "source": self.source, "notes": self.notes,
        }


def _inside(workspace: Path, path: Path) -> bool:
    """True when path, with every link resolved, stays under the workspace."""
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(workspace)))


class _DigestIndex:
    """Files available as materials, found by sha256 (never by name alone)."""

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher
        self._by_sha: dict[str, Path] = {}
        # What the earlier rebuilt steps made of each product name: (step, sha256 or None,
        # status). Never used to place a file, only to say why a material is not there.
        self.rebuilt: dict[str, tuple[str, str | None, str]] = {}

    def add_tree(self, root: Path) -> None:
        if not root.is_dir():
            raise InputError(f"{root}: no such directory of materials.")
        names = list_files(root)
        paths = [root / n for n in names]
        for path, sha in zip(paths, self._hasher.hash_files(paths), strict=True):
            self._by_sha.setdefault(sha, path)

    def add(self, path: Path, sha: str) -> None:
        self._by_sha.setdefault(sha, path)

    def find(self, sha: str) -> Path | None:
        return self._by_sha.get(sha)


def _excluded_names(records: list[StepRecord], source: Path, extra: list[Path]) -> set[str]:
    names = {p["name"] for r in records for p in r.products}
    for path in extra:
        absolute, base = Path(os.path.abspath(path)), Path(os.path.abspath(source))
        if absolute.is_relative_to(base):
            names.add(absolute.relative_to(base).as_posix())
    return names


@dataclass
class RebuildOptions:
    source: Path
    out_dir: Path
    signer: Signer
    workspace_root: Path | None = None
    materials_from: list[Path] = field(default_factory=list)
    env_overrides: dict[str, str] = field(default_factory=dict)
    keep_workspace: bool = False
    force: bool = False
    sandbox: Sandbox = NO_SANDBOX
    allowed_env: frozenset[str] = frozenset()
    # A segment replay (verifier.steps.replay) writes beside a whole rebuild, never over it.
    attestation_suffix: str = ".rebuild.intoto.json"


_MAX_STEP_BYTES = 255 - len(".rebuild.intoto.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def rebuilder_name(chosen: str | None, key: str | None) -> str:
    """The folder a rebuilder's attestations go to under --out, so that two rebuilders sharing
    one --out never write over each other: the name chosen (--as), else the key file's stem, else
    the PKCS#11 key's label, else `keyless`. It names a folder only; trust comes from the key."""
    if chosen is not None:
        if not _NAME.fullmatch(chosen):
            raise InputError(f"--as {chosen!r}: a rebuilder name is letters, digits, '.', '_' "
                             "and '-' (at most 64, not starting with '.' or '-').")
        return chosen
    if key is None:
        return "keyless"
    if key.startswith("pkcs11:"):
        from verifier.formats.pkcs11 import parse_uri

        label = parse_uri(key).label
        candidate = label if label is not None else "pkcs11"
    else:
        candidate = PurePosixPath(key.replace("\\", "/")).stem
    candidate = re.sub(r"[^A-Za-z0-9._-]", "-", candidate).lstrip(".-")[:64]
    return candidate or "rebuilder"


def _attestation_path(options: RebuildOptions, record: StepRecord) -> Path:
    return options.out_dir / f"{record.step}{options.attestation_suffix}"


def _made_by(path: Path, signer: Signer) -> bool:
    """Whether the bundle at `path` was signed by this rebuilder's own key. A file that is no
    readable bundle, or another signer's, is never replaced; nor, for a keyless rebuilder
    (whose next certificate is not the last one's), is any file: it is removed by hand."""
    from verifier.formats.envelope import read_bundle
    from verifier.formats.signing import public_key_from

    public_key = getattr(signer, "public_key", None)
    if public_key is None:
        return False
    try:
        bundle = read_bundle(path)
    except InputError:
        return False
    return not bundle.is_keyless and bundle_signed_by(
        bundle, public_key_from(public_key, str(path)))


def _check_before_running(ordered: list[StepRecord], options: RebuildOptions,
                          loaded: list[StepRecord]) -> None:
    """Everything that can be refused is refused before a workspace exists or a command runs.
    `loaded`: every record given, also those --step leaves out, whose product names are still
    removed from each workspace and so must stay inside it too."""
    if not options.source.is_dir():
        raise InputError(f"{options.source}: no such source directory.")
    for record in loaded:
        _check_paths(record)
    seen: dict[str, str] = {}
    for record in ordered:
        # The step names a workspace and an output file: it must be one plain path component,
        # short enough for "<step>.rebuild.intoto.json" to be a file name.
        _check_text(record.step, "step name", record.source)
        if (record.step in (".", "..") or any(c in record.step for c in "/\\\x00")
                or len(record.step.encode()) > _MAX_STEP_BYTES):
            raise InputError(f"{record.source}: the step name {record.step!r} is not a plain "
                             "name; refusing to use it as a workspace or file name.")
        if record.step in seen:
            raise InputError(f"{record.source}: step {record.step!r} is also attested by "
                             f"{seen[record.step]}; give one attestation per step.")
        seen[record.step] = record.source
        _check_paths(record)
        plan.check_step(record, options.allowed_env)
        workspace.check_available(
            options.source, workspace.recorded_revision(record.environment, record.source),
            record.source)
        target = _attestation_path(options, record)
        if os.path.lexists(target) and not options.force:
            raise InputError(f"{target}: already exists; pass --force to replace it.")
        if os.path.lexists(target) and not _made_by(target, options.signer):
            raise InputError(f"{target}: was not signed by this rebuilder's key; --force "
                             "replaces only your own rebuild attestations, so name this "
                             "rebuilder differently with --as NAME.")
    if options.out_dir.exists() and not options.out_dir.is_dir():
        raise InputError(f"{options.out_dir}: is not a directory, so rebuild attestations "
                         "cannot be written there.")
    if options.sandbox.fallback:
        # `auto` without a usable bubblewrap: a stranger's step would run on this machine
        # with its network, its home and its keys. Only an explicit choice does that.
        raise InputError("--sandbox auto: bubblewrap is not installed or cannot start here, "
                         "and a rebuild runs someone else's step, so it does not run it "
                         "unsandboxed; install bubblewrap, or pass --sandbox none to run it on "
                         "this machine anyway.")
    root = options.workspace_root
    if root is not None and (root.exists() or root.is_symlink()):
        raise InputError(f"{root}: already exists; --workspace must name a directory that does "
                         "not exist yet, so that every rebuild starts fresh.")


def rebuild(
    records: list[StepRecord],
    options: RebuildOptions,
    *,
    only_step: str | None = None,
    hasher: Hasher | None = None,
    on_step: Callable[[StepOutcome], None] | None = None,
    on_plan: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[StepOutcome]:
    """Rebuild the steps (or one of them) and write a rebuild attestation per completed step.

    Everything that can be refused is refused first; then `on_plan` gets what will run, step by
    step, before any of it does.
    """
    hasher = hasher or Hasher()
    source = options.source
    ordered = order_steps(records)
    if only_step is not None:
        ordered = [r for r in ordered if r.step == only_step]
        if not ordered:
            raise InputError(f"--step {only_step}: no attestation of that step was given.")
    _check_before_running(ordered, options, records)
    index = _DigestIndex(hasher)
    for directory in options.materials_from:
        index.add_tree(directory)
    extra = [options.out_dir] + ([options.workspace_root] if options.workspace_root else [])
    excluded = _excluded_names(records, source, extra)
    if options.workspace_root is not None:
        root = options.workspace_root
        try:
            root.mkdir(parents=True)
        except OSError as error:
            raise InputError(f"{root}: the workspace cannot be made ({error.strerror}).") from None
    else:
        root = Path(tempfile.mkdtemp(prefix="mv-rebuild-"))
    outcomes: list[StepOutcome] = []
    try:
        if on_plan is not None:
            on_plan([_plan_entry(record, root / record.step, options) for record in ordered])
        for record in ordered:
            step_root = root / record.step
            outcome = _rebuild_step(record, step_root, index, excluded, options, hasher)
            actual = {r["name"]: (r.get("actual") or {}).get("sha256") for r in outcome.results}
            for product in record.products:
                index.rebuilt[product["name"]] = (record.step, actual.get(product["name"]),
                                                  outcome.status)
            if options.keep_workspace:
                # The user will run git there: a repository the step made (hooks, an
                # fsmonitor) must not run anything when they do.
                for name in workspace.remove_repositories(step_root):
                    outcome.notes.append(f"the step left a git repository at {name!r}; it "
                                         "was removed from the kept workspace.")
                outcome.workspace = str(step_root)
            outcomes.append(outcome)
            if on_step is not None:
                on_step(outcome)
    finally:
        if not options.keep_workspace:
            shutil.rmtree(root, ignore_errors=True)
    return outcomes


def _step_sandbox(record: StepRecord, options: RebuildOptions) -> Sandbox:
    """The rebuild's sandbox for this step: network only when the rebuilder allows it and the
    step was recorded with it."""
    recorded = record.environment.get("sandbox")
    recorded_network = recorded.get("network") if isinstance(recorded, dict) else "host"
    network = options.sandbox.network and recorded_network != "none"
    return replace(options.sandbox, network=network)


def _plan_entry(record: StepRecord, step_root: Path, options: RebuildOptions) -> dict[str, Any]:
    overrides = dict(sorted(options.env_overrides.items()))
    workdir = step_root / _safe_relative(record.working_directory, record.source)
    return plan.describe(record, str(workdir), {**record.declared_env, **overrides},
                         _step_sandbox(record, options).describe(), str(step_root))


def _source_file(source: Path, relative: PurePosixPath) -> Path | None:
    """The source tree's file of that name, when it is a regular file reached without leaving
    the source tree through a link."""
    candidate = source / relative
    if candidate.is_symlink() or not candidate.is_file() or not _inside(source, candidate):
        return None
    return candidate


def _place_materials(record: StepRecord, workspace: Path, index: _DigestIndex,
                     source: Path, excluded: set[str], hasher: Hasher) -> str | None:
    """Put every material in place by digest; a sentence when one is missing or drifted.

    A material another given step produces comes from that step's rebuild (or the central
    intermediates), never from an earlier output lying in the source tree.
    """
    for material in record.materials:
        sha = material["digest"].get("sha256")
        if sha is None:
            continue  # directories: their files are listed one by one
        relative = _safe_relative(material["name"], record.source)
        target = workspace / relative
        if not _inside(workspace, target.parent):
            return (f"material {material['name']} would be placed outside the workspace "
                    "through a symbolic link in the source tree; step not run.")
        drifted: str | None = None
        if target.is_file() and not target.is_symlink():
            actual = hasher.hash_files([target])[0]
            if actual == sha:
                continue
            drifted = actual
        replacement = index.find(sha)
        if replacement is None and material["name"] not in excluded:
            found = _source_file(source, relative)
            if found is not None:
                actual = hasher.hash_files([found])[0]
                if actual == sha:
                    replacement = found
                else:
                    drifted = actual
            elif (source / relative).exists() or (source / relative).is_symlink():
                return (f"material {material['name']} is reached through a symbolic link "
                        "leading out of the source tree, so it is not used; step not run.")
        if replacement is None:
            if drifted is not None:
                return (f"material {material['name']} has drifted: the record says sha256 "
                        f"{sha}, the source tree has sha256 {drifted}; step not run.")
            if material["name"] in index.rebuilt:
                return _not_rebuilt(material["name"], sha, *index.rebuilt[material["name"]])
            return (f"material {material['name']} (sha256 {sha}) is not in the source "
                    "tree, not produced by an earlier rebuilt step and not among the "
                    "--materials-from files; step not run.")
        if target.is_dir() and not target.is_symlink():
            return (f"material {material['name']} is a directory in the workspace, where the "
                    "record has a file; step not run.")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        shutil.copyfile(replacement, target)
    for material in record.materials:
        if "dirHash" in material["digest"]:
            path = workspace / _safe_relative(material["name"], record.source)
            actual = hasher.digest_paths([path])[0].dir_hash if path.is_dir() else None
            if actual != material["digest"]["dirHash"]:
                return (f"material directory {material['name']} does not match its recorded "
                        f"dirHash (extra or missing files); step not run.")
    return None


def _not_rebuilt(name: str, sha: str, step: str, actual: str | None, status: str) -> str:
    """Why a material an earlier rebuilt step should have made is not at hand."""
    if actual is not None:
        what = (f"the earlier rebuilt step {step!r} produced a different file (sha256 "
                f"{actual[:16]}…, the record says {sha[:16]}…)")
    else:
        what = (f"the earlier step {step!r} did not produce it ("
                + {"failed": "its command failed", "stopped": "it was not run"}.get(
                    status, "missing from its rebuild") + ")")
    return (f"material {name}: {what}; step not run. Pass the centrally built file with "
            "--materials-from to rebuild this step from it.")


def _compare(record: StepRecord, workspace: Path, index: _DigestIndex, options: RebuildOptions,
             hasher: Hasher) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-subject results, descriptors of what was produced)."""
    from verifier.diff.tensordiff import diff_files

    results: list[dict[str, Any]] = []
    produced: list[dict[str, Any]] = []
    for subject in sorted(record.products, key=lambda s: s["name"]):
        name, expected = subject["name"], subject["digest"]
        relative = _safe_relative(name, record.source)
        path = workspace / relative
        if _through_link(workspace, relative):
            # A link the step made could lead the hashing (and a signed digest) to any file of
            # the rebuilder's: such a product is not in the workspace at all.
            results.append({"name": name, "expected": expected, "actual": None,
                            "verdict": "MISSING",
                            "note": "reached through a symbolic link, so it was not read"})
            continue
        if not path.exists():
            results.append({"name": name, "expected": expected, "actual": None,
                            "verdict": "MISSING"})
            continue
        try:
            digest = hasher.digest_paths([path])[0]
        except InputError:
            # A FIFO, socket or device the step left in its product's place (or inside it):
            # reading it could block for ever, and it is no product either way.
            results.append({"name": name, "expected": expected, "actual": None,
                            "verdict": "MISSING",
                            "note": "not a regular file or directory (or holds something that "
                                    "is not), so it was not read"})
            continue
        actual = {digest.algorithm: digest.value}
        produced.append({"name": name, "digest": actual})
        result: dict[str, Any] = {"name": name, "expected": expected, "actual": actual}
        if expected.get(digest.algorithm) == digest.value:
            result["verdict"] = "IDENTICAL"
        elif digest.is_dir:
            result["verdict"] = "DIVERGED"
        else:
            reference = _central_copy(name, expected.get("sha256", ""), index, options, hasher)
            if reference is None:
                result["verdict"] = "DIVERGED"
                result["note"] = "the centrally built file was not available for a diff"
            else:
                diff = diff_files(path, reference)
                result["verdict"] = diff.verdict.value
                # Paths on the rebuilder's machine mean nothing to anyone else and leak its
                # layout: the signed diff names both sides by the subject name.
                result["diff"] = {**diff.to_dict(), "path_a": name, "path_b": name}
        results.append(result)
    return results, produced


def _through_link(workspace: Path, relative: PurePosixPath) -> bool:
    """Whether any component of workspace/relative is a symbolic link (checked one by one with
    lstat, never following one)."""
    current = workspace
    for part in relative.parts:
        current = current / part
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return True
        except OSError:
            return False  # missing: said so as MISSING
    return False


def _central_copy(name: str, sha: str, index: _DigestIndex, options: RebuildOptions,
                  hasher: Hasher) -> Path | None:
    """The centrally built product: any given file with its digest, or the source's copy."""
    if not sha:
        return None
    found = index.find(sha)
    if found is not None:
        return found
    candidate = options.source / name
    if candidate.is_file() and not candidate.is_symlink() and (
        hasher.hash_files([candidate])[0] == sha
    ):
        return candidate
    return None


# The only variables of the rebuilder's own environment a rebuilt step gets, besides those it
# declared: what a program needs to be found and to print. Everything else (CI tokens, cloud
# keys, the signing key's password) stays out: the step could write it into its report, and
# the report is signed into the published rebuild attestation.
PASSED_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
# Passed too when devices are given (--device): which of them the step may use.
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                    "ROCR_VISIBLE_DEVICES")


def step_environment(declared: dict[str, str], home: Path, sandbox: Sandbox) -> dict[str, str]:
    """The whole environment a rebuilt step runs with: a few of the rebuilder's variables
    (PASSED_VARIABLES, and DEVICE_VARIABLES with --device), HOME and TMPDIR in a private
    directory of its own, and the declared variables (recorded, or --env overrides) last."""
    names = PASSED_VARIABLES + (DEVICE_VARIABLES if sandbox.devices else ())
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = env["TMPDIR"] = str(home)
    env.update(declared)
    # Not even a recorded or overriding value: the name alone is the tool's own.
    return {name: value for name, value in env.items()
            if not environment.is_tool_credential(name)}


def _run_step(record: StepRecord, step_root: Path, workdir: Path, env: dict[str, str],
              sandbox: Sandbox, report: Path | None = None, interpreter: Sequence[Path] = (),
              home: Path | None = None) -> RunResult | str | _CommandFailed:
    """Run the recorded command; a sentence instead when it cannot start or fails. `env`: the
    step's whole environment (step_environment); `report`: where the step may write its
    settings (environment.REPORT_VARIABLE); `interpreter`: the roots of the step's Python,
    mounted read-only as record did; `home`: its private HOME, writable."""
    if not workdir.is_dir():
        return (f"{record.source}: the recorded working directory {record.working_directory} "
                "is not in the workspace; step not run.")
    env = dict(env)
    if report is not None:
        env[environment.REPORT_VARIABLE] = str(report)
    writable = [p for p in (report.parent if report else None, home) if p is not None]
    try:
        check_command(record.argv, workdir, env)
        run = run_streaming(sandbox.wrap(record.argv, step_root, workdir, env,
                                         readable=interpreter, writable=writable,
                                         trusted_workspace=False),
                            workdir, env)
    except InputError as error:
        return f"{record.source}: the recorded command could not start ({error}); step not run."
    if run.returncode != 0:
        why = ""
        if sandbox.isolated and not sandbox.network:
            why = (" It ran in the sandbox without network: a step that needs the network was "
                   "recorded with --network and is rebuilt with --network.")
        last = run.stderr_tail.decode("utf-8", "replace").strip().splitlines()
        said = f" Its last error line: {last[-1].strip()[:300]!r}." if last else ""
        return _CommandFailed(f"{record.source}: the recorded command exited with status "
                              f"{run.returncode}; no rebuild attestation written.{why}{said}",
                              run.returncode)
    return run


@dataclass(frozen=True)
class _CommandFailed:
    """The command ran and exited non-zero: a failed step, not one that never ran."""

    message: str
    returncode: int


def _prepare_workspace(record: StepRecord, step_root: Path, excluded: set[str],
                       options: RebuildOptions) -> tuple[workspace.Origin, dict[str, Any]]:
    """The recorded source in the step's workspace, and what the predicate says of it."""
    revision = workspace.recorded_revision(record.environment, record.source)
    origin = workspace.populate(options.source, step_root, revision)
    for name in sorted(excluded):
        # Never through a link: a committed `out -> /home/someone` must not make the product
        # name `out/file` remove anything outside the workspace.
        workspace.remove(step_root, _safe_relative(name, record.source))
    recorded_git = record.environment.get("git")
    recorded = ({k: recorded_git.get(k) for k in ("commit", "dirty")}
                if isinstance(recorded_git, dict) else None)
    rebuilder = workspace.git_state(options.source)
    same = (None if not recorded or not rebuilder
            else recorded.get("commit") == rebuilder.get("commit"))
    return origin, {"workspace": origin.to_dict(), "recorded": recorded,
                    "rebuilder": rebuilder, "sameRevision": same}


def _rebuild_step(record: StepRecord, step_root: Path, index: _DigestIndex, excluded: set[str],
                  options: RebuildOptions, hasher: Hasher) -> StepOutcome:
    outcome = StepOutcome(record.step, record.source, "stopped")
    origin, source = _prepare_workspace(record, step_root, excluded, options)
    outcome.source = source
    outcome.notes.append(origin.note)
    if origin.method == workspace.GIT_COMMIT and (source["recorded"] or {}).get("dirty"):
        outcome.notes.append("the step was recorded on a dirty tree: its declared materials are "
                             "placed by digest, but any other file it changed is the commit's.")
    if source["sameRevision"] is False:
        outcome.notes.append(f"the step was recorded at {source['recorded']['commit'][:12]}, "
                             f"--source is at {source['rebuilder']['commit'][:12]}; the "
                             "workspace is the recorded commit.")
    problem = _place_materials(record, step_root, index, options.source, excluded, hasher)
    if problem is not None:
        outcome.message = f"{record.source}: {problem}"
        return outcome
    overrides = dict(sorted(options.env_overrides.items()))
    declared = {**record.declared_env, **overrides}
    outcome.env_overrides = overrides
    workdir = step_root / _safe_relative(record.working_directory, record.source)
    sandbox = _step_sandbox(record, options)
    with tempfile.TemporaryDirectory(prefix="mv-home-") as home, \
            environment.report_file() as report_path:
        env = step_environment(declared, Path(home), sandbox)
        # The step's interpreter, asked in the step's sandbox, as record did (never this
        # process). The workspace is a copy, not a checkout, and its files are the signer's:
        # git is not run in it (a committed repository's config can make git run programs).
        interpreter = environment.step_interpreter(record.argv, env.get("PATH"), workdir)
        current = environment.capture(
            workdir, declared, env=env, interpreter=interpreter,
            wrap=lambda probe: sandbox.wrap(probe, step_root, workdir, env,
                                            trusted_workspace=False),
            repository=False)
        current["sandbox"] = sandbox.describe()
        run = _run_step(record, step_root, workdir, env, sandbox, report_path,
                        [] if interpreter is None else
                        interpreter_roots(str(interpreter.path), None, workdir, step_root),
                        Path(home))
        try:
            environment.add_report(current, environment.read_report(report_path))
        except InputError as error:
            outcome.notes.append(f"{error} Its settings are not recorded.")
    outcome.drift = environment.drift(record.environment, current)
    outcome.imports = _step_imports(record, step_root, workdir)
    if isinstance(run, _CommandFailed):
        outcome.status, outcome.exit_code, outcome.message = "failed", run.returncode, run.message
        return outcome
    if isinstance(run, str):
        outcome.message = run
        return outcome
    results, produced = _compare(record, step_root, index, options, hasher)
    _index_products(produced, step_root, index, hasher)
    results = sorted(results + _record_digest_results(record, step_root),
                     key=lambda r: r["name"])
    outcome.results = results
    # Why a product that is there was not read (a link, a FIFO) is said, not just "MISSING".
    outcome.notes.extend(f"{r['name']}: {r['note']}." for r in results
                         if r["verdict"] == "MISSING" and r.get("note"))
    reproduced = all(r["verdict"] == "IDENTICAL" for r in results)
    outcome.status = "reproduced" if reproduced else "differs"
    if not produced:
        outcome.message = (f"{record.source}: the command produced none of the recorded "
                           "products; no rebuild attestation written.")
        return outcome
    statement = _rebuild_statement(record, results, produced, current, outcome.drift,
                                   declared, overrides, run, source)
    statement["predicate"]["imports"] = outcome.imports
    bundle = options.signer.sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
    target = _attestation_path(options, record)
    write_atomic(target, canonical_bundle_text(bundle), overwrite=options.force)
    outcome.rebuild_attestation = str(target)
    return outcome


MAX_IMPORT_SOURCE_BYTES = 1024 * 1024


def _step_imports(record: StepRecord, step_root: Path, workdir: Path) -> list[str]:
    """The modules the step's own Python imports: its `.py` materials and the scripts, `-m`
    module and `-c` code its command names, read from the workspace as placed (regular files
    only, never through a link). What ranks a drifted package as the likely cause."""
    from verifier.diff.drift import imported_modules
    from verifier.formats import readers

    texts: list[str] = []
    modules: set[str] = set()
    paths = [step_root / _safe_relative(m["name"], record.source) for m in record.materials
             if m["name"].endswith(".py")]
    argv = list(record.argv)
    for position, word in enumerate(argv):
        following = argv[position + 1] if position + 1 < len(argv) else ""
        if word == "-m" and following:
            modules.add(following.split(".")[0])
        elif word == "-c" and following:
            texts.append(following)
        elif word.endswith(".py") and not word.startswith("-"):
            paths.append(workdir / word)
    for path in dict.fromkeys(Path(os.path.normpath(p)) for p in paths):
        if not path.is_relative_to(step_root) or _through_link(
                step_root, PurePosixPath(path.relative_to(step_root).as_posix())):
            continue
        try:
            texts.append(readers.read_text(path, "step source", MAX_IMPORT_SOURCE_BYTES))
        except InputError:
            continue  # absent, too large, not text: it names no import
    return sorted(modules | imported_modules(texts))


def _record_digest_results(record: StepRecord, workspace: Path) -> list[dict[str, Any]]:
    """The step's signed record-digest files, recomputed from the data as rebuilt."""
    from verifier.formats import recorddigests
    from verifier.judgement import declarations

    declared = [(d.name, d.value) for d in declarations.read(record).record_digests]
    return recorddigests.recompute(declared, workspace, declarations.RECORD_DIGESTS_PREFIX)


def _index_products(produced: list[dict[str, Any]], workspace: Path, index: _DigestIndex,
                    hasher: Hasher) -> None:
    """What a step rebuilt becomes available, by digest, to the steps after it."""
    for descriptor in produced:
        path = workspace / descriptor["name"]
        sha = descriptor["digest"].get("sha256")
        if sha:
            index.add(path, sha)
        elif "dirHash" in descriptor["digest"]:
            names = list_files(path)
            files = [path / name for name in names]
            for file, file_sha in zip(files, hasher.hash_files(files), strict=True):
                index.add(file, file_sha)


def _rebuild_statement(record: StepRecord, results: list[dict[str, Any]],
                       produced: list[dict[str, Any]], current: dict[str, Any],
                       drift: list[dict[str, Any]], declared: dict[str, str],
                       overrides: dict[str, str], run: RunResult,
                       source: dict[str, Any]) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": sorted(produced, key=lambda d: d["name"]),
        "predicateType": REBUILD_PREDICATE_TYPE,
        "predicate": {
            "step": record.step,
            "rebuiltAttestation": {
                "name": Path(record.source.split(":")[0]).name,
                "digest": {"sha256": record.statement.payload_sha256},
            },
            "argv": list(record.argv),
            # The values the command ran with; envOverrides names those the rebuilder chose
            # instead of the recorded ones, so a reader never mistakes a probe for a rerun.
            "env": dict(sorted(declared.items())),
            "envOverrides": dict(sorted(overrides.items())),
            "reproduced": all(r["verdict"] == "IDENTICAL" for r in results),
            "results": results,
            "materials": sorted(record.materials, key=lambda m: m["name"]),
            "environment": current,
            "drift": drift,
            # Where the workspace came from, and the rebuilder's own checkout beside the
            # recorded one: a rebuild from another revision is no rebuild of this step.
            "source": source,
            "runDetails": {
                "invocationId": str(uuid.uuid4()),
                "startedOn": run.started_on,
                "finishedOn": run.finished_on,
                "exitCode": run.returncode,
            },
        },
    }
