"""Segment replay: `rebuild --segments` replays chosen segments of a checkpointed training step,
and `verify-model` counts only segments a rebuilder really replayed from this run's signed log.

One honest run and three forged runs (weights perturbed once, one segment's learning rate
changed, one batch swapped) of a real numpy training script (examples/checkpointed-training) are
recorded once per module, each as the step `train` with a signed checkpoint log of 6 checkpoints
(steps 0, 20, …, 100: 5 segments). Rebuilders' replays are made once per module too; tests that
forge a replay claim edit a copy and re-sign it with the rebuilder's own key, as a dishonest
rebuilder would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

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

from verifier.formats.checkpoint_log import CheckpointLog, choose_segments, log_from_predicate

SCHEMA = Path(__file__).parents[1] / "attestations" / "rebuild-statement.schema.json"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "checkpointed-training"
STEPS, EVERY = 100, 20
RESUME = (f"{sys.executable} train.py --data data --from {{checkpoint}} --until {{step}} "
          "--out {out}")
SEED = "00" * 32
CURRENT_LOG: list[CheckpointLog] = []  # the log a claim edit recomputes a choice from


@dataclass(frozen=True)
class Run:
    src: Path
    attestation: Path
    log: CheckpointLog
    recorded: str = ""  # what `record --checkpoints` printed

    @property
    def model(self) -> Path:
        return self.src / "model" / "weights.safetensors"


def _record(root: Path, name: str, builder: KeyPair, forge: dict[str, str]) -> Run:
    """The example's two steps recorded with the real `record`, the training step with
    --checkpoints; a forger sets FORGE_* while the checkpoints are made (never signed)."""
    src = root / name
    src.mkdir()
    for script in ("make_data.py", "train.py"):
        shutil.copy(EXAMPLE / script, src / script)
    result = run(["record", "--step", "make-data", "--key", builder.private, "--material",
                  "make_data.py", "--product", "data", "--", sys.executable, "make_data.py"],
                 cwd=src)
    assert result.code == 0, result.output
    result = run(["record", "--step", "train", "--key", builder.private, "--material", "data",
                  "--material", "train.py", "--product", "model", "--checkpoints", "ckpt",
                  "--resume", RESUME, "--", sys.executable, "train.py", "--data", "data",
                  "--steps", str(STEPS), "--every", str(EVERY), "--out", "ckpt"],
                 cwd=src, env=forge)
    assert result.code == 0, result.output
    attestation = src / "attestations" / "train.intoto.json"
    log = log_from_predicate(payload_of(read_json(attestation))["predicate"], "test")
    assert log is not None and len(log.segments) == STEPS // EVERY
    assert len(log.entries) == STEPS // EVERY + 1  # what the module docstring says
    return Run(src, attestation, log, result.output)


@dataclass(frozen=True)
class World:
    root: Path
    builder: KeyPair
    rebuilders: dict[str, KeyPair]
    honest: Run
    forged: dict[str, Run]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("replay")
    builder = make_keys(root / "keys", "builder")
    rebuilders = {n: make_keys(root / "keys", n) for n in ("rebuilder-a", "rebuilder-b")}
    honest = _record(root, "honest", builder, {})
    forged = {
        "perturbed": _record(root, "perturbed", builder, {"FORGE_PERTURB_AT": "50"}),
        "lr": _record(root, "lr", builder, {"FORGE_LR_AT": "40"}),
        "batch": _record(root, "batch", builder, {"FORGE_SWAP_BATCH_AT": "90"}),
    }
    return World(root, builder, rebuilders, honest, forged)


def schema_errors(statement: Any) -> list[str]:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    checker = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in checker.iter_errors(statement)]


def replay(world: World, run_: Run, rebuilder: str, *choice: str, out: str = "rebuilds",
           extra: tuple[str, ...] = ()) -> Any:
    return run(["rebuild", run_.attestation, "--source", run_.src, "--key",
                world.rebuilders[rebuilder].private, "--trust-key", world.builder.public,
                "--out", run_.src / out, *choice, *extra], cwd=run_.src)


def policy(world: World, path: Path, segments: int = 2, **replay_rule: Any) -> Path:
    return write_policy(path, {
        "version": 1,
        "signers": {"builder": {"key": str(world.builder.public)},
                    **{n: {"key": str(k.public)} for n, k in world.rebuilders.items()}},
        "sources": [{"pattern": "*.py", "unpinned": True}],
        "steps": [{"name": "make-data", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["make-data"]}],
        "rebuild": {"quorum": 2, "rebuilders": sorted(world.rebuilders),
                    "replay": {"train": {"segments": segments, **replay_rule}}},
    })


def verify(world: World, run_: Run, policy_path: Path, *attestations: Path) -> Any:
    args: list[Any] = [run_.model, "--policy", policy_path, "--attestations",
                       run_.src / "attestations"]
    for path in attestations:
        args += ["--attestations", path]
    return run(args, program="verify-model")


def replay_file(run_: Run, rebuilder: str, out: str = "rebuilds") -> Path:
    return run_.src / out / rebuilder / "train.replay.intoto.json"


@pytest.fixture(scope="module")
def honest_replays(world: World) -> dict[str, Path]:
    """Each rebuilder replays 2 random segments of the honest run (its own seed)."""
    for index, name in enumerate(sorted(world.rebuilders)):
        result = replay(world, world.honest, name, "--segments", "2", "--seed",
                        f"{index:02x}" * 32)
        assert result.code == 0, result.output
    return {n: replay_file(world.honest, n) for n in world.rebuilders}


def test_honest_run_passes_a_replay_quorum_of_two(world: World,
                                                  honest_replays: dict[str, Path]) -> None:
    for name, path in honest_replays.items():
        bundle = read_json(path)
        assert dsse_verifies(bundle, world.rebuilders[name].public.read_bytes())
        assert schema_errors(payload_of(bundle)) == []
        replay_ = payload_of(bundle)["predicate"]["replay"]
        seed = bytes.fromhex(replay_["selection"]["seed"])
        assert [s["index"] for s in replay_["segments"]] == [
            s.index for s in choose_segments(world.honest.log, seed, 2)]
        assert all(s["verdict"] == "MATCH" for s in replay_["segments"])
        assert replay_["log"]["root"] == world.honest.log.root
    result = verify(world, world.honest, policy(world, world.root / "p-honest.yaml"),
                    *honest_replays.values())
    assert result.code == 0, result.output
    assert "segments replayed by rebuilder-a, rebuilder-b; all reproduced bit for bit" \
        in result.output
    assert "escapes this sample with probability" in result.output
    # The model's bytes are also the last checkpoint's: the note names the folder verified.
    assert "of the directory model that step 'train'" in result.output, result.output


def test_the_checkpoint_directory_is_no_stray_file_of_the_step(world: World) -> None:
    # The checkpoints are attested (the log and the products), so record must not tell the
    # user to remove or declare the directory they are in.
    assert "ckpt" in world.honest.recorded
    assert "beside its products" not in world.honest.recorded, world.honest.recorded


def test_a_quorum_asks_more_segments_than_were_replayed(
        world: World, honest_replays: dict[str, Path]) -> None:
    result = verify(world, world.honest, policy(world, world.root / "p-3.yaml", segments=3),
                    *honest_replays.values())
    assert result.code == 1, result.output
    assert "fewer than the 3" in result.output


def test_segments_all_reproduces_the_whole_run(world: World) -> None:
    result = replay(world, world.honest, "rebuilder-a", "--segments", "all", out="all")
    assert result.code == 0, result.output
    replay_ = payload_of(read_json(replay_file(world.honest, "rebuilder-a", "all")))
    assert [s["index"] for s in replay_["predicate"]["replay"]["segments"]] == list(
        range(STEPS // EVERY))
    assert replay_["predicate"]["reproduced"] is True
    assert {s["name"] for s in replay_["subject"]} == {
        f"ckpt/{e.name}" for e in world.honest.log.entries[1:]}


@pytest.mark.parametrize(("forgery", "end"), [("perturbed", 60), ("lr", 40), ("batch", 100)])
def test_a_forged_segment_differs_and_fails_verification(world: World, forgery: str,
                                                         end: int) -> None:
    run_ = world.forged[forgery]
    for name in world.rebuilders:
        result = replay(world, run_, name, "--segment", str(end))
        assert result.code == 1, result.output
        assert "DIFFERS" in result.output and "ratio" in result.output
        bundle = read_json(replay_file(run_, name))
        assert dsse_verifies(bundle, world.rebuilders[name].public.read_bytes())
        assert schema_errors(payload_of(bundle)) == []
        segment = payload_of(bundle)["predicate"]["replay"]["segments"][0]
        assert segment["verdict"] == "DIFFERS"
        assert segment["update"]["ratio"] > 0 and segment["tensors"][0]["ratio"] > 0
        assert "weights.safetensors" in {t["file"] for t in segment["tensors"]}
    result = verify(world, run_, policy(world, world.root / f"p-{forgery}.yaml", segments=1),
                    *(replay_file(run_, n) for n in world.rebuilders))
    assert result.code == 1, result.output
    assert f"segment {end - EVERY}->{end} DIFFERS" in result.output
    # The honest segments of the same forged run still match: the forgery is localised.
    other = replay(world, run_, "rebuilder-a", "--segment", "20", out="other")
    assert other.code == 0, other.output


def test_a_checkpoint_altered_after_signing_is_refused(world: World, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(world.honest.src, src)
    weights = src / "ckpt" / "step-000020" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    altered = Run(src, src / "attestations" / "train.intoto.json", world.honest.log)
    result = replay(world, altered, "rebuilder-a", "--segment", "40", out="x")
    assert_error(result, 2, "ckpt/step-000020", "does not match the signed log",
                 "nothing was run")
    assert not (src / "x").exists()


def _resign(world: World, source: Path, rebuilder: str, target: Path,
            edit: Any) -> Path:
    statement = payload_of(read_json(source))
    edit(statement["predicate"]["replay"])
    payload = json.dumps(statement, sort_keys=True).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, sign_bundle(payload, INTOTO, world.rebuilders[rebuilder].private))
    assert dsse_verifies(read_json(target), world.rebuilders[rebuilder].public.read_bytes())
    return target


def _foreign_root(replay_: dict[str, Any]) -> None:
    replay_["log"]["root"] = hashlib.sha256(b"another run").hexdigest()


def _unlogged_segment(replay_: dict[str, Any]) -> None:
    replay_["segments"].append({**replay_["segments"][0], "index": 7})


def _cherry_picked(replay_: dict[str, Any]) -> None:
    # The segments it replayed, claimed under a seed that chooses others.
    claimed = [s["index"] for s in replay_["segments"]]
    seed = next(bytes([n]) * 32 for n in range(256) if [
        s.index for s in choose_segments(CURRENT_LOG[0], bytes([n]) * 32, 2)] != claimed)
    replay_["selection"]["seed"] = seed.hex()


def _listed_twice(replay_: dict[str, Any]) -> None:
    first = replay_["segments"][0]
    replay_["segments"] = [first, first]
    replay_["selection"] = {"mode": "named", "requested": 2}


def _wrong_end(replay_: dict[str, Any]) -> None:
    replay_["segments"][0]["end"]["digest"]["dirHash"] = "0" * 64


def _match_of_other_bytes(replay_: dict[str, Any]) -> None:
    # "MATCH", while what it says the replay wrote is not the logged checkpoint.
    replay_["segments"][0]["replayed"]["dirHash"] = "1" * 64


@pytest.mark.parametrize("edit", [_foreign_root, _unlogged_segment, _cherry_picked,
                                  _listed_twice, _wrong_end, _match_of_other_bytes])
def test_a_rebuilder_cannot_count_segments_it_did_not_replay(
        world: World, honest_replays: dict[str, Path], tmp_path: Path, edit: Any) -> None:
    CURRENT_LOG[:] = [world.honest.log]
    forged = _resign(world, honest_replays["rebuilder-b"], "rebuilder-b",
                     tmp_path / "rebuilder-b" / "train.replay.intoto.json", edit)
    result = verify(world, world.honest, policy(world, tmp_path / "p.yaml"),
                    honest_replays["rebuilder-a"], forged)
    assert result.code == 1, result.output
    assert "1 of 2 required independent replays" in result.output
    assert_no_traceback(result)


def test_the_claims_above_count_when_left_alone(world: World, honest_replays: dict[str, Path],
                                                tmp_path: Path) -> None:
    """The control for the test above: re-signing without an edit still counts."""
    same = _resign(world, honest_replays["rebuilder-b"], "rebuilder-b",
                   tmp_path / "rebuilder-b" / "train.replay.intoto.json", lambda r: None)
    result = verify(world, world.honest, policy(world, tmp_path / "p.yaml"),
                    honest_replays["rebuilder-a"], same)
    assert result.code == 0, result.output


def test_a_loose_tolerance_is_refused(world: World, tmp_path: Path) -> None:
    result = replay(world, world.honest, "rebuilder-a", "--segments", "1",
                    extra=("--update-rtol", "0.5"), out="loose")
    assert_error(result, 2, "forged update could hide in it")
    found = run(["policy", "check", policy(world, tmp_path / "p.yaml",
                                           match={"update_rtol": 0.3})])
    assert found.code != 0 and "forged update could hide in it" in found.output


def test_a_template_escaping_the_workspace_is_refused(world: World, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(world.honest.src, src)
    attestation = src / "attestations" / "train.intoto.json"
    statement = payload_of(read_json(attestation))
    predicate = statement["predicate"]
    predicate["buildDefinition"]["externalParameters"]["checkpoints"]["resume"] = [
        sys.executable, "train.py", "--from", "{checkpoint}", "--until", "{step}", "--out",
        "../../{out}"]
    payload = json.dumps(statement, sort_keys=True).encode()
    write_json(attestation, sign_bundle(payload, INTOTO, world.builder.private))
    result = replay(world, Run(src, attestation, world.honest.log), "rebuilder-a",
                    "--segments", "1", out="x")
    assert_error(result, 2, "leaves the workspace")


def test_a_resume_command_that_writes_nothing_fails_with_its_exit_code(
        world: World, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(world.honest.src, src)
    attestation = src / "attestations" / "train.intoto.json"
    statement = payload_of(read_json(attestation))
    predicate = statement["predicate"]
    # Exits 0 having written nothing; exits 3 having written nothing.
    for resume, code in ((["{checkpoint}", "{step}", "{out}"], 0),
                         (["{checkpoint}", "{step}", "{out}", "sys.exit(3)"], 3)):
        predicate["buildDefinition"]["externalParameters"]["checkpoints"]["resume"] = [
            sys.executable, "-c", "import sys; exec(sys.argv[-1]) if len(sys.argv) > 4 else 0",
            *resume]
        byproduct = predicate["runDetails"]["byproducts"][-1]
        assert byproduct["name"] == "checkpoint-log"
        payload = json.dumps(statement, sort_keys=True).encode()
        write_json(attestation, sign_bundle(payload, INTOTO, world.builder.private))
        result = replay(world, Run(src, attestation, world.honest.log), "rebuilder-a",
                        "--segments", "1", out="x", extra=("--force",))
        assert result.code == 1, result.output
        assert f"FAILED (exit {code})" in result.output
        written = payload_of(read_json(src / "x" / "rebuilder-a" /
                                         "train.replay.intoto.json"))
        assert schema_errors(written) == []
        segment = written["predicate"]["replay"]["segments"][0]
        assert segment["verdict"] == "FAILED" and segment["exitCode"] == code
        assert "replayed" not in segment


def test_the_seed_is_drawn_at_rebuild_time(world: World) -> None:
    seeds = set()
    for out in ("s1", "s2"):
        result = replay(world, world.honest, "rebuilder-a", "--segments", "1", out=out)
        assert result.code == 0, result.output
        seeds.add(payload_of(read_json(replay_file(world.honest, "rebuilder-a", out)))[
            "predicate"]["replay"]["selection"]["seed"])
    assert len(seeds) == 2 and SEED not in seeds
    assert all(len(s) == 64 for s in seeds)


def test_audit_renders_the_replay_quorum_and_names_a_claim_that_counts_for_nothing(
        world: World, honest_replays: dict[str, Path], tmp_path: Path) -> None:
    cherry = _resign(world, honest_replays["rebuilder-b"], "rebuilder-b",
                     tmp_path / "forged" / "train.replay.intoto.json", _foreign_root)
    result = run(["audit", world.honest.src / "attestations", *honest_replays.values(), cherry,
                  "--policy", policy(world, tmp_path / "p.yaml"), "--format", "json"])
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    [train] = [s for s in report["steps"] if s["step"] == "train"]
    assert train["quorum"]["matching"] == 2
    assert "segments replayed by rebuilder-a, rebuilder-b" in train["quorum"]["summary"]
    verdicts = {r["files"][0]: r["verdict"] for r in report["rebuilds"]}
    assert verdicts[str(cherry)] == "ignored"
    assert {verdicts[str(p)] for p in honest_replays.values()} == {"matched"}
    assert any(f["kind"] == "replay-ignored" and "another checkpoint log" in f["message"]
               for f in report["findings"])
    text = run(["audit", world.honest.src / "attestations", *honest_replays.values(),
                "--policy", policy(world, tmp_path / "p.yaml")])
    assert "segments replayed by rebuilder-a, rebuilder-b" in text.stdout


@pytest.fixture(scope="module")
def nudged(world: World) -> Run:
    """A run whose weights were nudged by 1e-9 once after update 50: far inside a tolerance of
    a hundredth of the update, yet not bit for bit."""
    return _record(world.root, "nudged", world.builder,
                   {"FORGE_PERTURB_AT": "50", "FORGE_PERTURB_SCALE": "1e-9"})


def test_a_tolerance_relative_to_the_update_is_signed_and_rejudged_by_the_policy(
        world: World, nudged: Run, tmp_path: Path) -> None:
    # A seed drawing the nudged segment (a named one would count towards no quorum).
    seed = next(bytes([n]) * 32 for n in range(256)
                if [s.end.step for s in choose_segments(nudged.log, bytes([n]) * 32, 1)] == [60])
    for name in world.rebuilders:
        result = replay(world, nudged, name, "--segments", "1", "--seed", seed.hex(),
                        extra=("--update-rtol", "0.01"))
        assert result.code == 0, result.output
        assert "WITHIN-TOLERANCE" in result.output
    segment = payload_of(read_json(replay_file(nudged, "rebuilder-a")))["predicate"]["replay"][
        "segments"][0]
    assert segment["verdict"] == "WITHIN-TOLERANCE" and 0 < segment["update"]["ratio"] < 1e-6
    assert segment["files"] == []
    claims = [replay_file(nudged, n) for n in world.rebuilders]
    # The policy grants a tolerance: the signed ratios are within it.
    loose = verify(world, nudged, policy(world, tmp_path / "tol.yaml", segments=1,
                                         match={"update_rtol": 0.001}), *claims)
    assert loose.code == 0, loose.output
    assert "all within 0.001 of their update" in loose.output
    # The policy grants none: the same claims are dissent, naming the segment.
    exact = verify(world, nudged, policy(world, tmp_path / "exact.yaml", segments=1), *claims)
    assert exact.code == 1, exact.output
    assert "segment 40->60 WITHIN-TOLERANCE" in exact.output
    # A tighter tolerance than the ratios: dissent as well.
    tight = verify(world, nudged, policy(world, tmp_path / "tight.yaml", segments=1,
                                         match={"update_rtol": 1e-12}), *claims)
    assert tight.code == 1, tight.output


def test_one_rebuilder_finding_a_forged_segment_fails_under_max_dissent_zero(
        world: World, tmp_path: Path) -> None:
    """rebuilder-a's random sample misses the forgery and matches; rebuilder-b targets it."""
    run_ = world.forged["perturbed"]
    misses = next(bytes([n]) * 32 for n in range(256) if all(
        s.end.step != 60 for s in choose_segments(run_.log, bytes([n]) * 32, 2)))
    assert replay(world, run_, "rebuilder-a", "--segments", "2", "--seed", misses.hex(),
                  out="dissent").code == 0
    assert replay(world, run_, "rebuilder-b", "--segment", "60", out="dissent").code == 1
    claims = [replay_file(run_, n, "dissent") for n in world.rebuilders]
    rule = policy(world, tmp_path / "p.yaml", segments=2)
    data = {**__import__("yaml").safe_load(rule.read_text())}
    data["rebuild"]["quorum"] = 1
    write_policy(rule, data)
    assert verify(world, run_, rule, *claims).code == 0  # one match is the quorum of one
    data["rebuild"]["max_dissent"] = 0
    write_policy(rule, data)
    result = verify(world, run_, rule, *claims)
    assert result.code == 1, result.output
    assert "more than max_dissent 0: segment 40->60 DIFFERS (replayed by rebuilder-b)" \
        in result.output


