"""The sandbox boundary against a hostile step, run as CI runs it: as root.

Each test is an attack a step would make, recorded (the recorder's own checkout, its keys) or
rebuilt (a trusted signer's step on the rebuilder's machine): take capabilities, undo the mounts
that hide secrets, make read-only mounts writable, plant code in the interpreter, reach the
rebuilder's home through the program's path, rewrite .git or the trust anchor. Each checks the
host afterwards, not what the step says of itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    KeyPair,
    assert_error,
    assert_no_traceback,
    make_keys,
    payload_of,
    read_json,
    run,
)
from test_rebuild_hostile import Hostile, bwrap_works, git

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot start here")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the attack needs root (as CI runs)")

# Every escape a root step has, each reported as a line of its product (never an exception).
ESCAPE = r'''
import glob, os, subprocess, sys
lines = []
status = open("/proc/self/status").read().splitlines()
lines += [line for line in status if line.startswith(("CapEff", "Uid"))]
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode
    except OSError as error:
        return str(error)
for hidden in sys.argv[1:] + ["/etc/shadow", "/etc/ssh"]:
    lines.append(f"umount {hidden}: {sh('umount', '-l', hidden)}")
    for name in [hidden] + glob.glob(hidden + "/*"):
        try:
            lines.append("READ " + open(name, errors="replace").read()[:400])
        except OSError:
            pass
site = glob.glob(sys.prefix + "/lib/python3*/site-packages")[0]
for mount in (sys.prefix, site, "/usr", "/etc"):
    lines.append(f"remount {mount}: {sh('mount', '-o', 'remount,bind,rw', mount)}"
                 f" {sh('mount', '-o', 'remount,rw', mount)}")
try:
    open(site + "/sitecustomize.py", "w").write("print('PLANTED')\n")
    lines.append("PLANTED in the venv")
except OSError as error:
    lines.append(f"venv: {error}")
for system in ("/usr", "/etc"):
    try:
        open(system + "/mv-sandbox-probe", "w").close()
        os.unlink(system + "/mv-sandbox-probe")
        lines.append(f"WROTE {system}")
    except OSError:
        pass
open("model.bin", "w").write("\n".join(lines) + "\n")
'''


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv of the step's own (never the one running the tests, which an escape would
    change): its python is what the step runs."""
    root = tmp_path_factory.mktemp("step-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    return root


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def assert_contained(report: str, venv: Path) -> None:
    assert "CapEff:\t0000000000000000" in report, report
    assert "Uid:\t0\t" not in report, report
    assert not (site_packages(venv) / "sitecustomize.py").exists(), report
    assert "WROTE" not in report and "PLANTED" not in report, report
    assert "umount" in report and ": 0" not in report.replace("remount", ""), report
    assert not any(line.startswith("remount") and " 0" in line for line in report.splitlines())


# ------------------------------------------------------------------ item 1: record


@as_root
def test_a_recorded_step_run_as_root_can_neither_unmount_the_key_nor_remount(
        tmp_path: Path, venv: Path) -> None:
    work = tmp_path / "work"
    keys = make_keys(work / "keys", "builder")
    secret = keys.private.read_text(encoding="utf-8")
    (work / "escape.py").write_text(ESCAPE, encoding="utf-8")
    result = run(["record", "--step", "train", "--key", "keys/builder.key", "--sandbox", "bwrap",
                  "--no-trace", "--product", "model.bin", "--out", "att", "--",
                  str(venv / "bin" / "python"), "escape.py", "keys/builder.key"], cwd=work)
    assert result.code == 0, result.output
    report = (work / "model.bin").read_text(encoding="utf-8")
    assert_contained(report, venv)
    assert secret.splitlines()[1] not in report
    assert "READ \n" in report or "READ " not in report.split("umount /etc/shadow")[0]
    shadow = Path("/etc/shadow")
    if shadow.is_file() and shadow.stat().st_size:
        assert shadow.read_text(errors="replace")[:60] not in report


# ------------------------------------------------------------------ item 1: rebuild


@as_root
def test_a_rebuilt_step_run_as_root_leaves_the_hiding_mounts_and_the_venv_alone(
        tmp_path: Path, venv: Path) -> None:
    hostile = Hostile(tmp_path)
    commit = hostile.commit({"proj/build.py": ESCAPE})
    hostile.attest("train", commit, argv=[str(venv / "bin" / "python"), "build.py"])
    result = hostile.rebuild("--sandbox", "bwrap", "--keep-workspace", "--workspace",
                             tmp_path / "ws")
    assert result.code in (0, 1), result.output
    report = (tmp_path / "ws" / "train" / "model.bin").read_text(encoding="utf-8")
    assert_contained(report, venv)
    shadow = Path("/etc/shadow")
    if shadow.is_file() and shadow.stat().st_size:
        assert shadow.read_text(errors="replace")[:60] not in report
    for key in Path("/etc/ssh").glob("ssh_host_*_key"):
        assert key.read_text(errors="replace").splitlines()[1] not in report


# ------------------------------------------------------------------ item 2: the rebuilder's home


@pytest.mark.parametrize("where", [".cargo/bin", "bin"])
def test_a_program_in_the_rebuilders_home_mounts_none_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    home = tmp_path / "home"
    (home / ".cargo").mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / ".cargo" / "credentials.toml").write_text('token = "CARGO-TOKEN"\n')
    (home / ".ssh" / "id_ed25519").write_text("SSH-PRIVATE-KEY\n")
    tool = home / where / "tool"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(
        "#!/bin/sh\n"
        f"k=$(cat {home}/.cargo/credentials.toml {home}/.ssh/id_ed25519 | tr -d '\\n\"')\n"
        "printf '{\"torch\":{\"devices\":[\"%s\"]}}' \"$k\" > \"$MODEL_VERIFIER_REPORT\"\n"
        "echo \"$k\" > model.bin\n")
    tool.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    hostile = Hostile(tmp_path)
    commit = hostile.commit({"proj/README": "x\n"})
    hostile.attest("train", commit, argv=["tool"])
    result = hostile.rebuild("--sandbox", "bwrap")
    assert_no_traceback(result)
    assert "CARGO-TOKEN" not in result.output and "SSH-PRIVATE-KEY" not in result.output
    signed = hostile.out / "rebuilder" / "train.rebuild.intoto.json"
    assert not signed.exists() or "TOKEN" not in json.dumps(payload_of(read_json(signed)))
    from verifier.steps.sandbox import interpreter_roots

    assert interpreter_roots("tool", str(tool.parent), tmp_path / "work") == []


