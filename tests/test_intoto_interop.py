"""in-toto interop: exported links pass the real `in-toto-verify`, and verify-model checks our
attestations against a layout. The layouts are written here with the in-toto library itself
(not with the product), for the three-step chain of helpers.build_chain."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import (
    BIN,
    Chain,
    assert_error,
    assert_no_traceback,
    build_chain,
    make_keys,
    payload_of,
    read_json,
    run,
)

IN_TOTO_VERIFY = BIN / "in-toto-verify"
pytestmark = pytest.mark.skipif(not IN_TOTO_VERIFY.exists(),
                                reason="the in-toto command line tools are not installed")

# What each step of the chain may read and write, with MATCH rules tying each step's materials
# to the products of the step before it.
RULES: dict[str, tuple[list[list[str]], list[list[str]]]] = {
    "prepare": ([["ALLOW", "raw.txt"], ["ALLOW", "prep.py"], ["DISALLOW", "*"]],
                [["CREATE", "data/clean.txt"], ["DISALLOW", "*"]]),
    "train": ([["MATCH", "data/clean.txt", "WITH", "PRODUCTS", "FROM", "prepare"],
               ["DISALLOW", "*"]],
              [["CREATE", "model/weights.bin"], ["DISALLOW", "*"]]),
    "package": ([["MATCH", "model/weights.bin", "WITH", "PRODUCTS", "FROM", "train"],
                 ["DISALLOW", "*"]],
                [["CREATE", "dist/*"], ["DISALLOW", "*"]]),
}


def write_layout(path: Path, functionary_pub: Path, owner_key: Path | None, *,
                 expires: str | None = None, inspection: bool = False,
                 rules: dict[str, tuple[list[list[str]], list[list[str]]]] = RULES) -> Path:
    """A root layout for the chain, signed by owner_key (unsigned when None)."""
    from in_toto.models._signer import load_public_key_from_file
    from in_toto.models.layout import Inspection, Layout, Step
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import CryptoSigner

    functionary = load_public_key_from_file(str(functionary_pub))
    layout = Layout()
    layout.set_relative_expiration(days=30)
    if expires is not None:
        layout.expires = expires
    layout.keys = {functionary["keyid"]: functionary}
    steps = []
    for name, (materials, products) in rules.items():
        step = Step(name=name)
        step.pubkeys = [functionary["keyid"]]
        step.expected_materials = materials
        step.expected_products = products
        steps.append(step)
    layout.steps = steps
    if inspection:
        check = Inspection(name="look")
        check.set_run_from_string("true")
        layout.inspect = [check]
    metablock = Metablock(signed=layout)
    if owner_key is not None:
        private = serialization.load_pem_private_key(owner_key.read_bytes(), None)
        metablock.create_signature(CryptoSigner(private))
    metablock.dump(str(path))
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    chain = build_chain(tmp_path_factory.mktemp("intoto"))
    make_keys(chain.root / "keys", "owner")
    write_layout(chain.root / "root.layout", chain.keys("builder").public,
                 chain.keys("owner").private)
    return chain



def export(chain: Chain, out: Path, *extra: str) -> Any:
    result = run(["export", chain.attestations, "--format", "in-toto-link",
                  "--key", chain.keys("builder").private, "--out", out, "--json", *extra])
    assert_no_traceback(result)
    return result


def in_toto_verify(chain: Chain, link_dir: Path, layout: Path | None = None
                   ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IN_TOTO_VERIFY), "--layout", str(layout or chain.root / "root.layout"),
         "--verification-keys", str(chain.keys("owner").public), "--link-dir", str(link_dir)],
        capture_output=True, text=True, timeout=120, check=False)


def classic_signature_verifies(link: dict[str, Any], public_pem: bytes) -> bool:
    """A classic link signature, checked here: ECDSA over the canonical JSON of `signed`."""
    from securesystemslib.formats import encode_canonical

    message = encode_canonical(link["signed"]).encode()
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    for signature in link["signatures"]:
        try:
            key.verify(bytes.fromhex(signature["sig"]), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return True
    return False


# --- export ------------------------------------------------------------------------------------


def test_exported_links_pass_the_real_in_toto_verify(chain: Chain, tmp_path: Path) -> None:
    result = export(chain, tmp_path / "links")
    assert result.code == 0, result.output
    written = json.loads(result.stdout)["links"]
    assert sorted(w["step"] for w in written) == ["package", "prepare", "train"]
    verified = in_toto_verify(chain, tmp_path / "links")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_link_says_what_the_attestation_says_and_is_signed_by_the_key(
        chain: Chain, tmp_path: Path) -> None:
    export(chain, tmp_path / "links")
    links = sorted((tmp_path / "links").glob("package.*.link"))
    assert len(links) == 1
    keyid = read_json(links[0])["signatures"][0]["keyid"]
    assert links[0].name == f"package.{keyid[:8]}.link"
    link = read_json(links[0])
    assert classic_signature_verifies(link, chain.keys("builder").public_pem)
    assert not classic_signature_verifies(link, chain.keys("outsider").public_pem)
    statement = payload_of(read_json(chain.attestation("package")))
    signed = link["signed"]
    assert signed["_type"] == "link" and signed["name"] == "package"
    # The product directory is flattened to its files; the dirHash entry is not a link product.
    assert signed["products"] == {
        s["name"]: {"sha256": s["digest"]["sha256"]}
        for s in statement["subject"] if "sha256" in s["digest"]}
    assert set(signed["products"]) == {"dist/model.bin", "dist/config.json"}
    materials = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert signed["materials"] == {m["name"]: {"sha256": m["digest"]["sha256"]}
                                   for m in materials}
    assert signed["command"] == statement["predicate"]["buildDefinition"][
        "externalParameters"]["argv"]
    assert signed["byproducts"]["return-value"] == 0
    assert signed["environment"]["attestation"]["payloadSha256"]


def test_a_product_tampered_between_steps_fails_the_real_in_toto_verify(
        chain: Chain, tmp_path: Path) -> None:
    # The weights change after train attested them; package then consumes the changed file.
    (chain.work / "model" / "weights.bin").write_bytes(b"swapped weights")
    assert chain.record("package").code == 0
    export(chain, tmp_path / "links")
    verified = in_toto_verify(chain, tmp_path / "links")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "model/weights.bin" in verified.stdout + verified.stderr


def test_an_edited_link_fails_the_real_in_toto_verify(chain: Chain, tmp_path: Path) -> None:
    export(chain, tmp_path / "links")
    path = next((tmp_path / "links").glob("train.*.link"))
    link = read_json(path)
    link["signed"]["products"]["model/weights.bin"]["sha256"] = "0" * 64
    path.write_text(json.dumps(link), encoding="utf-8")
    verified = in_toto_verify(chain, tmp_path / "links")
    assert verified.returncode == 1, verified.stdout + verified.stderr


def test_export_refuses_attestations_the_key_did_not_sign(chain: Chain, tmp_path: Path) -> None:
    result = run(["export", chain.attestations, "--key", chain.keys("outsider").private,
                  "--out", tmp_path / "links"])
    assert_error(result, 1, "package.intoto.json", "not signed by the export key")
    assert not (tmp_path / "links").exists()
    # Naming the builder's public key says which signatures the exporter vouches for.
    result = run(["export", chain.attestations, "--key", chain.keys("outsider").private,
                  "--attested-by", chain.keys("builder").public, "--out", tmp_path / "links"])
    assert result.code == 0, result.output
    assert len(list((tmp_path / "links").glob("*.link"))) == 3


def test_export_bad_input_is_one_sentence(chain: Chain, tmp_path: Path) -> None:
    assert_error(run(["export", chain.attestations, "--format", "spdx", "--key",
                      chain.keys("builder").private, "--out", tmp_path / "links"]),
                 2, "in-toto-link")
    assert_error(run(["export", tmp_path / "missing", "--key", chain.keys("builder").private,
                      "--out", tmp_path / "links"]), 2, "missing")
    export(chain, tmp_path / "links")
    again = run(["export", chain.attestations, "--key", chain.keys("builder").private,
                 "--out", tmp_path / "links"])
    assert_error(again, 2, "already exists", "--force")


# --- verify-model --layout ---------------------------------------------------------------------


def verify_layout(chain: Chain, *extra: str | Path, artifact: str = "dist/model.bin") -> Any:
    result = run([artifact, "--layout", chain.root / "root.layout", "--layout-key",
                  chain.keys("owner").public, *extra], cwd=chain.work, program="verify-model")
    assert_no_traceback(result)
    return result


def test_verify_model_with_a_layout_passes_for_the_recorded_chain(chain: Chain) -> None:
    for artifact in ("dist/model.bin", "dist"):
        result = verify_layout(chain, "--json", artifact=artifact)
        assert result.code == 0, result.output
        report = json.loads(result.stdout)
        assert report["verdict"] == "PASS"
        assert [s["step"] for s in report["steps"]] == ["prepare", "train", "package"]
        assert all(s["signed_by"] for s in report["steps"])


def test_verify_model_with_a_layout_fails_a_broken_match_rule(chain: Chain) -> None:
    (chain.work / "model" / "weights.bin").write_bytes(b"swapped weights")
    assert chain.record("package").code == 0
    result = verify_layout(chain, "--json")
    assert result.code == 1, result.output
    [problem] = json.loads(result.stdout)["problems"]
    assert "root.layout" in problem["message"] and "model/weights.bin" in problem["message"]


def test_verify_model_with_a_layout_fails_an_artifact_no_step_produced(chain: Chain) -> None:
    (chain.work / "dist" / "model.bin").write_bytes(b"another model")
    result = verify_layout(chain, "--json")
    assert result.code == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert "dist/model.bin" in problem["message"] and "no product" in problem["message"]


def test_missing_attestations_for_a_step_fail(chain: Chain) -> None:
    chain.attestation("train").unlink()
    result = verify_layout(chain, "--json")
    assert result.code == 1
    messages = [p["message"] for p in json.loads(result.stdout)["problems"]]
    assert any("'train'" in m and "found 0" in m for m in messages), messages


def test_attestations_by_a_key_the_layout_does_not_name_do_not_count(chain: Chain) -> None:
    assert chain.record("train", signer="outsider").code == 0
    result = verify_layout(chain, "--json")
    assert result.code == 1
    messages = [p["message"] for p in json.loads(result.stdout)["problems"]]
    assert any("'train'" in m and "found 0" in m for m in messages), messages


def test_an_expired_layout_fails(chain: Chain) -> None:
    write_layout(chain.root / "root.layout", chain.keys("builder").public,
                 chain.keys("owner").private, expires="2020-01-01T00:00:00Z")
    assert_error(verify_layout(chain), 1, "root.layout", "expired")


def test_an_unsigned_layout_fails(chain: Chain) -> None:
    write_layout(chain.root / "root.layout", chain.keys("builder").public, None)
    assert_error(verify_layout(chain), 1, "root.layout", "not signed by")


def test_a_layout_signed_by_another_key_fails(chain: Chain) -> None:
    write_layout(chain.root / "root.layout", chain.keys("builder").public,
                 chain.keys("outsider").private)
    assert_error(verify_layout(chain), 1, "root.layout", "not signed by")


def test_a_layout_with_inspections_is_refused_not_run(chain: Chain) -> None:
    write_layout(chain.root / "root.layout", chain.keys("builder").public,
                 chain.keys("owner").private, inspection=True)
    assert_error(verify_layout(chain), 2, "root.layout", "inspections", "in-toto-verify")


def test_a_file_that_is_not_a_layout_is_unusable_input(chain: Chain) -> None:
    (chain.root / "root.layout").write_text("{\"signed\": {\"_type\": \"nothing\"}}")
    assert_error(verify_layout(chain), 2, "root.layout", "not in-toto layout")
    (chain.root / "root.layout").write_text("not json")
    assert_error(verify_layout(chain), 2, "root.layout")


def test_layout_flags_need_each_other(chain: Chain) -> None:
    result = run(["dist/model.bin", "--layout", chain.root / "root.layout"], cwd=chain.work,
                 program="verify-model")
    assert_error(result, 2, "--layout-key")
    result = run(["dist/model.bin", "--layout-key", chain.keys("owner").public],
                 cwd=chain.work, program="verify-model")
    assert_error(result, 2, "--layout")


def test_ed25519_links_pass_the_real_in_toto_verify(tmp_path: Path) -> None:
    from helpers import record_step

    keys = make_keys(tmp_path / "keys", "builder", algorithm="ed25519")
    owner = make_keys(tmp_path / "keys", "owner", algorithm="ed25519")
    work = tmp_path / "work"
    work.mkdir()
    (work / "raw.txt").write_text("iris\n", encoding="utf-8")
    # record makes the folder a declared product goes into before the step runs
    upper = ("import pathlib; pathlib.Path('data').mkdir(exist_ok=True); "
             "pathlib.Path('data/clean.txt').write_text(pathlib.Path('raw.txt').read_text().upper())")
    assert record_step(work, "prepare", keys.private, ["raw.txt"], ["data/clean.txt"],
                       upper).code == 0
    write_layout(tmp_path / "root.layout", keys.public, owner.private,
                 rules={"prepare": ([["ALLOW", "raw.txt"], ["DISALLOW", "*"]],
                                    [["CREATE", "data/clean.txt"], ["DISALLOW", "*"]])})
    result = run(["export", work / "attestations", "--key", keys.private, "--out",
                  tmp_path / "links"])
    assert result.code == 0, result.output
    verified = subprocess.run(
        [str(IN_TOTO_VERIFY), "--layout", str(tmp_path / "root.layout"), "--verification-keys",
         str(owner.public), "--link-dir", str(tmp_path / "links")],
        capture_output=True, text=True, timeout=120, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = run(["data/clean.txt", "--layout", tmp_path / "root.layout", "--layout-key",
                  owner.public], cwd=work, program="verify-model")
    assert result.code == 0, result.output


def test_a_link_with_a_flood_of_signatures_is_refused_unread(chain: Chain, tmp_path: Path
                                                             ) -> None:
    """Each signature of a link is tried against every policy key: a link carrying thousands
    is refused before one is checked, as an envelope is (the same cap)."""
    from verifier.errors import InputError
    from verifier.formats.envelope import MAX_SIGNATURES
    from verifier.judgement.policy import load_policy
    from verifier.neighbours.intoto_links import read_link
    from verifier.reports.audit import audit

    assert export(chain, tmp_path / "links").code == 0
    path = sorted((tmp_path / "links").glob("*.link"))[0]
    link = json.loads(path.read_text())
    link["signatures"] = link["signatures"] * 5000
    path.write_text(json.dumps(link))
    with pytest.raises(InputError, match=f"more than {MAX_SIGNATURES} are refused"):
        read_link(path)
    # Through audit it is a finding with that sentence, never a slow verification.
    report = audit([tmp_path / "links"], load_policy(chain.policy))
    assert any("are refused" in f.message and f.kind == "unreadable-bundle"
               for f in report.findings)


def test_a_directory_artifact_is_shown_a_product_by_exported_links_alone(
        chain: Chain, tmp_path: Path) -> None:
    """in-toto-verify accepts the chain of exported classic links, whose products are the
    files of dist/ one by one (links carry no dirHash); verify-model with those links alone
    must show the directory `dist` a product too: its files, every one listed, add up to it."""
    assert export(chain, tmp_path / "links").code == 0
    assert in_toto_verify(chain, tmp_path / "links").returncode == 0
    result = verify_layout(chain, "--attestations", tmp_path / "links", "--json",
                           artifact="dist")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "PASS"
    # A file added to the directory is no product of any link.
    (chain.work / "dist" / "extra.bin").write_bytes(b"planted")
    try:
        result = verify_layout(chain, "--attestations", tmp_path / "links", "--json",
                               artifact="dist")
        assert result.code == 1, result.output
    finally:
        (chain.work / "dist" / "extra.bin").unlink()
def test_links_padded_with_millions_of_objects_are_refused_in_one_sentence(
        chain: Chain, tmp_path: Path) -> None:
    """Unsigned until checked, a link is capped like a bundle: under the byte cap, 15 MB of
    `{}` decodes into millions of objects (gigabytes for eight links). Each is refused by its
    object count, named in a note, and the chain's verdict stands, in bounded memory."""
    import resource

    from verifier.errors import InputError
    from verifier.neighbours.intoto_links import MAX_LINK_OBJECTS, read_link

    assert export(chain, tmp_path / "links").code == 0
    link = json.loads(sorted((tmp_path / "links").glob("*.link"))[0].read_text())
    link["signed"]["byproducts"]["padding"] = [{}] * (15 * 1024 * 1024 // 4)
    padded = json.dumps(link, separators=(",", ":"))
    names = [chain.attestations / f"padded-{n}.link" for n in range(8)]
    for name in names:
        name.write_text(padded, encoding="utf-8")
    with pytest.raises(InputError, match=f"more than {MAX_LINK_OBJECTS} JSON objects"):
        read_link(names[0])

    def limited() -> None:  # eight links the old way took 3 GB
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))

    done = subprocess.run([str(BIN / "verify-model"), str(chain.artifact), "--json"],
                          cwd=chain.work, capture_output=True, text=True, timeout=120,
                          check=False, preexec_fn=limited)
    assert done.returncode == 0, done.stdout + done.stderr
    notes = json.loads(done.stdout)["notes"]
    for name in names:
        assert sum(name.name in note and "JSON objects" in note for note in notes) == 1, notes
