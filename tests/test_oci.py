"""The OCI registry as the evidence store, against the real CNCF Distribution registry.

Each test that needs a registry starts `docker-registry serve` on a loopback port with its own
storage (tests/oci_servers.py). The registry here (2.8) has no Referrers API, so discovery
runs through the OCI 1.1 referrers tag schema, as it must on such registries. What the product
wrote is read back with plain HTTP calls and hashlib, not with the product's client, and the
bundles fetched from the registry are checked with DSSE PAE + cryptography (tests/helpers.py).
The attacks: a tampered layer, a swapped manifest, a stranger's bundle, a registry that goes
away mid-pull, and manifests no honest registry serves (from a scripted loopback server).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import (
    Chain,
    KeyPair,
    assert_error,
    dsse_verifies,
    make_keys,
    payload_of,
    read_json,
    run,
)
from hypothesis import given
from hypothesis import strategies as st
from oci_servers import SKIP_REASON, RunningRegistry, Scripted, running_registry

needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason=SKIP_REASON)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    if shutil.which("docker-registry") is None:
        pytest.skip(SKIP_REASON)
    with running_registry(tmp_path / "registry") as running:
        yield running


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def cli(*args: Any, cache: Path, program: str = "model-verifier") -> Any:
    return run([*args], env={"MODEL_VERIFIER_CACHE": str(cache), "DOCKER_CONFIG":
                             str(cache.parent / "no-docker-config")}, program=program)


def push(chain: Chain, registry: RunningRegistry, cache: Path, repo: str = "acme/model",
         attestations: Path | None = None) -> dict[str, Any]:
    result = cli("push", chain.work / "dist", f"oci://{registry.host}/{repo}:v1",
                 "--attestations", attestations or chain.attestations, "--plain-http",
                 "--json", cache=cache)
    assert result.code == 0, result.output
    return json.loads(result.stdout)


def get_json(url: str, accept: str) -> tuple[dict[str, Any], bytes]:
    response = requests.get(url, headers={"Accept": accept}, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    return response.json(), response.content


def verify(reference: str, chain: Chain, cache: Path, *extra: Any) -> Any:
    return cli(reference, "--policy", chain.policy, "--plain-http", "--json", *extra,
               cache=cache, program="verify-model")


def blobs_and_temporaries(cache: Path) -> tuple[set[str], list[Path]]:
    blobs = cache / "oci" / "blobs" / "sha256"
    names = {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()
    temporaries = [p for p in (cache / "oci" / "tmp").glob("*")] if (
        cache / "oci" / "tmp").is_dir() else []
    work = [p for p in (cache / "oci" / "work").glob("*")] if (
        cache / "oci" / "work").is_dir() else []
    return names, temporaries + work


# --- references -----------------------------------------------------------------------------

def test_references_parse_as_the_distribution_spec_says() -> None:
    from verifier.errors import InputError
    from verifier.interop.oci.reference import parse_reference

    digest = "sha256:" + "ab" * 32
    ref = parse_reference(f"oci://localhost:5000/acme/tiny-model:v1.2@{digest}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "localhost:5000", "acme/tiny-model", "v1.2", digest)
    assert ref.is_loopback and ref.pinned() == f"oci://localhost:5000/acme/tiny-model@{digest}"
    assert parse_reference("oci://ghcr.io/acme/m").identifier == "latest"
    assert not parse_reference("oci://ghcr.io/acme/m").is_loopback
    assert parse_reference("oci://[::1]:5000/m").is_loopback
    for bad, fragment in [("ghcr.io/acme/m", "not an OCI reference"),
                          ("oci://ghcr.io", "names no repository"),
                          ("oci://ghcr.io/Acme/m", "not a valid repository name"),
                          ("oci://ghcr.io/acme/m:-x", "not a valid tag"),
                          ("oci://ghcr.io/acme/m@sha256:abc", "not a sha256 digest"),
                          ("oci://ghcr.io/acme/m@sha512:" + "a" * 128, "not a sha256 digest"),
                          ("oci://gh cr.io/acme/m", "not a registry host"),
                          ("oci://ghcr.io:99999/acme/m", "not a registry host")]:
        with pytest.raises(InputError, match=fragment):
            parse_reference(bad)


component = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)?", fullmatch=True)


@given(host=st.sampled_from(["localhost:5000", "ghcr.io", "10.0.0.1:443", "[::1]:5000"]),
       path=st.lists(component, min_size=1, max_size=3),
       tag=st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True),
       digest=st.none() | st.binary(min_size=32, max_size=32))
def test_a_reference_reads_back_as_written(host: str, path: list[str], tag: str | None,
                                           digest: bytes | None) -> None:
    from verifier.interop.oci.reference import parse_reference

    text = f"oci://{host}/{'/'.join(path)}" + (f":{tag}" if tag else "") + (
        f"@sha256:{digest.hex()}" if digest else "")
    assert str(parse_reference(text)) == text


@given(st.text(max_size=60))
def test_any_text_parses_or_is_refused_in_one_sentence(text: str) -> None:
    from verifier.errors import InputError
    from verifier.interop.oci.reference import parse_reference

    try:
        parse_reference("oci://" + text)
    except InputError as error:
        assert str(error).endswith(".")


# --- push, attach, discover, pull, verify ---------------------------------------------------

@needs_registry
def test_push_attach_discover_pull_and_verify_end_to_end(
        chain: Chain, registry: RunningRegistry, cache: Path, tmp_path: Path) -> None:
    pushed = push(chain, registry, cache)
    digest = pushed["digest"]
    assert pushed["reference"] == f"oci://{registry.host}/acme/model@{digest}"
    assert pushed["files"] == 2 and [a["status"] for a in pushed["attached"]] == ["attached"] * 3

    # The manifest, read back raw: a ModelPack artifact, one layer per file, titled by path.
    manifest, raw = get_json(registry.url("acme/model/manifests/v1"), MANIFEST)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    titles = {layer["annotations"]["org.opencontainers.image.title"]: layer["digest"]
              for layer in manifest["layers"]}
    assert titles == {name: "sha256:" + hashlib.sha256(
        (chain.work / "dist" / name).read_bytes()).hexdigest()
        for name in ("config.json", "model.bin")}
    config, _ = get_json(registry.url(f"acme/model/blobs/{manifest['config']['digest']}"), "*/*")
    assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in manifest["layers"]]

    # The referrers, by the OCI 1.1 tag schema: each a bundle whose subject is the model.
    index, _ = get_json(registry.url(f"acme/model/manifests/sha256-{digest[7:]}"), INDEX)
    assert len(index["manifests"]) == 3
    builder = chain.keys("builder").public_pem
    for entry in index["manifests"]:
        assert entry["artifactType"] == BUNDLE
        referrer, _ = get_json(registry.url(f"acme/model/manifests/{entry['digest']}"), MANIFEST)
        assert referrer["subject"]["digest"] == digest
        assert referrer["artifactType"] == BUNDLE
        (layer,) = referrer["layers"]
        bundle = requests.get(registry.url(f"acme/model/blobs/{layer['digest']}"),
                              timeout=10).json()
        assert dsse_verifies(bundle, builder)

    # verify-model by digest: the model and its evidence come from the registry alone.
    good = verify(f"oci://{registry.host}/acme/model@{digest}", chain, cache)
    assert good.code == 0, good.output
    report = json.loads(good.stdout)
    assert report["verdict"] == "PASS"
    assert report["artifact"] == f"oci://{registry.host}/acme/model@{digest}"
    assert report["oci"]["discovery"] == "referrers tag schema"
    assert {s["step"] for s in report["steps"]} == {"prepare", "train", "package"}
    assert all(s["attestation"].startswith(f"oci://{registry.host}/acme/model@sha256:")
               for s in report["steps"])
    # Nothing of the run is left in the cache but verified blobs.
    names, leftovers = blobs_and_temporaries(cache)
    assert leftovers == [] and {d[7:] for d in titles.values()} <= names

    # By tag: resolved, and the digest printed.
    tagged = cli(f"oci://{registry.host}/acme/model:v1", "--policy", chain.policy,
                 "--plain-http", cache=cache, program="verify-model")
    assert tagged.code == 0, tagged.output
    assert f"resolved oci://{registry.host}/acme/model:v1 to {digest}" in tagged.stdout
    assert tagged.stdout.splitlines()[2].startswith(f"PASS  oci://{registry.host}/acme/model@")

    # pull, then verify the copy offline with the local code path.
    out = tmp_path / "pulled"
    pulled = cli("pull", f"oci://{registry.host}/acme/model@{digest}", out, "--plain-http",
                 "--json", cache=cache)
    assert pulled.code == 0, pulled.output
    assert sorted(p.name for p in (out / "attestations").iterdir()) == sorted(
        f"sha256-{e['digest'][7:]}.intoto.json" for e in index["manifests"])
    assert (out / "dist" / "model.bin").read_bytes() == chain.artifact.read_bytes()
    offline = run([out / "dist", "--policy", chain.policy, "--attestations",
                   out / "attestations"], program="verify-model")
    assert offline.code == 0, offline.output
    again = cli("pull", f"oci://{registry.host}/acme/model@{digest}", out, "--plain-http",
                cache=cache)
    assert_error(again, 2, str(out), "already exists")


@needs_registry
def test_a_rebuilder_attaches_once_and_pushing_again_changes_nothing(
        chain: Chain, registry: RunningRegistry, cache: Path) -> None:
    pushed = push(chain, registry, cache, attestations=chain.attestation("package"))
    again = push(chain, registry, cache)
    assert again["digest"] == pushed["digest"]
    assert again["uploaded_bytes"] == 0
    assert sorted(a["status"] for a in again["attached"]) == [
        "already attached", "attached", "attached"]
    reference = f"oci://{registry.host}/acme/model@{pushed['digest']}"
    attach = cli("attach", reference, chain.attestations, "--plain-http", "--json", cache=cache)
    assert attach.code == 0, attach.output
    assert {a["status"] for a in json.loads(attach.stdout)["attached"]} == {"already attached"}
    index, _ = get_json(registry.url(f"acme/model/manifests/sha256-{pushed['digest'][7:]}"),
                        INDEX)
    assert len(index["manifests"]) == 3
    by_tag = cli("attach", f"oci://{registry.host}/acme/model:v1", chain.attestations,
                 "--plain-http", cache=cache)
    assert_error(by_tag, 2, "needs the model's digest")
    not_bundle = chain.work / "prep.py"
    refused = cli("attach", reference, not_bundle, "--plain-http", cache=cache)
    assert_error(refused, 2)


@needs_registry
def test_local_attestations_add_to_the_referrers(
        chain: Chain, registry: RunningRegistry, cache: Path) -> None:
    """Only the package step is attached; the rest come from --attestations."""
    pushed = push(chain, registry, cache, attestations=chain.attestation("package"))
    reference = f"oci://{registry.host}/acme/model@{pushed['digest']}"
    alone = verify(reference, chain, cache)
    assert alone.code == 1, alone.output
    local = chain.root / "local"
    local.mkdir()
    for step in ("prepare", "train"):
        shutil.copy(chain.attestation(step), local)
    together = verify(reference, chain, cache, "--attestations", local)
    assert together.code == 0, together.output


# --- attacks ---------------------------------------------------------------------------------

@needs_registry
def test_a_tampered_layer_is_refused_and_never_cached(
        chain: Chain, registry: RunningRegistry, cache: Path) -> None:
    pushed = push(chain, registry, cache)
    manifest, _ = get_json(registry.url(f"acme/model/manifests/{pushed['digest']}"), MANIFEST)
    layer = next(x for x in manifest["layers"]
                 if x["annotations"]["org.opencontainers.image.title"] == "model.bin")
    stored = registry.blob_file(layer["digest"])
    data = bytearray(stored.read_bytes())
    data[0] ^= 1
    stored.write_bytes(bytes(data))
    result = cli(f"oci://{registry.host}/acme/model@{pushed['digest']}", "--policy",
                 chain.policy, "--plain-http", cache=cache, program="verify-model")
    assert_error(result, 1, "model.bin", "tampered with", "nothing was kept")
    names, leftovers = blobs_and_temporaries(cache)
    assert layer["digest"][7:] not in names and leftovers == []


@needs_registry
def test_a_swapped_manifest_is_refused(chain: Chain, registry: RunningRegistry,
                                       cache: Path) -> None:
    pushed = push(chain, registry, cache)
    other = chain.root / "other"
    other.mkdir()
    (other / "model.bin").write_bytes(b"a model nobody attested")
    result = cli("push", other, f"oci://{registry.host}/acme/model:other", "--plain-http",
                 "--json", cache=cache)
    assert result.code == 0, result.output
    swapped = json.loads(result.stdout)["digest"]
    registry.blob_file(pushed["digest"]).write_bytes(registry.blob_file(swapped).read_bytes())
    refused = cli(f"oci://{registry.host}/acme/model@{pushed['digest']}", "--policy",
                  chain.policy, "--plain-http", cache=cache, program="verify-model")
    assert_error(refused, 1, pushed["digest"], "not the digest asked for")


@needs_registry
def test_a_strangers_bundle_counts_for_nothing(chain: Chain, registry: RunningRegistry,
                                               cache: Path) -> None:
    good = chain.root / "good"
    shutil.copytree(chain.attestations, good)
    assert chain.record("package", signer="outsider").code == 0
    stranger = chain.attestation("package")
    pushed = push(chain, registry, cache, attestations=stranger)
    reference = f"oci://{registry.host}/acme/model@{pushed['digest']}"
    (referrer,) = pushed["attached"]
    refused = verify(reference, chain, cache)
    assert refused.code == 1, refused.output
    report = json.loads(refused.stdout)
    assert any(f"@{referrer['manifest_digest']}: signed by no signer the policy names" in note
               for note in report["notes"]), report["notes"]
    # With the builder's own bundles attached too, the stranger's is noted and ignored.
    attached = cli("attach", reference, good, "--plain-http", cache=cache)
    assert attached.code == 0, attached.output
    accepted = verify(reference, chain, cache)
    assert accepted.code == 0, accepted.output
    assert any(referrer["manifest_digest"] in note
               for note in json.loads(accepted.stdout)["notes"])


@needs_registry
def test_a_corrupted_cache_entry_is_fetched_again(chain: Chain, registry: RunningRegistry,
                                                  cache: Path) -> None:
    pushed = push(chain, registry, cache)
    reference = f"oci://{registry.host}/acme/model@{pushed['digest']}"
    assert verify(reference, chain, cache).code == 0
    digest = "sha256:" + hashlib.sha256(chain.artifact.read_bytes()).hexdigest()
    cached = cache / "oci" / "blobs" / "sha256" / digest[7:]
    os.chmod(cached, 0o644)
    cached.write_bytes(b"not the weights")
    result = verify(reference, chain, cache)
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["oci"]["fetched_bytes"] == chain.artifact.stat().st_size
    assert cached.read_bytes() == chain.artifact.read_bytes()


@needs_registry
def test_a_registry_that_goes_away_mid_pull_leaves_nothing(
        registry: RunningRegistry, cache: Path, tmp_path: Path) -> None:
    from verifier.formats.digest import Hasher
    from verifier.interop.oci import store
    from verifier.interop.oci.cache import BlobCache
    from verifier.interop.oci.client import Registry, RegistryError
    from verifier.interop.oci.reference import parse_reference

    model = tmp_path / "big"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(1024) * (48 * 1024))  # 48 MiB
    reference = parse_reference(f"oci://{registry.host}/acme/big:v1")
    client = Registry(reference, plain_http=True)
    pushed = store.push_model(model, reference, client, hasher=Hasher())
    received: list[int] = []

    def kill_after_first_chunk(count: int) -> None:
        received.append(count)
        if len(received) == 1:
            registry.stop()

    out = tmp_path / "pulled"
    with pytest.raises(RegistryError) as raised:
        store.pull(Registry(reference.at(pushed.digest), plain_http=True),
                   reference.at(pushed.digest), BlobCache(cache), out,
                   progress=kill_after_first_chunk)
    assert "connection broke" in str(raised.value) or "bytes of blob" in str(raised.value)
    assert "nothing was kept" in str(raised.value)
    assert sum(received) < 48 * 1024 * 1024
    names, leftovers = blobs_and_temporaries(cache)
    assert names == set() and leftovers == []
    assert not out.exists() and list(tmp_path.glob(".pulled.*")) == []
    # And from the command line: a registry no longer there is one sentence, exit 2.
    gone = cli("pull", f"oci://{registry.host}/acme/big@{pushed.digest}", out,
               "--plain-http", cache=cache)
    assert_error(gone, 2, registry.host, "cannot be reached")


# --- hostile servers -------------------------------------------------------------------------

def _manifest_with(layers: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
                                  "size": 2},
                       "layers": layers, **extra}).encode()


def _layer(data: bytes, title: str) -> dict[str, Any]:
    return {"mediaType": "application/vnd.cncf.model.weight.v1.raw",
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data),
            "annotations": {"org.opencontainers.image.title": title}}


def _serve_forever_chunked(handler: BaseHTTPRequestHandler) -> None:
    """A manifest that never ends: chunked transfer, no length, until the client hangs up."""
    handler.send_response(200)
    handler.send_header("Content-Type", MANIFEST)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"[" * 65536
    try:
        for _ in range(4096):  # 256 MiB at most, far past any limit
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass


@pytest.mark.parametrize("case", ["announced-huge", "endless", "not-json", "traversal",
                                  "sha512-layer", "not-a-manifest", "named-attestations"])
def test_hostile_manifests_are_refused_in_one_sentence(case: str, cache: Path) -> None:
    repo = "/v2/acme/model/manifests/v1"
    answers: dict[str, Any] = {"/v2/": (200, {}, b"{}")}
    traversal = _manifest_with([_layer(b"x", "../../outside.bin")])
    answers[repo] = {
        "announced-huge": (200, {"Content-Type": MANIFEST, "Content-Length": str(10**9)}, b""),
        "endless": _serve_forever_chunked,
        "not-json": (200, {"Content-Type": MANIFEST}, b"\x89PNG not a manifest"),
        "traversal": (200, {"Content-Type": MANIFEST}, traversal),
        "sha512-layer": (200, {"Content-Type": MANIFEST}, _manifest_with(
            [{"mediaType": "x", "digest": "sha512:" + "a" * 128, "size": 1}])),
        "not-a-manifest": (200, {"Content-Type": MANIFEST}, json.dumps(
            {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}).encode()),
        "named-attestations": (200, {"Content-Type": MANIFEST}, _manifest_with(
            [_layer(b"x", "evil.intoto.json")],
            annotations={"org.opencontainers.image.title": "attestations"})),
    }[case]
    fragment = {"announced-huge": "more than the 4194304 allowed",
                "endless": "more than 4194304 bytes", "not-json": "is not a JSON document",
                "traversal": "not a safe relative file path", "sha512-layer": "sha512",
                "not-a-manifest": "not an OCI image manifest",
                "named-attestations": "named 'attestations'"}[case]
    with Scripted(answers).serving() as server:
        result = cli("pull", f"oci://{server.host}/acme/model:v1", cache.parent / "out",
                     "--plain-http", cache=cache)
    assert_error(result, 2, fragment)
    assert not (cache.parent / "outside.bin").exists()
    _, leftovers = blobs_and_temporaries(cache)
    assert leftovers == []


def test_a_blob_cut_short_or_overlong_is_refused(cache: Path, tmp_path: Path) -> None:
    data = b"weights" * 1000
    manifest = _manifest_with([_layer(data, "model.bin")],
                              annotations={"org.opencontainers.image.title": "model.bin",
                                           "dev.model-verifier.model.kind": "file"})
    blob = f"/v2/acme/model/blobs/{_layer(data, 'x')['digest']}"

    def cut_short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:100])
        handler.wfile.flush()
        handler.close_connection = True

    for answer, code, fragment in [
            (cut_short, 2, "nothing was kept"),
            ((200, {}, data + b"more"), 1, "announced"),
            ((200, {}, data[::-1]), 1, "tampered with")]:
        answers = {"/v2/": (200, {}, b"{}"),
                   "/v2/acme/model/manifests/v1": (200, {"Content-Type": MANIFEST}, manifest),
                   blob: answer}
        with Scripted(answers).serving() as server:
            result = cli("pull", f"oci://{server.host}/acme/model:v1", tmp_path / "out",
                         "--plain-http", cache=cache)
        assert_error(result, code, fragment)
        assert not (tmp_path / "out").exists()
        names, leftovers = blobs_and_temporaries(cache)
        assert names == set() and leftovers == []


def test_the_referrers_api_is_used_where_the_registry_has_it(cache: Path,
                                                            tmp_path: Path) -> None:
    """A registry with the Referrers API answers the listing itself; a referrer whose own
    manifest names another subject is noted and ignored, whatever the listing says."""
    from verifier.interop.oci import media, store
    from verifier.interop.oci.client import Registry
    from verifier.interop.oci.reference import parse_reference

    subject = "sha256:" + "1" * 64
    bundle = b'{"not": "checked here"}'
    bundle_layer = media.descriptor_of(media.BUNDLE, bundle)
    honest = media.bundle_manifest(media.Descriptor(MANIFEST, subject, 10), bundle_layer, None)
    liar = media.bundle_manifest(media.Descriptor(MANIFEST, "sha256:" + "2" * 64, 10),
                                 bundle_layer, None)
    listing = media.index_document([
        media.descriptor_of(MANIFEST, honest, artifact_type=BUNDLE),
        media.descriptor_of(MANIFEST, liar, artifact_type=BUNDLE),
        media.descriptor_of(MANIFEST, b"{}", artifact_type="application/x-other")])
    answers = {
        f"/v2/acme/model/referrers/{subject}": (200, {"Content-Type": INDEX}, listing),
        f"/v2/acme/model/manifests/{media.sha256_digest(honest)}": (200, {}, honest),
        f"/v2/acme/model/manifests/{media.sha256_digest(liar)}": (200, {}, liar),
        f"/v2/acme/model/blobs/{bundle_layer.digest}": (200, {}, bundle),
    }
    with Scripted(answers).serving() as server:
        client = Registry(parse_reference(f"oci://{server.host}/acme/model"), plain_http=True)
        notes: list[str] = []
        listed, discovery = store.referrer_index(client, subject)
        found = store._bundle_referrers(client, subject, notes, listed, into=tmp_path)
    assert discovery == "referrers API"
    assert [r.digest for r in found] == [media.sha256_digest(honest)]
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [bundle]
    assert len(notes) == 1 and "its subject is not" in notes[0]


def test_a_record_digest_referrer_is_checked_like_a_bundle_referrer(cache: Path) -> None:
    """Record-digest referrers naming another subject, holding two layers or announcing a file
    over the cap are noted and skipped; only the honest one is listed for fetching, once
    however often the index lists it."""
    from verifier.interop.oci import media, store
    from verifier.interop.oci.client import Registry
    from verifier.interop.oci.reference import parse_reference

    subject = "sha256:" + "1" * 64
    mine = media.Descriptor(MANIFEST, subject, 10)
    layer = media.descriptor_of(media.RECORD_DIGESTS, b"MVRDIG01 not parsed here")
    huge = media.Descriptor(media.RECORD_DIGESTS, "sha256:" + "3" * 64,
                            store.MAX_DIGEST_FILE_BYTES + 1)
    honest = media.record_digests_manifest(mine, layer)
    liar = media.record_digests_manifest(media.Descriptor(MANIFEST, "sha256:" + "2" * 64, 10),
                                         layer)
    oversized = media.record_digests_manifest(mine, huge)
    doubled = json.loads(honest)
    doubled["layers"].append(doubled["layers"][0])
    two_layers = media.canonical(doubled)
    manifests = [honest, liar, oversized, two_layers]
    listing = media.index_document([
        media.descriptor_of(MANIFEST, m, artifact_type=media.RECORD_DIGESTS)
        for m in [honest, honest, *manifests]])
    answers = {f"/v2/acme/model/referrers/{subject}": (200, {"Content-Type": INDEX}, listing)}
    answers.update({f"/v2/acme/model/manifests/{media.sha256_digest(m)}": (200, {}, m)
                    for m in manifests})
    with Scripted(answers).serving() as server:
        client = Registry(parse_reference(f"oci://{server.host}/acme/model"), plain_http=True)
        notes: list[str] = []
        listed, _ = store.referrer_index(client, subject)
        found = store._digest_referrers(client, subject, notes, listed)
    assert [(r.digest, r.blob.digest) for r in found] == [
        (media.sha256_digest(honest), layer.digest)]
    assert len(notes) == 3, notes
    assert any("its subject is not" in n for n in notes)
    assert any("larger than one may be" in n for n in notes)
    assert any("exactly one record-digest layer" in n for n in notes)


def test_plain_http_is_only_for_loopback(cache: Path) -> None:
    result = cli("pull", "oci://registry.example.com/acme/model:v1", cache.parent / "out",
                 "--plain-http", cache=cache)
    assert_error(result, 2, "only for a registry on loopback")


# --- credentials -----------------------------------------------------------------------------

def test_docker_config_credentials_and_helpers(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from verifier.interop.oci.auth import docker_credentials

    helper = tmp_path / "bin" / "docker-credential-testing"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\nread server\n"
                      "printf '{\"Username\":\"robot\",\"Secret\":\"from-%s\"}' \"$server\"\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "auths": {"https://registry.example.com": {
            "auth": base64.b64encode(b"alice:s3cret").decode()}},
        "credHelpers": {"helped.example.com:5000": "testing"}}))
    found = docker_credentials("registry.example.com", config)
    assert found is not None and (found.username, found.password) == ("alice", "s3cret")
    assert "s3cret" not in repr(found)
    helped = docker_credentials("helped.example.com:5000", config)
    assert helped is not None and helped.password == "from-helped.example.com:5000"
    assert docker_credentials("elsewhere.example.com", config) is None


def _token_server(tmp_path: Path, users: dict[str, str]) -> tuple[Scripted, Path, list[str]]:
    """A token service as the distribution token spec describes: Basic credentials in, a JWT
    (ES256, x5c certificate chain) out, for the scope asked; the registry trusts its cert."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    bundle = tmp_path / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    granted: list[str] = []

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def issue(handler: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(handler.path).query)
        header = handler.headers.get("Authorization", "")
        user = None
        if header.startswith("Basic "):
            name_, _, password = base64.b64decode(header[6:]).decode().partition(":")
            user = name_ if users.get(name_) == password else None
        if user is None:
            handler.send_response(401)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        access = []
        for scope in query.get("scope", []):
            kind, repo, actions = scope.split(":")
            access.append({"type": kind, "name": repo, "actions": actions.split(",")})
            granted.append(scope)
        stamp = int(now.timestamp())
        head = {"alg": "ES256", "typ": "JWT",
                "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": "test-issuer", "sub": user, "aud": "test-registry", "iat": stamp,
                  "nbf": stamp - 60, "exp": stamp + 600, "jti": os.urandom(8).hex(),
                  "access": access}
        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(key.sign(signing_input.encode(),
                                             ec.ECDSA(hashes.SHA256())))
        token = f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        body = json.dumps({"token": token}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return Scripted({"/token": issue}), bundle, granted


@needs_registry
def test_token_authentication_with_the_docker_config(chain: Chain, tmp_path: Path,
                                                     cache: Path) -> None:
    """The registry answers 401 with a Bearer challenge; the client gets a token from the
    realm with the Docker config's credentials, for the repository and actions it needs."""
    tokens, ca, granted = _token_server(tmp_path, {"alice": "s3cret"})
    with tokens.serving():
        auth = {"token": {"realm": f"http://{tokens.host}/token", "service": "test-registry",
                          "issuer": "test-issuer", "rootcertbundle": str(ca)}}
        with running_registry(tmp_path / "registry", auth=auth) as registry:
            target = f"oci://{registry.host}/acme/model:v1"
            anonymous = cli("push", chain.work / "dist", target, "--plain-http", cache=cache)
            assert_error(anonymous, 2, "token service refused (401)")
            docker = tmp_path / "docker"
            docker.mkdir()
            (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {
                "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
            env = {"MODEL_VERIFIER_CACHE": str(cache), "DOCKER_CONFIG": str(docker)}
            pushed = run(["push", chain.work / "dist", target, "--attestations",
                          chain.attestations, "--plain-http", "--json"], env=env)
            assert pushed.code == 0, pushed.output
            assert "repository:acme/model:pull,push" in granted
            digest = json.loads(pushed.stdout)["digest"]
            verified = run([f"oci://{registry.host}/acme/model@{digest}", "--policy",
                            chain.policy, "--plain-http"], env=env, program="verify-model")
            assert verified.code == 0, verified.output
            assert "repository:acme/model:pull" in granted
            wrong = run(["pull", target, tmp_path / "out", "--plain-http", "--username",
                         "alice", "--password-stdin"], env={**env, "DOCKER_CONFIG": ""},
                        program="model-verifier")
            assert wrong.code == 2  # no password on stdin: the empty one is refused


def test_no_password_on_the_command_line(cache: Path) -> None:
    result = cli("pull", "oci://127.0.0.1:1/acme/model:v1", cache.parent / "out",
                 "--username", "alice", "--plain-http", cache=cache)
    assert_error(result, 2, "--username needs --password-stdin")





def test_the_cache_lives_where_the_user_says(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from verifier.interop.oci.cache import default_cache_dir

    monkeypatch.delenv("MODEL_VERIFIER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "model-verifier"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "model-verifier"
    monkeypatch.setenv("MODEL_VERIFIER_CACHE", str(tmp_path / "chosen"))
    assert default_cache_dir() == tmp_path / "chosen"


@needs_registry
def test_pull_with_a_cache_flag_fills_that_cache(chain: Chain, registry: RunningRegistry,
                                                 cache: Path, tmp_path: Path) -> None:
    pushed = push(chain, registry, cache)
    chosen = tmp_path / "chosen-cache"
    pulled = cli("pull", pushed["reference"], tmp_path / "out", "--plain-http", "--cache",
                 chosen, cache=cache)
    assert pulled.code == 0, pulled.output
    digest = hashlib.sha256(chain.artifact.read_bytes()).hexdigest()
    assert (chosen / "oci" / "blobs" / "sha256" / digest).read_bytes() == \
        chain.artifact.read_bytes()
    assert not (cache / "oci" / "blobs" / "sha256" / digest).exists()


def test_attach_leaves_the_index_to_a_registry_with_the_referrers_api(cache: Path) -> None:
    """A registry that indexes a referrer itself says so (OCI-Subject); no tag-schema index is
    written there. One that does not gets the `sha256-HEX` index."""
    from verifier.interop.oci import media, store
    from verifier.interop.oci.client import Registry
    from verifier.interop.oci.reference import parse_reference

    subject_manifest = _manifest_with([])
    subject = media.sha256_digest(subject_manifest)
    bundle = b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'
    for with_api in (True, False):
        answers: dict[str, Any] = {
            f"/v2/acme/model/manifests/{subject}": (200, {}, subject_manifest),
            "/v2/acme/model/blobs/uploads/": (202, {"Location": "/v2/acme/model/upload/1"}, b""),
            "/v2/acme/model/upload/1": (201, {}, b""),
        }
        if with_api:
            answers[f"/v2/acme/model/referrers/{subject}"] = (
                200, {"Content-Type": INDEX}, media.index_document([]))

        def stored(handler: BaseHTTPRequestHandler, api: bool = with_api) -> None:
            handler.send_response(201)
            if api:
                handler.send_header("OCI-Subject", subject)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        referrer = media.bundle_manifest(media.Descriptor(MANIFEST, subject,
                                                          len(subject_manifest)),
                                         media.descriptor_of(media.BUNDLE, bundle), None)
        answers[f"/v2/acme/model/manifests/{media.sha256_digest(referrer)}"] = stored
        answers[f"/v2/acme/model/manifests/sha256-{subject[7:]}"] = (
            lambda h: stored(h) if h.command == "PUT" else _not_found(h))
        with Scripted(answers).serving() as server:
            client = Registry(parse_reference(f"oci://{server.host}/acme/model"),
                              plain_http=True)
            (done,) = store.attach(client, subject, [("b.json", bundle)])
        assert done.status == "attached"
        tag_puts = [path for method, path, _ in server.seen
                    if method == "PUT" and "sha256-" in path]
        assert tag_puts == ([] if with_api else [f"/v2/acme/model/manifests/sha256-{subject[7:]}"])


def _not_found(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(404)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


@needs_registry
def test_record_digests_travel_with_the_model_and_serve_contamination(
        registry: RunningRegistry, cache: Path, tmp_path: Path) -> None:
    """A data step's record-digest file is attached beside its bundle, pulled by digest
    (named by it, whatever the registry says), and the pulled copy answers `contamination`
    offline exactly as the local one does. Attaching again adds nothing."""
    from helpers import make_keys, record_step, write_policy

    work = tmp_path / "work"
    work.mkdir()
    keys = make_keys(tmp_path / "keys", "builder")
    rows = [f"training record number {n} has enough words to be kept here" for n in range(50)]
    (work / "raw.txt").write_text("\n".join(rows) + "\n")
    fast = ["--sandbox", "none", "--no-trace"]
    prepare = ("import pathlib; pathlib.Path('train.txt').write_text("
               "pathlib.Path('raw.txt').read_text() + 'the end\\n')")
    train = ("import hashlib, pathlib; pathlib.Path('model.bin').write_bytes("
             "hashlib.sha256(pathlib.Path('train.txt').read_bytes()).digest())")
    assert record_step(work, "prepare", keys.private, ["raw.txt"], ["train.txt"], prepare,
                       extra=[*fast, "--record-digests", "train.txt"]).code == 0
    assert record_step(work, "train", keys.private, ["train.txt"], ["model.bin"], train,
                       extra=fast).code == 0
    policy = write_policy(work / "policy.yaml", {
        "version": 1, "name": "data", "signers": {"builder": {"key": str(keys.public)}},
        "sources": [{"name": "raw.txt",
                     "sha256": hashlib.sha256((work / "raw.txt").read_bytes()).hexdigest()}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare"]}]})
    (work / "bench.txt").write_text(rows[7] + "\n" + "a question nobody trained on at all "
                                    "in this whole test\n")
    [local] = (work / "attestations").rglob("*.mvrd")

    pushed = cli("push", work / "model.bin", f"oci://{registry.host}/acme/data:v1",
                 "--attestations", work / "attestations", "--plain-http", "--json",
                 cache=cache)
    assert pushed.code == 0, pushed.output
    result = json.loads(pushed.stdout)
    kinds = sorted((a["kind"], a["status"]) for a in result["attached"])
    assert kinds == [("bundle", "attached")] * 2 + [("record-digests", "attached")]
    reference = f"oci://{registry.host}/acme/data@{result['digest']}"
    # Read back raw: a referrer of its own artifact type whose one layer is the file's bytes.
    index, _ = get_json(registry.url(f"acme/data/manifests/sha256-{result['digest'][7:]}"),
                        INDEX)
    [entry] = [m for m in index["manifests"]
               if m["artifactType"] == "application/vnd.model-verifier.record-digests.v1"]
    referrer, _ = get_json(registry.url(f"acme/data/manifests/{entry['digest']}"), MANIFEST)
    assert referrer["subject"]["digest"] == result["digest"]
    blob = requests.get(registry.url(f"acme/data/blobs/{referrer['layers'][0]['digest']}"),
                        timeout=10).content
    assert blob == local.read_bytes()

    again = cli("attach", reference, work / "attestations", "--plain-http", "--json",
                cache=cache)
    assert again.code == 0, again.output
    assert {a["status"] for a in json.loads(again.stdout)["attached"]} == {"already attached"}

    out = tmp_path / "pulled"
    pulled = cli("pull", reference, out, "--plain-http", "--json", cache=cache)
    assert pulled.code == 0, pulled.output
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    assert json.loads(pulled.stdout)["record_digests"] == [
        str((out / "attestations" / "record-digests" / f"{sha}.mvrd").resolve())]
    answers = []
    for digests_from, attestations, artifact in (
            (work / "attestations", work / "attestations", work / "model.bin"),
            (out / "attestations", out / "attestations", out / "model.bin")):
        checked = run(["contamination", artifact, "--policy", policy, "--attestations",
                       attestations, "--digests-from", digests_from, "--benchmark",
                       work / "bench.txt", "--json"])
        assert checked.code == 1, checked.output  # one of two items was trained on
        report = json.loads(checked.stdout)
        assert "benchmarks" in report, report.get("problems")
        answers.append([(b["items"], b["overlapping_items"], b["exact_items"])
                        for b in report["benchmarks"]])
    assert answers[0] == answers[1] == [(2, 1, 1)]


# --- names, referrers, redirects and time: what a hostile registry may try -----------------

def _model(layers: list[dict[str, Any]], name: str = "model", kind: str = "directory") -> bytes:
    return _manifest_with(layers, annotations={"org.opencontainers.image.title": name,
                                               "dev.model-verifier.model.kind": kind})


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


path_component = st.sampled_from(["a", "b", "a-b", "a.b", "ab", "a0"])


@given(paths=st.lists(st.lists(path_component, min_size=1, max_size=3).map("/".join),
                      min_size=1, max_size=6))
def test_a_path_named_twice_or_as_file_and_directory_is_always_found(paths: list[str]) -> None:
    """The product's clash check agrees with the obvious one (every directory of every path
    against every file) on paths built to share prefixes like "a", "a-b" and "a/b"."""
    from verifier.errors import InputError
    from verifier.interop.oci import media

    files = set(paths)
    directories = {"/".join(p.split("/")[:n]) for p in paths for n in range(1, p.count("/") + 1)}
    clash = len(files) < len(paths) or bool(files & directories)
    manifest = media.parse_manifest(_model([_layer(b"", p) for p in paths]), "m")
    if clash:
        with pytest.raises(InputError, match="named twice, or as a file and a directory"):
            media.model_files(manifest, "m")
    else:
        assert [p for p, _ in media.model_files(manifest, "m")[2]] == paths


def test_deep_layer_paths_cost_memory_in_proportion_to_the_manifest() -> None:
    """Paths of 2,000 components each: the check must not build every prefix of every path
    (that is quadratic: a 4 MiB manifest of such paths asked for gigabytes)."""
    import tracemalloc

    from verifier.interop.oci import media

    paths = [(f"p{i:03d}/" + "a/" * 2045)[:4090].rstrip("/") for i in range(64)]
    data = _model([_layer(b"", p) for p in paths])
    manifest = media.parse_manifest(data, "m")
    tracemalloc.start()
    try:
        _, _, files = media.model_files(manifest, "m")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(files) == 64
    assert peak < 2 * len(data), (peak, len(data))  # the quadratic way took ~1,000 times more


DEEP = "/".join(["d" * 200] * 20)  # 4,019 bytes: every rule holds, but not under any directory
NAME_CASES = {
    "component over 255 bytes": (_model([_layer(b"w", "x" * 256)]), "longer than the 255 bytes"),
    "lone surrogate": (_model([_layer(b"w", "weights-\ud800.bin")]), "not a valid UTF-8"),
    "model name over 255 bytes": (_model([_layer(b"w", "n" * 300)], "n" * 300, "file"),
                                  "longer than the 255 bytes"),
    "model name with a surrogate": (_model([_layer(b"w", "a.bin")], "m\udcff"),
                                    "not a valid UTF-8"),
    "C1 control character": (_model([_layer(b"w", "a\x85b.bin")]), "not a safe relative"),
    "path over 4095 bytes": (_model([_layer(b"w", "a/" * 2047 + "bc")]), "not a safe relative"),
    "path too long under the target": (_model([_layer(b"w", DEEP)]), "cannot be written here"),
}


@pytest.mark.parametrize("case", sorted(NAME_CASES))
def test_names_no_file_system_can_hold_are_refused_in_one_sentence(
        case: str, chain: Chain, cache: Path, tmp_path: Path) -> None:
    data, fragment = NAME_CASES[case]
    answers: dict[str, Any] = {"/v2/": (200, {}, b"{}"),
                               "/v2/acme/model/manifests/v1": (200, {}, data),
                               f"/v2/acme/model/blobs/{_digest(b'w')}": (200, {}, b"w")}
    with Scripted(answers).serving() as server:
        pulled = cli("pull", f"oci://{server.host}/acme/model:v1", tmp_path / "out",
                     "--plain-http", cache=cache)
        verified = cli(f"oci://{server.host}/acme/model:v1", "--policy", chain.policy,
                       "--plain-http", cache=cache, program="verify-model")
    assert_error(pulled, 2, fragment)
    assert_error(verified, 2, fragment)
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.*")) == []
    assert blobs_and_temporaries(cache)[1] == []


def test_a_name_spelled_with_surrogates_cannot_stand_in_for_another(cache: Path,
                                                                    tmp_path: Path) -> None:
    """"\\udcc3\\udca9.bin" differs from "é.bin" as text but is written to disk as the same
    bytes: one layer would silently replace the other, so the manifest is refused."""
    evil, good = b"EVIL weights", b"good weights"
    data = _model([_layer(evil, "\udcc3\udca9.bin"), _layer(good, "\u00e9.bin")])
    answers: dict[str, Any] = {"/v2/": (200, {}, b"{}"),
                               "/v2/acme/model/manifests/v1": (200, {}, data),
                               f"/v2/acme/model/blobs/{_digest(evil)}": (200, {}, evil),
                               f"/v2/acme/model/blobs/{_digest(good)}": (200, {}, good)}
    with Scripted(answers).serving() as server:
        result = cli("pull", f"oci://{server.host}/acme/model:v1", tmp_path / "out",
                     "--plain-http", cache=cache)
    assert_error(result, 2, "not a valid UTF-8 file name")
    assert not (tmp_path / "out").exists()


def test_referrer_bundles_are_fetched_once_each_streamed_and_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index listing one referrer many times, and other referrers holding the same bundle,
    costs one fetch of each manifest and of each distinct bundle; bundles go to disk as they
    arrive, never all in memory; past the cap for one model the rest are noted and skipped."""
    import tracemalloc

    from verifier.interop.oci import media, store
    from verifier.interop.oci.client import Registry
    from verifier.interop.oci.reference import parse_reference

    subject = media.Descriptor(MANIFEST, "sha256:" + "1" * 64, 10)
    bundles = [bytes([65 + n]) * (4 << 20) for n in range(4)]
    layers = [media.descriptor_of(media.BUNDLE, b) for b in bundles]
    first = media.bundle_manifest(subject, layers[0], None)
    same_bundle = media.bundle_manifest(subject, layers[0], "https://example.com/other")
    others = [media.bundle_manifest(subject, layer, None) for layer in layers[1:]]
    referrers = [first] * 40 + [same_bundle] + others
    listing = media.index_document([media.descriptor_of(MANIFEST, m, artifact_type=BUNDLE)
                                    for m in referrers])
    answers: dict[str, Any] = {
        f"/v2/acme/model/referrers/{subject.digest}": (200, {"Content-Type": INDEX}, listing)}
    answers.update({f"/v2/acme/model/manifests/{media.sha256_digest(m)}": (200, {}, m)
                    for m in referrers})
    answers.update({f"/v2/acme/model/blobs/{layer.digest}": (200, {}, b)
                    for layer, b in zip(layers, bundles, strict=True)})
    monkeypatch.setattr(store, "MAX_BUNDLES_BYTES", 3 * (4 << 20))
    with Scripted(answers).serving() as server:
        client = Registry(parse_reference(f"oci://{server.host}/acme/model"), plain_http=True)
        notes: list[str] = []
        listed, _ = store.referrer_index(client, subject.digest)
        tracemalloc.start()
        try:
            found = store._bundle_referrers(client, subject.digest, notes, listed,
                                            into=tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    gets = [path for method, path, _ in server.seen if method == "GET"]
    assert gets.count(f"/v2/acme/model/manifests/{media.sha256_digest(first)}") == 1
    assert gets.count(f"/v2/acme/model/blobs/{layers[0].digest}") == 1
    assert [r.bundle_digest for r in found] == [layer.digest for layer in layers[:3]]
    assert f"/v2/acme/model/blobs/{layers[3].digest}" not in gets
    assert len(notes) == 1 and "ignored bundle referrers beyond" in notes[0], notes
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == bundles[:3]
    assert peak < 4 << 20, peak  # less than one bundle: each streamed to its file


def test_a_challenge_from_a_host_redirected_to_gets_no_credentials(cache: Path,
                                                                   tmp_path: Path) -> None:
    """The registry redirects a blob to another host, which asks for a Bearer token from a
    realm of its own: answering would hand it the registry's password. It is refused."""
    weights = b"weights"
    data = _model([_layer(weights, "model.bin")], "model.bin", "file")
    blob = f"/v2/acme/model/blobs/{_digest(weights)}"
    with Scripted({}).serving() as other:
        port = other.host.split(":")[1]
        other.answers[blob] = (401, {"WWW-Authenticate": f'Bearer realm="http://localhost:'
                                                         f'{port}/token",service="x"'}, b"")
        other.answers["/token"] = (200, {"Content-Type": "application/json"}, b'{"token":"t"}')
        answers: dict[str, Any] = {
            "/v2/": (200, {}, b"{}"), "/v2/acme/model/manifests/v1": (200, {}, data),
            blob: (307, {"Location": f"http://localhost:{port}{blob}"}, b"")}
        with Scripted(answers).serving() as registry:
            docker = tmp_path / "docker"
            docker.mkdir()
            (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {
                "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
            result = run(["pull", f"oci://{registry.host}/acme/model:v1", tmp_path / "out",
                          "--plain-http"], env={"MODEL_VERIFIER_CACHE": str(cache),
                                                "DOCKER_CONFIG": str(docker)})
    assert_error(result, 2, f"redirected the request to localhost:{port}",
                 "not sent to another host")
    assert [path for _, path, _ in other.seen] == [blob]  # the redirect, and nothing after
    assert all("Authorization" not in headers for _, _, headers in other.seen)


def test_a_registry_that_drips_a_manifest_is_cut_off(cache: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every tenth of a second never trips a per-read timeout; the document deadline
    (shortened here from its 120 s) ends the wait."""
    import time

    from verifier.interop.oci import client

    data = _model([_layer(b"w", "model.bin")], "model.bin", "file")

    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", MANIFEST)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            for byte in data:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    monkeypatch.setattr(client, "DOCUMENT_SECONDS", 1.5)
    answers: dict[str, Any] = {"/v2/": (200, {}, b"{}"), "/v2/acme/model/manifests/v1": drip}
    with Scripted(answers).serving() as server:
        started = time.monotonic()
        result = cli("pull", f"oci://{server.host}/acme/model:v1", tmp_path / "out",
                     "--plain-http", cache=cache)
        took = time.monotonic() - started
    assert_error(result, 2, "took more than 1.5 s to send a small document")
    assert took < 15, took  # the whole manifest would take a minute


def test_a_file_posing_as_record_digests_is_refused_before_the_registry_is_asked(
        tmp_path: Path, cache: Path) -> None:
    """attach and push read every *.mvrd they are given: one that is no record-digest file, or
    no regular file, is one sentence naming it (exit 2), and nothing is sent anywhere."""
    folder = tmp_path / "attestations"
    folder.mkdir()
    (folder / "notes.mvrd").write_text("not digests\n")
    unreachable = "oci://127.0.0.1:9/acme/model@sha256:" + "1" * 64
    result = cli("attach", unreachable, folder, "--plain-http", cache=cache)
    assert_error(result, 2, "notes.mvrd", "not a record-digest file")
    (folder / "notes.mvrd").unlink()
    os.mkfifo(folder / "pipe.mvrd")
    result = cli("push", tmp_path / "missing-model", "oci://127.0.0.1:9/acme/model:v1",
                 "--attestations", folder, "--plain-http", cache=cache)
    assert_error(result, 2, "pipe.mvrd", "not a regular file")


@needs_registry
def test_a_referrer_whose_blob_is_gone_is_skipped_and_attach_restores_the_blob(
        chain: Chain, registry: RunningRegistry, cache: Path, tmp_path: Path) -> None:
    """The package step's bundle blob is deleted from the registry's storage, as a garbage
    collection or an operator could; an intact copy of the same envelope (other bytes) is
    attached too. verify-model skips the broken referrer with one note and passes on the copy;
    attach uploads the lost blob again instead of calling it already attached."""
    pushed = push(chain, registry, cache)
    reference = f"oci://{registry.host}/acme/model@{pushed['digest']}"
    copy = tmp_path / "copy" / "package-copy.intoto.json"
    copy.parent.mkdir()
    original = chain.attestation("package").read_bytes()
    copy.write_text(json.dumps(json.loads(original), indent=1), encoding="utf-8")
    assert cli("attach", reference, copy, "--plain-http", cache=cache).code == 0
    lost = "sha256:" + hashlib.sha256(original).hexdigest()
    registry.blob_file(lost).unlink()
    assert requests.get(registry.url(f"acme/model/blobs/{lost}"), timeout=10).status_code == 404

    result = verify(reference, chain, cache)
    assert result.code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    broken = [note for note in notes if lost in note]
    assert len(broken) == 1 and "gone from the registry" in broken[0], notes

    attach = cli("attach", reference, chain.attestations, "--plain-http", "--json",
                 cache=cache)
    assert attach.code == 0, attach.output
    statuses = {a["bundle_digest"]: a["status"]
                for a in json.loads(attach.stdout)["attached"]}
    assert statuses[lost] == "blob restored", statuses
    restored = requests.get(registry.url(f"acme/model/blobs/{lost}"), timeout=10)
    assert restored.status_code == 200
    assert hashlib.sha256(restored.content).hexdigest() == lost[7:]


def test_many_broken_referrers_are_each_noted_once(chain: Chain, cache: Path) -> None:
    """Hundreds of referrers whose manifests the registry does not have (a fake registry lists
    them): verify-model notes each one exactly once, in its text output and in --json."""
    from verifier.interop.oci import media

    data = chain.artifact.read_bytes()
    layer = media.descriptor_of(media.layer_media_type("model.bin"), data,
                                annotations={media.TITLE: "model.bin"})
    config = media.model_config("model.bin", [layer])
    config_descriptor = media.descriptor_of(media.MODEL_CONFIG, config)
    manifest = media.model_manifest("model.bin", "file", config_descriptor, [layer])
    subject = media.sha256_digest(manifest)
    missing = [f"sha256:{n:064x}" for n in range(1, 301)]
    listing = media.index_document([media.Descriptor(MANIFEST, digest, 100,
                                                     artifact_type=BUNDLE)
                                    for digest in missing])
    answers: dict[str, Any] = {
        "/v2/": (200, {}, b"{}"),
        f"/v2/acme/model/manifests/{subject}": (200, {"Content-Type": MANIFEST}, manifest),
        f"/v2/acme/model/blobs/{layer.digest}": (200, {}, data),
        f"/v2/acme/model/blobs/{config_descriptor.digest}": (200, {}, config),
        f"/v2/acme/model/referrers/{subject}": (200, {"Content-Type": INDEX}, listing)}
    with Scripted(answers).serving() as server:
        reference = f"oci://{server.host}/acme/model@{subject}"
        as_json = verify(reference, chain, cache, "--attestations", chain.attestations)
        text = cli(reference, "--policy", chain.policy, "--plain-http", "--attestations",
                   chain.attestations, "--quiet", cache=cache, program="verify-model")
    assert as_json.code == 0 and text.code == 0, text.output
    notes = json.loads(as_json.stdout)["notes"]
    lines = text.stdout.splitlines()
    for digest in missing:
        assert sum(digest in note for note in notes) == 1, digest
        assert sum(digest in line for line in lines) == 1, digest


# --- rebuild --materials-from oci:// ---------------------------------------------------------

TENSOR_STEP = ("import os, numpy as np; from safetensors.numpy import save_file; "
               "x = np.arange(12, dtype=np.float32).reshape(3, 4); "
               "save_file({'w': x * np.float32(1.5) + np.float32(os.environ['NOISE']), "
               "'b': x.sum(axis=0)}, 'weights.safetensors')")


@dataclass(frozen=True)
class CentralBuild:
    """A recorded step whose one product, weights.safetensors, is in the registry only: the
    source tree no longer holds it, as an independent rebuilder's checkout would not."""

    src: Path
    builder: KeyPair
    rebuilder: KeyPair
    registry: RunningRegistry
    digest: str  # the pushed model's manifest

    def rebuild(self, tmp_path: Path, where: str, *extra: str) -> Any:
        # NOISE=0.001 makes the rebuilt weights differ from the central ones, as drift would.
        return run(["rebuild", self.src / "attestations", "--source", self.src, "--key",
                    self.rebuilder.private, "--trust-key", self.builder.public, "--out",
                    tmp_path / "rebuilds", "--env", "NOISE=0.001", "--materials-from", where,
                    "--plain-http", "--cache", tmp_path / "cache", *extra],
                   cwd=self.src, env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CentralBuild]:
    if shutil.which("docker-registry") is None:
        pytest.skip(SKIP_REASON)
    root = tmp_path_factory.mktemp("materials")
    builder, rebuilder = make_keys(root / "keys", "builder"), make_keys(root / "keys", "rb")
    src = root / "src"
    src.mkdir()
    result = run(["record", "--step", "train", "--key", builder.private, "--product",
                  "weights.safetensors", "--env", "NOISE=0", "--", sys.executable, "-c",
                  TENSOR_STEP], cwd=src)
    assert result.code == 0, result.output
    with running_registry(root / "registry") as registry:
        pushed = cli("push", src / "weights.safetensors",
                     f"oci://{registry.host}/acme/weights:v1", "--plain-http", "--json",
                     cache=root / "push-cache")
        assert pushed.code == 0, pushed.output
        (src / "weights.safetensors").unlink()
        yield CentralBuild(src, builder, rebuilder, registry,
                           json.loads(pushed.stdout)["digest"])


def _diff_line(stdout: str) -> int:
    """The index of the line giving the tensor diff, after the plan."""
    lines = stdout.splitlines()
    [index] = [i for i, line in enumerate(lines) if "tensor(s) differ" in line]
    assert lines[index].strip().startswith("weights.safetensors: "), lines[index]
    assert lines[index - 1].startswith("DIFFERS"), lines[index - 1]
    return index


def test_rebuild_materials_from_the_registry_prints_the_tensor_diff(
        central: CentralBuild, tmp_path: Path) -> None:
    where = f"oci://{central.registry.host}/acme/weights@{central.digest}"
    result = central.rebuild(tmp_path, where)
    assert result.code == 1, result.output
    index = _diff_line(result.stdout)
    assert index < 10, result.stdout  # the reason is among the first lines, not buried
    assert "2 of 2 tensor(s) differ" not in result.stdout  # 'b' does not use NOISE
    assert "1 of 2 tensor(s) differ, worst w" in result.stdout
    assert "central products: 1 file(s)" in result.stdout and central.digest in result.stdout
    # The signed rebuild holds the same diff, against the central copy's digest.
    bundle = read_json(tmp_path / "rebuilds" / "rb" / "train.rebuild.intoto.json")
    assert dsse_verifies(bundle, central.rebuilder.public.read_bytes())
    [entry] = payload_of(bundle)["predicate"]["results"]
    assert entry["verdict"] != "IDENTICAL" and entry["diff"]["tensors"]
    pushed = hashlib.sha256(central.registry.blob_file(
        get_json(central.registry.url(f"acme/weights/manifests/{central.digest}"), MANIFEST)
        [0]["layers"][0]["digest"]).read_bytes()).hexdigest()
    assert entry["expected"]["sha256"] == pushed
    # The fetched copy was private to this rebuild and is gone.
    assert blobs_and_temporaries(tmp_path / "cache")[1] == []


def test_rebuild_materials_from_a_tag_resolves_and_prints_the_digest(
        central: CentralBuild, tmp_path: Path) -> None:
    tag = f"oci://{central.registry.host}/acme/weights:v1"
    result = central.rebuild(tmp_path, tag)
    assert result.code == 1, result.output
    assert f"resolved {tag} to {central.digest}" in result.stdout, result.stdout
    _diff_line(result.stdout)


def test_rebuild_materials_from_a_registry_without_the_model_is_one_sentence(
        central: CentralBuild, tmp_path: Path) -> None:
    missing = f"oci://{central.registry.host}/acme/nonesuch@sha256:{'0' * 64}"
    result = central.rebuild(tmp_path, missing)
    assert_error(result, 2, "acme/nonesuch@sha256:", "no such manifest")
    assert not (tmp_path / "rebuilds").exists()


def test_rebuild_materials_from_a_tampered_registry_runs_nothing(
        central: CentralBuild, tmp_path: Path) -> None:
    """The registry serves other bytes under the central product's layer digest."""
    manifest, _ = get_json(central.registry.url(f"acme/weights/manifests/{central.digest}"),
                           MANIFEST)
    stored = central.registry.blob_file(manifest["layers"][0]["digest"])
    honest = stored.read_bytes()
    stored.write_bytes(honest.replace(b"\x00", b"\x01", 1))
    try:
        result = central.rebuild(
            tmp_path, f"oci://{central.registry.host}/acme/weights@{central.digest}")
    finally:
        stored.write_bytes(honest)
    assert_error(result, 1, "weights.safetensors", "tampered with")
    assert "plan:" not in result.stdout and not (tmp_path / "rebuilds").exists()
    assert blobs_and_temporaries(tmp_path / "cache")[1] == []