def test_a_resume_command_that_writes_elsewhere_fails(world: World, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(world.honest.src, src)
    attestation = src / "attestations" / "train.intoto.json"
    statement = payload_of(read_json(attestation))
    checkpoints = statement["predicate"]["buildDefinition"]["externalParameters"]["checkpoints"]
    # It writes a checkpoint, but under another name than the logged one.
    checkpoints["resume"] = [sys.executable, "train.py", "--data", "data", "--from",
                             "{checkpoint}", "--until", "{step}1", "--out", "{out}"]
    write_json(attestation, sign_bundle(json.dumps(statement, sort_keys=True).encode(), INTOTO,
                                        world.builder.private))
    result = replay(world, Run(src, attestation, world.honest.log), "rebuilder-a",
                    "--segment", "20", out="x")
    assert result.code == 1, result.output
    assert "FAILED (exit 0)" in result.output and "wrote no {out}/step-000020/" in result.output


@pytest.mark.parametrize(("choice", "fragment"), [
    (["--segments", "0"], "--segments '0'"),
    (["--segments", "2", "--segment", "20"], "give one"),
    (["--segment", "25"], "no segment of the log"),
    (["--segments", "2", "--seed", "xyz"], "--seed 'xyz'"),
    (["--segments", "all", "--seed", "00"], "--seed goes with --segments K"),
])
def test_a_choice_of_segments_that_means_nothing_is_one_sentence(
        world: World, choice: list[str], fragment: str) -> None:
    result = replay(world, world.honest, "rebuilder-a", *choice, out="bad")
    assert_error(result, 2, fragment)
    assert not (world.honest.src / "bad").exists()


def test_the_update_relative_distance_is_what_numpy_says(tmp_path: Path) -> None:
    """compare_checkpoints against a direct numpy computation: per tensor and overall, a NaN
    equal bit for bit is no distance, an integer tensor that differs is infinitely far, and a
    non-tensor file that differs, or is missing, is named."""
    import numpy as np
    from safetensors.numpy import save_file

    from verifier.diff.update import compare_checkpoints

    rng = np.random.default_rng(5)
    start = {"w": rng.standard_normal((4, 8)).astype(np.float32),
             "n": np.array([np.nan, 1.0], np.float32), "step": np.array([3], np.int64)}
    end = {"w": start["w"] + np.float32(0.5), "n": np.array([np.nan, 2.0], np.float32),
           "step": np.array([4], np.int64)}
    replayed = {"w": end["w"] + rng.standard_normal((4, 8)).astype(np.float32) * np.float32(0.01),
                "n": end["n"].copy(), "step": np.array([5], np.int64)}
    for name, tensors, state in (("s", start, "a"), ("e", end, "b"), ("r", replayed, "c")):
        (tmp_path / name).mkdir()
        save_file(tensors, str(tmp_path / name / "weights.safetensors"))
        (tmp_path / name / "state.json").write_text(state)
    (tmp_path / "e" / "only-logged.txt").write_text("x")
    found = compare_checkpoints(tmp_path / "r", tmp_path / "e", tmp_path / "s")
    by_name = {t.tensor: t for t in found.tensors}
    distance = np.linalg.norm(replayed["w"].astype(np.float64) - end["w"])
    size_w = np.linalg.norm(end["w"].astype(np.float64) - start["w"])
    assert by_name["w"].ratio == pytest.approx(distance / size_w, rel=1e-12)
    assert "n" not in by_name  # NaN equal bit for bit, 2.0 equal: no distance at all
    assert by_name["step"].ratio == float("inf")
    overall = np.sqrt(size_w ** 2 + 1.0)  # n moved 1.0 -> 2.0 (the NaN is no update)
    assert found.update_size == pytest.approx(overall, rel=1e-12)
    assert found.replay_distance == pytest.approx(distance, rel=1e-12)
    assert found.files == [{"name": "only-logged.txt", "verdict": "MISSING"},
                           {"name": "state.json", "verdict": "DIFFERS"}]
    assert not found.within(0.1)


def test_the_vsa_names_a_segment_replay_quorum_apart_from_a_whole_rebuild(
        world: World, honest_replays: dict[str, Path], tmp_path: Path) -> None:
    vsa = tmp_path / "vsa.intoto.json"
    result = run([world.honest.model, "--policy", policy(world, tmp_path / "p.yaml"),
                  "--attestations", world.honest.src / "attestations",
                  *[a for p in honest_replays.values() for a in ("--attestations", p)],
                  "--vsa", vsa, "--key", world.rebuilders["rebuilder-a"].private],
                 program="verify-model")
    assert result.code == 0, result.output
    bundle = read_json(vsa)
    assert dsse_verifies(bundle, world.rebuilders["rebuilder-a"].public.read_bytes())
    predicate = payload_of(bundle)["predicate"]
    assert predicate["verifiedLevels"] == ["SLSA_BUILD_LEVEL_1",
                                           "MODEL_VERIFIER_SEGMENT_REPLAY_QUORUM_2"]
    # file: URIs (SLSA VSA v1)
    used = {Path(unquote(urlparse(a["uri"]).path)).resolve()
            for a in predicate["inputAttestations"]}
    assert {p.resolve() for p in honest_replays.values()} <= used


def test_a_step_without_a_log_has_nothing_to_replay(world: World) -> None:
    result = run(["rebuild", world.honest.src / "attestations" / "make-data.intoto.json",
                  "--source", world.honest.src, "--key", world.rebuilders["rebuilder-a"].private,
                  "--trust-key", world.builder.public, "--out", world.honest.src / "none",
                  "--segments", "1"], cwd=world.honest.src)
    assert_error(result, 2, "carries a checkpoint log")


def test_json_output_is_the_signed_replay_and_the_messages(world: World) -> None:
    result = replay(world, world.honest, "rebuilder-b", "--segment", "20", "--segment", "20",
                    out="json", extra=("--json",))
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["index"] for s in report["segments"]] == [0]  # named twice, replayed once
    assert report["selection"] == {"mode": "named", "requested": 2}
    assert report["root"] == world.honest.log.root and report["reproduced"] is True
    signed = payload_of(read_json(Path(report["rebuild_attestation"])))["predicate"]["replay"]
    assert signed["segments"][0]["replayed"] == {"dirHash": world.honest.log.entries[1].dir_hash}


def test_text_output_prints_the_replays_notes(world: World) -> None:
    """Where the workspaces came from was in --json alone; the text says it too."""
    shown = replay(world, world.honest, "rebuilder-a", "--segment", "20", out="notes-text")
    assert shown.code == 0, shown.output
    report = replay(world, world.honest, "rebuilder-a", "--segment", "20", out="notes-json",
                    extra=("--json",))
    assert report.code == 0, report.output
    notes = json.loads(report.stdout)["notes"]
    assert notes
    lines = shown.stdout.splitlines()
    segment = next(i for i, line in enumerate(lines) if "segment " in line and "MATCH" in line)
    for note in notes:
        assert f"  {note}" in lines[segment + 1:], shown.stdout
