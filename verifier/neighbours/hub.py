"""Hugging Face Hub models as a deployer has them: the cache that `from_pretrained`,
`snapshot_download` and `hf download` fill, and `hf://ORG/NAME@REV` references to it.

The cache keeps each repository under `models--ORG--NAME/`: the file contents in `blobs/`, named
by their digest, and one folder per commit in `snapshots/<commit>/` whose files are symbolic links
to those blobs. A link is otherwise refused (the digest would not say what it points to); in a
snapshot it is accepted when it resolves to a file directly inside that repository's `blobs/`,
and the file hashed is that blob. A link leading anywhere else (another repository, the home
directory, a blob's sub-folder) is refused, naming it.

The blob's name is checked where it is a digest, the way huggingface_hub names blobs after the
ETag the Hub sends: 64 hex digits are the sha256 of an LFS (or Xet) file's content, 40 are the
git blob sha1 (`sha1("blob <size>\\0" + content)`) of a small file kept in git. Both come from
the same bytes the directory digest is made of, so a blob altered in the cache fails by name.
That check is about the cache's integrity; what makes a model trustworthy is still its digest
against the attestations, as for any directory.

A Hub publisher keeps the attestations in the Hub repository itself, in `.attestations/`: they
travel with every download of the revision, `verify-model` finds them there without flags, and
that folder is never part of the model's digest (it is left out like an `--ignore` pattern, and
the report and the VSA say so). `hf://ORG/NAME@REV` resolves through huggingface_hub, offline
(`HF_HUB_OFFLINE=1`, local files only): a model must be downloaded before it is verified.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.digest import LinkRule, PathDigest

SCHEME = "hf://"
ATTESTATIONS = ".attestations"  # where a publisher keeps them in the Hub repository
ATTESTATIONS_PATTERN = f"{ATTESTATIONS}/**"
# A small file the Hub keeps in git (its blob named by git sha1) is at most 10 MB; read bounded.
MAX_GIT_BLOB_BYTES = 16 * 1024 * 1024
_REFERENCE = re.compile(r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
                        r"(?:@(?P<revision>[\w.-]+(?:/[\w.-]+)*))?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


def is_hub(artifact: str) -> bool:
    return artifact.startswith(SCHEME)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot folder of the cache and the repository folder holding it."""

    path: Path
    repository: Path

    @property
    def attestations(self) -> Path:
        return self.path / ATTESTATIONS


def snapshot_of(directory: Path) -> Snapshot | None:
    """The snapshot a directory is, when it is one (`…/models--ORG--NAME/snapshots/<commit>`,
    beside that repository's `blobs/`), else None."""
    absolute = Path(os.path.abspath(directory))
    repository = absolute.parent.parent
    if (absolute.parent.name == "snapshots" and repository.name.startswith("models--")
            and (repository / "blobs").is_dir()):
        return Snapshot(absolute, repository)
    return None


def link_rule(snapshot: Snapshot) -> LinkRule:
    """A link inside the snapshot stands for the blob it resolves to, directly inside this
    repository's blobs/; any other link is refused, naming it."""
    blobs = os.path.realpath(snapshot.repository / "blobs")

    def resolve(link: str) -> str:
        try:
            target = os.path.realpath(link, strict=True)
        except OSError as error:
            raise InputError(f"{link}: is a link that cannot be followed ({error.strerror}); "
                             "a snapshot's links must lead to its repository's blobs/.") from None
        if os.path.dirname(target) != blobs:
            raise InputError(f"{link}: links to {target}, outside {blobs}; in a Hugging Face "
                             "snapshot only links to the repository's own blobs are followed.")
        return target

    return resolve


def snapshot_links(artifact: Path) -> tuple[Snapshot | None, LinkRule | None]:
    """The snapshot an artifact is and the rule for its links; (None, None) for anything else."""
    snapshot = snapshot_of(artifact) if artifact.is_dir() else None
    return snapshot, (link_rule(snapshot) if snapshot is not None else None)


def blob_problems(digest: PathDigest) -> list[str]:
    """Each linked file whose blob is named by a digest the blob's bytes do not have."""
    problems = []
    for name, blob in sorted(digest.links.items()):
        stored_as = os.path.basename(blob)
        if _SHA256.fullmatch(stored_as):
            actual = digest.files.get(name)
            kind = "sha256"
        elif _SHA1.fullmatch(stored_as):
            content = readers.read_bytes(Path(blob), "cached blob", MAX_GIT_BLOB_BYTES)
            if hashlib.sha256(content).hexdigest() != digest.files.get(name):
                problems.append(f"{digest.path / name}: its blob {blob} changed while it was "
                                "being verified.")
                continue
            actual = hashlib.sha1(b"blob %d\0" % len(content) + content,
                                  usedforsecurity=False).hexdigest()
            kind = "git blob sha1"
        else:
            continue  # not a digest: the directory's digest alone speaks for it
        if actual != stored_as:
            problems.append(f"{digest.path / name}: its blob {blob} is stored under the "
                            f"{kind} {stored_as[:16]}… but holds {str(actual)[:16]}…: the "
                            "cache was altered.")
    return problems


def resolve(reference: str) -> Snapshot:
    """The cached snapshot `hf://ORG/NAME[@REV]` names (REV: a commit, branch or tag; default
    main), found by huggingface_hub offline; InputError when it is not in the cache."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise InputError(f"{reference}: is not a Hub reference such as hf://ORG/NAME@REVISION.")
    repo, revision = match["repo"], match["revision"] or "main"
    if "huggingface_hub" not in sys.modules:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read when the library is imported
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError(f"{reference}: hf:// needs the Python package huggingface_hub "
                         "(pip install 'model-verifier[hub]').") from None
    try:
        folder = snapshot_download(repo, revision=revision, local_files_only=True)
    except (OSError, ValueError) as error:  # the library's not-cached, incomplete, bad-id errors
        raise InputError(f"{reference}: is not in the Hugging Face cache, or only in part "
                         f"({type(error).__name__}); download it first (hf download {repo} "
                         f"--revision {revision}).") from None
    snapshot = snapshot_of(Path(folder))
    if snapshot is None:
        raise InputError(f"{reference}: huggingface_hub gave {folder}, which is not a snapshot "
                         "folder of its cache.")
    return snapshot


def attestation_files(snapshot: Snapshot) -> list[Path]:
    """The publisher's attestations in the snapshot's `.attestations/` (none: empty), each link
    checked like the model's own: only the repository's blobs are read."""
    folder = snapshot.attestations
    if not folder.is_dir() or folder.is_symlink():
        return []
    rule = link_rule(snapshot)
    found = []
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".json", ".jsonl"):
            continue
        if path.is_symlink():
            rule(os.fspath(path))  # raises for a link leaving the blobs
        if path.is_file():
            found.append(path)
    return found
