"""Push a model, attach its evidence, find and fetch both again: the registry as a store.

The model's manifest digest is the one name everything hangs on. Attestations are referrers of
it; a deployer who knows only that digest lists its referrers (the Referrers API, or the
`sha256-HEX` tag-schema index where the registry has no such API) and gets every bundle. Nothing
fetched is believed because of where it came from: manifests and blobs are checked against the
digests that name them, a referrer counts only if its own manifest names this model as its
subject, and the bundles are then verified by the same code as local files.

A step's record digests (`record --record-digests`, `*.mvrd`) travel the same way, as referrers
of their own artifact type; `pull` lays them out under `attestations/record-digests/` named by
their digest. They need no trust in the registry either: `contamination` uses a file only when
a step of the verified chain signed its sha256.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError, VerificationFailure
from verifier.formats import readers, recorddigests
from verifier.formats.envelope import MAX_BUNDLE_BYTES, parse_bundle
from verifier.interop.oci import media
from verifier.interop.oci.cache import BlobCache
from verifier.interop.oci.client import BlobMissing, Registry, RegistryError
from verifier.interop.oci.reference import Reference

ProgressCallback = Callable[[int], None]
MAX_DIGEST_FILES = 10_000  # record-digest files attached to one model, or fetched from it
MAX_DIGEST_FILE_BYTES = 1 << 34  # what `contamination` reads of one (recorddigests.read_file)
# Bundles fetched for one model, all referrers together: a bundle is a few KiB, so this is
# thousands of them, while an index listing the largest bundle over and over is not.
MAX_BUNDLES_BYTES = 256 * 1024 * 1024


@dataclass
class Attached:
    source: str
    bundle_digest: str  # the attached blob's digest (a bundle's, or a record-digest file's)
    manifest_digest: str
    status: str  # "attached", "already attached", or "blob restored" (its blob was gone)
    kind: str = "bundle"  # or "record-digests"

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass
class PushResult:
    reference: str  # oci://HOST/REPO@sha256:…
    digest: str
    tag: str | None
    name: str
    kind: str
    files: int
    bytes: int
    uploaded_bytes: int
    attached: list[Attached] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "attached"},
                "attached": [a.to_dict() for a in self.attached]}


# --- push ---------------------------------------------------------------------------------------

def _model_files(model: Path, hasher: Any) -> tuple[str, str, list[tuple[str, Path, str, int]]]:
    """(name, kind, [(relative path, file, sha256, size)]) of a model file or directory."""
    if not model.exists():
        raise InputError(f"{model}: no such file or directory to push.")
    digest = hasher.digest_paths([model])[0]
    name = model.resolve().name
    if digest.is_dir:
        entries = [(rel, model / rel, sha, (model / rel).stat().st_size)
                   for rel, sha in sorted(digest.files.items())]
        if not entries:
            raise InputError(f"{model}: is an empty directory; there is no model to push.")
        return name, "directory", entries
    return name, "file", [(name, model, digest.sha256, model.stat().st_size)]


def push_model(model: Path, reference: Reference, registry: Registry, *, hasher: Any,
               progress: ProgressCallback | None = None,
               on_total: Callable[[int], None] | None = None) -> PushResult:
    """Upload the model's files (those the registry lacks) and its manifest."""
    if reference.digest:
        raise InputError(f"{reference}: push names a tag or a repository, not a digest; the "
                         "digest is what push computes.")
    name, kind, entries = _model_files(model, hasher)
    registry.check()
    layers = [media.Descriptor(media.layer_media_type(rel), f"sha256:{sha}", size,
                               {media.TITLE: rel, media.FILEPATH: rel})
              for rel, _, sha, size in entries]
    missing = [(entry, layer) for entry, layer in zip(entries, layers, strict=True)
               if not registry.blob_exists(layer.digest)]
    if on_total is not None:
        on_total(sum(layer.size for _, layer in missing))
    for (_, path, _, size), layer in missing:
        try:
            with readers.open_stream(path, "model file") as stream:
                registry.upload_blob(layer.digest, size, stream, progress)
        except OSError as error:
            raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
    config = media.model_config(name, layers)
    config_descriptor = media.descriptor_of(media.MODEL_CONFIG, config)
    registry.upload_bytes(config)
    manifest = media.model_manifest(name, kind, config_descriptor, layers)
    digest, _ = registry.put_manifest(reference.tag or media.sha256_digest(manifest), manifest)
    return PushResult(reference.at(digest).pinned(), digest, reference.tag, name, kind,
                      len(entries), sum(layer.size for layer in layers),
                      sum(layer.size for _, layer in missing))


