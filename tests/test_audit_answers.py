"""The audit counts what the quorum counts, and its HTML shows what it found.

The real recorded and rebuilt chain (tests/audit_fixtures.py), plus what a real rebuilder or
an attacker adds: rebuilder-b sending its rebuild of prepare-data twice (another run, another
invocation id), the builder signing a rebuild of its own step, a probe whose outputs
diverged, and a product whose name is longer than a box.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from audit_fixtures import Chain, copy_attestations, digest_of, real_chain, signed_step

from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE
from verifier.formats.signing import KeySigner
from verifier.formats.statement import canonical_json
from verifier.judgement.policy import load_policy
from verifier.reports.audit import audit
from verifier.reports.audit_views import render


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return real_chain(tmp_path_factory)


def _statement(path: Path) -> dict:
    return json.loads(base64.b64decode(json.loads(path.read_text())["dsseEnvelope"]["payload"]))


def _sign(chain: Chain, who: str, statement: dict, path: Path) -> None:
    bundle = KeySigner(chain.key(who)).sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle))


@pytest.fixture(scope="module")
def extra(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audit-answers")
    attestations, rebuilds = copy_attestations(chain, root)
    again = _statement(rebuilds / "rebuilder-b" / "prepare-data.rebuild.intoto.json")
    again["predicate"]["runDetails"]["invocationId"] = "second-run"
    _sign(chain, "rebuilder-b", again, rebuilds / "rebuilder-b-again" /
          "prepare-data.rebuild.intoto.json")
    own = _statement(rebuilds / "rebuilder-a" / "prepare-data.rebuild.intoto.json")
    own["predicate"]["runDetails"]["invocationId"] = "by-the-builder"
    _sign(chain, "builder", own, rebuilds / "builder" / "prepare-data.rebuild.intoto.json")
    probe = _statement(rebuilds / "rebuilder-c" / "train.rebuild.intoto.json")
    probe["predicate"]["envOverrides"] = {"NOISE": "0.001"}
    _sign(chain, "rebuilder-c", probe, rebuilds / "probe" / "train.rebuild.intoto.json")
    return attestations, rebuilds


def _rebuild_line(text: str, step: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f"step {step} " in line)
    return next(line for line in lines[start + 1:] if "rebuilds:" in line)


def test_a_rebuilder_counts_once_and_the_steps_own_signer_never(
        chain: Chain, extra: tuple[Path, Path]) -> None:
    report = audit(list(extra), load_policy(chain.policy)).to_dict()
    line = _rebuild_line(render(report, "text"), "prepare-data")
    assert "rebuilds: 2 matching (rebuilder-a, rebuilder-b);" in line, line
    assert "not independent, the step's own signer: builder" in line, line
    assert "quorum 2/2" in line, line


def test_under_a_wrong_key_policy_the_builder_is_not_a_matching_rebuilder(
        chain: Chain, extra: tuple[Path, Path], tmp_path: Path) -> None:
    """The policy gives rebuilder-a the builder's key: the builder's own rebuild verifies as
    'builder, rebuilder-a', rebuilder-a's real rebuild verifies for nobody."""
    text = chain.policy.read_text().replace("keys/rebuilder-a.pub", "keys/builder.pub")
    assert text != chain.policy.read_text()
    wrong = chain.root / "wrong-key-policy.yaml"
    wrong.write_text(text)
    report = audit(list(extra), load_policy(wrong)).to_dict()
    line = _rebuild_line(render(report, "text"), "prepare-data")
    assert "rebuilds: 1 matching (rebuilder-b);" in line, line
    assert "the step's own signer: builder, rebuilder-a" in line, line
    assert "not counted, signer not verified:" in line, line


def test_a_probe_whose_outputs_diverged_wears_no_ok_badge(
        chain: Chain, extra: tuple[Path, Path]) -> None:
    report = audit(list(extra), load_policy(chain.policy)).to_dict()
    page = render(report, "html")
    probes = re.findall(r'<p><span class="badge (\w+)">\w+</span> <b>probe[^<]*</b>', page)
    assert probes == ["info"], probes
    assert "<b>probe: outputs diverged</b>" in page
    differing = re.findall(r'<p><span class="badge (\w+)">\w+</span> <b>mismatched', page)
    assert differing and "ok" not in differing, differing


def test_a_long_product_name_is_shown_whole_and_the_graph_fits_the_page(
        chain: Chain, tmp_path: Path) -> None:
    attestations, rebuilds = copy_attestations(chain, tmp_path)
    name = "hub/acme/tiny-model/tokenizer_config.json"
    signed_step(attestations / "tokenize.intoto.json", chain.key("builder"), "tokenize",
                {"build/model/config.json": digest_of("x")}, {name: digest_of("tok")})
    page = render(audit([attestations, rebuilds], load_policy(chain.policy)).to_dict(), "html")
    [node] = re.findall(r'<g class="node artifact"[^>]*><title>' + re.escape(name)
                        + r'.*?</g>', page)
    labels = re.findall(r'<text [^>]*class="label">([^<]*)</text>', node)
    assert "".join(labels) == name, labels
    assert not any(label.endswith("…") for label in labels)
    # The graph scales to the page's width, down to half its size, and scrolls beyond that:
    # the 2400 px graph of a Hub release fits a 1400 px window instead of being cut there.
    svg = re.search(r'<svg class="graph"[^>]* width="(\d+)"[^>]* style="([^"]*)"', page)
    assert svg is not None, page[:2000]
    width = int(svg.group(1))
    assert svg.group(2) == (f"width:100%;min-width:{width * 0.5:.0f}px;max-width:{width}px;"
                            "height:auto")
