"""rebuild against a trusted signer's hostile step: the rebuilder's machine stays protected.

The signer of a step is trusted to build, not to reach the rebuilder's machine. Each test signs
a crafted step attestation (and, where needed, a crafted git history) with a key the rebuild
trusts, runs the real `rebuild` command, and checks that nothing outside the workspace and
--out was written, removed, run or read into the signed rebuild attestation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    INTOTO,
    KeyPair,
    assert_error,
    assert_no_traceback,
    make_keys,
    payload_of,
    read_json,
    run,
    sign_bundle,
)

BUILD = "open('model.bin', 'w').write('m')\n"
MODEL = {"sha256": hashlib.sha256(b"m").hexdigest()}


def git(repo: Path, *args: str, data: bytes | None = None) -> str:
    completed = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
         "-c", "commit.gpgsign=false", *args],
        input=data, capture_output=True, check=True)
    return completed.stdout.decode().strip()


class Hostile:
    """tmp/keys (builder: trusted; rebuilder: signs rebuilds), tmp/src (a git repository with
    proj/build.py), tmp/att (the crafted attestations), tmp/out (--out)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.builder = make_keys(root / "keys", "builder")
        self.rebuilder = make_keys(root / "keys", "rebuilder")
        self.src = root / "src"
        self.attestations = root / "att"
        self.attestations.mkdir()
        self.out = root / "out"

    def commit(self, files: dict[str, str], links: dict[str, str] | None = None) -> str:
        """Commit these files (and links: name -> target) on top of what src holds."""
        if not self.src.exists():
            self.src.mkdir()
            git(self.src, "init", "-q", "-b", "main")
        for name, text in files.items():
            path = self.src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for name, target in (links or {}).items():
            path = self.src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        git(self.src, "add", "-A")
        git(self.src, "commit", "-q", "-m", "source")
        return git(self.src, "rev-parse", "HEAD")

    def attest(self, step: str, commit: str | None, *, argv: Sequence[str] | None = None,
               products: Sequence[tuple[str, dict[str, str]]] = (("model.bin", MODEL),),
               materials: Sequence[tuple[str, dict[str, str]]] = (),
               env: dict[str, str] | None = None, workdir: str = ".",
               path: str = "proj", file: str | None = None) -> Path:
        """A step attestation signed by the trusted builder key."""
        environment: dict[str, Any] = {
            "git": {"commit": commit, "dirty": False, "path": path} if commit else None,
            "sandbox": {"kind": "bwrap", "network": "none", "devices": []},
        }
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": n, "digest": d} for n, d in products],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": {
                    "buildType": "https://model-verifier.dev/buildtypes/step/v1",
                    "externalParameters": {
                        "step": step, "argv": list(argv or [sys.executable, "build.py"]),
                        "workingDirectory": workdir, "env": env or {}},
                    "internalParameters": {"environment": environment},
                    "resolvedDependencies": [{"name": n, "digest": d} for n, d in materials],
                },
                "runDetails": {
                    "builder": {"id": "https://model-verifier.dev/builders/local/v1"},
                    "metadata": {"invocationId": "x", "startedOn": "2024-01-01T00:00:00Z",
                                 "finishedOn": "2024-01-01T00:00:01Z"},
                    "byproducts": []},
            },
        }
        payload = json.dumps(statement, sort_keys=True).encode()
        target = self.attestations / f"{file or step}.intoto.json"
        target.write_text(json.dumps(sign_bundle(payload, INTOTO, self.builder.private)),
                          encoding="utf-8")
        return target

    def rebuild(self, *args: str | Path, key: KeyPair | None = None) -> Any:
        return run(["rebuild", self.attestations, "--trust-key", self.builder.public,
                    "--key", (key or self.rebuilder).private, "--out", self.out,
                    "--source", self.src, *args], cwd=self.root)

    def signed(self, step: str) -> dict[str, Any]:
        """The predicate of the rebuild attestation written for `step`."""
        return payload_of(read_json(self.out / "rebuilder" / f"{step}.rebuild.intoto.json"))[
            "predicate"]


