"""The checkpoint log of a training step, its Merkle root, and the choice of segments to replay.

A training step recorded with checkpoints signs a log: every checkpoint directory the run wrote,
in step order, with its name, step number and dirHash. The log's root is an RFC 6962 Merkle tree
hash over the entries, so one checkpoint's membership can be shown with a proof of log2(N)
hashes instead of the whole log. A **segment** is the stretch between two consecutive
checkpoints; it is named by the step it ends at.

Where the log lives in a step attestation (SLSA Provenance v1 predicate):

    buildDefinition.externalParameters.checkpoints = {
        "directory": "ckpt",                    # relative to the working directory, POSIX
        "resume": ["python", "train.py", "--from", "{checkpoint}", "--until", "{step}",
                   "--out", "{out}"]}           # the signed resume template, as argv
    runDetails.byproducts[] = {
        "name": "checkpoint-log",
        "digest": {"sha256": ROOT},             # the Merkle root (a sha256 value)
        "annotations": {"format": LOG_FORMAT,
                        "checkpoints": [{"name": "step-000010", "step": 10,
                                         "digest": {"dirHash": HEX}}, ...]}}

The choice of segments: each segment index i is ranked by sha256(CHOICE_DOMAIN ‖ seed ‖ root ‖
i as 8 bytes big-endian), and the K lowest ranks are replayed. The seed is drawn by the replayer
after the log was signed, so the trainer could not know which segments would be checked; anyone
can recompute the choice from the seed and the root the rebuild attestation records.

This module is pure: it reads no files but through the callables it is given, and never prints.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats.statement import canonical_json

LOG_BYPRODUCT = "checkpoint-log"
LOG_FORMAT = "https://model-verifier.dev/checkpoint-log/v1"
PLACEHOLDERS = ("{checkpoint}", "{step}", "{out}")
CHOICE_DOMAIN = b"model-verifier segment choice v1\x00"
_TRAILING_NUMBER = re.compile(r"(\d+)(?=\D*$)")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# A step number is an int64 in every trainer we know; bounding it keeps the JSON exact.
MAX_STEP = 2**63 - 1
# One path component (NAME_MAX): a longer name could only fail later, on some file system call.
MAX_NAME_BYTES = 255
# C0 controls, DEL and C1 controls: no trainer names a checkpoint with them, and a terminal or
# log reader would act on them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, order=True)
class CheckpointEntry:
    """One logged checkpoint: its directory name under the log's directory, its step, dirHash."""

    step: int
    name: str
    dir_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "digest": {"dirHash": self.dir_hash}}


@dataclass(frozen=True)
class Segment:
    """The stretch of the run from `start` to `end` (consecutive checkpoints of one log)."""

    index: int  # 0 for the segment ending at the second checkpoint
    start: CheckpointEntry
    end: CheckpointEntry

    @property
    def name(self) -> str:
        return f"{self.start.step}->{self.end.step}"


@dataclass(frozen=True)
class CheckpointLog:
    """A signed checkpoint log: where the checkpoints lie, the entries in step order, the root."""

    directory: str
    resume: tuple[str, ...]
    entries: tuple[CheckpointEntry, ...]

    # Computed once: a judgement reads them for every segment a claim lists, and a long run's
    # log has hundreds of thousands of entries (recomputed, judging was quadratic).
    @cached_property
    def root(self) -> str:
        return merkle_root(self.entries)

    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        pairs = itertools.pairwise(self.entries)
        return tuple(Segment(i, a, b) for i, (a, b) in enumerate(pairs))

    def segment_ending_at(self, step: int) -> Segment | None:
        return next((s for s in self.segments if s.end.step == step), None)

    def external_parameters(self) -> dict[str, Any]:
        return {"directory": self.directory, "resume": list(self.resume)}

    def byproduct(self) -> dict[str, Any]:
        return {
            "name": LOG_BYPRODUCT,
            "digest": {"sha256": self.root},
            "annotations": {"format": LOG_FORMAT,
                            "checkpoints": [e.to_json() for e in self.entries]},
        }


# --- step numbers and scanning -------------------------------------------------------------

def step_number(name: str) -> int | None:
    """The trailing integer of a checkpoint's name (`checkpoint-500`, `step1000-unsharded`,
    `step-000120`), or None when the name holds no digits."""
    found = _TRAILING_NUMBER.search(name)
    if found is None:
        return None
    value = int(found.group(1))
    return value if value <= MAX_STEP else None


