"""What the tool tells a user at the moment it matters (issue 23, item 8): record on a dirty git
tree names the changed files, verify-model points at a rebuilds/ folder it did not read when a
quorum falls short, --quiet keeps the ignored-files list to its count, and the packaging says
what `make test` needs and declares its licence the way setuptools no longer warns about."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from helpers import Chain, make_keys, payload_of, read_json, record_step, run, write_policy

ROOT = Path(__file__).parents[1]
GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false"]


def test_record_on_a_dirty_tree_names_the_changed_files(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", "builder")
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('v1')\n")
    (work / "notes.txt").write_text("kept\n")
    subprocess.run([*GIT, "init", "-q"], cwd=work, check=True)
    subprocess.run([*GIT, "add", "."], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-qm", "start"], cwd=work, check=True)
    (work / "train.py").write_text("print('v2, not committed')\n")
    result = record_step(work, "train", tmp_path / "keys/builder.key", ["train.py"],
                         ["out.txt"], "open('out.txt', 'w').write('x')",
                         extra=["--sandbox", "none", "--no-trace"])
    assert result.code == 0, result.output
    [warning] = [line for line in result.stderr.splitlines() if "dirty git tree" in line]
    assert "train.py" in warning and "notes.txt" not in warning and "1 tracked" in warning


def _quorum_policy(chain: Chain) -> None:
    data = chain.policy_data()
    data["rebuild"] = {"quorum": 1, "rebuilders": ["auditor"], "steps": ["train"]}
    write_policy(chain.policy, data)


def test_a_short_quorum_points_at_the_rebuilds_folder_beside(chain: Chain) -> None:
    _quorum_policy(chain)
    (chain.work / "rebuilds").mkdir()
    result = run(["verify", "dist/model.bin"], cwd=chain.work)
    assert result.code == 1, result.output
    assert "rebuilds lies beside attestations and was not read" in result.stdout
    assert "--attestations rebuilds" in result.stdout
    passed_too = run(["verify", "dist/model.bin", "--attestations", "attestations",
                      "--attestations", "rebuilds"], cwd=chain.work)
    assert passed_too.code == 1 and "lies beside" not in passed_too.stdout


def test_no_hint_without_a_rebuilds_folder(chain: Chain) -> None:
    _quorum_policy(chain)
    result = run(["verify", "dist/model.bin"], cwd=chain.work)
    assert result.code == 1 and "lies beside" not in result.stdout


def test_quiet_keeps_the_ignored_list_to_its_count(chain: Chain) -> None:
    for name in (".gitattributes", "README.md", ".cache/huggingface/.gitignore"):
        (chain.work / "dist" / name).parent.mkdir(parents=True, exist_ok=True)
        (chain.work / "dist" / name).write_text("x\n")
    data = chain.policy_data()
    data["ignore"] = [".gitattributes", "README.md", ".cache/huggingface/**"]
    write_policy(chain.policy, data)
    loud = run(["verify", "dist"], cwd=chain.work)
    assert loud.code == 0, loud.output
    assert "README.md  (pattern" in loud.stdout
    quiet = run(["verify", "dist", "-q"], cwd=chain.work)
    assert quiet.code == 0, quiet.output
    assert "ignored (left out of the digest): 3 file(s)" in quiet.stdout
    assert "(pattern" not in quiet.stdout


def test_the_licence_is_an_spdx_string_under_a_setuptools_that_reads_it() -> None:
    """A `license = { text = ... }` table makes setuptools >= 77 warn (three times per
    install); the SPDX string form needs that version as the floor."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    [setuptools] = [r for r in project["build-system"]["requires"]
                    if r.startswith("setuptools")]
    floor = re.search(r">=\s*(\d+)", setuptools)
    assert floor is not None and int(floor.group(1)) >= 77


def test_the_readme_says_make_test_uses_npm() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"make test[^\n]*\n?[^\n]*npm", readme), "README: make test and npm"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two traced steps: packaging copies a file; the other does its arithmetic in numpy,
    whose wheel loads its bundled OpenBLAS (a thread pool of its own)."""
    from verifier.steps import trace

    if trace.usable()[0] is None:
        pytest.skip(f"cannot trace here: {trace.usable()[1]}")
    root = tmp_path_factory.mktemp("threads")
    make_keys(root / "keys", "builder")
    work = root / "work"
    work.mkdir()
    (work / "weights.bin").write_bytes(b"w" * 64)
    for step, code in (
            ("package", "import shutil; shutil.copy('weights.bin', 'model.bin')"),
            ("train", "import numpy; numpy.save('weights.npy', numpy.ones((4, 4)) @ "
                      "numpy.ones((4, 4)))")):
        product = "model.bin" if step == "package" else "weights.npy"
        result = record_step(work, step, root / "keys/builder.key", ["weights.bin"], [product],
                             code, extra=["--sandbox", "none", "--trace"])
        assert result.code == 0, result.output
    return work


def _audit_warnings(work: Path, step: str) -> list[str]:
    result = run(["audit", "attestations", "--json"], cwd=work)
    findings = json.loads(result.stdout)["findings"]
    return [f["message"] for f in findings
            if f.get("step") == step or f"'{step}'" in f["message"]]


def test_a_step_that_loaded_no_threaded_runtime_is_not_warned_about_threads(
        traced: Path) -> None:
    statement = payload_of(read_json(traced / "attestations/package.intoto.json"))
    assert statement["predicate"]["buildDefinition"]["internalParameters"][
        "threadedLibraries"] == []
    assert not [m for m in _audit_warnings(traced, "package") if "thread count" in m]


def test_a_step_that_loaded_openblas_is_warned_naming_it(traced: Path) -> None:
    statement = payload_of(read_json(traced / "attestations/train.intoto.json"))
    assert "openblas" in statement["predicate"]["buildDefinition"]["internalParameters"][
        "threadedLibraries"]
    [warning] = [m for m in _audit_warnings(traced, "train") if "thread count" in m]
    assert "loaded openblas" in warning
