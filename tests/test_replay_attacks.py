"""Segment replay attacked: a hostile trainer (a signed log it edits and re-signs with its own
key), a hostile rebuilder (a replay claim it edits and re-signs) and a long run's log.

One tiny checkpointed step is recorded once per module with the real `record` (a counter that
moves by one rule every 10 steps: 3 segments of 4 checkpoints), and replayed once by each of
two rebuilders. Each attack edits a copy, re-signs it with the key its author holds, and runs
the command a verifier or rebuilder would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    INTOTO,
    KeyPair,
    assert_error,
    assert_no_traceback,
    dsse_verifies,
    make_keys,
    payload_of,
    read_json,
    run,
    sign_bundle,
    write_json,
    write_policy,
)

from verifier.formats.checkpoint_log import CheckpointEntry, CheckpointLog, log_from_predicate

TRAINER = '''\
import json, sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
out = Path(args["--out"])
if "--from" in args:
    state = json.loads((Path(args["--from"]) / "w.json").read_text())
    until = int(args["--until"])
else:
    state, until = {"step": 0, "w": 1}, 30
    (out / "step-000000").mkdir(parents=True)
    (out / "step-000000" / "w.json").write_text(json.dumps(state))
while state["step"] < until:
    state = {"step": state["step"] + 10, "w": state["w"] * 3 % 1000003}
    (out / f"step-{state['step']:06d}").mkdir(parents=True)
    (out / f"step-{state['step']:06d}" / "w.json").write_text(json.dumps(state))
if "--from" not in args:
    Path("model").mkdir()
    Path("model/w.json").write_text(json.dumps(state))
'''
RESUME = f"{sys.executable} t.py --from {{checkpoint}} --until {{step}} --out {{out}}"
REBUILDERS = ("rebuilder-a", "rebuilder-b")


@dataclass(frozen=True)
class World:
    root: Path
    src: Path
    builder: KeyPair
    rebuilders: dict[str, KeyPair]
    replays: dict[str, Path]  # each rebuilder's honest replay of every segment

    @property
    def attestation(self) -> Path:
        return self.src / "attestations" / "train.intoto.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("replay-attacks")
    builder = make_keys(root / "keys", "builder")
    rebuilders = {n: make_keys(root / "keys", n) for n in REBUILDERS}
    src = root / "src"
    src.mkdir()
    (src / "t.py").write_text(TRAINER, encoding="utf-8")
    result = run(["record", "--step", "train", "--key", builder.private, "--material", "t.py",
                  "--product", "model", "--checkpoints", "ckpt", "--resume", RESUME, "--",
                  sys.executable, "t.py", "--out", "ckpt"], cwd=src)
    assert result.code == 0, result.output
    replays = {}
    for name, keys in rebuilders.items():
        result = run(["rebuild", src / "attestations" / "train.intoto.json", "--source", src,
                      "--key", keys.private, "--trust-key", builder.public, "--out",
                      root / "rebuilds", "--segments", "all"], cwd=src)
        assert result.code == 0, result.output
        replays[name] = root / "rebuilds" / name / "train.replay.intoto.json"
    return World(root, src, builder, rebuilders, replays)


def _policy(world: World, path: Path, segments: int = 2, quorum: int = 2) -> Path:
    return write_policy(path, {
        "version": 1,
        "signers": {"builder": {"key": str(world.builder.public)},
                    **{n: {"key": str(k.public)} for n, k in world.rebuilders.items()}},
        "sources": [{"pattern": "*.py", "unpinned": True}],
        "steps": [{"name": "train", "signed_by": ["builder"]}],
        "rebuild": {"quorum": quorum, "rebuilders": sorted(world.rebuilders),
                    "replay": {"train": {"segments": segments}}},
    })


def _verify(world: World, policy: Path, src: Path, *replays: Path) -> Any:
    args: list[Any] = [src / "model" / "w.json", "--policy", policy, "--attestations",
                       src / "attestations"]
    for path in replays:
        args += ["--attestations", path]
    return run(args, program="verify-model")


def _resign(source: Path, key: KeyPair, target: Path,
            edit: Callable[[dict[str, Any]], None]) -> Path:
    """Edit a signed statement and sign it again with `key`, as its author could."""
    statement = payload_of(read_json(source))
    edit(statement)
    payload = json.dumps(statement, sort_keys=True).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, sign_bundle(payload, INTOTO, key.private))
    assert dsse_verifies(read_json(target), key.public_pem)
    return target


def _set_log(statement: dict[str, Any], entries: list[dict[str, Any]], root: str) -> None:
    byproduct = next(b for b in statement["predicate"]["runDetails"]["byproducts"]
                     if b["name"] == "checkpoint-log")
    byproduct["annotations"]["checkpoints"] = entries
    byproduct["digest"]["sha256"] = root


def _root_of(entries: list[dict[str, Any]]) -> str:
    """The root the hostile trainer signs: RFC 6962 over its entries, whatever they name
    (computed here without the product's canonical JSON, which is what is under attack)."""

    def leaf(item: dict[str, Any]) -> bytes:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(b"\x00" + text.encode("utf-8", "surrogatepass")).digest()

    def tree(nodes: list[bytes]) -> bytes:
        if len(nodes) == 1:
            return nodes[0]
        k = 1
        while k * 2 < len(nodes):
            k *= 2
        return hashlib.sha256(b"\x01" + tree(nodes[:k]) + tree(nodes[k:])).digest()

    return tree([leaf(e) for e in entries]).hex()


def _logged(world: World) -> list[dict[str, Any]]:
    log = log_from_predicate(payload_of(read_json(world.attestation))["predicate"], "t")
    assert log is not None
    return [e.to_json() for e in log.entries]


# --- the hostile trainer: names no file system or terminal should see ----------------------

HOSTILE_NAMES = {
    "surrogate": "step-\ud800-10",
    "newline": "step\nerror: PASS-10",
    "escape": "step-\x1b[2J\x1b[1;1H-10",
    "nul": "step-\x00-10",
    "long": "s" * 300 + "-10",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_NAMES))