@pytest.fixture
def hostile(tmp_path: Path) -> Hostile:
    return Hostile(tmp_path)


def precious(directory: Path) -> Path:
    """A directory standing for one of the rebuilder's own, with a file in it."""
    (directory / "precious").mkdir(parents=True)
    (directory / "precious" / "thesis.txt").write_text("years of work", encoding="utf-8")
    return directory


# ------------------------------------------------------------------ removing product names


def test_a_product_name_through_a_committed_link_removes_nothing_outside(
    hostile: Hostile, tmp_path: Path
) -> None:
    victim = precious(tmp_path / "victim-home")
    commit = hostile.commit({"proj/build.py": BUILD}, links={"proj/out": str(victim)})
    hostile.attest("train", commit, products=[("model.bin", MODEL),
                                              ("out/precious", {"sha256": "0" * 64})])
    result = hostile.rebuild("--sandbox", "none", "--json")
    assert_no_traceback(result)
    assert (victim / "precious" / "thesis.txt").read_text(encoding="utf-8") == "years of work"
    assert json.loads(result.stdout)[0]["results"][0]["verdict"] == "IDENTICAL"


def test_a_step_left_out_by_step_may_not_name_a_product_outside_either(
    hostile: Hostile, tmp_path: Path
) -> None:
    victim = precious(tmp_path / "victim")
    commit = hostile.commit({"proj/build.py": BUILD})
    hostile.attest("train", commit)
    other = hostile.attest("other", commit, argv=["true"],
                           products=[(str(victim), {"sha256": "0" * 64})])
    result = hostile.rebuild("--sandbox", "none", "--step", "train")
    assert_error(result, 2, str(other), repr(str(victim)), "leaves the workspace")
    assert (victim / "precious" / "thesis.txt").exists()
    assert not hostile.out.exists()


# ------------------------------------------------------------------ writing the recorded tree


def crafted_commit(repo: Path, entries: list[tuple[str, str, str]]) -> str:
    """A commit whose proj/ tree lists exactly these (mode, name, object) entries, in this order,
    as only `git hash-object --literally` can make: git itself never writes such a tree."""
    def write(kind: str, data: bytes) -> str:
        return git(repo, "hash-object", "-w", "--literally", "-t", kind, "--stdin", data=data)

    proj = write("tree", b"".join(f"{mode} {name}\0".encode() + bytes.fromhex(sha)
                                  for mode, name, sha in entries))
    top = write("tree", b"40000 proj\0" + bytes.fromhex(proj))
    return git(repo, "commit-tree", top, "-m", "crafted")


