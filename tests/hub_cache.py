"""A Hugging Face cache laid out by huggingface_hub's own code: its repository folder name,
pointer paths, relative links and refs. Blobs are named as the library names them from the
Hub's ETag: the sha256 of an LFS file, the git blob sha1 of a small one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = hashlib.sha1(b"the published revision", usedforsecurity=False).hexdigest()
LFS_SUFFIXES = (".bin", ".safetensors", ".gguf")  # what the Hub's .gitattributes puts in LFS


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def blob_name(name: str, data: bytes) -> str:
    lfs = name.endswith(LFS_SUFFIXES)
    return hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)


def lay_out_cache(cache: Path, repo_id: str, files: dict[str, bytes],
                  revision: str = "main", commit: str = COMMIT) -> Path:
    """What `snapshot_download(repo_id, revision=revision)` leaves in `cache`; the snapshot."""
    from huggingface_hub.file_download import (
        _cache_commit_hash_for_specific_revision,
        _create_symlink,
        _get_pointer_path,
        repo_folder_name,
    )

    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = storage / "blobs" / blob_name(name, data)
        blob.write_bytes(data)
        pointer = _get_pointer_path(str(storage), commit, name)
        os.makedirs(os.path.dirname(pointer), exist_ok=True)
        _create_symlink(str(blob), pointer, new_blob=False)
    _cache_commit_hash_for_specific_revision(str(storage), revision, commit)
    return storage / "snapshots" / commit


def files_under(directory: Path, prefix: str = "") -> dict[str, bytes]:
    """{prefix + relative name: bytes} of every file under a directory, as `hf upload
    DIRECTORY PREFIX` sends them."""
    return {prefix + p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}
