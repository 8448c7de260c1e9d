"""Rebuild answers a rebuilder can act on, from real rebuilds on two machines.

The step's interpreter is a venv holding four distributions (tokenizers, anyio, click, h11;
metadata and, for tokenizers, a module); `prepare-data` imports tokenizers and writes what it
gives into `vocab.json`, `train` reads `vocab.json`. rebuilder-a rebuilds on the machine as
recorded and reproduces; rebuilder-b's machine has other versions of all four, so its
`vocab.json` differs: the likely cause is the one package the step imports, not the first by
name. Built once for the module (two rebuilds, no network).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import assert_no_traceback, bubblewrap_starts, make_keys, run, write_policy

# The rebuilds run in the sandbox a rebuild uses by default (without bubblewrap the suite runs
# them with --sandbox none, where these answers are not what is under test).
needs_bwrap = pytest.mark.skipif(not bubblewrap_starts(), reason="bubblewrap cannot start here")

PREPARE = """\
import json

import tokenizers

json.dump({"merges": tokenizers.MERGES, "vocab": ["a", "b", "ab"]}, open("vocab.json", "w"))
"""
TRAIN = """\
import hashlib
import json

vocab = json.load(open("vocab.json"))
open("model.bin", "wb").write(hashlib.sha256(json.dumps(vocab).encode()).digest())
"""
# Four drifting distributions; only tokenizers is imported. By name, anyio comes first.
MACHINE_A = {"anyio": "4.4.0", "click": "8.1.7", "h11": "0.14.0", "tokenizers": "0.23.0"}
MACHINE_B = {"anyio": "3.7.1", "click": "8.0.0", "h11": "0.12.0", "tokenizers": "0.19.0"}


@dataclass(frozen=True)
class Rebuilt:
    root: Path
    outputs: dict[str, str]  # rebuilder -> what `rebuild` printed

    @property
    def work(self) -> Path:
        return self.root / "work"

    def key(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.key"

    def pub(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.pub"


def _install(site: Path, versions: dict[str, str]) -> None:
    """Distributions as installed: metadata (what environment capture reads) and, for
    tokenizers, a module whose merges changed between the versions."""
    for name, version in versions.items():
        for old in site.glob(f"{name}-*.dist-info"):
            for file in old.iterdir():
                file.unlink()
            old.rmdir()
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: "
                                       f"{version}\n", encoding="utf-8")
    (site / "tokenizers").mkdir(exist_ok=True)
    merges = "a b" if versions["tokenizers"] == "0.23.0" else "a c"
    (site / "tokenizers" / "__init__.py").write_text(f"MERGES = {merges!r}\n", encoding="utf-8")


def _rebuild(chain: Rebuilt, name: str) -> str:
    result = run(["rebuild", chain.work / "attestations", "--source", chain.work,
                  "--trust-key", chain.pub("builder"), "--key", chain.key(name),
                  "--out", chain.root / "rebuilds", "--as", name], cwd=chain.work)
    assert_no_traceback(result)
    return result.stdout


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Rebuilt:
    root = tmp_path_factory.mktemp("answers")
    for name in ("builder", "rebuilder-a", "rebuilder-b"):
        make_keys(root / "keys", name)
    venv = root / "venv"
    base = Path(sys.base_prefix) / "bin" / Path(sys.executable).name
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    _install(purelib, MACHINE_A)
    work = root / "work"
    work.mkdir()
    (work / "prepare.py").write_text(PREPARE, encoding="utf-8")
    (work / "train.py").write_text(TRAIN, encoding="utf-8")
    python = str(venv / "bin" / "python")
    for step, materials, product, script in (
            ("prepare-data", ["prepare.py"], "vocab.json", "prepare.py"),
            ("train", ["train.py", "vocab.json"], "model.bin", "train.py")):
        args = ["record", "--step", step, "--key", root / "keys" / "builder.key"]
        for material in materials:
            args += ["--material", material]
        result = run([*args, "--product", product, "--", python, script], cwd=work)
        assert result.code == 0, result.output
    outputs = {"rebuilder-a": _rebuild(Rebuilt(root, {}), "rebuilder-a")}
    _install(purelib, MACHINE_B)  # rebuilder-b's machine: the same path, other versions
    outputs["rebuilder-b"] = _rebuild(Rebuilt(root, {}), "rebuilder-b")
    return Rebuilt(root, outputs)


def _step_block(output: str, step: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if f"step {step!r}" in line
                 and not line.startswith(" "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")),
               len(lines))
    return lines[start:end]


def test_the_same_machine_reproduces(chain: Rebuilt) -> None:
    output = chain.outputs["rebuilder-a"]
    assert "REPRODUCED  step 'prepare-data'" in output, output
    assert "REPRODUCED  step 'train'" in output, output


@needs_bwrap
def test_the_likely_cause_is_the_package_the_step_imports_and_comes_first(
        chain: Rebuilt) -> None:
    """Four packages drifted; anyio sorts first by name, tokenizers is the one imported."""
    block = _step_block(chain.outputs["rebuilder-b"], "prepare-data")
    assert block[0].startswith("DIFFERS     step 'prepare-data'"), block
    assert block[1].startswith("  vocab.json: DIVERGED"), block
    assert block[2] == ("  likely cause: packages.tokenizers: recorded '0.23.0', now '0.19.0' "
                        "(imported by the step)"), block
    drift = [line for line in block if line.startswith("  environment drift:")]
    assert drift[0].startswith("  environment drift: packages.tokenizers"), drift
    assert {"anyio", "click", "h11"} <= {line.split("packages.")[1].split(":")[0]
                                         for line in drift[1:] if "packages." in line}
    statement = json.loads(__import__("base64").b64decode(json.loads(
        (chain.root / "rebuilds" / "rebuilder-b" / "prepare-data.rebuild.intoto.json")
        .read_text())["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["imports"] == ["json", "tokenizers"]


@needs_bwrap
def test_the_tensor_or_json_diff_is_in_the_first_lines(chain: Rebuilt) -> None:
    """The central vocab.json lies in the source tree here: its diff is printed right under
    the verdict, not left in the signed file."""
    block = _step_block(chain.outputs["rebuilder-b"], "prepare-data")
    assert "1 other value(s) differ, first at /merges" in block[1], block


@needs_bwrap
def test_a_step_after_one_that_differed_says_the_earlier_step_made_another_file(
        chain: Rebuilt) -> None:
    block = _step_block(chain.outputs["rebuilder-b"], "train")
    assert block[0].startswith("NOT RUN     step 'train'"), block
    text = "\n".join(block)
    assert ("material vocab.json: the earlier rebuilt step 'prepare-data' produced a different "
            "file") in text, text
    assert "not in the source tree" not in text


@needs_bwrap
def test_the_quorum_line_names_the_dissenter_and_its_likely_cause(chain: Rebuilt,
                                                                   tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", {
        "version": 1,
        "signers": {name: {"key": str(chain.pub(name))}
                    for name in ("builder", "rebuilder-a", "rebuilder-b")},
        "sources": [{"pattern": "*.py", "unpinned": True}],
        "steps": [{"name": "prepare-data", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare-data"]}],
        "rebuild": {"quorum": 2, "rebuilders": ["rebuilder-a", "rebuilder-b"],
                    "steps": ["prepare-data"]},
    })
    result = run([chain.work / "model.bin", "--policy", policy, "--attestations",
                  chain.work / "attestations", "--attestations", chain.root / "rebuilds"],
                 program="verify-model")
    assert_no_traceback(result)
    assert result.code == 1, result.output
    [line] = [x for x in result.output.splitlines() if "step 'prepare-data' has" in x] or [
        result.output]
    assert "1 of 2 required independent matching rebuilds (rebuilder-a)" in line, line
    assert ("rebuilder-b dissented (vocab.json DIVERGED; likely cause: packages.tokenizers: "
            "recorded '0.23.0', now '0.19.0' (imported by the step))") in line, line
    assert "no other rebuilder named in the policy" not in line
    # The dissent, which a met quorum would still list, carries its likely cause too.
    assert ("      likely cause: packages.tokenizers: recorded '0.23.0', now '0.19.0' (imported "
            "by the step)") in result.stdout.splitlines(), result.stdout


def test_the_step_sources_are_read_only_inside_the_workspace(tmp_path: Path) -> None:
    """Ranking reads the stranger's code: never through a link, never outside the workspace,
    never run (a source that does not parse names nothing)."""
    from types import SimpleNamespace

    from verifier.steps.rebuild import _step_imports

    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.py").write_text("import hostonly\n", encoding="utf-8")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "link.py").symlink_to(outside / "secret.py")
    (root / "broken.py").write_text("import (\n", encoding="utf-8")
    (root / "real.py").write_text("import tokenizers.models\nfrom numpy import x\n",
                                  encoding="utf-8")
    record = SimpleNamespace(source="s.intoto.json",
                             materials=[{"name": "link.py"}, {"name": "broken.py"}],
                             argv=["python", "link.py", "../host/secret.py", "real.py",
                                   "-m", "torch.distributed.run", "-c", "import yaml"])
    assert _step_imports(record, root, root) == ["numpy", "tokenizers", "torch", "yaml"]
