"""OpenSSF Model Signing (OMS) v1.0 `model.sig`: read and check one, write one.

An OMS signature is a Sigstore bundle whose DSSE payload is an in-toto Statement v1 with the
predicate `https://model_signing/signature/v1.0`: one subject (the model's name and a root digest)
and `predicate.resources`, the sha256 of every file by its relative path. The root digest is
sha256 over the concatenated file digests and carries no file names, so a rename leaves it
unchanged: a check compares the per-file resources with the files, never the root digest alone.

Only the `files` serialization with sha256 is read or written. Names must be canonical relative
POSIX paths without `:` (the `shards` serialization writes `path:start:end`, and a name holding a
colon can be read both ways). Symbolic links are refused. `model.sig` itself and the git paths
OMS ignores by default (.git, .gitattributes, .github, .gitignore at the top level) are outside
the signed set, as OMS prescribes.

Whether a `model.sig` is part of the directory it sits in is decided once, by
`is_oms_signature` when the directory is hashed (verifier.formats.digest): an OMS signature at the
top is left out of the directory's digest in every command; anything else there is a file.
Checking a signature compares the files of that same digest, so the ignore patterns a policy or
`--ignore` gives apply to the OMS check exactly as to the digest.

Signing is byte-stable for file keys: the payload is canonical JSON, ECDSA signatures are
deterministic (RFC 6979) and Ed25519 signatures are deterministic by design, so the same
directory and key give the same file (a hardware token signs with its own randomness; RSA-PSS
is randomised by design).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from verifier.errors import InputError, VerificationFailure
from verifier.formats.digest import SIGNATURE_NAME, Hasher, IgnoreRule, PathDigest, list_files
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle, pae, read_bundle, write_atomic
from verifier.formats.omssig import OLD_PREDICATE_TYPE as OLD_PREDICATE_TYPE
from verifier.formats.omssig import PREDICATE_TYPE as PREDICATE_TYPE
from verifier.formats.omssig import is_oms_signature as is_oms_signature
from verifier.formats.statement import STATEMENT_TYPE, canonical_json

DEFAULT_IGNORED = (".git", ".gitattributes", ".github", ".gitignore")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Who signed a bundle, in the caller's names (policy signer names); empty when nobody known.
Attribute = Callable[[Bundle], tuple[str, ...]]


def load_private_key(path: Path | str, password: str | None = None) -> tuple[Any, bytes]:
    """A signing key from --key (PEM file or PKCS#11 URI): (private key, public key PEM).

    The private key is a cryptography key, or for a token a key object with the same `sign`
    and `public_key` calls that signs on the token."""
    from verifier.formats.signing import open_signer

    signer = open_signer(path, password)  # gives the user's sentence for any unusable key
    return signer.private_key, signer.public_pem


def root_digest(digests: list[str]) -> str:
    """The OMS subject digest: sha256 over the raw bytes of the file digests, in order."""
    summary = hashlib.sha256()
    for value in digests:
        summary.update(bytes.fromhex(value))
    return summary.hexdigest()


@dataclass(frozen=True)
class OmsSignature:
    """A parsed OMS signature (shape-checked; nothing about it is trusted yet)."""

    source: str
    bundle: Bundle
    model_name: str
    root_sha256: str
    ignore_paths: tuple[str, ...]
    allow_symlinks: bool
    resources: dict[str, str]  # relative name -> sha256 hex


def _check_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not name:
        raise InputError(f"{source}: a resource has no name.")
    if ":" in name:
        raise InputError(
            f"{source}: resource {name!r} contains ':', which OMS shard names use as a separator, "
            "so the name is ambiguous and is refused."
        )
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        raise InputError(f"{source}: resource {name!r} is not a canonical relative POSIX path.")
    return name


def parse_oms(bundle: Bundle) -> OmsSignature:
    """Check that a bundle is an OMS v1.0 signature of the files/sha256 kind and read it."""
    source = bundle.source
    if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
        raise InputError(f"{source}: payload type {bundle.payload_type!r} is not in-toto.")
    try:
        statement = json.loads(bundle.payload)
    except (ValueError, RecursionError):  # ValueError: bad JSON, bad UTF-8, huge integers
        raise InputError(f"{source}: the signed payload is not JSON.") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise InputError(f"{source}: the signed payload is not an in-toto Statement v1.")
    predicate_type = statement.get("predicateType")
    if predicate_type == OLD_PREDICATE_TYPE:
        raise InputError(f"{source}: uses the withdrawn OMS v0.2 predicate; re-sign the model "
                         "with a current model-signing.")
    if predicate_type != PREDICATE_TYPE:
        raise InputError(f"{source}: is not an OMS signature (predicateType {predicate_type!r}).")
    subjects = statement.get("subject")
    if not (isinstance(subjects, list) and len(subjects) == 1 and isinstance(subjects[0], dict)):
        raise InputError(f"{source}: an OMS statement must have exactly one subject.")
    subject_digest = subjects[0].get("digest")
    subject_root = subject_digest.get("sha256") if isinstance(subject_digest, dict) else None
    predicate = statement.get("predicate")
    serialization = predicate.get("serialization") if isinstance(predicate, dict) else None
    if not isinstance(serialization, dict):
        raise InputError(f"{source}: the OMS predicate has no serialization object.")
    method = serialization.get("method")
    if method != "files":
        raise InputError(f"{source}: uses serialization method {method!r}; model-verifier reads "
                         "only 'files' (sign with model_signing's default serialization).")
    if serialization.get("hash_type") != "sha256":
        raise InputError(f"{source}: hashes with {serialization.get('hash_type')!r}; "
                         "model-verifier reads only sha256.")
    allow_symlinks = serialization.get("allow_symlinks", False)
    ignore_paths = serialization.get("ignore_paths", [])
    if not isinstance(allow_symlinks, bool) or not isinstance(ignore_paths, list) or not all(
            isinstance(p, str) and p for p in ignore_paths):
        raise InputError(f"{source}: the OMS serialization object is malformed.")
    raw_resources = predicate.get("resources")
    if not isinstance(raw_resources, list):
        raise InputError(f"{source}: the OMS predicate has no resources list.")
    if not raw_resources:
        raise InputError(f"{source}: signs an empty model (no resources); OMS requires at least "
                         "one file.")
    resources: dict[str, str] = {}
    ordered: list[str] = []
    for entry in raw_resources:
        if not isinstance(entry, dict):
            raise InputError(f"{source}: a resource is not an object.")
        name = _check_name(entry.get("name"), source)
        digest = entry.get("digest")
        well_formed = isinstance(digest, str) and _HEX64.fullmatch(digest) is not None
        if entry.get("algorithm") != "sha256" or not well_formed:
            raise InputError(f"{source}: resource {name!r} has no sha256 hex digest.")
        if name in resources:
            raise InputError(f"{source}: resource {name!r} appears twice.")
        resources[name] = digest
        ordered.append(digest)
    if subject_root != root_digest(ordered):
        raise InputError(f"{source}: the subject digest does not match its resources, so the "
                         "manifest is inconsistent.")
    return OmsSignature(source, bundle, str(subjects[0].get("name", "")), subject_root,
                        tuple(ignore_paths), allow_symlinks, resources)


def read_oms(path: Path) -> OmsSignature:
    return parse_oms(read_bundle(path))


def _ignored(name: str, ignore: set[str]) -> bool:
    parts = PurePosixPath(name).parts
    return any("/".join(parts[:depth]) in ignore for depth in range(1, len(parts) + 1))


def model_files(model_dir: Path, extra_ignored: tuple[str, ...] = (),
                signature: Path | None = None) -> list[str]:
    """The files OMS signs in a directory, sorted by code point, with the ignored ones left out."""
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: is not a directory.")
    ignore = set(DEFAULT_IGNORED) | set(extra_ignored)
    if signature is not None:
        relative = _inside(signature, model_dir)
        if relative is not None:
            ignore.add(relative)
    names = [n for n in list_files(model_dir) if not _ignored(n, ignore)]
    for name in names:
        if ":" in name:
            raise InputError(f"{model_dir / name}: file names containing ':' are refused, because "
                             "OMS shard names use ':' as a separator.")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{model_dir}: a file name is not valid UTF-8.") from None
    return names


def _inside(path: Path, directory: Path) -> str | None:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(directory)).as_posix()
    except ValueError:
        return None


@dataclass
class OmsCheck:
    """The outcome of checking one OMS signature against a directory."""

    signature: str
    model_name: str
    root_sha256: str
    files: int
    signed_by: tuple[str, ...] = ()
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def manifest_matches(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def mismatch_sentence(self, model_dir: Path) -> str:
        parts = []
        for label, names in (("changed", self.changed), ("missing", self.missing),
                             ("not signed", self.extra)):
            if names:
                parts.append(f"{label}: {', '.join(names[:5])}"
                             + (f" and {len(names) - 5} more" if len(names) > 5 else ""))
        return (f"{model_dir}: the files no longer match the OMS signature {self.signature} "
                f"({'; '.join(parts)}).")

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature, "model_name": self.model_name,
            "root_sha256": self.root_sha256, "files": self.files,
            "signed_by": list(self.signed_by), "manifest_matches": self.manifest_matches,
            "missing": self.missing, "extra": self.extra, "changed": self.changed,
        }


def check_directory(model_dir: Path, signature: OmsSignature, signature_path: Path,
                    attribute: Attribute, hasher: Hasher | None = None) -> OmsCheck:
    """Compare the directory's files with the signed resources, and say who signed it."""
    names = model_files(model_dir, signature.ignore_paths, signature_path)
    digests = dict(zip(names, (hasher or Hasher()).hash_files(model_dir / n for n in names),
                       strict=True))
    return compare(signature, digests, attribute)


def compare(signature: OmsSignature, digests: dict[str, str], attribute: Attribute,
            ignore: IgnoreRule | None = None) -> OmsCheck:
    """Compare {relative name: sha256} of a directory's files with the signed resources.

    A signed resource that `ignore` (the policy's and the run's patterns) leaves out of the
    directory is left out of the comparison too: those files are not part of the model the
    caller verifies, on either side."""
    expected = {n: d for n, d in signature.resources.items()
                if ignore is None or not ignore(n, True)}
    return OmsCheck(
        signature=signature.source,
        model_name=signature.model_name,
        root_sha256=signature.root_sha256,
        files=len(expected),
        signed_by=attribute(signature.bundle),
        missing=sorted(set(expected) - set(digests)),
        extra=sorted(set(digests) - set(expected)),
        changed=sorted(n for n in set(expected) & set(digests) if expected[n] != digests[n]),
    )


def verify_directory(model_dir: Path, attribute: Attribute, *, signature_path: Path | None = None,
                     hasher: Hasher | None = None) -> OmsCheck:
    """Check a model directory against its OMS signature; raise unless signed and matching."""
    from verifier.errors import SignatureError

    path = signature_path or model_dir / SIGNATURE_NAME
    check = check_directory(model_dir, read_oms(path), path, attribute, hasher)
    if not check.signed_by:
        raise SignatureError(f"{path}: the OMS signature is not signed by any trusted key.")
    if not check.manifest_matches:
        raise VerificationFailure(check.mismatch_sentence(model_dir))
    return check


def oms_statement(model_name: str, files: dict[str, str], ignore_paths: list[str]) -> dict:
    """The OMS v1.0 statement for {name: sha256} files (files serialization, sorted)."""
    names = sorted(files)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name,
                     "digest": {"sha256": root_digest([files[n] for n in names])}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": sorted(set(ignore_paths))},
            "resources": [{"name": n, "algorithm": "sha256", "digest": files[n]} for n in names],
        },
    }


