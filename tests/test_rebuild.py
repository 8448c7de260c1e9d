"""rebuild: re-runs recorded steps in fresh workspaces, compares, and signs what it found.

Each test records a small three-step build in tmp_path with the real `record` command and
rebuilds it with the real `rebuild` command. The step names are chosen so that their
alphabetical order is the reverse of their build order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BIN,
    INTOTO,
    KeyPair,
    assert_error,
    assert_no_traceback,
    dsse_verifies,
    make_keys,
    payload_of,
    python_step,
    read_json,
    record_step,
    run,
    sign_bundle,
)

REBUILD_TYPE = "https://model-verifier.dev/attestations/rebuild/v1"

PREPARE = ("import pathlib; rows = pathlib.Path('raw.csv').read_text().splitlines(); "
           "pathlib.Path('data.csv').write_text('\\n'.join(r.upper() for r in rows) + '\\n')")
TRAIN = (
    "import json, os, sys, numpy as np; from safetensors.numpy import save_file; "
    "code = int(os.environ['EXIT_CODE']); "
    "code and sys.exit(code); "
    "raw = open('data.csv', 'rb').read().ljust(64, b' ')[:64]; "
    "x = np.frombuffer(raw, dtype=np.uint8).astype(np.float32).reshape(4, 16) / 255; "
    "save_file({'w': x * (1 + np.float32(os.environ['NOISE'])), 'b': np.zeros(4, np.float32)},"
    " 'weights.safetensors'); "
    "json.dump({'rows': raw.count(b'\\n')}, open('metrics.json', 'w'))"
)
PACKAGE = ("import pathlib, shutil; pathlib.Path('dist').mkdir(exist_ok=True); "
           "shutil.copy('weights.safetensors', 'dist/model.safetensors'); "
           "shutil.copy('metrics.json', 'dist/metrics.json')")
# name: (materials, products, code, extra record options), in build order
STEPS: dict[str, tuple[list[str], list[str], str, list[str]]] = {
    "zeta-prepare": (["raw.csv"], ["data.csv"], PREPARE, []),
    "alpha-train": (["data.csv"], ["weights.safetensors", "metrics.json"], TRAIN,
                    ["--env", "NOISE=0", "--env", "EXIT_CODE=0"]),
    "mid-package": (["weights.safetensors", "metrics.json"], ["dist"], PACKAGE, []),
}
BUILD_ORDER = list(STEPS)


class Build:
    """A recorded build: tmp/keys, tmp/src (the source tree, products included)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        self.src.mkdir()
        self.builder = make_keys(root / "keys", "builder")
        self.rebuilder = make_keys(root / "keys", "rebuilder")
        (self.src / "raw.csv").write_text("sepal,petal\n5.1,3.5\n4.9,3.0\n", encoding="utf-8")
        for step, (materials, products, code, extra) in STEPS.items():
            result = record_step(self.src, step, self.builder.private, materials, products,
                                 code, extra=extra)
            assert result.code == 0, result.output

    def attestation(self, step: str) -> Path:
        return self.src / "attestations" / f"{step}.intoto.json"

    def rebuild(self, *args: Any, attestations: list[Path] | None = None,
                key: KeyPair | None = None, out: Path | None = None,
                trust: tuple[Any, ...] | None = None) -> Any:
        paths = attestations or [self.src / "attestations"]
        trusted = ("--trust-key", self.builder.public) if trust is None else trust
        return run(["rebuild", *paths, "--source", self.src,
                    "--key", (key or self.rebuilder).private,
                    "--out", out or self.root / "rebuilds", *trusted, *args], cwd=self.src)

    @property
    def written(self) -> Path:
        """Where the default rebuilder (keys/rebuilder.key) writes under the default --out."""
        return self.root / "rebuilds" / "rebuilder"


@pytest.fixture
def build(tmp_path: Path) -> Build:
    return Build(tmp_path)


def tree_digests(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root (links too) with its sha256 and mode."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            found[path.relative_to(root).as_posix()] = (
                hashlib.sha256(data).hexdigest(), path.lstat().st_mode)
    return found


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def files_under(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if not p.is_dir())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def step_payload(path: Path) -> bytes:
    return base64.b64decode(read_json(path)["dsseEnvelope"]["payload"])