def scan_checkpoints(directory: Path, dir_hash_of: Callable[[Path], str],
                     shown: str | None = None) -> tuple[CheckpointEntry, ...]:
    """Every immediate subdirectory of `directory` as a checkpoint, in step order.

    Symbolic links among them (OLMo's `latest-unsharded`) are aliases, not checkpoints: left
    out. Plain files beside the checkpoints are not part of the log. Raises InputError for a
    missing directory, one without checkpoints, a name without a step number, or two
    checkpoints with one step number.
    """
    label = shown or str(directory)
    if directory.is_symlink() or not directory.is_dir():
        raise InputError(f"{label}: --checkpoints must name a directory the step wrote its "
                         "checkpoints into; it is not one.")
    entries: list[CheckpointEntry] = []
    by_step: dict[int, str] = {}
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        if child.is_symlink() or not child.is_dir():
            continue
        step = step_number(child.name)
        if step is None:
            raise InputError(f"{label}/{child.name}: a checkpoint's name must end in its step "
                             "number (checkpoint-500, step1000-unsharded, step-000120).")
        if step in by_step:
            raise InputError(f"{label}: checkpoints {by_step[step]!r} and {child.name!r} both "
                             f"claim step {step}.")
        if not plain_name(child.name):
            # The signed log, and whoever reads it, could not carry it (undecodable bytes, a
            # control character): refused here rather than by every verifier later.
            raise InputError(f"{label}/{child.name!a}: a checkpoint's name must be "
                             "text without control characters.")
        by_step[step] = child.name
        entries.append(CheckpointEntry(step, child.name, dir_hash_of(child)))
    if not entries:
        raise InputError(f"{label}: holds no checkpoint directories, so there is no log to "
                         "sign.")
    return tuple(sorted(entries))


# --- the resume template -------------------------------------------------------------------

def parse_template(template: str | Sequence[str], source: str = "--resume") -> tuple[str, ...]:
    """The resume template as argv: split like a shell would (never run by one), every
    placeholder present, no placeholder unknown."""
    argv = tuple(shlex.split(template)) if isinstance(template, str) else tuple(template)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise InputError(f"{source}: the resume template is empty.")
    text = "\x00".join(argv)
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise InputError(f"{source}: the resume template lacks {', '.join(missing)}; it must "
                         "name the start checkpoint, the end step and the output directory.")
    unknown = sorted({m for m in _PLACEHOLDER.findall(text) if m not in PLACEHOLDERS})
    if unknown:
        raise InputError(f"{source}: the resume template holds unknown placeholders "
                         f"{', '.join(unknown)} (known: {', '.join(PLACEHOLDERS)}).")
    return argv


def render_template(argv: Sequence[str], checkpoint: str, step: int, out: str) -> list[str]:
    """The command that replays one segment: each placeholder replaced within each argument."""
    values = {"{checkpoint}": checkpoint, "{step}": str(step), "{out}": out}
    return [_PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), arg) for arg in argv]


# --- the Merkle tree (RFC 6962, sha256) -----------------------------------------------------

def leaf_hash(entry: CheckpointEntry) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json(entry.to_json())).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(count: int) -> int:
    """The largest power of two smaller than count (RFC 6962 §2.1)."""
    k = 1
    while k * 2 < count:
        k *= 2
    return k


def _tree_hash(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_tree_hash(leaves[:k]), _tree_hash(leaves[k:]))


def merkle_root(entries: Sequence[CheckpointEntry]) -> str:
    if not entries:
        return hashlib.sha256(b"").hexdigest()
    return _tree_hash([leaf_hash(e) for e in entries]).hex()


def inclusion_proof(entries: Sequence[CheckpointEntry], index: int) -> list[str]:
    """The audit path of entries[index] (RFC 6962 §2.1.1), leaf side first."""
    leaves = [leaf_hash(e) for e in entries]
    if not 0 <= index < len(leaves):
        raise ValueError("index out of range")
    path: list[bytes] = []

    def walk(nodes: Sequence[bytes], m: int) -> None:
        if len(nodes) == 1:
            return
        k = _split(len(nodes))
        if m < k:
            walk(nodes[:k], m)
            path.append(_tree_hash(nodes[k:]))
        else:
            walk(nodes[k:], m - k)
            path.append(_tree_hash(nodes[:k]))

    walk(leaves, index)
    return [p.hex() for p in path]


