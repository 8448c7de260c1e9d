"""The hostile-input corpus: every input an attacker or a careless user could hand the verifier,
generated (never hand-copied) next to a recorded chain, each with the commands that read it and
the exit codes they may give.

    python tests/hostile_corpus.py DIRECTORY   writes the corpus (and a chain) there, lists it

Groups: bundle (broken bundle files), statement (step statements with fields of the wrong type,
signed by the chain's builder, so that they reach the judgement), rebuild (rebuild predicates,
signed by a policy rebuilder), policy, key, safetensors, directory (artifact trees holding
special files and odd names), special (FIFOs, devices, sockets, directories given as a file
argument) and oms (model.sig files). Every case is run through every entry point that reads it
by tests/test_hostile_corpus.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from helpers import INTOTO, Chain, payload_of, read_json, sign_bundle

FIXTURES = Path(__file__).parent / "fixtures"
KEYLESS_BUNDLE = FIXTURES / "sigstore" / "a.dsse.staging-rekor-v2.txt.sigstore.json"
KEYLESS_SUBJECT = FIXTURES / "sigstore" / "a.txt"

# Exit codes: 0 pass, 1 a verdict against, 2 unusable input. Never 3 (internal error).
USABLE = (0, 1)
ANY_VERDICT = (0, 1, 2)
REFUSED = (2,)

Args = list[str]


@dataclass
class Case:
    """One hostile input and the commands that read it, each with the exit codes allowed."""

    name: str
    group: str
    path: Path
    runs: dict[str, tuple[Args, str, tuple[int, ...]]] = field(default_factory=dict)
    fragment: str | None = None  # what the error sentence names, where the exit is 2
    heavy: bool = False  # a bomb: also run as a real process under time and memory bounds


@dataclass
class Context:
    chain: Chain
    root: Path  # the corpus directory
    rebuild_policy: Path
    good_safetensors: Path
    sockets: list[socket.socket] = field(default_factory=list)  # kept open while the corpus is

    @property
    def work(self) -> Path:
        return self.chain.work

    def package_statement(self) -> dict[str, Any]:
        return payload_of(read_json(self.chain.attestation("package")))

    def package_payload_sha256(self) -> str:
        bundle = read_json(self.chain.attestation("package"))
        return hashlib.sha256(base64.b64decode(bundle["dsseEnvelope"]["payload"])).hexdigest()


# -------------------------------------------------------------------------- entry points


def bundle_runs(path: Path, ctx: Context, verify_codes: tuple[int, ...] = (1,),
                bundle_codes: tuple[int, ...] = REFUSED) -> dict[str, Any]:
    """A broken bundle file: read by verify-bundle, verify-model, audit and rebuild."""
    chain = ctx.chain
    return {
        "verify-bundle": (["verify-bundle", str(path), "--artifact", "dist/model.bin",
                           "--key", str(chain.keys("builder").public)], "model-verifier",
                          bundle_codes),
        "verify-model": (["dist/model.bin", "--policy", str(chain.policy),
                          "--attestations", str(path)], "verify-model", verify_codes),
        "audit": (["audit", str(path), "--policy", str(chain.policy)], "model-verifier",
                  (1, 2)),
        "rebuild": (["rebuild", str(path), "--trust-key", str(chain.keys("builder").public),
                     "--out", str(ctx.root / "never")], "model-verifier", (1, 2)),
        "verify-bundle-keyless": (["verify-bundle", str(path), "--artifact", "dist/model.bin",
                                   "--identity", "someone@example.com", "--issuer",
                                   "https://issuer.example.com"], "model-verifier", (1, 2)),
        "export": (["export", str(path), "--key", str(chain.keys("builder").private),
                    "--out", str(ctx.root / "links" / path.stem)], "model-verifier",
                   ANY_VERDICT),
    }


def drop(get: Callable[[Any], dict[str, Any]], key: str) -> Callable[[Any], None]:
    """A change that removes one field (and returns nothing)."""
    return lambda value: get(value).pop(key) and None


def statement_runs(path: Path, ctx: Context, signer: str = "builder",
                   policy: Path | None = None) -> dict[str, Any]:
    """A signed statement beside the genuine chain: verify-model and audit judge it with the
    rest, verify-bundle checks it alone, rebuild parses it (and never runs it: no --key)."""
    chain = ctx.chain
    policy = policy or chain.policy
    return {
        "verify-model": (["dist/model.bin", "--policy", str(policy), "--attestations",
                          str(chain.attestations), "--attestations", str(path)], "verify-model",
                         USABLE),
        "audit": (["audit", str(chain.attestations), str(path), "--policy", str(policy)],
                  "model-verifier", USABLE),
        "verify-bundle": (["verify-bundle", str(path), "--artifact", "dist/model.bin",
                           "--key", str(chain.keys(signer).public)], "model-verifier",
                          ANY_VERDICT),
        "rebuild": (["rebuild", str(path), "--trust-key", str(chain.keys(signer).public),
                     "--out", str(ctx.root / "never")], "model-verifier", REFUSED),
    }


def policy_runs(path: Path, ctx: Context, codes: tuple[int, ...] = REFUSED) -> dict[str, Any]:
    chain = ctx.chain
    return {
        "verify-model": (["dist/model.bin", "--policy", str(path)], "verify-model", codes),
        "audit": (["audit", str(chain.attestations), "--policy", str(path)], "model-verifier",
                  codes),
    }


def key_runs(path: Path, ctx: Context) -> dict[str, Any]:
    chain = ctx.chain
    policy = ctx.root / "policies" / f"{path.name}.policy.yaml"
    policy.parent.mkdir(exist_ok=True)
    data = chain.policy_data()
    for spec in data["signers"].values():
        spec["key"] = str(chain.root / "keys" / Path(spec["key"]).name)
    data["signers"]["builder"] = {"key": str(path)}
    data["sources"] = [{"pattern": "*", "unpinned": True}]
    policy.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return {
        "verify-bundle": (["verify-bundle", str(chain.attestation("package")), "--artifact",
                           "dist/model.bin", "--key", str(path)], "model-verifier", REFUSED),
        "verify-model": (["dist/model.bin", "--policy", str(policy)], "verify-model", REFUSED),
        "rebuild": (["rebuild", str(chain.attestation("package")), "--trust-key", str(path),
                     "--out", str(ctx.root / "never")], "model-verifier", REFUSED),
        "record": (["record", "--step", "never", "--key", str(path), "--out",
                    str(ctx.root / "never"), "--", "false"], "model-verifier", REFUSED),
        "sign-model": (["sign-model", str(ctx.root / "never-model"), "--key", str(path),
                        "--signature", str(ctx.root / "never.sig")], "model-verifier", REFUSED),
    }


def tensor_runs(path: Path, ctx: Context, codes: tuple[int, ...] = REFUSED) -> dict[str, Any]:
    return {
        "diff": (["diff", str(path), str(ctx.good_safetensors)], "model-verifier", codes),
        "diff-json": (["diff", str(ctx.good_safetensors), str(path), "--json"],
                      "model-verifier", codes),
    }


def tree_runs(path: Path, ctx: Context, codes: tuple[int, ...] = REFUSED,
              diff_codes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """An artifact tree: hashed by verify-model and digest, listed and compared by diff
    (which compares any name, so a tree it can list gives a verdict)."""
    chain = ctx.chain
    return {
        "verify-model": ([str(path), "--policy", str(chain.policy)], "verify-model", codes),
        "digest": (["digest", str(path)], "model-verifier", codes),
        "diff": (["diff", str(path), str(chain.work / "dist")], "model-verifier",
                 diff_codes or codes),
    }


# -------------------------------------------------------------------------- bundles


def _bundle_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "bundles"
    folder.mkdir()
    genuine = read_json(ctx.chain.attestation("package"))
    cases: list[Case] = []

    def raw(name: str, data: bytes, fragment: str | None = None, heavy: bool = False,
            verify_codes: tuple[int, ...] = (1,)) -> None:
        path = folder / f"{name}.json"
        path.write_bytes(data)
        cases.append(Case(name, "bundle", path, bundle_runs(path, ctx, verify_codes),
                          fragment, heavy))

    def mutated(name: str, change: Callable[[dict[str, Any]], Any], fragment: str | None = None,
                bundle_codes: tuple[int, ...] = REFUSED, verify_codes: tuple[int, ...] = (1,),
                heavy: bool = False) -> None:
        bundle = copy.deepcopy(genuine)
        change(bundle)
        path = folder / f"{name}.json"
        path.write_text(json.dumps(bundle), encoding="utf-8")
        cases.append(Case(name, "bundle", path,
                          bundle_runs(path, ctx, verify_codes, bundle_codes), fragment, heavy))

    envelope = lambda b: b["dsseEnvelope"]  # noqa: E731
    raw("empty", b"", "not valid JSON")
    raw("whitespace", b" \n\t\n", "not valid JSON")
    raw("nul-bytes", b"\0" * 4096)
    raw("utf16", json.dumps(genuine).encode("utf-16"), "UTF-8")
    raw("latin1", b'{"mediaType": "caf\xe9"}', "UTF-8")
    raw("bom", b"\xef\xbb\xbf" + json.dumps(genuine).encode())
    raw("truncated", json.dumps(genuine).encode()[:300], "not valid JSON")
    raw("deep-array", b"[" * 200_000, "nested too deeply", heavy=True)
    raw("deep-object", b'{"a":' * 200_000, "nested too deeply", heavy=True)
    raw("huge-integer", b'{"mediaType": ' + b"9" * 100_000 + b"}")
    raw("nan", b'{"mediaType": NaN}', "not a Sigstore bundle")
    raw("top-level-number", b"42", "not a Sigstore bundle")
    raw("top-level-string", b'"bundle"', "not a Sigstore bundle")
    raw("top-level-null", b"null", "not a Sigstore bundle")
    raw("top-level-list", json.dumps([genuine]).encode(), "not a Sigstore bundle")
    raw("two-objects", (json.dumps(genuine) + json.dumps(genuine)).encode())
    raw("escape-sequences", json.dumps({"mediaType": "\x1b]0;owned\x07\x1b[2J\r\nPASS"}
                                       ).encode(), "not a Sigstore bundle")
    raw("lone-surrogate", b'{"mediaType": "\\udcff\\ud800"}', "not a Sigstore bundle")
    raw("long-media-type", json.dumps({"mediaType": "x" * 5_000_000}).encode(),
        "not a Sigstore bundle")
    mutated("media-type-list", lambda b: b.__setitem__("mediaType", [1, 2, 3]), "mediaType")
    mutated("media-type-object", lambda b: b.__setitem__("mediaType", {"a": 1}), "mediaType")
    mutated("no-material", drop(lambda b: b, "verificationMaterial"), "verificationMaterial")
    mutated("material-list", lambda b: b.__setitem__("verificationMaterial", []),
            "verificationMaterial")
    mutated("public-key-list", lambda b: b["verificationMaterial"].__setitem__("publicKey", [1]),
            bundle_codes=(0,))
    mutated("hint-number", lambda b: b["verificationMaterial"]["publicKey"].__setitem__(
        "hint", 7), bundle_codes=(0,))
    mutated("certificate-number", lambda b: b["verificationMaterial"].__setitem__(
        "certificate", 5), bundle_codes=(2,), verify_codes=(1,))
    mutated("envelope-list", lambda b: b.__setitem__("dsseEnvelope", []), "dsseEnvelope")
    mutated("payload-type-number", lambda b: envelope(b).__setitem__("payloadType", 3),
            "payloadType")
    mutated("payload-type-other", lambda b: envelope(b).__setitem__("payloadType", "text/x"),
            bundle_codes=(1,))
    mutated("payload-number", lambda b: envelope(b).__setitem__("payload", 12), "base64")
    mutated("payload-not-base64", lambda b: envelope(b).__setitem__("payload", "**"), "base64")
    mutated("payload-empty", lambda b: envelope(b).__setitem__("payload", ""), bundle_codes=(1,))
    mutated("signatures-missing", drop(envelope, "signatures"), "signatures")
    mutated("signatures-empty", lambda b: envelope(b).__setitem__("signatures", []),
            "signatures")
    mutated("signatures-object", lambda b: envelope(b).__setitem__("signatures", {"a": 1}),
            "signatures")
    mutated("signature-number", lambda b: envelope(b).__setitem__("signatures", [7]),
            "signature")
    mutated("signature-sig-list", lambda b: envelope(b)["signatures"][0].__setitem__(
        "sig", ["x"]), "base64")
    mutated("signature-keyid-object", lambda b: envelope(b)["signatures"][0].__setitem__(
        "keyid", {"a": 1}), bundle_codes=(0,))
    mutated("signature-bad-bytes", lambda b: envelope(b)["signatures"][0].__setitem__(
        "sig", "AAAA"), bundle_codes=(1,))
    mutated("sixteen-signatures", lambda b: envelope(b).__setitem__(
        "signatures", [{"sig": "AAAA", "keyid": ""}] * 15 + envelope(b)["signatures"]),
        bundle_codes=(0,))
    mutated("seventeen-signatures", lambda b: envelope(b).__setitem__(
        "signatures", [{"sig": "AAAA", "keyid": ""}] * 16 + envelope(b)["signatures"]),
        "signatures")
    mutated("junk-signatures-150k", lambda b: envelope(b).__setitem__(
        "signatures", [{"sig": "AAAA", "keyid": b["verificationMaterial"]["publicKey"]["hint"]}]
        * 150_000), "10000 JSON objects", heavy=True)
    mutated("junk-signatures-5000", lambda b: envelope(b).__setitem__(
        "signatures", [{"sig": "AAAA", "keyid": ""}] * 5_000), "5000 signatures")
    lines = "\n".join([json.dumps(genuine), "{broken", "[1]", json.dumps({"mediaType": 1}),
                       "", "\x1b[2J"]) + "\n"
    path = folder / "store.jsonl"
    path.write_text(lines, encoding="utf-8")
    cases.append(Case("jsonl-with-bad-lines", "bundle", path,
                      bundle_runs(path, ctx, bundle_codes=(2,))))
    path = folder / "many-bad-lines.jsonl"
    path.write_text("{bad\n" * 20_000, encoding="utf-8")
    cases.append(Case("jsonl-20k-bad-lines", "bundle", path,
                      bundle_runs(path, ctx, bundle_codes=(2,)), "JSON"))
    sparse = folder / "sparse-huge.json"
    with sparse.open("wb") as stream:
        stream.truncate(65 * 1024 * 1024)  # 65 MiB of holes: refused by size, never read
    cases.append(Case("larger-than-cap", "bundle", sparse, bundle_runs(sparse, ctx),
                      "larger than"))
    return cases


# -------------------------------------------------------------------------- statements


def _signed(ctx: Context, statement: Any, signer: str, path: Path,
            raw_payload: bytes | None = None) -> Path:
    payload = raw_payload if raw_payload is not None else json.dumps(statement).encode()
    bundle = sign_bundle(payload, INTOTO, ctx.chain.keys(signer).private)
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


def _statement_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "statements"
    folder.mkdir()
    cases: list[Case] = []

    def step(name: str, change: Callable[[dict[str, Any]], Any], *,
             verify_codes: tuple[int, ...] | None = None, raw_payload: bytes | None = None,
             heavy: bool = False) -> None:
        statement: Any = ctx.package_statement()
        replaced = change(statement)
        statement = replaced if isinstance(replaced, list) else statement  # payload-list
        path = _signed(ctx, statement, "builder", folder / f"{name}.json", raw_payload)
        runs = statement_runs(path, ctx)
        if verify_codes is not None:
            runs["verify-model"] = (*runs["verify-model"][:2], verify_codes)
        cases.append(Case(name, "statement", path, runs, heavy=heavy))

    predicate = lambda s: s["predicate"]  # noqa: E731
    definition = lambda s: s["predicate"]["buildDefinition"]  # noqa: E731
    external = lambda s: definition(s)["externalParameters"]  # noqa: E731
    environment = lambda s: definition(s)["internalParameters"]["environment"]  # noqa: E731

    def setter(get: Callable[[dict[str, Any]], Any], key: str, value: Any
               ) -> Callable[[dict[str, Any]], None]:
        return lambda s: get(s).__setitem__(key, value)

    step("payload-not-json", lambda s: None, raw_payload=b"\x00\xff not json")
    step("payload-deep", lambda s: None, raw_payload=b"[" * 100_000, heavy=True)
    step("payload-huge-int", lambda s: None, raw_payload=b'{"_type": ' + b"1" * 50_000 + b"}")
    step("payload-list", lambda s: [s])
    step("type-wrong", setter(lambda s: s, "_type", "https://in-toto.io/Statement/v0.1"))
    step("type-number", setter(lambda s: s, "_type", 1))
    step("subject-missing", drop(lambda s: s, "subject"))
    step("subject-empty", setter(lambda s: s, "subject", []))
    step("subject-object", setter(lambda s: s, "subject", {"name": "x"}))
    step("subject-entry-string", setter(lambda s: s, "subject", ["dist/model.bin"]))
    step("subject-name-number", lambda s: s["subject"][0].__setitem__("name", 5))
    step("subject-digest-list", lambda s: s["subject"][0].__setitem__("digest", ["sha256"]))
    step("subject-digest-empty", lambda s: s["subject"][0].__setitem__("digest", {}))
    step("subject-digest-number", lambda s: s["subject"][0].__setitem__("digest",
                                                                        {"sha256": 1}))
    step("subject-digest-nested", lambda s: s["subject"][0].__setitem__(
        "digest", {"sha256": {"deeper": "x"}}))
    step("predicate-missing", drop(lambda s: s, "predicate"))
    step("predicate-list", setter(lambda s: s, "predicate", [1]))
    step("predicate-type-number", setter(lambda s: s, "predicateType", 9))
    step("predicate-type-long", setter(lambda s: s, "predicateType", "p" * 1_000_000))
    step("build-definition-list", setter(predicate, "buildDefinition", []))
    step("build-type-other", setter(definition, "buildType", "\x1b[31mevil"))
    step("external-list", setter(definition, "externalParameters", ["a"]))
    step("step-number", setter(external, "step", 3))
    step("step-empty", setter(external, "step", ""))
    step("step-escapes", setter(external, "step", "package\x1b[2J\r\nPASS  everything"))
    step("step-surrogate", setter(external, "step", "pack\udcffage"))
    step("step-bidi", setter(external, "step", "package\u202egnp.exe"))
    step("step-long", setter(external, "step", "s" * 1_000_000))
    step("argv-string", setter(external, "argv", "rm -rf /"))
    step("argv-empty", setter(external, "argv", []))
    step("argv-numbers", setter(external, "argv", [1, 2]))
    step("workdir-number", setter(external, "workingDirectory", 4))
    step("env-list", setter(external, "env", ["A=1"]))
    step("env-value-number", setter(external, "env", {"A": 1}))
    step("env-value-object", setter(external, "env", {"A": {"b": [1, 2]}}))
    step("internal-list", setter(definition, "internalParameters", [1]))
    step("environment-list", lambda s: definition(s).__setitem__(
        "internalParameters", {"environment": [1]}))
    step("git-list", setter(environment, "git", ["commit", "dirty"]))
    step("git-string", setter(environment, "git", "deadbeef"))
    step("git-commit-number", setter(environment, "git", {"commit": 5, "dirty": False}))
    step("git-dirty-string", setter(environment, "git", {"commit": "ab", "dirty": "no"}))
    step("git-null", setter(environment, "git", None), verify_codes=(0,))
    step("variables-list", setter(environment, "variables", [1]))
    step("gpus-number", setter(environment, "gpus", 4))
    step("torch-string", setter(environment, "torch", "yes"))
    step("packages-list", setter(environment, "packages", ["numpy"]))
    step("materials-object", setter(definition, "resolvedDependencies", {"a": 1}))
    step("material-number", setter(definition, "resolvedDependencies", [1]))
    step("material-digest-list", lambda s: definition(s).__setitem__(
        "resolvedDependencies", [{"name": "model/weights.bin", "digest": ["x"]}]))
    step("material-name-escapes", lambda s: definition(s)["resolvedDependencies"][0].__setitem__(
        "name", "weights\x1b[8m.bin\n"))
    step("run-details-list", setter(predicate, "runDetails", [1]))
    step("run-details-metadata-string", lambda s: predicate(s)["runDetails"].__setitem__(
        "metadata", "now"))
    step("run-details-byproducts-number", lambda s: predicate(s)["runDetails"].__setitem__(
        "byproducts", 3))
    step("run-details-byproduct-digest-list", lambda s: predicate(s)["runDetails"].__setitem__(
        "byproducts", [{"name": "stdout", "digest": ["sha256"]}]))
    for depth in (500, 5_000):  # parsed and carried along; beyond the decoder's depth
        statement = ctx.package_statement()
        environment(statement)["extra"] = "@@deep@@"
        deep = json.dumps(statement).replace('"@@deep@@"', "[" * depth + "]" * depth)
        step(f"nested-{depth}-in-environment", lambda s: None, raw_payload=deep.encode())
    return cases


def _rebuild_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "rebuilds"
    folder.mkdir()
    package = ctx.package_statement()
    results = [{"name": s["name"], "verdict": "IDENTICAL", "expected": s["digest"],
                "actual": s["digest"]} for s in package["subject"]]
    model = next(i for i, s in enumerate(package["subject"]) if s["name"] == "dist/model.bin")
    cases: list[Case] = []

    def rebuild(name: str, change: Callable[[dict[str, Any]], Any]) -> None:
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": package["subject"],
            "predicateType": "https://model-verifier.dev/attestations/rebuild/v1",
            "predicate": {
                "step": "package",
                "rebuiltAttestation": {"name": "package.intoto.json",
                                       "digest": {"sha256": ctx.package_payload_sha256()}},
                "results": copy.deepcopy(results), "drift": [],
            },
        }
        change(statement["predicate"])
        path = _signed(ctx, statement, "auditor", folder / f"{name}.json")
        cases.append(Case(name, "rebuild", path,
                          statement_runs(path, ctx, "auditor", ctx.rebuild_policy)))

    def result(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda p: p["results"][model].__setitem__(key, value)

    def tensors(value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda p: p["results"][model].update(
            verdict="DIVERGED", diff={"kind": "safetensors", "tensors": value})

    rebuild("genuine", lambda p: None)
    rebuild("step-number", lambda p: p.__setitem__("step", 1))
    rebuild("rebuilt-list", lambda p: p.__setitem__("rebuiltAttestation", ["x"]))
    rebuild("rebuilt-digest-list", lambda p: p["rebuiltAttestation"].__setitem__("digest", [1]))
    rebuild("rebuilt-sha-number", lambda p: p["rebuiltAttestation"].__setitem__(
        "digest", {"sha256": 5}))
    rebuild("results-object", lambda p: p.__setitem__("results", {"a": 1}))
    rebuild("result-string", lambda p: p.__setitem__("results", ["IDENTICAL"]))
    rebuild("result-name-number", result("name", 3))
    rebuild("result-verdict-other", result("verdict", "FINE"))
    rebuild("result-expected-list", result("expected", ["sha256"]))
    rebuild("result-actual-number", result("actual", 5))
    rebuild("result-actual-list", result("actual", ["a"]))
    rebuild("result-actual-values-numbers", result("actual", {"sha256": 1}))
    rebuild("result-actual-null", result("actual", None))
    rebuild("result-diff-list", result("diff", [1]))
    rebuild("result-diff-offset-string", result("diff", {"kind": "bytes",
                                                         "first_difference_offset": "x"}))
    rebuild("tensors-number", tensors(5))
    rebuild("tensor-string", tensors(["w"]))
    rebuild("tensor-name-number", tensors([{"name": 1, "status": "changed"}]))
    rebuild("tensor-metric-string", tensors([{"name": "w", "status": "changed",
                                              "max_abs_diff": "big", "rel_l2": "x"}]))
    rebuild("tensor-metric-bool", tensors([{"name": "w", "status": "changed",
                                            "max_abs_diff": True}]))
    rebuild("tensor-name-escapes", tensors([{"name": "w\x1b[2J\rPASS", "status": "changed",
                                             "max_abs_diff": 1.0, "rel_l2": 0.5}]))
    rebuild("drift-number", lambda p: p.__setitem__("drift", 7))
    rebuild("drift-entries-strings", lambda p: p.__setitem__("drift", ["a", 1]))
    return cases


# -------------------------------------------------------------------------- policies


def _policy_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "policies-hostile"
    folder.mkdir()
    chain = ctx.chain
    good = json.loads(json.dumps(chain.policy_data()))
    keys = chain.root / "keys"
    for spec in good["signers"].values():
        spec["key"] = str(keys / Path(spec["key"]).name)
    good_text = json.dumps(good)  # JSON is YAML
    cases: list[Case] = []

    def policy(name: str, text: str | bytes, fragment: str | None = None,
               codes: tuple[int, ...] = REFUSED, heavy: bool = False) -> None:
        path = folder / f"{name}.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        cases.append(Case(name, "policy", path, policy_runs(path, ctx, codes), fragment, heavy))

    def variant(name: str, change: Callable[[dict[str, Any]], Any],
                fragment: str | None = None, codes: tuple[int, ...] = REFUSED) -> None:
        data = json.loads(good_text)
        change(data)
        policy(name, json.dumps(data), fragment, codes)

    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous = chr(ord("a") + level - 1)
        laughs.append(f"{chr(ord('a') + level)}: &{chr(ord('a') + level)} "
                      f"[{','.join(['*' + previous] * 9)}]")
    policy("billion-laughs", "\n".join(laughs) + "\n", "alias", heavy=True)
    policy("one-alias", good_text[:-1] + ', "name": &n "x", "x-copy": *n}', "alias")
    policy("merge-key", "base: &b {version: 1}\npolicy:\n  <<: *b\n", "alias")
    policy("merge-key-no-alias", "<<: {version: 1}\n", "key")
    policy("anchor-without-alias", good_text.replace('"name"', '&top "name"', 1), codes=(0,))
    policy("list-as-key", "? [a, b]\n: 1\n", "list or a mapping")
    policy("map-as-key", "? {a: 1}\n: 1\n", "list or a mapping")
    policy("list-key-inside", good_text[:-1] + ', "signers2": {? [x]: 1}}', "list or a mapping")
    policy("integer-key", "1: version\n", "quote it")
    policy("boolean-key", "on: push\n", "quote it")
    policy("null-key", "~: 1\n", "quote it")
    policy("date-key", "2024-01-01: 1\n", "quote it")
    policy("duplicate-key", "version: 1\nversion: 1\n", "twice")
    policy("python-tag", "!!python/object/apply:os.system ['true']\n", "valid YAML")
    policy("unknown-tag", "version: !evil 1\n", "valid YAML")
    policy("binary-tag", good_text[:-1] + ', "name": !!binary aGVsbG8=}', "name")
    policy("set-tag", good_text[:-1] + ', "name": !!set {a, b}}', "name")
    policy("tabs", "version: 1\n\tsigners: {}\n", "valid YAML")
    policy("deep-flow", "[" * 100_000, "nested too deeply", heavy=True)
    policy("deep-block", "".join("  " * i + "a:\n" for i in range(3000)))
    policy("latin1", "name: caf\xe9\n".encode("latin-1"), "UTF-8")
    policy("nul-bytes", b"\0\0\0", "valid YAML")
    policy("empty", "", "empty")
    policy("list", "- 1\n", "object")
    policy("scalar", "policy\n", "object")
    policy("larger-than-cap", "# " + "x" * (1024 * 1024) + "\n", "larger than")
    variant("long-name", lambda d: d.__setitem__("name", "n" * 500_000), codes=(0,))
    policy("long-signer-value", good_text.replace('"key": ', '"key": 5, "k2": ', 1)
           .replace('"k2": ', '"k3": ' + json.dumps(["x"] * 50_000) + ', "k2": ', 1), "signers")
    policy("escape-in-signer-name", good_text.replace('"auditor"', '"aud\\u001b[2Jitor"'),
           codes=(0,))
    variant("step-named-rtol", lambda d: d.update(
        steps=d["steps"] + [{"name": "rtol", "signed_by": ["builder"]}],
        rebuild={"quorum": 1, "rebuilders": ["auditor"], "steps": ["package", "rtol"],
                 "match": {"rtol": "exact", "atol": "exact"}}), "rtol")
    variant("match-mixes-forms", lambda d: d.update(
        rebuild={"quorum": 1, "rebuilders": ["auditor"], "steps": ["package"],
                 "match": {"package": "exact", "rtol": 0.1}}), "mixes")
    variant("match-options-as-steps", lambda d: d.update(
        rebuild={"quorum": 1, "rebuilders": ["auditor"], "steps": ["package"],
                 "match": {"rtol": "exact", "atol": "exact"}}), "rebuild.match.atol")
    variant("tolerance-huge-integer", lambda d: d.update(
        rebuild={"quorum": 1, "rebuilders": ["auditor"], "steps": ["package"],
                 "match": {"rtol": 10**400, "atol": 0}}), "finite number")
    policy("tolerance-infinite", good_text[:-1] + ', "rebuild": {"quorum": 1, "rebuilders": '
           '["auditor"], "steps": ["package"], "match": {"rtol": .inf, "atol": 0}}}',
           "finite number")
    variant("quorum-huge", lambda d: d.update(
        rebuild={"quorum": 10**300, "rebuilders": ["auditor"], "steps": ["package"]}),
        codes=(1,))
    variant("key-path-nul", lambda d: d["signers"].__setitem__("builder", {"key": "a\0.pub"}),
            "NUL")
    variant("key-path-fifo", lambda d: d["signers"].__setitem__(
        "builder", {"key": str(ctx.root / "special" / "fifo.json")}), "named pipe")
    variant("trusted-root-nul", lambda d: d.__setitem__("trusted_root", "r\0.json"),
            codes=ANY_VERDICT)  # read only for keyless signers, which this policy has none of
    variant("signers-list", lambda d: d.__setitem__("signers", ["builder"]), "signers")
    variant("steps-object", lambda d: d.__setitem__("steps", {"a": 1}), "steps")
    variant("version-string", lambda d: d.__setitem__("version", "1"), "version")
    variant("expires-number", lambda d: d.__setitem__("expires", 20240101), "expires")
    variant("sources-escapes", lambda d: d["sources"].append(
        {"pattern": "\x1b[2J*", "unpinned": True}), codes=(0,))
    policy("impossible-date", good_text[:-1] + ', "expires": 2024-02-30}', "out of range")
    policy("datetime-expiry", good_text[:-1] + ', "expires": 2024-01-01T10:00:00}', "expires")
    return cases


# -------------------------------------------------------------------------- keys


def _key_cases(ctx: Context) -> list[Case]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    folder = ctx.root / "keys-hostile"
    folder.mkdir()
    cases: list[Case] = []

    def key(name: str, data: bytes, fragment: str | None = None) -> None:
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        cases.append(Case(name, "key", path, key_runs(path, ctx), fragment))

    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    # P-384 is a key we verify with; secp256k1 (no curve the formats we speak use) is not.
    k256 = ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(pem, public)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key("empty", b"")
    key("garbage", os.urandom(512))
    key("text", b"not a key\n")
    key("pem-bad-base64", b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n")
    key("pem-truncated", ctx.chain.keys("builder").public.read_bytes()[:60])
    key("secp256k1", k256)
    key("rsa", rsa_key.public_key().public_bytes(pem, public))
    key("larger-than-cap", b"-----BEGIN PUBLIC KEY-----\n" + b"A" * (300 * 1024), "larger than")
    key("escapes", b"\x1b]0;owned\x07\x1b[2J\r\n")
    return cases


# -------------------------------------------------------------------------- safetensors


def _safetensors(header: Any, data: bytes = b"", length: int | None = None,
                 raw_header: bytes | None = None) -> bytes:
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def _tensor_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "safetensors"
    folder.mkdir()
    cases: list[Case] = []

    def tensors(name: str, data: bytes, fragment: str | None = None,
                codes: tuple[int, ...] = REFUSED, heavy: bool = False) -> None:
        path = folder / f"{name}.safetensors"
        path.write_bytes(data)
        cases.append(Case(name, "safetensors", path, tensor_runs(path, ctx, codes), fragment,
                          heavy))

    w = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    eight = b"\0" * 8
    tensors("empty", b"")
    tensors("short", b"\x01\x02")
    tensors("length-beyond-file", _safetensors({"w": w}, eight, length=10**6))
    tensors("length-2-63", _safetensors({"w": w}, eight, length=2**63))
    tensors("length-zero", _safetensors({"w": w}, eight, length=0))
    tensors("header-not-json", _safetensors(None, raw_header=b"{not json"))
    tensors("header-not-utf8", _safetensors(None, raw_header=b'{"\xff": 1}'))
    tensors("header-deep", _safetensors(None, raw_header=b"{" + b'"a":{' * 100_000),
            heavy=True)
    tensors("header-deep-closed", _safetensors(None, raw_header=b'{"a":' + b"[" * 100_000
                                               + b"]" * 100_000 + b"}"), heavy=True)
    tensors("header-entry-list", _safetensors(None, raw_header=b'{"a": [1]}'))
    tensors("spec-number", _safetensors({"w": 5}))
    tensors("spec-missing-fields", _safetensors({"w": {"dtype": "F32"}}))
    tensors("dtype-unknown", _safetensors({"w": {**w, "dtype": "F128"}}, eight))
    tensors("dtype-number", _safetensors({"w": {**w, "dtype": 4}}, eight))
    tensors("shape-string", _safetensors({"w": {**w, "shape": "2"}}, eight))
    tensors("shape-negative", _safetensors({"w": {**w, "shape": [-2]}}, eight))
    tensors("shape-float", _safetensors({"w": {**w, "shape": [2.0]}}, eight))
    tensors("shape-million-dims", _safetensors({"w": {**w, "shape": [10**12] * 1_000_000}},
                                               eight), heavy=True)
    tensors("shape-huge-product", _safetensors({"w": {**w, "shape": [2**62, 2**62]}}, eight))
    tensors("offsets-one", _safetensors({"w": {**w, "data_offsets": [0]}}, eight))
    tensors("offsets-reversed", _safetensors({"w": {**w, "data_offsets": [8, 0]}}, eight))
    tensors("offsets-beyond", _safetensors({"w": {**w, "data_offsets": [0, 8 * 10**9]}},
                                           eight))
    tensors("offsets-strings", _safetensors({"w": {**w, "data_offsets": ["0", "8"]}}, eight))
    tensors("metadata-numbers", _safetensors({"__metadata__": {"a": 1}, "w": w}, eight))
    tensors("metadata-list", _safetensors({"__metadata__": [1], "w": w}, eight))
    tensors("duplicate-names", _safetensors(None, eight, raw_header=(
        b'{"w": ' + json.dumps(w).encode() + b', "w": ' + json.dumps(w).encode() + b"}")))
    tensors("huge-integer", _safetensors(None, eight, raw_header=(
        b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}}')))
    tensors("nan-in-header", _safetensors(None, eight, raw_header=b'{"w": NaN}'))
    tensors("name-escapes", _safetensors({"w\x1b[2J\r\nPASS": w}, eight), codes=(1,))
    tensors("name-long", _safetensors({"n" * 1_000_000: w}, eight), codes=(1,))
    # a changed __metadata__ is a difference (loaders read it): DIVERGED, and escaped
    tensors("metadata-escapes", _safetensors({"__metadata__": {"\x1b[31mkey": "\r"}, "w": w},
                                             eight), codes=(1,))
    return cases


# -------------------------------------------------------------------------- trees, special files


def _special_files(ctx: Context, folder: Path) -> dict[str, Path]:
    """A FIFO, a link to /dev/zero, a socket and a directory, made in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {"fifo": folder / "fifo.json", "dev-zero": folder / "zero.json",
            "socket": folder / "socket.json", "directory": folder / "directory.json"}
    os.mkfifo(made["fifo"])
    made["dev-zero"].symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(made["socket"]))
    server.listen(1)
    ctx.sockets.append(server)
    made["directory"].mkdir()
    return made


