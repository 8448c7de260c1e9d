"""A tolerance is for floating-point rounding: a changed integer, boolean or packed quantized
value is a different value under every rule (issue 20, item 4).

The attacks: the low 16 bits of every packed int32 quantized weight flipped (four of its eight
4-bit weights changed) and 7 added to an int64 position tensor, under `rtol: 1e-4, atol: 0`;
and `bos_token_id` 50256 -> 50255 in a JSON config under `--rtol 1e-3`. Each goes through
`diff` and through `verify-model` with a tolerance policy, where two trusted rebuilders
reproduced the other values (re-signed as plain reruns, as tests/test_match_rules.py does).
A header-only change (`format: tf` in `__metadata__`) is no tolerance question either.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    INTOTO,
    assert_no_traceback,
    make_keys,
    payload_of,
    read_json,
    record_step,
    run,
    write_policy,
)
from safetensors.numpy import save_file

from verifier.formats.signing import KeySigner
from verifier.formats.statement import canonical_json

# ATTACK=ints: packed weights with their low 16 bits flipped, positions + 7, and a float
# tensor with noise a tolerance is for; ATTACK=json: bos_token_id one less; ATTACK=meta: the
# same tensors under `format: tf` in the header.
STEP = (
    "import json, os, numpy as np; from safetensors.numpy import save_file; "
    "attack = os.environ['ATTACK']; "
    "q = np.int32(0x70000000) + np.arange(64, dtype=np.int32) * np.int32(0x10001); "
    "p = np.arange(100000, 100064, dtype=np.int64); "
    "w = np.linspace(1, 2, 64, dtype=np.float32); "
    "q = q ^ np.int32(0xFFFF) if attack == 'ints' else q; "
    "p = p + 7 if attack == 'ints' else p; "
    "w = w * np.float32(1 + 1e-6) if attack == 'ints' else w; "
    "meta = {'format': 'tf' if attack == 'meta' else 'pt'}; "
    "save_file({'qweight': q, 'position_ids': p, 'w': w}, 'model.safetensors', meta); "
    "json.dump({'bos_token_id': 50255 if attack == 'json' else 50256, 'lr': 0.001}, "
    "open('config.json', 'w'))"
)
REBUILDS = ("ints", "json", "meta")
TOLERANCE = {"rtol": 1e-4, "atol": 0}


def sign(root: Path, key: str, statement: dict[str, Any], path: Path) -> None:
    bundle = KeySigner(root / "keys" / f"{key}.key").sign_dsse(canonical_json(statement), INTOTO)
    path.write_text(json.dumps(bundle), encoding="utf-8")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integers")
    for name in ("builder", "ra", "rc"):
        make_keys(root / "keys", name)
    work = root / "work"
    work.mkdir()
    (work / "raw.csv").write_text("a,b\n", encoding="utf-8")
    result = record_step(work, "quantize", root / "keys" / "builder.key", ["raw.csv"],
                         ["model.safetensors", "config.json"], STEP,
                         extra=["--env", "ATTACK=none"])
    assert result.code == 0, result.output
    for attack in REBUILDS:
        for key in ("ra", "rc"):
            name = f"{key}-{attack}"
            result = run(["rebuild", work / "attestations", "--source", work,
                          "--trust-key", root / "keys" / "builder.pub",
                          "--key", root / "keys" / f"{key}.key", "--out", root / "rebuilds",
                          "--as", name, "--env", f"ATTACK={attack}"], cwd=work)
            assert_no_traceback(result)
            path = root / "rebuilds" / name / "quantize.rebuild.intoto.json"
            statement = payload_of(read_json(path))
            statement["predicate"]["envOverrides"] = {}  # a plain rerun elsewhere
            sign(root, key, statement, path)
    return root


def verify(root: Path, tmp_path: Path, match: Any, attack: str):
    policy = tmp_path / "policy.yaml"
    write_policy(policy, {
        "version": 1,
        "signers": {n: {"key": str(root / "keys" / f"{n}.pub")} for n in ("builder", "ra", "rc")},
        "sources": [{"name": "raw.csv", "sha256": hashlib.sha256(b"a,b\n").hexdigest()}],
        "steps": [{"name": "quantize", "signed_by": ["builder"]}],
        "rebuild": {"quorum": 2, "rebuilders": ["ra", "rc"], "steps": ["quantize"],
                    "match": match},
    })
    args: list[Any] = [root / "work" / "model.safetensors", "--policy", policy,
                       "--attestations", root / "work" / "attestations", "--json"]
    for key in ("ra", "rc"):
        args += ["--attestations", root / "rebuilds" / f"{key}-{attack}"]
    result = run(args, program="verify-model")
    assert_no_traceback(result)
    return result, json.loads(result.stdout)["rebuilds"][0]


def test_diff_compares_changed_integer_tensors_exactly(chain: Path, tmp_path: Path) -> None:
    q = np.int32(0x70000000) + np.arange(64, dtype=np.int32) * np.int32(0x10001)
    p = np.arange(100000, 100064, dtype=np.int64)
    save_file({"qweight": q, "position_ids": p}, str(tmp_path / "a.safetensors"))
    save_file({"qweight": q ^ np.int32(0xFFFF), "position_ids": p + 7},
              str(tmp_path / "b.safetensors"))
    result = run(["diff", tmp_path / "b.safetensors", tmp_path / "a.safetensors",
                  "--rtol", "1e-4", "--atol", "0", "--json"])
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert report["verdict"] == "DIVERGED", report
    tensors = {t["name"]: t for t in report["tensors"]}
    # Each relative change is below rtol (that was the hole), yet neither tensor passes.
    assert tensors["qweight"]["max_rel_diff"] < 1e-4
    assert tensors["position_ids"]["max_rel_diff"] < 1e-4
    assert tensors["qweight"]["passes_tolerance"] is False
    assert tensors["position_ids"]["passes_tolerance"] is False


def test_diff_compares_json_integers_exactly(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"bos_token_id": 50256, "lr": 0.001}', encoding="utf-8")
    (tmp_path / "b.json").write_text('{"bos_token_id": 50255, "lr": 0.001}', encoding="utf-8")
    (tmp_path / "c.json").write_text('{"bos_token_id": 50256, "lr": 0.0010000001}',
                                     encoding="utf-8")
    result = run(["diff", tmp_path / "b.json", tmp_path / "a.json", "--rtol", "1e-3", "--json"])
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert report["verdict"] == "DIVERGED", report
    assert report["json"]["integers_differing"] == 1
    # A float that moved within the tolerance still passes it.
    result = run(["diff", tmp_path / "c.json", tmp_path / "a.json", "--rtol", "1e-3", "--json"])
    assert json.loads(result.stdout)["verdict"] == "WITHIN-TOLERANCE", result.output


def test_a_tolerance_policy_refuses_changed_integer_tensors(chain: Path, tmp_path: Path) -> None:
    for match in (TOLERANCE, {"quantize": {"products": {"*.safetensors": TOLERANCE,
                                                        "config.json": "exact"}}}):
        result, quorum = verify(chain, tmp_path, match, "ints")
        assert result.code == 1, result.output
        assert quorum["matching"] == 0, quorum
        dissent = {d["name"] for entry in quorum["dissent"] for d in entry["files"]}
        assert dissent == {"model.safetensors"}, quorum


def test_a_json_tolerance_refuses_a_changed_token_id(chain: Path, tmp_path: Path) -> None:
    match = {"quantize": {"products": {"*.safetensors": TOLERANCE,
                                       "config.json": {"json": {"rtol": 1e-3, "atol": 0}}}}}
    result, quorum = verify(chain, tmp_path, match, "json")
    assert result.code == 1, result.output
    assert quorum["matching"] == 0, quorum
    dissent = {d["name"] for entry in quorum["dissent"] for d in entry["files"]}
    assert dissent == {"config.json"}, quorum


def test_a_tolerance_policy_refuses_a_changed_safetensors_header(chain: Path,
                                                                 tmp_path: Path) -> None:
    result, quorum = verify(chain, tmp_path, TOLERANCE, "meta")
    assert result.code == 1, result.output
    assert quorum["matching"] == 0, quorum
    dissent = {d["name"] for entry in quorum["dissent"] for d in entry["files"]}
    assert dissent == {"model.safetensors"}, quorum
