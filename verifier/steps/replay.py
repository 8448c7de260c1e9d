"""Replay chosen segments of a checkpointed training step and attest what each one reached.

A step recorded with checkpoints signs its checkpoint log and a resume template
(verifier.formats.checkpoint_log). Replaying a segment runs the signed template from one logged
checkpoint to the next, in the rebuild's own machinery (verifier.steps.rebuild): the step must
be signed by someone the rebuilder trusts, the workspace is made from the recorded commit with
the materials placed by digest, and the command runs in the same sandbox with the same
environment. The start checkpoint is placed only after its dirHash matched the signed log;
everything that can be refused (an untrusted step, a template leaving the workspace, a
checkpoint changed since signing) is refused before anything runs.

Each segment gets a fresh workspace, so a segment can never leave anything for the next. The
end checkpoint it writes is compared with the logged one: the same dirHash is MATCH; otherwise
the tensors are measured against the segment's own update (verifier.diff.update) and the
segment is WITHIN-TOLERANCE only under a tolerance the rebuilder or the policy gives.

The rebuild attestation's `replay` section (docs/replay.md) records the log's root, how the
segments were chosen (with the seed, so anyone can recompute a random choice) and every
segment's result, dissent included.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from verifier.diff.update import CheckpointComparison, check_update_rtol, compare_checkpoints
from verifier.errors import InputError
from verifier.formats.checkpoint_log import (
    CheckpointEntry,
    CheckpointLog,
    Segment,
    choose_segments,
    log_from_predicate,
    render_template,
)
from verifier.formats.digest import Hasher, list_files
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, write_atomic
from verifier.formats.statement import (
    REBUILD_PREDICATE_TYPE,
    STATEMENT_TYPE,
    StepRecord,
    canonical_json,
)
from verifier.steps import environment, plan, workspace
from verifier.steps.admission import _check_text, _safe_relative
from verifier.steps.checkpoints import overlapping_material
from verifier.steps.rebuild import (
    RebuildOptions,
    _check_before_running,
    _CommandFailed,
    _excluded_names,
    _inside,
    _place_materials,
    _prepare_workspace,
    _run_step,
    _step_sandbox,
    _through_link,
    step_environment,
)
from verifier.steps.record import canonical_bundle_text, utc_now
from verifier.steps.sandbox import interpreter_roots

REPLAY_SUFFIX = ".replay.intoto.json"
# Fetches the logged checkpoints a replay needs (a registry's, verifier.interop.oci.checkpoints)
# and returns the directory holding them by name; called with (log, entries, attestation).
CheckpointSource = Callable[[CheckpointLog, list[CheckpointEntry], str], Path]
SEED_BYTES = 32
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


@dataclass(frozen=True)
class Selection:
    """Which segments to replay: K at random (seeded), all of them, or those named by the step
    they end at."""

    mode: str  # "random" | "all" | "named"
    requested: int = 0
    seed: bytes = b""
    steps: tuple[int, ...] = ()

    def choose(self, log: CheckpointLog, source: str) -> list[Segment]:
        if self.mode == "all":
            return list(log.segments)
        if self.mode == "random":
            return choose_segments(log, self.seed, self.requested)
        chosen: dict[int, Segment] = {}
        for step in self.steps:
            segment = log.segment_ending_at(step)
            if segment is None:
                ends = ", ".join(str(s.end.step) for s in log.segments[:12])
                raise InputError(f"--segment {step}: no segment of the log of {source} ends at "
                                 f"step {step} (segments end at {ends or 'no step'}).")
            chosen[segment.index] = segment
        return [chosen[i] for i in sorted(chosen)]

    def to_json(self) -> dict[str, Any]:
        requested = self.requested if self.mode == "random" else len(self.steps) \
            if self.mode == "named" else None
        out: dict[str, Any] = {"mode": self.mode, "requested": requested}
        if self.mode == "random":
            out["seed"] = self.seed.hex()
        return out


def parse_selection(segments: str | None, named: list[str], seed: str | None) -> Selection:
    """--segments K|all, --segment STEP (repeatable) and --seed HEX, as a Selection; the seed
    is drawn here, after the attestation was signed, when none is given."""
    if segments is not None and named:
        raise InputError("--segments and --segment choose segments two ways; give one.")
    if seed is not None and (segments is None or segments == "all"):
        raise InputError("--seed goes with --segments K: it seeds the random choice.")
    if named:
        steps: list[int] = []
        for text in named:
            if not text.isdigit():
                raise InputError(f"--segment {text!r}: expected the step number a segment ends "
                                 "at.")
            steps.append(int(text))
        return Selection("named", steps=tuple(steps))
    if segments is None:
        raise InputError("say which segments to replay: --segments K, --segments all or "
                         "--segment STEP.")
    if segments == "all":
        return Selection("all")
    if not segments.isdigit() or int(segments) < 1:
        raise InputError(f"--segments {segments!r}: expected a count of at least 1, or 'all'.")
    if seed is None:
        drawn = secrets.token_bytes(SEED_BYTES)
    elif not _HEX.fullmatch(seed) or len(seed) > 2 * 1024:
        raise InputError(f"--seed {seed!r}: expected an even number of hex digits.")
    else:
        drawn = bytes.fromhex(seed)
    return Selection("random", requested=int(segments), seed=drawn)


@dataclass
class SegmentOutcome:
    segment: Segment
    directory: str
    verdict: str = "FAILED"  # MATCH | WITHIN-TOLERANCE | DIFFERS | FAILED
    replayed: str | None = None  # dirHash of what the replay wrote
    exit_code: int | None = None
    seconds: float = 0.0
    comparison: CheckpointComparison | None = None
    message: str = ""

    @property
    def name(self) -> str:
        return self.segment.name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.segment.index,
                               "start": self.segment.start.to_json(),
                               "end": self.segment.end.to_json(), "verdict": self.verdict}
        if self.replayed is not None:
            out["replayed"] = {"dirHash": self.replayed}
        out["exitCode"] = self.exit_code
        out["seconds"] = round(self.seconds, 3)
        if self.comparison is not None and self.verdict != "MATCH":
            out["update"] = self.comparison.update_json()
            out["tensors"] = [t.to_json() for t in self.comparison.worst()]
            out["files"] = list(self.comparison.files)
        return out


@dataclass
class ReplayOutcome:
    step: str
    attestation: str
    root: str
    selection: Selection
    segments: list[SegmentOutcome] = field(default_factory=list)
    rebuild_attestation: str | None = None
    notes: list[str] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    env_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def reproduced(self) -> bool:
        return bool(self.segments) and all(s.verdict == "MATCH" for s in self.segments)

    @property
    def accepted(self) -> bool:
        return bool(self.segments) and all(s.verdict in ("MATCH", "WITHIN-TOLERANCE")
                                           for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "attestation": self.attestation, "root": self.root,
                "selection": self.selection.to_json(),
                "segments": [{**s.to_json(), "message": s.message} for s in self.segments],
                "reproduced": self.reproduced, "rebuild_attestation": self.rebuild_attestation,
                "notes": self.notes, "drift": self.drift, "env_overrides": self.env_overrides}


def checkpoint_log(record: StepRecord) -> CheckpointLog:
    log = log_from_predicate(record.statement.predicate, record.source)
    if log is None:
        raise InputError(f"{record.source}: step {record.step!r} was recorded without "
                         "checkpoints (record --checkpoints DIR --resume TEMPLATE), so it has "
                         "no segments to replay.")
    return log


def pick_step(records: list[StepRecord], only_step: str | None) -> StepRecord:
    """The one step attestation to replay: --step's, or the only one that has a log."""
    if only_step is not None:
        found = [r for r in records if r.step == only_step]
        if not found:
            raise InputError(f"--step {only_step}: no attestation of that step was given.")
        if len(found) > 1:
            raise InputError(f"--step {only_step}: {found[0].source} and {found[1].source} both "
                             "attest it; give one attestation per step.")
        return found[0]
    logged = [r for r in records if log_from_predicate(r.statement.predicate, r.source)]
    if len(logged) == 1:
        return logged[0]
    if not logged:
        raise InputError("none of the step attestations given carries a checkpoint log, so "
                         "there are no segments to replay.")
    raise InputError(f"several steps carry a checkpoint log ({', '.join(r.step for r in logged)}); "
                     "name the one to replay with --step.")