def _tree_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "trees"
    folder.mkdir()
    cases: list[Case] = []

    def tree(name: str, build: Callable[[Path], Any], fragment: str | None = None,
             codes: tuple[int, ...] = REFUSED, diff_codes: tuple[int, ...] | None = None
             ) -> None:
        root = folder / name
        root.mkdir()
        (root / "model.bin").write_bytes(b"weights")
        build(root)
        cases.append(Case(name, "directory", root, tree_runs(root, ctx, codes, diff_codes),
                          fragment))

    tree("holds-fifo", lambda r: os.mkfifo(r / "pipe"), "regular file")
    tree("holds-dev-zero-link", lambda r: (r / "zero").symlink_to("/dev/zero"),
         "symbolic link")
    tree("holds-socket", lambda r: _bind(ctx, r / "sock"))
    tree("holds-link-loop", lambda r: (r / "loop").symlink_to(r), "symbolic link")
    tree("holds-dangling-link", lambda r: (r / "gone").symlink_to(r / "nowhere"),
         "symbolic link")
    tree("holds-non-utf8-name", lambda r: Path(os.fsdecode(bytes(r) + b"/\xff\xfe.bin"))
         .write_bytes(b"x"), "UTF-8", diff_codes=(1,))
    tree("holds-newline-name", lambda r: (r / "a\nb").write_bytes(b"x"), "newline",
         diff_codes=(1,))
    tree("holds-escape-name", lambda r: (r / "x\x1b[2J\rPASS").write_bytes(b"x"), codes=(0, 1))
    tree("nested-fifo", lambda r: (r / "a" / "b").mkdir(parents=True) or os.mkfifo(
        r / "a" / "b" / "pipe"), "regular file")
    return cases