def test_a_checkpoint_name_no_file_or_terminal_can_carry_is_one_sentence(
        world: World, tmp_path: Path, kind: str) -> None:
    """A trainer signs a log naming checkpoint 10 by a name with a lone surrogate, a line
    break, a terminal escape, a NUL or 300 bytes: the verifier and the rebuilder each say
    which entry in one sentence, with the name escaped, and run nothing."""
    src = tmp_path / "src"
    shutil.copytree(world.src, src)
    entries = _logged(world)
    entries[1]["name"] = HOSTILE_NAMES[kind]
    attestation = _resign(world.attestation, world.builder, src / "attestations" /
                          "train.intoto.json",
                          lambda s: _set_log(s, entries, _root_of(entries)))
    result = run(["rebuild", attestation, "--source", src, "--key",
                  world.rebuilders["rebuilder-a"].private, "--trust-key",
                  world.builder.public, "--out", tmp_path / "out", "--segments", "all"],
                 cwd=src)
    line = assert_error(result, 2, "checkpoint log entry")
    assert "\x1b" not in line and "\ud800" not in line
    assert not (tmp_path / "out").exists()
    result = _verify(world, _policy(world, tmp_path / "p.yaml"), src, *world.replays.values())
    assert_no_traceback(result)
    assert result.code == 1, result.output
    assert "checkpoint log entry" in result.output and "\x1b" not in result.output


@pytest.mark.parametrize("name", [b"step-\xff-10", b"step-\x1b[2J-10"])
def test_a_trainer_writing_a_checkpoint_no_log_can_carry_is_refused_at_record(
        world: World, tmp_path: Path, name: bytes) -> None:
    """The same names written by the step itself (bytes that are not UTF-8, an escape): record
    refuses the log rather than signing one every verifier must refuse."""
    src = tmp_path / "src"
    src.mkdir()
    code = ("import os; os.makedirs('model'); open('model/w', 'w').close(); "
            f"os.makedirs('ckpt/step-0'); os.makedirs(b'ckpt/' + {name!r})")
    result = run(["record", "--step", "train", "--key", world.builder.private, "--product",
                  "model", "--checkpoints", "ckpt", "--resume", RESUME, "--", sys.executable,
                  "-c", code], cwd=src)
    assert_error(result, 2, "ckpt/", "text without control characters")
    assert not (src / "attestations").exists()


