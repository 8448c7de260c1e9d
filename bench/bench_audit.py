"""Benchmark: audit 10,000 signed attestations and print one line of timings.

Generates many models' build chains (prepare-data -> train -> quantize -> package, every tenth
model fine-tuned from the previous one's packaged weights), each step signed with ECDSA P-256 as
`record` signs it, plus one signed rebuild attestation of each model's train step, and a policy
naming the signers. Then times `audit` with that policy (every signature verified), the JSON
form and the text, DOT and HTML renderings, and audits a quarter of the set to show the cost
growing linearly.

    python bench/bench_audit.py [--attestations 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE
from verifier.formats.signing import KeySigner, generate_keypair
from verifier.formats.statement import (
    REBUILD_PREDICATE_TYPE,
    STATEMENT_TYPE,
    canonical_json,
    step_statement,
)
from verifier.judgement.policy import load_policy
from verifier.reports.audit import audit
from verifier.reports.audit_views import render
from verifier.steps.record import canonical_bundle_text

STEPS = ("prepare-data", "train", "quantize", "package")
PACKAGES = {f"package-{i:02d}": f"1.{i}.0" for i in range(60)}  # a realistic environment size
POLICY = """\
version: 1
name: bench
signers:
  builder: {key: keys/builder.pub}
  rebuilder-a: {key: keys/rebuilder-a.pub}
  rebuilder-b: {key: keys/rebuilder-b.pub}
sources:
  - {pattern: "data/**", unpinned: true}
  - {pattern: "*.py", unpinned: true}
steps:
  - {name: prepare-data, signed_by: [builder]}
  - {name: train, signed_by: [builder], after: [prepare-data]}
  - {name: quantize, signed_by: [builder], after: [train]}
  - {name: package, signed_by: [builder], after: [quantize]}
rebuild:
  quorum: 1
  rebuilders: [rebuilder-a, rebuilder-b]
  steps: [train]
  match: exact
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _environment(model: int) -> dict[str, Any]:
    return {
        "python": {"version": "3.11.7", "implementation": "CPython", "executable": "python3"},
        "platform": {"system": "Linux", "release": "6.1", "machine": "x86_64",
                     "libc": "glibc-2.36"},
        "cpu": {"model": "Bench CPU", "count": 16}, "gpus": [], "torch": None,
        "variables": {"OMP_NUM_THREADS": "4"}, "packages": PACKAGES,
        "git": {"commit": _sha(f"commit {model // 50}")[:40], "dirty": False},
    }


def _write(path: Path, bundle: dict[str, Any]) -> None:
    path.write_text(canonical_bundle_text(bundle))


def generate(root: Path, attestations: int) -> tuple[Path, Path, int, int]:
    """Write the signed chains under root; returns (attestation dir, policy, steps, rebuilds)."""
    for who in ("builder", "rebuilder-a", "rebuilder-b"):
        generate_keypair(root / "keys" / who)
    builder = KeySigner(root / "keys" / "builder.key")
    rebuilders = [KeySigner(root / "keys" / f"{w}.key") for w in ("rebuilder-a", "rebuilder-b")]
    out = root / "attestations"
    models = attestations // (len(STEPS) + 1)
    steps = rebuilds = 0
    previous_model: tuple[str, str] | None = None
    for model in range(models):
        tag = f"m{model:05d}"
        (out / tag).mkdir(parents=True)
        raw = (f"data/{tag}/raw.csv", _sha(f"raw {model}"))
        chain = [
            ("prepare-data", [raw, ("prepare.py", _sha("prepare"))],
             [(f"build/{tag}/clean.csv", _sha(f"clean {model}"))]),
            ("train", [(f"build/{tag}/clean.csv", _sha(f"clean {model}")),
                       ("train.py", _sha("train"))]
             + ([previous_model] if previous_model and model % 10 == 0 else []),
             [(f"build/{tag}/weights.safetensors", _sha(f"weights {model}"))]),
            ("quantize", [(f"build/{tag}/weights.safetensors", _sha(f"weights {model}")),
                          ("quantize.py", _sha("quantize"))],
             [(f"build/{tag}/q8.safetensors", _sha(f"q8 {model}"))]),
            ("package", [(f"build/{tag}/q8.safetensors", _sha(f"q8 {model}")),
                         ("package.py", _sha("package"))],
             [(f"dist/{tag}/model.safetensors", _sha(f"model {model}"))]),
        ]
        for step, materials, products in chain:
            statement = step_statement(
                step=step, argv=["python", f"{step}.py", "--model", tag], working_directory=".",
                declared_env={"OMP_NUM_THREADS": "4"}, environment=_environment(model),
                materials=[{"name": n, "digest": {"sha256": d}} for n, d in materials],
                products=[{"name": n, "digest": {"sha256": d}} for n, d in products],
                invocation_id=f"{tag}-{step}", started_on="2026-01-01T00:00:00Z",
                finished_on="2026-01-01T01:00:00Z", byproducts=[],
            )
            payload = canonical_json(statement)
            _write(out / tag / f"{step}.intoto.json",
                   builder.sign_dsse(payload, INTOTO_PAYLOAD_TYPE))
            steps += 1
            if step == "train":
                _write(out / tag / "train.rebuild.intoto.json",
                       rebuilders[model % 2].sign_dsse(
                           canonical_json(_rebuild(payload, products)), INTOTO_PAYLOAD_TYPE))
                rebuilds += 1
        previous_model = (f"dist/{tag}/model.safetensors", _sha(f"model {model}"))
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    return out, policy, steps, rebuilds


