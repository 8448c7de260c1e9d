"""The hashing engine: right digests on every read path, each file once, BLAKE3 alongside
sha256 and accepted only where a policy says so, and a progress bar on terminals only.

Expected digests come from hashlib and the blake3 package fed whole byte strings, and from
coreutils and `b3sum` where installed, never from the engine's own windowed reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import yaml
from helpers import (
    BIN,
    INTOTO,
    PACKAGE,
    assert_error,
    build_chain,
    payload_of,
    read_json,
    record_step,
    run,
    sign_bundle,
    write_json,
)
from jsonschema import Draft202012Validator

from verifier.errors import InputError
from verifier.formats import digest as engine
from verifier.formats.digest import Hasher

EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
MIB = 1024 * 1024


def _pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ from window to window (so misplaced windows show)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    counter = b"".join(i.to_bytes(4, "big") for i in range(size // 65536 + 1))
    data = bytearray((block * (size // len(block) + 1))[:size])
    data[: len(counter)] = counter[: len(data)]
    return bytes(data)


SIZES = [0, 1, 4095, engine.SMALL_FILE_SIZE - 1, engine.SMALL_FILE_SIZE,
         engine.WINDOW_SIZE, 2 * engine.WINDOW_SIZE + 12345]


@pytest.mark.parametrize("size", SIZES)
def test_sha256_and_blake3_match_independent_hashes_on_every_read_path(tmp_path: Path,
                                                                        size: int) -> None:
    data = _pattern(size, size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    result = Hasher(algorithms=("sha256", "blake3")).digest_paths([path])[0]
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.blake3 == blake3.blake3(data).hexdigest()
    assert engine.sha256_file(path) == hashlib.sha256(data).hexdigest()
    if size == 0:
        assert result.blake3 == EMPTY_BLAKE3  # the published test vector


@pytest.mark.skipif(shutil.which("b3sum") is None, reason="b3sum is not installed")
def test_blake3_agrees_with_b3sum(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(_pattern(3 * engine.WINDOW_SIZE + 7))
    expected = subprocess.run(["b3sum", "--no-names", str(path)], capture_output=True,
                              text=True, check=True).stdout.strip()
    assert Hasher(algorithms=("blake3",)).digest_paths([path])[0].blake3 == expected


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"layers": 2}',
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "tokenizer/merges.txt": b"",
        "weights/part-1.bin": _pattern(engine.WINDOW_SIZE + 1, 1),
        "weights/part-2.bin": _pattern(3 * MIB, 2),
        "z/deep/er/x": b"x" * 70000,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_directory_digest_is_the_dirhash_of_per_file_sha256(tmp_path: Path) -> None:
    files = _tree(tmp_path / "model")
    lines = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    expected = hashlib.sha256(lines.encode()).hexdigest()
    for workers in (1, 4):
        result = Hasher(workers).digest_paths([tmp_path / "model"])[0]
        assert result.dir_hash == expected
        assert result.files == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    if shutil.which("sha256sum") and shutil.which("find"):
        pipeline = subprocess.run(
            "find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum",
            shell=True, cwd=tmp_path / "model", capture_output=True, text=True, check=True)
        assert pipeline.stdout.split()[0] == expected


def test_blake3_of_a_directory_covers_each_file_and_leaves_dirhash_alone(tmp_path: Path) -> None:
    files = _tree(tmp_path / "model")
    plain = Hasher().digest_paths([tmp_path / "model"])[0]
    both = Hasher(algorithms=("sha256", "blake3")).digest_paths([tmp_path / "model"])[0]
    assert both.dir_hash == plain.dir_hash
    assert both.files_blake3 == {n: blake3.blake3(d).hexdigest() for n, d in files.items()}
    assert both.file_digest_set("config.json") == {
        "sha256": hashlib.sha256(files["config.json"]).hexdigest(),
        "blake3": blake3.blake3(files["config.json"]).hexdigest(),
    }


def test_parallel_results_come_back_in_the_order_asked(tmp_path: Path) -> None:
    paths = []
    for index in range(40):
        path = tmp_path / f"f{index:02d}"
        path.write_bytes(_pattern(index * 40000 + 1, index))
        paths.append(path)
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert Hasher(8).hash_files(paths) == expected
    assert Hasher(8).hash_files(reversed(paths)) == expected[::-1]


class _Counting:
    """Wraps the engine's per-file hash function to count which files it read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, tuple[str, ...]]] = []
        original = engine._hash_descriptor

        def counted(fd: int, size: int, algorithms, buffer, progress):  # type: ignore[no-untyped-def]
            self.calls.append((size, tuple(algorithms)))
            return original(fd, size, algorithms, buffer, progress)

        monkeypatch.setattr(engine, "_hash_descriptor", counted)


