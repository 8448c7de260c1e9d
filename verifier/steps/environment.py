"""What the machine looked like when a step ran, and how two such captures differ.

The environment recorded is the step's, not the recorder's. The step's Python interpreter
(`record --python PATH`, else the one argv runs: argv[0] itself, a `#!` line or `env python`,
else the `python3` on the step's PATH, which a shell line would run) is started once, in the
same sandbox as the step, with a short script that prints its version and its installed
distributions from their metadata: nothing is imported, torch included (importing torch to ask
its version cost seconds per record). torch's version and CUDA build come from its metadata
and its `version.py`, read as text. The settings a step's own code chooses (deterministic
algorithms, cuDNN benchmark, TF32) exist only inside the step, so they are taken from the
report the step may write to the file named by MODEL_VERIFIER_REPORT (see
attestations/step-buildtype.md), never from the recorder's process.

Only a fixed allowlist of environment variables is captured with its value, plus those the
user declares: secrets in the environment must never reach an attestation. The names of the
other variables the step inherited are recorded (`inherited`), never their values. The tool's
own credentials (TOOL_CREDENTIALS) are taken out of the step's environment altogether
(`withheld` names them), and a declared variable that looks secret (looks_secret) is refused,
since its value would be signed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.errors import InputError

# Variables that change numerical results or their reproducibility, and nothing else.
CAPTURED_VARIABLES: tuple[str, ...] = (
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "KMP_DETERMINISTIC_REDUCTION",
    "MKL_CBWR",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NVIDIA_TF32_OVERRIDE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "SOURCE_DATE_EPOCH",
    "TF_CUDNN_DETERMINISTIC",
    "TF_DETERMINISTIC_OPS",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "VECLIB_MAXIMUM_THREADS",
)

# The variable naming the file a step may write its own settings to (see read_report).
REPORT_VARIABLE = "MODEL_VERIFIER_REPORT"

# What model-verifier itself signs with: the key's password (formats.signing), the OIDC token
# for keyless signing and what GitHub Actions hands out to get one (formats.keyless). A step
# never gets them, recorded or rebuilt: it could copy them into its products or its report.
# Every other MODEL_VERIFIER_* variable is the tool's too. (A PKCS#11 PIN is never read from
# the environment: it comes from the key URI's pin-source file or pin-value.)
TOOL_CREDENTIALS: tuple[str, ...] = (
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "MODEL_VERIFIER_KEY_PASSWORD",
    "SIGSTORE_ID_TOKEN",
)

# A name looks secret when one of its words (split at anything but letters and digits) is one
# of _SECRET_WORDS or ends with one of _SECRET_ENDINGS (APIKEY, GHTOKEN; not KEYBOARD, KEYMAP),
# or it starts with a cloud provider's prefix, whose variables are mostly credentials.
_SECRET_WORDS = frozenset({
    "AUTH", "AUTHORIZATION", "COOKIE", "CREDENTIAL", "CREDENTIALS", "CREDS", "PASS",
    "PASSPHRASE", "PIN", "PRIVATE", "SESSION",
})
_SECRET_ENDINGS = ("KEY", "KEYS", "PASSWD", "PASSWORD", "PASSWORDS", "SECRET", "SECRETS",
                   "TOKEN", "TOKENS")
_SECRET_PREFIXES = ("ALIBABA_CLOUD_", "ARM_", "AWS_", "AZURE_", "CLOUDSDK_", "DIGITALOCEAN_",
                    "GCLOUD_", "GCP_", "GOOGLE_", "OCI_CLI_")
# A URL carrying a user and password: https://user:token@host
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@]*:[^/\s@]*@")
REPORT_LIMIT = 1 << 20  # bytes; a settings report is a few hundred

_PYTHON_NAME = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)*)?[tmd]?$")
_PROBE_MARK = "model-verifier-probe:"
_PROBE_TIMEOUT = 60.0  # seconds: a cold start of an interpreter on a network filesystem
_PROBE_LIMIT = 16 << 20  # bytes of probe output read at most
_MAX_PACKAGES = 50_000
_MAX_TEXT = 200  # characters of a package name, version or reported string

# Run by the step's interpreter (any Python 3): its version and distributions from metadata
# only. sys.path[0] ('' for -c: the working directory, i.e. the workspace) goes first, so that
# no file of the workspace can stand in for json or importlib. Import-free on purpose: torch's
# CUDA build is read from its version.py as text.
_PROBE = r"""
import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
import json, platform, re
out = {"version": platform.python_version(), "implementation": platform.python_implementation(),
       "packages": {}, "torch": None}
