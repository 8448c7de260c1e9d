"""Benchmark: what capturing the step's environment costs `record`, with and without torch.

The environment is learned from the step's interpreter (one run of it printing its version and
packages from metadata, importing nothing), so its cost is one interpreter start plus a scan of
its site-packages, whether or not torch is installed there. Measured, each the median of a few
fresh processes:

* start: `PYTHON -c pass`, the baseline every ratio is taken against (same interpreter, same
  run);
* capture: environment.capture() for a step run by PYTHON (timed inside the recorder's process,
  so the recorder's own import cost, the same either way, is left out);
* record: `model-verifier record` of a trivial step run by PYTHON (no sandbox, no trace, so that
  only start-up, hashing, capture and signing remain), end to end;
* with --before REV: the capture of that revision's verifier/steps/environment.py, run where it
  looked for torch (its recorder's own interpreter: PYTHON), for a before/after ratio.

PYTHON is this interpreter, and, with --torch-python, an interpreter with torch installed (a
separate virtual environment: torch is never a dependency of this project).

    python bench/bench_record_env.py [--torch-python PATH] [--before REV] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NEW_CAPTURE = """
import json, os, sys, time
from pathlib import Path
from verifier.steps import environment
interpreter = environment.Interpreter(Path(sys.argv[1]), "argv")
start = time.perf_counter()
captured = environment.capture(Path("."), interpreter=interpreter, env=dict(os.environ))
print(json.dumps({"seconds": time.perf_counter() - start,
                  "torch": (captured["torch"] or {}).get("version"),
                  "packages": len(captured["packages"])}))
"""

# The old module imports only the standard library, so any interpreter can load it from a file.
OLD_CAPTURE = """
import importlib.util, json, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("old_environment", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
start = time.perf_counter()
captured = module.capture(Path("."))
print(json.dumps({"seconds": time.perf_counter() - start,
                  "torch": (captured["torch"] or {}).get("version"),
                  "packages": len(captured["packages"])}))
"""


def _median_run(argv: list[str], cwd: Path, repeat: int, env: dict[str, str] | None = None
                ) -> tuple[float, dict]:
    """(median wall seconds of the whole process, the last JSON line it printed if any)."""
    times, last = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True,
                              env=env)
        times.append(time.perf_counter() - start)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if lines:
            last = json.loads(lines[-1])
    return statistics.median(times), last


def _median_inner(argv: list[str], cwd: Path, repeat: int) -> dict:
    """The median of the "seconds" each run reports about itself."""
    results = [_median_run(argv, cwd, 1)[1] for _ in range(repeat)]
    return {**results[-1], "seconds": statistics.median(r["seconds"] for r in results)}


def _record(python: str, work: Path, key: Path, repeat: int) -> float:
    recorder = str(Path(sys.executable).parent / "model-verifier")
    times = []
    work = Path(tempfile.mkdtemp(prefix="record-", dir=work))
    for index in range(repeat):
        argv = [recorder, "record", "--step", f"s{index}", "--product", f"out{index}.txt",
                "--key", str(key), "--sandbox", "none", "--no-trace", "--out", "attestations",
                "--quiet", "--", python, "-c", f"open('out{index}.txt', 'w').write('x')"]
        start = time.perf_counter()
        subprocess.run(argv, cwd=work, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", help="an interpreter with torch installed")
    parser.add_argument("--before", help="a git revision whose environment capture to time")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pythons = {"without torch": sys.executable}
    if args.torch_python:
        pythons["with torch"] = args.torch_python
    else:
        print("bench_record_env: no --torch-python given; measuring without torch only")
    with tempfile.TemporaryDirectory(prefix="bench-record-env-") as temporary:
        work = Path(temporary)
        old = None
        if args.before:
            old = work / "old_environment.py"
            old.write_bytes(subprocess.run(
                ["git", "show", f"{args.before}:verifier/steps/environment.py"], cwd=ROOT,
                check=True, capture_output=True).stdout)
        subprocess.run([str(Path(sys.executable).parent / "model-verifier"), "keygen",
                        str(work / "key")], check=True, capture_output=True)
        print(f"{'interpreter':<14} {'start':>8} {'capture':>9} {'ratio':>6} "
              f"{'record':>8} {'ratio':>6}" + (f" {'before':>8} {'ratio':>6}" if old else ""))
        for label, python in pythons.items():
            start, _ = _median_run([python, "-c", "pass"], work, args.repeat)
            new = _median_inner([sys.executable, "-c", NEW_CAPTURE, python], work, args.repeat)
            record = _record(python, work, work / "key.key", args.repeat)
            line = (f"{label:<14} {start:>7.3f}s {new['seconds']:>8.3f}s "
                    f"{new['seconds'] / start:>5.1f}x {record:>7.3f}s {record / start:>5.1f}x")
            if old:
                before = _median_inner([python, "-c", OLD_CAPTURE, str(old)], work, args.repeat)
                line += f" {before['seconds']:>7.3f}s {before['seconds'] / start:>5.1f}x"
            print(line + f"   (torch {new['torch']}, {new['packages']} packages)")
    print("start: the interpreter's own start; capture: environment.capture for a step it runs;"
          " record: a trivial step end to end; before: --before's capture where the recorder"
          " itself runs in that interpreter. Ratios against start.")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
