"""Attestation chains for the audit, HTML and VSA tests.

`real_chain` records a three-step build with the real command line (`model-verifier record`),
has two rebuilders reproduce it and a third rebuild the train step with a perturbed variable
(`model-verifier rebuild`), once per test session. `signed_step` signs a hand-made statement for
the cases a real run cannot produce (conflicts, GPUs, hostile names).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE
from verifier.formats.signing import KeySigner, generate_keypair
from verifier.formats.statement import canonical_json, step_statement

SCRIPTS = {
    "prepare.py": """
        import pathlib
        rows = pathlib.Path("data/raw.csv").read_text().split()
        pathlib.Path("build").mkdir(exist_ok=True)
        pathlib.Path("build/clean.csv").write_text("\\n".join(sorted(rows)) + "\\n")
        pathlib.Path("build/notes.txt").write_text("nobody reads this\\n")
    """,
    "train.py": """
        import os
        import numpy as np
        from safetensors.numpy import save_file
        lines = open("build/clean.csv").read().split()
        x = np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float32)
        w = x * np.float32(1.5) + np.float32(os.environ["NOISE"])
        save_file({"w": w, "b": x.sum(axis=0)}, "build/weights.safetensors")
    """,
    "package.py": """
        import pathlib, shutil
        pathlib.Path("build/model").mkdir(parents=True, exist_ok=True)
        shutil.copyfile("build/weights.safetensors", "build/model/model.safetensors")
        pathlib.Path("build/model/config.json").write_text('{"name": "tiny"}\\n')
    """,
}
RAW = "3,1\n1,2\n2,5\n"
SIGNERS = ("builder", "rebuilder-a", "rebuilder-b", "rebuilder-c", "stranger")
SAFE_ENVIRONMENT: dict[str, Any] = {
    "variables": {"OMP_NUM_THREADS": "1"}, "packages": {"numpy": "2.1.0"},
    "git": {"commit": "0123456789abcdef", "dirty": False}, "gpus": [], "torch": None,
}


@dataclass(frozen=True)
class Chain:
    root: Path
    attestations: Path
    rebuilds: Path
    policy: Path

    def key(self, who: str) -> Path:
        return self.root / "keys" / f"{who}.key"

    def public(self, who: str) -> Path:
        return self.root / "keys" / f"{who}.pub"


def cli(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "verifier", *map(str, args)], cwd=cwd, capture_output=True,
        text=True, env={**os.environ, "PYTHONUTF8": "1"}, timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_policy(chain_root: Path, path: Path, *, quorum: int | None = 2,
                 expires: str = "2099-12-31", extra_steps: str = "") -> Path:
    raw = sha256_file(chain_root / "data" / "raw.csv")
    keys = os.path.relpath(chain_root / "keys", path.parent)
    text = textwrap.dedent(f"""\
        version: 1
        name: audit-test
        expires: {expires}
        signers:
          builder: {{key: {keys}/builder.pub}}
          rebuilder-a: {{key: {keys}/rebuilder-a.pub}}
          rebuilder-b: {{key: {keys}/rebuilder-b.pub}}
          rebuilder-c: {{key: {keys}/rebuilder-c.pub}}
        sources:
          - {{name: data/raw.csv, sha256: {raw}}}
          - {{pattern: "*.py", unpinned: true}}
        steps:
          - {{name: prepare-data, signed_by: [builder]}}
          - {{name: train, signed_by: [builder], after: [prepare-data]}}
          - {{name: package, signed_by: [builder], after: [train]}}
        """) + extra_steps
    if quorum is not None:
        text += textwrap.dedent(f"""\
            rebuild:
              quorum: {quorum}
              rebuilders: [rebuilder-a, rebuilder-b, rebuilder-c]
              steps: [prepare-data, train, package]
              match: exact
            """)
    path.write_text(text)
    return path


def _build(root: Path) -> Chain:
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw.csv").write_text(RAW)
    for name, body in SCRIPTS.items():
        (root / name).write_text(textwrap.dedent(body).lstrip())
    for who in SIGNERS:
        generate_keypair(root / "keys" / who)
    threads = ["--env", "OMP_NUM_THREADS=1"]
    builder = ["--key", "keys/builder.key", "--out", "attestations"]
    cli("record", "--step", "prepare-data", "--material", "data/raw.csv", "--material",
        "prepare.py", "--product", "build/clean.csv", "--product", "build/notes.txt",
        *threads, *builder, "--", sys.executable, "prepare.py", cwd=root)
    cli("record", "--step", "train", "--material", "build/clean.csv", "--material", "train.py",
        "--product", "build/weights.safetensors", "--env", "NOISE=0", *threads, *builder,
        "--", sys.executable, "train.py", cwd=root)
    cli("record", "--step", "package", "--material", "build/weights.safetensors", "--material",
        "package.py", "--product", "build/model", *threads, *builder,
        "--", sys.executable, "package.py", cwd=root)
    for who in ("rebuilder-a", "rebuilder-b"):
        cli("rebuild", "attestations", "--source", ".", "--key", f"keys/{who}.key",
            "--trust-key", "keys/builder.pub",
            "--out", "rebuilds", cwd=root)
    drifted = cli("rebuild", "attestations/train.intoto.json", "--step", "train",
                  "--trust-key", "keys/builder.pub",
                  "--materials-from", "build", "--env", "NOISE=0.001", "--key",
                  "keys/rebuilder-c.key", "--out", "rebuilds", cwd=root, check=False)
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    # rebuilder-c stands for a rebuilder whose machine made the difference: a --env rebuild is
    # a probe that never counts, so its overrides are dropped and it signs again as a rerun.
    for path in sorted((root / "rebuilds" / "rebuilder-c").glob("*.rebuild.intoto.json")):
        bundle = json.loads(path.read_text())
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        statement["predicate"]["envOverrides"] = {}
        signed = KeySigner(root / "keys" / "rebuilder-c.key").sign_dsse(
            canonical_json(statement), INTOTO_PAYLOAD_TYPE)
        path.write_text(json.dumps(signed, indent=2, sort_keys=True) + "\n")
    return Chain(root, root / "attestations", root / "rebuilds",
                 write_policy(root, root / "policy.yaml"))


_CHAINS: dict[str, Chain] = {}


def real_chain(factory: pytest.TempPathFactory) -> Chain:
    """The recorded and rebuilt chain, built once per session (callers must not modify it)."""
    if "chain" not in _CHAINS:
        _CHAINS["chain"] = _build(factory.mktemp("audit-chain"))
    return _CHAINS["chain"]


def copy_attestations(chain: Chain, dest: Path) -> tuple[Path, Path]:
    """Writable copies of the chain's attestation and rebuild directories."""
    shutil.copytree(chain.attestations, dest / "attestations")
    shutil.copytree(chain.rebuilds, dest / "rebuilds")
    return dest / "attestations", dest / "rebuilds"


def signed_step(path: Path, key: Path, step: str, materials: dict[str, str],
                products: dict[str, str], *, environment: dict[str, Any] | None = None,
                declared_env: dict[str, str] | None = None) -> Path:
    """Sign a hand-made step statement ({name: sha256} materials and products) into `path`."""
    statement = step_statement(
        step=step, argv=["python", f"{step}.py"], working_directory=".",
        declared_env=declared_env if declared_env is not None else {"OMP_NUM_THREADS": "1"},
        environment=environment if environment is not None else SAFE_ENVIRONMENT,
        materials=[{"name": n, "digest": {"sha256": d}} for n, d in sorted(materials.items())],
        products=[{"name": n, "digest": {"sha256": d}} for n, d in sorted(products.items())],
        invocation_id=f"test-{step}", started_on="2026-01-01T00:00:00Z",
        finished_on="2026-01-01T00:00:01Z", byproducts=[],
    )
    bundle = KeySigner(key).sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle))
    return path


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
