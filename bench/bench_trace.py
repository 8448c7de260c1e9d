"""Benchmark: what the sandbox and the tracer cost a recorded step.

A file-heavy step (a Python process that opens and reads every one of N small files, then
writes one product, as a data-preparation step over a sharded data set does) and a trivial one
(`true`, the pure start-up cost) are run four ways, as `record` runs them: on the host, in the
bubblewrap sandbox, followed with strace, and both. Each is timed as the best of a few runs in
the same process, and reported as a ratio against the host run; the strace logs are parsed as
record parses them, and that time is reported too.

    python bench/bench_trace.py [--files 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from verifier.steps import sandbox as sandboxes
from verifier.steps import trace

READER = """
import os, sys
total = 0
for root, _, names in os.walk('shards'):
    for name in names:
        with open(os.path.join(root, name), 'rb') as handle:
            total += len(handle.read())
open('summary.txt', 'w').write(str(total))
"""


def _best(argv: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    strace = trace.available()
    bwrap = shutil.which("bwrap")
    if strace is None and bwrap is None:
        print("bench_trace: neither strace nor bubblewrap is installed; nothing to measure")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as temporary:
        work = Path(temporary) / "work"
        for index in range(args.files):
            shard = work / "shards" / f"{index % 50:02d}"
            shard.mkdir(parents=True, exist_ok=True)
            (shard / f"row-{index:06d}.json").write_bytes(os.urandom(512))
        logs = Path(temporary) / "logs"
        box = sandboxes.resolve("bwrap") if bwrap else None
        env = dict(os.environ)
        for label, argv in (("file-heavy step", [sys.executable, "-c", READER]),
                            ("trivial step (true)", [shutil.which("true") or "true"])):
            host = _best(argv, work, args.repeat)
            print(f"{label}: host {host * 1000:.0f} ms"
                  + (f" ({args.files} files read)" if "file" in label else ""))
            variants = []
            if box is not None:
                variants.append(("sandbox", box.wrap(argv, work, work, env)))
            if strace is not None:
                variants.append(("strace", trace.traced_argv(strace, argv, logs)))
            if box is not None and strace is not None:
                variants.append(("sandbox+strace", trace.traced_argv(
                    strace, box.wrap(argv, work, work, env), logs)))
            for name, wrapped in variants:
                shutil.rmtree(logs, ignore_errors=True)
                logs.mkdir()
                seconds = _best(wrapped, work, args.repeat)
                line = (f"  {name:<15} {seconds * 1000:7.0f} ms  "
                        f"{seconds / host:5.2f}x host  (+{(seconds - host) * 1000:.0f} ms)")
                if "strace" in name:
                    shutil.rmtree(logs, ignore_errors=True)
                    logs.mkdir()
                    subprocess.run(wrapped, cwd=work, check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    start = time.perf_counter()
                    accesses = trace.parse_logs(logs)
                    parse = time.perf_counter() - start
                    line += f"; parsing the log {parse * 1000:.0f} ms, {len(accesses.read)} reads"
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