try:
    from importlib import metadata
except ImportError:
    metadata = None
if metadata is not None:
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
            version = dist.version
        except Exception:
            continue
        if name and version and name.lower() not in out["packages"]:
            out["packages"][name.lower()] = version
    try:
        torch = metadata.distribution("torch")
        info = {"version": torch.version}
        try:
            text = open(str(torch.locate_file("torch/version.py")), encoding="utf-8").read(65536)
        except Exception:
            text = ""
        for key in ("cuda", "hip"):
            found = re.search(r"^%s\s*(?::[^=\n]*)?=\s*['\"]([^'\"\n]+)['\"]" % key, text, re.M)
            info[key] = found.group(1) if found else None
        out["torch"] = info
    except Exception:
        pass
sys.stdout.write("\n%s%s\n" % (MARK, json.dumps(out, sort_keys=True)))
""".replace("MARK", repr(_PROBE_MARK))


def is_tool_credential(name: str) -> bool:
    """A variable of model-verifier's own that no step may see (TOOL_CREDENTIALS)."""
    return name in TOOL_CREDENTIALS or (
        name.startswith("MODEL_VERIFIER_") and name != REPORT_VARIABLE)


def looks_secret(name: str, value: str | None = None) -> bool:
    """Whether a variable looks like a credential, by its name (the rule above) or by a value
    that is a URL with a password in it. Wrong both ways at times: it decides what is never
    signed, so it errs towards secret."""
    upper = name.upper()
    words = [word for word in re.split(r"[^A-Z0-9]+", upper) if word]
    return (is_tool_credential(name)
            or any(word in _SECRET_WORDS or word.endswith(_SECRET_ENDINGS) for word in words)
            or upper.startswith(_SECRET_PREFIXES)
            or (value is not None and bool(_URL_CREDENTIALS.search(value))))


def check_declared(name: str, value: str) -> None:
    """A variable declared with --env is signed with its value: refuse one that looks secret."""
    if looks_secret(name, value):
        raise InputError(
            f"--env {name}: looks like a secret (its name or value), and a declared variable's "
            "value is signed into the attestation; leave it out of --env (the step still "
            "inherits it, and only its name is recorded).")