def test_each_file_is_hashed_once_per_hasher(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    files = _tree(tmp_path / "model")
    counter = _Counting(monkeypatch)
    hasher = Hasher(4)
    model = tmp_path / "model"
    first = hasher.digest_paths([model, model / "config.json", model])
    again = hasher.digest_paths([model / "weights" / "part-1.bin"])
    assert len(counter.calls) == len(files)
    assert first[0] == first[2]
    assert again[0].sha256 == first[0].files["weights/part-1.bin"]
    # Asking for blake3 later reads the file again for blake3 only.
    hasher.digest_paths([model / "config.json"], ("sha256", "blake3"))
    assert counter.calls[-1] == (len(files["config.json"]), ("blake3",))


def test_prefetch_then_digest_reads_each_file_once(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    files = _tree(tmp_path / "model")
    counter = _Counting(monkeypatch)
    hasher = Hasher(2)
    hasher.prefetch([tmp_path / "model"])
    result = hasher.digest_paths([tmp_path / "model"])[0]  # waits for files in flight
    assert result.files == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    assert sorted(size for size, _ in counter.calls) == sorted(len(d) for d in files.values())


def test_a_failed_prefetch_leaves_the_error_to_the_real_call(tmp_path: Path) -> None:
    hasher = Hasher()
    hasher.prefetch([tmp_path / "missing"])
    with pytest.raises(InputError, match="no such file"):
        hasher.digest_paths([tmp_path / "missing"])


def test_a_changed_file_is_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    counter = _Counting(monkeypatch)
    hasher = Hasher()
    assert hasher.hash_files([path]) == [hashlib.sha256(b"one").hexdigest()]
    path.write_bytes(b"two!")
    assert hasher.hash_files([path]) == [hashlib.sha256(b"two!").hexdigest()]
    assert len(counter.calls) == 2


def test_largest_files_first_then_small_files_in_name_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {"a": 10, "b": 3 * MIB, "c": 1000, "d": 2 * MIB, "e": 100, "f": 5 * MIB}
    for name, size in sizes.items():
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "m" / name).write_bytes(b"\0" * size)
    counter = _Counting(monkeypatch)
    Hasher(1).digest_paths([tmp_path / "m"])
    assert [size for size, _ in counter.calls] == [5 * MIB, 3 * MIB, 2 * MIB, 10, 1000, 100]


def test_many_small_files_with_threads_give_the_same_digests(tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i:04d}": _pattern(i * 37 % 70000, i) for i in range(600)}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    result = Hasher(4).digest_paths([tmp_path])[0]
    assert result.files == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}


def test_a_file_growing_while_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(_pattern(3 * engine.WINDOW_SIZE))

    def append_once(count: int) -> None:
        if path.stat().st_size == 3 * engine.WINDOW_SIZE:
            with open(path, "ab") as stream:
                stream.write(b"more")

    with pytest.raises(InputError, match="changed while it was being hashed"):
        Hasher(1, append_once).digest_paths([path])


def test_links_fifos_and_missing_files_give_one_sentence(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="symbolic link"):
        Hasher().hash_files([tmp_path / "link"])
    with pytest.raises(InputError, match="not a regular file"):
        Hasher().hash_files([tmp_path / "fifo"])  # and does not block on the FIFO
    with pytest.raises(InputError, match="no such file"):
        Hasher(4).hash_files([target, tmp_path / "missing", target])
    assert Hasher(allow_symlinks=True).hash_files([tmp_path / "link"]) == [
        hashlib.sha256(b"x").hexdigest()]


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(InputError, match="unknown algorithm"):
        Hasher(algorithms=("md5",))


# ------------------------------------------------------------------ the digest command


def test_digest_command_prints_blake3_alongside_sha256(tmp_path: Path) -> None:
    data = _pattern(engine.WINDOW_SIZE + 99)
    (tmp_path / "big.bin").write_bytes(data)
    result = run(["digest", "--digest", "blake3", tmp_path / "big.bin"])
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{hashlib.sha256(data).hexdigest()}  {tmp_path / 'big.bin'}",
        f"blake3:{blake3.blake3(data).hexdigest()}  {tmp_path / 'big.bin'}",
    ]
    as_json = json.loads(run(["digest", "--json", "--digest", "blake3",
                              tmp_path / "big.bin"]).stdout)
    assert as_json[0]["digest"] == {"sha256": hashlib.sha256(data).hexdigest(),
                                    "blake3": blake3.blake3(data).hexdigest()}
    plain = json.loads(run(["digest", "--json", tmp_path / "big.bin"]).stdout)
    assert plain[0]["digest"] == {"sha256": hashlib.sha256(data).hexdigest()}


