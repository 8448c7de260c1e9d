"""`oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]` references, checked against the distribution spec."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from verifier.errors import InputError

SCHEME = "oci://"
# The distribution spec's grammar for repository names and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
                   r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\]")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """One artifact in a registry: by tag, by digest, or neither (a repository alone)."""

    registry: str  # host[:port], as the user wrote it
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        if self.registry.startswith("["):
            return self.registry[1:self.registry.index("]")]
        return self.registry.rsplit(":", 1)[0] if ":" in self.registry else self.registry

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def repository_uri(self) -> str:
        return f"{SCHEME}{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What the manifests endpoint is asked for: the digest when there is one."""
        return self.digest or self.tag or "latest"

    def at(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def pinned(self) -> str:
        """The reference by digest alone, the form a deployer should record."""
        return f"{self.repository_uri}@{self.digest}" if self.digest else str(self)

    def __str__(self) -> str:
        text = self.repository_uri
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_oci(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_reference(text: str) -> Reference:
    """Parse an oci:// reference; InputError names what is wrong with it."""
    if not is_oci(text):
        raise InputError(f"{text}: not an OCI reference; write oci://HOST[:PORT]/REPO[:TAG] "
                         "or oci://HOST/REPO@sha256:HEX.")
    rest = text[len(SCHEME):]
    registry, slash, path = rest.partition("/")
    if not slash or not path:
        raise InputError(f"{text}: names no repository; write oci://HOST[:PORT]/REPO.")
    host, _, port = (registry.rpartition(":") if not registry.endswith("]")
                     else (registry, "", ""))
    if not host:
        host, port = registry, ""
    if not _HOST.fullmatch(host) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise InputError(f"{text}: {registry!r} is not a registry host[:port].")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not DIGEST.fullmatch(digest):
            raise InputError(f"{text}: {digest!r} is not a sha256 digest "
                             "(sha256: and 64 lowercase hex digits).")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise InputError(f"{text}: {tag!r} is not a valid tag.")
    if not _REPOSITORY.fullmatch(path) or len(path) > 255:
        raise InputError(f"{text}: {path!r} is not a valid repository name (lowercase letters, "
                         "digits and separators . _ - /).")
    return Reference(registry, path, tag, digest)