def _sign_deterministic(private_key: Any, message: bytes) -> bytes:
    from verifier.formats.signing import KeySigner

    return KeySigner.from_key(private_key, "").sign(message, deterministic=True)


@dataclass(frozen=True)
class SignResult:
    signature: Path
    files: int
    root_sha256: str
    signer: str  # "key:<hint>" or the Sigstore identity

    def to_dict(self) -> dict[str, Any]:
        return {"signature": str(self.signature), "files": self.files,
                "root_sha256": self.root_sha256, "signer": self.signer}


class DsseSigner(Protocol):
    """A keyless signer (Sigstore) as record uses it: signs a payload into a bundle."""

    @property
    def identity(self) -> str: ...

    def sign_dsse(self, payload: bytes, payload_type: str) -> dict: ...


def sign_directory(model_dir: Path, *, key: Path | str | None = None,
                   signer: DsseSigner | None = None, password: str | None = None,
                   out: Path | None = None, force: bool = False,
                   hasher: Hasher | None = None) -> SignResult:
    """Write an OMS v1.0 signature of the directory (default DIR/model.sig).

    With a local key the bundle has the OMS key shape (publicKey hint, no log entry) and is
    byte-stable; with a keyless signer it is whatever Sigstore returns for the same payload.
    """
    from verifier.formats.envelope import make_key_bundle
    from verifier.formats.signing import key_hint

    if (key is None) == (signer is None):
        raise InputError("sign-model: give either --key FILE or --sigstore.")
    target = out or model_dir / SIGNATURE_NAME
    if target.exists() and not force:
        raise InputError(f"{target}: already exists; pass --force to replace it.")
    private_key, public_pem = load_private_key(key, password) if key is not None else (None, b"")
    names = model_files(model_dir, signature=target)
    if not names:
        raise InputError(f"{model_dir}: holds no file to sign (an empty model cannot be signed).")
    digests = (hasher or Hasher()).hash_files(model_dir / n for n in names)
    files = dict(zip(names, digests, strict=True))
    relative = _inside(target, model_dir)
    ignored = list(DEFAULT_IGNORED) + ([relative] if relative else [])
    statement = oms_statement(Path(os.path.abspath(model_dir)).name, files, ignored)
    payload = canonical_json(statement)
    if signer is not None:
        bundle = signer.sign_dsse(payload, INTOTO_PAYLOAD_TYPE)
        identity = signer.identity
    else:
        signature = _sign_deterministic(private_key, pae(INTOTO_PAYLOAD_TYPE, payload))
        hint = key_hint(public_pem)
        bundle = make_key_bundle(payload, INTOTO_PAYLOAD_TYPE, signature, hint)
        # model_signing writes an empty keyid: the hint in verificationMaterial names the key.
        bundle["dsseEnvelope"]["signatures"][0]["keyid"] = ""
        identity = f"key:{hint}"
    write_atomic(target, json.dumps(bundle, indent=2, sort_keys=True) + "\n", overwrite=force)
    return SignResult(target, len(files), statement["subject"][0]["digest"]["sha256"], identity)


