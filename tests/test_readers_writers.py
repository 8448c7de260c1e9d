"""Bounded reads of regular files only, and writers that never clobber: the reader refuses
FIFOs, devices, sockets and directories at once and caps every read whatever st_size says;
`audit --output` and `verify-model --vsa` refuse an existing file without --force; keygen
never writes through a planted link; replayed bundles are read once."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from helpers import Chain, assert_error, read_json, run

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.evidence import load_bundles


def test_a_fifo_is_refused_at_once_without_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    began = time.monotonic()
    with pytest.raises(InputError, match="named pipe"):
        readers.read_bytes(fifo, "policy file", readers.MAX_POLICY_BYTES)
    assert time.monotonic() - began < 2


def test_a_fifo_swapped_in_after_the_stat_is_still_refused(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The check that counts is fstat on the descriptor opened without blocking."""
    fifo = tmp_path / "bundle.json"
    os.mkfifo(fifo)
    regular = os.stat(tmp_path.parent)  # any stat result that says "directory"...
    fake = os.stat_result((stat.S_IFREG | 0o644, *list(regular)[1:]))  # ...turned regular
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: fake if Path(p) == fifo
                        else real_stat(p, *a, **k))
    holder: list[BaseException] = []

    def attempt() -> None:
        try:
            readers.read_bytes(fifo, "bundle file", 100)
        except BaseException as error:  # handed to the test thread
            holder.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "opening the FIFO blocked"
    assert isinstance(holder[0], InputError) and "named pipe" in str(holder[0])


def test_dev_zero_behind_a_link_is_refused_unread(tmp_path: Path) -> None:
    link = tmp_path / "key.pub"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="a device"):
        readers.read_bytes(link, "key file", readers.MAX_KEY_BYTES)


def test_a_socket_and_a_directory_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    try:
        with pytest.raises(InputError, match="a socket"):
            readers.read_bytes(path, "bundle file", 100)
    finally:
        server.close()
    with pytest.raises(InputError, match="a directory"):
        readers.read_bytes(tmp_path, "bundle file", 100)


def test_st_size_zero_is_not_trusted_as_a_bound() -> None:
    """procfs files say they are empty; the cap holds on what is actually read."""
    maps = Path("/proc/self/maps")
    assert maps.stat().st_size == 0
    with pytest.raises(InputError, match="larger than the 64 bytes"):
        readers.read_bytes(maps, "policy file", 64)
    assert len(readers.read_bytes(maps, "policy file", 10 * readers.MIB)) > 64


def test_a_file_over_the_cap_is_refused_by_its_size_unread(tmp_path: Path) -> None:
    sparse = tmp_path / "policy.yaml"
    with sparse.open("wb") as stream:
        stream.truncate(1 << 40)  # a terabyte of holes: reading it would take hours
    began = time.monotonic()
    with pytest.raises(InputError, match="1024 GiB, larger than the 1 MiB"):
        readers.read_bytes(sparse, "policy file", readers.MAX_POLICY_BYTES)
    assert time.monotonic() - began < 1


def test_a_sparse_trusted_root_is_refused_by_its_size(tmp_path: Path) -> None:
    """The Sigstore trusted root a keyless check reads is capped like every other input."""
    fixtures = Path(__file__).parent / "fixtures" / "sigstore"
    root = tmp_path / "trusted_root.json"
    with root.open("wb") as stream:
        stream.truncate(1 << 40)
    result = run(["verify-bundle", fixtures / "a.dsse.staging-rekor-v2.txt.sigstore.json",
                  "--artifact", fixtures / "a.txt", "--identity", "https://example.org/id",
                  "--issuer", "https://example.org", "--trusted-root", root])
    assert_error(result, 2, str(root), "larger than the 4 MiB a Sigstore trusted root")


def test_exactly_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"k" * 100)
    assert readers.read_bytes(path, "key file", 100) == b"k" * 100
    path.write_bytes(b"k" * 101)
    with pytest.raises(InputError):
        readers.read_bytes(path, "key file", 100)


def test_brief_never_quotes_a_whole_value() -> None:
    assert readers.brief("x" * 10_000).endswith("…") and len(readers.brief("x" * 10_000)) == 60
    assert readers.brief({"a": [1] * 10_000}) == "an object"
    assert readers.brief([1] * 10_000) == "a list"
    assert readers.brief(10**5000) == "a huge number"


# ------------------------------------------------------------------ replayed bundles


def test_replayed_copies_of_a_bundle_are_loaded_once(chain: Chain, tmp_path: Path) -> None:
    store = tmp_path / "replayed"
    store.mkdir()
    genuine = chain.attestation("package").read_bytes()
    for index in range(50):
        (store / f"copy-{index:02}.json").write_bytes(genuine)
    # The same envelope re-serialised (other whitespace) is still the same evidence.
    (store / "pretty.json").write_text(json.dumps(json.loads(genuine), indent=8))
    # Another signature over the same payload is other evidence: kept.
    other = read_json(chain.attestation("package"))
    other["dsseEnvelope"]["signatures"][0]["sig"] = "AAAA"
    (store / "resigned.json").write_text(json.dumps(other))
    notes: list[str] = []
    bundles = load_bundles([store], notes)
    assert len(bundles) == 2
    assert bundles[0].source.endswith("copy-00.json")
    assert notes == [f"ignored 50 copies of {store / 'copy-00.json'} (the same signed "
                     f"envelope, counted once): {store / 'copy-01.json'}, "
                     f"{store / 'copy-02.json'}, {store / 'copy-03.json'} and 47 more."]