def _bind(ctx: Context, path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    ctx.sockets.append(server)


def _special_cases(ctx: Context) -> list[Case]:
    """Each special file as every file argument of every command."""
    made = _special_files(ctx, ctx.root / "special")
    chain = ctx.chain
    pub = str(chain.keys("builder").public)
    package = str(chain.attestation("package"))
    never = str(ctx.root / "never")
    cases: list[Case] = []
    for kind, path in made.items():
        p = str(path)
        artifact = (0, 1) if kind == "directory" else REFUSED  # a directory is an artifact
        runs: dict[str, tuple[Args, str, tuple[int, ...]]] = {
            "verify-model-policy": (["dist/model.bin", "--policy", p], "verify-model", REFUSED),
            "verify-model-artifact": ([p, "--policy", str(chain.policy)], "verify-model",
                                      artifact),
            "verify-bundle-bundle": (["verify-bundle", p, "--artifact", "dist/model.bin",
                                      "--key", pub], "model-verifier", REFUSED),
            "verify-bundle-key": (["verify-bundle", package, "--artifact", "dist/model.bin",
                                   "--key", p], "model-verifier", REFUSED),
            "verify-bundle-artifact": (["verify-bundle", package, "--artifact", p, "--key",
                                        pub], "model-verifier", artifact),
            "rebuild-attestation": (["rebuild", p, "--trust-key", pub, "--out", never],
                                    "model-verifier", REFUSED),
            "rebuild-trust-key": (["rebuild", package, "--trust-key", p, "--out", never],
                                  "model-verifier", REFUSED),
            "record-key": (["record", "--step", "never", "--key", p, "--out", never, "--",
                            "false"], "model-verifier", REFUSED),
            "digest": (["digest", p], "model-verifier", artifact),
            "diff": (["diff", p, str(ctx.good_safetensors)], "model-verifier", REFUSED),
            # A real keyless bundle, so that the trusted root is read; and a policy that a
            # summary's digest is compared with.
            "verify-bundle-trusted-root": (
                ["verify-bundle", str(KEYLESS_BUNDLE), "--artifact", str(KEYLESS_SUBJECT),
                 "--identity", "https://example.org/id", "--issuer", "https://example.org",
                 "--trusted-root", p], "model-verifier", REFUSED),
            "verify-vsa-policy": (["verify-vsa", package, "--artifact", "dist/model.bin",
                                   "--key", pub, "--policy", p], "model-verifier", REFUSED),
        }
        if kind != "directory":  # a directory of attestations, or to audit, is legitimate
            runs["verify-model-attestations"] = (
                ["dist/model.bin", "--policy", str(chain.policy), "--attestations", p],
                "verify-model", REFUSED)
            runs["audit"] = (["audit", p], "model-verifier", REFUSED)
            runs["audit-policy"] = (["audit", str(chain.attestations), "--policy", p],
                                    "model-verifier", REFUSED)
        cases.append(Case(f"special-{kind}", "special", path, runs))
    # Special files inside a directory of attestations: refused unopened, noted, judged on.
    inside = ctx.root / "attestations-with-specials"
    inside.mkdir()
    for source in chain.attestations.iterdir():
        (inside / source.name).write_bytes(source.read_bytes())
    os.mkfifo(inside / "pipe.json")
    (inside / "zero.jsonl").symlink_to("/dev/zero")
    _bind(ctx, inside / "socket.json")
    cases.append(Case("attestations-dir-with-specials", "special", inside, {
        "verify-model": (["dist/model.bin", "--policy", str(chain.policy), "--attestations",
                          str(inside)], "verify-model", (0,)),
        "audit": (["audit", str(inside), "--policy", str(chain.policy)], "model-verifier",
                  (1,)),
        "rebuild": (["rebuild", str(inside), "--trust-key", pub, "--out", never],
                    "model-verifier", REFUSED),
    }))
    return cases


def _oms_cases(ctx: Context) -> list[Case]:
    folder = ctx.root / "oms"
    folder.mkdir()
    cases: list[Case] = []
    oms_type = "https://model_signing/signature/v1.0"

    def signature(name: str, content: Callable[[Path], Any], codes: tuple[int, ...] = (1,),
                  fragment: str | None = None) -> None:
        model = folder / name
        model.mkdir()
        (model / "weights.bin").write_bytes(b"w")
        content(model / "model.sig")
        cases.append(Case(name, "oms", model, {
            "verify-model": ([str(model), "--policy", str(ctx.chain.policy)], "verify-model",
                             codes)}, fragment))

    def statement(predicate: Any, subject: Any = None) -> Callable[[Path], Any]:
        body = {"_type": "https://in-toto.io/Statement/v1", "predicateType": oms_type,
                "subject": subject if subject is not None else [{"name": "m", "digest": {
                    "sha256": "0" * 64}}], "predicate": predicate}
        return lambda p: _signed(ctx, body, "builder", p)

    signature("not-json", lambda p: p.write_bytes(b"{nope"))
    signature("deep", lambda p: p.write_bytes(b"[" * 100_000))
    signature("fifo", lambda p: os.mkfifo(p), REFUSED, "not a regular file")
    signature("payload-huge-int", lambda p: _signed(ctx, None, "builder", p,
                                                    b'{"a": ' + b"7" * 10_000 + b"}"))
    signature("subject-digest-list", statement({}, [{"name": "m", "digest": ["x"]}]))
    signature("predicate-list", statement([1]))
    signature("serialization-list", statement({"serialization": [1]}))
    signature("resources-object", statement({"serialization": {
        "method": "files", "hash_type": "sha256"}, "resources": {"a": 1}}))
    signature("resource-name-escapes", statement({"serialization": {
        "method": "files", "hash_type": "sha256"}, "resources": [
        {"name": "\x1b[2J", "algorithm": "sha256", "digest": "0" * 64}]}))
    signature("resource-digest-number", statement({"serialization": {
        "method": "files", "hash_type": "sha256"}, "resources": [
        {"name": "weights.bin", "algorithm": "sha256", "digest": 5}]}))
    return cases


# -------------------------------------------------------------------------- the corpus


def build_corpus(chain: Chain, root: Path) -> tuple[list[Case], Context]:
    """Write every case under root (next to the recorded chain) and return them."""
    import numpy as np
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    good = root / "good.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(good))
    rebuild_policy = root / "rebuild-policy.yaml"
    data = chain.policy_data()
    for spec in data["signers"].values():
        spec["key"] = str(chain.root / "keys" / Path(spec["key"]).name)
    data["rebuild"] = {"quorum": 1, "rebuilders": ["auditor"], "steps": ["package"],
                       "match": {"package": {"rtol": 0.1, "atol": 0.1}}}
    rebuild_policy.write_text(json.dumps(data), encoding="utf-8")
    ctx = Context(chain, root, rebuild_policy, good)
    cases: list[Case] = []
    for make in (_bundle_cases, _statement_cases, _rebuild_cases, _policy_cases, _key_cases,
                 _tensor_cases, _tree_cases, _special_cases, _oms_cases):
        cases.extend(make(ctx))
    names = [f"{c.group}/{c.name}" for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases, ctx


if __name__ == "__main__":
    from helpers import build_chain

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus").resolve()
    built_chain = build_chain(target / "chain")
    corpus, _ = build_corpus(built_chain, target / "corpus")
    for case in corpus:
        print(f"{case.group:<12} {case.name:<36} {', '.join(case.runs)}")
    print(f"{len(corpus)} inputs, {sum(len(c.runs) for c in corpus)} runs")
