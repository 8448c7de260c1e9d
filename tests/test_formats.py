"""The formats `record` and `rebuild` emit, held to attestations/ (schemas and specification).

A throwaway one-step pipeline is recorded and rebuilt through the installed console scripts;
its attestations are then checked with tools other than the product's own code: jsonschema,
sigstore-models, `cryptography` over a DSSE PAE built here, hashlib, and the coreutils
pipeline the in-toto spec gives for dirHash. The examples in attestations/examples/ (decoded
from a real run of the demo) are held to the same schemas.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ROOT / "attestations"
EXAMPLES = FORMATS / "examples"
BIN = Path(sys.executable).parent
INTOTO = "application/vnd.in-toto+json"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
STEP_PREDICATE = "https://slsa.dev/provenance/v1"
REBUILD_PREDICATE = "https://model-verifier.dev/attestations/rebuild/v1"
SECRETS = {"AWS_SECRET_ACCESS_KEY": "supersecret", "HF_TOKEN": "hf_x"}
# The variables environment.capture may record on its own (its allowlist, from the spec).
ALLOWLIST = {
    "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "KMP_DETERMINISTIC_REDUCTION", "MKL_CBWR",
    "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "NVIDIA_TF32_OVERRIDE", "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED", "SOURCE_DATE_EPOCH", "TF_CUDNN_DETERMINISTIC",
    "TF_DETERMINISTIC_OPS", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "VECLIB_MAXIMUM_THREADS",
}

# The step: reads a material file, writes a product file and a product directory (nested).
STEP_SCRIPT = """\
import pathlib
rows = pathlib.Path("data/rows.csv").read_text()
out = pathlib.Path("out")
(out / "shards" / "deep").mkdir(parents=True, exist_ok=True)
(out / "summary.txt").write_text(rows.upper())
(out / "shards" / "a.bin").write_bytes(rows.encode() * 3)
(out / "shards" / "deep" / "b c.bin").write_bytes(bytes(range(256)))
print("rows:", len(rows.splitlines()))
"""
PRODUCT_FILES = ["out/summary.txt", "out/shards/a.bin", "out/shards/deep/b c.bin"]


# ------------------------------------------------------------------ independent checks


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, written here from the DSSE spec."""
    kind = payload_type.encode()
    return (b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" "
            + str(len(payload)).encode() + b" " + payload)


def signature_verifies(public_pem: bytes, payload_type: str, payload: bytes, sig: bytes) -> bool:
    key = serialization.load_pem_public_key(public_pem)
    message = dsse_pae(payload_type, payload)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            assert key.curve.name == "secp256r1"
            key.verify(sig, message, ec.ECDSA(hashes.SHA256()))  # DER-encoded (r, s)
        else:
            assert isinstance(key, ed25519.Ed25519PublicKey)
            key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def python_dir_hash(directory: Path) -> str:
    """in-toto dirHash (Go dirhash Hash1, hex) recomputed with os.walk and hashlib."""
    lines = []
    for folder, _, files in os.walk(directory):
        for name in files:
            path = Path(folder, name)
            relative = path.relative_to(directory).as_posix()
            lines.append((relative, hashlib.sha256(path.read_bytes()).hexdigest()))
    summary = "".join(f"{sha}  {name}\n" for name, sha in sorted(lines))
    return hashlib.sha256(summary.encode()).hexdigest()


def shell_dir_hash(directory: Path) -> str:
    """The command the in-toto DigestSet spec gives for dirHash, run inside the directory."""
    completed = subprocess.run(
        # tr/xargs -0 only so that the name with a space survives xargs; the hashing is as given.
        "find . -type f | cut -c3- | LC_ALL=C sort | tr '\\n' '\\0' | xargs -r -0 sha256sum"
        " | sha256sum",
        shell=True, cwd=directory, capture_output=True, text=True, check=True,
    )
    return completed.stdout.split()[0]


