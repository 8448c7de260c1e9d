"""Every input of the hostile corpus (tests/hostile_corpus.py) through every command that reads
it: an allowed exit code (0/1/2, never the catch-all 3), one `error:` sentence of bounded length
when the input is refused, nothing that moves the cursor or forges a line, and bounded time.
The bombs (alias bombs, 150,000 signatures, 100,000 levels of nesting, a million dimensions)
also run as real processes, under a bound on their peak memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import BIN, Chain, CliResult, build_chain, run
from hostile_corpus import Case, build_corpus

SECONDS_PER_RUN = 10.0  # generous: the slowest input takes well under a second here
HANG_SECONDS = 60  # a run still going after this is a hang: the test fails instead of waiting
PEAK_RSS_BYTES = 256 * 1024 * 1024  # the bombs, as real processes (about 100 MB at most here)
SENTENCE_CHARS = 1500  # an error sentence never grows with the input it names
_FORGERY = re.compile("[\x1b\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\ud800-\udfff]")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, list[Case]]]:
    chain = build_chain(tmp_path_factory.mktemp("hostile-chain"))
    cases, ctx = build_corpus(chain, tmp_path_factory.mktemp("hostile-corpus"))
    yield chain, cases
    for server in ctx.sockets:
        server.close()


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check(case: Case, entry: str, args: list[str], result: CliResult,
           codes: tuple[int, ...], elapsed: float) -> None:
    where = f"{case.group}/{case.name} via {entry}"
    assert "Traceback" not in result.output, (where, result.output[-3000:])
    assert "internal error" not in result.output, (where, result.output[-3000:])
    assert result.code in codes, (where, result.code, result.output[-3000:])
    assert elapsed < SECONDS_PER_RUN, (where, elapsed)
    forged = _FORGERY.search(result.output)
    assert forged is None, (where, repr(result.output[max(0, forged.start() - 80):
                                                      forged.start() + 80]))
    if result.code == 2 and "--json" in args:
        error = json.loads(result.stdout)
        assert error["exit_code"] == 2 and not result.stderr.strip(), (where, result.output)
        sentence = error["error"]
    elif result.code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (where, result.stderr[-3000:])
        sentence = lines[0]
    if result.code == 2:
        assert len(sentence) < SENTENCE_CHARS, (where, sentence[:300])
        if case.fragment is not None:
            assert case.fragment in sentence, (where, case.fragment, sentence)


def test_the_corpus_is_large_and_covers_every_group(corpus: tuple[Chain, list[Case]]) -> None:
    _, cases = corpus
    groups = {case.group for case in cases}
    assert groups == {"bundle", "statement", "rebuild", "policy", "key", "safetensors",
                      "directory", "special", "oms"}
    assert len(cases) >= 150
    assert sum(len(case.runs) for case in cases) >= 450


def test_every_input_through_every_reader(corpus: tuple[Chain, list[Case]]) -> None:
    """One test for the whole corpus (a parametrised test per run would cost more in pytest
    than the runs do); every failure is collected and reported together."""
    chain, cases = corpus
    failures: list[str] = []
    started = time.monotonic()
    for case in cases:
        for entry, (args, program, codes) in case.runs.items():
            began = time.monotonic()
            try:
                with _deadline(HANG_SECONDS):
                    result = run(args, cwd=chain.work, program=program)
                _check(case, entry, args, result, codes, time.monotonic() - began)
            except (AssertionError, TimeoutError) as failure:
                failures.append(str(failure)[:1500])
    total = time.monotonic() - started
    assert not failures, f"{len(failures)} failing runs:\n" + "\n".join(failures)
    assert total < 300, total


# A fresh interpreter without site packages starts each measured command, so that the peak
# RSS reported is the command's own and not this test process's size at the fork.
_LAUNCHER = """
import os, sys, time
out, err, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
files = [(os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY, 0),
         (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY, 0)]
began = time.monotonic()
pid = os.posix_spawn(sys.argv[4], sys.argv[4:], os.environ, file_actions=files)
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() - began > limit:
        os.kill(pid, 9)
        _, status, usage = os.wait4(pid, 0)
        break
    time.sleep(0.01)
print(time.monotonic() - began, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def _run_measured(args: list[str], program: str, cwd: Path,
                  env: dict[str, str] | None = None) -> tuple[CliResult, float, int]:
    """The real console script; its exit code, output, wall time and peak RSS in bytes."""
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "out", Path(folder) / "err"
        out.touch()
        err.touch()
        launched = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(out), str(err), str(HANG_SECONDS),
             str(BIN / program), *args], cwd=cwd, env={**os.environ, **(env or {})},
            capture_output=True, text=True, check=True)
        elapsed, peak_kib, code = launched.stdout.split()
        result = CliResult(int(code), out.read_text("utf-8", "replace"),
                           err.read_text("utf-8", "replace"))
    return result, float(elapsed), int(peak_kib) * 1024  # Linux reports KiB


def test_bombs_are_bounded_in_time_and_memory(corpus: tuple[Chain, list[Case]]) -> None:
    chain, cases = corpus
    heavy = [case for case in cases if case.heavy]
    assert len(heavy) >= 8
    for case in heavy:
        entry, (args, program, codes) = next(iter(case.runs.items()))
        result, elapsed, peak = _run_measured(args, program, chain.work)
        _check(case, entry, args, result, codes, elapsed)
        assert peak < PEAK_RSS_BYTES, (case.name, entry, peak)


def test_hostile_names_print_under_a_strict_utf8_stdout(
        corpus: tuple[Chain, list[Case]]) -> None:
    """Escapes and non-UTF-8 names from inputs, printed by real processes whose stdout
    refuses anything that is not UTF-8."""
    chain, cases = corpus
    chosen = {("statement", "step-surrogate"), ("statement", "step-escapes"),
              ("directory", "holds-escape-name"), ("safetensors", "name-escapes"),
              ("rebuild", "tensor-name-escapes"), ("statement", "material-name-escapes")}
    strict = {"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    picked = [case for case in cases if (case.group, case.name) in chosen]
    assert len(picked) == len(chosen)
    for case in picked:
        for entry, (args, program, codes) in case.runs.items():
            if entry not in ("verify-model", "diff", "verify-bundle", "digest"):
                continue
            result, elapsed, _ = _run_measured(args, program, chain.work, strict)
            _check(case, entry, args, result, codes, elapsed)


def test_a_non_utf8_artifact_name_prints(tmp_path: Path) -> None:
    """A file argument whose name is not UTF-8 (a lone surrogate in Python) is named in the
    output as \\udcXX, under a strict UTF-8 stdout, instead of crashing the print."""
    name = os.fsdecode(b"model-\xff.bin")
    (tmp_path / name).write_bytes(b"weights")
    result, _, _ = _run_measured(["digest", name], "model-verifier", tmp_path,
                                 {"PYTHONIOENCODING": "utf-8:strict"})
    assert result.code == 0, result.output
    assert "model-\\udcff.bin" in result.stdout
    assert sys.getfilesystemencoding() == "utf-8"