def test_digest_command_refuses_an_unknown_digest(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    assert_error(run(["digest", "--digest", "md5", tmp_path / "f"]), 2, "--digest md5")


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run the installed command with stdout and stderr on a pseudo-terminal."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(BIN / "model-verifier"), *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the command closed its end of the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=60), output


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "weights.bin"
    with open(path, "wb") as stream:
        stream.truncate(200 * MIB)  # sparse: no disk space, same bytes to hash
    return path


def test_progress_bar_on_a_terminal(big_file: Path) -> None:
    code, output = _on_a_terminal(["digest", big_file.name], big_file.parent)
    assert code == 0, output
    text = output.decode()
    assert "hashing [" in text and "GB/s" in text and "s left" in text, text
    assert f"{hashlib.sha256(bytes(200 * MIB)).hexdigest()}  weights.bin" in text


def test_no_progress_bar_with_quiet_or_when_piped(big_file: Path) -> None:
    code, output = _on_a_terminal(["digest", "--quiet", big_file.name], big_file.parent)
    assert code == 0, output
    assert b"GB/s" not in output
    piped = subprocess.run([str(BIN / "model-verifier"), "digest", big_file.name],
                           cwd=big_file.parent, capture_output=True, check=False)
    assert piped.returncode == 0
    assert piped.stderr == b""
    assert piped.stdout.endswith(b"  weights.bin\n")


# ------------------------------------------------------------------ record and verify


def test_record_with_blake3_attests_both_digests(tmp_path: Path) -> None:
    chain = build_chain(tmp_path)
    result = record_step(chain.work, "package", chain.keys("builder").private,
                         ["model/weights.bin"], ["dist"], PACKAGE,
                         extra=["--force", "--digest", "blake3"])
    assert result.code == 0, result.output
    statement = payload_of(read_json(chain.attestation("package")))
    subjects = {s["name"]: s["digest"] for s in statement["subject"]}
    data = chain.artifact.read_bytes()
    assert subjects["dist/model.bin"] == {"sha256": hashlib.sha256(data).hexdigest(),
                                          "blake3": blake3.blake3(data).hexdigest()}
    assert set(subjects["dist"]) == {"dirHash"}
    schema = json.loads((Path(__file__).parent.parent / "attestations" /
                         "step-statement.schema.json").read_text(encoding="utf-8"))
    assert list(Draft202012Validator(schema).iter_errors(statement)) == []


def _accepting_blake3(chain_policy: Path) -> Path:
    data = yaml.safe_load(chain_policy.read_text(encoding="utf-8"))
    data["digests"] = {"accept": ["sha256", "blake3"]}
    path = chain_policy.with_name("blake3-policy.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_verify_uses_blake3_only_where_the_policy_accepts_it(tmp_path: Path) -> None:
    chain = build_chain(tmp_path)
    data = chain.artifact.read_bytes()
    record_step(chain.work, "package", chain.keys("builder").private, ["model/weights.bin"],
                ["dist"], PACKAGE, extra=["--force", "--digest", "blake3"])
    # The builder signs a package attestation whose model.bin sha256 is wrong but whose
    # blake3 is right: only a policy accepting blake3 may let that identify the file.
    bundle_path = chain.attestation("package")
    statement = payload_of(read_json(bundle_path))
    for subject in statement["subject"]:
        if subject["name"] == "dist/model.bin":
            subject["digest"]["sha256"] = "0" * 64
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    write_json(bundle_path, sign_bundle(payload, INTOTO, chain.keys("builder").private))

    default = run(["dist/model.bin", "--json"], cwd=chain.work, program="verify-model")
    assert default.code == 1, default.output
    assert json.loads(default.stdout)["digest"] == {"sha256": hashlib.sha256(data).hexdigest()}

    policy = _accepting_blake3(chain.policy)
    accepted = run(["dist/model.bin", "--policy", policy.name, "--json"], program="verify-model",
                   cwd=chain.work)
    assert accepted.code == 0, accepted.output
    assert json.loads(accepted.stdout)["digest"] == {"blake3": blake3.blake3(data).hexdigest()}


def test_a_blake3_policy_falls_back_to_sha256_for_attestations_without_blake3(
        tmp_path: Path) -> None:
    chain = build_chain(tmp_path)
    policy = _accepting_blake3(chain.policy)
    result = run(["verify", "dist/model.bin", "--policy", policy.name, "--json"], cwd=chain.work)
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["digest"] == {
        "sha256": hashlib.sha256(chain.artifact.read_bytes()).hexdigest()}


def test_a_policy_must_keep_sha256_among_accepted_digests(tmp_path: Path) -> None:
    chain = build_chain(tmp_path)
    data = yaml.safe_load(chain.policy.read_text(encoding="utf-8"))
    data["digests"] = {"accept": ["blake3"]}
    chain.policy.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run(["verify", "dist/model.bin"], cwd=chain.work)
    assert_error(result, 2, "model-policy.yaml", "digests.accept")


def test_engine_imports_no_blake3_for_sha256_only(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    probe = ("import sys; from pathlib import Path; from verifier.formats.digest import Hasher; "
             f"Hasher().digest_paths([Path({str(tmp_path / 'f')!r})]); "
             "print('blake3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
