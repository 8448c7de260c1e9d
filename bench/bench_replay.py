"""Benchmark: what segment replay costs against a whole rebuild, and comparing a checkpoint pair.

Three sets of figures, from one run (docs/replay.md):

* record: `record --checkpoints` against the same step recorded without it (the log's scan and
  the hashing of every checkpoint, which are products anyway);
* replay: the example's training run (examples/checkpointed-training, --steps steps, a
  checkpoint every --every, so N = steps/every segments) rebuilt whole, then replayed with
  `rebuild --segments 1`, `--segments K` and `--segments all`, each a fresh process as a user
  runs it, sandboxed as by default. Reported: T(K)/T(whole) beside K/N; the fixed cost a
  segment adds beyond its own training, (T(all) - T(1)) / (N - 1) minus the bare resume command
  timed outside model-verifier (sandbox start, workspace, placing and checking the start
  checkpoint, hashing and comparing the end one), against the contract's 1 s plus the time to
  hash one checkpoint (timed here too);
* compare: a checkpoint of --gib GiB of float32 tensors (start, logged, and a replay that moved
  every element a little) compared by verifier.diff.update.compare_checkpoints (what a replay
  runs on a differing segment: every tensor of the pair against the update, the start read
  too) and by verifier.diff.tensordiff.diff_files (what `diff` runs), in GB/s of the pair's
  bytes and as a ratio to `openssl dgst -sha256` of the same pair in the same round. One
  untimed round warms the page cache: in-memory figures.

Each figure is taken --repeat times, the tools taking turns round by round, and printed as the
best and the median (the machine may be shared: measure when the load average is lowest).

    python bench/bench_replay.py [--steps 100000] [--every 10000] [--segments 3] [--gib 1.0]
                                 [--repeat 3] [--skip-replay] [--skip-compare]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "checkpointed-training"
BIN = Path(sys.executable).parent
RESUME = "python train.py --data data --from {checkpoint} --until {step} --out {out}"


def timed(argv: list[str], cwd: Path, check: bool = True) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}…: exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds


def mv(*args: str) -> list[str]:
    return [str(BIN / "model-verifier"), *args]


def train_argv(steps: int, every: int) -> list[str]:
    return ["python", "train.py", "--data", "data", "--steps", str(steps), "--every",
            str(every), "--out", "ckpt"]


def setup(work: Path, steps: int) -> None:
    for name in ("make_data.py", "train.py"):
        shutil.copy(EXAMPLE / name, work / name)
    epochs = steps * 32 // 512 + 1
    timed(["python", "make_data.py", "--epochs", str(epochs)], work)
    for who in ("builder", "rebuilder"):
        timed(mv("keygen", f"keys/{who}"), work)


def record(work: Path, steps: int, every: int, checkpoints: bool) -> float:
    extra = ["--checkpoints", "ckpt", "--resume", RESUME] if checkpoints else ["--product",
                                                                               "ckpt"]
    return timed(mv("record", "--step", "train", "--material", "data", "--material",
                    "train.py", "--product", "model", "--env", "OPENBLAS_NUM_THREADS=1",
                    *extra, "--key", "keys/builder.key", "--", *train_argv(steps, every)), work)


def rebuild(work: Path, out: str, *choice: str) -> float:
    return timed(mv("rebuild", "attestations/train.intoto.json", "--source", ".",
                    "--trust-key", "keys/builder.pub", "--key", "keys/rebuilder.key",
                    "--out", out, *choice), work)


def segment_seconds(path: Path) -> list[float]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return [s["seconds"] for s in payload["predicate"]["replay"]["segments"]]


def spread(values: list[float]) -> str:
    """Best and median of a figure's repeats (lower is better)."""
    return f"{min(values):.2f} s (median {statistics.median(values):.2f})"