# ------------------------------------------------------------------ order and isolation


def test_steps_run_in_link_order_even_when_given_in_reverse(build: Build) -> None:
    reverse = [build.attestation(step) for step in reversed(BUILD_ORDER)]
    result = build.rebuild("--json", attestations=reverse)
    assert result.code == 0, result.output
    outcomes = json.loads(result.stdout)
    assert [o["step"] for o in outcomes] == BUILD_ORDER
    assert [o["status"] for o in outcomes] == ["reproduced"] * 3
    assert files_under(build.written) == sorted(
        f"{step}.rebuild.intoto.json" for step in BUILD_ORDER)


def test_the_source_tree_is_unchanged_by_a_rebuild(build: Build) -> None:
    before = tree_digests(build.src)
    products = {name: before[name] for name in
                ("data.csv", "weights.safetensors", "metrics.json", "dist/model.safetensors")}
    result = build.rebuild("--env", "NOISE=0.5")  # products that differ from the recorded ones
    assert result.code == 1, result.output
    after = tree_digests(build.src)
    assert after == before
    assert {name: after[name] for name in products} == products


def test_exit_0_when_every_step_reproduced_and_1_when_one_differs(build: Build) -> None:
    assert build.rebuild("--out", build.root / "same").code == 0
    result = build.rebuild("--json", "--env", "NOISE=0.001", out=build.root / "differs")
    assert result.code == 1
    statuses = {o["step"]: o["status"] for o in json.loads(result.stdout)}
    # package copies the weights, so it no longer finds the recorded ones among its inputs.
    assert statuses == {"zeta-prepare": "reproduced", "alpha-train": "differs",
                        "mid-package": "stopped"}
    written = build.root / "differs" / "rebuilder" / "alpha-train.rebuild.intoto.json"
    train = payload_of(read_json(written))
    assert train["predicate"]["reproduced"] is False
    weights = next(r for r in train["predicate"]["results"]
                   if r["name"] == "weights.safetensors")
    assert weights["verdict"] == "DIVERGED"
    assert [t["name"] for t in weights["diff"]["tensors"] if t["status"] != "equal"] == ["w"]
    # The subjects are what this rebuilder produced, not what was recorded.
    subjects = {s["name"]: s["digest"]["sha256"] for s in train["subject"]}
    assert subjects["weights.safetensors"] != sha256_of(build.src / "weights.safetensors")
    assert subjects["metrics.json"] == sha256_of(build.src / "metrics.json")


# ------------------------------------------------------------------ materials


def test_a_drifted_material_stops_the_step_and_names_file_and_both_digests(build: Build
                                                                           ) -> None:
    recorded = sha256_of(build.src / "raw.csv")
    (build.src / "raw.csv").write_text("sepal,petal\n9.9,9.9\n", encoding="utf-8")
    now = sha256_of(build.src / "raw.csv")
    result = build.rebuild("--json", attestations=[build.attestation("zeta-prepare")])
    assert result.code == 1
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "stopped"
    message = outcome["message"]
    assert "raw.csv" in message and recorded in message and now in message
    assert str(build.attestation("zeta-prepare")) in message
    assert files_under(build.written) == []

    text = build.rebuild(attestations=[build.attestation("zeta-prepare")])
    assert text.code == 1
    assert "NOT RUN" in text.stdout and recorded in text.stdout and now in text.stdout


def test_a_missing_material_stops_the_step(build: Build) -> None:
    (build.src / "raw.csv").unlink()
    result = build.rebuild("--json")
    assert result.code == 1
    outcomes = json.loads(result.stdout)
    assert [o["status"] for o in outcomes] == ["stopped"] * 3
    assert "raw.csv" in outcomes[0]["message"]
    assert "not in the source tree" in outcomes[0]["message"]
    assert files_under(build.written) == []