def step_environment(source: Mapping[str, str], declared: Mapping[str, str]
                     ) -> tuple[dict[str, str], list[str]]:
    """The environment a recorded step runs with: the recorder's own, less the tool's
    credentials, with the declared variables on top; and the names withheld."""
    withheld = sorted(name for name in source if is_tool_credential(name))
    env = {name: value for name, value in source.items() if not is_tool_credential(name)}
    env.update(declared)
    return env, withheld


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of the variables in env that look secret (looks_secret), for read_report to
    refuse; values under 6 characters are left out, as they occur in any text."""
    return sorted({value for name, value in env.items()
                   if len(value) >= 6 and looks_secret(name, value)})


@dataclass(frozen=True)
class Interpreter:
    """The Python a step runs: `path` as found (a venv's own python, not what it links to, so
    that the venv's packages are the ones listed) and how it was learned (`source`: --python,
    argv, shebang or PATH)."""

    path: Path
    source: str


def is_python(path: str | os.PathLike[str]) -> bool:
    return bool(_PYTHON_NAME.match(Path(path).name))


def _resolve(program: str, path_env: str | None, cwd: Path) -> Path | None:
    found = str(cwd / program) if "/" in program else shutil.which(program, path=path_env)
    if not found:
        return None
    candidate = Path(os.path.abspath(found))
    return candidate if candidate.is_file() else None


def _shebang(script: Path) -> list[str]:
    """The words of a script's `#!` line (at most its first 256 bytes), or []."""
    try:
        with open(script, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()


def _after_env(words: Sequence[str]) -> str | None:
    """The program `env [NAME=VALUE | -S]... PROGRAM` runs."""
    for word in words:
        if word.startswith("-") or "=" in word:
            continue
        return word
    return None


def step_interpreter(argv: Sequence[str], path_env: str | None, cwd: Path,
                     explicit: Path | None = None) -> Interpreter | None:
    """The Python interpreter the step runs, or None when there is none to be found.

    `explicit` (--python) must be an executable file; otherwise argv[0] when it is a Python,
    the program of `env ... python`, a script's `#!` line, and last the PATH's python3 (or
    python): what `sh -c "python3 ..."` would run.
    """
    if explicit is not None:
        path = Path(os.path.abspath(cwd / explicit))
        if not path.is_file():
            raise InputError(f"--python {explicit}: no such file.")
        if not os.access(path, os.X_OK):
            raise InputError(f"--python {explicit}: is not executable.")
        return Interpreter(path, "--python")
    if argv:
        program = _resolve(argv[0], path_env, cwd)
        if program is not None:
            if is_python(program) or is_python(os.path.realpath(program)):
                return Interpreter(program, "argv")
            if program.name == "env":
                named = _after_env(argv[1:])
                found = _resolve(named, path_env, cwd) if named else None
                if found is not None and is_python(found):
                    return Interpreter(found, "argv")
            words = _shebang(program)
            if words:
                named = _after_env(words[1:]) if Path(words[0]).name == "env" else words[0]
                found = _resolve(named, path_env, cwd) if named else None
                if found is not None and is_python(found):
                    return Interpreter(found, "shebang")
    for name in ("python3", "python"):
        found = _resolve(name, path_env, cwd)
        if found is not None:
            return Interpreter(found, "PATH")
    return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_TEXT


def _probe_output(stdout: bytes) -> dict[str, Any]:
    """The probe's JSON line, type-checked; ValueError saying what is wrong."""
    lines = [line for line in stdout.decode("utf-8", "replace").splitlines()
             if line.startswith(_PROBE_MARK)]
    if not lines:
        raise ValueError("it printed no answer")
    found = json.loads(lines[-1][len(_PROBE_MARK):])
    if not isinstance(found, dict):
        raise ValueError("its answer is not a JSON object")
    version, implementation = found.get("version"), found.get("implementation")
    packages, torch = found.get("packages"), found.get("torch")
    if not (_text(version) and _text(implementation)):
        raise ValueError("its answer has no version")
    if not isinstance(packages, dict) or len(packages) > _MAX_PACKAGES or not all(
            _text(k) and _text(v) for k, v in packages.items()):
        raise ValueError("its package list is malformed")
    if torch is not None:
        if not (isinstance(torch, dict) and _text(torch.get("version")) and all(
                torch.get(k) is None or _text(torch.get(k)) for k in ("cuda", "hip"))):
            raise ValueError("its torch entry is malformed")
        torch = {k: torch.get(k) for k in ("version", "cuda", "hip")}
    return {"version": version, "implementation": implementation,
            "packages": dict(sorted(packages.items())), "torch": torch}


def _run_bounded(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> tuple[int, bytes]:
    """(exit status, at most _PROBE_LIMIT bytes of stdout). Stopped, with everything it started
    in its session, after _PROBE_TIMEOUT, even when something it left behind holds stdout."""
    process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               start_new_session=True)

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    deadline = time.monotonic() + _PROBE_TIMEOUT
    chunks: list[bytes] = []
    total, why = 0, None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f"it was stopped after {_PROBE_TIMEOUT:g} s"
                break
            if not select.select([descriptor], [], [], remaining)[0]:
                continue
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > _PROBE_LIMIT:
                why = f"it printed more than {_PROBE_LIMIT} bytes"
                break
        if why is not None:
            kill()
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill()
            code = process.wait()
            why = why or f"it was stopped after {_PROBE_TIMEOUT:g} s"
    finally:
        process.stdout.close()
        kill()  # whatever it started in its session goes with it
    if why is not None:
        raise ValueError(why)
    if code < 0:
        raise ValueError(f"it died of signal {-code}")
    return code, b"".join(chunks)


def probe(interpreter: Interpreter, cwd: Path, env: Mapping[str, str],
          wrap: Callable[[list[str]], list[str]] | None = None) -> dict[str, Any]:
    """The interpreter's version, implementation, packages and torch build, asked from it.

    `wrap` puts the command in the step's sandbox, so that the packages listed are those the
    step can import (a user site directory outside the sandbox is not). InputError when it
    cannot answer.
    """
    argv = [str(interpreter.path), "-c", _PROBE]
    if wrap is not None:
        argv = wrap(argv)
    try:
        code, stdout = _run_bounded(argv, cwd, env)
        if code != 0:
            raise ValueError(f"it exited with status {code}")
        return _probe_output(stdout)
    except (OSError, ValueError) as error:
        raise InputError(f"{interpreter.path} ({interpreter.source}): the step's Python "
                         f"could not be asked for its version and packages ({error}).") from None


# What a step may report about torch, by type: settings its own code chose.
_REPORT_BOOLEANS = ("cuda_available", "cudnn_benchmark", "cudnn_deterministic",
                    "deterministic_algorithms", "deterministic_algorithms_warn_only",
                    "tf32_cudnn", "tf32_matmul")
_REPORT_PRECISIONS = ("highest", "high", "medium")
_MAX_DEVICES = 64
# A device as torch names it (cpu, cuda:0) or a device model (NVIDIA H100 80GB HBM3, Tesla
# V100-SXM2-16GB, Intel(R) Data Center GPU Max 1550): no '_', '/', '=', '@', quotes, at most 64
# characters, so that neither a token nor a path nor a dumped environment passes for one.
_DEVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 .:()+-]{0,63}$")
_SHORTEST_PIECE = 8  # characters of a secret a device name may not hold


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_torch_report(torch: Any, where: str) -> dict[str, Any]:
    if not isinstance(torch, dict):
        raise InputError(f"{where}: \"torch\" is not an object.")
    checked: dict[str, Any] = {}
    for key, value in torch.items():
        if key in _REPORT_BOOLEANS:
            ok = isinstance(value, bool)
        elif key == "float32_matmul_precision":
            ok = value in _REPORT_PRECISIONS
        elif key == "threads":
            ok = _is_int(value, 0, 1 << 20)
        elif key == "cudnn":
            ok = value is None or _is_int(value, 0, 1 << 31)
        elif key == "seed":
            ok = _is_int(value, 0, (1 << 64) - 1)
        elif key == "devices":
            ok = (isinstance(value, list) and len(value) <= _MAX_DEVICES
                  and all(isinstance(device, str) and _DEVICE.match(device)
                          for device in value))
        else:
            raise InputError(f"{where}: unknown torch setting {key!r}.")
        if not ok:
            raise InputError(f"{where}: torch setting {key!r} has the wrong type or value.")
        checked[key] = value
    return dict(sorted(checked.items()))


