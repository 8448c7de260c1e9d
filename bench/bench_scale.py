"""Scale checks on hostile input: `verify-model` and `audit` must stay linear and bounded.

Three workloads, each against its baseline in the same run (one signed step, a one-step
policy, a 1 MiB artifact):

- replayed: 8,000 copies of one genuine bundle (files of identical bytes); baseline one copy.
- junk signatures: one envelope carrying 150,000 junk signatures beside the genuine bundle;
  baseline the genuine bundle alone.
- directory materials: one signed step with 20,000 directory materials (dirHash), every one
  accounted for by an unpinned source rule; baseline the same step with 2,000.

Each command runs as a real process: wall and CPU seconds, peak RSS, exit code. The target is
under 5 s each on the 2-core development machine, memory bounded.

    python bench/bench_scale.py [--keep DIR] [--only NAME] [--output docs/benchmarks.md]

The table replaces the section "Scale checks on hostile input" of docs/benchmarks.md (the
rest of that file is bench/run.py's, which keeps this section when it rewrites its own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE
from verifier.formats.signing import KeySigner, generate_keypair
from verifier.formats.statement import canonical_json, step_statement
from verifier.steps.record import canonical_bundle_text

TARGET_S = 5.0
REPO = Path(__file__).resolve().parent.parent
SECTION = "## Scale checks on hostile input"
POLICY = """\
version: 1
name: scale
signers:
  builder: {key: keys/builder.pub}
sources:
  - {pattern: "**", unpinned: true}
steps:
  - {name: package, signed_by: [builder]}
"""


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    peak_rss: int  # bytes
    code: int


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _statement(artifact_sha: str, materials: list[dict[str, Any]]) -> bytes:
    return canonical_json(step_statement(
        step="package", argv=["python", "package.py"], working_directory=".",
        declared_env={}, environment={"git": {"commit": "0" * 40, "dirty": False}},
        materials=materials, products=[{"name": "dist/model.bin",
                                        "digest": {"sha256": artifact_sha}}],
        invocation_id="scale", started_on="2026-01-01T00:00:00Z",
        finished_on="2026-01-01T00:01:00Z", byproducts=[]))


def generate(root: Path) -> dict[str, Path]:
    """Keys, policy, artifact and the attestation directories of every workload."""
    generate_keypair(root / "keys" / "builder")
    signer = KeySigner(root / "keys" / "builder.key")
    (root / "policy.yaml").write_text(POLICY)
    artifact = root / "dist" / "model.bin"
    artifact.parent.mkdir()
    artifact.write_bytes(os.urandom(1 << 20))
    artifact_sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    genuine_text = canonical_bundle_text(signer.sign_dsse(
        _statement(artifact_sha, [{"name": "model/weights.bin",
                                   "digest": {"sha256": _sha("weights")}}]),
        INTOTO_PAYLOAD_TYPE))
    dirs: dict[str, Path] = {}

    def directory(name: str) -> Path:
        dirs[name] = root / name
        dirs[name].mkdir()
        return dirs[name]

    (directory("one-copy") / "package.intoto.json").write_text(genuine_text)
    replayed = directory("replayed-8000")
    for index in range(8_000):
        (replayed / f"copy-{index:05d}.intoto.json").write_text(genuine_text)

    junk = directory("junk-signatures-150000")
    (junk / "package.intoto.json").write_text(genuine_text)
    bundle = json.loads(genuine_text)
    hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    sig = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    bundle["dsseEnvelope"]["signatures"] = [{"sig": sig[:-8] + "AAAAAAA=", "keyid": hint}
                                            ] * 150_000
    (junk / "junk.intoto.json").write_text(json.dumps(bundle))

    for count in (2_000, 20_000):
        materials = [{"name": f"data/shard-{i:05d}", "digest": {"dirHash": _sha(f"d{i}")}}
                     for i in range(count)]
        (directory(f"dir-materials-{count}") / "package.intoto.json").write_text(
            canonical_bundle_text(signer.sign_dsse(_statement(artifact_sha, materials),
                                                   INTOTO_PAYLOAD_TYPE)))
    return dirs


# Started from a fresh interpreter without site packages, so that the peak RSS the kernel
# reports for the command is its own: a child forked from this process (which holds the
# generated workloads and the signing libraries) would start from this process's size.
_LAUNCHER = """
import os, sys, time
quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
began = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=quiet)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - began, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
      os.waitstatus_to_exitcode(status))
