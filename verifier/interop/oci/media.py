"""Media types, and the manifests and indexes this tool writes and reads.

A model is a CNCF ModelPack v1 artifact with raw (unarchived) layers, one per file: the layer's
`org.opencontainers.image.title` is the file's path inside the model (the ORAS convention, so
`oras pull` restores the files too) and `org.cncf.model.filepath` says the same for ModelPack
tools. An attestation is a referrer: an image manifest whose `subject` is the model's manifest,
whose one layer is the Sigstore bundle, with the `artifactType` cosign and `gh attestation` use.
Every JSON document is written with sorted keys and no timestamp, so the same model and the
same bundle always give the same digests (pushing twice changes nothing).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from verifier.errors import InputError
from verifier.formats.envelope import ACCEPTED_MEDIA_TYPES, BUNDLE_MEDIA_TYPE

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
BUNDLE = BUNDLE_MEDIA_TYPE
# A step's record digests (record --record-digests), attached beside its bundle: the step signed
# the file's sha256, so where it comes from never matters (docs/openness.md).
RECORD_DIGESTS = "application/vnd.model-verifier.record-digests.v1"
BUNDLE_TYPES = frozenset(ACCEPTED_MEDIA_TYPES)
# One checkpoint of a step's signed checkpoint log (docs/oci.md): a referrer of the model, one
# layer per file. Its annotations only help find it; the fetched files' dirHash must be the
# log's before anything uses them.
CHECKPOINT = "application/vnd.model-verifier.checkpoint.v1"

TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
KIND = "dev.model-verifier.model.kind"  # "file" or "directory": how the model was given
BUNDLE_CONTENT = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
CHECKPOINT_NAME = "dev.model-verifier.checkpoint.name"
CHECKPOINT_STEP = "dev.model-verifier.checkpoint.step"
CHECKPOINT_DIRHASH = "dev.model-verifier.checkpoint.dirHash"

# The distribution spec asks registries to accept manifests up to 4 MiB; nothing larger is read.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_LAYERS = 100_000
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_PATH_BYTES = 4095  # a whole layer path (PATH_MAX, less the terminating NUL)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (Unicode category Cc)
_CODE_SUFFIXES = (".py", ".sh", ".ipynb")
_DOC_SUFFIXES = (".md", ".txt", ".rst", ".pdf")
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".model", ".tiktoken")


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        value: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                                 "size": self.size}
        if self.annotations:
            value["annotations"] = dict(self.annotations)
        if self.artifact_type:
            value["artifactType"] = self.artifact_type
        return value

    @property
    def title(self) -> str | None:
        return self.annotations.get(TITLE)


def descriptor_of(media_type: str, data: bytes, **extra: Any) -> Descriptor:
    return Descriptor(media_type, sha256_digest(data), len(data), **extra)


def layer_media_type(path: str) -> str:
    """The ModelPack kind of one file, by its name: weights unless it looks like something else."""
    name = path.lower()
    if name.endswith(_CODE_SUFFIXES):
        return CODE
    if name.endswith(_DOC_SUFFIXES) or posixpath.basename(name) in ("license", "readme"):
        return DOC
    if name.endswith(_CONFIG_SUFFIXES):
        return WEIGHT_CONFIG
    return WEIGHT


def model_config(name: str, layers: list[Descriptor]) -> bytes:
    """The ModelPack config blob: the model's name and its layers' content addresses."""
    return canonical({
        "descriptor": {"name": name},
        "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in layers]},
        "config": {},
    })


def model_manifest(name: str, kind: str, config: Descriptor, layers: list[Descriptor]) -> bytes:
    return canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": MODEL_ARTIFACT,
        "config": config.to_dict(),
        "layers": [layer.to_dict() for layer in layers],
        "annotations": {TITLE: name, KIND: kind},
    })


def bundle_manifest(subject: Descriptor, bundle: Descriptor, predicate_type: str | None
                    ) -> bytes:
    annotations = {BUNDLE_CONTENT: "dsse-envelope"}
    if predicate_type:
        annotations[BUNDLE_PREDICATE] = predicate_type
    return canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": BUNDLE,
        "config": descriptor_of(EMPTY, EMPTY_BLOB).to_dict(),
        "layers": [bundle.to_dict()],
        "subject": subject.to_dict(),
        "annotations": annotations,
    })


def record_digests_manifest(subject: Descriptor, digests: Descriptor) -> bytes:
    return canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": RECORD_DIGESTS,
        "config": descriptor_of(EMPTY, EMPTY_BLOB).to_dict(),
        "layers": [digests.to_dict()],
        "subject": subject.to_dict(),
    })


def checkpoint_manifest(subject: Descriptor, name: str, step: int, dir_hash: str,
                        layers: list[Descriptor]) -> bytes:
    return canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": CHECKPOINT,
        "config": descriptor_of(EMPTY, EMPTY_BLOB).to_dict(),
        "layers": [layer.to_dict() for layer in layers],
        "subject": subject.to_dict(),
        "annotations": {CHECKPOINT_NAME: name, CHECKPOINT_STEP: str(step),
                        CHECKPOINT_DIRHASH: dir_hash},
    })


def index_document(manifests: list[Descriptor]) -> bytes:
    return canonical({"schemaVersion": 2, "mediaType": INDEX,
                      "manifests": [m.to_dict() for m in manifests]})


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers tag schema: `sha256-<hex>` tags the index of a manifest's referrers."""
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}-{value}"


