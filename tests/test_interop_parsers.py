"""Property tests and fuzzing for the parsers issue #13 added: PKCS#11 URIs, `--artifact`
references, in-toto link files, and Rekor entry bodies. Whatever the input, the answer is a
value or one InputError sentence, never another exception."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.errors import InputError
from verifier.formats.bundlecheck import ArtifactRef
from verifier.formats.pkcs11 import parse_uri
from verifier.formats.transparency import Signed, _body_problem
from verifier.neighbours.intoto_links import read_link

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


@given(token=TEXT, label=TEXT.filter(bool), module=TEXT.filter(bool), pin=TEXT)
def test_pkcs11_uri_attributes_round_trip_through_percent_encoding(
        token: str, label: str, module: str, pin: str) -> None:
    secret = f"secret-{pin}"  # long enough that no other part of the text holds it by chance
    uri = (f"pkcs11:token={quote(token, safe='')};object={quote(label, safe='')}"
           f"?module-path={quote(module, safe='')}&pin-value={quote(secret, safe='')}")
    parsed = parse_uri(uri)
    assert (parsed.token, parsed.label, parsed.module_path, parsed.pin_value) == (
        token, label, module, secret)
    assert secret not in parsed.safe_text or secret in f"{token}{label}"


@given(st.text(max_size=200))
def test_any_pkcs11_text_is_parsed_or_refused_with_a_sentence(text: str) -> None:
    try:
        parse_uri("pkcs11:" + text)
    except InputError as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize("uri,fragment", [
    ("pkcs11:object=k", "module-path"),
    ("pkcs11:token=t?module-path=/lib.so", "object=LABEL"),
    ("pkcs11:object=k;object=j?module-path=/lib.so", "twice"),
    ("pkcs11:object=k;color=red?module-path=/lib.so", "'color'"),
    ("pkcs11:object=k?module-path=/lib.so&pin-value=1&pin-source=/p", "not both"),
])
def test_bad_pkcs11_uris_name_the_problem(uri: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        parse_uri(uri)


@given(st.text(max_size=80))
def test_artifact_references_are_a_digest_or_a_path(text: str) -> None:
    try:
        ref = ArtifactRef.parse(text)
    except InputError:
        assert text.startswith("sha256:")
        return
    if ref.given_sha256 is not None:
        assert text.lower() == f"sha256:{ref.given_sha256}"
    else:
        assert ref.path == Path(text)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=JSON)
def test_any_json_link_file_is_read_or_refused_with_a_sentence(tmp_path: Path,
                                                               data: object) -> None:
    path = tmp_path / "x.link"
    path.write_text(json.dumps(data))
    try:
        link = read_link(path)
    except InputError as error:
        assert str(path) in str(error)
        return
    assert link.signatures and link.fields.get("_type") == "link"


@settings(max_examples=300)
@given(body=JSON, kind=st.sampled_from(["hashedrekord", "dsse", "intoto"]),
       version=st.sampled_from(["0.0.1", "0.0.2"]))
def test_any_log_entry_body_gets_a_reason_or_matches(body: object, kind: str,
                                                      version: str) -> None:
    signed = Signed(b"sig", b"key", artifact_sha256=b"\x00" * 32)
    problem = _body_problem(body, kind, version, signed)  # type: ignore[arg-type]
    assert problem is None or isinstance(problem, str)
    assert problem is not None  # random bodies never describe this bundle