@pytest.mark.parametrize("order", ["link first", "directory first"])
def test_a_tree_naming_a_link_and_a_directory_alike_writes_nothing_outside(
    hostile: Hostile, tmp_path: Path, order: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile.commit({"proj/build.py": BUILD})
    blob = lambda data: git(hostile.src, "hash-object", "-w", "--stdin", data=data)  # noqa: E731
    payload = blob(b"written by a hostile tree\n")
    subtree = git(hostile.src, "hash-object", "-w", "--literally", "-t", "tree", "--stdin",
                  data=b"100644 pwn\0" + bytes.fromhex(payload))
    link = ("120000", "out", blob(str(victim).encode()))
    directory = ("40000", "out", subtree)
    pair = [link, directory] if order == "link first" else [directory, link]
    commit = crafted_commit(hostile.src,
                            [("100644", "build.py", blob(BUILD.encode())), *pair])
    hostile.attest("train", commit)
    result = hostile.rebuild("--sandbox", "none")
    assert_error(result, 2, "'out/pwn'", "inside 'out'", "refusing to use it")
    assert list(victim.iterdir()) == []
    assert not hostile.out.exists()


def test_a_tree_naming_one_path_twice_is_refused(hostile: Hostile, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile.commit({"proj/build.py": BUILD})
    blob = lambda data: git(hostile.src, "hash-object", "-w", "--stdin", data=data)  # noqa: E731
    # A link and then a file of the same name: the file would be written through the link.
    commit = crafted_commit(hostile.src, [
        ("100644", "build.py", blob(BUILD.encode())),
        ("120000", "pwn", blob(str(victim / "pwn").encode())),
        ("100644", "pwn", blob(b"written by a hostile tree\n")),
    ])
    hostile.attest("train", commit)
    result = hostile.rebuild("--sandbox", "none")
    assert_error(result, 2, "'pwn'", "twice", "refusing to use it")
    assert list(victim.iterdir()) == []


def test_an_executable_of_the_recorded_tree_keeps_its_mode_and_a_link_stays_a_link(
    hostile: Hostile, tmp_path: Path
) -> None:
    commit = hostile.commit({"proj/build.py": BUILD, "proj/tool.sh": "#!/bin/sh\n"},
                            links={"proj/alias.py": "build.py"})
    (hostile.src / "proj" / "tool.sh").chmod(0o755)
    git(hostile.src, "add", "-A")
    git(hostile.src, "commit", "-q", "-m", "mode")
    commit = git(hostile.src, "rev-parse", "HEAD")
    hostile.attest("train", commit, argv=[sys.executable, "-c",
                                          "import os; open('model.bin', 'w').write('m' if "
                                          "os.access('tool.sh', os.X_OK) and "
                                          "os.path.islink('alias.py') else 'x')"])
    workspace = tmp_path / "ws"
    result = hostile.rebuild("--sandbox", "none", "--workspace", workspace, "--keep-workspace")
    assert result.code == 0, result.output
    assert (workspace / "train" / "tool.sh").stat().st_mode & 0o777 == 0o755
    assert (workspace / "train" / "build.py").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ git in the workspace


def test_a_committed_repository_in_the_workspace_makes_git_run_nothing(
    hostile: Hostile, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-on-the-host"
    commit = hostile.commit({
        # A directory shaped like a git repository: git, run in it, would obey its config.
        "proj/repo/HEAD": "0123456789012345678901234567890123456789\n",
        "proj/repo/config": ("[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
                             f"\tworktree = .\n\tfsmonitor = \"id > {marker}; false\"\n"),
        "proj/repo/objects/info/keep": "", "proj/repo/refs/heads/keep": "",
        "proj/repo/build.py": BUILD})
    hostile.attest("train", commit, workdir="repo", products=[("repo/model.bin", MODEL)])
    result = hostile.rebuild("--sandbox", "none")
    assert result.code == 0, result.output
    assert not marker.exists()
    assert hostile.signed("train")["environment"]["git"] is None


def test_record_runs_no_program_the_repository_config_names(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys", "builder")
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "build.py").write_text(BUILD, encoding="utf-8")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "source")
    marker = tmp_path / "fsmonitor-ran"
    git(work, "config", "core.fsmonitor", f"touch {marker}; false")
    result = run(["record", "--step", "train", "--key", keys.private, "--out", tmp_path / "att",
                  "--product", "model.bin", "--sandbox", "none", "--",
                  sys.executable, "build.py"], cwd=work)
    assert result.code == 0, result.output
    assert not marker.exists()
    statement = payload_of(read_json(tmp_path / "att" / "train.intoto.json"))
    recorded = statement["predicate"]["buildDefinition"]["internalParameters"]["environment"]
    assert recorded["git"]["commit"] == git(work, "rev-parse", "HEAD")


# ------------------------------------------------------------------ what the sandbox shows


def bwrap_works() -> bool:
    import shutil

    if shutil.which("bwrap") is None:
        return False
    return subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"],
                          capture_output=True, check=False).returncode == 0


needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot start here")
READ_SECRET = ("#!/bin/sh\n"
               "k=$(cat {secret} 2>/dev/null | tr -d '\\n' | cut -c1-190)\n"
               "printf '{{\"torch\":{{\"devices\":[\"seen:%s\"]}}}}' \"$k\" "
               "> \"$MODEL_VERIFIER_REPORT\"\n"
               "echo m > model.bin\n")


@needs_bwrap
def test_a_committed_pyvenv_cfg_mounts_no_directory_of_the_rebuilder(
    hostile: Hostile, tmp_path: Path
) -> None:
    secrets = tmp_path / "home-of-rebuilder" / ".ssh"
    secrets.mkdir(parents=True)
    (secrets / "id_ed25519").write_text("PRIVATE-KEY-TEXT", encoding="utf-8")
    (secrets / "python3").write_text("", encoding="utf-8")  # so `home` looks like a Python
    hostile.commit({"proj/venv/pyvenv.cfg": f"home = {secrets}\n",
                    "proj/venv/bin/python": READ_SECRET.format(secret=secrets / "id_ed25519")})
    (hostile.src / "proj/venv/bin/python").chmod(0o755)
    git(hostile.src, "add", "-A")
    git(hostile.src, "commit", "-q", "-m", "executable")
    commit = git(hostile.src, "rev-parse", "HEAD")
    hostile.attest("train", commit, argv=["venv/bin/python"],
                   products=[("model.bin", {"sha256": hashlib.sha256(b"m\n").hexdigest()})])
    result = hostile.rebuild("--sandbox", "bwrap")
    assert result.code == 0, result.output
    signed = json.dumps(hostile.signed("train"))
    assert "seen:" in signed  # the step ran and reported
    assert "PRIVATE-KEY-TEXT" not in signed



# ------------------------------------------------------------------ the rebuilder's environment


@pytest.mark.parametrize("sandbox", ["none", pytest.param("bwrap", marks=needs_bwrap)])
def test_the_rebuilders_secrets_never_reach_the_step_or_the_signed_attestation(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET-FROM-THE-ENVIRONMENT")
    monkeypatch.setenv("CI_JOB_TOKEN", "SECRET-TOKEN")
    monkeypatch.setenv("LANG", "C.UTF-8")
    steal = ("import json, os, pathlib\n"
             "seen = sorted(f'{k}={v}' for k, v in os.environ.items())\n"
             # in hex: a report's device names hold no '=' or '_'
             "json.dump({'torch': {'devices': [s.encode().hex()[:64] for s in seen][:64]}},\n"
             "          open(os.environ['MODEL_VERIFIER_REPORT'], 'w'))\n"
             "pathlib.Path(os.environ['HOME'], 'cache').write_text('home is writable')\n"
             "open('model.bin', 'w').write('m')\n")
    commit = hostile.commit({"proj/build.py": steal})
    hostile.attest("train", commit, env={"DECLARED": "yes"})
    result = hostile.rebuild("--sandbox", sandbox)
    assert result.code == 0, result.output
    seen = [bytes.fromhex(entry).decode("utf-8", "replace")
            for entry in hostile.signed("train")["environment"]["torch"]["devices"]]
    names = {entry.partition("=")[0] for entry in seen}
    assert "DECLARED=yes" in seen and "LANG=C.UTF-8" in seen
    assert not any("SECRET" in entry for entry in seen)
    assert names <= {"PATH", "LANG", "HOME", "TMPDIR", "DECLARED", "MODEL_VERIFIER_REPORT",
                     "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PWD"}, names


# ------------------------------------------------------------------ hashing what the step made


@pytest.mark.parametrize("product", ["lnk/secret.txt", "secret-link"])
def test_a_product_reached_through_a_link_the_step_made_is_never_read(
    hostile: Hostile, tmp_path: Path, product: str
) -> None:
    host = tmp_path / "rebuilder-home"
    host.mkdir()
    (host / "secret.txt").write_text("hunter2\n", encoding="utf-8")
    build = (f"import os\nos.symlink({str(host)!r}, 'lnk')\n"
             f"os.symlink({str(host / 'secret.txt')!r}, 'secret-link')\n" + BUILD)
    commit = hostile.commit({"proj/build.py": build})
    hostile.attest("train", commit,
                   products=[("model.bin", MODEL), (product, {"sha256": "0" * 64})])
    result = hostile.rebuild("--sandbox", "none", "--json")
    assert_no_traceback(result)
    assert result.code == 1, result.output
    secret_sha = hashlib.sha256(b"hunter2\n").hexdigest()
    assert secret_sha not in result.output
    assert not any(secret_sha in p.read_text(encoding="utf-8")
                   for p in hostile.out.rglob("*") if p.is_file())
    results = {r["name"]: r for r in json.loads(result.stdout)[0]["results"]}
    assert results["model.bin"]["verdict"] == "IDENTICAL"
    assert results[product]["verdict"] == "MISSING" and results[product]["actual"] is None
    assert "symbolic link" in results[product]["note"]
    signed = payload_of(read_json(hostile.out / "rebuilder" / "train.rebuild.intoto.json"))
    assert [s["name"] for s in signed["subject"]] == ["model.bin"]


# ------------------------------------------------------------------ fields no file or process holds


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"step": "tr\ud800ain"}, "not valid Unicode text"),
    ({"step": "s" * 300}, "is not a plain name"),
    ({"env": {"A=B": "1"}}, "holds '='"),
    ({"env": {"A\x00B": "1"}}, "holds a NUL character"),
    ({"env": {"A": "x\ud800"}}, "not valid Unicode text"),
    ({"products": [("p\ud800", MODEL)]}, "not valid Unicode text"),
    ({"materials": [("m\udc00x", MODEL)]}, "not valid Unicode text"),
    ({"workdir": "w\ud800"}, "not valid Unicode text"),
    ({"argv": ["py\x00thon3", "build.py"]}, "holds a NUL character"),
    ({"argv": ["python3", "b\ud800"]}, "not valid Unicode text"),
])
def test_fields_no_file_name_or_process_can_carry_are_one_sentence(
    hostile: Hostile, tmp_path: Path, fields: dict[str, Any], fragment: str
) -> None:
    commit = hostile.commit({"proj/build.py": BUILD})
    attestation = hostile.attest(fields.pop("step", "train"), commit, file="crafted", **fields)
    result = hostile.rebuild("--sandbox", "none")
    assert_error(result, 2, str(attestation), fragment)
    assert not hostile.out.exists()