# ------------------------------------------------------------------ item 5: record's workspace


STEP_ON_THE_CHECKOUT = r'''
import pathlib
def attempt(what, action):
    try:
        action()
        print("DID", what)
    except OSError:
        pass
hook = pathlib.Path(".git/hooks/pre-commit")
attempt("hook", lambda: hook.write_text("#!/bin/sh\ntouch PWNED\n"))
attempt("filter", lambda: open(".git/config", "a").write('[filter "x"]\n\tclean = touch PWNED\n'))
attempt("attributes", lambda: pathlib.Path(".gitattributes").write_text("* filter=x\n"))
attempt("anchor", lambda: pathlib.Path("keys/builder.pub").write_text("ATTACKER KEY\n"))
attempt("anchor-rename", lambda: pathlib.Path("keys/builder.pub").rename("keys/old.pub"))
attempt("source", lambda: pathlib.Path("train.py").write_text("evil\n"))
stolen = []
for name in ("keys/builder.key", "keys/release.key", "keys/deploy.pem"):
    try:
        stolen.append(pathlib.Path(name).read_text())
    except OSError:
        pass
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/model.bin").write_text("".join(stolen) + "m\n")
'''


@as_root
def test_a_recorded_step_writes_only_its_product_and_reads_no_private_key(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q")
    keys: list[KeyPair] = [make_keys(work / "keys", who) for who in ("builder", "release")]
    (work / "keys" / "deploy.pem").write_bytes(keys[1].private.read_bytes())
    (work / "train.py").write_text(STEP_ON_THE_CHECKOUT, encoding="utf-8")
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    result = run(["record", "--step", "train", "--key", "keys/builder.key", "--sandbox", "bwrap",
                  "--no-trace", "--product", "out/model.bin", "--out", "../att", "--",
                  sys.executable, "train.py"], cwd=work)
    assert result.code == 0, result.output
    assert "DID" not in result.output, result.output
    after = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert after.pop(work / "out" / "model.bin") == b"m\n"  # no key text got in
    assert after == before
    assert not (work / ".gitattributes").exists()


# ------------------------------------------------------------------ the low items


def test_rebuild_never_falls_back_to_no_sandbox_on_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = Hostile(tmp_path)
    marker = tmp_path / "ran-on-the-host"
    commit = hostile.commit({"proj/build.py": f"open({str(marker)!r}, 'w')\n" + BUILD})
    hostile.attest("train", commit)
    bare = tmp_path / "no-bwrap"
    bare.mkdir()
    (bare / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", str(bare))  # git is installed here, bubblewrap is not
    assert_error(hostile.rebuild("--sandbox", "auto"), 2, "--sandbox none")
    assert not marker.exists()
    assert hostile.rebuild("--sandbox", "none").code == 0
    assert marker.exists()


BUILD = "open('model.bin', 'w').write('m')\n"


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_product_the_step_turns_into_a_fifo_or_socket_is_one_note(
        tmp_path: Path, kind: str) -> None:
    make = ("import os; os.mkfifo('model.bin')\n" if kind == "fifo" else
            "import socket; socket.socket(socket.AF_UNIX).bind('model.bin')\n")
    hostile = Hostile(tmp_path)
    commit = hostile.commit({"proj/build.py": make})
    hostile.attest("train", commit)
    result = hostile.rebuild("--sandbox", "bwrap")
    assert_no_traceback(result)
    assert result.code == 1, result.output
    assert "not a regular file" in result.output


@pytest.mark.parametrize("how", ["committed", "made by the step"])
def test_a_kept_workspace_holds_no_repository_that_runs_programs(
        tmp_path: Path, how: str) -> None:
    marker = tmp_path / "fsmonitor-ran"
    config = f"[core]\n\tfsmonitor = \"touch {marker}\"\n"
    hostile = Hostile(tmp_path)
    if how == "committed":
        commit = hostile.commit({"build.py": BUILD})
        commit = _with_crafted_git(hostile.src, commit, config)
    else:
        maker = ("import os\nos.makedirs('.git/objects'); os.makedirs('.git/refs')\n"
                 "open('.git/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
                 f"open('.git/config', 'w').write({config!r})\n")
        commit = hostile.commit({"build.py": maker + BUILD})
    hostile.attest("train", commit, path="")
    workspace = tmp_path / "ws"
    result = hostile.rebuild("--sandbox", "bwrap", "--keep-workspace", "--workspace", workspace)
    assert_no_traceback(result)
    subprocess.run(["git", "status"], cwd=workspace / "train", capture_output=True, check=False,
                   env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert not marker.exists(), result.output
    assert not list((workspace / "train").rglob(".git"))


def _with_crafted_git(repo: Path, commit: str, config: str) -> str:
    """A commit whose tree holds a `.git` directory (git add refuses one; mktree does not)."""
    def blob(text: str) -> str:
        return git(repo, "hash-object", "-w", "--stdin", data=text.encode())

    def tree(entries: list[str]) -> str:
        return git(repo, "mktree", data=("".join(e + "\n" for e in entries)).encode())

    keep = blob("")
    objects = tree([f"100644 blob {keep}\t.keep"])
    dot_git = tree([f"100644 blob {blob(config)}\tconfig",
                    f"100644 blob {blob('ref: refs/heads/main' + chr(10))}\tHEAD",
                    f"040000 tree {objects}\tobjects", f"040000 tree {objects}\trefs"])
    listing = git(repo, "ls-tree", f"{commit}^{{tree}}").splitlines()
    root = tree([*listing, f"040000 tree {dot_git}\t.git"])
    return git(repo, "commit-tree", root, "-p", commit, "-m", "crafted")


def test_a_recorded_step_still_rewrites_everything_in_its_directory_product(
        tmp_path: Path) -> None:
    """The other side of the read-only checkout: a directory product is the step's whole."""
    work = tmp_path / "work"
    (work / "dist" / "sub").mkdir(parents=True)
    (work / "dist" / "sub" / "old.bin").write_text("old\n")
    (work / "notes.txt").write_text("mine\n")
    keys = make_keys(tmp_path / "keys", "builder")
    code = ("import pathlib; pathlib.Path('dist/sub/old.bin').write_text('new\\n'); "
            "pathlib.Path('dist/added.bin').write_text('added\\n')")
    result = run(["record", "--step", "pack", "--key", keys.private, "--sandbox", "bwrap",
                  "--no-trace", "--product", "dist", "--out", "att", "--", sys.executable,
                  "-c", code], cwd=work)
    assert result.code == 0, result.output
    assert (work / "dist" / "sub" / "old.bin").read_text() == "new\n"
    assert (work / "dist" / "added.bin").read_text() == "added\n"
    assert (work / "notes.txt").read_text() == "mine\n"


def test_a_private_key_declared_as_a_material_is_read_but_the_signing_key_never(
        tmp_path: Path) -> None:
    """Hiding keys must not silently blank an input the step is declared to read."""
    work = tmp_path / "work"
    work.mkdir()
    signing = make_keys(work / "keys", "builder")
    deploy = make_keys(work / "keys", "deploy")
    code = ("import pathlib; pathlib.Path('out.txt').write_text("
            "pathlib.Path('keys/deploy.key').read_text() + '|' + "
            "pathlib.Path('keys/builder.key').read_text())")
    result = run(["record", "--step", "sign", "--key", "keys/builder.key", "--sandbox", "bwrap",
                  "--no-trace", "--material", "keys/deploy.key", "--material",
                  "keys/builder.key", "--product", "out.txt", "--out", "att", "--",
                  sys.executable, "-c", code], cwd=work)
    assert result.code == 0, result.output
    assert (work / "out.txt").read_text() == deploy.private.read_text() + "|"
    assert signing.private.read_text() not in (work / "out.txt").read_text()


def test_a_file_the_recorded_step_adds_beside_its_product_is_named(tmp_path: Path) -> None:
    """Beside a product the step may add files (it cannot change any): record names them."""
    work = tmp_path / "work"
    work.mkdir()
    keys = make_keys(tmp_path / "keys", "builder")
    code = ("import pathlib; pathlib.Path('.gitattributes').write_text('* filter=lfs\\n'); "
            "pathlib.Path('model.bin').write_text('m')")
    result = run(["record", "--step", "train", "--key", keys.private, "--sandbox", "bwrap",
                  "--no-trace", "--product", "model.bin", "--out", "att", "--",
                  sys.executable, "-c", code], cwd=work)
    assert result.code == 0, result.output
    assert "left 1 new file(s) beside its products in your checkout: .gitattributes" in (
        result.stderr)