@dataclass
class DirectoryEvidence:
    """What an OMS `model.sig` inside a verified directory adds to a verification report."""

    source: str
    digest: PathDigest  # the directory's digest with model.sig left out (when it is OMS)
    check: OmsCheck | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        if self.check is None:
            return {"signature": self.source, "verdict": "unreadable"}
        verdict = ("unattributed" if not self.check.signed_by
                   else "verified" if self.check.manifest_matches else "mismatch")
        return {**self.check.to_dict(), "verdict": verdict}


def directory_evidence(artifact: Path, digest: PathDigest, attribute: Attribute,
                       ignore: IgnoreRule | None = None,
                       explain: Callable[[Bundle], str] | None = None
                       ) -> DirectoryEvidence | None:
    """Check the OMS signature a model directory carries, if it carries one.

    `digest` is the directory's, made with `ignore`: an OMS `model.sig` at its top is already
    out of it (verifier.formats.digest), and its files are what the signature is checked
    against, so the ignore patterns apply to both alike. A `model.sig` that is no OMS signature
    is a file of the directory and is reported. Only a signer the caller names makes the
    evidence count; a signature by nobody the caller names is noted, whatever it holds, and
    `explain` says why it counts for nothing.
    """
    if not digest.is_dir:
        return None
    path = artifact / SIGNATURE_NAME
    if digest.signature is None:
        if SIGNATURE_NAME not in digest.files:
            return None
        try:  # no OMS signature: say what it is instead
            read_oms(path)
        except InputError as error:
            return DirectoryEvidence(str(path), digest, problems=[str(error)])
        return DirectoryEvidence(str(path), digest, problems=[
            f"{path}: changed while the directory was being verified."])
    evidence = DirectoryEvidence(str(path), digest)
    try:
        bundle = read_bundle(path)
    except InputError as error:
        evidence.problems.append(str(error))
        return evidence
    why = f": {explain(bundle)}" if explain is not None else ""
    unattributed = (f"ignored {path}: the OMS signature is signed by no signer the policy "
                    f"names{why}.")
    signed_by = attribute(bundle)
    try:
        signature = parse_oms(bundle)
    except InputError as error:
        # A signature this tool cannot read counts against the model only when a signer the
        # caller trusts made it; anyone else's is passed over like any unattributed one.
        if signed_by:
            evidence.problems.append(str(error))
        else:
            evidence.notes.append(f"{unattributed[:-1]} ({error})")
        return evidence
    files = {n: d for n, d in digest.files.items()
             if not _ignored(n, set(DEFAULT_IGNORED) | set(signature.ignore_paths))}
    evidence.check = compare(signature, files, lambda _: signed_by, ignore)
    if not signed_by:
        evidence.notes.append(unattributed)
    elif not evidence.check.manifest_matches:
        evidence.problems.append(evidence.check.mismatch_sentence(artifact))
    return evidence


def refuse_stale_signatures(products: list[Path]) -> None:
    """Before `record --oms`, which writes each product directory's model.sig: one already there
    would be replaced after the step ran (and one that is no OMS signature would be attested
    as a file of the directory first), so it is refused before anything runs."""
    for product in products:
        stale = product / SIGNATURE_NAME
        if product.is_dir() and stale.exists():
            raise InputError(f"{stale}: exists from an earlier run; remove it before "
                             "`record --oms`, which writes a new signature there.")
