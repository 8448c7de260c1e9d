"""Hermetic steps: the real bubblewrap sandbox, strace tracing, workspaces from the recorded
commit, trust before anything runs, and the policies that require them.

Each test starts the real tools; where bubblewrap or strace cannot run here, the tests that
need them skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BIN,
    INTOTO,
    KeyPair,
    assert_error,
    dsse_verifies,
    make_keys,
    payload_of,
    python_step,
    read_json,
    record_step,
    run,
    run_executable,
    sign_bundle,
    write_policy,
)
from hypothesis import given
from hypothesis import strategies as st


def _bwrap_problem() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
                            "--proc", "/proc", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return f"bubblewrap cannot start here ({probe.stderr.strip()})"
    return None


BWRAP_PROBLEM = _bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=str(BWRAP_PROBLEM))
needs_strace = pytest.mark.skipif(shutil.which("strace") is None,
                                  reason="strace is not installed")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def statement_of(path: Path) -> dict[str, Any]:
    return payload_of(read_json(path))


def internal(path: Path) -> dict[str, Any]:
    return statement_of(path)["predicate"]["buildDefinition"]["internalParameters"]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, KeyPair]:
    return {name: make_keys(tmp_path / "keys", name) for name in ("builder", "rebuilder")}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    (path / "data.txt").write_text("declared\n", encoding="utf-8")
    return path


def rebuild(work: Path, keys: dict[str, KeyPair], *args: Any, out: Path | None = None,
            source: Path | None = None) -> Any:
    return run(["rebuild", work / "attestations", "--source", source or work,
                "--key", keys["rebuilder"].private, "--trust-key", keys["builder"].public,
                "--out", out or work.parent / "rebuilds", *args], cwd=work)


# ------------------------------------------------------------------ the sandbox


class _Server:
    """A TCP server on loopback that answers every connection with one line."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"weights from the network\n")

    def close(self) -> None:
        self.socket.close()


FETCH = ("import os, socket, pathlib; s = socket.create_connection(('127.0.0.1', "
         "int(os.environ['PORT'])), timeout=5); "
         "pathlib.Path('out.txt').write_bytes(s.recv(100))")


