"""keygen and digest through the command line, checked against independent tools."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from helpers import assert_error, assert_no_traceback, dsse_verifies, make_keys, read_json, run

# ---------------------------------------------------------------- keygen


def test_keygen_writes_pkcs8_private_key_0600_and_spki_public_key(tmp_path: Path) -> None:
    result = run(["keygen", tmp_path / "keys" / "builder"])
    assert result.code == 0, result.output
    private = tmp_path / "keys" / "builder.key"
    public = tmp_path / "keys" / "builder.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    private_pem = private.read_bytes()
    public_pem = public.read_bytes()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")  # SubjectPublicKeyInfo
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    derived = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert derived == public_pem, "the public key file does not belong to the private key"
    assert str(private) in result.stdout and str(public) in result.stdout


def test_keygen_ed25519(tmp_path: Path) -> None:
    result = run(["keygen", tmp_path / "ed", "--algorithm", "ed25519", "--json"])
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["algorithm"] == "ed25519"
    private = serialization.load_pem_private_key(
        (tmp_path / "ed.key").read_bytes(), password=None)
    public = serialization.load_pem_public_key((tmp_path / "ed.pub").read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    assert stat.S_IMODE((tmp_path / "ed.key").stat().st_mode) == 0o600


def test_keygen_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    result = run(["keygen", tmp_path / "k", "--algorithm", "rsa"])
    assert_error(result, 2, "rsa")
    assert not (tmp_path / "k.key").exists()


def test_keygen_with_password_writes_encrypted_pkcs8(tmp_path: Path) -> None:
    result = run(["keygen", tmp_path / "secret", "--password", "correct horse"])
    assert result.code == 0, result.output
    pem = (tmp_path / "secret.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(TypeError):  # cryptography: "Password was not given but key is encrypted"
        serialization.load_pem_private_key(pem, password=None)
    key = serialization.load_pem_private_key(pem, password=b"correct horse")
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def test_keygen_does_not_overwrite_without_force(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "builder")
    before = (keys.private.read_bytes(), keys.public.read_bytes())
    result = run(["keygen", tmp_path / "builder"])
    assert_error(result, 2, str(keys.private), "--force")
    assert (keys.private.read_bytes(), keys.public.read_bytes()) == before

    # Only the public half present: still refused, and the lone file is left alone.
    keys.private.unlink()
    result = run(["keygen", tmp_path / "builder"])
    assert_error(result, 2, str(keys.public), "--force")
    assert not keys.private.exists()
    assert keys.public.read_bytes() == before[1]

    result = run(["keygen", tmp_path / "builder", "--force"])
    assert result.code == 0, result.output
    assert keys.public.read_bytes() != before[1]
    assert stat.S_IMODE(keys.private.stat().st_mode) == 0o600


def _record_with(tmp_path: Path, key: Path, env: dict[str, str | None],
                 *extra: str) -> tuple[int, str]:
    (tmp_path / "in.txt").write_text("input\n")
    result = run(["record", "--step", "copy", "--material", "in.txt", "--product", "out.txt",
                  "--key", key, *extra, "--", "cp", "in.txt", "out.txt"],
                 cwd=tmp_path, env=env)
    assert_no_traceback(result)
    return result.code, result.stderr


def test_password_from_environment_variable_unlocks_key_for_record(tmp_path: Path) -> None:
    assert run(["keygen", tmp_path / "locked", "--password", "s3cret"]).code == 0
    key = tmp_path / "locked.key"

    code, stderr = _record_with(tmp_path, key, {"MODEL_VERIFIER_KEY_PASSWORD": None})
    assert code == 2
    assert stderr.startswith(f"error: {key}:") and "MODEL_VERIFIER_KEY_PASSWORD" in stderr
    assert not (tmp_path / "attestations").exists()

    code, stderr = _record_with(tmp_path, key, {"MODEL_VERIFIER_KEY_PASSWORD": "wrong"})
    assert code == 2
    assert stderr.startswith(f"error: {key}:") and "password" in stderr

    code, stderr = _record_with(tmp_path, key, {"MODEL_VERIFIER_KEY_PASSWORD": "s3cret"})
    assert code == 0, stderr
    bundle = read_json(tmp_path / "attestations" / "copy.intoto.json")
    assert dsse_verifies(bundle, (tmp_path / "locked.pub").read_bytes())


def test_a_password_for_an_unencrypted_key_is_not_called_encrypted(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "plain")
    code, stderr = _record_with(tmp_path, keys.private, {"MODEL_VERIFIER_KEY_PASSWORD": "s3cret"})
    assert code == 2
    assert "is not encrypted" in stderr and "MODEL_VERIFIER_KEY_PASSWORD" in stderr, stderr
    assert "is encrypted" not in stderr
    code, stderr = _record_with(tmp_path, keys.private, {"MODEL_VERIFIER_KEY_PASSWORD": None},
                                "--password", "s3cret")
    assert code == 2 and "is not encrypted" in stderr and "--password" in stderr, stderr


def test_password_option_unlocks_key_for_record(tmp_path: Path) -> None:
    assert run(["keygen", tmp_path / "locked", "--password", "s3cret"]).code == 0
    code, stderr = _record_with(tmp_path, tmp_path / "locked.key",
                                {"MODEL_VERIFIER_KEY_PASSWORD": None}, "--password", "s3cret")
    assert code == 0, stderr


def test_keygen_reads_password_from_environment(tmp_path: Path) -> None:
    result = run(["keygen", tmp_path / "k"], env={"MODEL_VERIFIER_KEY_PASSWORD": "from-env"})
    assert result.code == 0, result.output
    pem = (tmp_path / "k.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    serialization.load_pem_private_key(pem, password=b"from-env")


# ---------------------------------------------------------------- digest


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dirhash_in_python(root: Path) -> str:
    """The in-toto dirHash written from its definition: sha256 of sha256sum's lines, paths
    relative, sorted by their UTF-8 bytes (what LC_ALL=C sort does)."""
    names = sorted(
        (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()),
        key=lambda name: name.encode(),
    )
    lines = "".join(f"{sha256_of(root / name)}  {name}\n" for name in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def dirhash_by_shell(root: Path) -> str:
    """The recipe the design document gives users, run for real."""
    completed = subprocess.run(
        "find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum",
        shell=True, cwd=root, capture_output=True, text=True, check=True,
    )
    return completed.stdout.split()[0]


HAVE_SHELL_TOOLS = all(shutil.which(tool) for tool in ("find", "sha256sum", "xargs", "sort"))

# Names where byte order, code point order and a naive order disagree: upper before lower,
# '-' < '.' < '/' < '0', Latin-1, CJK and a character outside the BMP.
TRICKY_NAMES = [
    "b.txt", "B.txt", "a-b", "a.b", "a/b", "a0", "a/c/d.bin", "é.txt", "z.txt",
    "日本/データ.csv", "\U0001F600.json", "ü/x",
]


def make_tree(root: Path, names: list[str]) -> Path:
    for index, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"content {index} of {name}\n".encode())
    return root


def test_digest_of_file_equals_hashlib_and_prints_like_sha256sum(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # spans several reads
    result = run(["digest", target])
    assert result.code == 0, result.output
    assert result.stdout == f"{sha256_of(target)}  {target}\n"
    if shutil.which("sha256sum"):
        expected = subprocess.run(["sha256sum", str(target)], capture_output=True, text=True,
                                  check=True).stdout
        assert result.stdout == expected


def test_digest_of_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    result = run(["digest", "empty"], cwd=tmp_path)
    assert result.stdout == f"{hashlib.sha256(b'').hexdigest()}  empty\n"


def test_dirhash_matches_python_recomputation(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "model", TRICKY_NAMES)
    result = run(["digest", root, "--json"])
    assert result.code == 0, result.output
    [entry] = json.loads(result.stdout)
    assert entry["digest"] == {"dirHash": dirhash_in_python(root)}
    assert entry["path"] == str(root)
    # every file listed with its own sha256, names relative and POSIX
    assert entry["files"] == {name: sha256_of(root / name) for name in TRICKY_NAMES}


@pytest.mark.skipif(not HAVE_SHELL_TOOLS, reason="find/sort/xargs/sha256sum not available")
def test_dirhash_matches_the_documented_shell_pipeline(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "model", TRICKY_NAMES)
    result = run(["digest", root])
    assert result.code == 0, result.output
    shell = dirhash_by_shell(root)
    assert shell == dirhash_in_python(root)  # the two independent recomputations agree
    assert result.stdout == f"dirHash:{shell}  {root}\n"


def test_dirhash_sorts_by_code_point_not_by_locale(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", TRICKY_NAMES)
    [entry] = json.loads(run(["digest", root, "--json"]).stdout)
    assert list(entry["files"]) == sorted(TRICKY_NAMES)  # json preserves our key order
    # UTF-8 byte order and code point order agree; make sure the test data exercises both
    assert sorted(TRICKY_NAMES) == sorted(TRICKY_NAMES, key=str.encode)
    assert sorted(TRICKY_NAMES) != sorted(TRICKY_NAMES, key=str.lower)
    entry_text = "".join(f"{entry['files'][n]}  {n}\n" for n in sorted(TRICKY_NAMES))
    assert entry["digest"]["dirHash"] == hashlib.sha256(entry_text.encode()).hexdigest()


def test_dirhash_of_empty_directory_is_sha256_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    [entry] = json.loads(run(["digest", tmp_path / "empty", "--json"]).stdout)
    assert entry["digest"] == {"dirHash": hashlib.sha256(b"").hexdigest()}


def test_many_files_are_hashed_correctly_in_parallel(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    names = [f"layer{index // 30:02d}/shard-{index:04d}.bin" for index in range(300)]
    for index, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        # different sizes so that a mix-up between workers would show
        (root / name).write_bytes(os.urandom(1 + (index * 7919) % 20000))
    loose = [root / names[0], root / names[299]]
    result = run(["digest", root, *loose, "--json"])
    assert result.code == 0, result.output
    tree, first, last = json.loads(result.stdout)
    assert tree["files"] == {name: sha256_of(root / name) for name in names}
    assert tree["digest"]["dirHash"] == dirhash_in_python(root)
    assert first["digest"] == {"sha256": sha256_of(loose[0])}
    assert last["digest"] == {"sha256": sha256_of(loose[1])}


def test_digest_prints_one_line_per_path_in_the_order_given(tmp_path: Path) -> None:
    make_tree(tmp_path, ["one", "two", "dir/three"])
    result = run(["digest", "two", "dir", "one"], cwd=tmp_path)
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{sha256_of(tmp_path / 'two')}  two",
        f"dirHash:{dirhash_in_python(tmp_path / 'dir')}  dir",
        f"{sha256_of(tmp_path / 'one')}  one",
    ]


def test_digest_json_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    result = run(["digest", "f", "--json"], cwd=tmp_path)
    assert json.loads(result.stdout) == [
        {"path": "f", "digest": {"sha256": hashlib.sha256(b"abc").hexdigest()}}]


def test_symlink_inside_a_directory_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "model", ["weights.bin"])
    (root / "alias.bin").symlink_to(root / "weights.bin")
    result = run(["digest", root])
    assert_error(result, 2, str(root / "alias.bin"), "symbolic link")
    assert result.stdout == ""


def test_symlink_given_directly_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real.bin").write_bytes(b"x")
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    assert_error(run(["digest", "link.bin"], cwd=tmp_path), 2, "link.bin", "symbolic link")
    (tmp_path / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    assert_error(run(["digest", "linkdir"], cwd=tmp_path), 2, "linkdir", "symbolic link")


def test_digest_missing_path_json_error(tmp_path: Path) -> None:
    result = run(["digest", "absent.bin", "--json"], cwd=tmp_path)
    assert result.code == 2
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2 and "absent.bin" in error["error"]
