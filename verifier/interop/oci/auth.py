"""Registry credentials: the Docker config (and its credential helpers), or ones given directly.

Only what the Docker CLI itself documents is read: `auths.<registry>.auth` (base64 of
`user:password`) or `username`/`password`, `identitytoken`, `credHelpers.<registry>` and
`credsStore` (a `docker-credential-NAME get` program the user installed and named). Secrets
are held in memory only, and never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import InputError
from verifier.formats import readers

MAX_CONFIG_BYTES = 4 * 1024 * 1024
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # an OAuth2 refresh token (`docker login` with a token)

    def __repr__(self) -> str:  # never a secret in a log or a traceback
        return f"Credentials(username={self.username!r}, secret=***)"


def docker_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    return (Path(directory) if directory else Path.home() / ".docker") / "config.json"


def _normalise(key: str) -> str:
    key = key.removeprefix("https://").removeprefix("http://")
    return key.split("/", 1)[0]


def docker_credentials(registry: str, config: Path | None = None) -> Credentials | None:
    """Credentials for `registry` (host[:port]) from the Docker config, or None."""
    path = config or docker_config_path()
    try:
        os.stat(path)
    except FileNotFoundError:  # no Docker config (or a dangling link to one): no credentials
        return None
    except (OSError, ValueError):
        pass  # a link loop, a NUL byte: the reader says which, in one sentence
    text = readers.read_text(path, "Docker config", MAX_CONFIG_BYTES)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"{path}: is not a readable Docker config (JSON).") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: is not a Docker config (a JSON object).")
    helpers = document.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _normalise(key) == registry and isinstance(helper, str):
                return _from_helper(helper, registry, path)
    auths = document.get("auths") or {}
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if _normalise(key) == registry and isinstance(entry, dict):
                found = _from_entry(entry, registry, path)
                if found is not None:
                    return found
    store = document.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, registry, path, missing_ok=True)
    return None


def _from_entry(entry: dict[str, object], registry: str, path: Path) -> Credentials | None:
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InputError(f"{path}: the auth entry for {registry} is not base64 of "
                             "user:password.") from None
        if not sep:
            raise InputError(f"{path}: the auth entry for {registry} has no ':' between user "
                             "and password.")
        return Credentials(user, password, token if isinstance(token, str) else None)
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(password, str):
        return Credentials(user, password, token if isinstance(token, str) else None)
    if isinstance(token, str) and token:
        return Credentials(identity_token=token)
    return None


def _from_helper(helper: str, registry: str, path: Path, *, missing_ok: bool = False
                 ) -> Credentials | None:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", helper):
        raise InputError(f"{path}: credential helper name {helper[:60]!r} is not a plain name.")
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        if missing_ok:
            return None
        raise InputError(f"{path}: names credential helper {helper!r} for {registry}, but "
                         f"docker-credential-{helper} is not on PATH.")
    try:
        result = subprocess.run([program, "get"], input=registry, capture_output=True,
                                text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        raise InputError(f"docker-credential-{helper} did not answer for {registry}.") from None
    if result.returncode != 0:
        return None  # "credentials not found": anonymous access may still work
    try:
        answer = json.loads(result.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"docker-credential-{helper} gave no credentials for {registry} "
                         "that could be read.") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise InputError(f"docker-credential-{helper} gave no credentials for {registry} "
                         "that could be read.")
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user, secret)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header (RFC 7235), or None."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "basic"):
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()})
