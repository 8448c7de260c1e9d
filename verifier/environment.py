"""What the machine looked like when a step ran, and how two such captures differ.

Only a fixed allowlist of environment variables is captured, plus those the user declares:
secrets in the environment must never reach an attestation. torch is queried in a child
process, and only when it is installed, so recording never pays for importing it otherwise.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# Variables that change numerical results or their reproducibility, and nothing else.
CAPTURED_VARIABLES: tuple[str, ...] = (
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "SOURCE_DATE_EPOCH",
    "TF_DETERMINISTIC_OPS",
    "VECLIB_MAXIMUM_THREADS",
)

_TORCH_PROBE = """
import json, torch
info = {"version": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "threads": torch.get_num_threads()}
if info["cuda_available"]:
    info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(json.dumps(info))
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata.get("Name")
        if name:
            found[name.lower()] = distribution.version
    return dict(sorted(found.items()))


def _gpus() -> list[dict[str, str]]:
    executable = shutil.which("nvidia-smi")
    if not executable:
        return []
    try:
        result = subprocess.run(
            [executable, "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 2:
            gpus.append({"name": parts[0], "driver": parts[1],
                         "memory": parts[2] if len(parts) > 2 else ""})
    return gpus


def _torch(variables: dict[str, str]) -> dict[str, Any] | None:
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        result = subprocess.run(
            [sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
            timeout=120, check=True, env={**os.environ, **variables},
        )
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError):
        return {"error": "torch is installed but could not be queried"}


def _git(directory: Path) -> dict[str, Any] | None:
    git = shutil.which("git")
    if not git:
        return None
    try:
        commit = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
            timeout=30, check=True,
        ).stdout.strip()
        status = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no"], cwd=directory,
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        # Where in the repository the step ran: a rebuild takes that directory of the commit.
        prefix = subprocess.run(
            [git, "rev-parse", "--show-prefix"], cwd=directory, capture_output=True, text=True,
            timeout=30, check=True,
        ).stdout.strip().rstrip("/")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip()), "path": prefix}


def capture(directory: Path, declared: dict[str, str] | None = None) -> dict[str, Any]:
    """The environment a step runs in, as recorded in internalParameters.environment.

    `declared` are the variables the user named with --env (already resolved to values); they
    are passed to the command and recorded in externalParameters too.
    """
    variables = {name: os.environ[name] for name in CAPTURED_VARIABLES if name in os.environ}
    variables.update(declared or {})
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": Path(sys.executable).name,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": "-".join(part for part in platform.libc_ver() if part),
        },
        "cpu": {"model": _cpu_model(), "count": os.cpu_count() or 0},
        "gpus": _gpus(),
        "torch": _torch(variables),
        "variables": dict(sorted(variables.items())),
        "packages": _packages(),
        "git": _git(directory),
    }


# Fields whose difference is expected between two honest runs and explains nothing.
_IGNORED = {"git", "python.executable", "platform.release"}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True)}
    return {prefix: value}


def drift(recorded: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """Every field that differs between two captures, as {field, recorded, current}, sorted."""
    before = _flatten(recorded)
    after = _flatten(current)
    changes = []
    for field in sorted(set(before) | set(after)):
        if field in _IGNORED or any(field.startswith(f"{i}.") for i in _IGNORED):
            continue
        if before.get(field) != after.get(field):
            changes.append(
                {"field": field, "recorded": before.get(field), "current": after.get(field)}
            )
    return changes