def _segment_argv(log: CheckpointLog, segment: Segment, out: str) -> list[str]:
    return render_template(log.resume, f"{log.directory}/{segment.start.name}",
                           segment.end.step, out)


def _checkpoint_dir(base: Path, entry: CheckpointEntry, log: CheckpointLog, record: StepRecord,
                    hasher: Hasher) -> tuple[Path | None, str | None]:
    """(the checkpoint's directory in the checkpoints source, its dirHash), or (None, why)."""
    path = base / entry.name
    shown = f"{log.directory}/{entry.name}"
    if path.is_symlink() or not path.is_dir():
        return None, (f"{record.source}: checkpoint {shown} is not in the checkpoints source "
                      f"{base}")
    try:
        digest = hasher.digest_paths([path])[0]
    except InputError as error:
        return None, f"{record.source}: checkpoint {shown} cannot be read ({error})"
    left_out = [*([digest.signature] if digest.signature else []), *digest.ignored]
    if left_out:
        # Bytes no signed dirHash covers would be placed beside the start checkpoint.
        return None, (f"{record.source}: checkpoint {shown} in the checkpoints source holds "
                      f"{', '.join(map(repr, left_out[:3]))}, which its dirHash leaves out")
    actual = digest.dir_hash
    if actual != entry.dir_hash:
        return None, (f"{record.source}: checkpoint {shown} does not match the signed log "
                      f"(dirHash {str(actual)[:16]}…, the log says {entry.dir_hash[:16]}…): "
                      "it was changed after signing")
    return path, None