def replay_figures(steps: int, every: int, k: int, repeat: int) -> None:
    from verifier.formats.digest import Hasher

    n = steps // every
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        plain, work = Path(tmp) / "plain", Path(tmp) / "work"
        for directory in (plain, work):
            directory.mkdir()
            setup(directory, steps)
        t_plain = record(plain, steps, every, checkpoints=False)
        t_record = record(work, steps, every, checkpoints=True)
        print(f"record: {t_record:.2f} s with --checkpoints ({n + 1} checkpoints), "
              f"{t_plain:.2f} s with the directory as a plain product "
              f"(log: {t_record - t_plain:+.2f} s)")
        bare_run = timed(["python", "train.py", "--data", "data", "--steps", str(steps),
                          "--every", str(every), "--out", "bare/ckpt", "--model",
                          "bare/model"], work)
        checkpoint = work / "ckpt" / f"step-{(n // 2) * every:06d}"
        times: dict[str, list[float]] = {"whole": [], "one": [], "some": [], "all": [],
                                         "bare": [], "hash": [], "inside": []}
        # The rounds take turns, so that other work on the machine weighs on each alike.
        for round_ in range(repeat):
            for index in (0, n // 2, n - 1):
                times["bare"].append(timed(
                    ["python", "train.py", "--data", "data", "--from",
                     f"ckpt/step-{index * every:06d}", "--until", str((index + 1) * every),
                     "--out", f"bare-{round_}-{index}"], work))
            started = time.perf_counter()
            Hasher().digest_paths([checkpoint])
            times["hash"].append(time.perf_counter() - started)
            times["whole"].append(rebuild(work, f"rb-whole-{round_}"))
            times["one"].append(rebuild(work, f"rb-1-{round_}", "--segments", "1"))
            times["some"].append(rebuild(work, f"rb-k-{round_}", "--segments", str(k)))
            times["all"].append(rebuild(work, f"rb-all-{round_}", "--segments", "all"))
            times["inside"] += segment_seconds(
                work / f"rb-all-{round_}" / "rebuilder" / "train.replay.intoto.json")
        best = {name: min(values) for name, values in times.items()}
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"run: {steps} steps, N = {n} segments; bare run {bare_run:.2f} s, bare resume "
              f"of one segment {spread(times['bare'])}; hashing one checkpoint "
              f"{spread(times['hash'])}")
        print(f"replay ({repeat} rounds, best and median): whole rebuild {spread(times['whole'])}"
              f"; --segments 1 {spread(times['one'])}; --segments {k} {spread(times['some'])}; "
              f"--segments all {spread(times['all'])}")
        for label, t in (("best", best), ("median", median)):
            per_segment = (t["all"] - t["one"]) / (n - 1)
            fixed = per_segment - t["bare"]
            # What a rebuild pays once however many segments it replays (start-up, hashing the
            # materials, signing): it keeps T(K)/T(whole) above K/N for short runs.
            once = t["one"] - per_segment
            print(f"  {label}: T({k})/T(whole) = {t['some'] / t['whole']:.2f} (K/N = {k / n:.2f}),"
                  f" T(all)/T(whole) = {t['all'] / t['whole']:.2f}; once per rebuild "
                  f"{once:.2f} s; per segment "
                  f"{per_segment:.2f} s, the command in its sandbox {t['inside']:.2f} s; fixed "
                  f"cost beyond the bare resume {fixed:.2f} s (limit: 1 s + hashing "
                  f"{t['hash']:.2f} s: {'met' if fixed < 1 + t['hash'] else 'NOT MET'})")


# Written by a child so that this process stays small; tensors one at a time.
_WRITE = r"""
import sys
import numpy as np
from safetensors.numpy import save_file
root, total = sys.argv[1], int(sys.argv[2])
count = 8
each = total // 4 // count
rng = np.random.default_rng(0)
for name in ("start", "logged", "replayed"):
    import os; os.makedirs(f"{root}/{name}", exist_ok=True)
tensors = {}
for i in range(count):
    start = rng.standard_normal(each, dtype=np.float32)
    logged = start + np.float32(1e-2) * rng.standard_normal(each, dtype=np.float32)
    replayed = logged + np.float32(1e-7) * rng.standard_normal(each, dtype=np.float32)
    tensors[f"layer{i}"] = (start, logged, replayed)
for position, name in enumerate(("start", "logged", "replayed")):
    save_file({k: v[position] for k, v in tensors.items()}, f"{root}/{name}/weights.safetensors")
"""


def compare_figures(gib: float, repeat: int) -> None:
    from verifier.diff.tensordiff import diff_files
    from verifier.diff.update import compare_checkpoints

    size = int(gib * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-c", _WRITE, tmp, str(size)], check=True)
        a, b, s = (root / n for n in ("replayed", "logged", "start"))
        pair = 2 * (a / "weights.safetensors").stat().st_size
        openssl = shutil.which("openssl") or "openssl"
        times: dict[str, list[float]] = {"openssl": [], "update": [], "diff": []}
        ratio = 0.0
        # One untimed round warms the page cache; then the tools take turns, round by round.
        for round_ in range(repeat + 1):
            t_openssl = timed([openssl, "dgst", "-sha256", str(a / "weights.safetensors"),
                               str(b / "weights.safetensors")], root)
            started = time.perf_counter()
            ratio = compare_checkpoints(a, b, s).ratio
            t_update = time.perf_counter() - started
            started = time.perf_counter()
            diff_files(a / "weights.safetensors", b / "weights.safetensors")
            t_diff = time.perf_counter() - started
            if round_:
                for name, t in (("openssl", t_openssl), ("update", t_update), ("diff", t_diff)):
                    times[name].append(t)
        print(f"compare: a {pair / 2 / 1e9:.2f} GB checkpoint pair (8 float32 tensors, every "
              f"element moved; ratio {ratio:.2g}), {repeat} rounds, best (median)")

        def rate(name: str, nbytes: int) -> str:
            best, median = min(times[name]), statistics.median(times[name])
            return (f"{best:.2f} s ({median:.2f}) = {nbytes / best / 1e9:.2f} GB/s "
                    f"({nbytes / median / 1e9:.2f})")

        def versus(name: str, nbytes: int) -> str:
            # Throughput against openssl's on the pair, in the same round: a ratio, not a claim.
            ours = [nbytes / t for t in times[name]]
            theirs = [pair / t for t in times["openssl"]]
            each = [o / r for o, r in zip(ours, theirs, strict=True)]
            return f"{max(each):.2f}x ({statistics.median(each):.2f}x) openssl's GB/s"

        print(f"  compare_checkpoints {rate('update', pair)} of the pair; "
              f"{3 * pair // 2 / min(times['update']) / 1e9:.2f} GB/s of its input (the start "
              f"read too); {versus('update', pair)} on the pair")
        print(f"  diff_files          {rate('diff', pair)}; {versus('diff', pair)}")
        print(f"  openssl dgst -sha256 of the pair {rate('openssl', pair)} (reference)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--every", type=int, default=10000)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    args = parser.parse_args()
    if not args.skip_replay:
        replay_figures(args.steps, args.every, args.segments, args.repeat)
    if not args.skip_compare:
        compare_figures(args.gib, args.repeat)


if __name__ == "__main__":
    main()
