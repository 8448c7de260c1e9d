"""Shared test helpers: run the CLI, build small signed chains, check signatures independently.

The API, kept small on purpose:

    run(args, cwd=None, env=None, program="model-verifier") -> CliResult
        The CLI in-process (typer's CliRunner). An exception that escapes a command shows up
        as exit code 3 and a "Traceback" in stderr, as it would for a user.
    run_executable(args, cwd=None, env=None, program="model-verifier") -> CliResult
        The installed console script in a subprocess (the real entry point).
    assert_error(result, code, *fragments)
        Exit code, exactly one stderr line starting "error:" containing every fragment,
        no traceback anywhere.
    make_keys(directory, name, algorithm="ecdsa-p256") -> KeyPair
    python_step(code) -> argv running a snippet with this interpreter
    record_step(workdir, step, key, materials, products, code, out="attestations") -> CliResult
    build_chain(root) -> Chain       three recorded steps, keys and a policy (see Chain)
    write_policy(path, data)
    dsse_verifies(bundle, public_pem) -> bool     DSSE PAE + cryptography, not the product's code
    sign_bundle(payload, payload_type, private_key) -> dict   a local-key bundle v0.3, made here
    payload_of(bundle) -> dict       the decoded in-toto statement of a bundle dict
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

BIN = Path(sys.executable).parent
INTOTO = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@functools.cache
def bubblewrap_starts() -> bool:
    """Whether the sandbox can start on this machine (tests/conftest.py decides by it)."""
    from verifier.errors import InputError
    from verifier.steps.sandbox import resolve

    try:
        resolve("bwrap")
    except InputError:
        return False
    return True


def run(args: Sequence[str | os.PathLike[str]], cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        program: str = "model-verifier") -> CliResult:
    """Invoke the CLI in-process; cwd is entered for the call and left afterwards."""
    from verifier.cli import app, verify_app

    application = verify_app if program == "verify-model" else app
    runner = CliRunner()
    with contextlib.chdir(cwd or Path.cwd()):
        result = runner.invoke(application, [str(a) for a in args], env=env)
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the user would have seen without the entry point's last-resort handler.
        stderr += "".join(traceback.format_exception(result.exception))
        code = 3
    return CliResult(code, result.stdout, stderr)


def run_executable(args: Sequence[str | os.PathLike[str]], cwd: Path | None = None,
                   env: Mapping[str, str] | None = None,
                   program: str = "model-verifier") -> CliResult:
    """Run the installed console script, as a user or a CI job would."""
    completed = subprocess.run(
        [str(BIN / program), *map(str, args)], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300, check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def assert_no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.output, result.output
    assert "internal error" not in result.output, result.output


def assert_error(result: CliResult, code: int, *fragments: str) -> str:
    """The command failed with `code` and said so in one `error:` line naming every fragment."""
    assert_no_traceback(result)
    assert result.code == code, (result.code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    @property
    def public_pem(self) -> bytes:
        return self.public.read_bytes()

    @property
    def hint(self) -> str:
        return hashlib.sha256(self.public_pem).hexdigest()


def make_keys(directory: Path, name: str, algorithm: str = "ecdsa-p256") -> KeyPair:
    """A key pair written by the product's keygen (checked on its own in test_keys_digest)."""
    result = run(["keygen", directory / name, "--algorithm", algorithm])
    assert result.code == 0, result.output
    return KeyPair(directory / f"{name}.key", directory / f"{name}.pub")


