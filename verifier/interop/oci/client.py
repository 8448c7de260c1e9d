"""The OCI distribution API, the calls the spec documents and no others, over requests.

Every answer is bounded before it is read, every content-addressed answer is checked against
the digest asked for, and every network failure becomes one sentence. Tokens come from the
registry's own Bearer challenge (the distribution token spec); TLS is verified unless the
registry is on loopback and plain HTTP was asked for.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

from verifier.errors import InputError, VerificationFailure
from verifier.interop.oci.auth import Credentials, parse_challenge
from verifier.interop.oci.media import INDEX, MANIFEST, MAX_MANIFEST_BYTES, sha256_digest
from verifier.interop.oci.reference import Reference

CHUNK = 1024 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
# A manifest, index, token or error body must arrive whole within this; blobs, which may be
# gigabytes, are bounded only by the read timeout (no byte for that long fails the fetch).
DOCUMENT_SECONDS = 120.0
USER_AGENT = "model-verifier"
ProgressCallback = Callable[[int], None]


class RegistryError(InputError):
    """The registry could not be reached or refused a call: the input is unusable (exit 2)."""


class BlobMissing(InputError):
    """The registry has no blob by that digest (404), though a manifest may still name it."""


class _Body:
    """A file body for requests: a known length (so no chunked encoding) and 1 MiB reads (the
    8 KiB reads http.client asks for cost a third of loopback throughput)."""

    def __init__(self, stream: BinaryIO, size: int, progress: ProgressCallback | None) -> None:
        self._stream, self._size, self._progress = stream, size, progress

    def __len__(self) -> int:
        return self._size

    def read(self, _size: int = -1) -> bytes:
        data = self._stream.read(CHUNK)
        if data and self._progress is not None:
            self._progress(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()


class Registry:
    """One repository of one registry."""

    def __init__(self, reference: Reference, *, credentials: Credentials | None = None,
                 plain_http: bool = False, timeout: float = 60.0, session: Any = None) -> None:
        import requests

        if plain_http and not reference.is_loopback:
            raise InputError(f"{reference}: --plain-http is allowed only for a registry on "
                             "loopback (localhost, 127.0.0.1, ::1); TLS protects the rest.")
        self.reference = reference
        self.repository = reference.repository
        self._scheme = "http" if plain_http else "https"
        self._base = f"{self._scheme}://{reference.registry}/v2/"
        self._credentials = credentials
        self._timeout = (10.0, timeout)
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._tokens: dict[str, str] = {}
        self._basic = False

    # --- transport ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _network(self, what: str) -> Iterator[None]:
        import requests
        import urllib3

        try:
            yield
        except requests.exceptions.SSLError:
            raise RegistryError(f"{self.reference.registry}: its TLS certificate did not verify "
                             f"while {what} (for a private CA, set REQUESTS_CA_BUNDLE).") from None
        except (requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError):
            raise RegistryError(f"{self.reference.registry}: the connection broke while {what}; "
                             "nothing was kept.") from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"{self.reference.registry}: timed out while {what}.") from None
        except requests.exceptions.ConnectionError:
            raise RegistryError(f"{self.reference.registry}: cannot be reached while {what} "
                             "(connection refused or closed).") from None
        except requests.exceptions.RequestException as error:
            raise RegistryError(f"{self.reference.registry}: request failed while {what} "
                             f"({type(error).__name__}).") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise RegistryError(f"{self.reference.registry}: timed out while {what}.") from None
        except urllib3.exceptions.HTTPError:
            # Raised by the bounded reads, which read the raw stream rather than requests'.
            raise RegistryError(f"{self.reference.registry}: the connection broke while {what}; "
                             "nothing was kept.") from None

    def _is_registry(self, url: str) -> bool:
        """Whether `url` is on the registry itself: the same scheme, host and port."""
        def origin(address: str) -> tuple[str, str, int | None]:
            parts = urlsplit(address)
            default = {"http": 80, "https": 443}.get(parts.scheme)
            try:
                port = parts.port or default
            except ValueError:
                port = None
            return parts.scheme, (parts.hostname or "").lower(), port

        return origin(url) == origin(self._base)

    def _scope(self, push: bool) -> str:
        return f"repository:{self.repository}:{'pull,push' if push else 'pull'}"

    def _headers(self, push: bool, headers: dict[str, str] | None) -> dict[str, str]:
        merged = dict(headers or {})
        token = self._tokens.get(self._scope(push)) or (
            None if push else self._tokens.get(self._scope(True)))
        if token is not None:
            merged["Authorization"] = f"Bearer {token}"
        return merged

    def _auth(self) -> Any:
        if self._basic and self._credentials and self._credentials.username is not None:
            return (self._credentials.username, self._credentials.password or "")
        return None

    def request(self, method: str, url: str, what: str, *, push: bool = False,
                headers: dict[str, str] | None = None, data: Any = None,
                stream: bool = False, params: dict[str, str] | None = None) -> Any:
        """One call, answering the registry's authentication challenge once if it makes one."""
        url = urljoin(self._base, url)
        with self._network(what):
            response = self._session.request(
                method, url, headers=self._headers(push, headers), data=data, stream=stream,
                params=params, timeout=self._timeout, auth=self._auth())
            if response.status_code != 401:
                return response
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            response.close()
            if not self._is_registry(response.url):
                # A redirect may lead anywhere (a CDN, or a host an attacker chose); only the
                # registry's own challenge is answered, so its credentials go nowhere else.
                raise RegistryError(
                    f"{self.reference.registry}: redirected the request to "
                    f"{urlsplit(response.url).netloc}, which asked for credentials while "
                    f"{what}; the registry's credentials are not sent to another host.")
            if challenge is None:
                raise RegistryError(f"{self.reference.registry}: refused access while {what} "
                                 "(401) and named no authentication scheme this tool speaks.")
            if challenge.scheme == "basic":
                if self._credentials is None or self._credentials.username is None:
                    raise RegistryError(
                        f"{self.reference.registry}: needs a user name and password while "
                        f"{what}; use docker login, or --username and --password-stdin.")
                self._basic = True
            else:
                self._tokens[self._scope(push)] = self._token(challenge.params, push)
            if hasattr(data, "seek"):
                data.seek(0)
            response = self._session.request(
                method, url, headers=self._headers(push, headers), data=data, stream=stream,
                params=params, timeout=self._timeout, auth=self._auth())
        if response.status_code == 401:
            response.close()
            raise RegistryError(f"{self.reference.registry}: refused the credentials while {what} "
                             "(401 after authenticating).")
        return response

    def _token(self, challenge: dict[str, str], push: bool) -> str:
        realm = challenge.get("realm")
        if not realm or urlsplit(realm).scheme not in ("https", "http"):
            raise RegistryError(f"{self.reference.registry}: its Bearer challenge names no token "
                             "realm.")
        if urlsplit(realm).scheme == "http" and self._scheme == "https":
            raise RegistryError(f"{self.reference.registry}: its token realm {realm} is plain "
                             "HTTP; credentials are not sent there.")
        scopes = [self._scope(push)]
        if challenge.get("scope") and challenge["scope"] not in scopes:
            scopes.append(challenge["scope"])
        service = challenge.get("service", "")
        credentials = self._credentials
        what = f"asking {urlsplit(realm).netloc} for a token"
        with self._network(what):
            if credentials is not None and credentials.identity_token:
                response = self._session.post(realm, data={
                    "grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                    "service": service, "scope": " ".join(scopes),
                    "client_id": USER_AGENT}, timeout=self._timeout, stream=True)
            else:
                auth = ((credentials.username, credentials.password or "")
                        if credentials is not None and credentials.username is not None
                        else None)
                response = self._session.get(realm, params={"service": service,
                                                            "scope": scopes},
                                             auth=auth, timeout=self._timeout, stream=True)
            body = self._bounded(response, MAX_TOKEN_BYTES, what)
        if response.status_code != 200:
            raise RegistryError(f"{self.reference.registry}: the token service refused "
                             f"({response.status_code}) while {what}; check the credentials.")
        try:
            import json

            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.reference.registry}: the token service's answer holds no "
                             "token.")
        return token

    def _bounded(self, response: Any, limit: int, what: str) -> bytes:
        """The body, refused past `limit` bytes before it is all read."""
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            response.close()
            raise InputError(f"{self.reference.registry}: sent {int(declared)} bytes while "
                             f"{what}, more than the {limit} allowed.")
        if getattr(response, "_content_consumed", False):  # not streamed: requests read it
            return bytes(response.content[:limit])
        # requests' timeout bounds each read, not the whole: a registry sending a byte a
        # second would never time out. read1 returns whatever arrived, so the clock (started
        # when the request was sent) is checked at least once a read timeout.
        deadline = time.monotonic() + DOCUMENT_SECONDS - response.elapsed.total_seconds()
        body = bytearray()
        while chunk := response.raw.read1(64 * 1024, decode_content=True):
            body += chunk
            if len(body) > limit:
                response.close()
                raise InputError(f"{self.reference.registry}: sent more than {limit} bytes "
                                 f"while {what}.")
            if time.monotonic() > deadline:
                response.close()
                raise RegistryError(f"{self.reference.registry}: took more than "
                                    f"{DOCUMENT_SECONDS:g} s to send a small document while "
                                    f"{what}.")
        return bytes(body)

    def _fail(self, response: Any, what: str) -> InputError:
        detail = ""
        with contextlib.suppress(Exception):
            import json

            errors = json.loads(self._bounded(response, MAX_ERROR_BYTES, what))["errors"]
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3])
        response.close()
        return RegistryError(f"{self.reference.registry}: answered {response.status_code} while "
                          f"{what}{f' ({detail[:300]})' if detail else ''}.")

    # --- the distribution API -----------------------------------------------------------------

    def check(self) -> None:
        """GET /v2/: the registry speaks the distribution API (and lets us in)."""
        what = "checking it speaks the OCI distribution API"
        with self._network(what):
            response = self.request("GET", "", what)
            status = response.status_code
            response.close()
        if status != 200:
            raise InputError(f"{self.reference.registry}: answered {status} at /v2/; it is not "
                             "an OCI registry, or not one this tool can use.")

    def manifest(self, identifier: str, accept: tuple[str, ...] = (MANIFEST,)
                 ) -> tuple[bytes, str] | None:
        """(bytes, digest) of a manifest or index; None when the registry has no such one.

        Asked for by digest, the bytes must hash to it; asked for by tag, the digest is what the
        bytes hash to (a registry's Docker-Content-Digest header is never taken on trust)."""
        what = f"fetching manifest {self.repository}:{identifier}"
        with self._network(what):
            response = self.request("GET", f"{self.repository}/manifests/{identifier}", what,
                                    headers={"Accept": ", ".join(accept)}, stream=True)
            if response.status_code == 404:
                response.close()
                return None
            if response.status_code != 200:
                raise self._fail(response, what)
            data = self._bounded(response, MAX_MANIFEST_BYTES, what)
        digest = sha256_digest(data)
        if identifier.startswith("sha256:") and digest != identifier:
            raise VerificationFailure(
                f"{self.reference.repository_uri}@{identifier}: the registry served a manifest "
                f"whose sha256 is {digest}, not the digest asked for; refusing it.")
        return data, digest

    def put_manifest(self, identifier: str, data: bytes, media_type: str = MANIFEST
                     ) -> tuple[str, bool]:
        """Store a manifest under a tag or its digest: (digest, the registry indexed its
        subject itself, as a registry with the Referrers API says by an OCI-Subject header)."""
        what = f"storing manifest {self.repository}:{identifier}"
        digest = sha256_digest(data)
        with self._network(what):
            response = self.request("PUT", f"{self.repository}/manifests/{identifier}", what,
                                    push=True, headers={"Content-Type": media_type}, data=data)
            if response.status_code not in (200, 201, 202):
                raise self._fail(response, what)
            response.close()
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise VerificationFailure(f"{self.reference.registry}: stored manifest {digest} but "
                                      f"says its digest is {answered}; refusing to go on.")
        return digest, "OCI-Subject" in response.headers

    def blob_exists(self, digest: str) -> bool:
        what = f"looking for blob {digest}"
        with self._network(what):
            response = self.request("HEAD", f"{self.repository}/blobs/{digest}", what, push=True)
            response.close()
        if response.status_code in (200, 307):
            return True
        if response.status_code == 404:
            return False
        raise RegistryError(f"{self.reference.registry}: answered {response.status_code} while "
                         f"{what}.")

    def upload_blob(self, digest: str, size: int, stream: BinaryIO,
                    progress: ProgressCallback | None = None) -> None:
        """A monolithic upload: POST opens a session, one PUT carries the bytes and the digest."""
        what = f"uploading blob {digest}"
        with self._network(what):
            response = self.request("POST", f"{self.repository}/blobs/uploads/", what, push=True)
            if response.status_code != 202 or not response.headers.get("Location"):
                raise self._fail(response, what)
            response.close()
            location = urljoin(self._base, response.headers["Location"])
            if urlsplit(location).netloc != urlsplit(self._base).netloc:
                raise RegistryError(f"{self.reference.registry}: sent the upload to another host "
                                 f"({urlsplit(location).netloc}); refusing.")
            separator = "&" if urlsplit(location).query else "?"
            response = self.request(
                "PUT", f"{location}{separator}digest={digest}", what, push=True,
                headers={"Content-Type": "application/octet-stream"},
                data=_Body(stream, size, progress))
            if response.status_code not in (201, 204):
                raise self._fail(response, what)
            response.close()

    def upload_bytes(self, data: bytes) -> str:
        import io

        digest = sha256_digest(data)
        if not self.blob_exists(digest):
            self.upload_blob(digest, len(data), io.BytesIO(data))
        return digest

    def blob_chunks(self, digest: str, size: int) -> Iterator[bytes]:
        """The blob's bytes as they arrive; the caller hashes them. Refused when the registry
        announces or sends other than `size` bytes."""
        what = f"fetching blob {digest}"
        with self._network(what):
            response = self.request("GET", f"{self.repository}/blobs/{digest}", what,
                                    stream=True)
            if response.status_code == 404:
                response.close()
                raise BlobMissing(f"{self.reference.repository_uri}@{digest}: the registry "
                                  "has no such blob (it may have been deleted).")
            if response.status_code != 200:
                raise self._fail(response, what)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) != size:
                response.close()
                raise VerificationFailure(
                    f"{self.reference.repository_uri}@{digest}: the registry announced "
                    f"{declared} bytes for a blob the manifest says is {size}; refusing it.")
            received = 0
            try:
                for chunk in response.iter_content(CHUNK):
                    received += len(chunk)
                    if received > size:
                        raise VerificationFailure(
                            f"{self.reference.repository_uri}@{digest}: the registry sent more "
                            f"than the {size} bytes the manifest promises; refusing it.")
                    yield chunk
            finally:
                response.close()
        if received != size:
            raise RegistryError(f"{self.reference.registry}: sent {received} of {size} bytes of "
                             f"blob {digest} before the connection ended; nothing was kept.")

    def referrers_api(self, digest: str) -> bytes | None:
        """The Referrers API's index for `digest`, or None where the registry has no such API."""
        what = f"listing referrers of {digest}"
        with self._network(what):
            response = self.request("GET", f"{self.repository}/referrers/{digest}", what,
                                    headers={"Accept": INDEX}, stream=True)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            if response.status_code != 200 or content_type != INDEX:
                # 404 (or a page that is not an index): no API here; the tag schema it is.
                response.close()
                return None
            return self._bounded(response, MAX_MANIFEST_BYTES, what)

