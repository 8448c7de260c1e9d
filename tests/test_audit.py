"""audit: the graph of a real recorded and rebuilt chain, and each kind of finding.

The chain comes from the real command line (tests/audit_fixtures.py); every other case is that
chain with one thing broken, or a hand-signed statement for what a real run cannot produce.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from audit_fixtures import (
    SAFE_ENVIRONMENT,
    Chain,
    cli,
    copy_attestations,
    digest_of,
    real_chain,
    sha256_file,
    signed_step,
    write_policy,
)

from verifier.judgement.policy import load_policy
from verifier.reports.audit import AuditReport, audit, clean
from verifier.reports.audit_views import render

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "attestations" / "audit-report.schema.json")
    .read_text()
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return real_chain(tmp_path_factory)


def kinds(report: AuditReport, severity: str | None = None) -> list[str]:
    return [f.kind for f in report.findings if severity is None or f.severity == severity]


def findings(report: AuditReport, kind: str) -> list[Any]:
    return [f for f in report.findings if f.kind == kind]


def valid(data: dict[str, Any]) -> dict[str, Any]:
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    assert not errors, [(list(e.absolute_path), e.message) for e in errors[:5]]
    return data


def step_named(data: dict[str, Any], name: str) -> dict[str, Any]:
    [step] = [s for s in data["steps"] if s["step"] == name]
    return step


# -- the graph of a real chain ---------------------------------------------------------------


def test_real_chain_with_its_policy_passes_and_forms_the_expected_graph(chain: Chain) -> None:
    report = audit([chain.attestations, chain.rebuilds], load_policy(chain.policy))
    data = valid(report.to_dict())
    assert report.exit_code == 0 and data["verdict"] == "PASS"
    assert kinds(report, "error") == []
    assert [s["step"] for s in data["steps"]] == ["prepare-data", "train", "package"]
    artifacts = {a["id"]: a for a in data["artifacts"]}
    steps = {s["id"]: s for s in data["steps"]}
    # Each step's material links to the step that produced it, by digest.
    train, package = step_named(data, "train"), step_named(data, "package")
    clean_csv = next(m for m in train["materials"] if m["name"] == "build/clean.csv")
    assert [steps[p]["step"] for p in artifacts[clean_csv["artifact"]]["producers"]] == [
        "prepare-data"]
    weights = next(m for m in package["materials"] if m["name"] == "build/weights.safetensors")
    assert [steps[p]["step"] for p in artifacts[weights["artifact"]]["producers"]] == ["train"]
    # Sources at the roots: the pinned data and the unpinned scripts.
    sources = {n: a["source"] for a in data["artifacts"] if not a["producers"] for n in a["names"]}
    assert sources == {"data/raw.csv": "pinned", "prepare.py": "unpinned",
                       "train.py": "unpinned", "package.py": "unpinned"}
    finals = {n for a in data["artifacts"] if a["final"] for n in a["names"]}
    assert {"build/model", "build/model/config.json", "build/model/model.safetensors"} <= finals
    assert [s["step"] for s in data["steps"] if s["final"]] == ["package"]
    # Rebuilds hang under the attestation they name; the quorum is counted per step.
    assert len(train["rebuilds"]) == 3 and len(package["rebuilds"]) == 2
    assert train["quorum"]["matched"] == ["rebuilder-a", "rebuilder-b"]
    assert all(s["signer"]["names"] == ["builder"] and s["signer"]["status"] == "verified"
               for s in data["steps"])
    assert {e["kind"] for e in data["edges"]} == {"produces", "consumed-by", "rebuilds"}
    assert step_named(data, "prepare-data")["layer"] < train["layer"] < package["layer"]


def test_layers_and_edges_follow_the_build_order(chain: Chain) -> None:
    data = audit([chain.attestations, chain.rebuilds]).to_dict()
    layer = {n["id"]: n["layer"] for n in data["steps"] + data["artifacts"]}
    for edge in data["edges"]:
        if edge["kind"] != "rebuilds":
            assert layer[edge["from"]] < layer[edge["to"]], edge


def test_without_a_policy_the_chain_is_unchecked_and_every_root_input_unpinned(
        chain: Chain) -> None:
    report = audit([chain.attestations, chain.rebuilds])
    data = valid(report.to_dict())
    assert data["checked"] is False and data["policy"] is None
    assert "chain-unchecked" in kinds(report, "warning")
    unpinned = {f.message.split(":")[0] for f in findings(report, "unpinned-source")}
    assert unpinned == {"data/raw.csv", "prepare.py", "train.py", "package.py"}
    assert all(f.severity == "info" for f in findings(report, "unpinned-source"))
    # Signers are named by the key hint the bundle claims: sha256 of the builder's public PEM.
    hint = hashlib.sha256(chain.public("builder").read_bytes()).hexdigest()
    for step in data["steps"]:
        assert step["signer"]["status"] == "unchecked" and step["signer"]["names"] == []
        assert step["signer"]["claimed"] == f"key {hint[:16]}…"
    text = render(data, "text")
    assert "no policy: chain unchecked" in text and "(unverified)" in text
    assert report.exit_code == 0


def test_dangling_product_is_named_and_final_artifacts_are_not(chain: Chain) -> None:
    report = audit([chain.attestations, chain.rebuilds], load_policy(chain.policy))
    dangling = findings(report, "dangling-product")
    assert [f.severity for f in dangling] == ["warning"]
    assert "build/notes.txt" in dangling[0].message
    assert dangling[0].files == (str(chain.attestations / "prepare-data.intoto.json"),)


def test_rebuild_mismatch_reports_the_tensor_and_its_diff(chain: Chain) -> None:
    report = audit([chain.attestations, chain.rebuilds], load_policy(chain.policy))
    [mismatch] = findings(report, "rebuild-mismatch")
    assert mismatch.severity == "warning"
    assert str(chain.rebuilds / "rebuilder-c" / "train.rebuild.intoto.json") in mismatch.files
    assert "rebuilder-c" in mismatch.message and "build/weights.safetensors DIVERGED" in (
        mismatch.message)
    assert "max abs diff 0.001 (w)" in mismatch.message
    [file] = mismatch.details["files"]
    assert file["tensors"][0]["name"] == "w"
    assert file["tensors"][0]["max_abs_diff"] == pytest.approx(0.001, rel=1e-3)
    # The environment difference that explains it is carried along.
    assert mismatch.details["drift"] == [
        {"field": "variables.NOISE", "recorded": "0", "current": "0.001"}]
    data = report.to_dict()
    [rebuild] = [r for r in data["rebuilds"] if r["verdict"] == "mismatched"]
    [result] = rebuild["results"]
    metrics = {t["name"]: t for t in result["tensors"]}
    assert metrics["b"]["status"] == "equal" and metrics["w"]["status"] == "changed"


def test_quorum_shortfall_is_an_error_per_step(chain: Chain, tmp_path: Path) -> None:
    policy = load_policy(chain.policy)
    report = audit([chain.attestations, chain.rebuilds / "rebuilder-a"], policy)
    shortfalls = findings(report, "quorum-shortfall")
    assert len(shortfalls) == 3 and all(f.severity == "error" for f in shortfalls)
    assert any("'train' has 1 of 2" in f.message for f in shortfalls)
    assert report.exit_code == 1


def test_expired_policy_is_an_error(chain: Chain, tmp_path: Path) -> None:
    expired = write_policy(chain.root, tmp_path / "expired.yaml", expires="2020-01-01")
    report = audit([chain.attestations, chain.rebuilds], load_policy(expired))
    [finding] = findings(report, "expired-policy")
    assert finding.severity == "error" and "2020-01-01" in finding.message
    still_valid = audit([chain.attestations, chain.rebuilds], load_policy(expired),
                        today=dt.date(2019, 12, 31))
    assert findings(still_valid, "expired-policy") == []


def test_missing_required_step_is_an_error(chain: Chain, tmp_path: Path) -> None:
    policy = write_policy(chain.root, tmp_path / "p.yaml", quorum=None,
                          extra_steps="  - {name: evaluate, signed_by: [builder], "
                                      "after: [package]}\n")
    report = audit([chain.attestations], load_policy(policy))
    [missing] = findings(report, "missing-step")
    assert "'evaluate'" in missing.message and report.exit_code == 1


def test_a_step_whose_inputs_do_not_derive_from_the_step_it_must_follow(
        chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    (attestations / "prepare-data.intoto.json").unlink()
    report = audit([attestations], load_policy(chain.policy))
    # The causes are named (the step is missing, so train's input is accounted for by
    # nothing); "train must come after prepare-data" would only repeat them.
    assert {"missing-step", "unaccounted-material"} <= set(kinds(report, "error"))
    [unaccounted] = findings(report, "unaccounted-material")
    assert unaccounted.files == (str(attestations / "train.intoto.json"),)
    assert findings(report, "order") == []


def test_attestations_of_other_tools_are_named_with_their_certificate_identity(
        tmp_path: Path) -> None:
    # A keyless bundle from sigstore-python's conformance assets: SLSA provenance of another
    # build type, signed through Fulcio by a GitHub workflow.
    fixture = Path(__file__).parent / "fixtures" / "sigstore"
    shutil.copy(fixture / "a.dsse.staging-rekor-v2.txt.sigstore.json", tmp_path / "a.json")
    report = audit([tmp_path])
    [other] = findings(report, "other-attestation")
    assert other.severity == "info" and "SLSA provenance of build type" in other.message
    assert ("certificate of https://github.com/sigstore-conformance/extremely-dangerous-public-"
            "oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
            in other.message)
    assert report.steps == [] and report.exit_code == 0


# -- signatures ---------------------------------------------------------------------------------


def _tamper(bundle_path: Path) -> None:
    """Change one subject digest inside the signed payload, keeping the old signature."""
    bundle = json.loads(bundle_path.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(
        json.dumps(statement).encode()).decode()
    bundle_path.write_text(json.dumps(bundle))


def test_altered_attestation_is_an_invalid_signature(chain: Chain, tmp_path: Path) -> None:
    attestations, rebuilds = copy_attestations(chain, tmp_path)
    _tamper(attestations / "train.intoto.json")
    report = audit([attestations, rebuilds], load_policy(chain.policy))
    [invalid] = findings(report, "invalid-signature")
    assert invalid.files == (str(attestations / "train.intoto.json"),)
    assert report.exit_code == 1
    data = report.to_dict()
    assert step_named(data, "train")["status"] == "error"
    # Its products are not trusted: the package step's input is now unaccounted for.
    assert any("build/weights.safetensors" in f.message
               for f in findings(report, "unaccounted-material"))


def test_signer_unknown_to_the_policy(chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    signed_step(attestations / "evaluate.intoto.json", chain.key("stranger"), "evaluate",
                {"build/model/config.json": sha256_file(chain.root / "build/model/config.json")},
                {"eval.json": digest_of("accuracy 1.0")})
    report = audit([attestations], load_policy(chain.policy))
    [unknown] = findings(report, "signer-not-in-policy")
    assert unknown.severity == "error"
    assert unknown.files == (str(attestations / "evaluate.intoto.json"),)


def test_step_signed_by_another_policy_signer(chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    record = json.loads(base64.b64decode(
        json.loads((attestations / "package.intoto.json").read_text())["dsseEnvelope"]["payload"]))
    materials = {m["name"]: m["digest"]["sha256"]
                 for m in record["predicate"]["buildDefinition"]["resolvedDependencies"]}
    (attestations / "package.intoto.json").unlink()
    signed_step(attestations / "package.intoto.json", chain.key("rebuilder-a"), "package",
                materials, {"build/model/model.safetensors": digest_of("model")})
    report = audit([attestations], load_policy(chain.policy))
    [wrong] = findings(report, "wrong-signer")
    assert "signed by rebuilder-a" in wrong.message and "requires builder" in wrong.message


def test_material_that_is_neither_produced_nor_a_source(chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    signed_step(attestations / "evaluate.intoto.json", chain.key("builder"), "evaluate",
                {"downloads/extra-data.bin": digest_of("from the internet")},
                {"eval.json": digest_of("accuracy 1.0")})
    report = audit([attestations], load_policy(chain.policy))
    [unaccounted] = findings(report, "unaccounted-material")
    assert "downloads/extra-data.bin" in unaccounted.message
    assert unaccounted.severity == "error"
    assert "step-not-in-policy" in kinds(report, "warning")


# -- conflicts, duplicates, orphans, cycles -----------------------------------------------------


def test_two_attestations_of_one_step_with_different_products_conflict(
        chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    clean_csv = sha256_file(chain.root / "build" / "clean.csv")
    other = signed_step(tmp_path / "elsewhere" / "train-again.intoto.json", chain.key("builder"),
                        "train", {"build/clean.csv": clean_csv},
                        {"build/weights.safetensors": digest_of("other weights")})
    report = audit([attestations, other.parent], load_policy(chain.policy))
    [conflict] = findings(report, "conflict")
    assert conflict.severity == "error"
    assert "'train'" in conflict.message and "build/weights.safetensors" in conflict.message
    assert set(conflict.files) == {str(attestations / "train.intoto.json"), str(other)}
    data = report.to_dict()
    assert all(s["status"] == "error" for s in data["steps"] if s["step"] == "train")


def test_a_duplicated_bundle_counts_once(chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    shutil.copy(attestations / "train.intoto.json", attestations / "train-copy.intoto.json")
    report = audit([attestations], load_policy(chain.policy))
    assert len(report.steps) == 3
    [duplicate] = findings(report, "duplicate")
    assert duplicate.severity == "info"
    assert set(duplicate.files) == {str(attestations / "train.intoto.json"),
                                    str(attestations / "train-copy.intoto.json")}
    assert findings(report, "conflict") == []


def test_rebuild_of_an_attestation_that_is_not_there(chain: Chain) -> None:
    report = audit([chain.rebuilds])
    orphans = findings(report, "orphan-rebuild")
    assert len(orphans) == 7 and all(f.severity == "warning" for f in orphans)


def test_steps_that_consume_each_others_products_form_a_reported_cycle(
        chain: Chain, tmp_path: Path) -> None:
    a, b = digest_of("a"), digest_of("b")
    signed_step(tmp_path / "x.intoto.json", chain.key("builder"), "x", {"b": b}, {"a": a})
    signed_step(tmp_path / "y.intoto.json", chain.key("builder"), "y", {"a": a}, {"b": b})
    report = audit([tmp_path])
    [cycle] = findings(report, "cycle")
    assert "'x'" in cycle.message and "'y'" in cycle.message
    assert len(report.steps) == 2
    render(report.to_dict(), "text")  # a cycle must not send the tree into a loop


# -- environment risks --------------------------------------------------------------------------


def test_environment_risks_recorded_in_a_step(chain: Chain, tmp_path: Path) -> None:
    gpu = {
        "variables": {}, "packages": {}, "git": {"commit": "abc123", "dirty": True},
        "gpus": [{"name": "NVIDIA H100", "driver": "550"}],
        "torch": {"cuda_available": True, "deterministic_algorithms": False,
                  "cudnn_benchmark": True, "tf32_matmul": True},
    }
    signed_step(tmp_path / "gpu.intoto.json", chain.key("builder"), "finetune",
                {"in": digest_of("in")}, {"out": digest_of("out")}, environment=gpu,
                declared_env={})
    messages = [f.message for f in findings(audit([tmp_path]), "environment-risk")]
    assert any("GPU without deterministic settings" in m and "CUBLAS_WORKSPACE_CONFIG unset" in m
               and "torch deterministic algorithms off" in m and "TF32" in m for m in messages)
    assert any("no thread count" in m for m in messages)
    assert any("dirty git tree" in m for m in messages)
    assert any("no installed package versions" in m for m in messages)


def test_a_gpu_step_that_reported_no_torch_settings_is_not_called_off(chain: Chain,
                                                                       tmp_path: Path) -> None:
    silent = {"variables": {"OMP_NUM_THREADS": "1"}, "packages": {"torch": "2.13.0"},
              "gpus": [{"name": "NVIDIA H200"}], "torch": {"version": "2.13.0"}}
    signed_step(tmp_path / "gpu.intoto.json", chain.key("builder"), "finetune",
                {"in": digest_of("in")}, {"out": digest_of("out")}, environment=silent,
                declared_env={})
    messages = [f.message for f in findings(audit([tmp_path]), "environment-risk")]
    assert any("torch deterministic algorithms not reported" in m for m in messages), messages
    assert not any("deterministic algorithms off" in m for m in messages)


def test_a_deterministic_gpu_step_with_pinned_threads_has_no_risk(
        chain: Chain, tmp_path: Path) -> None:
    safe_gpu = {**SAFE_ENVIRONMENT,
                "variables": {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": "8"},
                "gpus": [{"name": "NVIDIA H100"}],
                "torch": {"cuda_available": True, "deterministic_algorithms": True,
                          "cudnn_benchmark": False, "tf32_matmul": False}}
    signed_step(tmp_path / "gpu.intoto.json", chain.key("builder"), "finetune",
                {"in": digest_of("in")}, {"out": digest_of("out")}, environment=safe_gpu)
    assert findings(audit([tmp_path]), "environment-risk") == []


# -- hostile and broken input -------------------------------------------------------------------


def test_corrupt_truncated_and_hostile_files_become_findings(
        chain: Chain, tmp_path: Path) -> None:
    attestations, _ = copy_attestations(chain, tmp_path)
    text = (attestations / "train.intoto.json").read_text()
    (attestations / "truncated.intoto.json").write_text(text[: len(text) // 2])
    (attestations / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (attestations / "huge-int.json").write_text('{"mediaType": ' + "9" * 5000 + "}")
    (attestations / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (attestations / "not-a-bundle.json").write_text('{"hello": "world"}')
    report = audit([attestations], load_policy(chain.policy))
    unreadable = {Path(f.files[0]).name for f in findings(report, "unreadable-bundle")}
    assert unreadable == {"truncated.intoto.json", "deep.json", "huge-int.json", "binary.json",
                          "not-a-bundle.json"}
    assert len(report.steps) == 3  # the good attestations are all still there
    valid(report.to_dict())


def test_deeply_nested_payload_and_bad_json_lines(chain: Chain, tmp_path: Path) -> None:
    from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE
    from verifier.formats.signing import KeySigner

    signer = KeySigner(chain.key("builder"))
    deep = signer.sign_dsse(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, INTOTO_PAYLOAD_TYPE)
    good = (chain.attestations / "train.intoto.json").read_text()
    lines = [json.dumps(json.loads(good)), "{broken", json.dumps(deep), ""]
    (tmp_path / "store.jsonl").write_text("\n".join(lines))
    report = audit([tmp_path], load_policy(chain.policy))
    assert [s.record.step for s in report.steps] == ["train"]
    assert len(findings(report, "unreadable-bundle")) == 1  # the broken line
    [malformed] = findings(report, "malformed-statement")
    assert "store.jsonl:3" in malformed.message


def test_path_traversal_and_script_names_are_findings_and_escaped(
        chain: Chain, tmp_path: Path) -> None:
    evil = '<script>alert(1)</script>"\x1b[2J\u202e'
    signed_step(tmp_path / "evil.intoto.json", chain.key("builder"), evil,
                {"../../etc/passwd": digest_of("p")}, {"/abs/out": digest_of("o")})
    report = audit([tmp_path])
    unsafe = findings(report, "unsafe-name")
    assert len(unsafe) == 2 and all(f.severity == "error" for f in unsafe)
    data = valid(report.to_dict())
    text = render(data, "text")
    assert "\x1b" not in text and "\u202e" not in text and "\\u001b[2J" in text
    page = render(data, "html")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    dot = render(data, "dot")
    assert "<script>" in dot and '"' not in step_label_of(dot, report.steps[0].id)


def step_label_of(dot: str, node_id: str) -> str:
    """The text inside the label quotes of one DOT node, quotes escaped removed."""
    line = next(line for line in dot.splitlines() if line.lstrip().startswith(f'"{node_id}"'))
    label = line.split("label=", 1)[1].split(", fillcolor", 1)[0]
    return label[1:-1].replace('\\"', "")


def test_non_utf8_file_names_are_audited_and_shown_safely(chain: Chain, tmp_path: Path) -> None:
    name = os.fsdecode(b"train-\xff.intoto.json")
    try:
        shutil.copy(chain.attestations / "train.intoto.json", tmp_path / name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    report = audit([tmp_path])
    data = valid(report.to_dict())
    assert [s["step"] for s in data["steps"]] == ["train"]
    shown = data["steps"][0]["files"][0]
    assert shown.endswith("train-\\udcff.intoto.json")
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # no lone surrogate left
    render(data, "text").encode("utf-8")


def test_clean_spells_out_unsafe_characters() -> None:
    assert clean("plain/name.txt") == "plain/name.txt"
    assert clean("a\nb\x1b\u202ec\ud800") == "a\\u000ab\\u001b\\u202ec\\ud800"


def test_no_attestations_at_all_is_unusable_input(tmp_path: Path) -> None:
    from verifier.errors import InputError

    with pytest.raises(InputError, match="no attestation files"):
        audit([tmp_path])
    with pytest.raises(InputError, match="no such attestations directory"):
        audit([tmp_path / "missing"])


# -- formats and the command line ---------------------------------------------------------------


def test_dot_output_is_a_digraph_with_every_node_coloured(chain: Chain) -> None:
    data = audit([chain.attestations, chain.rebuilds], load_policy(chain.policy)).to_dict()
    dot = render(data, "dot")
    assert dot.startswith("digraph audit {") and dot.rstrip().endswith("}")
    for node in data["steps"] + data["artifacts"] + data["rebuilds"]:
        assert f'"{node["id"]}" [' in dot
    assert dot.count("fillcolor=") == len(data["steps"]) + len(data["artifacts"]) + len(
        data["rebuilds"])
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                             check=True).stdout
        assert "<svg" in svg


def test_html_report_is_self_contained_and_reduces_a_graph_too_large_to_draw(
        chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    import verifier.reports.audit_html as audit_html

    data = audit([chain.attestations, chain.rebuilds], load_policy(chain.policy)).to_dict()
    page = render(data, "html")
    assert "default-src 'none'" in page  # the CSP: no fetch, no script, even if one slipped in
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count('<g class="node ') == (len(data["steps"]) + len(data["artifacts"])
                                              + len(data["rebuilds"]))
    monkeypatch.setattr(audit_html, "MAX_DRAWN_NODES", 12)  # 3 steps + 7 rebuilds fit, not more
    reduced = render(data, "html")
    assert "too many to draw: steps and rebuilds only" in reduced
    assert reduced.count('<g class="node artifact') == 0
    assert reduced.count('<g class="node step') == 3
    monkeypatch.setattr(audit_html, "MAX_DRAWN_NODES", 5)
    assert "<svg" not in render(data, "html")


def test_cli_exit_codes_and_output_file(chain: Chain, tmp_path: Path) -> None:
    ok = cli("audit", chain.attestations, chain.rebuilds, "--policy", chain.policy,
             cwd=tmp_path)
    assert "PASS: 0 error(s)" in ok.stdout and "step package" in ok.stdout
    out = tmp_path / "report.json"
    written = cli("audit", chain.attestations, "--policy", chain.policy, "--format", "json",
                  "--output", out, cwd=tmp_path, check=False)
    assert written.returncode == 1  # without the rebuilds, the quorum fails
    data = valid(json.loads(out.read_text()))
    assert data["verdict"] == "FAIL" and data["summary"]["error"] == 3
    as_json = cli("audit", chain.attestations, "--json", cwd=tmp_path)
    assert valid(json.loads(as_json.stdout))["checked"] is False
    missing = cli("audit", tmp_path / "nowhere", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.stderr
    bad_format = cli("audit", chain.attestations, "--format", "pdf", "--json", cwd=tmp_path,
                     check=False)
    assert bad_format.returncode == 2 and json.loads(bad_format.stdout)["exit_code"] == 2


def test_audit_help_has_an_example() -> None:
    result = subprocess.run([sys.executable, "-m", "verifier", "audit", "--help"],
                            capture_output=True, text=True, check=True)
    assert "Example: model-verifier audit" in result.stdout
