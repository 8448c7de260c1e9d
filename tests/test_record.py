"""record: runs the step, passes its output and exit code on, attests only what it may."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import (
    KeyPair,
    assert_error,
    assert_no_traceback,
    dsse_verifies,
    make_keys,
    payload_of,
    python_step,
    read_json,
    run,
    run_executable,
)

ATTESTATION = Path("attestations") / "step.intoto.json"


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return make_keys(tmp_path / "keys", "builder")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "in.txt").write_text("some input\n", encoding="utf-8")
    return work


def record(work: Path, keys: KeyPair, code: str, *options: str, env: dict | None = None,
           materials: tuple[str, ...] = ("data/in.txt",),
           products: tuple[str, ...] = ("out.txt",)):
    args: list[str | Path] = ["record", "--step", "step", "--key", keys.private]
    for material in materials:
        args += ["--material", material]
    for product in products:
        args += ["--product", product]
    return run([*args, *options, "--", *python_step(code)], cwd=work, env=env)


COPY = "import shutil; shutil.copy('data/in.txt', 'out.txt')"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_writes_a_signed_statement_of_materials_products_and_command(
    work: Path, keys: KeyPair
) -> None:
    result = record(work, keys, COPY, "--env", "SEED=7")
    assert result.code == 0, result.output
    bundle = read_json(work / ATTESTATION)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["tlogEntries"] == []
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert dsse_verifies(bundle, keys.public_pem)  # independent PAE + cryptography

    statement = payload_of(bundle)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [
        {"name": "out.txt", "digest": {"sha256": sha256_of(work / "out.txt")}}]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == "https://model-verifier.dev/buildtypes/step/v1"
    assert definition["externalParameters"] == {
        "step": "step", "argv": python_step(COPY), "workingDirectory": ".",
        "env": {"SEED": "7"},
    }
    assert definition["resolvedDependencies"] == [
        {"name": "data/in.txt", "digest": {"sha256": sha256_of(work / "data" / "in.txt")}}]
    byproducts = {b["name"]: b for b in statement["predicate"]["runDetails"]["byproducts"]}
    assert base64.b64decode(byproducts["exit-code"]["content"]) == b"0"


def test_command_output_streams_through_and_its_digest_is_recorded(
    work: Path, keys: KeyPair
) -> None:
    code = ("import sys, shutil; print('training epoch 1'); "
            "print('warning: lr high', file=sys.stderr); shutil.copy('data/in.txt', 'out.txt')")
    result = record(work, keys, code)
    assert result.code == 0, result.output
    assert "training epoch 1\n" in result.stdout
    assert "warning: lr high\n" in result.stderr
    statement = payload_of(read_json(work / ATTESTATION))
    byproducts = {b["name"]: b for b in statement["predicate"]["runDetails"]["byproducts"]}
    assert byproducts["stdout"]["digest"]["sha256"] == hashlib.sha256(
        b"training epoch 1\n").hexdigest()
    assert byproducts["stderr"]["digest"]["sha256"] == hashlib.sha256(
        b"warning: lr high\n").hexdigest()


def test_output_streams_through_the_real_executable(work: Path, keys: KeyPair) -> None:
    result = run_executable(
        ["record", "--step", "step", "--key", keys.private, "--material", "data/in.txt",
         "--product", "out.txt", "--", *python_step(
             "import sys, shutil; sys.stdout.write('OUT-LINE\\n'); "
             "sys.stderr.write('ERR-LINE\\n'); shutil.copy('data/in.txt', 'out.txt')")],
        cwd=work)
    assert result.code == 0, result.output
    assert result.stdout.startswith("OUT-LINE\n")
    # Where bubblewrap is missing, record says once, after the step, that it ran unsandboxed.
    unsandboxed = ("" if shutil.which("bwrap") else
                   "warning: bubblewrap (bwrap) is not installed, so the step runs without a "
                   "sandbox: with network, the whole filesystem and your home directory.\n")
    assert result.stderr == "ERR-LINE\n" + unsandboxed


def test_failing_command_exit_code_is_passed_on_and_nothing_written(
    work: Path, keys: KeyPair
) -> None:
    result = record(work, keys, "import shutil, sys; shutil.copy('data/in.txt', 'out.txt'); "
                                "print('boom', file=sys.stderr); sys.exit(3)")
    assert_no_traceback(result)
    assert result.code == 3
    assert "boom" in result.stderr
    assert "error:" in result.stderr and "status 3" in result.stderr
    assert not (work / ATTESTATION).exists()
    assert not (work / "attestations").exists() or not any((work / "attestations").iterdir())


def test_failing_command_exit_code_through_the_real_executable(
    work: Path, keys: KeyPair
) -> None:
    result = run_executable(["record", "--step", "step", "--key", keys.private, "--product",
                             "out.txt", "--", *python_step("import sys; sys.exit(42)")],
                            cwd=work)
    assert result.code == 42
    assert_no_traceback(result)
    assert not (work / ATTESTATION).exists()


def test_command_not_found_is_an_input_error(work: Path, keys: KeyPair) -> None:
    result = run(["record", "--step", "step", "--key", keys.private, "--product", "out.txt",
                  "--", "no-such-command-here"], cwd=work)
    assert_error(result, 2, "no-such-command-here")
    assert not (work / ATTESTATION).exists()


def test_product_not_produced_is_refused_and_nothing_written(work: Path, keys: KeyPair) -> None:
    result = record(work, keys, COPY, products=("out.txt", "never-made.bin"))
    assert_error(result, 2, "never-made.bin")
    assert not (work / ATTESTATION).exists()


def test_no_product_at_all_is_refused(work: Path, keys: KeyPair) -> None:
    result = record(work, keys, "pass", products=())
    assert_error(result, 2, "--product")
    assert not (work / ATTESTATION).exists()


def test_existing_attestation_is_not_overwritten_and_the_command_does_not_run(
    work: Path, keys: KeyPair
) -> None:
    assert record(work, keys, COPY).code == 0
    before = (work / ATTESTATION).read_bytes()
    marker = work / "ran.txt"
    result = record(work, keys, f"open({str(marker)!r}, 'w').close(); " + COPY)
    assert_error(result, 2, str(ATTESTATION), "--force")
    assert (work / ATTESTATION).read_bytes() == before
    assert not marker.exists(), "the step ran although its attestation could not be written"

    result = record(work, keys, f"open({str(marker)!r}, 'w').close(); " + COPY, "--force")
    assert result.code == 0, result.output
    assert marker.exists()
    assert (work / ATTESTATION).read_bytes() != before


def test_materials_and_products_are_left_untouched(work: Path, keys: KeyPair) -> None:
    material = work / "data" / "in.txt"
    os.utime(material, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    before = (material.read_bytes(), material.stat().st_mtime_ns)
    # The product is written with a known mtime; record must read it, never rewrite it.
    code = ("import os, shutil; shutil.copy('data/in.txt', 'out.txt'); "
            "os.utime('out.txt', ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))")
    result = record(work, keys, code)
    assert result.code == 0, result.output
    assert (material.read_bytes(), material.stat().st_mtime_ns) == before
    product = work / "out.txt"
    assert product.read_bytes() == b"some input\n"
    assert product.stat().st_mtime_ns == 1_600_000_000_000_000_000


def test_material_modified_by_the_command_is_refused(work: Path, keys: KeyPair) -> None:
    code = ("import shutil; open('data/in.txt', 'a').write('sneaky\\n'); "
            "shutil.copy('data/in.txt', 'out.txt')")
    # The sandbox keeps a material read-only (test_record_hostile); without one, the check
    # after the step still refuses it.
    result = record(work, keys, code, "--sandbox", "none")
    assert_error(result, 2, "data/in.txt", "changed")
    assert not (work / ATTESTATION).exists()


def test_file_added_to_a_material_directory_is_refused(work: Path, keys: KeyPair) -> None:
    code = "open('data/extra.txt', 'w').write('new'); open('out.txt', 'w').write('x')"
    result = record(work, keys, code, "--sandbox", "none", materials=("data",))
    assert_error(result, 2, "data", "changed")
    assert not (work / ATTESTATION).exists()


def test_material_that_is_also_a_product_may_change(work: Path, keys: KeyPair) -> None:
    code = "open('data/in.txt', 'a').write('appended\\n')"
    result = record(work, keys, code, products=("data/in.txt",))
    assert result.code == 0, result.output
    statement = payload_of(read_json(work / ATTESTATION))
    assert statement["subject"][0]["digest"]["sha256"] == sha256_of(work / "data" / "in.txt")


def test_env_of_an_unset_variable_is_refused(work: Path, keys: KeyPair) -> None:
    marker = work / "ran.txt"
    result = record(work, keys, f"open({str(marker)!r}, 'w').close(); " + COPY,
                    "--env", "NOT_SET_ANYWHERE", env={"NOT_SET_ANYWHERE": None})
    assert_error(result, 2, "NOT_SET_ANYWHERE")
    assert not (work / ATTESTATION).exists()
    assert not marker.exists()


def test_declared_env_is_passed_to_the_command_and_recorded(work: Path, keys: KeyPair) -> None:
    code = "import os; open('out.txt', 'w').write(os.environ['OMP_NUM_THREADS'] + os.environ['X'])"
    result = record(work, keys, code, "--env", "OMP_NUM_THREADS", "--env", "X=given",
                    env={"OMP_NUM_THREADS": "1"})
    assert result.code == 0, result.output
    assert (work / "out.txt").read_text() == "1given"
    statement = payload_of(read_json(work / ATTESTATION))
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert external["env"] == {"OMP_NUM_THREADS": "1", "X": "given"}


def test_paths_are_recorded_relative_to_the_working_directory(work: Path, keys: KeyPair) -> None:
    # absolute, dotted and plain spellings of paths inside the working directory
    (work / "sub").mkdir()
    code = "open('sub/out.bin', 'wb').write(b'1'); open('two.bin', 'wb').write(b'2')"
    result = record(work, keys, code,
                    materials=(str(work / "data" / "in.txt"),),
                    products=("./sub/../sub/out.bin", str(work / "two.bin")))
    assert result.code == 0, result.output
    statement = payload_of(read_json(work / ATTESTATION))
    assert [s["name"] for s in statement["subject"]] == ["sub/out.bin", "two.bin"]
    definition = statement["predicate"]["buildDefinition"]
    assert [m["name"] for m in definition["resolvedDependencies"]] == ["data/in.txt"]
    assert definition["externalParameters"]["workingDirectory"] == "."
    assert str(work) not in json.dumps(statement["subject"])
    assert str(work) not in json.dumps(definition["resolvedDependencies"])


def test_directory_product_lists_dirhash_and_every_file(work: Path, keys: KeyPair) -> None:
    code = ("import os; os.makedirs('model', exist_ok=True); "
            "open('model/w.bin', 'wb').write(b'w'); open('model/c.json', 'w').write('{}')")
    result = record(work, keys, code, products=("model",))
    assert result.code == 0, result.output
    subjects = {s["name"]: s["digest"] for s in payload_of(read_json(work / ATTESTATION))[
        "subject"]}
    lines = "".join(f"{sha256_of(work / 'model' / n)}  {n}\n" for n in ("c.json", "w.bin"))
    assert subjects == {
        "model": {"dirHash": hashlib.sha256(lines.encode()).hexdigest()},
        "model/c.json": {"sha256": sha256_of(work / "model" / "c.json")},
        "model/w.bin": {"sha256": sha256_of(work / "model" / "w.bin")},
    }


@pytest.mark.parametrize("option", ["--material", "--product"])
def test_path_outside_the_working_directory_is_refused(
    work: Path, keys: KeyPair, tmp_path: Path, option: str
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("elsewhere")
    marker = work / "ran.txt"
    args = ["record", "--step", "step", "--key", keys.private, option, "../outside.txt"]
    if option == "--material":
        args += ["--product", "out.txt"]
    result = run([*args, "--", *python_step(f"open({str(marker)!r}, 'w').close()")], cwd=work)
    assert_error(result, 2, "outside.txt", "outside the working directory")
    assert not marker.exists()
    assert not (work / ATTESTATION).exists()


def test_secrets_in_the_environment_stay_out_of_the_attestation(
    work: Path, keys: KeyPair
) -> None:
    secrets = {"AWS_SECRET_ACCESS_KEY": "aws-Zx81secretvalue", "HF_TOKEN": "hf_tokenvalue42",
               "GITHUB_TOKEN": "ghp_tokenvalue99", "OMP_NUM_THREADS": "1"}
    result = record(work, keys, COPY, env=secrets)
    assert result.code == 0, result.output
    raw = (work / ATTESTATION).read_text(encoding="utf-8")
    payload = json.dumps(payload_of(read_json(work / ATTESTATION)))
    environment = payload_of(read_json(work / ATTESTATION))["predicate"]["buildDefinition"][
        "internalParameters"]["environment"]
    inherited = environment.pop("inherited")
    for name in ("AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "GITHUB_TOKEN"):
        assert secrets[name] not in payload and secrets[name] not in raw
        # Its name is recorded among those the step inherited, and nowhere else.
        assert name in inherited and name not in json.dumps(environment)
    # the allowlisted, numerically relevant variable is captured
    assert environment["variables"] == {"OMP_NUM_THREADS": "1"}


def test_signed_payload_is_canonical_json(work: Path, keys: KeyPair) -> None:
    assert record(work, keys, COPY).code == 0
    bundle = read_json(work / ATTESTATION)
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    decoded = json.loads(payload)
    canonical = json.dumps(decoded, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
    assert payload == canonical


def test_bad_step_name_is_refused(work: Path, keys: KeyPair) -> None:
    result = run(["record", "--step", "../evil", "--key", keys.private, "--product", "out.txt",
                  "--", sys.executable, "-c", "pass"], cwd=work)
    assert_error(result, 2, "../evil")


def test_no_key_is_refused_with_a_hint(work: Path) -> None:
    result = run(["record", "--step", "s", "--product", "out.txt", "--", "true"], cwd=work)
    assert_error(result, 2, "--key")