def verify_inclusion(entry: CheckpointEntry, index: int, count: int, proof: Sequence[str],
                     root: str) -> bool:
    """True when `proof` shows entry is leaf `index` of a `count`-leaf log with this root
    (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < count:
        return False
    try:
        hashes = [bytes.fromhex(p) for p in proof]
    except ValueError:
        return False
    fn, sn = index, count - 1
    result = leaf_hash(entry)
    for sibling in hashes:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = _node(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = _node(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result.hex() == root


# --- choosing segments ----------------------------------------------------------------------

def choice_rank(seed: bytes, root: str, index: int) -> bytes:
    return hashlib.sha256(CHOICE_DOMAIN + seed + bytes.fromhex(root)
                          + index.to_bytes(8, "big")).digest()


def choose_segments(log: CheckpointLog, seed: bytes, count: int) -> list[Segment]:
    """`count` segments of the log chosen by the seed (all of them when count covers the log),
    in step order."""
    root = log.root
    ranked = sorted(log.segments, key=lambda s: choice_rank(seed, root, s.index))
    return sorted(ranked[:max(0, count)], key=lambda s: s.index)


# --- reading a log back out of a signed predicate --------------------------------------------

def log_from_predicate(predicate: Any, source: str) -> CheckpointLog | None:
    """The checkpoint log a step predicate signs, or None when the step has none.

    Every field is type-checked; the root given in the byproduct must be the root of the
    entries, the entries in strictly increasing step order with distinct names, and the
    directory and names plain relative paths. Raises InputError naming `source` otherwise.
    """
    if not isinstance(predicate, dict):
        return None
    definition = predicate.get("buildDefinition")
    external = definition.get("externalParameters") if isinstance(definition, dict) else None
    declared = external.get("checkpoints") if isinstance(external, dict) else None
    details = predicate.get("runDetails")
    byproducts = details.get("byproducts") if isinstance(details, dict) else None
    logged = [b for b in byproducts or [] if isinstance(b, dict)
              and b.get("name") == LOG_BYPRODUCT] if isinstance(byproducts, list) else []
    if declared is None and not logged:
        return None
    if not isinstance(declared, dict) or len(logged) != 1:
        raise InputError(f"{source}: the checkpoint log is incomplete (it needs "
                         "externalParameters.checkpoints and one checkpoint-log byproduct).")
    directory = declared.get("directory")
    if not isinstance(directory, str) or not _plain_relative(directory):
        raise InputError(f"{source}: the checkpoint directory {directory!r} is not a plain "
                         "relative path.")
    resume = declared.get("resume")
    if not isinstance(resume, list) or not all(isinstance(a, str) for a in resume):
        raise InputError(f"{source}: the resume template is not a list of strings.")
    argv = parse_template(resume, f"{source}: resume template")
    byproduct = logged[0]
    digest = byproduct.get("digest")
    annotations = byproduct.get("annotations")
    root = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(root, str) or not _HEX64.fullmatch(root):
        raise InputError(f"{source}: the checkpoint log's root is not a sha256 hex digest.")
    if not isinstance(annotations, dict) or annotations.get("format") != LOG_FORMAT:
        raise InputError(f"{source}: the checkpoint log is not in the format {LOG_FORMAT}.")
    raw = annotations.get("checkpoints")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{source}: the checkpoint log lists no checkpoints.")
    entries = tuple(_entry(item, source) for item in raw)
    for before, after in itertools.pairwise(entries):
        if after.step <= before.step:
            raise InputError(f"{source}: the checkpoint log is out of step order at "
                             f"{after.name!r} (step {after.step} after {before.step}).")
    if len({e.name for e in entries}) != len(entries):
        raise InputError(f"{source}: the checkpoint log names one checkpoint twice.")
    log = CheckpointLog(directory, argv, entries)
    if log.root != root:
        raise InputError(f"{source}: the checkpoint log's root {root[:12]}… is not the root of "
                         f"its entries ({log.root[:12]}…).")
    return log


def _entry(item: Any, source: str) -> CheckpointEntry:
    if not isinstance(item, dict):
        raise InputError(f"{source}: a checkpoint log entry is not an object.")
    name, step, digest = item.get("name"), item.get("step"), item.get("digest")
    if not isinstance(name, str) or not plain_name(name):
        shown = name if not isinstance(name, str) else name[:80].encode("utf-8",
                                                                       "backslashreplace")
        raise InputError(f"{source}: checkpoint log entry {shown!r} is not a plain name (at "
                         f"most {MAX_NAME_BYTES} bytes of text, no '/', no control "
                         "character).")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise InputError(f"{source}: checkpoint {name!r} has no valid step number.")
    value = digest.get("dirHash") if isinstance(digest, dict) else None
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise InputError(f"{source}: checkpoint {name!r} has no dirHash.")
    return CheckpointEntry(step, name, value)


def plain_name(name: str) -> bool:
    """A name a file system takes as one directory entry and a terminal shows as text: valid
    UTF-8 (no lone surrogate, which no file name encodes to), at most NAME_MAX bytes, no '/',
    not '.' or '..', no control character."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return (0 < len(encoded) <= MAX_NAME_BYTES and "/" not in name and name not in (".", "..")
            and _CONTROL.search(name) is None)


def _plain_relative(path: str) -> bool:
    return bool(path) and not path.startswith("/") and all(
        plain_name(part) for part in path.split("/"))