# --- attach -------------------------------------------------------------------------------------

def bundle_files(paths: Iterable[Path]) -> list[tuple[str, bytes]]:
    """(source, bytes) of every bundle under the paths: each .json file, each .jsonl line.
    Anything that is not a Sigstore bundle is refused, so nothing unreadable is published."""
    from verifier.judgement.verify import attestation_files

    found: list[tuple[str, bytes]] = []
    for path in attestation_files(list(paths)):
        data = readers.read_bytes(path, "Sigstore bundle", MAX_BUNDLE_BYTES)
        pieces = ([(f"{path}:{n}", line) for n, line in enumerate(data.splitlines(), 1)
                   if line.strip()] if path.suffix == ".jsonl" else [(str(path), data)])
        for source, piece in pieces:
            try:
                parse_bundle(json.loads(piece), source)
            except (ValueError, RecursionError):
                raise InputError(f"{source}: is not JSON, so not a bundle to attach.") from None
            found.append((source, piece.strip() if path.suffix == ".jsonl" else piece))
    return found


@dataclass(frozen=True)
class DigestFile:
    """A record-digest file to attach: its path and the blob it becomes."""

    path: Path
    blob: media.Descriptor


def record_digest_files(paths: Iterable[Path]) -> list[DigestFile]:
    """Every record-digest file (`*.mvrd`, regular, links not followed) given or under the
    paths, each checked to be one (its magic bytes) and hashed."""
    found: list[DigestFile] = []
    for root in paths:
        candidates = ([root] if root.suffix == ".mvrd" and not root.is_dir() else
                      sorted(p for p in root.rglob("*.mvrd") if not p.is_symlink())
                      if root.is_dir() else [])
        for path in candidates:
            if not path.is_file() or path.is_symlink():
                raise InputError(f"{path}: is not a regular file, so not a record-digest file "
                                 "to attach.")
            if len(found) >= MAX_DIGEST_FILES:
                raise InputError(f"{root}: holds more than {MAX_DIGEST_FILES} record-digest "
                                 "files.")
            try:
                with readers.open_stream(path, "record-digest file") as stream:
                    magic = stream.read(len(recorddigests.MAGIC))
                    size = os.fstat(stream.fileno()).st_size
            except OSError as error:
                raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
            if magic not in recorddigests.MAGICS:
                raise InputError(f"{path}: is not a record-digest file (record "
                                 "--record-digests writes them); refusing to attach it.")
            if size > MAX_DIGEST_FILE_BYTES:
                raise InputError(f"{path}: is larger than a record-digest file may be.")
            digest = f"sha256:{recorddigests.file_sha256(path)}"
            found.append(DigestFile(path, media.Descriptor(media.RECORD_DIGESTS, digest, size)))
    return found


def _predicate_type(bundle: bytes) -> str | None:
    """The statement's predicate type, for the annotation cosign and gh put there (a hint for
    people browsing the registry; verification never reads it)."""
    try:
        document = json.loads(bundle)
        payload = parse_bundle(document, "bundle").payload
        value = json.loads(payload).get("predicateType")
    except (ValueError, InputError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) and len(value) < 512 else None


def _subject(registry: Registry, digest: str) -> media.Descriptor:
    found = registry.manifest(digest, (media.MANIFEST,))
    if found is None:
        raise InputError(f"{registry.reference.repository_uri}@{digest}: no such manifest in "
                         "the registry.")
    return media.Descriptor(media.MANIFEST, digest, len(found[0]))