def replay(
    records: list[StepRecord],
    options: RebuildOptions,
    selection: Selection,
    *,
    only_step: str | None = None,
    checkpoints_from: Path | CheckpointSource | None = None,
    update_rtol: float | None = None,
    hasher: Hasher | None = None,
    on_plan: Callable[[list[dict[str, Any]]], None] | None = None,
    on_segment: Callable[[SegmentOutcome], None] | None = None,
) -> ReplayOutcome:
    """Replay the chosen segments of one checkpointed step and sign what they reached."""
    hasher = hasher or Hasher()
    options = replace(options, attestation_suffix=REPLAY_SUFFIX)
    if update_rtol is not None:
        check_update_rtol(update_rtol, "--update-rtol")
    record = pick_step(records, only_step)
    _check_before_running([record], options, records)
    log = checkpoint_log(record)
    directory = _safe_relative(log.directory, record.source)
    chosen = selection.choose(log, record.source)
    if not chosen:
        raise InputError(f"{record.source}: the checkpoint log has {len(log.entries)} "
                         "checkpoint(s), so no segment to replay.")
    # Every command that will run is checked as a recorded one is, before any of it runs.
    out_name = f"replay-out-{uuid.uuid4().hex[:12]}"
    for segment in chosen:
        argv = _segment_argv(log, segment, out_name)
        for argument in argv:
            _check_text(argument, "resume template argument", record.source)
        plan.check_step(replace(record, argv=tuple(argv)), options.allowed_env)
    workdir_rel = _safe_relative(record.working_directory, record.source)
    _refuse_material_overlap(record, workdir_rel / directory)
    if callable(checkpoints_from):
        # Only the checkpoints these segments start and end at: a registry may hold hundreds.
        needed = {e.name: e for s in chosen for e in (s.start, s.end)}
        base = checkpoints_from(log, sorted(needed.values()), record.source)
    else:
        base = (checkpoints_from if checkpoints_from is not None
                else options.source / workdir_rel / directory)
    if base.is_symlink() or not base.is_dir():
        raise InputError(f"{base}: no such directory of checkpoints (give --checkpoints-from "
                         "DIR); nothing was run.")
    starts: dict[int, Path] = {}
    for segment in chosen:
        found, why = _checkpoint_dir(base, segment.start, log, record, hasher)
        if found is None:
            raise InputError(f"{why}; nothing was run.")
        starts[segment.index] = found
    excluded = _excluded_names(records, options.source,
                               [options.out_dir] + ([options.workspace_root]
                                                    if options.workspace_root else []))
    excluded.add((workdir_rel / directory).as_posix())
    if options.workspace_root is not None:
        root = options.workspace_root
        try:
            root.mkdir(parents=True)
        except OSError as error:
            raise InputError(f"{root}: the workspace cannot be made ({error.strerror}).") from None
    else:
        root = Path(tempfile.mkdtemp(prefix="mv-replay-"))
    overrides = dict(sorted(options.env_overrides.items()))
    declared = {**record.declared_env, **overrides}
    outcome = ReplayOutcome(record.step, record.source, log.root, selection,
                            env_overrides=overrides)
    sandbox = _step_sandbox(record, options)
    current: dict[str, Any] | None = None
    source_info: dict[str, Any] = {}
    started = utc_now()
    try:
        if on_plan is not None:
            on_plan([_plan_entry(record, log, s, root, out_name, declared, sandbox.describe())
                     for s in chosen])
        for segment in chosen:
            segment_root = root / f"{record.step}.segment-{segment.end.step}"
            origin, source_info = _prepare_workspace(record, segment_root, excluded, options)
            if origin.note not in outcome.notes:
                outcome.notes.append(origin.note)
            problem = _place_materials(record, segment_root, _NoIndex(), options.source,
                                       excluded, hasher)
            if problem is not None:
                raise InputError(f"{record.source}: {problem}")
            workdir = segment_root / workdir_rel
            placed = _place_start(workdir, directory, segment, starts[segment.index], hasher,
                                  record)
            out_dir = workdir / out_name
            out_dir.mkdir(parents=True)
            argv = _segment_argv(log, segment, out_name)
            result = SegmentOutcome(segment, log.directory)
            with tempfile.TemporaryDirectory(prefix="mv-home-") as home, \
                    environment.report_file() as report_path:
                env = step_environment(declared, Path(home), sandbox)
                interpreter = environment.step_interpreter(argv, env.get("PATH"), workdir)
                if current is None:
                    current = environment.capture(
                        workdir, declared, env=env, interpreter=interpreter,
                        wrap=lambda probe, w=workdir, r=segment_root, e=env: sandbox.wrap(
                            probe, r, w, e, trusted_workspace=False),
                        repository=False)
                    current["sandbox"] = sandbox.describe()
                began = time.monotonic()
                run = _run_step(replace(record, argv=tuple(argv)), segment_root, workdir, env,
                                sandbox, report_path,
                                [] if interpreter is None else
                                interpreter_roots(str(interpreter.path), None, workdir,
                                                  segment_root),
                                Path(home))
                result.seconds = time.monotonic() - began
            if isinstance(run, _CommandFailed):
                result.exit_code, result.message = run.returncode, run.message
            elif isinstance(run, str):
                result.message = run
            else:
                result.exit_code = run.returncode
                _judge_segment(result, workdir, out_name, log, base, placed, update_rtol,
                               hasher, record)
            if options.keep_workspace:
                # The user will run git there: a repository the resume command made (hooks, an
                # fsmonitor) must not run anything when they do, as for a whole rebuild.
                removed = workspace.remove_repositories(segment_root)
                if removed:
                    result.message = " ".join(filter(None, [
                        result.message, f"The segment left a git repository at "
                        f"{', '.join(map(repr, removed))}; it was removed from the kept "
                        "workspace."]))
            outcome.segments.append(result)
            if on_segment is not None:
                on_segment(result)
            if not options.keep_workspace:
                shutil.rmtree(segment_root, ignore_errors=True)
    finally:
        if not options.keep_workspace:
            shutil.rmtree(root, ignore_errors=True)
    assert current is not None
    outcome.drift = environment.drift(record.environment, current)
    statement = _statement(record, log, outcome, current, declared, source_info, started)
    bundle = options.signer.sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
    target = options.out_dir / f"{record.step}{REPLAY_SUFFIX}"
    write_atomic(target, canonical_bundle_text(bundle), overwrite=options.force)
    outcome.rebuild_attestation = str(target)
    return outcome