def test_a_material_that_is_a_directory_in_the_commit_stops_the_step(
    hostile: Hostile, tmp_path: Path
) -> None:
    commit = hostile.commit({"proj/build.py": BUILD, "proj/sub/keep": "x"})
    given = tmp_path / "given"
    given.mkdir()
    (given / "m").write_text("m", encoding="utf-8")
    hostile.attest("train", commit, materials=[("sub", MODEL)])
    result = hostile.rebuild("--sandbox", "none", "--json", "--materials-from", given)
    assert_no_traceback(result)
    assert result.code == 1, result.output
    assert "material sub is a directory" in json.loads(result.stdout)[0]["message"]


# ------------------------------------------------------------------ a step at the repository's top


def test_a_step_recorded_at_the_top_of_a_repository_gets_its_source_and_reproduces(
    tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys", "builder")
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    # helper.py is no declared material: only the recorded commit can bring it.
    (work / "helper.py").write_text("VALUE = 'from the commit'\n", encoding="utf-8")
    (work / "build.py").write_text(
        "import helper; open('model.bin', 'w').write(helper.VALUE)\n", encoding="utf-8")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "source")
    recorded = run(["record", "--step", "train", "--key", keys.private, "--out",
                    tmp_path / "att", "--product", "model.bin", "--sandbox", "none", "--",
                    sys.executable, "build.py"], cwd=work)
    assert recorded.code == 0, recorded.output
    statement = payload_of(read_json(tmp_path / "att" / "train.intoto.json"))
    environment = statement["predicate"]["buildDefinition"]["internalParameters"]["environment"]
    assert environment["git"]["path"] == ""
    result = run(["rebuild", tmp_path / "att", "--trust-key", keys.public, "--key",
                  keys.private, "--out", tmp_path / "rebuilds", "--source", work,
                  "--sandbox", "none", "--json"], cwd=tmp_path)
    assert result.code == 0, result.output
    assert json.loads(result.stdout)[0]["status"] == "reproduced"