def attach(registry: Registry, subject_digest: str, bundles: list[tuple[str, bytes]],
           digest_files: Iterable[DigestFile] = ()) -> list[Attached]:
    """Attach each bundle and record-digest file as a referrer of the subject, skipping any
    already attached (by the digest of its bytes, read from the referrers' own manifests)."""
    subject = _subject(registry, subject_digest)
    listed, _ = referrer_index(registry, subject_digest)
    present = {ref.bundle_digest for ref in _bundle_referrers(registry, subject_digest, [],
                                                              listed)}
    present |= {ref.blob.digest for ref in _digest_referrers(registry, subject_digest, [],
                                                             listed)}
    results: list[Attached] = []
    pushed: list[media.Descriptor] = []
    indexed_by_registry = True
    empty = registry.upload_bytes(media.EMPTY_BLOB)
    assert empty == media.descriptor_of(media.EMPTY, media.EMPTY_BLOB).digest
    for source, data in bundles:
        blob = media.descriptor_of(media.BUNDLE, data)
        manifest = media.bundle_manifest(subject, blob, _predicate_type(data))
        manifest_digest = media.sha256_digest(manifest)
        if blob.digest in present:
            results.append(Attached(source, blob.digest, manifest_digest,
                                    _restore(registry, blob.digest, lambda data=data:
                                             registry.upload_bytes(data))))
            continue
        registry.upload_bytes(data)
        digest, indexed = registry.put_manifest(manifest_digest, manifest)
        indexed_by_registry = indexed_by_registry and indexed
        present.add(blob.digest)
        pushed.append(media.Descriptor(media.MANIFEST, digest, len(manifest),
                                       media.parse_manifest(manifest, source).annotations,
                                       media.BUNDLE))
        results.append(Attached(source, blob.digest, digest, "attached"))
    for item in digest_files:
        manifest = media.record_digests_manifest(subject, item.blob)
        manifest_digest = media.sha256_digest(manifest)
        if item.blob.digest in present:
            results.append(Attached(str(item.path), item.blob.digest, manifest_digest,
                                    _restore(registry, item.blob.digest,
                                             lambda item=item: _upload_file(registry, item)),
                                    "record-digests"))
            continue
        _upload_file(registry, item)
        digest, indexed = registry.put_manifest(manifest_digest, manifest)
        indexed_by_registry = indexed_by_registry and indexed
        present.add(item.blob.digest)
        pushed.append(media.Descriptor(media.MANIFEST, digest, len(manifest), {},
                                       media.RECORD_DIGESTS))
        results.append(Attached(str(item.path), item.blob.digest, digest, "attached",
                                "record-digests"))
    if pushed and not indexed_by_registry:
        _update_referrers_tag(registry, subject_digest, pushed)
    return results


def _upload_file(registry: Registry, item: DigestFile) -> None:
    try:
        with readers.open_stream(item.path, "record-digest file") as stream:
            registry.upload_blob(item.blob.digest, item.blob.size, stream, None)
    except OSError as error:
        raise InputError(f"{item.path}: cannot be read ({error.strerror}).") from None


def _restore(registry: Registry, digest: str, upload: Callable[[], object]) -> str:
    """An attached referrer's manifest does not prove its blob is still there (a registry's
    garbage collection, an operator's mistake): one the registry lost is uploaded again."""
    if registry.blob_exists(digest):
        return "already attached"
    upload()
    return "blob restored"


def _update_referrers_tag(registry: Registry, subject: str, added: list[media.Descriptor]
                          ) -> None:
    """The OCI 1.1 fallback: add the new referrers to the `sha256-HEX` index and store it."""
    tag = media.referrers_tag(subject)
    found = registry.manifest(tag, (media.INDEX,))
    current = media.parse_index(found[0], f"referrers index {tag}") if found else []
    known = {d.digest for d in current}
    merged = current + [d for d in added if d.digest not in known]
    registry.put_manifest(tag, media.index_document(merged), media.INDEX)


# --- discover and fetch -------------------------------------------------------------------------

@dataclass
class Referrer:
    digest: str  # the referrer's manifest
    bundle_digest: str


def referrer_index(registry: Registry, digest: str) -> tuple[list[media.Descriptor], str]:
    """The subject's referrers as the registry lists them, and how they were found."""
    data = registry.referrers_api(digest)
    if data is not None:
        return media.parse_index(data, f"referrers of {digest}"), "referrers API"
    found = registry.manifest(media.referrers_tag(digest), (media.INDEX,))
    if found is None:
        return [], "referrers tag schema"
    return (media.parse_index(found[0], f"{registry.reference.repository_uri}:"
                                        f"{media.referrers_tag(digest)}"),
            "referrers tag schema")


@dataclass
class DigestReferrer:
    digest: str  # the referrer's manifest
    blob: media.Descriptor  # the record-digest file


