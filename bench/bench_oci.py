"""Benchmark: push and pull of a model through a real OCI registry on loopback.

Starts the CNCF Distribution registry (`docker-registry serve`, as the tests do) with its
storage in a temporary directory, writes a model of --size-gib (one file of random bytes, plus a
small config), then times, as a user runs them, start-up included:

  push        `model-verifier push MODEL oci://…` into an empty repository (hashing included);
  pull        `model-verifier pull oci://…@DIGEST DIR` with an empty cache (every layer hashed
              as it streams into the cache, then copied out);
  pull-warm   the same with the cache filled (every cached blob re-hashed before use);

and, on the same bytes in the same run, the baselines:

  curl-upload    a monolithic blob upload with curl (POST, then PUT --upload-file), the digest
                 computed beforehand and not timed: raw HTTP without any checking;
  curl-download  GET of the same blob with curl into a file, nothing checked;
  cp             a copy of the model file (the disk's own speed here).

Each figure is the median of --runs runs, after one untimed warm-up that fills the page cache:
loopback and page-cache figures, not network or disk ones. Ratios: push / curl-upload and
pull / curl-download (1.0 = as fast as raw HTTP).

    python bench/bench_oci.py [--size-gib 1.0] [--runs 3] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
GIB = 1 << 30
BIN = Path(sys.executable).parent


def timed(action: Callable[[], None], runs: int, reset: Callable[[], None]) -> float:
    samples = []
    for number in range(runs + 1):
        reset()
        start = time.perf_counter()
        action()
        elapsed = time.perf_counter() - start
        if number:  # the first run warms the page cache and is not counted
            samples.append(elapsed)
    return statistics.median(samples)


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}… failed: {result.stdout}{result.stderr}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None)
    options = parser.parse_args()
    from oci_servers import REGISTRY_BINARY, SKIP_REASON, running_registry

    if REGISTRY_BINARY is None or shutil.which("curl") is None:
        print(f"skipped: {SKIP_REASON if REGISTRY_BINARY is None else 'curl is not installed'}")
        return
    size = int(options.size_gib * GIB)
    with tempfile.TemporaryDirectory(dir=options.tmp, prefix="bench-oci-") as scratch:
        work = Path(scratch)
        model = work / "model"
        model.mkdir()
        weights = model / "weights.bin"
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()
        with weights.open("wb") as stream:
            for index in range(size >> 20):
                chunk = index.to_bytes(8, "big") + block[8:]  # no two blocks alike
                stream.write(chunk)
                digest.update(chunk)
        (model / "config.json").write_text('{"layers": 1}')
        blob = f"sha256:{digest.hexdigest()}"
        cache = work / "cache"
        env = {"MODEL_VERIFIER_CACHE": str(cache), "DOCKER_CONFIG": str(work / "no-docker")}
        with running_registry(work / "registry") as registry:
            storage = registry.storage / "docker" / "registry" / "v2"

            def empty_registry() -> None:
                shutil.rmtree(storage, ignore_errors=True)

            counter = iter(range(1000))

            def push() -> None:
                run(str(BIN / "model-verifier"), "push", str(model),
                    f"oci://{registry.host}/bench/model:v{next(counter)}", "--plain-http",
                    "--quiet", env=env)

            push_s = timed(push, options.runs, empty_registry)
            pushed = json.loads(run(str(BIN / "model-verifier"), "push", str(model),
                                    f"oci://{registry.host}/bench/model:final",
                                    "--plain-http", "--json", "--quiet", env=env))
            reference = pushed["reference"]
            out = work / "pulled"

            def clear_out_and_cache() -> None:
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)

            def clear_out() -> None:
                shutil.rmtree(out, ignore_errors=True)

            def pull() -> None:
                run(str(BIN / "model-verifier"), "pull", reference, str(out), "--plain-http",
                    "--quiet", env=env)

            pull_s = timed(pull, options.runs, clear_out_and_cache)
            warm_s = timed(pull, options.runs, clear_out)

            base = f"http://{registry.host}/v2/bench/raw"

            def curl_upload() -> None:
                location = run("curl", "-sS", "-X", "POST", "-D", "-", "-o", "/dev/null",
                               f"{base}/blobs/uploads/")
                url = next(line.split(":", 1)[1].strip() for line in location.splitlines()
                           if line.lower().startswith("location:"))
                url = url if url.startswith("http") else f"http://{registry.host}{url}"
                run("curl", "-sS", "-f", "-X", "PUT", "-H",
                    "Content-Type: application/octet-stream", "--upload-file", str(weights),
                    "-o", "/dev/null", f"{url}{'&' if '?' in url else '?'}digest={blob}")

            upload_s = timed(curl_upload, options.runs, empty_registry)
            raw_file = work / "raw.bin"

            def curl_download() -> None:
                run("curl", "-sS", "-f", "-o", str(raw_file),
                    f"http://{registry.host}/v2/bench/raw/blobs/{blob}")

            download_s = timed(curl_download, options.runs,
                               lambda: raw_file.unlink(missing_ok=True))
            copy = work / "copy.bin"
            cp_s = timed(lambda: run("cp", str(weights), str(copy)), options.runs,
                         lambda: copy.unlink(missing_ok=True))

    def rate(seconds: float) -> str:
        return f"{size / seconds / 1e6:8.0f} MB/s  ({seconds:6.2f} s)"

    print(f"OCI registry on loopback, a {options.size_gib:g} GiB model, median of "
          f"{options.runs} runs (page cache warm):")
    print(f"  push                  {rate(push_s)}   ratio to curl-upload   "
          f"{upload_s / push_s:.2f}")
    print(f"  pull (cold cache)     {rate(pull_s)}   ratio to curl-download "
          f"{download_s / pull_s:.2f}")
    print(f"  pull (warm cache)     {rate(warm_s)}   ratio to curl-download "
          f"{download_s / warm_s:.2f}")
    print(f"  curl-upload           {rate(upload_s)}")
    print(f"  curl-download         {rate(download_s)}")
    print(f"  cp                    {rate(cp_s)}")


if __name__ == "__main__":
    main()