def test_a_special_file_given_as_attestations_is_refused(chain: Chain, tmp_path: Path) -> None:
    fifo = tmp_path / "attestations.jsonl"
    os.mkfifo(fifo)
    result = run(["dist/model.bin", "--attestations", fifo], cwd=chain.work,
                 program="verify-model")
    assert_error(result, 2, str(fifo), "named pipe", "expected a file or a directory")


# ------------------------------------------------------------------ writers


def test_audit_output_is_not_clobbered_without_force(chain: Chain, tmp_path: Path) -> None:
    signed = tmp_path / "report.html"
    signed.write_text("a signed attestation someone keeps here")
    result = run(["audit", chain.attestations, "--output", signed], cwd=chain.work)
    assert_error(result, 2, str(signed), "already exists", "--force")
    assert signed.read_text() == "a signed attestation someone keeps here"
    forced = run(["audit", chain.attestations, "--output", signed, "--force"], cwd=chain.work)
    assert forced.code == 0, forced.output
    assert "step package" in signed.read_text()


def test_audit_output_does_not_write_through_a_planted_link(chain: Chain,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    link = tmp_path / "report.txt"
    link.symlink_to(target)
    assert_error(run(["audit", chain.attestations, "--output", link], cwd=chain.work), 2,
                 "already exists")
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "not-yet")
    assert_error(run(["audit", chain.attestations, "--output", dangling], cwd=chain.work), 2,
                 "already exists")
    assert not (tmp_path / "not-yet").exists() and target.read_text() == "precious"


def test_vsa_is_not_clobbered_without_force(chain: Chain, tmp_path: Path) -> None:
    vsa = tmp_path / "model.vsa.json"
    vsa.write_text("an earlier signed summary")
    args = ["dist/model.bin", "--vsa", vsa, "--key", chain.keys("builder").private]
    began = time.monotonic()
    result = run(args, cwd=chain.work, program="verify-model")
    assert_error(result, 2, str(vsa), "already exists", "--force")
    assert vsa.read_text() == "an earlier signed summary"
    assert time.monotonic() - began < 5  # refused before any verification work
    forced = run([*args, "--force"], cwd=chain.work, program="verify-model")
    assert forced.code == 0, forced.output
    envelope = json.loads(vsa.read_text())["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"


def test_keygen_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not a key")
    (tmp_path / "builder.key").symlink_to(victim)
    refused = run(["keygen", tmp_path / "builder"])
    assert_error(refused, 2, "builder.key", "already exists")
    forced = run(["keygen", tmp_path / "builder", "--force"])
    assert forced.code == 0, forced.output
    assert victim.read_text() == "not a key"  # the link was replaced, its target untouched
    key = tmp_path / "builder.key"
    assert not key.is_symlink() and key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_keygen_ignores_a_planted_temporary(tmp_path: Path) -> None:
    """The temporary name is unpredictable and created with O_EXCL|O_NOFOLLOW: a link planted
    under the name an earlier version used is neither followed nor removed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not a key")
    planted = tmp_path / ".builder.key.tmp"
    planted.symlink_to(victim)
    assert run(["keygen", tmp_path / "builder"]).code == 0
    assert victim.read_text() == "not a key" and planted.is_symlink()


@pytest.mark.parametrize("artifact", ["file", "directory"])
def test_verify_bundle_json_is_one_object_on_stdout_and_nothing_on_stderr(
        chain: Chain, artifact: str) -> None:
    """A machine reading --json gets one JSON object and a quiet stderr, as from the console
    script a CI job runs."""
    from helpers import run_executable

    target = chain.artifact if artifact == "file" else chain.artifact.parent
    result = run_executable(["verify-bundle", chain.attestation("package"), "--artifact", target,
                             "--key", chain.keys("builder").public, "--json"], cwd=chain.work)
    assert result.code == 0, result.output
    assert result.stderr == ""
    assert isinstance(json.loads(result.stdout), dict)


def test_verify_bundle_json_keeps_sigstores_own_warnings_off_stderr() -> None:
    """A bundle carrying a root CA makes sigstore-python log a warning, which Python printed
    on stderr beside the JSON: the verdict is in the JSON object, and stderr stays empty."""
    from helpers import run_executable

    case = (Path(__file__).parent / "fixtures" / "sigstore-conformance" / "bundle-verify"
            / "bundle-with-root-cert_fail")
    result = run_executable(["verify-bundle", case / "bundle.sigstore.json", "--artifact",
                             case.parent / "a.txt", "--identity", "https://example.org/id",
                             "--issuer", "https://token.actions.githubusercontent.com",
                             "--json"])
    assert result.code in (1, 2), result.output
    assert result.stderr == ""
    assert str(case / "bundle.sigstore.json") in json.loads(result.stdout)["error"]
