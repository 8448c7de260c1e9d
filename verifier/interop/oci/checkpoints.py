"""A step's checkpoints in the registry, beside its model, so a replayer fetches only the ones
it needs (docs/oci.md, docs/replay.md).

Each checkpoint directory is one referrer of the model's manifest, of artifact type
`application/vnd.model-verifier.checkpoint.v1`: one raw layer per file (its path inside the
checkpoint in `org.opencontainers.image.title`), and the checkpoint's name, step and dirHash as
annotations. The annotations are only how a replayer finds the manifest to fetch: the registry
is never believed. Every file is checked against its layer digest while it streams (through the
blob cache), the files must be exactly the layers (no extra file left out of the digest), and
the directory's dirHash must be the one the signed checkpoint log names, all before the replay
runs anything.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError, VerificationFailure
from verifier.formats.checkpoint_log import CheckpointEntry, CheckpointLog, scan_checkpoints
from verifier.formats.digest import Hasher, PathDigest
from verifier.formats.readers import open_stream
from verifier.interop.oci import media
from verifier.interop.oci.cache import BlobCache
from verifier.interop.oci.client import BlobMissing, Registry, RegistryError
from verifier.interop.oci.reference import Reference
from verifier.interop.oci.store import (
    _place,
    _subject,
    _update_referrers_tag,
    _writable,
    referrer_index,
    resolve,
)

ProgressCallback = Callable[[int], None]


@dataclass
class PushedCheckpoint:
    name: str
    step: int
    dir_hash: str
    manifest_digest: str
    files: int
    bytes: int
    uploaded_bytes: int
    status: str  # "attached" or "already attached"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointFiles:
    """One checkpoint directory to attach: where it is, its log entry, its files' digests."""

    path: Path
    entry: CheckpointEntry
    files: dict[str, str]  # relative path -> sha256 hex


def read_checkpoints(directory: Path, hasher: Hasher | None = None) -> list[CheckpointFiles]:
    """Every checkpoint directory under `directory` (each immediate subdirectory, named by its
    step as `record --checkpoints` requires), hashed; read before anything is pushed, so a
    directory that is not one refuses the push rather than half of it."""
    digests: dict[str, PathDigest] = {}
    hasher = hasher or Hasher()

    def dir_hash(path: Path) -> str:
        digests[path.name] = hasher.digest_paths([path])[0]
        return digests[path.name].dir_hash or ""

    found = []
    for entry in scan_checkpoints(directory, dir_hash, shown=str(directory)):
        digest = digests[entry.name]
        if digest.signature is not None:
            # A file the dirHash leaves out would reach the replay unaccounted for.
            raise InputError(f"{directory}/{entry.name}: holds a {digest.signature} that its "
                             "dirHash leaves out; a checkpoint is pushed only as the log "
                             "hashes it.")
        found.append(CheckpointFiles(directory / entry.name, entry, dict(digest.files)))
    return found


def attach_checkpoints(registry: Registry, subject_digest: str,
                       checkpoints: Sequence[CheckpointFiles], *,
                       progress: ProgressCallback | None = None) -> list[PushedCheckpoint]:
    """Each checkpoint as a referrer of the model; files the registry already holds are not
    uploaded again, and a checkpoint already attached is left as it is."""
    subject = _subject(registry, subject_digest)
    listed, _ = referrer_index(registry, subject_digest)
    present = {d.digest for d in listed}
    registry.upload_bytes(media.EMPTY_BLOB)
    results: list[PushedCheckpoint] = []
    added: list[media.Descriptor] = []
    indexed_by_registry = True
    for checkpoint in checkpoints:
        entry, root = checkpoint.entry, checkpoint.path
        layers = [media.Descriptor(media.layer_media_type(rel), f"sha256:{sha}",
                                   (root / rel).stat().st_size, {media.TITLE: rel})
                  for rel, sha in sorted(checkpoint.files.items())]
        uploaded = 0
        for rel, layer in zip(sorted(checkpoint.files), layers, strict=True):
            if registry.blob_exists(layer.digest):
                continue
            try:
                with open_stream(root / rel, "checkpoint file") as stream:
                    registry.upload_blob(layer.digest, layer.size, stream, progress)
            except OSError as error:
                raise InputError(f"{root / rel}: cannot be read ({error.strerror}).") from None
            uploaded += layer.size
        manifest = media.checkpoint_manifest(subject, entry.name, entry.step, entry.dir_hash,
                                             layers)
        digest = media.sha256_digest(manifest)
        status = "already attached" if digest in present else "attached"
        if status == "attached":
            digest, indexed = registry.put_manifest(digest, manifest)
            indexed_by_registry = indexed_by_registry and indexed
            present.add(digest)
            added.append(media.Descriptor(media.MANIFEST, digest, len(manifest),
                                          media.parse_manifest(manifest, digest).annotations,
                                          media.CHECKPOINT))
        results.append(PushedCheckpoint(entry.name, entry.step, entry.dir_hash, digest,
                                        len(layers), sum(layer.size for layer in layers),
                                        uploaded, status))
    if added and not indexed_by_registry:
        _update_referrers_tag(registry, subject_digest, added)
    return results