def _refuse_material_overlap(record: StepRecord, checkpoints: PurePosixPath) -> None:
    clash = overlapping_material(checkpoints, (m["name"] for m in record.materials))
    if clash is not None:
        raise InputError(f"{record.source}: the checkpoint directory {checkpoints} overlaps "
                         f"the material {clash!r}; a replay placing checkpoints there would "
                         "not run on the signed materials. Nothing was run.")


class _NoIndex:
    """No earlier rebuilt step: a replayed segment's materials come from the source alone."""

    def find(self, sha: str) -> Path | None:
        return None


def _place_start(workdir: Path, directory: PurePosixPath, segment: Segment, source: Path,
                 hasher: Hasher, record: StepRecord) -> Path:
    """Copy the start checkpoint to DIR/NAME in the workspace and check the copy against the
    log (the source could change between the check and the copy)."""
    target_dir = workdir / directory
    # Checked before anything is made: mkdir would follow a committed link out of the workspace.
    if _through_link(workdir, directory) or not _inside(workdir, target_dir.parent):
        raise InputError(f"{record.source}: the checkpoint directory {directory} leads out of "
                         "the workspace through a link; nothing more was run.")
    workspace.remove(workdir, directory)
    target_dir.mkdir(parents=True)
    target = target_dir / segment.start.name
    target.mkdir()
    for name in list_files(source):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, destination, follow_symlinks=False)
    # A fresh Hasher: the copy's paths are new, but a cache must never vouch for bytes.
    if Hasher().digest_paths([target])[0].dir_hash != segment.start.dir_hash:
        raise InputError(f"{record.source}: checkpoint {directory}/{segment.start.name} changed "
                         "while it was copied into the workspace; nothing more was run.")
    return source