def _digest_referrers(registry: Registry, subject: str, notes: list[str],
                      listed: list[media.Descriptor]) -> list[DigestReferrer]:
    """Every record-digest referrer of `subject`, checked as bundle referrers are: its
    manifest names this subject and carries one record-digest layer of a bounded size."""
    found: list[DigestReferrer] = []
    manifests: set[str] = set()
    for descriptor in listed:
        if descriptor.artifact_type != media.RECORD_DIGESTS or descriptor.digest in manifests:
            continue
        manifests.add(descriptor.digest)
        where = f"{registry.reference.repository_uri}@{descriptor.digest}"
        try:
            layer = _referrer_layer(registry, subject, descriptor.digest, where,
                                    {media.RECORD_DIGESTS}, "record-digest")
            if layer.size > MAX_DIGEST_FILE_BYTES:
                raise InputError(f"{where}: its record-digest file is {layer.size} bytes, "
                                 "larger than one may be.")
        except RegistryError:
            raise
        except (InputError, VerificationFailure) as error:
            notes.append(f"ignored {error}")
            continue
        if len(found) >= MAX_DIGEST_FILES:
            notes.append(f"ignored record-digest referrers beyond the first {MAX_DIGEST_FILES}.")
            break
        found.append(DigestReferrer(descriptor.digest, layer))
    return found


def _referrer_layer(registry: Registry, subject: str, digest: str, where: str,
                    layer_types: Iterable[str], what: str) -> media.Descriptor:
    """The one layer of a listed referrer, once its own manifest (checked against `digest`)
    names this subject and holds exactly one layer of `layer_types`; InputError otherwise."""
    fetched = registry.manifest(digest, (media.MANIFEST,))
    if fetched is None:
        raise InputError(f"{where}: is listed as a referrer but the registry has no such "
                         "manifest.")
    manifest = media.parse_manifest(fetched[0], where)
    if manifest.subject is None or manifest.subject.digest != subject:
        raise InputError(f"{where}: is listed as a referrer but its subject is not {subject}.")
    if len(manifest.layers) != 1 or manifest.layers[0].media_type not in set(layer_types):
        raise InputError(f"{where}: does not hold exactly one {what} layer.")
    return manifest.layers[0]


def _bundle_referrers(registry: Registry, subject: str, notes: list[str],
                      listed: list[media.Descriptor], *, into: Path | None = None
                      ) -> list[Referrer]:
    """Every bundle referrer of `subject` among those listed, each checked: its manifest
    hashes to the digest the index lists, names this subject, and carries one bundle layer.
    One bad referrer is noted and skipped; a registry that stops answering stops everything.

    A referrer listed again, or holding a bundle already found, is passed over before anything
    more is fetched (the same bundle attached twice by different tools is one file). With
    `into`, each bundle is streamed into `into/` as it arrives, never held in memory, and at
    most MAX_BUNDLES_BYTES of bundles are fetched for one model: an index may list thousands."""
    found: list[Referrer] = []
    manifests: set[str] = set()
    bundles: set[str] = set()
    fetched = 0
    for descriptor in listed:
        if descriptor.artifact_type not in media.BUNDLE_TYPES or descriptor.digest in manifests:
            continue
        manifests.add(descriptor.digest)
        where = f"{registry.reference.repository_uri}@{descriptor.digest}"
        try:
            layer = _referrer_layer(registry, subject, descriptor.digest, where,
                                    media.BUNDLE_TYPES, "Sigstore bundle")
            if layer.digest in bundles:
                continue
            if into is not None:
                if layer.size > MAX_BUNDLE_BYTES:
                    raise InputError(f"{where}: its bundle is {layer.size} bytes, larger than "
                                     "any bundle should be.")
                if fetched + layer.size > MAX_BUNDLES_BYTES:
                    notes.append(f"ignored bundle referrers beyond the first {fetched} bytes "
                                 f"of bundles ({MAX_BUNDLES_BYTES} at most for one model).")
                    break
                fetched += layer.size
                _blob_to_file(registry, layer, where, into / _bundle_file(descriptor.digest))
        except RegistryError:
            raise
        except (InputError, VerificationFailure) as error:
            notes.append(f"ignored {error}")
            continue
        bundles.add(layer.digest)
        found.append(Referrer(descriptor.digest, layer.digest))
    return found


def _blob_to_file(registry: Registry, layer: media.Descriptor, where: str,
                  destination: Path) -> None:
    """The blob streamed into a new file, hashed on the way; removed unless it is the one
    the layer names."""
    hasher = hashlib.sha256()
    try:
        with destination.open("xb") as stream:
            for chunk in registry.blob_chunks(layer.digest, layer.size):
                hasher.update(chunk)
                stream.write(chunk)
    except BlobMissing:
        # One referrer's lost blob says nothing of the others: noted and skipped by the caller.
        destination.unlink(missing_ok=True)
        raise InputError(f"{where}: its bundle blob {layer.digest} is gone from the "
                         "registry.") from None
    except OSError as error:
        destination.unlink(missing_ok=True)
        raise InputError(f"{where}: its bundle cannot be written ({error.strerror}).") from None
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    actual = f"sha256:{hasher.hexdigest()}"
    if actual != layer.digest:
        destination.unlink(missing_ok=True)
        raise VerificationFailure(f"{where}: its bundle blob hashes to {actual}, not "
                                  f"{layer.digest}; it was tampered with.")


