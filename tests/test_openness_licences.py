"""Which licences the openness report recognises as open: the SPDX licence list's own OSI and FSF
flags, what a policy adds, and a licence declared on a directory covering its files.

One step is recorded with the real CLI: a data directory licensed as a whole (CC-BY-4.0), a
preparation script under BSL-1.0, a model card under PSF-2.0 and weights under Zlib, each
declared as a component. Before, the open list was 28 hard-coded identifiers: BSL-1.0 and Zlib
were "not recognised as open", and a licence on a directory was refused by record.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from helpers import make_keys, record_step, run, write_policy

STEP = ("import pathlib; pathlib.Path('out').mkdir(exist_ok=True); "
        "pathlib.Path('out/model.bin').write_bytes("
        "pathlib.Path('data/a.txt').read_bytes() + pathlib.Path('data/b.txt').read_bytes())")
DECLARED = ["--material-license", "data=CC-BY-4.0",
            "--material-license", "prep.py=BSL-1.0",
            "--material-license", "card.md=PSF-2.0",
            "--material-license", "out/model.bin=Zlib",
            "--component", "training-data=data/a.txt",
            "--component", "data-processing-code=prep.py",
            "--component", "model-card=card.md",
            "--component", "weights=out/model.bin"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("licences")
    make_keys(root / "keys", "builder")
    work = root / "work"
    (work / "data").mkdir(parents=True)
    (work / "data/a.txt").write_text("alpha\n")
    (work / "data/b.txt").write_text("beta\n")
    (work / "prep.py").write_text("print('prepare')\n")
    (work / "card.md").write_text("# card\n")
    result = record_step(work, "prepare", root / "keys/builder.key",
                         ["data", "prep.py", "card.md"], ["out/model.bin"], STEP,
                         extra=["--sandbox", "none", "--no-trace", *DECLARED])
    assert result.code == 0, result.output
    return work


def policy(work: Path, name: str, **licenses: list[str]) -> Path:
    data: dict = {
        "version": 1, "name": "licences",
        "signers": {"builder": {"key": "../keys/builder.pub"}},
        "sources": [{"pattern": "**", "unpinned": True}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]}],
    }
    if licenses:
        data["licenses"] = licenses
    return write_policy(work / name, data)


def openness(work: Path, policy_file: Path) -> dict:
    result = run(["openness", "out/model.bin", "--policy", policy_file, "--attestations",
                  "attestations", "--json"], cwd=work)
    assert result.code == 0, result.output
    return {f["name"]: f for c in json.loads(result.stdout)["components"] for f in c["files"]}


def test_the_directory_licence_is_signed_as_declared(work: Path) -> None:
    bundle = json.loads((work / "attestations/prepare.intoto.json").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    licences = statement["predicate"]["buildDefinition"]["internalParameters"]["licenses"]
    assert {"license": "CC-BY-4.0", "name": "data"} in licences


def test_spdx_flags_decide_and_a_directory_licence_covers_its_files(work: Path) -> None:
    files = openness(work, policy(work, "plain.yaml"))
    # The data file inherits its directory's licence; BSL-1.0 and Zlib are OSI-approved in
    # the SPDX list, so they count as open.
    assert (files["data/a.txt"]["license"], files["data/a.txt"]["license_open"]) == (
        "CC-BY-4.0", True)
    assert files["prep.py"]["license_open"] is True
    assert files["out/model.bin"]["license_open"] is True
    # PSF-2.0 is neither OSI-approved nor FSF-libre in the SPDX list: not open unless a
    # policy says so.
    assert files["card.md"]["license_open"] is False


def test_a_policy_extends_the_open_licences(work: Path) -> None:
    files = openness(work, policy(work, "psf.yaml", open=["PSF-2.0"]))
    assert files["card.md"]["license_open"] is True


def test_a_directory_licence_is_judged_by_the_policy(work: Path) -> None:
    denied = policy(work, "deny.yaml", deny=["CC-BY-4.0"])
    result = run(["verify", "out/model.bin", "--policy", denied, "--attestations",
                  "attestations", "--json"], cwd=work)
    assert result.code == 1, result.output
    [problem] = [p for p in json.loads(result.stdout)["problems"] if p["kind"] == "license"]
    assert "declares data (material) under 'CC-BY-4.0'" in problem["message"]


def test_a_licence_on_a_name_that_only_prefixes_a_directory_is_refused(work: Path) -> None:
    """'dat' is no directory of the step, though 'data/a.txt' starts with it."""
    result = record_step(work, "other", work.parent / "keys/builder.key", ["data"],
                         ["out/model.bin"], STEP, out="other",
                         extra=["--sandbox", "none", "--no-trace", "--force",
                                "--material-license", "dat=MIT"])
    assert result.code == 2, result.output
    assert "dat" in result.stderr and not (work / "other").exists()