def _holds_secret(devices: list[str], secrets: Sequence[str]) -> bool:
    """Whether device names spell a secret: whole, spread over several names, or in pieces
    of at least _SHORTEST_PIECE characters."""
    joined = "".join(devices)
    return any(secret in device or secret in joined for secret in secrets
               for device in devices) or any(
        len(device) >= _SHORTEST_PIECE and device in secret
        for device in devices for secret in secrets)


# The framework-neutral determinism section of a report: what decides whether a replay of the
# step can be bit-exact (docs/replay.md). numpy steps report threads alone.
_DETERMINISM_BOOLEANS = ("allow_tf32", "cudnn_benchmark", "cudnn_deterministic",
                         "use_deterministic_algorithms")


def _check_determinism_report(section: Any, where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise InputError(f"{where}: \"determinism\" is not an object.")
    for key, value in section.items():
        if key in _DETERMINISM_BOOLEANS:
            ok = isinstance(value, bool)
        elif key == "threads":
            ok = _is_int(value, 1, 1 << 20)
        else:
            raise InputError(f"{where}: unknown determinism setting {key!r}.")
        if not ok:
            raise InputError(f"{where}: determinism setting {key!r} has the wrong type or "
                             "value.")
    return dict(sorted(section.items()))


def read_report(path: Path, secrets: Sequence[str] = ()) -> dict[str, Any] | None:
    """The settings a step reported in the file MODEL_VERIFIER_REPORT named, type-checked;
    None when it wrote none. InputError (one sentence) for a report that is not one, or whose
    device names hold one of `secrets` (secret_values of the step's environment)."""
    where = f"the step's report ({REPORT_VARIABLE})"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InputError(f"{where} could not be read: {error.strerror}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{where} is not a regular file.")
    if info.st_size > REPORT_LIMIT:
        raise InputError(f"{where} is larger than {REPORT_LIMIT} bytes.")
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(REPORT_LIMIT + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{where} is not a UTF-8 JSON object.") from None
    if not isinstance(data, dict):
        raise InputError(f"{where} is not a JSON object.")
    unknown = sorted(set(data) - {"torch", "determinism"})
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} (only \"torch\" and "
                         "\"determinism\" are defined).")
    checked: dict[str, Any] = {}
    if "torch" in data:
        checked["torch"] = _check_torch_report(data["torch"], where)
        if secrets and _holds_secret(list(checked["torch"].get("devices", [])), secrets):
            raise InputError(f"{where}: a device name holds the value of a secret variable "
                             "of the step's environment.")
    if "determinism" in data:
        checked["determinism"] = _check_determinism_report(data["determinism"], where)
    return checked


@contextlib.contextmanager
def report_file() -> Iterator[Path]:
    """A fresh path for the step's report, in a private directory (which the sandbox binds
    writable); removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="mv-report-") as directory:
        yield Path(directory) / "report.json"


def add_report(captured: dict[str, Any], report: dict[str, Any] | None) -> None:
    """Merge what the step reported into a capture: its torch settings beside the version its
    metadata gave (a report without torch installed still records them, version null), and
    its determinism section as `determinism`."""
    if report and "determinism" in report:
        captured["determinism"] = report["determinism"]
    if not report or "torch" not in report:
        return
    torch = captured.get("torch")
    base = dict(torch) if isinstance(torch, dict) and "error" not in torch else {"version": None}
    for key, value in report["torch"].items():
        base.setdefault(key, value)
    captured["torch"] = dict(sorted(base.items()))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def _git_command() -> list[str] | None:
    found = shutil.which("git")
    if not found:
        return None
    # The repository's own configuration must run no program: fsmonitor, hooks, a pager.
    return [found, "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
            "-c", "core.pager=cat"]


def dirty_files(directory: Path) -> list[str]:
    """The tracked files with uncommitted changes in the repository holding `directory`, as
    git names them from its top (what makes environment.git dirty); [] when none or no git."""
    git = _git_command()
    if git is None:
        return []
    try:
        status = subprocess.run(
            [*git, "status", "--porcelain=v1", "-z", "--untracked-files=no"],
            cwd=directory, capture_output=True, timeout=60, check=True,
            stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    names: list[str] = []
    entries = iter(status.decode("utf-8", "replace").split("\0"))
    for entry in entries:
        if len(entry) > 3:
            names.append(entry[3:])
            if entry[0] in "RC":  # a rename or copy names its origin next
                next(entries, None)
    return sorted(names)


def _git(directory: Path) -> dict[str, Any] | None:
    git = _git_command()
    if git is None:
        return None
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
            timeout=30, check=True, stdin=subprocess.DEVNULL,
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], cwd=directory,
            capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL,
        ).stdout
        # Where in the repository the step ran: a rebuild takes that directory of the commit.
        prefix = subprocess.run(
            [*git, "rev-parse", "--show-prefix"], cwd=directory, capture_output=True,
            text=True, timeout=30, check=True, stdin=subprocess.DEVNULL,
        ).stdout.strip().rstrip("/")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip()), "path": prefix}


def capture(directory: Path, declared: dict[str, str] | None = None, *,
            interpreter: Interpreter | None = None, env: Mapping[str, str] | None = None,
            wrap: Callable[[list[str]], list[str]] | None = None,
            repository: bool = True) -> dict[str, Any]:
    """The environment a step runs in, as recorded in internalParameters.environment.

    `declared` are the variables the user named with --env (already resolved to values); they
    are passed to the command and recorded in externalParameters too. `interpreter` is the
    step's Python (step_interpreter), asked in `env` (the step's environment) through `wrap`
    (its sandbox); without one, `python` is null and no packages are listed. A probe that
    fails is an InputError when the interpreter was named with --python, and is recorded as
    `python: {"error": ...}` otherwise. `repository`: False where the directory is not the
    user's own (a rebuild's workspace): git is then not run there at all, since git obeys
    whatever repository it finds, and a committed one can name programs for it to run.
    """
    source = os.environ if env is None else env
    variables = {name: source[name] for name in CAPTURED_VARIABLES if name in source}
    variables.update(declared or {})
    # Names only: the values of what is not allowlisted or declared are never recorded.
    inherited = sorted(name for name in source
                       if name not in variables and name != REPORT_VARIABLE)
    python: dict[str, Any] | None = None
    packages: dict[str, str] = {}
    torch: dict[str, Any] | None = None
    if interpreter is not None:
        try:
            found = probe(interpreter, directory, {**source, **(declared or {})}, wrap)
        except InputError as error:
            if interpreter.source == "--python":
                raise
            python = {"error": str(error)}
        else:
            python = {"version": found["version"], "implementation": found["implementation"],
                      "executable": interpreter.path.name, "source": interpreter.source}
            packages, torch = found["packages"], found["torch"]
    return {
        "python": python,
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": "-".join(part for part in platform.libc_ver() if part),
        },
        "cpu": {"model": _cpu_model(), "count": os.cpu_count() or 0},
        "gpus": _gpus(),
        "torch": torch,
        "variables": dict(sorted(variables.items())),
        "inherited": inherited,
        "packages": packages,
        "git": _git(directory) if repository else None,
    }


# Fields whose difference is expected between two honest runs and explains nothing.
_IGNORED = {"git", "python.executable", "python.source", "platform.release", "inherited",
            "withheld"}


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