@dataclass
class RegistryCheckpoints:
    """The checkpoints a replay needs, fetched from the referrers of one model into
    `directory` (on the cache's file system, so files are hard links to verified blobs).
    Called by the replay with the signed log and the checkpoints it needs."""

    registry: Registry
    reference: Reference
    cache: BlobCache
    directory: Path
    progress: ProgressCallback | None = None
    fetched: list[str] = field(default_factory=list)  # checkpoint names, in fetch order
    fetched_bytes: int = 0  # downloaded (not found in the cache)

    def __call__(self, log: CheckpointLog, entries: Sequence[CheckpointEntry],
                 source: str) -> Path:
        subject, _ = resolve(self.registry, self.reference)
        listed, _ = referrer_index(self.registry, subject)
        candidates = [d for d in listed if d.artifact_type == media.CHECKPOINT]
        for entry in entries:
            self._fetch_one(subject, candidates, log, entry, source)
        return self.directory

    def _fetch_one(self, subject: str, candidates: list[media.Descriptor], log: CheckpointLog,
                   entry: CheckpointEntry, source: str) -> None:
        shown = f"{log.directory}/{entry.name}"
        reasons: list[str] = []
        tried: set[str] = set()
        for descriptor in candidates:
            hinted = descriptor.annotations.get(media.CHECKPOINT_NAME)
            if descriptor.digest in tried or hinted not in (None, entry.name):
                continue
            tried.add(descriptor.digest)
            where = f"{self.reference.repository_uri}@{descriptor.digest}"
            try:
                files = self._manifest_files(subject, descriptor.digest, where, entry)
                if files is None:
                    continue
                self._place(files, entry, where)
            except RegistryError:
                raise
            except (InputError, VerificationFailure) as error:
                shutil.rmtree(self.directory / entry.name, ignore_errors=True)
                reasons.append(str(error).rstrip("."))
                continue
            self.fetched.append(entry.name)
            return
        why = f": {'; '.join(reasons[:3])}" if reasons else (
            f"; {self.reference.repository_uri} holds no checkpoint of that name and dirHash "
            f"attached to {subject} (push it with --checkpoints)")
        raise InputError(f"{source}: checkpoint {shown} could not be fetched as the signed log "
                         f"names it{why}; nothing was run.")

    def _manifest_files(self, subject: str, digest: str, where: str, entry: CheckpointEntry
                        ) -> list[tuple[str, media.Descriptor]] | None:
        """The files of a candidate manifest that claims to be `entry`, every path checked
        safe; None when it claims to be another checkpoint."""
        found = self.registry.manifest(digest, (media.MANIFEST,))
        if found is None:
            raise InputError(f"{where}: is listed as a referrer but the registry has no such "
                             "manifest")
        manifest = media.parse_manifest(found[0], where)
        if manifest.subject is None or manifest.subject.digest != subject:
            raise InputError(f"{where}: is listed as a referrer but its subject is not "
                             f"{subject}")
        if manifest.artifact_type != media.CHECKPOINT or \
                manifest.annotations.get(media.CHECKPOINT_NAME) != entry.name:
            return None
        if manifest.annotations.get(media.CHECKPOINT_DIRHASH) != entry.dir_hash:
            raise InputError(f"{where}: says its dirHash is "
                             f"{manifest.annotations.get(media.CHECKPOINT_DIRHASH, '')[:16]}…, "
                             f"not the signed log's {entry.dir_hash[:16]}…")
        files = []
        for number, layer in enumerate(manifest.layers):
            path = layer.title
            if path is None:
                raise InputError(f"{where}: layer {number} has no {media.TITLE} annotation "
                                 "naming its file")
            media._check_path(path, where, single=False)
            files.append((path, layer))
        media._check_no_overlap([path for path, _ in files], where)
        return files

    def _place(self, files: list[tuple[str, media.Descriptor]], entry: CheckpointEntry,
               where: str) -> None:
        """Each file through the cache (hashed as it streams), then the whole directory hashed
        afresh: its files must be the layers, and its dirHash the log's."""
        target = self.directory / entry.name
        _writable(lambda: target.mkdir(parents=True), where)
        for path, layer in files:
            destination = target / path
            source = f"{where} ({path[:120]})"
            _writable(lambda d=destination: d.parent.mkdir(parents=True, exist_ok=True), source)
            try:
                blob, downloaded = self.cache.ensure(
                    layer.digest, layer.size,
                    lambda layer=layer: self.registry.blob_chunks(layer.digest, layer.size),
                    source, self.progress)
            except BlobMissing as error:
                raise InputError(str(error).rstrip(".")) from None
            self.fetched_bytes += layer.size if downloaded else 0
            _writable(lambda b=blob, d=destination: _place(b, d, True), source)
        # A fresh Hasher: the memo must never vouch for bytes a registry sent.
        digest = Hasher().digest_paths([target])[0]
        if set(digest.files) != {path for path, _ in files}:
            raise InputError(f"{where}: holds files its dirHash leaves out")
        if digest.dir_hash != entry.dir_hash:
            raise InputError(f"{where}: its files hash to dirHash {str(digest.dir_hash)[:16]}…, "
                             f"not the signed log's {entry.dir_hash[:16]}…")


@contextlib.contextmanager
def from_registry(registry: Registry, reference: Reference, cache: BlobCache, *,
                  progress: ProgressCallback | None = None) -> Iterator[RegistryCheckpoints]:
    """A checkpoint source for `replay`, its files removed afterwards (the blobs stay cached)."""
    with cache.workspace() as directory:
        yield RegistryCheckpoints(registry, reference, cache, directory / "checkpoints",
                                  progress)
