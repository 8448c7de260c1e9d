"""Every command that reads a path the user (or an attacker who wrote the CI job's inputs)
names gets a FIFO with no writer, `/dev/zero` behind a link, and a link loop, and answers each
with exit 2 and one sentence naming the file: never a hang, never an out-of-memory internal
error. Each case runs the installed console script under a memory limit and a timeout, so the
old behaviour (blocking on the FIFO, reading /dev/zero until memory ran out) fails quickly."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import BIN, Chain, CliResult, assert_error, make_keys, record_step, write_policy

TIMEOUT_S = 20
MEMORY_LIMIT = 3 << 30  # far above what any of these commands needs, far below /dev/zero's
FAKE_DIGEST = "sha256:" + "0" * 64
REGISTRY = "oci://127.0.0.1:9/model"  # never reached: the files are read before the registry


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> CliResult:
    try:
        done = subprocess.run([str(BIN / "model-verifier"), *map(str, args)], cwd=cwd,
                              env={**os.environ, **env},
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[0]} hung on the special file for {TIMEOUT_S} s")
    return CliResult(done.returncode, done.stdout, done.stderr)


def _special(directory: Path, kind: str, name: str) -> Path:
    path = directory / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:  # a link loop: the name leads to itself through a second link
        path.symlink_to(path.with_name(name + ".other"))
        path.with_name(name + ".other").symlink_to(path)
    return path


# (file name the special file takes, arguments around it). `X` marks where it goes; the chain's
# own files fill the other places, so each command reaches the read of X.
Case = Callable[[Chain, Path], list[str | Path]]
CASES: dict[str, tuple[str, Case]] = {
    "verify-bundle bundle": ("b.intoto.json", lambda c, x: [
        "verify-bundle", x, "--artifact", c.artifact, "--key", c.keys("builder").public]),
    "verify-bundle --key": ("k.pub", lambda c, x: [
        "verify-bundle", c.attestation("package"), "--artifact", c.artifact, "--key", x]),
    "verify --policy": ("p.yaml", lambda c, x: [
        "verify", c.artifact, "--policy", x, "--attestations", c.attestations]),
    "verify --attestations": ("a.json", lambda c, x: [
        "verify", c.artifact, "--policy", c.policy, "--attestations", x]),
    "verify --layout": ("root.layout", lambda c, x: [
        "verify", c.artifact, "--layout", x, "--layout-key", c.keys("builder").public,
        "--attestations", c.attestations]),
    "verify-vsa": ("v.json", lambda c, x: [
        "verify-vsa", x, "--artifact", c.artifact, "--key", c.keys("builder").public]),
    "policy check": ("p.yaml", lambda c, x: ["policy", "check", x]),
    "policy init --signer": ("k.pub", lambda c, x: [
        "policy", "init", c.attestations, "--signer", f"builder={x}", "--out",
        c.work / "new-policy.yaml"]),
    "record --key": ("k.key", lambda c, x: [
        "record", "--step", "s", "--key", x, "--product", "out.txt", "--no-trace", "--",
        "true"]),
    "record --key pkcs11: pin-source": ("pin.txt", lambda c, x: [
        "record", "--step", "s", "--key",
        f"pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/none.so&pin-source={x}",
        "--product", "out.txt", "--no-trace", "--", "true"]),
    "contamination --benchmark": ("bench.jsonl", lambda c, x: [
        "contamination", "model.bin", "--benchmark", x, "--digests-from", "attestations",
        "--policy", "policy.yaml", "--attestations", "attestations"]),
    "contamination --digests-from": ("d.mvrd", lambda c, x: [
        "contamination", "model.bin", "--benchmark", "raw.jsonl", "--digests-from", x,
        "--policy", "policy.yaml", "--attestations", "attestations"]),
    "push --attestations bundle": ("a.json", lambda c, x: [
        "push", c.artifact, REGISTRY, "--attestations", x, "--plain-http"]),
    "push --attestations digests": ("d.mvrd", lambda c, x: [
        "push", c.artifact, REGISTRY, "--attestations", x, "--plain-http"]),
    "push --attestations directory": ("a.json", lambda c, x: [
        "push", c.artifact, REGISTRY, "--attestations", x.parent, "--plain-http"]),
    "attach directory": ("a.json", lambda c, x: [
        "attach", f"{REGISTRY}@{FAKE_DIGEST}", x.parent, "--plain-http"]),
    "attach bundle": ("a.json", lambda c, x: [
        "attach", f"{REGISTRY}@{FAKE_DIGEST}", x, "--plain-http"]),
    "attach digests": ("d.mvrd", lambda c, x: [
        "attach", f"{REGISTRY}@{FAKE_DIGEST}", x, "--plain-http"]),
    "audit": ("a.json", lambda c, x: ["audit", x]),
    "export": ("a.json", lambda c, x: [
        "export", x, "--key", c.keys("builder").private, "--out", c.work / "links"]),
    "rebuild": ("a.json", lambda c, x: [
        "rebuild", x, "--trust-key", c.keys("builder").public, "--key",
        c.keys("auditor").private, "--out", c.work / "rebuilds"]),
    "digest": ("m.bin", lambda c, x: ["digest", x]),
    "diff": ("a.safetensors", lambda c, x: ["diff", x, c.artifact]),
    "openness --policy": ("p.yaml", lambda c, x: [
        "openness", c.artifact, "--policy", x, "--attestations", c.attestations]),
    "verify-vsa --policy": ("p.yaml", lambda c, x: [
        "verify-vsa", c.attestation("package"), "--artifact", c.artifact, "--key",
        c.keys("builder").public, "--policy", x]),
    "record --material": ("m.txt", lambda c, x: [
        "record", "--step", "s", "--key", c.keys("builder").private, "--material", x,
        "--product", "out.txt", "--no-trace", "--", "true"]),
    # DOCKER_CONFIG names the directory; its config.json is the special file.
    "pull (Docker config)": ("config.json", lambda c, x: [
        "pull", f"{REGISTRY}@{FAKE_DIGEST}", c.work / "pulled", "--plain-http"]),
}


@pytest.fixture(scope="module")
def data_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step chain whose data step signed record digests, for `contamination`."""
    root = tmp_path_factory.mktemp("data")
    make_keys(root / "keys", "builder")
    work = root / "work"
    work.mkdir()
    (work / "raw.jsonl").write_text('{"text": "a training record"}\n', encoding="utf-8")
    fast = ["--sandbox", "none", "--no-trace"]
    copy = "import shutil; shutil.copy('raw.jsonl', 'train.jsonl')"
    digest = "import shutil; shutil.copy('train.jsonl', 'model.bin')"
    for step, material, product, code, extra in (
            ("prepare", "raw.jsonl", "train.jsonl", copy, ["--record-digests", "train.jsonl"]),
            ("train", "train.jsonl", "model.bin", digest, [])):
        result = record_step(work, step, root / "keys/builder.key", [material], [product],
                             code, extra=[*fast, *extra])
        assert result.code == 0, result.output
    write_policy(work / "policy.yaml", {
        "version": 1, "name": "data", "signers": {"builder": {"key": "../keys/builder.pub"}},
        "sources": [{"name": "raw.jsonl",
                     "sha256": hashlib.sha256((work / "raw.jsonl").read_bytes()).hexdigest()}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare"]}],
        "data": {"max_benchmark_overlap": 0.01}})
    return work


@pytest.fixture(scope="module")
def specials(recorded: Chain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("special")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "loop"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_special_file_is_refused_in_one_sentence(recorded: Chain, data_work: Path,
                                                   specials: Path, case: str, kind: str) -> None:
    name, arguments = CASES[case]
    path = _special(specials / case.replace(" ", "_"), kind, name)
    cwd = data_work if case.startswith("contamination") else recorded.work
    env = {"DOCKER_CONFIG": str(path.parent if case.startswith("pull") else specials)}
    result = _run(arguments(recorded, path), cwd=cwd, env=env)
    assert_error(result, 2, str(path))
