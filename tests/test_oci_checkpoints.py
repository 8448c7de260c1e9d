"""Checkpoints through an OCI registry: `push --checkpoints` attaches each checkpoint of a
recorded training step to the model, and `rebuild --segments … --checkpoints-from oci://…`
fetches only the checkpoints its segments start and end at, each checked against the signed
log before anything runs.

The example's training step (tests/test_replay.py's, with 4 segments) is recorded and pushed
to the real CNCF Distribution registry once per module. What a replayer fetched is counted in
the registry's own access log, not by the client. What push wrote is read back with plain HTTP
and hashlib. The attacks are made as someone with push access to the repository would make
them: manifests written by hand with plain HTTP, listed in the referrers index.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import KeyPair, assert_error, make_keys, payload_of, read_json, run, write_policy
from oci_servers import SKIP_REASON, RunningRegistry, running_registry

from verifier.formats.checkpoint_log import CheckpointLog, choose_segments, log_from_predicate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "checkpointed-training"
STEPS, EVERY = 40, 10
RESUME = (f"{sys.executable} train.py --data data --from {{checkpoint}} --until {{step}} "
          "--out {out}")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CHECKPOINT = "application/vnd.model-verifier.checkpoint.v1"
_BLOB_GET = re.compile(r'"GET /v2/([^ ]+)/blobs/(sha256:[0-9a-f]{64}) ')


@dataclass(frozen=True)
class World:
    root: Path
    src: Path  # the recorded run, its checkpoints beside it
    bare: Path  # the same source without the checkpoints: a replayer's checkout
    builder: KeyPair
    rebuilders: dict[str, KeyPair]
    log: CheckpointLog
    registry: RunningRegistry
    model: str  # oci://HOST/REPO@sha256:… of the pushed model
    pushed: dict[str, Any]

    @property
    def attestation(self) -> Path:
        return self.src / "attestations" / "train.intoto.json"


def cli(*args: Any, cache: Path, program: str = "model-verifier", cwd: Path | None = None
        ) -> Any:
    return run([*args], cwd=cwd, env={"MODEL_VERIFIER_CACHE": str(cache), "DOCKER_CONFIG":
                                      str(cache.parent / "no-docker-config")}, program=program)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if shutil.which("docker-registry") is None:
        pytest.skip(SKIP_REASON)
    root = tmp_path_factory.mktemp("oci-checkpoints")
    builder = make_keys(root / "keys", "builder")
    rebuilders = {n: make_keys(root / "keys", n) for n in ("rebuilder-a", "rebuilder-b")}
    src = root / "src"
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
                  "--steps", str(STEPS), "--every", str(EVERY), "--out", "ckpt"], cwd=src)
    assert result.code == 0, result.output
    log = log_from_predicate(payload_of(read_json(src / "attestations" / "train.intoto.json"))
                             ["predicate"], "test")
    assert log is not None and len(log.segments) == STEPS // EVERY
    bare = root / "bare"
    shutil.copytree(src, bare, ignore=shutil.ignore_patterns("ckpt"))
    with running_registry(root / "registry", accesslog=True) as registry:
        result = cli("push", src / "model", f"oci://{registry.host}/acme/trained:v1",
                     "--attestations", src / "attestations", "--checkpoints", src / "ckpt",
                     "--plain-http", "--json", cache=root / "push-cache")
        assert result.code == 0, result.output
        pushed = json.loads(result.stdout)
        yield World(root, src, bare, builder, rebuilders, log, registry, pushed["reference"],
                    pushed)


def file_digests(checkpoint: Path) -> dict[str, str]:
    return {p.relative_to(checkpoint).as_posix():
            f"sha256:{hashlib.sha256(p.read_bytes()).hexdigest()}"
            for p in sorted(checkpoint.rglob("*")) if p.is_file()}


def blob_gets(world: World, since: int) -> list[str]:
    """The blobs the registry served since byte `since` of its access log."""
    text = (world.root / "registry" / "registry.log").read_bytes()[since:].decode()
    return [m.group(2) for m in _BLOB_GET.finditer(text)]


def log_size(world: World) -> int:
    return (world.root / "registry" / "registry.log").stat().st_size


def replay(world: World, rebuilder: str, cache: Path, *choice: str, source: Path | None = None,
           model: str | None = None, out: str = "rebuilds") -> Any:
    source = source or world.bare
    return cli("rebuild", world.attestation, "--source", source, "--key",
               world.rebuilders[rebuilder].private, "--trust-key", world.builder.public,
               "--out", world.root / out, *choice, "--checkpoints-from", model or world.model,
               "--plain-http", cache=cache, cwd=source)


def test_push_attaches_each_checkpoint_as_a_referrer_with_its_files(world: World) -> None:
    digest = world.model.split("@", 1)[1]
    index = requests.get(world.registry.url(f"acme/trained/manifests/sha256-{digest[7:]}"),
                         headers={"Accept": INDEX}, timeout=10).json()
    listed = [m for m in index["manifests"] if m.get("artifactType") == CHECKPOINT]
    assert len(listed) == len(world.log.entries)
    by_name = {}
    for descriptor in listed:
        response = requests.get(world.registry.url(f"acme/trained/manifests/"
                                                   f"{descriptor['digest']}"),
                                headers={"Accept": MANIFEST}, timeout=10)
        assert f"sha256:{hashlib.sha256(response.content).hexdigest()}" == descriptor["digest"]
        manifest = response.json()
        assert manifest["subject"]["digest"] == digest
        by_name[manifest["annotations"]["dev.model-verifier.checkpoint.name"]] = manifest
    for entry in world.log.entries:
        manifest = by_name[entry.name]
        assert manifest["annotations"]["dev.model-verifier.checkpoint.dirHash"] == entry.dir_hash
        assert manifest["annotations"]["dev.model-verifier.checkpoint.step"] == str(entry.step)
        assert {layer["annotations"]["org.opencontainers.image.title"]: layer["digest"]
                for layer in manifest["layers"]} == file_digests(world.src / "ckpt" / entry.name)
    # Attaching them again adds nothing and uploads nothing.
    result = cli("attach", world.model, "--checkpoints", world.src / "ckpt", "--plain-http",
                 "--json", cache=world.root / "push-cache")
    assert result.code == 0, result.output
    again = json.loads(result.stdout)["checkpoints"]
    assert {c["status"] for c in again} == {"already attached"}
    assert sum(c["uploaded_bytes"] for c in again) == 0


def test_two_rebuilders_replay_from_the_registry_fetching_only_what_they_need(
        world: World) -> None:
    layers = {e.name: set(file_digests(world.src / "ckpt" / e.name).values())
              for e in world.log.entries}
    for index, name in enumerate(sorted(world.rebuilders)):
        seed = f"{index + 1:02x}" * 32
        chosen = choose_segments(world.log, bytes.fromhex(seed), 2)
        needed = {e.name for s in chosen for e in (s.start, s.end)}
        assert len(needed) < len(world.log.entries)
        before = log_size(world)
        result = replay(world, name, world.root / f"cache-{name}", "--segments", "2",
                        "--seed", seed)
        assert result.code == 0, result.output
        fetched = set(blob_gets(world, before))
        wanted = set().union(*(layers[n] for n in needed))
        others = set().union(*(layers[e.name] for e in world.log.entries
                               if e.name not in needed)) - wanted
        assert others, "the unneeded checkpoints must have files of their own"
        assert fetched == wanted, (sorted(needed), result.output)
        replay_ = payload_of(read_json(world.root / "rebuilds" / name /
                                       "train.replay.intoto.json"))["predicate"]["replay"]
        assert [s["verdict"] for s in replay_["segments"]] == ["MATCH", "MATCH"]
    # Replayed again with the same cache: every blob is re-hashed there, none fetched again.
    before = log_size(world)
    result = replay(world, "rebuilder-a", world.root / "cache-rebuilder-a", "--segments", "2",
                    "--seed", "01" * 32, out="again")
    assert result.code == 0, result.output
    assert blob_gets(world, before) == []
    policy = write_policy(world.root / "policy.yaml", {
        "version": 1,
        "signers": {"builder": {"key": str(world.builder.public)},
                    **{n: {"key": str(k.public)} for n, k in world.rebuilders.items()}},
        "sources": [{"pattern": "*.py", "unpinned": True}],
        "steps": [{"name": "make-data", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["make-data"]}],
        "rebuild": {"quorum": 2, "rebuilders": sorted(world.rebuilders),
                    "replay": {"train": {"segments": 2}}},
    })
    result = run([world.src / "model" / "weights.safetensors", "--policy", policy,
                  "--attestations", world.src / "attestations",
                  "--attestations", world.root / "rebuilds"], program="verify-model")
    assert result.code == 0, result.output
    assert "segments replayed by rebuilder-a, rebuilder-b" in result.output


# --- a poisoned registry --------------------------------------------------------------------

def _upload(world: World, repo: str, data: bytes) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    started = requests.post(world.registry.url(f"{repo}/blobs/uploads/"), timeout=10)
    assert started.status_code == 202
    location = started.headers["Location"]
    separator = "&" if "?" in location else "?"
    if location.startswith("/"):
        location = f"http://{world.registry.host}{location}"
    done = requests.put(f"{location}{separator}digest={digest}", data=data, timeout=10,
                        headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def _attach_by_hand(world: World, repo: str, subject: dict[str, Any], name: str,
                    dir_hash: str, files: dict[str, bytes]) -> None:
    """What an attacker with push access does: a checkpoint manifest of their making, listed
    first in the model's referrers index."""
    empty = _upload(world, repo, b"{}")
    layers = [{"mediaType": "application/vnd.cncf.model.weight.v1.raw",
               **_upload(world, repo, data),
               "annotations": {"org.opencontainers.image.title": path}}
              for path, data in files.items()]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": CHECKPOINT,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": layers, "subject": subject,
        "annotations": {"dev.model-verifier.checkpoint.name": name,
                        "dev.model-verifier.checkpoint.step": str(int(name[-6:])),
                        "dev.model-verifier.checkpoint.dirHash": dir_hash}}).encode()
    digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    response = requests.put(world.registry.url(f"{repo}/manifests/{digest}"), data=manifest,
                            headers={"Content-Type": MANIFEST}, timeout=10)
    assert response.status_code == 201, response.text
    tag = f"sha256-{subject['digest'][7:]}"
    index = requests.get(world.registry.url(f"{repo}/manifests/{tag}"),
                         headers={"Accept": INDEX}, timeout=10).json()
    index["manifests"].insert(0, {"mediaType": MANIFEST, "digest": digest,
                                  "size": len(manifest), "artifactType": CHECKPOINT,
                                  "annotations": {"dev.model-verifier.checkpoint.name": name}})
    response = requests.put(world.registry.url(f"{repo}/manifests/{tag}"),
                            data=json.dumps(index).encode(),
                            headers={"Content-Type": INDEX}, timeout=10)
    assert response.status_code == 201, response.text


