"""Licences, declared components and the openness report.

A denied licence in a material fails verify-model (the rule is the evaluation's, so audit says
so too); the SPDX parser agrees with a direct boolean reading of random expressions and never
raises anything but InputError; the openness report is a view of the verdict.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import pytest
from helpers import PREPARE, Chain, assert_error, build_chain, record_step, run, write_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.errors import InputError
from verifier.judgement import spdx

LICENSED = ["--material-license", "raw.txt=CC-BY-4.0 OR GPL-3.0-only",
            "--material-license", "prep.py=Apache-2.0",
            "--component", "training-data=raw.txt",
            "--component", "data-processing-code=prep.py"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    built = build_chain(tmp_path_factory.mktemp("openness"))
    result = record_step(built.work, "prepare", built.keys("builder").private,
                         ["raw.txt", "prep.py"], ["data/clean.txt"], PREPARE,
                         extra=["--force", *LICENSED])
    assert result.code == 0, result.output
    return built


def with_policy(chain: Chain, tmp_path: Path, **extra: object) -> Path:
    data = chain.policy_data()
    data["signers"] = {k: {"key": str(chain.root / "keys" / Path(v["key"]).name)}
                       for k, v in data["signers"].items()}
    data.update(extra)
    return write_policy(tmp_path / "policy.yaml", data)


def verify(chain: Chain, policy: Path, *extra: str):
    return run(["verify", chain.artifact, "--policy", policy, "--attestations",
                chain.attestations, *extra], cwd=chain.work)


def test_declarations_are_signed_into_the_predicate(chain: Chain) -> None:
    bundle = json.loads(chain.attestation("prepare").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["licenses"] == [{"license": "Apache-2.0", "name": "prep.py"},
                                    {"license": "CC-BY-4.0 OR GPL-3.0-only", "name": "raw.txt"}]
    assert internal["components"] == [{"component": "data-processing-code", "name": "prep.py"},
                                      {"component": "training-data", "name": "raw.txt"}]
    schema = json.loads((Path(__file__).parents[1] / "attestations"
                         / "step-statement.schema.json").read_text(encoding="utf-8"))
    from jsonschema import Draft202012Validator

    assert [e.message for e in Draft202012Validator(schema).iter_errors(statement)] == []


def test_a_denied_licence_in_a_material_fails_verify(chain: Chain, tmp_path: Path) -> None:
    allowed = with_policy(chain, tmp_path, licenses={"deny": ["GPL-3.0-only"]})
    assert verify(chain, allowed).code == 0  # CC-BY-4.0 is an alternative that is not denied
    denied = with_policy(chain, tmp_path, licenses={"deny": ["cc-by-4.0", "GPL-3.0-only"]})
    result = verify(chain, denied, "--json")
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    [problem] = [p for p in report["problems"] if p["kind"] == "license"]
    assert "raw.txt" in problem["message"] and "denied" in problem["message"]
    audit = run(["audit", chain.attestations, "--policy", denied, "--json"], cwd=chain.work)
    assert audit.code == 1
    assert "CC-BY-4.0 OR GPL-3.0-only" in audit.stdout


def test_an_allow_list_refuses_what_it_does_not_name(chain: Chain, tmp_path: Path) -> None:
    policy = with_policy(chain, tmp_path, licenses={"allow": ["GPL-3.0-only"]})
    result = verify(chain, policy)
    assert result.code == 1
    assert "Apache-2.0 is not in the allow list" in result.stdout
    policy = with_policy(chain, tmp_path, licenses={"allow": ["GPL-3.0-only", "Apache-2.0"]})
    assert verify(chain, policy).code == 0


def test_a_policy_licence_list_takes_identifiers_only(chain: Chain, tmp_path: Path) -> None:
    policy = with_policy(chain, tmp_path, licenses={"deny": ["MIT OR GPL-3.0-only"]})
    assert_error(verify(chain, policy), 2, "licenses.deny", "single licence identifiers")


def test_record_refuses_a_bad_expression_and_an_unbound_component(chain: Chain) -> None:
    key = chain.keys("builder").private
    bad = record_step(chain.work, "prepare", key, ["raw.txt", "prep.py"], ["data/clean.txt"],
                      PREPARE, out="other", extra=["--material-license", "raw.txt=MIT OR"])
    assert_error(bad, 2, "--material-license raw.txt", "SPDX")
    unbound = record_step(chain.work, "prepare", key, ["raw.txt", "prep.py"],
                          ["data/clean.txt"], PREPARE, out="other",
                          extra=["--component", "weights=model/weights.bin"])
    assert_error(unbound, 2, "--component", "neither a --material nor a --product")
    unknown = record_step(chain.work, "prepare", key, ["raw.txt", "prep.py"],
                          ["data/clean.txt"], PREPARE, out="other",
                          extra=["--component", "secret-sauce=raw.txt"])
    assert_error(unknown, 2, "unknown component")
    assert not (chain.work / "other").exists()


def test_openness_report_is_a_view_of_the_verdict(chain: Chain, tmp_path: Path) -> None:
    policy = with_policy(chain, tmp_path)
    result = run(["openness", chain.artifact, "--policy", policy, "--attestations",
                  chain.attestations, "--json"], cwd=chain.work)
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["framework"].startswith("Model Openness Framework v1.0")
    by_kind = {c["component"]: c for c in report["components"]}
    [data] = by_kind["training-data"]["files"]
    assert data["name"] == "raw.txt" and data["accounted"] == "pinned source"
    assert data["license"] == "CC-BY-4.0 OR GPL-3.0-only" and data["license_open"]
    [code] = by_kind["data-processing-code"]["files"]
    assert code["accounted"] == "unpinned source" and not code["pinned"]
    assert not by_kind["weights"]["attested"]
    assert report["supported_class"] is None  # no Class III component is declared
    assert "weights" in report["missing_by_class"]["III"]
    # The same chain failing the policy supports nothing, and says why.
    denied = with_policy(chain, tmp_path, licenses={"deny": ["CC-BY-4.0", "GPL-3.0-only"]})
    failed = run(["openness", chain.artifact, "--policy", denied, "--attestations",
                  chain.attestations, "--json"], cwd=chain.work)
    assert failed.code == 1
    failing = json.loads(failed.stdout)
    assert failing["chain"] == "FAIL" and failing["license_problems"]
    assert not any(c["files"] for c in failing["components"])


# -- the SPDX parser ----------------------------------------------------------------------------

IDS = ["MIT", "Apache-2.0", "GPL-2.0-only", "GPL-3.0-or-later", "CC-BY-4.0", "LicenseRef-x"]


def trees(depth: int = 3) -> st.SearchStrategy:
    leaf = st.sampled_from(IDS)
    return st.recursive(leaf, lambda inner: st.tuples(st.sampled_from(["AND", "OR"]), inner,
                                                      inner), max_leaves=8)


def text_of(tree: object) -> str:
    if isinstance(tree, str):
        return tree
    op, left, right = tree  # type: ignore[misc]
    return f"({text_of(left)} {op} {text_of(right)})"


def holds(tree: object, acceptable: frozenset[str]) -> bool:
    if isinstance(tree, str):
        return tree in acceptable
    op, left, right = tree  # type: ignore[misc]
    if op == "AND":
        return holds(left, acceptable) and holds(right, acceptable)
    return holds(left, acceptable) or holds(right, acceptable)


@settings(max_examples=200, deadline=None)
@given(trees(), st.frozensets(st.sampled_from(IDS)))
def test_alternatives_agree_with_the_boolean_reading(tree: object, acceptable: frozenset[str]
                                                     ) -> None:
    parsed = spdx.parse(text_of(tree))
    assert any(a <= acceptable for a in parsed.alternatives) == holds(tree, acceptable)
    allowed, _ = spdx.judge(parsed, sorted(acceptable), [])
    assert allowed == (holds(tree, acceptable) if acceptable else True)


def test_precedence_with_and_exceptions() -> None:
    parsed = spdx.parse("MIT OR Apache-2.0 AND GPL-2.0-only WITH Classpath-exception-2.0")
    assert set(parsed.alternatives) == {frozenset({"MIT"}), frozenset(
        {"Apache-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"})}
    # A policy naming the licence covers the licence with an exception.
    assert spdx.judge(spdx.parse("GPL-2.0-only WITH Classpath-exception-2.0"), [],
                      ["GPL-2.0-only"])[0] is False
    for bad in ["", "MIT AND", "(MIT", "MIT)", "AND MIT", "MIT WITH", "(MIT) WITH X",
                "MIT OR OR GPL-2.0-only", "MIT; rm -rf", "mit and apache-2.0"]:
        with pytest.raises(InputError):
            spdx.parse(bad)


def test_hostile_expressions_are_bounded() -> None:
    with pytest.raises(InputError, match="nested deeper"):
        spdx.parse("(" * 40 + "MIT" + ")" * 40)
    with pytest.raises(InputError, match="longer than"):
        spdx.parse("MIT OR " * 200 + "MIT")
    blowup = " AND ".join(f"(A{i} OR B{i})" for i in range(10))  # 2^10 alternatives
    with pytest.raises(InputError, match="alternatives"):
        spdx.parse(blowup)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("()+: -.AaNnDdOoRrWwIiTtHhM0123\t")), max_size=60))
def test_fuzzed_text_parses_or_says_why(text: str) -> None:
    with contextlib.suppress(InputError):
        spdx.parse(text)


@pytest.mark.parametrize("internal, fragment", [
    ({"components": "junk"}, "malformed components declaration"),
    ({"components": [{"component": "weights", "name": "nowhere.bin"}]},
     "neither a material nor a product"),
    ({"components": [{"component": "secret", "name": "raw.txt"}]}, "unknown component"),
    ({"licenses": [{"name": "raw.txt", "license": "(((MIT"}]}, "not an SPDX expression"),
    ({"licenses": [{"name": "raw.txt", "license": "MIT OR " * 300 + "MIT"}]},
     "not an SPDX expression"),
    ({"licenses": [{"name": "elsewhere", "license": "MIT"}]}, "neither a material nor"),
])
def test_a_hand_signed_malformed_declaration_fails_the_step(
        chain: Chain, tmp_path: Path, internal: dict, fragment: str) -> None:
    """Signed by the trusted builder, but not as record writes it: a problem of that step,
    one sentence, never a traceback."""
    import shutil

    from helpers import sign_bundle

    attestations = tmp_path / "attestations"
    shutil.copytree(chain.attestations, attestations)
    bundle = json.loads(chain.attestation("prepare").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["buildDefinition"]["internalParameters"].update(internal)
    payload = json.dumps(statement, sort_keys=True).encode()
    signed = sign_bundle(payload, "application/vnd.in-toto+json", chain.keys("builder").private)
    (attestations / "prepare.intoto.json").write_text(json.dumps(signed))
    result = run(["verify", chain.artifact, "--policy", with_policy(chain, tmp_path),
                  "--attestations", attestations, "--json"], cwd=chain.work)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    messages = [p["message"] for p in json.loads(result.stdout)["problems"]]
    assert any(fragment in m for m in messages), messages


def test_the_html_audit_has_an_openness_section(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "audit.html"
    result = run(["audit", chain.attestations, "--policy", with_policy(chain, tmp_path),
                  "--format", "html", "--output", out], cwd=chain.work)
    assert result.code == 0, result.output
    html = out.read_text()
    # dist and its files share one chain (model.bin is a copy of the weights): one section.
    assert html.count("<h2>Openness of") == 1
    assert "<code>dist, dist/config.json, dist/model.bin, model/weights.bin</code>" in html
    assert "Model Openness Framework v1.0" in html
    assert "CC-BY-4.0 OR GPL-3.0-only" in html