# --- a long run: the judgement stays linear in the log -------------------------------------

LONG_LOG = 20_000


def _long_log(world: World, tmp_path: Path) -> tuple[Path, CheckpointLog]:
    """The step's log as a long run's: LONG_LOG checkpoints (the recorded ones first), signed
    by the builder; the bundle is a few MB, far below what a verifier reads."""

    entries = [CheckpointEntry(10 * i, f"step-{10 * i:06d}",
                               hashlib.sha256(b"%d" % i).hexdigest()) for i in range(LONG_LOG)]
    statement = payload_of(read_json(world.attestation))
    first = log_from_predicate(statement["predicate"], "t")
    assert first is not None
    entries[:len(first.entries)] = first.entries
    log = CheckpointLog(first.directory, first.resume, tuple(entries))
    src = tmp_path / "src"
    shutil.copytree(world.src, src)
    _resign(world.attestation, world.builder, src / "attestations" / "train.intoto.json",
            lambda s: _set_log(s, [e.to_json() for e in log.entries], log.root))
    return src, log


def test_an_all_replay_of_a_long_run_is_judged_in_linear_time(world: World,
                                                              tmp_path: Path) -> None:
    """Two rebuilders sign `--segments all` replays of a 20,000-checkpoint run, every segment
    MATCH: verify-model counts them in seconds. Before, each listed segment rebuilt the log's
    whole list of segments (and each check its Merkle root): quadratic, past ten minutes."""
    src, log = _long_log(world, tmp_path)
    statement = payload_of(read_json(src / "attestations" / "train.intoto.json"))
    payload_sha = hashlib.sha256(
        json.dumps(statement, sort_keys=True).encode()).hexdigest()
    claims = []
    for name, keys in world.rebuilders.items():
        def edit(claim: dict[str, Any], who: str = name) -> None:
            predicate = claim["predicate"]
            predicate["rebuiltAttestation"]["digest"]["sha256"] = payload_sha
            predicate["runDetails"]["invocationId"] = who
            predicate["replay"] = {
                "log": {"root": log.root, "checkpoints": LONG_LOG, "directory": log.directory},
                "selection": {"mode": "all", "requested": None},
                "segments": [{"index": s.index, "start": s.start.to_json(),
                              "end": s.end.to_json(), "verdict": "MATCH",
                              "replayed": {"dirHash": s.end.dir_hash}, "exitCode": 0,
                              "seconds": 0.1} for s in log.segments]}
        claims.append(_resign(world.replays[name], keys,
                              tmp_path / name / "train.replay.intoto.json", edit))
    began = time.monotonic()
    result = _verify(world, _policy(world, tmp_path / "p.yaml", segments=3), src, *claims)
    elapsed = time.monotonic() - began
    assert result.code == 0, result.output
    assert f"{LONG_LOG - 1} of {LONG_LOG - 1} segments replayed" in result.output
    assert elapsed < 60, elapsed


# --- the rebuilder: what a claim may count for ----------------------------------------------

def test_named_segments_count_towards_no_quorum(world: World, tmp_path: Path) -> None:
    """Two rebuilders replay the segments the trainer pointed them at (`--segment`), all MATCH:
    a sample nobody drew at random proves nothing about the rest, so the quorum is not met.
    Their dissent still counts (test_replay: a named DIFFERS fails the model)."""
    claims = []
    for name, keys in world.rebuilders.items():
        result = run(["rebuild", world.attestation, "--source", world.src, "--key",
                      keys.private, "--trust-key", world.builder.public, "--out",
                      tmp_path / "named", "--segment", "10", "--segment", "20"], cwd=world.src)
        assert result.code == 0, result.output
        claims.append(tmp_path / "named" / name / "train.replay.intoto.json")
    result = _verify(world, _policy(world, tmp_path / "p.yaml"), world.src, *claims)
    assert result.code == 1, result.output
    assert "0 of 2 required independent replays" in result.output
    assert "a named replay counts towards no quorum" in result.output
    # The control: the same rebuilders' replays of every segment count.
    result = _verify(world, _policy(world, tmp_path / "p.yaml"), world.src,
                     *world.replays.values())
    assert result.code == 0, result.output