def resolve(registry: Registry, reference: Reference) -> tuple[str, bytes]:
    """(digest, manifest bytes) of the model a reference names; a tag is resolved here."""
    found = registry.manifest(reference.identifier, (media.MANIFEST,))
    if found is None:
        raise InputError(f"{reference}: no such manifest in the registry.")
    data, digest = found
    return digest, data


@dataclass
class Fetched:
    """A model and its bundles laid out in a directory."""

    reference: str  # pinned, by digest
    digest: str
    model: Path
    kind: str
    files: int
    bytes: int  # the model's files and any record-digest files
    fetched_bytes: int
    bundles_dir: Path
    referrers: list[Referrer]
    discovery: str
    notes: list[str]
    record_digests: list[str] = field(default_factory=list)  # files under attestations/

    def labels(self) -> dict[str, str]:
        """Local paths and what to call them instead: the registry names they stand for."""
        repository = self.reference.split("@", 1)[0]
        names = {str(self.bundles_dir / _bundle_file(r.digest)): f"{repository}@{r.digest}"
                 for r in self.referrers}
        names[str(self.model)] = self.reference
        return names

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "model": str(self.model),
                "kind": self.kind, "files": self.files, "bytes": self.bytes,
                "fetched_bytes": self.fetched_bytes, "attestations": str(self.bundles_dir),
                "referrers": [{"digest": r.digest, "bundle_digest": r.bundle_digest}
                              for r in self.referrers],
                "discovery": self.discovery, "notes": self.notes,
                "record_digests": self.record_digests}


def _bundle_file(digest: str) -> str:
    return f"{media.referrers_tag(digest)}.intoto.json"


def fetch(registry: Registry, reference: Reference, cache: BlobCache, target: Path, *,
          link: bool, progress: ProgressCallback | None = None,
          on_total: Callable[[int], None] | None = None,
          record_digests: bool = False) -> Fetched:
    """Fetch the model (through the cache) and every bundle referrer into `target`, which
    must not exist yet: `target/NAME` is the model, `target/attestations/` the bundles, and
    with `record_digests` `target/attestations/record-digests/` the record-digest files."""
    digest, data = resolve(registry, reference)
    where = f"{reference.repository_uri}@{digest}"
    manifest = media.parse_manifest(data, where)
    if manifest.artifact_type not in (media.MODEL_ARTIFACT, None) and \
            manifest.config.media_type != media.MODEL_CONFIG:
        raise InputError(f"{where}: is a {manifest.artifact_type!r} artifact, not a model.")
    name, kind, files = media.model_files(manifest, where)
    if name == "attestations":
        raise InputError(f"{where}: the model is named 'attestations', which is where its "
                         "attestations go; refusing to mix the two.")
    model = target / name
    notes: list[str] = []
    listed, discovery = referrer_index(registry, digest)
    digest_files = _unique_blobs(_digest_referrers(registry, digest, notes, listed)
                                 if record_digests else [])
    downloads = [(model if kind == "file" else model / path, layer, f"{where} ({_shown(path)})")
                 for path, layer in files]
    downloads += [(target / "attestations" / "record-digests" / f"{ref.blob.digest[7:]}.mvrd",
                   ref.blob, f"{registry.reference.repository_uri}@{ref.digest}")
                  for ref in digest_files]
    total = sum(layer.size for _, layer, _ in downloads)
    if on_total is not None:
        on_total(total)
    fetched_bytes = 0
    for destination, layer, source in downloads:
        _writable(lambda destination=destination: destination.parent.mkdir(
            parents=True, exist_ok=True), source)
        blob, fetched_now = cache.ensure(
            layer.digest, layer.size,
            lambda layer=layer: registry.blob_chunks(layer.digest, layer.size),
            source, progress)
        fetched_bytes += layer.size if fetched_now else 0
        _writable(lambda blob=blob, destination=destination: _place(blob, destination, link),
                  source)
    bundles_dir = target / "attestations"
    bundles_dir.mkdir(parents=True, exist_ok=True)
    kept = _bundle_referrers(registry, digest, notes, listed, into=bundles_dir)
    return Fetched(reference.at(digest).pinned(), digest, model, kind, len(files), total,
                   fetched_bytes, bundles_dir, kept, discovery, notes,
                   [str(d) for d, _, _ in downloads[len(files):]])


