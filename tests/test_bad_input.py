"""Unusable input, for every command where it applies: exit 2 and one `error:` sentence naming
the file (or, where the input is one of many attestations, a FAIL report naming it); never a
traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    INTOTO,
    Chain,
    assert_error,
    assert_no_traceback,
    read_json,
    run,
    run_executable,
    sign_bundle,
    write_json,
    write_policy,
)


# Each maker writes one kind of broken JSON file under `directory` (relative name `name`)
# from a good bundle, and returns the name and a fragment the error sentence must contain.
def _missing(chain: Chain, name: str) -> str:
    return "no such file"


def _directory(chain: Chain, name: str) -> str:
    (chain.work / name).mkdir()
    return "directory"


def _malformed(chain: Chain, name: str) -> str:
    (chain.work / name).write_text('{"mediaType": "x", "dsseEnvelope": {,}}', encoding="utf-8")
    return "not valid JSON"


def _truncated(chain: Chain, name: str) -> str:
    text = chain.attestation("package").read_text(encoding="utf-8")
    (chain.work / name).write_text(text[: len(text) // 2], encoding="utf-8")
    return "not valid JSON"


def _not_a_bundle_object(chain: Chain, name: str) -> str:
    write_json(chain.work / name, {"_type": "https://in-toto.io/Statement/v1", "subject": []})
    return "not a Sigstore bundle"


def _not_a_bundle_list(chain: Chain, name: str) -> str:
    write_json(chain.work / name, [read_json(chain.attestation("package"))])
    return "not a Sigstore bundle"


def _bundle_without_envelope(chain: Chain, name: str) -> str:
    bundle = read_json(chain.attestation("package"))
    del bundle["dsseEnvelope"]
    write_json(chain.work / name, bundle)
    return "dsseEnvelope"


def _payload_not_base64(chain: Chain, name: str) -> str:
    bundle = read_json(chain.attestation("package"))
    bundle["dsseEnvelope"]["payload"] = "not*base64!"
    write_json(chain.work / name, bundle)
    return "base64"


def _signature_of_wrong_type(chain: Chain, name: str) -> str:
    bundle = read_json(chain.attestation("package"))
    bundle["dsseEnvelope"]["signatures"] = [{"sig": 12345}]
    write_json(chain.work / name, bundle)
    return "signature"


def _json_lines_with_a_bad_line(chain: Chain, name: str) -> str:
    good = json.dumps(read_json(chain.attestation("package")))
    (chain.work / name).write_text(f"{good}\n{{broken\n{good}\n", encoding="utf-8")
    return "JSON"


def _non_utf8(chain: Chain, name: str) -> str:
    (chain.work / name).write_bytes(b'{"mediaType": "\xff\xfe"}')
    return "UTF-8"


def _deeply_nested(chain: Chain, name: str) -> str:
    (chain.work / name).write_text("[" * 100_000, encoding="utf-8")
    return "nested too deeply"


def _empty(chain: Chain, name: str) -> str:
    (chain.work / name).write_bytes(b"")
    return "not valid JSON"


BROKEN_BUNDLES: dict[str, Callable[[Chain, str], str]] = {
    "missing": _missing,
    "directory": _directory,
    "malformed": _malformed,
    "truncated": _truncated,
    "json-object-not-a-bundle": _not_a_bundle_object,
    "json-list-not-a-bundle": _not_a_bundle_list,
    "bundle-without-envelope": _bundle_without_envelope,
    "payload-not-base64": _payload_not_base64,
    "signature-of-wrong-type": _signature_of_wrong_type,
    "json-lines-with-a-bad-line": _json_lines_with_a_bad_line,
    "non-utf8": _non_utf8,
    "deeply-nested": _deeply_nested,
    "empty": _empty,
}


# ---------------------------------------------------------------- verify-bundle BUNDLE


@pytest.mark.parametrize("kind", sorted(BROKEN_BUNDLES))
def test_verify_bundle_with_an_unusable_bundle(chain: Chain, kind: str) -> None:
    name = f"broken-{kind}.json"
    fragment = BROKEN_BUNDLES[kind](chain, name)
    result = run(["verify-bundle", name, "--artifact", "dist/model.bin",
                  "--key", chain.keys("builder").public], cwd=chain.work)
    assert_error(result, 2, name, fragment)


@pytest.mark.parametrize("kind", ["truncated", "deeply-nested", "non-utf8"])
def test_verify_bundle_unusable_bundle_json_error(chain: Chain, kind: str) -> None:
    name = f"broken-{kind}.json"
    BROKEN_BUNDLES[kind](chain, name)
    result = run(["verify-bundle", name, "--artifact", "dist/model.bin", "--json",
                  "--key", chain.keys("builder").public], cwd=chain.work)
    assert_no_traceback(result)
    assert result.code == 2
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2 and name in error["error"]


@pytest.mark.parametrize("kind", ["truncated", "deeply-nested", "non-utf8", "directory"])
def test_verify_bundle_unusable_bundle_real_executable(chain: Chain, kind: str) -> None:
    name = f"broken-{kind}.json"
    fragment = BROKEN_BUNDLES[kind](chain, name)
    result = run_executable(["verify-bundle", name, "--artifact", "dist/model.bin",
                             "--key", str(chain.keys("builder").public)], cwd=chain.work)
    assert_error(result, 2, name, fragment)


def test_verify_bundle_signed_payload_that_is_not_a_statement(chain: Chain) -> None:
    for name, payload in [("text.json", b"hello"), ("nested.json", b"[" * 100_000),
                          ("no-subjects.json", b'{"_type": "https://in-toto.io/Statement/v1"}')]:
        write_json(chain.work / name, sign_bundle(payload, INTOTO, chain.keys("builder").private))
        result = run(["verify-bundle", name, "--artifact", "dist/model.bin",
                      "--key", chain.keys("builder").public], cwd=chain.work)
        assert_error(result, 2, name)


def test_verify_bundle_signed_by_another_key(chain: Chain) -> None:
    result = run(["verify-bundle", "attestations/package.intoto.json", "--artifact",
                  "dist/model.bin", "--key", chain.keys("outsider").public], cwd=chain.work)
    assert_no_traceback(result)
    assert result.code == 1
    assert result.stdout.startswith("FAIL  attestations/package.intoto.json")
    assert str(chain.keys("outsider").public) in result.stdout


# ---------------------------------------------------------------- verify-bundle --key / --artifact


def _key_cases(chain: Chain) -> dict[str, tuple[Path, str]]:
    work = chain.work
    (work / "keydir").mkdir()
    (work / "nonutf8.pub").write_bytes(b"\xff\xfe\x00garbage")
    (work / "nested.pub").write_text("[" * 100_000)
    (work / "empty.pub").write_bytes(b"")
    return {
        "missing": (work / "absent.pub", "no such key file"),
        "directory": (work / "keydir", "directory"),
        "non-utf8": (work / "nonutf8.pub", "not a PEM public key"),
        "deeply-nested": (work / "nested.pub", "not a PEM public key"),
        "empty": (work / "empty.pub", "not a PEM public key"),
        "private-key-instead": (chain.keys("builder").private, "not a PEM public key"),
    }


@pytest.mark.parametrize("kind", ["missing", "directory", "non-utf8", "deeply-nested", "empty",
                                  "private-key-instead"])
def test_verify_bundle_with_an_unusable_key(chain: Chain, kind: str) -> None:
    key, fragment = _key_cases(chain)[kind]
    result = run(["verify-bundle", "attestations/package.intoto.json",
                  "--artifact", "dist/model.bin", "--key", key], cwd=chain.work)
    assert_error(result, 2, str(key), fragment)


def test_verify_bundle_with_a_missing_artifact(chain: Chain) -> None:
    result = run(["verify-bundle", "attestations/package.intoto.json",
                  "--artifact", "dist/absent.bin", "--key", chain.keys("builder").public],
                 cwd=chain.work)
    assert_error(result, 2, "dist/absent.bin")


# ---------------------------------------------------------------- verify: broken attestations


@pytest.mark.parametrize("kind", sorted(set(BROKEN_BUNDLES) - {"missing", "directory"}))
def test_verify_names_a_broken_attestation_that_breaks_the_chain(chain: Chain, kind: str) -> None:
    train = chain.attestation("train")
    train.unlink()
    BROKEN_BUNDLES[kind](chain, "attestations/train.intoto.json")
    result = run(["verify", "dist/model.bin"], cwd=chain.work)
    assert_no_traceback(result)
    assert result.code == 1, result.output
    assert result.stdout.startswith("FAIL  dist/model.bin")
    assert "attestations/train.intoto.json" in result.stdout
    assert "required step 'train' is missing" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("kind", ["truncated", "deeply-nested", "non-utf8", "malformed"])
def test_verify_notes_a_broken_file_beside_a_complete_chain(chain: Chain, kind: str) -> None:
    BROKEN_BUNDLES[kind](chain, "attestations/junk.json")
    result = run(["verify", "dist/model.bin", "--json"], cwd=chain.work)
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert result.code == 0 and report["verdict"] == "PASS"
    assert any("attestations/junk.json" in note for note in report["notes"]), report["notes"]


def test_verify_reads_every_good_line_of_a_json_lines_store(chain: Chain) -> None:
    store = chain.work / "store"
    store.mkdir()
    lines = [json.dumps(read_json(chain.attestation(step)))
             for step in ("prepare", "train", "package")]
    # the bad line comes first: what follows it must still be read
    (store / "all.jsonl").write_text("\n".join(["{broken", *lines]) + "\n", encoding="utf-8")
    result = run(["verify", "dist/model.bin", "--attestations", "store", "--json"],
                 cwd=chain.work)
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert report["verdict"] == "PASS", report["problems"]
    assert [s["attestation"] for s in report["steps"]] == [
        "store/all.jsonl:2", "store/all.jsonl:3", "store/all.jsonl:4"]
    assert any(note.startswith("ignored store/all.jsonl:1:") for note in report["notes"])


def test_verify_with_a_bundle_signed_by_another_key(chain: Chain) -> None:
    assert chain.record("package", signer="outsider").code == 0
    result = run(["verify", "dist/model.bin"], cwd=chain.work)
    assert_no_traceback(result)
    assert result.code == 1
    assert "attestations/package.intoto.json" in result.stdout
    assert "no key the policy names" in result.stdout


def test_verify_with_a_missing_artifact(chain: Chain) -> None:
    assert_error(run(["verify", "dist/absent.bin"], cwd=chain.work), 2, "dist/absent.bin")
    assert_error(run(["dist/absent.bin"], cwd=chain.work, program="verify-model"), 2,
                 "dist/absent.bin")


def test_verify_with_a_missing_attestations_directory(chain: Chain) -> None:
    result = run(["verify", "dist/model.bin", "--attestations", "nowhere"], cwd=chain.work)
    assert_error(result, 2, "nowhere")


# ---------------------------------------------------------------- verify: broken policies


def _policy_cases(chain: Chain) -> dict[str, tuple[str, str]]:
    """name of a broken policy file in chain.work -> fragment its error must contain."""
    work = chain.work
    good = chain.policy_data()
    cases: dict[str, tuple[str, str]] = {}

    def variant(name: str, change: Callable[[dict], None], fragment: str) -> None:
        data = json.loads(json.dumps(good))
        change(data)
        write_policy(work / name, data)
        cases[name.removesuffix(".yaml")] = (name, fragment)

    (work / "malformed.yaml").write_text("version: 1\nsigners: {builder: {key: x}\n")
    cases["malformed"] = ("malformed.yaml", "not valid YAML")
    (work / "tabs.yaml").write_text("version: 1\n\tsigners: {}\n")
    cases["tabs"] = ("tabs.yaml", "not valid YAML")
    variant("kee.yaml", lambda d: d["signers"].__setitem__(
        "builder", {"kee": "../keys/builder.pub"}), "kee")
    variant("top-level-typo.yaml", lambda d: d.__setitem__("step", d.pop("steps")), "step")
    variant("step-typo.yaml", lambda d: d["steps"][1].__setitem__(
        "afterr", d["steps"][1].pop("after")), "afterr")
    variant("unknown-signer.yaml", lambda d: d["steps"][1].__setitem__(
        "signed_by", ["mallory"]), "mallory")
    variant("unknown-after.yaml", lambda d: d["steps"][1].__setitem__(
        "after", ["preprocess"]), "preprocess")
    variant("bad-version.yaml", lambda d: d.__setitem__("version", 2), "version")
    variant("bad-pin.yaml", lambda d: d["sources"][0].__setitem__("sha256", "abc"), "sources")
    variant("not-a-date.yaml", lambda d: d.__setitem__("expires", "next tuesday"), "expires")
    variant("impossible-date.yaml", lambda d: d.__setitem__("expires", "2024-02-30"), "expires")
    variant("missing-key-file.yaml", lambda d: d["signers"].__setitem__(
        "builder", {"key": "../keys/absent.pub"}), "absent.pub")
    variant("key-is-not-a-key.yaml", lambda d: d["signers"].__setitem__(
        "builder", {"key": "raw.txt"}), "raw.txt")
    (work / "unquoted-impossible-date.yaml").write_text(
        chain.policy.read_text() + "expires: 2024-02-30\n")
    cases["unquoted-impossible-date"] = ("unquoted-impossible-date.yaml", "out of range")
    (work / "duplicate-key.yaml").write_text(
        chain.policy.read_text() + "steps:\n- {name: package, signed_by: [auditor]}\n")
    cases["duplicate-key"] = ("duplicate-key.yaml", "steps")
    (work / "nested.yaml").write_text("[" * 100_000)
    cases["deeply-nested"] = ("nested.yaml", "nested too deeply")
    (work / "latin1.yaml").write_bytes("name: café\n".encode("latin-1"))
    cases["non-utf8"] = ("latin1.yaml", "UTF-8")
    (work / "list.yaml").write_text("- version: 1\n")
    cases["a-list"] = ("list.yaml", "object")
    (work / "empty.yaml").write_text("")
    cases["empty"] = ("empty.yaml", "empty")
    (work / "policy-dir").mkdir()
    cases["directory"] = ("policy-dir", "directory")
    cases["missing"] = ("absent.yaml", "--policy")
    return cases


POLICY_CASES = [
    "malformed", "tabs", "kee", "top-level-typo", "step-typo", "unknown-signer",
    "unknown-after", "bad-version", "bad-pin", "not-a-date", "impossible-date",
    "missing-key-file", "key-is-not-a-key", "unquoted-impossible-date", "duplicate-key",
    "deeply-nested", "non-utf8", "a-list", "empty", "directory", "missing",
]


@pytest.mark.parametrize("kind", POLICY_CASES)
@pytest.mark.parametrize("program", ["model-verifier", "verify-model"])
def test_verify_with_an_unusable_policy(chain: Chain, kind: str, program: str) -> None:
    name, fragment = _policy_cases(chain)[kind]
    args = ["dist/model.bin", "--policy", name]
    result = run(["verify", *args] if program == "model-verifier" else args,
                 cwd=chain.work, program=program)
    assert_error(result, 2, name, fragment)


def test_policy_with_a_misspelt_field_names_the_field_and_where(chain: Chain) -> None:
    name, _ = _policy_cases(chain)["kee"]
    line = assert_error(run(["verify", "dist/model.bin", "--policy", name], cwd=chain.work),
                        2, name)
    assert "signers.builder" in line and "'kee'" in line


@pytest.mark.parametrize("kind", ["deeply-nested", "non-utf8", "kee", "duplicate-key"])
def test_verify_model_executable_with_an_unusable_policy(chain: Chain, kind: str) -> None:
    name, fragment = _policy_cases(chain)[kind]
    result = run_executable(["dist/model.bin", "--policy", name], cwd=chain.work,
                            program="verify-model")
    assert_error(result, 2, name, fragment)


def test_unusable_policy_json_error(chain: Chain) -> None:
    name, _ = _policy_cases(chain)["deeply-nested"]
    result = run(["verify", "dist/model.bin", "--policy", name, "--json"], cwd=chain.work)
    assert_no_traceback(result)
    assert result.code == 2
    assert name in json.loads(result.stdout)["error"]


# ---------------------------------------------------------------- record


def _record(chain: Chain, *options: str | Path) -> tuple:
    marker = chain.work / "ran.txt"
    result = run(["record", "--step", "extra", *options, "--",
                  "python3", "-c", f"open({str(marker)!r}, 'w').write('x')"], cwd=chain.work)
    return result, marker


@pytest.mark.parametrize("kind", ["missing", "directory", "non-utf8", "empty", "public-key"])
def test_record_with_an_unusable_key(chain: Chain, kind: str) -> None:
    work = chain.work
    (work / "keydir").mkdir()
    (work / "nonutf8.key").write_bytes(b"\xff\xfe\x00")
    (work / "empty.key").write_bytes(b"")
    key = {"missing": work / "absent.key", "directory": work / "keydir",
           "non-utf8": work / "nonutf8.key", "empty": work / "empty.key",
           "public-key": chain.keys("builder").public}[kind]
    result, marker = _record(chain, "--key", key, "--product", "ran.txt")
    assert_error(result, 2, str(key))
    assert not marker.exists(), "the step ran although it could not be signed"
    assert not (chain.attestations / "extra.intoto.json").exists()


def test_record_with_a_missing_material(chain: Chain) -> None:
    result, marker = _record(chain, "--key", chain.keys("builder").private,
                             "--material", "absent.csv", "--product", "ran.txt")
    assert_error(result, 2, "absent.csv")
    assert not marker.exists()


def test_record_with_out_pointing_at_a_file(chain: Chain) -> None:
    result, marker = _record(chain, "--key", chain.keys("builder").private,
                             "--product", "ran.txt", "--out", "raw.txt")
    assert_error(result, 2, "raw.txt", "directory")
    assert not marker.exists()


def test_record_with_a_non_utf8_name_in_a_material_directory(chain: Chain) -> None:
    odd = chain.work / "odd"
    odd.mkdir()
    with open(os.path.join(os.fsencode(odd), b"caf\xe9.txt"), "wb") as stream:
        stream.write(b"latin-1 name")
    result, marker = _record(chain, "--key", chain.keys("builder").private,
                             "--material", "odd", "--product", "ran.txt")
    assert_error(result, 2, "caf\\xe9.txt", "UTF-8")
    assert not marker.exists()


def test_record_without_a_command(chain: Chain) -> None:
    result = run(["record", "--step", "s", "--key", chain.keys("builder").private,
                  "--product", "x"], cwd=chain.work)
    assert_no_traceback(result)
    assert result.code == 2


# ---------------------------------------------------------------- digest and keygen


def test_digest_missing_path_and_directory_listing_errors(tmp_path: Path) -> None:
    assert_error(run(["digest", "absent.bin"], cwd=tmp_path), 2, "absent.bin")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "fine.txt").write_text("fine")
    with open(os.path.join(os.fsencode(odd), b"bad\xffname.bin"), "wb") as stream:
        stream.write(b"x")
    assert_error(run(["digest", "odd"], cwd=tmp_path), 2, "odd/bad\\xffname.bin", "UTF-8")
    result = run_executable(["digest", "odd"], cwd=tmp_path)
    assert_error(result, 2, "odd/bad\\xffname.bin", "UTF-8")


def test_digest_of_a_device_is_refused(tmp_path: Path) -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    assert_error(run(["digest", "/dev/null"]), 2, "/dev/null", "not a regular file")


def test_keygen_where_a_file_is_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("I am a file")
    result = run(["keygen", "keys/builder"], cwd=tmp_path)
    assert_error(result, 2, "keys", "not a directory")
    assert (tmp_path / "keys").read_text() == "I am a file"


def test_keygen_where_the_key_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "builder.key").mkdir()
    result = run(["keygen", "builder", "--force"], cwd=tmp_path)
    assert_error(result, 2, "builder.key")