def canonical(payload: bytes) -> bytes:
    return json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((FORMATS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(name: str, statement: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(name).iter_errors(statement)]


# ------------------------------------------------------------------ the throwaway pipeline


@dataclass(frozen=True)
class Bundle:
    path: Path
    data: dict[str, Any]

    @property
    def payload(self) -> bytes:
        return b64decode(self.data["dsseEnvelope"]["payload"])

    @property
    def payload_type(self) -> str:
        return self.data["dsseEnvelope"]["payloadType"]

    @property
    def signatures(self) -> list[bytes]:
        return [b64decode(s["sig"]) for s in self.data["dsseEnvelope"]["signatures"]]

    @property
    def statement(self) -> dict[str, Any]:
        return json.loads(self.payload)

    @classmethod
    def read(cls, path: Path) -> Bundle:
        return cls(path, json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Pipeline:
    work: Path
    keys: Path
    steps: dict[str, Bundle]  # key algorithm -> the step attestation signed with that key
    rebuild: Bundle
    record_output: str

    def public_pem(self, name: str) -> bytes:
        return (self.keys / f"{name}.pub").read_bytes()


def cli(args: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    executable = shutil.which("model-verifier", path=str(BIN)) or shutil.which("model-verifier")
    assert executable, "the model-verifier console script is not installed"
    return subprocess.run([executable, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def clean_environment() -> dict[str, str]:
    """The test runner's environment without anything that would be recorded on its own."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOWLIST and k not in SECRETS}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` is this interpreter
    return env


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("formats")
    work, keys = root / "work", root / "keys"
    (work / "data").mkdir(parents=True)
    (work / "data" / "rows.csv").write_text("id,value\n1,0.5\n2,0.25\n", encoding="utf-8")
    (work / "step.py").write_text(STEP_SCRIPT, encoding="utf-8")
    env = clean_environment()
    for name, algorithm in [("ecdsa-p256", "ecdsa-p256"), ("ed25519", "ed25519"),
                            ("rebuilder", "ecdsa-p256")]:
        done = cli(["keygen", keys / name, "--algorithm", algorithm], root, env)
        assert done.returncode == 0, done.stderr
    record_env = {**env, **SECRETS, "OMP_NUM_THREADS": "4"}
    steps: dict[str, Bundle] = {}
    outputs = []
    for algorithm in ("ecdsa-p256", "ed25519"):
        out = f"attestations-{algorithm}"
        done = cli(["record", "--step", "make", "--material", "data/rows.csv",
                    "--material", "step.py", "--product", "out/summary.txt",
                    "--product", "out/shards", "--env", "MY_FLAG=1",
                    "--key", keys / f"{algorithm}.key", "--out", out,
                    "--", "python", "step.py"], work, record_env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
        steps[algorithm] = Bundle.read(work / out / "make.intoto.json")
    # The rebuilder has the same secrets in its environment: they must not leak either.
    done = cli(["rebuild", work / "attestations-ecdsa-p256" / "make.intoto.json",
                "--trust-key", keys / "ecdsa-p256.pub",
                "--source", work, "--workspace", root / "rebuild-workspace",
                "--key", keys / "rebuilder.key", "--out", root / "rebuilds"],
               root, {**env, **SECRETS})
    assert done.returncode == 0, done.stdout + done.stderr
    rebuild = Bundle.read(root / "rebuilds" / "rebuilder" / "make.rebuild.intoto.json")
    return Pipeline(work, keys, steps, rebuild, "\n".join(outputs))


ALGORITHMS = ["ecdsa-p256", "ed25519"]


# ------------------------------------------------------------------ (a) schemas


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_step_statement_validates_against_the_schema(pipeline: Pipeline, algorithm: str) -> None:
    statement = pipeline.steps[algorithm].statement
    assert schema_errors("step-statement.schema.json", statement) == []
    assert statement["predicate"]["buildDefinition"]["externalParameters"] == {
        "step": "make", "argv": ["python", "step.py"], "workingDirectory": ".",
        "env": {"MY_FLAG": "1"},
    }


def test_rebuild_statement_validates_against_the_schema(pipeline: Pipeline) -> None:
    assert schema_errors("rebuild-statement.schema.json", pipeline.rebuild.statement) == []


def test_the_schemas_share_their_common_definitions_verbatim() -> None:
    step = json.loads((FORMATS / "step-statement.schema.json").read_text(encoding="utf-8"))
    rebuild = json.loads((FORMATS / "rebuild-statement.schema.json").read_text(encoding="utf-8"))
    shared = set(step["$defs"]) & set(rebuild["$defs"])
    assert {"environment", "artifactDescriptor", "digestSet", "relativePath"} <= shared
    for name in sorted(shared):
        assert step["$defs"][name] == rebuild["$defs"][name], name


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(statement: dict[str, Any]) -> None:
        target = statement
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


EXTERNAL = ["predicate", "buildDefinition", "externalParameters"]
STEP_MUTATIONS = {
    "unknown field in externalParameters": _set([*EXTERNAL, "timeout"], 10),
    "upper-case hex digest": _set(["subject", 0, "digest", "sha256"], "A" * 64),
    "short digest": _set(["subject", 0, "digest", "sha256"], "ab" * 16),
    "absolute subject name": _set(["subject", 0, "name"], "/etc/passwd"),
    "subject name leaving the directory": _set(["subject", 0, "name"], "../model.bin"),
    "two algorithms in one digest": _set(["subject", 0, "digest", "md5"], "0" * 32),
    "other buildType": _set(["predicate", "buildDefinition", "buildType"], "https://x/v1"),
    "empty argv": _set([*EXTERNAL, "argv"], []),
    "step name with a slash": _set([*EXTERNAL, "step"], "a/b"),
    "a failed step's exit code": _set(["predicate", "runDetails", "byproducts", 0, "content"],
                                      "MQ=="),
    "non-string variable": _set(["predicate", "buildDefinition", "internalParameters",
                                 "environment", "variables", "OMP_NUM_THREADS"], 4),
    "no subjects": _set(["subject"], []),
    "timestamp without zone": _set(["predicate", "runDetails", "metadata", "startedOn"],
                                   "2026-01-01T00:00:00"),
}


@pytest.mark.parametrize("mutation", sorted(STEP_MUTATIONS))
def test_step_schema_rejects_what_record_never_writes(pipeline: Pipeline, mutation: str) -> None:
    statement = copy.deepcopy(pipeline.steps["ecdsa-p256"].statement)
    STEP_MUTATIONS[mutation](statement)
    assert schema_errors("step-statement.schema.json", statement) != []


REBUILD_MUTATIONS = {
    "unknown verdict": _set(["predicate", "results", 0, "verdict"], "SIMILAR"),
    "MISSING with an actual digest": _set(["predicate", "results", 0, "verdict"], "MISSING"),
    "rebuilt attestation named by dirHash": _set(
        ["predicate", "rebuiltAttestation", "digest"], {"dirHash": "0" * 64}),
    "reproduced as a string": _set(["predicate", "reproduced"], "yes"),
    "unknown predicate field": _set(["predicate", "score"], 1.0),
}


@pytest.mark.parametrize("mutation", sorted(REBUILD_MUTATIONS))
def test_rebuild_schema_rejects_what_rebuild_never_writes(pipeline: Pipeline,
                                                          mutation: str) -> None:
    statement = copy.deepcopy(pipeline.rebuild.statement)
    REBUILD_MUTATIONS[mutation](statement)
    assert schema_errors("rebuild-statement.schema.json", statement) != []


# ------------------------------------------------------------------ (b) the bundle


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bundle_is_a_sigstore_bundle_v03_with_a_public_key_hint(pipeline: Pipeline,
                                                                 algorithm: str) -> None:
    from sigstore_models.bundle.v1 import Bundle as SigstoreBundle

    bundle = pipeline.steps[algorithm]
    parsed = SigstoreBundle.from_json(bundle.path.read_text(encoding="utf-8"))
    assert parsed.media_type == BUNDLE_V03
    assert parsed.dsse_envelope is not None
    assert parsed.dsse_envelope.payload_type == INTOTO
    assert bytes(parsed.dsse_envelope.payload) == bundle.payload
    hint = hashlib.sha256(pipeline.public_pem(algorithm)).hexdigest()
    assert bundle.data["verificationMaterial"] == {"publicKey": {"hint": hint},
                                                   "tlogEntries": []}
    assert [s["keyid"] for s in bundle.data["dsseEnvelope"]["signatures"]] == [hint]


# ------------------------------------------------------------------ (c) signatures


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dsse_signature_verifies_independently_and_not_after_a_flipped_byte(
        pipeline: Pipeline, algorithm: str) -> None:
    bundle = pipeline.steps[algorithm]
    public_pem = pipeline.public_pem(algorithm)
    [signature] = bundle.signatures
    assert signature_verifies(public_pem, bundle.payload_type, bundle.payload, signature)
    flipped = bytearray(bundle.payload)
    flipped[len(flipped) // 2] ^= 0x01
    assert not signature_verifies(public_pem, bundle.payload_type, bytes(flipped), signature)
    assert not signature_verifies(public_pem, "application/json", bundle.payload, signature)
    other = "ed25519" if algorithm == "ecdsa-p256" else "ecdsa-p256"
    assert not signature_verifies(pipeline.public_pem(other), bundle.payload_type,
                                  bundle.payload, signature)


def test_rebuild_bundle_is_signed_by_the_rebuilder(pipeline: Pipeline) -> None:
    bundle = pipeline.rebuild
    [signature] = bundle.signatures
    assert bundle.data["mediaType"] == BUNDLE_V03 and bundle.payload_type == INTOTO
    assert signature_verifies(pipeline.public_pem("rebuilder"), INTOTO, bundle.payload, signature)
    assert not signature_verifies(pipeline.public_pem("ecdsa-p256"), INTOTO, bundle.payload,
                                  signature)


# ------------------------------------------------------------------ (d) digests


def test_subjects_are_the_products_with_their_sha256_and_dirhash(pipeline: Pipeline) -> None:
    subject = pipeline.steps["ecdsa-p256"].statement["subject"]
    names = [s["name"] for s in subject]
    assert names == sorted(names)
    assert set(names) == {"out/shards", *PRODUCT_FILES}
    for descriptor in subject:
        path = pipeline.work / descriptor["name"]
        if path.is_dir():
            assert list(descriptor["digest"]) == ["dirHash"]
            assert descriptor["digest"]["dirHash"] == python_dir_hash(path)
        else:
            assert descriptor["digest"] == {"sha256": hashlib.sha256(path.read_bytes())
                                            .hexdigest()}


@pytest.mark.skipif(not all(shutil.which(t) for t in ("find", "sort", "xargs", "sha256sum")),
                    reason="needs find, sort, xargs and sha256sum (coreutils)")
def test_dirhash_equals_the_in_toto_spec_shell_pipeline(pipeline: Pipeline) -> None:
    [directory] = [s for s in pipeline.steps["ecdsa-p256"].statement["subject"]
                   if "dirHash" in s["digest"]]
    assert directory["digest"]["dirHash"] == shell_dir_hash(pipeline.work / directory["name"])


def test_materials_are_recorded_with_their_sha256(pipeline: Pipeline) -> None:
    definition = pipeline.steps["ecdsa-p256"].statement["predicate"]["buildDefinition"]
    assert definition["resolvedDependencies"] == [
        {"name": name, "digest": {"sha256": hashlib.sha256((pipeline.work / name).read_bytes())
                                  .hexdigest()}}
        for name in ("data/rows.csv", "step.py")
    ]


def test_byproducts_hold_the_exit_code_and_the_digests_of_the_output(pipeline: Pipeline) -> None:
    completed = subprocess.run(["python", "step.py"], cwd=pipeline.work, capture_output=True,
                               env=clean_environment(), check=True)
    byproducts = pipeline.steps["ecdsa-p256"].statement["predicate"]["runDetails"]["byproducts"]
    assert byproducts == [
        {"name": "exit-code", "content": base64.b64encode(b"0").decode()},
        {"name": "stderr", "digest": {"sha256": hashlib.sha256(completed.stderr).hexdigest()}},
        {"name": "stdout", "digest": {"sha256": hashlib.sha256(completed.stdout).hexdigest()}},
    ]


# ------------------------------------------------------------------ (e) canonical bytes


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signed_payload_is_canonical_json(pipeline: Pipeline, algorithm: str) -> None:
    payload = pipeline.steps[algorithm].payload
    assert canonical(payload) == payload


def test_rebuild_payload_is_canonical_json(pipeline: Pipeline) -> None:
    assert canonical(pipeline.rebuild.payload) == pipeline.rebuild.payload


# ------------------------------------------------------------------ (f) the rebuild


def test_rebuild_names_the_step_payload_and_reproduces_every_subject(pipeline: Pipeline) -> None:
    step = pipeline.steps["ecdsa-p256"]
    statement = pipeline.rebuild.statement
    predicate = statement["predicate"]
    assert statement["predicateType"] == REBUILD_PREDICATE
    assert predicate["step"] == "make"
    assert predicate["rebuiltAttestation"] == {
        "name": "make.intoto.json",
        "digest": {"sha256": hashlib.sha256(step.payload).hexdigest()},
    }
    recorded = step.statement
    assert predicate["argv"] == ["python", "step.py"]
    assert predicate["env"] == {"MY_FLAG": "1"}
    assert predicate["envOverrides"] == {}  # a plain rerun, not a probe
    assert predicate["reproduced"] is True
    assert [(r["name"], r["verdict"]) for r in predicate["results"]] == [
        (s["name"], "IDENTICAL") for s in recorded["subject"]]
    for result in predicate["results"]:
        assert result["actual"] == result["expected"]
    assert statement["subject"] == recorded["subject"]
    assert predicate["materials"] == recorded["predicate"]["buildDefinition"][
        "resolvedDependencies"]
    # OMP_NUM_THREADS was set when recording but not declared, so the rebuild lacks it.
    assert {"field": "variables.OMP_NUM_THREADS", "recorded": "4",
            "current": None} in predicate["drift"]


# ------------------------------------------------------------------ (g) secrets


def test_secrets_in_the_environment_reach_no_attestation(pipeline: Pipeline) -> None:
    for bundle in [*pipeline.steps.values(), pipeline.rebuild]:
        text = bundle.path.read_text(encoding="utf-8") + bundle.payload.decode()
        statement = json.loads(bundle.payload)
        environ = (statement["predicate"].get("buildDefinition", {}).get(
            "internalParameters", {}).get("environment") or statement["predicate"][
            "environment"])
        environ.pop("inherited", None)  # the names, never the values, of what it inherited
        for name, value in SECRETS.items():
            assert value not in text, f"{name}'s value leaked into {bundle.path.name}"
            assert name not in json.dumps(statement), f"{name} is named in {bundle.path.name}"


def test_declared_and_allowlisted_variables_are_recorded(pipeline: Pipeline) -> None:
    definition = pipeline.steps["ecdsa-p256"].statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["env"] == {"MY_FLAG": "1"}
    variables = definition["internalParameters"]["environment"]["variables"]
    assert variables == {"MY_FLAG": "1", "OMP_NUM_THREADS": "4"}
    assert set(variables) <= ALLOWLIST | set(definition["externalParameters"]["env"])


def test_the_documented_allowlist_is_the_one_captured() -> None:
    from verifier.steps.environment import CAPTURED_VARIABLES

    assert set(CAPTURED_VARIABLES) == ALLOWLIST
    spec = (FORMATS / "step-buildtype.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in spec for name in ALLOWLIST)


# ------------------------------------------------------------------ rerun by hand


def test_step_can_be_rerun_by_hand_from_its_statement(pipeline: Pipeline, tmp_path: Path) -> None:
    """What step-buildtype.md tells a person to do, done without the product's code."""
    definition = pipeline.steps["ed25519"].statement["predicate"]["buildDefinition"]
    external = definition["externalParameters"]
    for material in definition["resolvedDependencies"]:  # place materials, checked by digest
        source = pipeline.work / material["name"]
        assert hashlib.sha256(source.read_bytes()).hexdigest() == material["digest"]["sha256"]
        (tmp_path / material["name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp_path / material["name"])
    subprocess.run(external["argv"], cwd=tmp_path / external["workingDirectory"],
                   env={**clean_environment(), **external["env"]}, check=True,
                   capture_output=True)
    for subject in pipeline.steps["ed25519"].statement["subject"]:
        path = tmp_path / subject["name"]
        actual = ({"dirHash": python_dir_hash(path)} if path.is_dir()
                  else {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        assert actual == subject["digest"], subject["name"]


# ------------------------------------------------------------------ golden examples


def _examples() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.intoto.json"))


def test_there_are_examples_of_both_statements() -> None:
    kinds = {Bundle.read(path).statement["predicateType"] for path in _examples()}
    assert kinds == {STEP_PREDICATE, REBUILD_PREDICATE}


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_validates_and_its_decoded_copy_is_its_signed_payload(path: Path) -> None:
    bundle = Bundle.read(path)
    statement = bundle.statement
    schema = {STEP_PREDICATE: "step-statement.schema.json",
              REBUILD_PREDICATE: "rebuild-statement.schema.json"}[statement["predicateType"]]
    assert schema_errors(schema, statement) == []
    assert canonical(bundle.payload) == bundle.payload
    decoded = path.with_name(path.name.replace(".intoto.json", ".statement.json"))
    assert json.loads(decoded.read_text(encoding="utf-8")) == statement
    # Each example lies in a folder named after its signer, whose public key is in keys/.
    public_pem = (EXAMPLES / "keys" / f"{path.parent.name}.pub").read_bytes()
    [signature] = bundle.signatures
    assert signature_verifies(public_pem, bundle.payload_type, bundle.payload, signature)


def test_example_rebuilds_name_example_steps_by_payload_digest() -> None:
    bundles = [Bundle.read(path) for path in _examples()]
    steps = {hashlib.sha256(b.payload).hexdigest(): b for b in bundles
             if b.statement["predicateType"] == STEP_PREDICATE}
    for bundle in bundles:
        predicate = bundle.statement["predicate"]
        if bundle.statement["predicateType"] == REBUILD_PREDICATE:
            rebuilt = steps[predicate["rebuiltAttestation"]["digest"]["sha256"]]
            assert rebuilt.statement["predicate"]["buildDefinition"]["externalParameters"][
                "step"] == predicate["step"]