def test_one_step_from_central_intermediates_found_by_digest_not_name(build: Build,
                                                                    tmp_path: Path) -> None:
    central = tmp_path / "central"
    central.mkdir()
    # The intermediates under names that mean nothing; a decoy carries a material's name.
    (central / "blob-1").write_bytes((build.src / "data.csv").read_bytes())
    (central / "data.csv").write_text("not the recorded data\n", encoding="utf-8")
    (build.src / "data.csv").unlink()  # not in the source tree either
    result = build.rebuild("--json", "--step", "alpha-train", "--materials-from", central)
    assert result.code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["step"] == "alpha-train" and outcome["status"] == "reproduced"
    assert files_under(build.written) == ["alpha-train.rebuild.intoto.json"]
    # Without the right bytes anywhere, the step does not run.
    (central / "blob-1").unlink()
    result = build.rebuild("--json", "--step", "alpha-train", "--materials-from", central,
                           out=tmp_path / "second")
    assert result.code == 1
    assert "data.csv" in json.loads(result.stdout)[0]["message"]
    assert files_under(tmp_path / "second") == []


def test_step_unknown_to_the_attestations_is_exit_2(build: Build) -> None:
    assert_error(build.rebuild("--step", "nonesuch"), 2, "--step nonesuch")


def test_a_material_placed_through_a_link_never_writes_outside_the_workspace(
    build: Build, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("recorded\n", encoding="utf-8")
    (build.src / "shared").symlink_to(outside)
    step = ["import pathlib; pathlib.Path('copy.txt').write_text("
            "pathlib.Path('shared/notes.txt').read_text())"][0]
    assert record_step(build.src, "linked", build.builder.private, ["shared/notes.txt"],
                       ["copy.txt"], step, out="linked").code == 0
    central = tmp_path / "central"
    central.mkdir()
    (central / "x").write_text("recorded\n", encoding="utf-8")
    (outside / "notes.txt").write_text("the user's newer notes\n", encoding="utf-8")
    # Outside git only declared materials reach the workspace: the link is not copied at all.
    result = build.rebuild("--json", "--materials-from", central,
                           attestations=[build.src / "linked"])
    assert result.code == 0, result.output
    assert (outside / "notes.txt").read_text(encoding="utf-8") == "the user's newer notes\n"
    # A link git tracks is copied as a link; the material is then refused, not placed.
    git(build.src, "init", "-q")
    git(build.src, "add", "shared")
    git(build.src, "commit", "-q", "-m", "link")
    result = build.rebuild("--json", "--materials-from", central, "--force",
                           attestations=[build.src / "linked"])
    assert result.code == 1
    assert "outside the workspace" in json.loads(result.stdout)[0]["message"]
    assert (outside / "notes.txt").read_text(encoding="utf-8") == "the user's newer notes\n"


# ------------------------------------------------------------------ running the command


def test_a_failing_command_writes_no_rebuild_attestation(build: Build) -> None:
    result = build.rebuild("--json", "--env", "EXIT_CODE=3")
    assert result.code == 1
    outcomes = {o["step"]: o for o in json.loads(result.stdout)}
    # It ran and failed: FAILED with its exit code, not "not run"; package, whose input it
    # never made, did not run.
    assert outcomes["alpha-train"]["status"] == "failed"
    assert outcomes["alpha-train"]["exit_code"] == 3
    assert "exited with status 3" in outcomes["alpha-train"]["message"]
    assert outcomes["mid-package"]["status"] == "stopped"
    assert files_under(build.written) == ["zeta-prepare.rebuild.intoto.json"]
    text = build.rebuild("--env", "EXIT_CODE=3", out=build.root / "failed-text")
    assert "FAILED (exit 3) step 'alpha-train'" in text.stdout
    assert "NOT RUN     step 'mid-package'" in text.stdout


def test_environment_drift_and_overrides_are_listed_and_signed(build: Build) -> None:
    result = build.rebuild("--json", "--env", "NOISE=0.25",
                           attestations=[build.attestation("zeta-prepare"),
                                         build.attestation("alpha-train")])
    assert result.code == 1
    outcomes = {o["step"]: o for o in json.loads(result.stdout)}
    train = outcomes["alpha-train"]
    assert {"field": "variables.NOISE", "recorded": "0", "current": "0.25"} in train["drift"]
    assert train["env_overrides"] == {"NOISE": "0.25"}
    predicate = payload_of(read_json(
        build.written / "alpha-train.rebuild.intoto.json"))["predicate"]
    assert predicate["envOverrides"] == {"NOISE": "0.25"}
    assert predicate["env"] == {"EXIT_CODE": "0", "NOISE": "0.25"}
    assert {"field": "variables.NOISE", "recorded": "0", "current": "0.25"} in (
        predicate["drift"])
    text = build.rebuild("--env", "NOISE=0.25", "--force",
                         attestations=[build.attestation("zeta-prepare"),
                                       build.attestation("alpha-train")])
    assert "environment drift: variables.NOISE: recorded '0', now '0.25'" in text.stdout
    assert "environment override: NOISE=0.25" in text.stdout


def test_a_rebuild_without_overrides_records_none(build: Build) -> None:
    assert build.rebuild().code == 0
    predicate = payload_of(read_json(
        build.written / "alpha-train.rebuild.intoto.json"))["predicate"]
    assert predicate["envOverrides"] == {}
    assert predicate["env"] == {"EXIT_CODE": "0", "NOISE": "0"}


def test_env_override_must_be_name_equals_value(build: Build) -> None:
    assert_error(build.rebuild("--env", "NOISE"), 2, "NAME=VALUE")


# ------------------------------------------------------------------ workspaces


def test_workspace_is_removed_by_default(build: Build, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    assert build.rebuild("--workspace", workspace).code == 0
    assert not workspace.exists()


def test_default_temporary_workspace_is_removed(build: Build, tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    completed = subprocess.run(
        [str(BIN / "model-verifier"), "rebuild", str(build.src / "attestations"),
         "--source", str(build.src), "--key", str(build.rebuilder.private),
         "--trust-key", str(build.builder.public), "--out", str(build.root / "rebuilds")],
        cwd=build.src, env={**os.environ, "TMPDIR": str(temporary)}, capture_output=True,
        text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert list(temporary.iterdir()) == []


def test_keep_workspace_keeps_one_per_step(build: Build, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    result = build.rebuild("--workspace", workspace, "--keep-workspace", "--json")
    assert result.code == 0
    outcomes = json.loads(result.stdout)
    assert [o["workspace"] for o in outcomes] == [str(workspace / s) for s in BUILD_ORDER]
    assert sha256_of(workspace / "alpha-train" / "weights.safetensors") == sha256_of(
        build.src / "weights.safetensors")
    assert (workspace / "mid-package" / "dist" / "model.safetensors").is_file()


def test_an_existing_workspace_is_exit_2_and_nothing_runs(build: Build, tmp_path: Path
                                                          ) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "keep-me.txt").write_text("mine\n", encoding="utf-8")
    assert_error(build.rebuild("--workspace", workspace), 2, str(workspace), "already exists")
    assert files_under(workspace) == ["keep-me.txt"]
    assert files_under(build.written) == []


def test_an_existing_rebuild_attestation_is_kept_unless_forced(build: Build) -> None:
    assert build.rebuild().code == 0
    before = tree_digests(build.root / "rebuilds")
    assert_error(build.rebuild(), 2, "zeta-prepare.rebuild.intoto.json", "--force")
    assert tree_digests(build.root / "rebuilds") == before
    assert build.rebuild("--force").code == 0


def test_force_never_replaces_another_signers_rebuild_attestation(build: Build) -> None:
    assert build.rebuild().code == 0  # the rebuilder's own attestations
    before = tree_digests(build.root / "rebuilds")
    other = make_keys(build.root / "keys", "other-rebuilder")
    # Its own key would write to rebuilds/other-rebuilder; naming itself `rebuilder` aims it
    # at the first rebuilder's folder.
    result = build.rebuild("--force", "--as", "rebuilder", key=other)
    assert_error(result, 2, "zeta-prepare.rebuild.intoto.json", "not signed by this "
                 "rebuilder's key", "--as")
    assert tree_digests(build.root / "rebuilds") == before
    # A file that is no bundle at all is no one's: never replaced either.
    target = build.written / "zeta-prepare.rebuild.intoto.json"
    target.write_text("notes\n")
    assert build.rebuild("--force").code == 2
    assert target.read_text() == "notes\n"


def test_two_rebuilders_sharing_one_out_never_collide(build: Build) -> None:
    other = make_keys(build.root / "keys", "rebuilder-b")
    assert build.rebuild().code == 0
    assert build.rebuild(key=other).code == 0
    assert build.rebuild("--as", "ci-runner-3", key=other).code == 0
    expected = sorted(f"{step}.rebuild.intoto.json" for step in BUILD_ORDER)
    assert files_under(build.written) == expected
    assert files_under(build.root / "rebuilds" / "rebuilder-b") == expected
    assert files_under(build.root / "rebuilds" / "ci-runner-3") == expected
    # Each folder holds the bundles of the key it is named for (checked with PAE by hand).
    for folder, keys in (("rebuilder", build.rebuilder), ("rebuilder-b", other)):
        for name in expected:
            bundle = read_json(build.root / "rebuilds" / folder / name)
            assert dsse_verifies(bundle, keys.public_pem), (folder, name)


@pytest.mark.parametrize("name", ["", "..", ".hidden", "-flag", "a/b", "a b", "x" * 65])
def test_a_rebuilder_name_that_is_no_plain_folder_name_is_refused(build: Build,
                                                                   name: str) -> None:
    assert_error(build.rebuild("--as", name), 2, "--as", "rebuilder name")
    assert not (build.root / "rebuilds").exists()


def test_two_attestations_of_one_step_are_exit_2(build: Build, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert record_step(build.src, "zeta-prepare", build.builder.private, ["raw.csv"],
                       ["data.csv"], PREPARE, out=str(again)).code == 0
    assert_error(build.rebuild(attestations=[build.src / "attestations", again]), 2,
                 "zeta-prepare")


# ------------------------------------------------------------------ refusing attestations


def crafted_step(build: Build, tmp_path: Path, **names: str) -> Path:
    """The train attestation with a material or product renamed, signed by the builder.

    Its command would write a marker file beside the workspace, so that a run would show.
    """
    statement = payload_of(read_json(build.attestation("alpha-train")))
    marker = tmp_path / "command-ran"
    statement["predicate"]["buildDefinition"]["externalParameters"]["argv"] = python_step(
        f"open({str(marker)!r}, 'w').write('ran')")
    if "material" in names:
        statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["name"] = (
            names["material"])
    if "product" in names:
        statement["subject"][0]["name"] = names["product"]
    if "step" in names:
        statement["predicate"]["buildDefinition"]["externalParameters"]["step"] = names["step"]
    path = tmp_path / "crafted" / "alpha-train.intoto.json"
    path.parent.mkdir(exist_ok=True)
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    path.write_text(json.dumps(sign_bundle(payload, INTOTO, build.builder.private)),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("names", [
    {"product": "../escaped.safetensors"},
    {"product": "dist/../../escaped.safetensors"},
    {"material": "../../outside.csv"},
    {"material": "/etc/hostname"},
    {"product": "/tmp/escaped.safetensors"},
    {"step": "../../escaped"},
    {"step": ".."},
])
def test_names_leaving_the_workspace_are_refused_before_anything_runs(
    build: Build, tmp_path: Path, names: dict[str, str]
) -> None:
    crafted = crafted_step(build, tmp_path, **names)
    workspace = tmp_path / "ws"
    before = tree_digests(tmp_path)
    result = build.rebuild("--workspace", workspace, "--sandbox", "none",
                           attestations=[crafted])
    reason = "is not a plain name" if "step" in names else "leaves the workspace"
    assert_error(result, 2, str(crafted), repr(next(iter(names.values()))), reason)
    assert not (tmp_path / "command-ran").exists()
    assert not workspace.exists()
    assert tree_digests(tmp_path) == before
    assert not any(p.name.startswith("escaped") for p in tmp_path.parent.iterdir())


def test_trust_key_runs_steps_signed_by_it(build: Build) -> None:
    result = build.rebuild("--trust-key", build.rebuilder.public,
                           "--trust-key", build.builder.public)
    assert result.code == 0, result.output


def test_trust_key_refuses_a_step_signed_by_another_key(build: Build, tmp_path: Path) -> None:
    crafted = crafted_step(build, tmp_path)  # signed by the builder
    result = build.rebuild("--sandbox", "none", attestations=[crafted],
                           trust=("--trust-key", build.rebuilder.public))
    assert_error(result, 2, str(crafted), "not signed by any trusted signer",
                 str(build.rebuilder.public), "nothing was run")
    assert not (tmp_path / "command-ran").exists()
    assert files_under(build.written) == []


def test_trust_key_refuses_a_step_whose_payload_was_altered(build: Build, tmp_path: Path
                                                            ) -> None:
    bundle = read_json(build.attestation("alpha-train"))
    statement = payload_of(bundle)
    statement["predicate"]["buildDefinition"]["externalParameters"]["argv"] = python_step(
        f"open({str(tmp_path / 'command-ran')!r}, 'w').write('ran')")
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(
        json.dumps(statement).encode()).decode()
    altered = tmp_path / "altered.intoto.json"
    altered.write_text(json.dumps(bundle), encoding="utf-8")
    result = build.rebuild("--sandbox", "none", attestations=[altered])
    assert_error(result, 2, str(altered), "not signed by any trusted signer")
    assert not (tmp_path / "command-ran").exists()


def test_help_says_nothing_runs_without_a_trusted_signer() -> None:
    result = run(["rebuild", "--help"])
    assert result.code == 0
    text = " ".join(result.stdout.split())
    for option in ("--trust-key", "--trust-identity", "--trust-issuer", "--policy",
                   "--allow-env", "--sandbox", "--network", "--device"):
        assert option in text
    assert "runs nothing unless each one is signed by a signer you trust" in text


def test_an_unsigned_or_untrusted_attestation_runs_nothing(build: Build, tmp_path: Path
                                                           ) -> None:
    crafted = crafted_step(build, tmp_path)
    bundle = read_json(crafted)
    bundle["dsseEnvelope"]["signatures"] = []
    unsigned = tmp_path / "unsigned.intoto.json"
    unsigned.write_text(json.dumps(bundle), encoding="utf-8")
    workspace = tmp_path / "ws"
    for trust, attestation in (((), crafted), ((), unsigned),
                               (("--trust-key", build.builder.public), unsigned)):
        result = build.rebuild("--workspace", workspace, "--sandbox", "none",
                               attestations=[attestation], trust=trust)
        line = assert_error(result, 2)
        assert ("whom to trust" in line) if not trust else (
            "not signed" in line or "no signatures" in line), line
        assert result.stdout == ""  # not even a plan
        assert not (tmp_path / "command-ran").exists()
        assert not workspace.exists()
        assert files_under(build.written) == []


# ------------------------------------------------------------------ the signed rebuild


def test_the_rebuild_attestation_is_signed_by_the_rebuilder_and_names_the_payload(
    build: Build,
) -> None:
    assert build.rebuild().code == 0
    for step in BUILD_ORDER:
        bundle = read_json(build.written / f"{step}.rebuild.intoto.json")
        assert bundle["dsseEnvelope"]["payloadType"] == INTOTO
        assert dsse_verifies(bundle, build.rebuilder.public_pem)
        assert not dsse_verifies(bundle, build.builder.public_pem)
        statement = payload_of(bundle)
        assert statement["predicateType"] == REBUILD_TYPE
        rebuilt = statement["predicate"]["rebuiltAttestation"]
        assert rebuilt["digest"]["sha256"] == hashlib.sha256(
            step_payload(build.attestation(step))).hexdigest()
        assert rebuilt["name"] == f"{step}.intoto.json"
        assert statement["predicate"]["step"] == step
        assert statement["predicate"]["reproduced"] is True
        recorded = {s["name"]: s["digest"] for s in payload_of(
            read_json(build.attestation(step)))["subject"]}
        assert {s["name"]: s["digest"] for s in statement["subject"]} == recorded
        finished = statement["predicate"]["runDetails"]["finishedOn"]
        assert finished >= statement["predicate"]["runDetails"]["startedOn"]


# ------------------------------------------------------------------ interruption


def slow_build(tmp_path: Path) -> tuple[Path, KeyPair, Path]:
    src = tmp_path / "src"
    src.mkdir()
    keys = make_keys(tmp_path / "keys", "builder")
    code = ("import os, pathlib, signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "pathlib.Path('started').write_text('1'); time.sleep(float(os.environ['SLEEP'])); "
            "pathlib.Path('out.txt').write_text('done')")
    assert record_step(src, "slow", keys.private, [], ["out.txt"], code,
                       extra=["--env", "SLEEP=0"]).code == 0
    (src / "started").unlink()  # so that only the rebuilt command makes it in the workspace
    return src, keys, src / "attestations" / "slow.intoto.json"


def start_rebuild(src: Path, keys: KeyPair, attestation: Path, tmp_path: Path,
                  sleep: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "model-verifier"), "rebuild", str(attestation), "--source", str(src),
         "--key", str(keys.private), "--trust-key", str(keys.public),
         "--out", str(tmp_path / "out"),
         "--workspace", str(tmp_path / "ws"), "--env", f"SLEEP={sleep}"],
        cwd=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # A shell that starts the test run in the background without job control leaves SIGINT
    # ignored, and an ignored signal stays ignored across exec: give the rebuild a normal one.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until_started(process: subprocess.Popen[str], marker: Path) -> None:
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the step command never started"
        time.sleep(0.05)


@pytest.mark.parametrize("target", ["process group", "rebuild process", "sigterm"])
def test_an_interrupted_rebuild_leaves_no_attestation_and_no_temporary_files(
    tmp_path: Path, target: str
) -> None:
    src, keys, attestation = slow_build(tmp_path)
    before = tree_digests(src)
    # Ctrl-C reaches the whole process group; `kill -INT` reaches the rebuild alone, which
    # then waits for the step command (here a short sleep) before it gives up.
    # SIGTERM, to the rebuild alone, is passed on to the step's group: no waiting for 600 s.
    sleep = "4" if target == "rebuild process" else "600"
    process = start_rebuild(src, keys, attestation, tmp_path, sleep)
    try:
        wait_until_started(process, tmp_path / "ws" / "slow" / "started")
        if target == "process group":
            os.killpg(process.pid, signal.SIGINT)
        elif target == "sigterm":
            process.send_signal(signal.SIGTERM)
        else:
            process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == (143 if target == "sigterm" else 130), stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert files_under(tmp_path / "out") == []
    assert not (tmp_path / "ws").exists()
    assert tree_digests(src) == before


def test_rebuild_errors_are_one_sentence(build: Build, tmp_path: Path) -> None:
    result = run(["rebuild", tmp_path / "nothing.intoto.json", "--key",
                  build.rebuilder.private, "--trust-key", build.builder.public], cwd=build.src)
    assert_error(result, 2, "nothing.intoto.json")
    result = run(["rebuild", build.src / "attestations", "--trust-key", build.builder.public],
                 cwd=build.src)
    assert_error(result, 2, "--key")
    assert_no_traceback(build.rebuild("--source", tmp_path / "missing"))
    assert_error(build.rebuild("--source", tmp_path / "missing"), 2, "missing")


def test_json_output_is_json_alone_while_the_step_prints(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    keys = make_keys(tmp_path / "keys", "builder")
    code = "import pathlib; print('training, epoch 1'); pathlib.Path('out.txt').write_text('x')"
    assert record_step(src, "chatty", keys.private, [], ["out.txt"], code).code == 0
    completed = subprocess.run(
        [str(BIN / "model-verifier"), "rebuild", "attestations", "--key", str(keys.private),
         "--trust-key", str(keys.public), "--out", str(tmp_path / "out"), "--json"],
        cwd=src, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    [outcome] = json.loads(completed.stdout)
    assert outcome["status"] == "reproduced"
    assert "training, epoch 1" in completed.stderr


def test_unusable_out_workspace_or_source_is_exit_2_before_anything_runs(
    build: Build, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n", encoding="utf-8")
    assert_error(build.rebuild(out=tmp_path / "a-file"), 2, "a-file", "not a directory")
    assert_error(build.rebuild("--workspace", tmp_path / "a-file" / "ws"), 2, "a-file")
    assert_error(build.rebuild("--source", tmp_path / "a-file", "--workspace", tmp_path / "ws"),
                 2, "a-file")
    assert not (tmp_path / "ws").exists()
    assert files_under(build.written) == []