def python_step(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def record_step(workdir: Path, step: str, key: Path, materials: Sequence[str],
                products: Sequence[str], code: str, out: str = "attestations",
                extra: Sequence[str] = ()) -> CliResult:
    """`model-verifier record` in workdir; returns the result (the caller checks the code)."""
    args: list[str | os.PathLike[str]] = ["record", "--step", step, "--key", key, "--out", out]
    for material in materials:
        args += ["--material", material]
    for product in products:
        args += ["--product", product]
    args += [*extra, "--", *python_step(code)]
    return run(args, cwd=workdir)


class _PlainDumper(yaml.SafeDumper):
    """Writes a value used twice out twice: policies refuse YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_policy(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.dump(dict(data), Dumper=_PlainDumper, sort_keys=False),
                    encoding="utf-8")
    return path


# The three steps of the test chain; each reads its materials and writes its products.
PREPARE = ("import pathlib; pathlib.Path('data').mkdir(exist_ok=True); "
           "pathlib.Path('data/clean.txt').write_text(pathlib.Path('raw.txt').read_text().upper())")
TRAIN = ("import hashlib, pathlib; pathlib.Path('model').mkdir(exist_ok=True); "
         "pathlib.Path('model/weights.bin').write_bytes("
         "hashlib.sha256(pathlib.Path('data/clean.txt').read_bytes()).digest() * 4)")
PACKAGE = ("import pathlib, shutil; pathlib.Path('dist').mkdir(exist_ok=True); "
           "shutil.copy('model/weights.bin', 'dist/model.bin'); "
           "pathlib.Path('dist/config.json').write_text('{\"layers\": 1}')")


@dataclass(frozen=True)
class Chain:
    """A recorded three-step build under root.

    root/keys: builder (signs every step), auditor (a policy signer allowed to sign no step),
    outsider (in no policy). root/work: raw.txt (pinned source), prep.py (unpinned by pattern),
    data/clean.txt <- prepare, model/weights.bin <- train, dist/ (model.bin, config.json)
    <- package; attestations/ and model-policy.yaml (the default names) are in work too.
    """

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def attestations(self) -> Path:
        return self.work / "attestations"

    @property
    def policy(self) -> Path:
        return self.work / "model-policy.yaml"

    @property
    def artifact(self) -> Path:
        return self.work / "dist" / "model.bin"

    def keys(self, name: str) -> KeyPair:
        return KeyPair(self.root / "keys" / f"{name}.key", self.root / "keys" / f"{name}.pub")

    def attestation(self, step: str) -> Path:
        return self.attestations / f"{step}.intoto.json"

    def policy_data(self) -> dict[str, Any]:
        return yaml.safe_load(self.policy.read_text(encoding="utf-8"))

    def record(self, step: str, signer: str = "builder", **changes: Any) -> CliResult:
        """Re-record one of the chain's steps (with --force), e.g. signed by another key."""
        materials, products, code = {
            "prepare": (["raw.txt", "prep.py"], ["data/clean.txt"], PREPARE),
            "train": (["data/clean.txt"], ["model/weights.bin"], TRAIN),
            "package": (["model/weights.bin"], ["dist"], PACKAGE),
        }[step]
        return record_step(self.work, step, self.keys(signer).private,
                           changes.get("materials", materials), products, code,
                           extra=["--force"])


def build_chain(root: Path) -> Chain:
    """Keys, sources, three recorded steps and a policy that they satisfy."""
    chain = Chain(root)
    for name in ("builder", "auditor", "outsider"):
        make_keys(root / "keys", name)
    chain.work.mkdir(parents=True)
    (chain.work / "raw.txt").write_text("iris,setosa\n5.1,3.5\n", encoding="utf-8")
    (chain.work / "prep.py").write_text("# the preparation notes\n", encoding="utf-8")
    for step in ("prepare", "train", "package"):
        result = chain.record(step)
        assert result.code == 0, result.output
    raw_sha = hashlib.sha256((chain.work / "raw.txt").read_bytes()).hexdigest()
    write_policy(chain.policy, {
        "version": 1,
        "name": "test-chain",
        "signers": {"builder": {"key": "../keys/builder.pub"},
                    "auditor": {"key": "../keys/auditor.pub"}},
        "sources": [{"name": "raw.txt", "sha256": raw_sha},
                    {"pattern": "*.py", "unpinned": True}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare"]},
                  {"name": "package", "signed_by": ["builder"], "after": ["train"]}],
    })
    return chain


def _b64decode(text: str) -> bytes:
    text = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text) if ("-" in text or "_" in text) else \
        base64.b64decode(text)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, written from the spec."""
    kind = payload_type.encode()
    return b"DSSEv1 " + b" ".join(
        [str(len(kind)).encode(), kind, str(len(payload)).encode(), payload])


def dsse_verifies(bundle: Mapping[str, Any], public_pem: bytes) -> bool:
    """Does any signature of the bundle's DSSE envelope verify under this public key?"""
    envelope = bundle["dsseEnvelope"]
    message = pae(envelope["payloadType"], _b64decode(envelope["payload"]))
    key = serialization.load_pem_public_key(public_pem)
    for entry in envelope["signatures"]:
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(_b64decode(entry["sig"]), message, ec.ECDSA(hashes.SHA256()))
            else:
                assert isinstance(key, ed25519.Ed25519PublicKey)
                key.verify(_b64decode(entry["sig"]), message)
        except InvalidSignature:
            continue
        return True
    return False


def sign_bundle(payload: bytes, payload_type: str, private_key: Path,
                password: bytes | None = None) -> dict[str, Any]:
    """A Sigstore bundle v0.3 with a local-key DSSE signature, built without the product."""
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=password)
    message = pae(payload_type, payload)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        signature = key.sign(message)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hint = hashlib.sha256(public_pem).hexdigest()
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": hint}],
        },
    }


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def payload_of(bundle: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(_b64decode(bundle["dsseEnvelope"]["payload"]))