def test_two_rebuilders_with_one_seed_are_one_sample(world: World, tmp_path: Path) -> None:
    """Two rebuilders replay with the same seed: both count (they are different signers), but
    they replayed the same segments, so the printed escape probability is one sample's
    (C(2,2)/C(3,2) = 1/3 for 2 of 3 segments), not the product of two (1/9)."""
    claims = []
    for name, keys in world.rebuilders.items():
        result = run(["rebuild", world.attestation, "--source", world.src, "--key",
                      keys.private, "--trust-key", world.builder.public, "--out",
                      tmp_path / "same", "--segments", "2", "--seed", "ab" * 32],
                     cwd=world.src)
        assert result.code == 0, result.output
        claims.append(tmp_path / "same" / name / "train.replay.intoto.json")
    result = _verify(world, _policy(world, tmp_path / "p.yaml"), world.src, *claims)
    assert result.code == 0, result.output
    assert "escapes this sample with probability ≤ 0.34" in result.output


def test_an_all_replay_missing_a_segment_counts_for_nothing(world: World,
                                                            tmp_path: Path) -> None:
    """A rebuilder drops the segment it did not like from its `--segments all` replay and
    re-signs it: a claim of every segment that does not list every one counts for nothing."""
    def drop_last(claim: dict[str, Any]) -> None:
        claim["predicate"]["replay"]["segments"].pop()

    forged = _resign(world.replays["rebuilder-b"], world.rebuilders["rebuilder-b"],
                     tmp_path / "rebuilder-b" / "train.replay.intoto.json", drop_last)
    result = _verify(world, _policy(world, tmp_path / "p.yaml"), world.src,
                     world.replays["rebuilder-a"], forged)
    assert result.code == 1, result.output
    assert "claims every segment but does not list every one" in result.output


def test_a_log_of_one_checkpoint_has_no_segment_to_replay(world: World,
                                                         tmp_path: Path) -> None:
    """A trainer signs a log of its start checkpoint alone: there is nothing to replay, said
    in one sentence, and nothing runs."""
    src = tmp_path / "src"
    shutil.copytree(world.src, src)
    entries = _logged(world)[:1]
    attestation = _resign(world.attestation, world.builder,
                          src / "attestations" / "train.intoto.json",
                          lambda s: _set_log(s, entries, _root_of(entries)))
    result = run(["rebuild", attestation, "--source", src, "--key",
                  world.rebuilders["rebuilder-a"].private, "--trust-key",
                  world.builder.public, "--out", tmp_path / "out", "--segments", "1"], cwd=src)
    assert_error(result, 2, "1 checkpoint(s), so no segment to replay")
    assert not (tmp_path / "out").exists()


def test_a_kept_replay_workspace_holds_no_repository_that_runs_programs(
        world: World, tmp_path: Path) -> None:
    """The trainer's signed resume command leaves a `.git` whose fsmonitor runs a program;
    the rebuilder keeps the workspace to look at it and runs `git status` there. Nothing runs:
    the replay removes every `.git` from a kept workspace, as a whole rebuild does."""
    src = tmp_path / "src"
    shutil.copytree(world.src, src)
    marker = tmp_path / "fsmonitor-ran"
    plant = (f"mkdir -p .git sub/.git && printf '[core]\\n\\tfsmonitor = touch {marker}\\n' "
             "| tee .git/config > sub/.git/config && git init -q . 2>/dev/null; exec "
             "python3 t.py --from {checkpoint} --until {step} --out {out}")

    def resume(statement: dict[str, Any]) -> None:
        statement["predicate"]["buildDefinition"]["externalParameters"]["checkpoints"][
            "resume"] = ["sh", "-c", plant]

    attestation = _resign(world.attestation, world.builder,
                          src / "attestations" / "train.intoto.json", resume)
    kept = tmp_path / "kept"
    result = run(["rebuild", attestation, "--source", src, "--key",
                  world.rebuilders["rebuilder-a"].private, "--trust-key",
                  world.builder.public, "--out", tmp_path / "out", "--segments", "1",
                  "--keep-workspace", "--workspace", kept], cwd=src)
    assert result.code == 0, result.output
    assert "MATCH" in result.output
    assert "left a git repository at '.git', 'sub/.git'" in result.output
    repositories = [p for p in kept.rglob("*") if p.name == ".git"]
    assert repositories == [], repositories
    for workdir in {p.parent for p in kept.rglob("t.py")}:
        subprocess.run(["git", "status"], cwd=workdir, capture_output=True, check=False)
    assert not marker.exists()