# --- reading what a registry sent ---------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    media_type: str
    artifact_type: str | None
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None
    annotations: dict[str, str]


def _descriptor(value: Any, where: str, source: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InputError(f"{source}: {where} is not a descriptor object.")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type or len(media_type) > 255:
        raise InputError(f"{source}: {where} has no valid mediaType.")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InputError(f"{source}: {where} has digest {str(digest)[:80]!r}; only sha256 "
                         "digests are accepted.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size >= 2**63:
        raise InputError(f"{source}: {where} has no valid size.")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise InputError(f"{source}: {where} has annotations that are not strings.")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InputError(f"{source}: {where} has an artifactType that is not a string.")
    return Descriptor(media_type, digest, size, annotations, artifact_type)


def _document(data: bytes, source: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{source}: is not a JSON document.") from None
    except (RecursionError, ValueError):
        raise InputError(f"{source}: holds JSON no manifest can hold.") from None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise InputError(f"{source}: is not an OCI document (schemaVersion 2).")
    return document


def parse_manifest(data: bytes, source: str) -> Manifest:
    """An OCI image manifest, every field type-checked before use."""
    document = _document(data, source)
    media_type = document.get("mediaType", MANIFEST)
    if media_type != MANIFEST:
        raise InputError(f"{source}: is a {str(media_type)[:80]!r}, not an OCI image manifest.")
    layers = document.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise InputError(f"{source}: has no valid list of layers.")
    subject = document.get("subject")
    annotations = document.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise InputError(f"{source}: has annotations that are not strings.")
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InputError(f"{source}: has an artifactType that is not a string.")
    return Manifest(
        media_type, artifact_type, _descriptor(document.get("config"), "config", source),
        [_descriptor(layer, f"layer {n}", source) for n, layer in enumerate(layers)],
        _descriptor(subject, "subject", source) if subject is not None else None,
        annotations,
    )


def parse_index(data: bytes, source: str) -> list[Descriptor]:
    """The manifests an OCI image index lists."""
    document = _document(data, source)
    if document.get("mediaType", INDEX) != INDEX:
        raise InputError(f"{source}: is not an OCI image index.")
    manifests = document.get("manifests")
    if not isinstance(manifests, list) or len(manifests) > MAX_LAYERS:
        raise InputError(f"{source}: has no valid list of manifests.")
    return [_descriptor(m, f"manifest {n}", source) for n, m in enumerate(manifests)]


def model_files(manifest: Manifest, source: str) -> tuple[str, str, list[tuple[str, Descriptor]]]:
    """(name, kind, [(relative path, layer)]) of a model manifest; every path checked safe."""
    kind = manifest.annotations.get(KIND, "directory")
    name = manifest.annotations.get(TITLE, "model")
    if kind not in ("file", "directory"):
        raise InputError(f"{source}: model kind {kind[:40]!r} is neither file nor directory.")
    _check_path(name, source, single=True)
    files: list[tuple[str, Descriptor]] = []
    for number, layer in enumerate(manifest.layers):
        path = layer.title
        if path is None:
            raise InputError(f"{source}: layer {number} has no {TITLE} annotation naming its file.")
        _check_path(path, source, single=kind == "file")
        files.append((path, layer))
    _check_no_overlap([path for path, _ in files], source)
    if kind == "file" and (len(files) != 1 or files[0][0] != name):
        raise InputError(f"{source}: a single-file model must have exactly one layer, {name!r}.")
    return name, kind, files


def _check_no_overlap(paths: list[str], source: str) -> None:
    """No path named twice, or both as a file and as a directory holding another.

    With "/" replaced by NUL (which no checked path holds, so it sorts below every character),
    sorting orders paths component by component: a path that is a directory of another sorts
    just before it or before paths that also lie inside it, so comparing neighbours finds every
    clash. Time O(n log n) comparisons, memory one key per path: never the set of every prefix,
    which a few thousand deep paths would make gigabytes."""
    keys = sorted(path.replace("/", "\0") for path in paths)
    for before, after in pairwise(keys):
        if after == before or after.startswith(before + "\0"):
            raise InputError(f"{source}: {before.replace(chr(0), '/')[:120]!r} is named twice, "
                             "or as a file and a directory.")


def _check_path(path: str, source: str, *, single: bool) -> None:
    """A relative path any POSIX file system can hold, spelled one way only: strict UTF-8 (a
    lone surrogate would be written as the bytes another name already has), no control
    character, no empty, "." or ".." component, components of at most 255 bytes and the whole
    at most 4095 (NAME_MAX and PATH_MAX less the terminating NUL)."""
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{source}: {path[:120]!r} is not a valid UTF-8 file name.") from None
    parts = path.split("/")
    bad = (not path or len(encoded) > MAX_PATH_BYTES or path.startswith("/") or "\\" in path
           or _CONTROL.search(path) is not None
           or any(p in ("", ".", "..") for p in parts) or (single and len(parts) > 1))
    if bad:
        raise InputError(f"{source}: {path[:120]!r} is not a safe relative file path.")
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise InputError(f"{source}: {path[:120]!r} has a name longer than the "
                         f"{MAX_NAME_BYTES} bytes a file system allows.")