def _judge_segment(result: SegmentOutcome, workdir: Path, out_name: str, log: CheckpointLog,
                   base: Path, start: Path, update_rtol: float | None, hasher: Hasher,
                   record: StepRecord) -> None:
    end = result.segment.end
    relative = PurePosixPath(out_name) / end.name
    produced = workdir / relative
    if _through_link(workdir, relative) or produced.is_symlink() or not produced.is_dir():
        result.verdict = "FAILED"
        result.message = (f"the resume command exited {result.exit_code} but wrote no "
                          f"{{out}}/{end.name}/ (the end checkpoint under its logged name).")
        return
    try:
        # New paths, so the command's hasher has nothing cached for them.
        result.replayed = hasher.digest_paths([produced])[0].dir_hash
    except InputError as error:
        result.verdict, result.message = "FAILED", f"what it wrote cannot be read: {error}"
        return
    if result.replayed == end.dir_hash:
        result.verdict = "MATCH"
        return
    result.verdict = "DIFFERS"
    logged, why = _checkpoint_dir(base, end, log, record, hasher)
    if logged is None:
        result.message = f"{why}, so the difference is not measured."
        return
    try:
        result.comparison = compare_checkpoints(produced, logged, start)
    except InputError as error:
        result.message = f"the checkpoints could not be compared tensor by tensor: {error}"
        return
    if result.comparison.within(update_rtol):
        result.verdict = "WITHIN-TOLERANCE"


def _plan_entry(record: StepRecord, log: CheckpointLog, segment: Segment, root: Path,
                out_name: str, env: dict[str, str], sandbox: dict[str, Any]) -> dict[str, Any]:
    segment_root = root / f"{record.step}.segment-{segment.end.step}"
    workdir = segment_root / _safe_relative(record.working_directory, record.source)
    entry = plan.describe(replace(record, argv=tuple(_segment_argv(log, segment, out_name))),
                          str(workdir), env, sandbox, str(segment_root))
    entry["step"] = f"{record.step} segment {segment.name}"
    return entry


def _statement(record: StepRecord, log: CheckpointLog, outcome: ReplayOutcome,
               current: dict[str, Any], declared: dict[str, str], source: dict[str, Any],
               started: str) -> dict[str, Any]:
    subjects = [{"name": f"{log.directory}/{s.segment.end.name}",
                 "digest": {"dirHash": s.replayed}}
                for s in outcome.segments if s.replayed is not None]
    if not subjects:
        # A statement needs a subject; with no end checkpoint written, it is about the log.
        subjects = [{"name": "checkpoint-log", "digest": {"sha256": log.root}}]
    return {
        "_type": STATEMENT_TYPE,
        "subject": sorted(subjects, key=lambda d: d["name"]),
        "predicateType": REBUILD_PREDICATE_TYPE,
        "predicate": {
            "step": record.step,
            "rebuiltAttestation": {
                "name": Path(record.source.split(":")[0]).name,
                "digest": {"sha256": record.statement.payload_sha256},
            },
            "argv": list(log.resume),
            "env": dict(sorted(declared.items())),
            "envOverrides": dict(sorted(outcome.env_overrides.items())),
            "reproduced": outcome.reproduced,
            "results": [],
            "materials": sorted(record.materials, key=lambda m: m["name"]),
            "environment": current,
            "drift": outcome.drift,
            "source": source,
            "replay": {
                "log": {"root": log.root, "checkpoints": len(log.entries),
                        "directory": log.directory},
                "selection": outcome.selection.to_json(),
                "segments": [s.to_json() for s in outcome.segments],
            },
            "runDetails": {
                "invocationId": str(uuid.uuid4()),
                "startedOn": started,
                "finishedOn": utc_now(),
                # The replay itself completed; each segment's command has its own exit code.
                "exitCode": 0,
            },
        },
    }