def test_a_start_checkpoint_carrying_bytes_its_dirhash_leaves_out_is_refused(
        world: World, tmp_path: Path) -> None:
    """The checkpoints source (a shipped checkout, `--checkpoints-from DIR`) adds to a start
    checkpoint a `model.sig`: any OMS-shaped bundle, signed by anyone, which a dirHash leaves
    out. It would be placed beside the verified files, unsigned bytes the resume command can
    read; the replay refuses it before anything runs."""
    src = tmp_path / "src"
    shutil.copytree(world.src, src)
    stranger = make_keys(tmp_path / "keys", "stranger")
    for name in ("step-000000", "step-000010", "step-000020"):
        result = run(["sign-model", src / "ckpt" / name, "--key", stranger.private])
        assert result.code == 0, result.output
    result = run(["rebuild", world.attestation, "--source", src, "--key",
                  world.rebuilders["rebuilder-a"].private, "--trust-key",
                  world.builder.public, "--out", tmp_path / "out", "--segments", "all"],
                 cwd=src)
    assert_error(result, 2, "ckpt/step-000000", "'model.sig'", "dirHash leaves out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("directory", ["t.py", "lib"])
def test_a_log_directory_over_a_material_is_refused(world: World, tmp_path: Path,
                                                   directory: str) -> None:
    """The trainer signs the log's directory as a material's path (`t.py`), or a directory
    holding one (`lib`, holding the material `lib/util.py`): placing the start checkpoint
    would replace the material, and the replay would run on other inputs than the signed
    ones. Refused before anything runs."""
    src = tmp_path / "src"
    shutil.copytree(world.src, src)
    (src / "lib").mkdir()
    (src / "lib" / "util.py").write_text("X = 1\n", encoding="utf-8")

    def edit(statement: dict[str, Any]) -> None:
        predicate = statement["predicate"]
        predicate["buildDefinition"]["externalParameters"]["checkpoints"]["directory"] = \
            directory
        materials = predicate["buildDefinition"]["resolvedDependencies"]
        materials.append({"name": "lib/util.py", "digest": {
            "sha256": hashlib.sha256(b"X = 1\n").hexdigest()}})

    attestation = _resign(world.attestation, world.builder,
                          src / "attestations" / "train.intoto.json", edit)
    result = run(["rebuild", attestation, "--source", src, "--checkpoints-from",
                  src / "ckpt", "--key", world.rebuilders["rebuilder-a"].private,
                  "--trust-key", world.builder.public, "--out", tmp_path / "out",
                  "--segments", "1"], cwd=src)
    assert_error(result, 2, f"the checkpoint directory {directory} overlaps the material")
    assert not (tmp_path / "out").exists()


def test_record_refuses_checkpoints_inside_a_material(world: World, tmp_path: Path) -> None:
    """The same overlap at record (checkpoints written into the data the run claims): refused
    before the command runs, so no step is signed that no replay can run."""
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "data" / "rows.csv").write_text("1,2\n", encoding="utf-8")
    (src / "t.py").write_text(TRAINER, encoding="utf-8")
    result = run(["record", "--step", "train", "--key", world.builder.private, "--material",
                  "data", "--product", "model", "--checkpoints", "data/ckpt", "--resume",
                  RESUME, "--", sys.executable, "t.py", "--out", "data/ckpt"], cwd=src)
    assert_error(result, 2, "--checkpoints data/ckpt", "overlaps the material 'data'")
    assert not (src / "model").exists() and not (src / "attestations").exists()
