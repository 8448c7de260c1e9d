"""Servers the OCI tests talk to: the real CNCF Distribution registry, and a tiny hostile one.

`running_registry(directory)` starts `docker-registry serve CONFIG` (Debian's docker-registry,
2.8) on a free loopback port with its storage under `directory`, waits until /v2/ answers and
stops it afterwards. `Scripted` is a loopback HTTP server answering each path with what a test
scripted (a status, headers, a body, or a callable that writes whatever it likes), for the
answers no honest registry gives.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

REGISTRY_BINARY = shutil.which("docker-registry")
SKIP_REASON = ("docker-registry (the CNCF Distribution registry, Debian package "
               "docker-registry) is not installed; .ci/run installs it")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    process: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return f"http://{self.host}/v2/{path}"

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
                / hexdigest[:2] / hexdigest / "data")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def running_registry(directory: Path, auth: dict[str, Any] | None = None,
                     accesslog: bool = False) -> Iterator[RunningRegistry]:
    """With `accesslog`, registry.log in `directory` holds a line per request (to count what a
    client fetched as the registry saw it)."""
    assert REGISTRY_BINARY is not None
    port = free_port()
    storage = directory / "storage"
    storage.mkdir(parents=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": not accesslog}},
        "storage": {"filesystem": {"rootdirectory": str(storage)},
                    "delete": {"enabled": True}, "cache": {}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if auth is not None:
        config["auth"] = auth
    (directory / "config.yml").write_text(yaml.safe_dump(config))
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BINARY, "serve", str(directory / "config.yml")],
                               stdout=log, stderr=subprocess.STDOUT)
    registry = RunningRegistry(f"127.0.0.1:{port}", storage, process)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(registry.url(""), timeout=1).status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the registry did not start: "
                                     + (directory / "registry.log").read_text())
            time.sleep(0.05)
        yield registry
    finally:
        registry.stop()
        log.close()


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid-answer is what the hostile tests make the client do: the
    server's traceback for it would land in the captured stderr of the command under test."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


Answer = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Scripted:
    """A loopback HTTP server: path (without query) -> answer; anything else is a 404."""

    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    host: str = ""

    @contextlib.contextmanager
    def serving(self) -> Iterator[Scripted]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                script.seen.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                answer = script.answers.get(path)
                if callable(answer):
                    answer(self)
                    return
                status, headers, body = answer or (404, {}, b'{"errors":[]}')
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.host = f"127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