# ------------------------------------------------------------------ the plan's up-front refusals


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"argv": ["cat", "/etc/../root/.ssh/id_rsa"]}, "leaves the workspace"),
    ({"argv": ["cat", "/proc/self/root/root/.ssh/id_rsa"]}, "leaves the workspace"),
    ({"argv": ["../../../../home/alice/.local/bin/tool"]}, "lies outside the workspace"),
    ({"argv": ["env", "LD_PRELOAD=./evil.so", "python3", "build.py"]}, "--allow-env LD_PRELOAD"),
    ({"argv": ["/usr/bin/env", "-i", "PYTHONPATH=.", "python3", "build.py"]},
     "--allow-env PYTHONPATH"),
    ({"env": {"OPENSSL_CONF": "./evil.cnf"}}, "--allow-env OPENSSL_CONF"),
    ({"env": {"CUDA_INJECTION64_PATH": "./inj.so"}}, "--allow-env CUDA_INJECTION64_PATH"),
    ({"env": {"OMP_TOOL_LIBRARIES": "./tool.so"}}, "--allow-env OMP_TOOL_LIBRARIES"),
])
def test_commands_and_variables_that_climb_out_are_refused_before_anything_runs(
    hostile: Hostile, fields: dict[str, Any], fragment: str
) -> None:
    commit = hostile.commit({"proj/build.py": BUILD})
    attestation = hostile.attest("train", commit, **fields)
    result = hostile.rebuild("--sandbox", "none")
    assert_error(result, 2, str(attestation), fragment)
    assert not hostile.out.exists()