def _files(world: World, index: int) -> dict[str, bytes]:
    checkpoint = world.src / "ckpt" / world.log.entries[index].name
    return {p.name: p.read_bytes() for p in sorted(checkpoint.iterdir())}


def _swapped(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    files = _files(world, index)
    files["weights.safetensors"], files["optimizer.safetensors"] = (
        files["optimizer.safetensors"], files["weights.safetensors"])
    return world.log.entries[index].dir_hash, files


def _lying_dirhash(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    # Another checkpoint's files, under the name and dirHash the log gives this one.
    return world.log.entries[index].dir_hash, _files(world, index + 1)


def _extra_file(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    return world.log.entries[index].dir_hash, {**_files(world, index),
                                               "sitecustomize.py": b"import os\n"}


def _other_dirhash(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    # Honest about its own (other) files: the log's dirHash is not what it says it holds.
    return world.log.entries[index + 1].dir_hash, _files(world, index + 1)


def _climbing_title(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    # A layer whose file lies outside the checkpoint's directory.
    files = _files(world, index)
    return world.log.entries[index].dir_hash, {**files, "../weights.safetensors":
                                               files["weights.safetensors"]}


def _file_inside_a_file(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    # Two layers whose paths clash: one file's path is the other's directory.
    files = _files(world, index)
    return world.log.entries[index].dir_hash, {**files, "weights.safetensors/x": b"x"}


def _oms_signature(world: World, index: int) -> tuple[str, dict[str, bytes]]:
    # An OMS model.sig beside the files (signed by anyone): a dirHash leaves it out, so it
    # would reach the replay as bytes nothing signed.
    copy = world.root / f"oms-{index}"
    if not copy.exists():
        shutil.copytree(world.src / "ckpt" / world.log.entries[index].name, copy)
        result = cli("sign-model", copy, "--key", world.rebuilders["rebuilder-b"].private,
                     cache=world.root / "oms-cache")
        assert result.code == 0, result.output
    return world.log.entries[index].dir_hash, {**_files(world, index),
                                               "model.sig": (copy / "model.sig").read_bytes()}


@pytest.mark.parametrize("attack", [_swapped, _lying_dirhash, _extra_file, _other_dirhash,
                                    _climbing_title, _file_inside_a_file, _oms_signature])
@pytest.mark.parametrize("end", [False, True], ids=["start", "end"])
def test_a_poisoned_checkpoint_is_refused_naming_it(world: World, attack: Any,
                                                    end: bool) -> None:
    """The segment 10->20 is replayed with its start or its end checkpoint poisoned: the end
    one too is refused before anything runs (a replay never reads it when it matches)."""
    name = f"{attack.__name__.strip('_').replace('_', '-')}-{'end' if end else 'start'}"
    repo = f"poison/{name}"
    cache = world.root / f"cache-{name}"
    result = cli("push", world.src / "model", f"oci://{world.registry.host}/{repo}:v1",
                 "--plain-http", "--json", cache=cache)
    assert result.code == 0, result.output
    model = json.loads(result.stdout)["reference"]
    digest = model.split("@", 1)[1]
    subject = {"mediaType": MANIFEST, "digest": digest, "size": len(requests.get(
        world.registry.url(f"{repo}/manifests/{digest}"), headers={"Accept": MANIFEST},
        timeout=10).content)}
    # The honest checkpoints but the one under attack, then the attacker's in its place.
    index = 2 if end else 1
    target = world.log.entries[index]
    honest = world.root / f"honest-{name}"
    shutil.copytree(world.src / "ckpt", honest, ignore=shutil.ignore_patterns(target.name))
    result = cli("attach", model, "--checkpoints", honest, "--plain-http", cache=cache)
    assert result.code == 0, result.output
    dir_hash, files = attack(world, index)
    _attach_by_hand(world, repo, subject, target.name, dir_hash, files)
    result = replay(world, "rebuilder-a", cache, "--segment", str(world.log.entries[2].step),
                    model=model, out=f"poisoned-{name}")
    assert_error(result, 2, f"checkpoint ckpt/{target.name}", "signed log", "nothing was run")
    assert not (world.root / f"poisoned-{name}").exists()


def test_a_poisoned_manifest_beside_the_honest_one_changes_nothing(world: World) -> None:
    """The annotations only find candidates: a forged one listed first is passed over for the
    honest one, whose files hash to the log's dirHash."""
    repo = "poison/beside"
    cache = world.root / "cache-beside"
    result = cli("push", world.src / "model", f"oci://{world.registry.host}/{repo}:v1",
                 "--checkpoints", world.src / "ckpt", "--plain-http", "--json", cache=cache)
    assert result.code == 0, result.output
    model = json.loads(result.stdout)["reference"]
    digest = model.split("@", 1)[1]
    subject = {"mediaType": MANIFEST, "digest": digest, "size": len(requests.get(
        world.registry.url(f"{repo}/manifests/{digest}"), headers={"Accept": MANIFEST},
        timeout=10).content)}
    dir_hash, files = _lying_dirhash(world, 1)
    _attach_by_hand(world, repo, subject, world.log.entries[1].name, dir_hash, files)
    result = replay(world, "rebuilder-b", cache, "--segment", str(world.log.entries[2].step),
                    model=model, out="beside")
    assert result.code == 0, result.output
    assert "MATCH" in result.output


def test_a_checkpoint_directory_that_is_not_one_refuses_the_push_before_anything_is_uploaded(
        world: World) -> None:
    bad = world.root / "bad-ckpt"
    shutil.copytree(world.src / "ckpt", bad)
    (bad / "latest").mkdir()  # a name without a step number
    result = cli("push", world.src / "model", f"oci://{world.registry.host}/acme/bad:v1",
                 "--checkpoints", bad, "--plain-http", cache=world.root / "bad-cache")
    assert_error(result, 2, "latest", "step number")
    listed = requests.get(world.registry.url("acme/bad/tags/list"), timeout=10)
    assert listed.status_code == 404, listed.text