def _rebuild(step_payload: bytes, products: list[tuple[str, str]]) -> dict[str, Any]:
    results = [{"name": n, "expected": {"sha256": d}, "actual": {"sha256": d},
                "verdict": "IDENTICAL"} for n, d in products]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in products],
        "predicateType": REBUILD_PREDICATE_TYPE,
        "predicate": {
            "step": "train",
            "rebuiltAttestation": {"name": "train.intoto.json",
                                   "digest": {"sha256": hashlib.sha256(step_payload).hexdigest()}},
            "argv": ["python", "train.py"], "env": {}, "reproduced": True, "results": results,
            "materials": [], "environment": {}, "drift": [],
            "runDetails": {"invocationId": "bench", "startedOn": "2026-01-02T00:00:00Z",
                           "finishedOn": "2026-01-02T01:00:00Z", "exitCode": 0},
        },
    }


def _timed(action: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = action()
    return value, time.perf_counter() - start


def _command_line(directory: Path, policy: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `model-verifier audit DIR --policy FILE` printing the text report:
    what a user waits for, interpreter start included. CPU time is reported too because on a
    shared machine the wall clock also counts other people's work."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "verifier", "audit", str(directory),
                             "--policy", str(policy)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"audit exited {result.returncode}: {result.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attestations", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="generate here and keep the files")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    try:
        (directory, policy_path, steps, rebuilds), generated = _timed(
            lambda: generate(root, args.attestations))
        policy = load_policy(policy_path)
        report, audited = _timed(lambda: audit([directory], policy))
        data, as_dict = _timed(report.to_dict)
        _, as_json = _timed(lambda: render(data, "json"))
        _, as_text = _timed(lambda: render(data, "text"))
        _, as_dot = _timed(lambda: render(data, "dot"))
        _, as_html = _timed(lambda: render(data, "html"))
        quarter = sorted(p for p in directory.iterdir())[: len(list(directory.iterdir())) // 4]
        _, audited_quarter = _timed(lambda: audit(quarter, policy))
        wall, cpu = _command_line(directory, policy_path)
        counts = report.counts()
        print(f"audit: {steps + rebuilds} signed attestations ({steps} steps, {rebuilds} "
              f"rebuilds): `model-verifier audit --policy` {wall:.2f} s wall, {cpu:.2f} s CPU "
              f"({os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}); "
              f"in-process: audit {audited:.2f} s, report {as_dict:.2f} s "
              f"(json {as_json:.2f} s, text {as_text:.2f} s, dot {as_dot:.2f} s, "
              f"html {as_html:.2f} s); a quarter of them in {audited_quarter:.2f} s "
              f"(x{audited / audited_quarter:.1f} for x4 the input); "
              f"{counts['error']} errors, {counts['warning']} warnings; "
              f"generated in {generated:.1f} s")
        json.dumps(data)  # the report must stay serialisable at this size
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
