"""Hand-made attestation graphs, signed the way an attacker (or an honest tool) would.

Statements are built here, without the product's recorder, and signed with `helpers.sign_bundle`
(PAE + `cryptography`), so the judgement is tested on bytes it did not make:

    world = World.create(directory, ["builder", "ra", "rb", "auditor", "stranger"])
    prepare = world.step("prepare", {"raw.csv": RAW}, {"data.csv": DATA})
    world.write(prepare.signed("builder"))                      # a bundle file
    world.write(world.rebuild(prepare, "ra"))                   # ra reproduced it
    world.policy({...})                                         # model-policy.yaml
    world.verify(ARTIFACT)                                      # the CLI, --json

Files given as products can be created on disk (`world.file(name, content)`), so an artifact can
be verified by the real entry points.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import CliResult, run, sign_bundle, write_policy

from verifier.formats.signing import generate_keypair

INTOTO = "application/vnd.in-toto+json"
PROVENANCE = "https://slsa.dev/provenance/v1"
STEP_BUILD_TYPE = "https://model-verifier.dev/buildtypes/step/v1"
REBUILD = "https://model-verifier.dev/attestations/rebuild/v1"


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def step_statement(name: str, materials: dict[str, dict[str, str]],
                   products: dict[str, dict[str, str]], argv: list[str] | None = None,
                   env: dict[str, str] | None = None,
                   environment: dict[str, Any] | None = None) -> dict[str, Any]:
    def descriptors(items: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
        return [{"name": n, "digest": d} for n, d in sorted(items.items())]

    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": descriptors(products),
        "predicateType": PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": STEP_BUILD_TYPE,
                "externalParameters": {"step": name, "argv": argv or ["python", f"{name}.py"],
                                       "workingDirectory": ".", "env": env or {}},
                "internalParameters": {"environment": environment or {}},
                "resolvedDependencies": descriptors(materials),
            },
            "runDetails": {"builder": {"id": "https://model-verifier.dev/builders/local/v1"},
                           "metadata": {"invocationId": f"test-{name}"}, "byproducts": []},
        },
    }


@dataclass
class Step:
    world: World
    statement: dict[str, Any]

    @property
    def payload(self) -> bytes:
        return canonical(self.statement)

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def name(self) -> str:
        return self.statement["predicate"]["buildDefinition"]["externalParameters"]["step"]

    @property
    def products(self) -> dict[str, dict[str, str]]:
        return {s["name"]: s["digest"] for s in self.statement["subject"]}

    def signed(self, *signers: str) -> dict[str, Any]:
        return self.world.sign(self.payload, *signers)


@dataclass
class World:
    root: Path
    keys: dict[str, Path] = field(default_factory=dict)
    written: int = 0

    @classmethod
    def create(cls, root: Path, signers: list[str]) -> World:
        world = cls(root)
        (root / "keys").mkdir(parents=True, exist_ok=True)
        (root / "attestations").mkdir(exist_ok=True)
        for name in signers:
            generate_keypair(root / "keys" / name)
            world.keys[name] = root / "keys" / f"{name}.key"
        return world

    def public(self, name: str) -> str:
        return f"keys/{name}.pub"

    def sign(self, payload: bytes, *signers: str) -> dict[str, Any]:
        """A bundle whose envelope carries one signature per signer (co-signed if several)."""
        bundles = [sign_bundle(payload, INTOTO, self.keys[s]) for s in signers]
        bundle = bundles[0]
        for other in bundles[1:]:
            bundle["dsseEnvelope"]["signatures"].extend(other["dsseEnvelope"]["signatures"])
        return bundle

    def step(self, name: str, materials: dict[str, str | dict[str, str]],
             products: dict[str, str | dict[str, str]], **options: Any) -> Step:
        """Digests given as hex are sha256; a dict is a whole digest set (dirHash, say)."""
        def digests(items: dict[str, str | dict[str, str]]) -> dict[str, dict[str, str]]:
            return {n: (d if isinstance(d, dict) else {"sha256": d}) for n, d in items.items()}

        return Step(self, step_statement(name, digests(materials), digests(products), **options))

    def rebuild(self, step: Step, *signers: str, overrides: dict[str, str] | None = None,
                actual: dict[str, dict[str, str]] | None = None, run_id: str = "test"
                ) -> dict[str, Any]:
        """A rebuild attestation of `step` (matching unless `actual` says otherwise)."""
        produced = actual or step.products
        results = []
        for name, expected in sorted(step.products.items()):
            got = produced.get(name)
            verdict = ("IDENTICAL" if got == expected else "MISSING" if got is None
                       else "DIVERGED")
            results.append({"name": name, "expected": expected, "actual": got,
                            "verdict": verdict})
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": n, "digest": d} for n, d in sorted(produced.items())],
            "predicateType": REBUILD,
            "predicate": {
                "step": step.name,
                "rebuiltAttestation": {"digest": {"sha256": step.payload_sha256},
                                       "name": f"{step.name}.intoto.json"},
                "argv": ["python", f"{step.name}.py"], "env": dict(overrides or {}),
                "envOverrides": dict(overrides or {}),
                "reproduced": all(r["verdict"] == "IDENTICAL" for r in results),
                "results": results, "materials": [], "environment": {}, "drift": [],
                "runDetails": {"invocationId": run_id, "exitCode": 0},
            },
        }
        return self.sign(canonical(statement), *signers)

    def write(self, bundle: dict[str, Any], name: str | None = None) -> Path:
        self.written += 1
        path = self.root / "attestations" / (name or f"{self.written:04d}.intoto.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(bundle, indent=2), encoding="utf-8")
        return path

    def file(self, name: str, content: str) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return sha(content)

    def policy(self, data: dict[str, Any]) -> Path:
        path = self.root / "model-policy.yaml"
        body = {"version": 1, "name": "attack", **data}
        body.setdefault("signers", {n: {"key": self.public(n)} for n in self.keys})
        return write_policy(path, body)

    def verify(self, artifact: str, *extra: str) -> tuple[int, dict[str, Any], str]:
        """verify-model ARTIFACT --json, and the same in text; (exit code, report, text)."""
        base = [artifact, "--policy", "model-policy.yaml", "--attestations", "attestations"]
        as_json = run([*base, "--json", *extra], cwd=self.root, program="verify-model")
        text = run([*base, *extra], cwd=self.root, program="verify-model")
        assert as_json.code == text.code, (as_json.output, text.output)
        assert as_json.code in (0, 1), as_json.output
        return as_json.code, json.loads(as_json.stdout), text.stdout

    def cli(self, *args: str) -> CliResult:
        return run(list(args), cwd=self.root)


def decoded(bundle: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
