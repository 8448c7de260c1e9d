"""Classic in-toto links and layouts: export our step attestations, verify them against a layout.

Export turns each step attestation (SLSA provenance with our buildType, in a DSSE bundle) into a
classic in-toto link signed with securesystemslib, named `<step>.<keyid8>.link`, so that the
`in-toto-verify` command accepts it. Only attestations whose signature verifies under a key the
exporter names are re-signed: export never launders a signature it cannot check.

Layout verification goes the other way for users whose policy is an existing layout. in-toto 3.1
cannot read a DSSE envelope that holds a Statement v1, so each statement is converted to a link
in memory; the DSSE signature itself is checked here against the functionary keys the layout
names (never against a keyid hint), and in-toto's own rule functions judge the converted links.
Inspections are refused: a deployment gate runs nothing a layout names.

in-toto's own links count as evidence next to our bundles: classic `.link` files (a Metablock,
`{"signed": {"_type": "link", ...}, "signatures": [...]}`, signed over canonical JSON) and
DSSE envelopes whose payload is a link (`in-toto-run --use-dsse`). Their signatures are checked
against the functionary keys the layout names, by in-toto's own key ids, never by the keyid a
signature claims.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError, SignatureError, VerificationFailure
from verifier.formats import readers
from verifier.formats.digest import dir_hash
from verifier.formats.envelope import (
    INTOTO_PAYLOAD_TYPE,
    Bundle,
    loads_capped,
    pae,
    read_bundles,
    write_atomic,
)
from verifier.formats.statement import (
    REBUILD_PREDICATE_TYPE,
    StepRecord,
    as_step,
    parse_statement,
)

if TYPE_CHECKING:
    from verifier.formats.signing import PublicKey

LINK_FORMAT = "in-toto-link"
MAX_LINK_BYTES = 16 * readers.MIB
# One object per material or product (its digest set): room for a link over 100,000 files,
# while eight hostile links of 15 MiB of `{}` can no longer take gigabytes between them.
MAX_LINK_OBJECTS = 100_000


@dataclass(frozen=True)
class ExportedLink:
    step: str
    link: Path
    attestation: str
    keyid: str

    def to_dict(self) -> dict[str, str]:
        return {"step": self.step, "link": str(self.link), "attestation": self.attestation,
                "keyid": self.keyid}


def _canonical_safe(value: Any) -> Any:
    """What securesystemslib's canonical JSON accepts: no floats, string keys only."""
    if isinstance(value, dict):
        return {str(k): _canonical_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical_safe(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def _sha256_only(descriptors: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Artifacts as in-toto links list them: files by sha256. Directory entries (dirHash) are
    left out because every file under them is recorded as its own descriptor."""
    return {d["name"]: {"sha256": d["digest"]["sha256"]}
            for d in descriptors if "sha256" in d["digest"]}


def _return_value(record: StepRecord) -> int:
    for byproduct in record.statement.predicate.get("runDetails", {}).get("byproducts", []):
        if isinstance(byproduct, dict) and byproduct.get("name") == "exit-code":
            try:
                return int(base64.b64decode(str(byproduct.get("content", ""))).decode())
            except (binascii.Error, UnicodeDecodeError, ValueError):
                break
    return 0  # record attests only steps that exited 0


def link_fields(record: StepRecord) -> dict[str, Any]:
    """The classic link (its `signed` part) that says what the step attestation says."""
    run_details = record.statement.predicate.get("runDetails", {})
    byproducts: dict[str, Any] = {"return-value": _return_value(record)}
    for byproduct in run_details.get("byproducts", []):
        if isinstance(byproduct, dict) and byproduct.get("name") in ("stdout", "stderr"):
            sha = (byproduct.get("digest") or {}).get("sha256")
            if isinstance(sha, str):
                byproducts[f"{byproduct['name']}-sha256"] = sha
    environment = {
        "workdir": record.working_directory,
        "variables": dict(sorted(record.declared_env.items())),
        "captured": record.environment,
        "attestation": {
            "payloadSha256": record.statement.payload_sha256,
            "invocationId": (run_details.get("metadata") or {}).get("invocationId"),
        },
    }
    return _canonical_safe({
        "name": record.step,
        "command": list(record.argv),
        "materials": _sha256_only(record.materials),
        "products": _sha256_only(record.products),
        "byproducts": byproducts,
        "environment": environment,
    })


def _step_records(paths: list[Path], trusted: list[PublicKey], notes: list[str]
                  ) -> list[tuple[Bundle, StepRecord]]:
    from verifier.formats.evidence import attestation_files
    from verifier.formats.signing import bundle_signed_by

    found: list[tuple[Bundle, StepRecord]] = []
    for path in attestation_files(paths):
        for bundle in read_bundles(path):
            if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
                raise InputError(f"{bundle.source}: payload type {bundle.payload_type!r} is not "
                                 "in-toto, so it is no step attestation.")
            if not any(bundle_signed_by(bundle, key) for key in trusted):
                raise SignatureError(
                    f"{bundle.source}: is not signed by the export key or any --attested-by key; "
                    "export re-signs only attestations whose signature it can check."
                )
            statement = parse_statement(bundle.payload, bundle.source)
            if statement.predicate_type == REBUILD_PREDICATE_TYPE:
                notes.append(f"skipped {bundle.source}: a rebuild attestation is not a step.")
                continue
            found.append((bundle, as_step(statement)))
    return found


def _sslib_signer(key_signer: Any) -> Any:
    """A securesystemslib Signer over our KeySigner (file or PKCS#11 key alike). Its scheme is
    the one securesystemslib assigns the key type, which is the scheme KeySigner signs in."""
    from securesystemslib.signer import Signature, Signer, SSlibKey

    public = SSlibKey.from_crypto(key_signer.public_key)

    class _Adapter(Signer):
        @property
        def public_key(self) -> SSlibKey:
            return public

        def sign(self, payload: bytes) -> Signature:
            return Signature(public.keyid, key_signer.sign(payload).hex())

        @classmethod
        def from_priv_key_uri(cls, priv_key_uri: str, public_key: Any,
                              secrets_handler: Any = None) -> Signer:
            raise NotImplementedError  # made from a KeySigner, never from a URI

    return _Adapter()


def export_links(attestations: list[Path], key_path: Path | str, out_dir: Path, *,
                 password: str | None = None, attested_by: Iterable[Path] = (),
                 force: bool = False, notes: list[str] | None = None) -> list[ExportedLink]:
    """Write one signed classic link per step attestation; return what was written."""
    from in_toto.models.link import FILENAME_FORMAT, Link
    from in_toto.models.metadata import Metablock

    from verifier.formats.signing import PublicKey, load_public_key, open_signer

    key_signer = open_signer(key_path, password)
    signer = _sslib_signer(key_signer)
    keyid = signer.public_key.keyid
    trusted = [PublicKey(key_signer.source, key_signer.public_key, key_signer.public_pem)]
    trusted += [load_public_key(path) for path in attested_by]
    records = _step_records(attestations, trusted, notes if notes is not None else [])
    if not records:
        raise InputError("export: no step attestations given.")
    seen: dict[str, str] = {}
    for bundle, record in records:
        if record.step in seen:
            raise InputError(f"{bundle.source}: step {record.step!r} is also attested by "
                             f"{seen[record.step]}; a layout takes one link per step and key.")
        seen[record.step] = bundle.source
    written: list[ExportedLink] = []
    for bundle, record in records:
        metablock = Metablock(signed=Link(**link_fields(record)))
        metablock.create_signature(signer)
        target = out_dir / FILENAME_FORMAT.format(step_name=record.step, keyid=keyid)
        text = json.dumps(metablock.to_dict(), indent=1, sort_keys=True) + "\n"
        write_atomic(target, text, overwrite=force)
        written.append(ExportedLink(record.step, target, bundle.source, keyid))
    return written


# --- verification against a layout -------------------------------------------------------------


def _layout_key(path: Path) -> tuple[str, dict[str, Any]]:
    """A layout verification key as in-toto wants it: (keyid, legacy key dict)."""
    from securesystemslib.signer import SSlibKey

    from verifier.formats.signing import load_public_key

    public = load_public_key(path)
    key = SSlibKey.from_crypto(public.key)  # type: ignore[arg-type]
    as_dict = key.to_dict()
    as_dict["keyid"] = key.keyid
    return key.keyid, as_dict


def load_layout(path: Path, key_paths: list[Path]) -> Any:
    """Read a layout, check it is signed by every given key and not expired; return the Layout."""
    from in_toto.exceptions import LayoutExpiredError, SignatureVerificationError
    from in_toto.models.layout import Layout
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import verify_layout_expiration, verify_metadata_signatures

    if not key_paths:
        raise InputError(f"{path}: give the layout owner's public key with --layout-key PUB.")
    keys = dict(_layout_key(key_path) for key_path in key_paths)
    if not path.is_file():
        raise InputError(f"{path}: no such layout file.")
    try:
        metadata = Metadata.load(str(path))
        layout = metadata.get_payload()
    except Exception as error:  # in-toto raises many types for one cause: not a layout
        raise InputError(f"{path}: is not in-toto layout metadata "
                         f"({type(error).__name__}).") from None
    if not isinstance(layout, Layout):
        raise InputError(f"{path}: holds a link, not a layout.")
    try:
        verify_metadata_signatures(metadata, keys)
    except SignatureVerificationError:
        names = ", ".join(str(p) for p in key_paths)
        raise SignatureError(f"{path}: the layout is not signed by {names}.") from None
    except Exception as error:
        raise SignatureError(f"{path}: the layout signature cannot be checked "
                             f"({type(error).__name__}).") from None
    try:
        verify_layout_expiration(layout)
    except LayoutExpiredError:
        raise VerificationFailure(f"{path}: the layout expired on {layout.expires}.") from None
    if layout.inspect:
        names = ", ".join(i.name for i in layout.inspect)
        raise InputError(f"{path}: the layout has inspections ({names}); verify-model runs no "
                         "command a layout names, so use in-toto-verify for this layout.")
    return layout


def _functionary_keys(layout: Any, step: Any) -> dict[str, Any]:
    from securesystemslib.signer import Key

    keys: dict[str, Any] = {}
    for keyid in step.pubkeys:
        key_dict = layout.keys.get(keyid)
        if key_dict is None:
            continue
        try:
            keys[keyid] = Key.from_dict(keyid, dict(key_dict))
        except Exception:  # an unusable key verifies nothing; in-toto would ignore it too
            continue
    return keys


def _verified_by(bundle: Bundle, keys: dict[str, Any]) -> list[str]:
    """Keyids among `keys` whose key verifies one of the bundle's DSSE signatures."""
    from securesystemslib.signer import Signature

    message = pae(bundle.payload_type, bundle.payload)
    found: list[str] = []
    for keyid, key in keys.items():
        for entry in bundle.signatures:
            try:
                key.verify_signature(Signature(keyid, entry.sig.hex()), message)
            except Exception:  # UnverifiedSignatureError / VerificationError: not this key
                continue
            found.append(keyid)
            break
    return found


@dataclass(frozen=True)
class ClassicLink:
    """An in-toto link as in-toto writes it, read from a `.link` file (nothing trusted yet)."""

    source: str
    fields: dict[str, Any]  # the link's `signed` part
    message: bytes  # the bytes its signatures cover
    signatures: tuple[tuple[str, bytes], ...]  # (claimed keyid, signature)

    @property
    def name(self) -> str:
        return str(self.fields.get("name", ""))

    def verified_by(self, keys: dict[str, Any]) -> list[str]:
        """Keyids among `keys` whose key verifies one of the link's signatures."""
        from securesystemslib.signer import Signature

        found = []
        for keyid, key in keys.items():
            for claimed, sig in self.signatures:
                try:
                    key.verify_signature(Signature(claimed or keyid, sig.hex()), self.message)
                except Exception:  # UnverifiedSignatureError / VerificationError: not this key
                    continue
                found.append(keyid)
                break
        return found

    def product_digests(self) -> set[str]:
        products = self.fields.get("products") or {}
        return {d["sha256"] for d in products.values()
                if isinstance(d, dict) and isinstance(d.get("sha256"), str)}

    def directory_digests(self) -> set[str]:
        """The dirHash of every directory holding products, from the products listed in it: a
        link lists a directory's files one by one (in-toto has no directory digest), so the
        directory is a product exactly when its files are those, with those digests."""
        products = self.fields.get("products") or {}
        folders: dict[str, dict[str, str]] = {}
        for name, digests in products.items():
            sha256 = digests.get("sha256") if isinstance(digests, dict) else None
            parts = str(name).split("/")
            if not isinstance(sha256, str) or any(p in ("", ".", "..") for p in parts):
                continue
            for depth in range(1, len(parts)):
                folders.setdefault("/".join(parts[:depth]), {})["/".join(parts[depth:])] = sha256
        return {dir_hash(files) for files in folders.values()}


def link_files(paths: list[Path]) -> list[Path]:
    """Every `*.link` file under the attestation directories (or given directly)."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            if path.suffix == ".link":
                found.append(path)
        elif path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.link"), key=str) if p.is_file())
    return found


def read_link(path: Path) -> ClassicLink:
    """Read one classic link (Metablock or DSSE); InputError (one sentence) when it is not."""
    from securesystemslib.formats import encode_canonical

    from verifier.formats.envelope import b64decode

    # Unsigned until checked, so capped like a bundle: bytes, then the objects decoding builds
    # (those cost memory, a few hundred bytes each, far more than their text).
    text = readers.read_text(path, "in-toto link", MAX_LINK_BYTES)
    data = loads_capped(text, str(path), "in-toto link", MAX_LINK_OBJECTS)
    if not isinstance(data, dict):
        raise InputError(f"{path}: is not an in-toto link.")
    from verifier.formats.envelope import MAX_SIGNATURES

    listed = data.get("signatures")
    if isinstance(listed, list) and len(listed) > MAX_SIGNATURES:
        # Each is tried against every policy key: the envelope cap holds for links too.
        raise InputError(f"{path}: the link carries {len(listed)} signatures; more than "
                         f"{MAX_SIGNATURES} are refused.")
    signatures: list[tuple[str, bytes]] = []
    if "signed" in data:  # Metablock: hex signatures over canonical JSON of `signed`
        fields = data.get("signed")
        if not isinstance(fields, dict) or fields.get("_type") != "link":
            raise InputError(f"{path}: is in-toto metadata but not a link.")
        try:
            message = encode_canonical(fields).encode("utf-8")  # type: ignore[union-attr]
            for entry in data.get("signatures") or []:
                signatures.append((str(entry.get("keyid", "")), bytes.fromhex(entry["sig"])))
        except Exception:  # FormatError, KeyError, ValueError: malformed
            raise InputError(f"{path}: the link's signatures or fields are malformed.") \
                from None
    elif "payload" in data and "payloadType" in data:  # DSSE envelope holding a link
        try:
            payload = b64decode(data["payload"])
            fields = loads_capped(payload.decode("utf-8"), str(path), "in-toto link",
                                  MAX_LINK_OBJECTS)
            for entry in data.get("signatures") or []:
                signatures.append((str(entry.get("keyid", "")), b64decode(entry["sig"])))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise InputError(f"{path}: the DSSE link envelope is malformed.") from None
        if not isinstance(fields, dict) or fields.get("_type") != "link":
            raise InputError(f"{path}: the DSSE envelope holds no in-toto link.")
        message = pae(str(data["payloadType"]), payload)
    else:
        raise InputError(f"{path}: is neither an in-toto Metablock nor a DSSE envelope.")
    if not signatures:
        raise InputError(f"{path}: the link carries no signature.")
    return ClassicLink(str(path), fields, message, tuple(signatures))


LINK_PREDICATE_TYPE = "https://in-toto.io/attestation/link/v0.3"


def link_as_step(link: ClassicLink) -> StepRecord:
    """The step view of an in-toto link, so that audit can place it in the graph: products
    become subjects, materials materials (files by sha256), the command the argv. The payload
    digest is that of the signed bytes. Raises InputError when the link is malformed."""
    import hashlib

    from verifier.formats.statement import Statement

    fields = link.fields
    try:
        _link_object(fields)  # in-toto's own shape check
    except Exception:  # FormatError and friends
        raise InputError(f"{link.source}: is not a well-formed in-toto link.") from None

    def descriptors(side: str) -> tuple[dict[str, Any], ...]:
        found = []
        for name, digests in sorted((fields.get(side) or {}).items()):
            if not isinstance(digests, dict) or not digests or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
                raise InputError(f"{link.source}: {side} {name!r} has no valid digest.")
            found.append({"name": str(name), "digest": dict(digests)})
        return tuple(found)

    command = fields.get("command") or []
    environment = fields.get("environment") or {}
    statement = Statement(link.source, descriptors("products"), LINK_PREDICATE_TYPE,
                          {k: v for k, v in fields.items() if k != "_type"},
                          hashlib.sha256(link.message).hexdigest())
    return StepRecord(
        statement=statement, step=link.name, argv=tuple(str(a) for a in command),
        working_directory=str(environment.get("workdir", ".")) if isinstance(
            environment, dict) else ".",
        declared_env={}, environment=environment if isinstance(environment, dict) else {},
        materials=descriptors("materials"))


def _link_object(fields: dict[str, Any]) -> Any:
    from in_toto.models.link import Link

    return Link.read({k: v for k, v in fields.items() if k != "_type"})