def test_an_absolute_interpreter_and_system_paths_are_still_accepted(hostile: Hostile) -> None:
    commit = hostile.commit({"proj/build.py": BUILD})
    hostile.attest("train", commit, argv=[sys.executable, "build.py", "/etc/hostname",
                                          "/proc/cpuinfo"])
    assert hostile.rebuild("--sandbox", "none").code == 0


def test_a_link_to_an_interpreter_mounts_its_installation_not_the_folder_of_the_link(
        tmp_path: Path) -> None:
    """`~/bin/python3 -> /usr/.../python3.11` is common: the step needs the installation the
    link leads to, never the home the link lies in (its keys, its sockets)."""
    import os
    import sys

    from verifier.steps.sandbox import interpreter_roots

    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / "bin" / "python3").symlink_to(os.path.realpath(sys.executable))
    roots = interpreter_roots("python3", str(home / "bin"), tmp_path / "work")
    assert not any(home == root or home.is_relative_to(root) for root in roots), roots


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_the_sandbox_hides_the_secrets_under_etc(tmp_path: Path) -> None:
    """A step run as root reads /etc: the shadow file and the SSH host keys must not be there
    for it (they would reach its report and product names, which a rebuild signs)."""
    from verifier.steps.sandbox import SECRET_DIRS, SECRET_FILES, resolve

    sandbox = resolve("bwrap")
    present_files = [f for f in SECRET_FILES if os.path.isfile(f)]
    present_dirs = [d for d in SECRET_DIRS if os.path.isdir(d)]
    script = "".join(f"head -c 1 {f} 2>/dev/null && echo LEAK {f};" for f in present_files)
    script += "".join(f"ls -A {d};" for d in present_dirs)
    script += "test -r /etc/passwd && echo passwd-readable"
    argv = sandbox.wrap(["/bin/sh", "-c", script], tmp_path, tmp_path, {"PATH": "/usr/bin:/bin"})
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "LEAK" not in done.stdout, done.stdout
    assert done.stdout.strip().splitlines() == ["passwd-readable"], done.stdout