"""


def measure(argv: list[str], cwd: Path) -> Measured:
    """Run one command to its end; its own wall time, CPU time and peak RSS."""
    result = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *argv], cwd=cwd,
                            capture_output=True, text=True, check=True)
    wall, cpu, peak_kib, code = result.stdout.split()
    return Measured(float(wall), float(cpu), int(peak_kib) * 1024, int(code))


def _commands(directory: Path) -> dict[str, list[str]]:
    verifier = Path(sys.executable).parent
    return {
        "verify-model": [str(verifier / "verify-model"), "dist/model.bin", "--policy",
                         "policy.yaml", "--attestations", str(directory)],
        "audit": [str(verifier / "model-verifier"), "audit", str(directory), "--policy",
                  "policy.yaml", "--format", "json"],
    }


WORKLOADS = (
    ("replayed bundles", "replayed-8000", "one-copy", "8,000 copies of one genuine bundle"),
    ("junk signatures", "junk-signatures-150000", "one-copy",
     "150,000 junk signatures in one envelope"),
    ("directory materials", "dir-materials-20000", "dir-materials-2000",
     "20,000 directory materials in one attestation (baseline 2,000)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="generate here and keep the files")
    parser.add_argument("--only", help="run one workload (a name from the table)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="the Markdown file whose scale section is rewritten ('-': none)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows: list[str] = []
    try:
        started = time.perf_counter()
        dirs = generate(root)
        print(f"scale: generated in {time.perf_counter() - started:.1f} s "
              f"({os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f})")
        for name, workload, baseline, what in WORKLOADS:
            if args.only and args.only != name:
                continue
            for command in ("verify-model", "audit"):
                base = measure(_commands(dirs[baseline])[command], root)
                hostile = measure(_commands(dirs[workload])[command], root)
                verdict = "met" if hostile.wall < TARGET_S else "**not met**"
                line = (f"| {what} | `{command}` | {hostile.wall:.2f} s ({hostile.cpu:.2f} CPU) "
                        f"| {hostile.peak_rss / 2**20:.0f} MB | exit {hostile.code} "
                        f"| {base.wall:.2f} s, {base.peak_rss / 2**20:.0f} MB "
                        f"| {hostile.wall / base.wall:.1f}x | {verdict} |")
                rows.append(line)
                print(line, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    section = "\n".join([
        SECTION, "",
        "`python bench/bench_scale.py` (run by `make bench`): hostile input at scale, each "
        "command a real process, against a baseline in the same run. Wall and CPU seconds, "
        f"peak RSS, on {os.cpu_count()} cores (load average {load:.1f} at the end).", "",
        f"| workload | command | wall (CPU) | peak RSS | result | baseline | ratio | "
        f"< {TARGET_S:.0f} s |",
        "|---|---|---:|---:|---|---:|---:|---|", *rows, "",
        "- Replayed bundles: `verify-model` loads identical envelopes once "
        "(verifier/formats/evidence.py) and names the copies in one note; `audit` does the "
        "same, one finding per copied envelope.",
        "- Junk signatures: a bundle of more than 10,000 JSON objects is refused while it is "
        "decoded, an envelope of more than 16 signatures before any is checked "
        "(verifier/formats/envelope.py, docs/threat-model.md).",
        "- Directory materials: producers are looked up by digest and the files under each "
        "directory are indexed once per step (verifier/judgement/evaluation.py); the ratio to the "
        "baseline of 2,000 shows whether the walk grows linearly (10x) or worse.",
        ""])
    print("\n" + section)
    if args.only is None and str(args.output) != "-":
        _replace_section(args.output, section)
        print(f"bench_scale: updated {args.output}")


def _replace_section(path: Path, section: str) -> None:
    """Put the section in place of the old one (up to the next level-2 heading), or at the
    end."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    before, found, after = text.partition(SECTION)
    rest = after[after.find("\n## "):] if found and "\n## " in after else ""
    path.write_text(before.rstrip("\n") + "\n\n" + section + rest.rstrip("\n") + "\n",
                    encoding="utf-8")


if __name__ == "__main__":
    main()