def _unique_blobs(referrers: list[DigestReferrer]) -> list[DigestReferrer]:
    """One referrer per file: the same record digests attached twice are fetched once."""
    return list({ref.blob.digest: ref for ref in reversed(referrers)}.values())[::-1]


def _shown(path: str) -> str:
    """A layer path as messages name it: a path may be 4 KiB, a sentence should not be."""
    return path if len(path) <= 120 else f"{path[:60]}…{path[-59:]}"


def _writable(action: Callable[[], None], source: str) -> None:
    """`action`, with a file system that will not take a name the checks let through (a path
    too long once under the target directory, a full disk) made one sentence."""
    try:
        action()
    except OSError as error:
        raise InputError(f"{source}: cannot be written here ({error.strerror or error})."
                         ) from None


def _place(blob: Path, destination: Path, link: bool) -> None:
    if link:
        with contextlib.suppress(OSError):
            os.link(blob, destination)
            return
    shutil.copyfile(blob, destination)
    os.chmod(destination, 0o644)


def pull(registry: Registry, reference: Reference, cache: BlobCache, out: Path, *,
         force: bool = False, progress: ProgressCallback | None = None,
         on_total: Callable[[int], None] | None = None) -> Fetched:
    """Fetch into `out` for offline use; built beside it and renamed, never half-written."""
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: already exists; pass --force to replace it.")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as error:
        raise InputError(f"{parent}: cannot be written ({error.strerror}).") from None
    try:
        fetched = fetch(registry, reference, cache, staging, link=False, progress=progress,
                        on_total=on_total, record_digests=True)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.replace(out, old / "previous")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = out.resolve()
    return dataclasses.replace(
        fetched, model=final / fetched.model.name, bundles_dir=final / "attestations",
        record_digests=[str(final / Path(p).relative_to(staging))
                        for p in fetched.record_digests])


# --- verify -------------------------------------------------------------------------------------

def relabel(value: Any, names: dict[str, str]) -> Any:
    """`value` (a report: dataclasses, dicts, lists, strings) with every local path in `names`
    replaced by what it stands for, longest first, so a report names registry digests rather
    than a temporary directory that is gone once it is printed."""
    # One pass over each string, not one per name: a model may have thousands of referrers,
    # and their notes name them all. Every name starts with the checkout's common prefix; at
    # each place that prefix occurs, the longest name there is replaced.
    root = os.path.commonprefix(list(names))  # noqa: RUF071 (a text prefix is meant)
    lengths = sorted({len(name) for name in names}, reverse=True)

    def replace(text: str) -> str:
        if not names or root not in text:
            return text
        parts: list[str] = []
        done = 0
        at = text.find(root)
        while at >= 0:
            length = next((n for n in lengths if text[at:at + n] in names), 0)
            if length:
                parts += [text[done:at], names[text[at:at + length]]]
                done = at + length
            at = text.find(root, max(at + 1, done))
        return "".join([*parts, text[done:]])

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return replace(item)
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, tuple):
            return tuple(walk(v) for v in item)
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return dataclasses.replace(item, **{f.name: walk(getattr(item, f.name))
                                                for f in dataclasses.fields(item) if f.init})
        return item

    return walk(value)


@contextlib.contextmanager
def checkout(registry: Registry, reference: Reference, cache: BlobCache, *,
             progress: ProgressCallback | None = None,
             on_total: Callable[[int], None] | None = None) -> Iterator[Fetched]:
    """The model and its bundles in a private directory of the cache, for one verification;
    the blobs are hard links to cache entries just re-checked, and all of it goes afterwards."""
    with cache.workspace() as directory:
        yield fetch(registry, reference, cache, directory / "checkout", link=True,
                    progress=progress, on_total=on_total)


def write_vsa(path: Path, report: Any, policy: Any, signer: Any,
              labels: dict[str, str]) -> dict[str, Any]:
    """The signed verification summary of a model verified from a registry: the same statement
    as for a local file, its resource and attestations named by their registry digests."""
    from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, canonical_bundle_text, write_atomic
    from verifier.formats.statement import canonical_json
    from verifier.judgement.vsa import vsa_statement

    statement = relabel(vsa_statement(report, policy, labels=labels), labels)
    bundle = signer.sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
    write_atomic(path, canonical_bundle_text(bundle), overwrite=True)
    return statement
