"""Recording a checkpointed step: the checkpoint log `record --checkpoints DIR --resume TEMPLATE`
signs (verifier.formats.checkpoint_log holds the format; docs/replay.md the protocol).

Everything that can be refused without the step's output is refused before the command runs
(the run may take days): the template must hold its three placeholders, and DIR must lie inside
the working directory and not be it. After the command, every immediate subdirectory of DIR is
a checkpoint and a product of the step; a DIR without one, a name without a step number or two
checkpoints claiming one step refuse the step, as does a checkpoint that was already there and
that the command did not write (it would put weights nothing accounts for into the log), unless
`--attest-existing` says that is the point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from verifier.errors import InputError
from verifier.formats.checkpoint_log import (
    CheckpointLog,
    parse_template,
    scan_checkpoints,
)
from verifier.formats.digest import Hasher, PathDigest


@dataclass(frozen=True)
class CheckpointPlan:
    """What `record --checkpoints --resume` asked for, checked before the command runs."""

    directory: str  # relative to the working directory, POSIX
    resume: tuple[str, ...]
    before: dict[str, Any]  # checkpoint name -> its files' stamps, for those already there


def plan(directory: Path | None, template: str | None, base: Path,
         stamp: Callable[[Path], Any]) -> CheckpointPlan | None:
    """Check --checkpoints and --resume before the step runs (None when neither is given).
    `stamp` tells later whether a checkpoint already there was rewritten (record's product
    stamp)."""
    if directory is None and template is None:
        return None
    if directory is None or template is None:
        raise InputError("--checkpoints and --resume go together: the log is of no use to a "
                         "replayer without the command that continues the run from a "
                         "checkpoint, nor the command without the log.")
    resume = parse_template(template, "--resume")
    absolute = Path(os.path.abspath(base / directory))
    root = Path(os.path.abspath(base))
    if not absolute.is_relative_to(root) or absolute == root:
        raise InputError(f"--checkpoints {directory}: must name a directory inside the working "
                         "directory (not the working directory itself), so that a replayer "
                         "finds the checkpoints where the log says.")
    _refuse_escape(absolute, root, directory)
    name = absolute.relative_to(root).as_posix()
    before = {}
    if absolute.is_dir() and not absolute.is_symlink():
        before = {child.name: stamp(child) for child in absolute.iterdir()
                  if child.is_dir() and not child.is_symlink()}
    return CheckpointPlan(name, resume, before)


def overlapping_material(directory: PurePosixPath, materials: Iterable[str]) -> str | None:
    """The first material that is the checkpoint directory, holds it or lies inside it. A
    replay replaces that directory with the start checkpoint, so it would run on other
    materials than the signed ones (the run's data, gone)."""
    for name in materials:
        path = PurePosixPath(name)
        if path == directory or directory in path.parents or path in directory.parents:
            return name
    return None


def _refuse_escape(absolute: Path, root: Path, shown: Path | str) -> None:
    """A folder on the way to DIR that is a link out of the working directory takes the
    checkpoints out of it too."""
    real_root = Path(os.path.realpath(root))
    if not Path(os.path.realpath(absolute)).is_relative_to(real_root):
        raise InputError(f"--checkpoints {shown}: leads out of the working directory through "
                         "a symbolic link; name a directory inside it.")


def scan(plan: CheckpointPlan, base: Path, hasher: Hasher,
         attest_existing: bool, stamp: Callable[[Path], Any]) -> CheckpointLog:
    """The log of what the step wrote into the directory (after the command succeeded)."""
    absolute = base / plan.directory
    _refuse_escape(Path(os.path.abspath(absolute)), Path(os.path.abspath(base)),
                   plan.directory)

    def dir_hash(path: Path) -> str:
        return hasher.digest_paths([path])[0].dir_hash or ""

    entries = scan_checkpoints(absolute, dir_hash, shown=plan.directory)
    if not attest_existing:
        for entry in entries:
            earlier = plan.before.get(entry.name)
            if earlier is not None and earlier == stamp(absolute / entry.name):
                raise InputError(
                    f"{plan.directory}/{entry.name}: this checkpoint existed before the step "
                    "ran and the step did not write it; no attestation written (remove it "
                    "first, or pass --attest-existing if attesting it is the point).")
    return CheckpointLog(plan.directory, plan.resume, entries)


def product_names(log: CheckpointLog) -> list[str]:
    """The subject name of every checkpoint: DIR/NAME."""
    return [f"{log.directory}/{entry.name}" for entry in log.entries]


def check_unchanged(log: CheckpointLog, digests: Sequence[PathDigest]) -> None:
    """The checkpoints as attested (hashed with the other products) are the ones logged: a
    process the step left behind may not rewrite one in between."""
    for entry, digest in zip(log.entries, digests, strict=True):
        if digest.dir_hash != entry.dir_hash:
            raise InputError(f"{log.directory}/{entry.name}: this checkpoint changed while the "
                             "step was being recorded; no attestation written.")


def sign_into(statement: dict[str, Any], log: CheckpointLog,
              settings: dict[str, Any]) -> None:
    """Put the log where verifier.formats.checkpoint_log reads it back from, and the
    determinism settings (`determinism`) beside the environment."""
    predicate = statement["predicate"]
    predicate["buildDefinition"]["internalParameters"]["determinism"] = settings
    predicate["buildDefinition"]["externalParameters"]["checkpoints"] = (
        log.external_parameters())
    predicate["runDetails"]["byproducts"].append(log.byproduct())


# --- whether a replay can be bit-exact ------------------------------------------------------

# The variables that decide it: cuBLAS's reduction order, Python's hash order, thread counts.
DETERMINISM_VARIABLES = ("CUBLAS_WORKSPACE_CONFIG", "MKL_NUM_THREADS", "OMP_NUM_THREADS",
                         "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED", "VECLIB_MAXIMUM_THREADS")
_FROM_TORCH = {"use_deterministic_algorithms": "deterministic_algorithms",
               "cudnn_deterministic": "cudnn_deterministic",
               "cudnn_benchmark": "cudnn_benchmark"}


def determinism(environment: dict[str, Any]) -> dict[str, Any]:
    """The determinism settings the step ran with, and whether a replay in the same
    environment class (same CPU or GPU model, libraries, thread count) can be expected to
    reproduce its checkpoints bit for bit: `exactReplay` is "expected", "not-expected" or
    "unknown", with the reasons. Signed with the log, so a verifier knows before replaying
    whether a difference means forgery or only an environment that cannot be exact."""
    variables = environment.get("variables") or {}
    chosen = {name: variables[name] for name in DETERMINISM_VARIABLES if name in variables}
    reported = dict(environment.get("determinism") or {})
    torch = environment.get("torch") if isinstance(environment.get("torch"), dict) else {}
    for key, source in _FROM_TORCH.items():
        if key not in reported and isinstance(torch.get(source), bool):
            reported[key] = torch[source]
    tf32 = [torch[k] for k in ("tf32_matmul", "tf32_cudnn") if isinstance(torch.get(k), bool)]
    if "allow_tf32" not in reported and tf32:
        reported["allow_tf32"] = any(tf32)
    gpu = bool(environment.get("gpus")) or torch.get("cuda_available") is True
    against: list[str] = []
    if reported.get("cudnn_benchmark") is True:
        against.append("cuDNN benchmark mode picks kernels by timing them")
    if gpu and reported.get("use_deterministic_algorithms") is not True:
        against.append("a GPU step without deterministic algorithms")
    if gpu and "CUBLAS_WORKSPACE_CONFIG" not in chosen:
        against.append("a GPU step without CUBLAS_WORKSPACE_CONFIG")
    unknown: list[str] = []
    threads = [k for k in chosen if k.endswith("_THREADS")]
    if "threads" not in reported and not threads:
        unknown.append("the thread count was neither set nor reported")
    if not environment.get("determinism") and not torch:
        unknown.append("the step reported no determinism settings")
    verdict = "not-expected" if against else "unknown" if unknown else "expected"
    return {"variables": chosen, "reported": dict(sorted(reported.items())),
            "exactReplay": verdict, "reasons": against or unknown}
