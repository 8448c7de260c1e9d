"""Start and stop the loopback Sigstore (server.js) for tests, and mint tokens it accepts.

`make test` installs its node packages (npm ci in this folder); without node or without them,
`skip_reason()` says why the tests that need it skip.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
READY_TIMEOUT_S = 60
# HS256 with a throwaway secret: the mock, like any Fulcio, checks no token signature here.
TOKEN_SECRET = "loopback-sigstore-test-secret-32b"


def skip_reason() -> str | None:
    """Why the loopback Sigstore cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed, so the loopback Sigstore (@sigstore/mock) cannot run"
    if not (HERE / "node_modules" / "@sigstore" / "mock").is_dir():
        return ("the loopback Sigstore's npm packages are not installed; `make test` runs "
                "`npm ci` in tests/sigstore_mock")
    return None


def workflow_identity(repository: str, workflow: str = "train-and-attest.yml",
                      ref: str = "refs/heads/main") -> str:
    """The certificate SAN GitHub Actions gets: the workflow file at a ref."""
    return f"https://github.com/{repository}/.github/workflows/{workflow}@{ref}"


def mint_token(subject: str, issuer: str = GITHUB_ISSUER, *, lifetime_s: int = 600,
               issued_at: int | None = None, **claims: Any) -> str:
    """An OIDC identity token for audience "sigstore"; extra claims become certificate fields
    (repository, ref, sha, event_name, workflow, ...)."""
    import jwt

    now = int(time.time()) if issued_at is None else issued_at
    body = {"iss": issuer, "sub": subject, "aud": "sigstore", "iat": now,
            "nbf": now, "exp": now + lifetime_s, **claims}
    return jwt.encode(body, TOKEN_SECRET, algorithm="HS256")


def github_token(repository: str = "acme/tiny-model", ref: str = "refs/heads/main",
                 workflow: str = "train-and-attest.yml", sha: str = "a" * 40,
                 event_name: str = "push", **overrides: Any) -> str:
    """A token shaped like the one a GitHub Actions job gets for Sigstore."""
    claims: dict[str, Any] = {
        "repository": repository, "ref": ref, "sha": sha, "event_name": event_name,
        "workflow": workflow.removesuffix(".yml"),
        "job_workflow_ref": f"{repository}/.github/workflows/{workflow}@{ref}",
        **overrides,
    }
    return mint_token(workflow_identity(repository, workflow, ref), **claims)


@dataclass(frozen=True)
class LoopbackSigstore:
    url: str
    trust_config: Path  # ClientTrustConfig for record --sigstore --trust-config
    trusted_root: Path  # for verification


@contextmanager
def running(out_dir: Path) -> Iterator[LoopbackSigstore]:
    """Run server.js on 127.0.0.1 (a free port) until the block ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["node", str(HERE / "server.js"), "--out", str(out_dir), "--port", "0"],
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    try:
        try:
            first = lines.get(timeout=READY_TIMEOUT_S)
        except queue.Empty:
            first = ""
        if not first.startswith("READY "):
            process.kill()
            process.wait()
            errors = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"the loopback Sigstore did not start: {first}{errors}")
        yield LoopbackSigstore(first.split()[1], out_dir / "trust_config.json",
                               out_dir / "trusted_root.json")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