@needs_bwrap
def test_a_step_reaching_a_loopback_server_fails_in_the_sandbox_and_the_rebuild_says_why(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    server = _Server()
    try:
        # Recorded without a sandbox, the step reaches the server.
        recorded = record_step(work, "fetch", keys["builder"].private, [], ["out.txt"], FETCH,
                               extra=["--sandbox", "none", "--no-trace", "--env",
                                      f"PORT={server.port}"])
        assert recorded.code == 0, recorded.output
        assert (work / "out.txt").read_bytes() == b"weights from the network\n"
        sandbox = internal(work / "attestations" / "fetch.intoto.json")["environment"]["sandbox"]
        assert sandbox == {"kind": "none", "network": "host", "devices": []}
        # Rebuilt in bubblewrap without network: its own loopback has no server on it.
        result = rebuild(work, keys, "--sandbox", "bwrap", "--json")
        assert result.code == 1
        [outcome] = json.loads(result.stdout)
        assert outcome["status"] == "failed" and outcome["exit_code"] != 0
        assert "without network" in outcome["message"]
        assert "Connection refused" in outcome["message"] or "unreachable" in outcome["message"]
        assert "plan:" in result.stderr and "network none" in result.stderr
        written = tmp_path / "rebuilds" / "rebuilder" / "fetch.rebuild.intoto.json"
        assert not written.exists()
        # --network, for a step recorded with it, shares the host's network again.
        allowed = rebuild(work, keys, "--sandbox", "bwrap", "--network", "--json")
        assert allowed.code == 0, allowed.output
        predicate = statement_of(written)[
            "predicate"]
        assert predicate["environment"]["sandbox"] == {"kind": "bwrap", "network": "host",
                                                       "devices": []}
    finally:
        server.close()


@needs_bwrap
def test_a_step_recorded_offline_gets_no_network_even_with_network_flag(
    work: Path, keys: dict[str, KeyPair]
) -> None:
    server = _Server()
    try:
        code = "import pathlib; pathlib.Path('out.txt').write_text('offline')"
        assert record_step(work, "offline", keys["builder"].private, [], ["out.txt"], code,
                           extra=["--sandbox", "bwrap"]).code == 0
        (work / "fetch.py").write_text(FETCH, encoding="utf-8")
        entry = internal(work / "attestations" / "offline.intoto.json")["environment"]
        assert entry["sandbox"]["network"] == "none"
        result = rebuild(work, keys, "--sandbox", "bwrap", "--network", "--json")
        assert result.code == 0, result.output
        assert "network none" in result.stderr  # the plan: not given, as not recorded
    finally:
        server.close()


@needs_bwrap
def test_inside_the_sandbox_home_and_host_files_are_absent_and_system_is_read_only(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    home_secret = Path.home() / f".mv-test-secret-{os.getpid()}"
    host_tmp = tmp_path.parent / f"mv-host-tmp-{os.getpid()}"
    home_secret.write_text("secret\n", encoding="utf-8")
    host_tmp.write_text("elsewhere\n", encoding="utf-8")
    try:
        code = (
            "import json, os, pathlib, sys\n"
            "def can_write(p):\n"
            "    try:\n"
            "        open(p, 'w').close(); return True\n"
            "    except OSError:\n"
            "        return False\n"
            f"seen = {{'home': os.path.exists({str(home_secret)!r}), "
            f"'host_tmp': os.path.exists({str(host_tmp)!r}), "
            "'usr_writable': can_write('/usr/mv-probe'), "
            "'etc_writable': can_write('/etc/mv-probe'), "
            "'root_writable': can_write('/mv-probe'), "
            "'home_creatable': can_write(os.path.expanduser('~/.mv-probe')), "
            f"'tmp_writable': can_write('/tmp/mv-probe-{os.getpid()}'), "
            "'interpreter': os.path.exists(sys.executable)}\n"
            "pathlib.Path('seen.json').write_text(json.dumps(seen, sort_keys=True))\n"
        )
        result = record_step(work, "probe", keys["builder"].private, [], ["seen.json"],
                             code, extra=["--sandbox", "bwrap"])
        assert result.code == 0, result.output
        seen = json.loads((work / "seen.json").read_text(encoding="utf-8"))
        assert seen == {"home": False, "host_tmp": False, "usr_writable": False,
                        "etc_writable": False, "root_writable": False,
                        "home_creatable": False, "tmp_writable": True, "interpreter": True}
        assert not Path(f"/tmp/mv-probe-{os.getpid()}").exists()  # it was the sandbox's /tmp
        sandbox = internal(work / "attestations" / "probe.intoto.json")["environment"][
            "sandbox"]
        assert sandbox == {"kind": "bwrap", "network": "none", "devices": []}
    finally:
        home_secret.unlink()
        host_tmp.unlink()


@needs_bwrap
def test_device_nodes_are_passed_by_name_and_recorded(work: Path, keys: dict[str, KeyPair]
                                                      ) -> None:
    code = "import pathlib; pathlib.Path('out.txt').write_bytes(open('/dev/zero','rb').read(4))"
    result = record_step(work, "dev", keys["builder"].private, [], ["out.txt"], code,
                         extra=["--sandbox", "bwrap", "--device", "/dev/zero"])
    assert result.code == 0, result.output
    sandbox = internal(work / "attestations" / "dev.intoto.json")["environment"]["sandbox"]
    assert sandbox["devices"] == ["/dev/zero"]
    bad = record_step(work, "dev2", keys["builder"].private, [], ["out2.txt"], code,
                      extra=["--sandbox", "bwrap", "--device", "/dev/no-such-gpu"])
    assert_error(bad, 2, "--device /dev/no-such-gpu", "no such device")
    bad = record_step(work, "dev2", keys["builder"].private, [], ["out2.txt"], code,
                      extra=["--sandbox", "bwrap", "--device", str(work / "data.txt")])
    assert_error(bad, 2, "--device")
    assert not (work / "attestations" / "dev2.intoto.json").exists()


def test_a_sandbox_that_cannot_start_is_one_sentence_and_nothing_runs(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    bwrap = fake / "bwrap"
    bwrap.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\n"
                     "exit 1\n", encoding="utf-8")
    bwrap.chmod(0o755)
    marker = tmp_path / "ran"
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    args = ["record", "--step", "s", "--key", str(keys["builder"].private), "--product",
            "out.txt", "--sandbox", "bwrap", "--", *python_step(
                f"open({str(marker)!r}, 'w'); open('out.txt', 'w')")]
    result = run_executable(args, cwd=work, env=env)
    assert_error(result, 2, "sandbox cannot start", "Permission denied")
    assert not marker.exists() and not (work / "attestations").exists()
    # auto says so in one warning and runs unsandboxed, recorded as such for policies to see.
    result = run_executable([a if a != "bwrap" else "auto" for a in args], cwd=work, env=env)
    assert result.code == 0, result.output
    assert "warning: the bubblewrap sandbox cannot start" in result.stderr
    assert marker.exists()
    sandbox = internal(work / "attestations" / "s.intoto.json")["environment"]["sandbox"]
    assert sandbox == {"kind": "none", "network": "host", "devices": []}


def test_auto_without_bubblewrap_warns_and_records_no_sandbox(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for tool in ("sh", "true"):
        found = shutil.which(tool)
        assert found
        (bare / tool).symlink_to(found)
    code = "import pathlib; pathlib.Path('out.txt').write_text('x')"
    result = run_executable(["record", "--step", "s", "--key", keys["builder"].private,
                             "--product", "out.txt", "--", *python_step(code)],
                            cwd=work, env={"PATH": str(bare)})
    assert result.code == 0, result.output
    assert "warning: bubblewrap (bwrap) is not installed" in result.stderr
    sandbox = internal(work / "attestations" / "s.intoto.json")["environment"]["sandbox"]
    assert sandbox == {"kind": "none", "network": "host", "devices": []}
    assert "undeclaredInputs" not in internal(work / "attestations" / "s.intoto.json")


# ------------------------------------------------------------------ the workspace


LISTING = ("import os, pathlib; names = sorted(os.path.relpath(os.path.join(d, f)) "
           "for d, _, fs in os.walk('.') for f in fs); "
           "pathlib.Path('listing.txt').write_text('\\n'.join(names))")


@needs_git
def test_an_untracked_secret_in_the_source_tree_is_invisible_to_a_rebuilt_step(
    tmp_path: Path, keys: dict[str, KeyPair]
) -> None:
    repo = tmp_path / "repo"
    work = repo / "model"
    work.mkdir(parents=True)
    (work / "data.txt").write_text("declared\n", encoding="utf-8")
    (work / "notes.md").write_text("tracked, undeclared\n", encoding="utf-8")
    (repo / ".gitignore").write_text("model/attestations/\nmodel/listing.txt\n",
                                     encoding="utf-8")
    # git archive would drop this file; the workspace is the commit as committed.
    (repo / ".gitattributes").write_text("model/notes.md export-ignore\n", encoding="utf-8")
    (work / "run.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    (work / "run.sh").chmod(0o755)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "source")
    recorded_commit = git(repo, "rev-parse", "HEAD")
    assert record_step(work, "walk", keys["builder"].private, ["data.txt"], ["listing.txt"],
                       LISTING).code == 0
    git_env = internal(work / "attestations" / "walk.intoto.json")["environment"]["git"]
    assert git_env == {"commit": recorded_commit, "dirty": False, "path": "model"}
    listing = (work / "listing.txt").read_text(encoding="utf-8")
    # Afterwards: an untracked secret, an ignored key, an edit and a newer commit.
    (work / "secret.env").write_text("TOKEN=hunter2\n", encoding="utf-8")
    (work / "attestations" / "stray.key").write_text("private\n", encoding="utf-8")
    (work / "notes.md").write_text("edited and committed later\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "later")
    result = run(["rebuild", work / "attestations", "--source", work, "--key",
                  keys["rebuilder"].private, "--trust-key", keys["builder"].public,
                  "--out", tmp_path / "rebuilds", "--keep-workspace", "--workspace",
                  tmp_path / "ws", "--json"], cwd=work)
    assert result.code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "reproduced"
    rebuilt = tmp_path / "ws" / "walk"
    assert (rebuilt / "listing.txt").read_text(encoding="utf-8") == listing
    assert "secret.env" not in listing and not (rebuilt / "secret.env").exists()
    assert (rebuilt / "notes.md").read_text(encoding="utf-8") == "tracked, undeclared\n"
    assert os.access(rebuilt / "run.sh", os.X_OK)
    written = tmp_path / "rebuilds" / "rebuilder" / "walk.rebuild.intoto.json"
    source = statement_of(written)["predicate"][
        "source"]
    assert source["workspace"] == {"method": "git-commit", "commit": recorded_commit}
    assert source["recorded"] == {"commit": recorded_commit, "dirty": False}
    assert source["rebuilder"]["commit"] != recorded_commit
    assert source["sameRevision"] is False
    assert any("recorded at" in note for note in outcome["notes"])


@needs_git
def test_a_recorded_commit_the_source_does_not_contain_is_exit_2_and_nothing_runs(
    tmp_path: Path, keys: dict[str, KeyPair]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "data.txt").write_text("declared\n", encoding="utf-8")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "source")
    marker = tmp_path / "ran"
    # Unsandboxed, so that a run would show outside the workspace.
    code = f"open({str(marker)!r}, 'w'); open('out.txt', 'w').write('x')"
    assert record_step(repo, "s", keys["builder"].private, ["data.txt"], ["out.txt"],
                       code, extra=["--sandbox", "none"]).code == 0
    marker.unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.txt").write_text("declared\n", encoding="utf-8")
    git(other, "init", "-q")
    git(other, "add", ".")
    git(other, "commit", "-q", "-m", "unrelated")
    for source, said in ((other, "is not in the repository"),
                         (tmp_path / "plain", "is not a git checkout")):
        source.mkdir(exist_ok=True)
        result = run(["rebuild", repo / "attestations", "--source", source, "--key",
                      keys["rebuilder"].private, "--trust-key", keys["builder"].public,
                      "--sandbox", "none", "--out", tmp_path / "rebuilds"], cwd=repo)
        assert_error(result, 2, said)
        assert result.stdout == "" and not marker.exists()
        assert not (tmp_path / "rebuilds").exists()


def test_outside_git_only_declared_materials_reach_the_workspace(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    assert record_step(work, "walk", keys["builder"].private, ["data.txt"], ["listing.txt"],
                       LISTING).code == 0
    (work / "undeclared.txt").write_text("left out\n", encoding="utf-8")
    result = rebuild(work, keys, "--keep-workspace", "--workspace", tmp_path / "ws", "--json")
    [outcome] = json.loads(result.stdout)
    assert sorted(p.name for p in (tmp_path / "ws" / "walk").iterdir()) == [
        "data.txt", "listing.txt"]
    assert any("declared materials alone" in note for note in outcome["notes"])


# ------------------------------------------------------------------ what a rebuild refuses


def crafted(work: Path, keys: dict[str, KeyPair], marker: Path, *, argv: list[str] | None = None,
            env: dict[str, str] | None = None, git_env: Any = "keep") -> Path:
    """A step attestation changed and re-signed by the builder (trusted, yet hostile)."""
    path = work / "attestations" / "s.intoto.json"
    statement = statement_of(path)
    definition = statement["predicate"]["buildDefinition"]
    definition["externalParameters"]["argv"] = argv or python_step(
        f"open({str(marker)!r}, 'w')")
    if env is not None:
        definition["externalParameters"]["env"] = env
    if git_env != "keep":
        definition["internalParameters"]["environment"]["git"] = git_env
    payload = json.dumps(statement, sort_keys=True).encode()
    target = work / "crafted" / "s.intoto.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(sign_bundle(payload, INTOTO, keys["builder"].private)),
                      encoding="utf-8")
    return target


@pytest.mark.parametrize(("change", "said"), [
    ({"env": {"LD_PRELOAD": "libevil.so"}}, "--allow-env LD_PRELOAD"),
    ({"env": {"PYTHONPATH": "."}}, "--allow-env PYTHONPATH"),
    ({"env": {"PATH": "/usr/bin"}}, "--allow-env PATH"),
    ({"env": {"BASH_ENV": "x.sh"}}, "--allow-env BASH_ENV"),
    ({"env": {"PYTHONSTARTUP": "x.py"}}, "--allow-env PYTHONSTARTUP"),
    ({"env": {"DATA": "../../../etc/shadow"}}, "leaves the workspace"),
    ({"argv": ["python3", "train.py", "--data=../../secrets"]}, "leaves the workspace"),
    ({"argv": ["python3", "/root/.ssh/id_rsa"]}, "leaves the workspace"),
    ({"git_env": {"commit": "--output=/tmp/x", "dirty": False}}, "not a commit id"),
    ({"git_env": {"commit": "a" * 40, "dirty": False, "path": "../.."}},
     "leaves the repository"),
])
def test_an_attestation_escaping_the_workspace_or_changing_what_runs_is_refused(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    assert record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"],
                       "open('out.txt', 'w').write('x')").code == 0
    marker = tmp_path / "ran"
    attestation = crafted(work, keys, marker, **change)
    # Unsandboxed, so that a run would show: the marker lies outside the workspace.
    result = run(["rebuild", attestation, "--source", work, "--key",
                  keys["rebuilder"].private, "--trust-key", keys["builder"].public,
                  "--sandbox", "none", "--workspace", tmp_path / "ws",
                  "--out", tmp_path / "rebuilds"], cwd=work)
    assert_error(result, 2, str(attestation), said)
    assert result.stdout == "" and not marker.exists()
    assert not (tmp_path / "ws").exists() and not (tmp_path / "rebuilds").exists()


def test_allow_env_lets_a_named_variable_through_and_the_plan_shows_it(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    code = "import os; open('out.txt', 'w').write(os.environ['PYTHONPATH'])"
    assert record_step(work, "s", keys["builder"].private, [], ["out.txt"], code,
                       extra=["--env", "PYTHONPATH=lib"]).code == 0
    assert_error(rebuild(work, keys), 2, "--allow-env PYTHONPATH")
    result = rebuild(work, keys, "--allow-env", "PYTHONPATH")
    assert result.code == 0, result.output
    plan = result.stdout.split("REPRODUCED")[0]
    assert "plan: 1 step(s)" in plan and "sets:    PYTHONPATH=lib" in plan
    assert "command: " + sys.executable in plan


def test_the_plan_is_shown_before_the_first_step_runs(work: Path, keys: dict[str, KeyPair]
                                                      ) -> None:
    code = "print('STEP OUTPUT'); open('out.txt', 'w').write('x')"
    assert record_step(work, "s", keys["builder"].private, [], ["out.txt"], code).code == 0
    completed = subprocess.run(
        [str(BIN / "model-verifier"), "rebuild", "attestations", "--key",
         str(keys["rebuilder"].private), "--trust-key", str(keys["builder"].public),
         "--out", str(work.parent / "rebuilds")], cwd=work, capture_output=True, text=True,
        check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.index("plan:") < completed.stdout.index("STEP OUTPUT")


def test_policy_signers_are_trusted_for_their_own_steps_only(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    assert record_step(work, "s", keys["builder"].private, [], ["out.txt"],
                       "open('out.txt', 'w').write('x')").code == 0
    policy = write_policy(tmp_path / "policy.yaml", {
        "version": 1, "signers": {"builder": {"key": str(keys["builder"].public)},
                                  "other": {"key": str(keys["rebuilder"].public)}},
        "steps": [{"name": "s", "signed_by": ["builder"]}]})
    base = ["rebuild", work / "attestations", "--source", work, "--key",
            keys["rebuilder"].private, "--out", tmp_path / "rebuilds"]
    assert run([*base, "--policy", policy], cwd=work).code == 0
    wrong = write_policy(tmp_path / "wrong.yaml", {
        "version": 1, "signers": {"builder": {"key": str(keys["builder"].public)},
                                  "other": {"key": str(keys["rebuilder"].public)}},
        "steps": [{"name": "s", "signed_by": ["other"]}]})
    assert_error(run([*base, "--policy", wrong, "--force"], cwd=work), 2, "not signed")
    assert_error(run([*base, "--trust-identity", "x", "--force"], cwd=work), 2,
                 "--trust-issuer")


# ------------------------------------------------------------------ undeclared inputs


@needs_strace
def test_an_undeclared_input_is_listed_signed_and_refused_when_strict(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    (work / "extra.txt").write_text("undeclared\n", encoding="utf-8")
    (work / "lib").mkdir()
    (work / "lib" / "helper.py").write_text("VALUE = 3\n", encoding="utf-8")
    code = ("import sys, numpy; sys.path.insert(0, 'lib'); import helper; "
            "data = open('data.txt').read() + open('extra.txt').read(); "
            "open('out.txt', 'w').write(data + str(helper.VALUE)); "
            "open('scratch.txt', 'w').write('x'); open('scratch.txt').read(); "
            # A file left in the checkout is the recorder's, read-only to the next step.
            "import os; os.remove('scratch.txt')")
    result = record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"], code)
    assert result.code == 0, result.output
    assert "warning: step 's' read 2 file(s) that are not declared materials" in result.stderr
    bundle = read_json(work / "attestations" / "s.intoto.json")
    assert dsse_verifies(bundle, keys["builder"].public_pem)
    listed = payload_of(bundle)["predicate"]["buildDefinition"]["internalParameters"][
        "undeclaredInputs"]
    # Not the declared data, not what the step wrote itself, not numpy or the interpreter.
    assert listed == ["extra.txt", "lib/helper.py"]
    strict = record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"], code,
                         out="strict", extra=["--strict"])
    assert_error(strict, 2, "--strict", "extra.txt", "lib/helper.py")
    assert not (work / "strict").exists()
    declared = record_step(work, "s", keys["builder"].private,
                           ["data.txt", "extra.txt", "lib"], ["out.txt"], code, out="clean",
                           extra=["--strict"])
    assert declared.code == 0, declared.output
    assert internal(work / "clean" / "s.intoto.json")["undeclaredInputs"] == []


# Three ways to read an undeclared file that an open-only trace missed; each writes what it
# read into the product.
HIDDEN_READS = {
    "rdwr-create": "import os; fd = os.open('secret.txt', os.O_RDWR | os.O_CREAT); "
                   "data = os.read(fd, 100).decode()",
    "hard-link": "import os; os.link('secret.txt', 'h.txt'); data = open('h.txt').read(); "
                 "os.unlink('h.txt')",
    "rename-back": "import os; os.rename('secret.txt', 'r.txt'); data = open('r.txt').read(); "
                   "os.rename('r.txt', 'secret.txt')",
}


@needs_strace
@pytest.mark.parametrize("attack", sorted(HIDDEN_READS))
def test_an_undeclared_file_read_through_another_name_or_rdwr_is_listed_and_strict_refuses(
    work: Path, keys: dict[str, KeyPair], attack: str
) -> None:
    # Unsandboxed, so that the trace alone must see the read: in record's sandbox the checkout
    # beside the products is read-only, and the link or rename fails before any read.
    (work / "secret.txt").write_text("undeclared\n", encoding="utf-8")
    code = HIDDEN_READS[attack] + "; open('out.txt', 'w').write(data)"
    strict = record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"], code,
                         out="strict", extra=["--strict", "--sandbox", "none"])
    assert_error(strict, 2, "--strict", "secret.txt")
    assert (work / "out.txt").read_text(encoding="utf-8") == "undeclared\n"  # it did read it
    result = record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"], code,
                         extra=["--sandbox", "none"])
    assert result.code == 0, result.output
    bundle = read_json(work / "attestations" / "s.intoto.json")
    assert dsse_verifies(bundle, keys["builder"].public_pem)
    assert payload_of(bundle)["predicate"]["buildDefinition"]["internalParameters"][
        "undeclaredInputs"] == ["secret.txt"]


@needs_strace
def test_a_hard_link_to_a_file_with_a_long_path_outside_is_listed_by_that_path(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    """The read through the link is traced back to the file linked, by its whole absolute
    path however long (strace cuts strings at 32 bytes, but not path arguments)."""
    outside = tmp_path / ("a-cache-directory-whose-name-is-long" * 2) / "dataset.bin"
    outside.parent.mkdir()
    outside.write_text("downloaded earlier\n", encoding="utf-8")
    code = (f"import os; os.link({str(outside)!r}, 'h.txt'); data = open('h.txt').read(); "
            "os.unlink('h.txt'); open('out.txt', 'w').write(data)")
    result = record_step(work, "s", keys["builder"].private, [], ["out.txt"], code,
                         extra=["--sandbox", "none"])
    assert result.code == 0, result.output
    assert internal(work / "attestations" / "s.intoto.json")["undeclaredInputs"] == [
        str(outside)]


@needs_strace
def test_a_step_renaming_and_reopening_its_own_outputs_reads_no_undeclared_file(
    work: Path, keys: dict[str, KeyPair]
) -> None:
    """What honest steps do: write a temporary file and rename it over the product, create a
    database O_RDWR|O_CREAT and read it back, link a file they wrote."""
    code = ("import os; open('tmp.part', 'w').write('x'); os.rename('tmp.part', 'out.txt'); "
            "fd = os.open('db.bin', os.O_RDWR | os.O_CREAT); os.write(fd, b'1'); "
            "os.lseek(fd, 0, 0); os.read(fd, 1); os.close(fd); "
            "os.link('out.txt', 'copy.txt'); open('copy.txt').read(); "
            "open('data.txt').read()")
    result = record_step(work, "s", keys["builder"].private, ["data.txt"],
                         ["out.txt", "db.bin"], code, extra=["--strict"])
    assert result.code == 0, result.output
    assert internal(work / "attestations" / "s.intoto.json")["undeclaredInputs"] == []


@needs_strace
def test_a_file_outside_the_workspace_is_listed_by_its_absolute_path(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    outside = tmp_path / "cache" / "dataset.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"downloaded earlier")
    code = f"open('out.txt', 'wb').write(open({str(outside)!r}, 'rb').read())"
    result = record_step(work, "s", keys["builder"].private, [], ["out.txt"], code,
                         extra=["--sandbox", "none"])
    assert result.code == 0, result.output
    assert internal(work / "attestations" / "s.intoto.json")["undeclaredInputs"] == [
        str(outside)]


def test_without_tracing_a_file_named_in_argv_is_a_warning(
    work: Path, keys: dict[str, KeyPair]
) -> None:
    (work / "train.py").write_text("open('out.txt', 'w').write('x')\n", encoding="utf-8")
    result = run(["record", "--step", "s", "--key", keys["builder"].private, "--product",
                  "out.txt", "--no-trace", "--", sys.executable, "train.py"], cwd=work)
    assert result.code == 0, result.output
    assert "warning: the command names train.py, which is not a declared material" in (
        result.stderr)
    assert "undeclaredInputs" not in internal(work / "attestations" / "s.intoto.json")
    strict = run(["record", "--step", "t", "--key", keys["builder"].private, "--product",
                  "out.txt", "--no-trace", "--strict", "--", sys.executable, "train.py"],
                 cwd=work)
    assert_error(strict, 2, "--strict needs tracing")


def test_a_product_that_existed_and_was_not_written_is_refused(
    work: Path, keys: dict[str, KeyPair]
) -> None:
    (work / "model.bin").write_bytes(b"stale, from last week")
    (work / "dist").mkdir()
    (work / "dist" / "old.bin").write_bytes(b"stale")
    # It writes elsewhere (a scratch file: the checkout beside its product is read-only to it).
    code = "import tempfile; tempfile.TemporaryFile().write(b'new')"
    for product in ("model.bin", "dist"):
        result = record_step(work, "s", keys["builder"].private, [], [product], code)
        assert_error(result, 2, product, "existed before the step", "did not write it")
        assert not (work / "attestations").exists()
    rewrite = "open('model.bin', 'wb').write(b'stale, from last week')"  # same bytes, written
    assert record_step(work, "s", keys["builder"].private, [], ["model.bin"],
                       rewrite).code == 0
    existing = record_step(work, "e", keys["builder"].private, [], ["dist"], "pass",
                           extra=["--attest-existing"])
    assert existing.code == 0, existing.output
    assert internal(work / "attestations" / "e.intoto.json")["existingProducts"] is True


# ------------------------------------------------------------------ policies


def _record_pair(work: Path, keys: dict[str, KeyPair], sandbox: str) -> None:
    code = "open('out.txt', 'w').write(open('data.txt').read())"
    extra = ["--sandbox", sandbox, "--force"] + ([] if shutil.which("strace") else ["--no-trace"])
    assert record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"], code,
                       extra=extra).code == 0


def _policy(tmp_path: Path, keys: dict[str, KeyPair], step: dict[str, Any],
            rebuild_rule: dict[str, Any] | None = None) -> Path:
    data: dict[str, Any] = {
        "version": 1,
        "signers": {"builder": {"key": str(keys["builder"].public)},
                    "rebuilder": {"key": str(keys["rebuilder"].public)}},
        "sources": [{"pattern": "*.txt", "unpinned": True}],
        "steps": [{"name": "s", "signed_by": ["builder"], **step}],
    }
    if rebuild_rule is not None:
        data["rebuild"] = {"quorum": 1, "rebuilders": ["rebuilder"], "steps": ["s"],
                           **rebuild_rule}
    return write_policy(tmp_path / "policy.yaml", data)


def verify(work: Path, policy: Path, *dirs: Path) -> Any:
    attestations: list[Any] = []
    for directory in (work / "attestations", *dirs):
        attestations += ["--attestations", directory]
    return run([work / "out.txt", "--policy", policy, *attestations, "--json"], cwd=work,
               program="verify-model")


@needs_bwrap
def test_hermetic_policy_fails_an_unsandboxed_record_and_passes_a_sandboxed_one(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    policy = _policy(tmp_path, keys, {"hermetic": True})
    _record_pair(work, keys, "none")
    result = verify(work, policy)
    assert result.code == 1
    problems = [p["message"] for p in json.loads(result.stdout)["problems"]]
    assert any("ran without a sandbox" in p and "hermetic" in p for p in problems), problems
    audit = run(["audit", work / "attestations", "--policy", policy, "--format", "json"],
                cwd=work)
    findings = json.loads(audit.stdout)["findings"]
    assert any(f["kind"] == "hermetic" and f["severity"] == "error" for f in findings)
    _record_pair(work, keys, "bwrap")
    assert verify(work, policy).code == 0


@needs_bwrap
def test_require_sandbox_counts_only_sandboxed_offline_rebuilds(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    _record_pair(work, keys, "bwrap")
    policy = _policy(tmp_path, keys, {}, {"require_sandbox": True})
    loose = _policy(tmp_path / "..", keys, {}, {})
    unsandboxed = tmp_path / "rb-none"
    assert rebuild(work, keys, "--sandbox", "none", out=unsandboxed).code == 0
    assert verify(work, loose, unsandboxed).code == 0  # without the rule it counts
    result = verify(work, policy, unsandboxed)
    assert result.code == 1
    [quorum] = json.loads(result.stdout)["rebuilds"]
    assert quorum["matched"] == []
    assert any("without a sandbox" in reason for reason in quorum["ignored"])
    sandboxed = tmp_path / "rb-bwrap"
    assert rebuild(work, keys, "--sandbox", "bwrap", out=sandboxed).code == 0
    assert verify(work, policy, sandboxed).code == 0


@needs_strace
def test_undeclared_inputs_forbid_fails_listed_and_untraced_steps(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    policy = _policy(tmp_path, keys, {"undeclared_inputs": "forbid"})
    (work / "extra.txt").write_text("undeclared\n", encoding="utf-8")
    sneaky = "open('out.txt', 'w').write(open('data.txt').read() + open('extra.txt').read())"
    assert record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"],
                       sneaky).code == 0
    allowed = _policy(tmp_path / "..", keys, {})
    lenient = verify(work, allowed)
    assert lenient.code == 0
    assert any("undeclared input" in note and "extra.txt" in note
               for note in json.loads(lenient.stdout)["notes"])
    strict = verify(work, policy)
    assert strict.code == 1
    assert "extra.txt" in strict.stdout and "forbids" in strict.stdout
    assert record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"],
                       "open('out.txt', 'w').write(open('data.txt').read())",
                       extra=["--force", "--no-trace"]).code == 0
    untraced = verify(work, policy)
    assert untraced.code == 1 and "not traced" in untraced.stdout
    assert record_step(work, "s", keys["builder"].private, ["data.txt"], ["out.txt"],
                       "open('out.txt', 'w').write(open('data.txt').read())",
                       extra=["--force"]).code == 0
    assert verify(work, policy).code == 0


# ------------------------------------------------------------------ the judgements, pure

SANDBOXES = st.one_of(
    st.none(), st.text(max_size=3), st.integers(),
    st.fixed_dictionaries({}, optional={
        "kind": st.sampled_from(["bwrap", "none", "docker", "", None, 1]),
        "network": st.sampled_from(["none", "host", "", None, True]),
        "devices": st.lists(st.sampled_from(["/dev/nvidia0", "/dev/zero"]), max_size=2)}))


@given(SANDBOXES)
def test_isolation_holds_exactly_for_bwrap_without_network(sandbox: Any) -> None:
    from verifier.formats.statement import Statement, StepRecord
    from verifier.judgement.hermetic import rebuild_isolation_problem, step_isolation_problem
    from verifier.judgement.quorum import RebuildClaim
    from verifier.judgement.trust import Attribution

    environment = {"sandbox": sandbox}
    statement = Statement("x.json", ({"name": "a", "digest": {"sha256": "0" * 64}},),
                          "t", {"environment": environment}, "0" * 64)
    claim = RebuildClaim(statement, Attribution((), ()), "s", "0" * 64, (), ())
    record = StepRecord(statement, "s", ("true",), ".", {}, environment, ())
    isolated = (isinstance(sandbox, dict) and sandbox.get("kind") == "bwrap"
                and sandbox.get("network") == "none")
    assert (rebuild_isolation_problem(claim) is None) == isolated
    assert (step_isolation_problem(record) is None) == isolated


@given(st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=5), max_size=4)),
       st.sampled_from(["allow", "forbid"]), st.booleans())
def test_step_findings_error_exactly_when_the_rule_is_broken(
    listed: list[str] | None, undeclared: str, hermetic: bool
) -> None:
    from verifier.formats.statement import Statement, StepRecord
    from verifier.judgement.hermetic import step_findings
    from verifier.judgement.policy import StepRule

    internal: dict[str, Any] = {"environment": {}}
    if listed is not None:
        internal["undeclaredInputs"] = listed
    predicate = {"buildDefinition": {"internalParameters": internal}}
    statement = Statement("x.json", ({"name": "a", "digest": {"sha256": "0" * 64}},),
                          "t", predicate, "0" * 64)
    record = StepRecord(statement, "s", ("true",), ".", {}, {}, ())
    rule = StepRule("s", ("b",), (), hermetic=hermetic, undeclared_inputs=undeclared)
    findings = step_findings(rule, record)
    errors = [f for f in findings if f[0] == "error"]
    expected = int(hermetic) + int(undeclared == "forbid" and (listed is None or bool(listed)))
    assert len(errors) == expected
    warnings = [f for f in findings if f[0] == "warning"]
    assert len(warnings) == int(undeclared == "allow" and bool(listed))
    unruled = step_findings(None, record)
    assert [f[0] for f in unruled] == (["warning"] if listed else [])


# ------------------------------------------------------------------ signals


def _slow_record(work: Path, keys: dict[str, KeyPair], tmp_path: Path) -> subprocess.Popen[str]:
    code = ("import pathlib, time; pathlib.Path('started').write_text('1'); time.sleep(600); "
            "pathlib.Path('out.txt').write_text('done')")
    return subprocess.Popen(
        [str(BIN / "model-verifier"), "record", "--step", "slow", "--key",
         str(keys["builder"].private), "--product", "out.txt", "--", *python_step(code)],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def test_sigterm_to_record_reaches_the_step_and_leaves_no_attestation(
    work: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    process = _slow_record(work, keys, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (work / "started").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)  # to model-verifier alone, not its group
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert time.monotonic() - started < 30  # the 600 s step was ended, not waited for
    assert "interrupted; nothing was written" in stderr and "Traceback" not in stderr
    assert not (work / "attestations").exists() and not (work / "out.txt").exists()


def test_strace_follows_children_and_hex_names(tmp_path: Path) -> None:
    """The parser, on a real strace log of a process tree opening an odd file name."""
    from verifier.steps.trace import parse_logs, traced_argv

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    odd = tmp_path / "we\u0131rd \"name\"\n>.txt"
    odd.write_text("x", encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    child = f"open({str(odd)!r}).read(); open({str(tmp_path / 'made')!r}, 'w').write('1')"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    subprocess.run(traced_argv(strace, python_step(code), logs), check=True)
    accesses = parse_logs(logs)
    assert str(odd) in accesses.read
    assert str(tmp_path / "made") in accesses.written
    assert str(tmp_path / "made") not in accesses.read


@needs_bwrap
def test_the_signing_key_in_the_workspace_reads_empty_inside_the_sandbox(
    tmp_path: Path
) -> None:
    work = tmp_path / "work"
    keys = make_keys(work / "keys", "builder")  # the demo's layout: keys beside the code
    code = "open('out.txt', 'w').write(repr(open('keys/builder.key').read()))"
    result = record_step(work, "s", keys.private, [], ["out.txt"], code,
                         extra=["--sandbox", "bwrap"])
    assert result.code == 0, result.output
    assert (work / "out.txt").read_text(encoding="utf-8") == "''"
    assert "PRIVATE KEY" in keys.private.read_text(encoding="utf-8")  # untouched outside


SEGMENTS = st.lists(st.sampled_from(["..", ".", "a", "b c", "data", "x.csv"]), min_size=1,
                    max_size=8)


@given(SEGMENTS)
def test_a_relative_path_escapes_exactly_when_it_climbs_above_the_workspace(
    segments: list[str]
) -> None:
    from verifier.steps.plan import _escapes

    depth, climbs = 0, False
    for segment in segments:
        if segment == "..":
            depth -= 1
            climbs = climbs or depth < 0
        elif segment != ".":
            depth += 1
    text = "/".join(segments)
    assert _escapes(text) == climbs
    assert _escapes(f"--input={text}") == climbs
    # Absolute, outside the system dirs: a path with a space may be prose, but `..` in an
    # absolute path always climbs out of where it seems to be.
    assert _escapes("/" + text) == (" " not in text or ".." in segments)


@given(st.lists(st.text(max_size=80), max_size=20))
def test_the_trace_parser_takes_any_log_without_failing(lines: list[str]) -> None:
    import tempfile

    from verifier.steps.trace import parse_logs

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "trace.1").write_text(
            "\n".join([*lines, '1.5 openat(AT_FDCWD, "x", O_RDONLY) = 3<\\x2f\\x65>']),
            encoding="utf-8", errors="surrogateescape")
        accesses = parse_logs(Path(directory))
    assert "/e" in accesses.read | accesses.written
