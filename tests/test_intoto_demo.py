"""in-toto's own demo supply chain through `verify-model --layout`: an RSA layout key, classic
Metablock links and DSSE link envelopes (tests/fixtures/intoto-demo/ORIGIN.md). It verifies
as in-toto's own verifier says it does, and fails after a link or the product is changed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_no_traceback, run

DEMO = Path(__file__).parent / "fixtures" / "intoto-demo"
CARL = "2f89b9272acfc8f4a0a0f094d789fdb0ba798b0fe41f2f5f417c12f0085ff498"  # in-toto's key id


def _signed_layout(directory: Path) -> Path:
    """The demo layout without its inspection, signed by alice with in-toto's library."""
    from cryptography.hazmat.primitives import serialization
    from in_toto.models.layout import Layout
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import CryptoSigner

    template = json.loads((DEMO / "demo.layout.template").read_text())
    signed = template["signed"]
    signed["inspect"] = []
    signed["expires"] = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    layout = Metablock(signed=Layout.read(signed))
    alice = serialization.load_pem_private_key((DEMO / "alice").read_bytes(), None)
    layout.create_signature(CryptoSigner(alice))  # type: ignore[arg-type]
    path = directory / "root.layout"
    layout.dump(str(path))
    return path


@pytest.fixture(params=["classic", "dsse"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    shutil.copytree(DEMO / request.param, tmp_path / "links")
    shutil.copy(DEMO / "foo.tar.gz", tmp_path / "foo.tar.gz")
    _signed_layout(tmp_path)
    return tmp_path


def _verify(work: Path, *extra: str) -> tuple[int, dict]:
    result = run(["foo.tar.gz", "--layout", "root.layout", "--layout-key",
                  str(DEMO / "alice.pub"), "--attestations", "links", "--json", *extra],
                 cwd=work, program="verify-model")
    assert_no_traceback(result)
    return result.code, json.loads(result.stdout)


def test_in_totos_own_verifier_accepts_the_prepared_demo(tmp_path: Path) -> None:
    """The reference: in-toto-verify's library on the same layout and classic links."""
    from cryptography.hazmat.primitives import serialization
    from in_toto.models.metadata import Metablock
    from in_toto.verifylib import in_toto_verify
    from securesystemslib.signer import SSlibKey

    layout_path = _signed_layout(tmp_path)
    alice = SSlibKey.from_crypto(serialization.load_pem_public_key(
        (DEMO / "alice.pub").read_bytes()))
    key = alice.to_dict()
    key["keyid"] = alice.keyid
    in_toto_verify(Metablock.load(str(layout_path)), {alice.keyid: key},
                   link_dir_path=str(DEMO / "classic"))


def test_the_demo_verifies(demo: Path) -> None:
    code, report = _verify(demo)
    assert code == 0, report
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["write-code"]["signed_by"] == ["key 776a00e2"]  # bob, by in-toto's key id
    assert steps["package"]["signed_by"] == ["key 2f89b927"]  # carl


def _tamper(link: Path, side: str, name: str) -> None:
    """Change one recorded digest inside a link, classic or DSSE, keeping its signature."""
    import base64

    data = json.loads(link.read_text())
    if "signed" in data:
        data["signed"][side][name]["sha256"] = "0" * 64
    else:
        payload = json.loads(base64.b64decode(data["payload"]))
        payload[side][name]["sha256"] = "0" * 64
        data["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    link.write_text(json.dumps(data))


def test_a_changed_product_fails(demo: Path) -> None:
    (demo / "foo.tar.gz").write_bytes(b"not the package")
    code, report = _verify(demo)
    assert code == 1
    assert "no product" in json.dumps(report["problems"])


def test_a_changed_link_counts_for_nothing_and_the_chain_fails(demo: Path) -> None:
    _tamper(demo / "links" / "package.2f89b927.link", "products", "foo.tar.gz")
    code, report = _verify(demo)
    assert code == 1
    assert "'package' needs 1" in json.dumps(report["problems"])


def test_a_link_signed_by_a_non_functionary_fails(demo: Path) -> None:
    """bob signs the package link and claims carl's key id: the claim decides nothing."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from in_toto.models.link import Link
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import CryptoSigner

    data = json.loads((DEMO / "classic" / "package.2f89b927.link").read_text())
    forged = Metablock(signed=Link.read({k: v for k, v in data["signed"].items()
                                         if k != "_type"}))
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    forged.create_signature(CryptoSigner(impostor))  # type: ignore[arg-type]
    as_dict = forged.to_dict()
    as_dict["signatures"][0]["keyid"] = CARL
    (demo / "links" / "package.2f89b927.link").write_text(json.dumps(as_dict))
    code, _ = _verify(demo)
    assert code == 1


def test_a_layout_signed_by_another_key_is_refused(demo: Path) -> None:
    result = run(["foo.tar.gz", "--layout", "root.layout", "--layout-key",
                  str(DEMO / "bob.pub"), "--attestations", "links"],
                 cwd=demo, program="verify-model")
    assert result.code == 1, result.output
    assert "not signed by" in result.stderr


# --- audit places in-toto's links in its graph -------------------------------------------------


def _audit_policy(work: Path) -> Path:
    from helpers import write_policy

    for name in ("bob.pub", "carl.pub"):
        shutil.copy(DEMO / name, work / name)
    return write_policy(work / "policy.yaml", {
        "version": 1, "signers": {"bob": {"key": "bob.pub"}, "carl": {"key": "carl.pub"}},
        "steps": [{"name": "write-code", "signed_by": ["bob"]},
                  {"name": "package", "signed_by": ["carl"], "after": ["write-code"]}]})


def test_audit_reads_the_demo_links_and_checks_their_rsa_signatures(demo: Path) -> None:
    _audit_policy(demo)
    result = run(["audit", "links", "--policy", "policy.yaml", "--json"], cwd=demo)
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    signers = {s["step"]: s["signer"] for s in report["steps"]}
    assert signers["write-code"]["names"] == ["bob"]
    assert signers["package"]["names"] == ["carl"]
    assert all(s["status"] == "verified" for s in signers.values())


def test_audit_flags_a_changed_link(demo: Path) -> None:
    _audit_policy(demo)
    _tamper(demo / "links" / "write-code.776a00e2.link", "products", "foo.py")
    result = run(["audit", "links", "--policy", "policy.yaml", "--json"], cwd=demo)
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    signers = {s["step"]: s["signer"] for s in report["steps"]}
    assert signers["write-code"]["names"] == []
