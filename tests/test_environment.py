"""The recorded environment is the step's: its interpreter, its packages, its own settings.

A second virtual environment made here stands for the step's: it holds a `torch` distribution
(metadata, version.py and a package whose import leaves a marker file and fails), so a test
sees both what was recorded and that nothing imported torch to learn it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    KeyPair,
    assert_error,
    assert_no_traceback,
    make_keys,
    payload_of,
    read_json,
    run,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.errors import InputError
from verifier.steps import environment

STEP = """\
import json, os, pathlib
pathlib.Path("out.txt").write_text("done")
report = os.environ.get("MODEL_VERIFIER_REPORT")
if report and pathlib.Path("report.json").exists():
    pathlib.Path(report).write_text(pathlib.Path("report.json").read_text())
"""


@pytest.fixture(scope="module")
def step_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (without pip) whose site-packages hold a torch that must never be imported."""
    root = tmp_path_factory.mktemp("step-venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    info = site / "torch-2.13.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n\n")
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text(
        "from typing import Optional\n__version__ = '2.13.0'\ncuda: Optional[str] = '12.8'\n"
        "hip: Optional[str] = None\n")
    # Importing it anywhere (the recorder, the probe) leaves this marker and fails loudly.
    marker = root / "torch-was-imported"
    (site / "torch" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('torch must not be imported')\n")
    return venv


def imported_marker(venv: Path) -> Path:
    return venv.parent / "torch-was-imported"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "step.py").write_text(STEP, encoding="utf-8")
    return work


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_keys(tmp_path_factory.mktemp("keys"), "builder")


def record(work: Path, keys: KeyPair, argv: list[str], *extra: str) -> Any:
    return run(["record", "--step", "s", "--material", "step.py", "--product", "out.txt",
                "--key", keys.private, *extra, "--", *argv], cwd=work)


def recorded_environment(work: Path) -> dict[str, Any]:
    statement = payload_of(read_json(work / "attestations" / "s.intoto.json"))
    return statement["predicate"]["buildDefinition"]["internalParameters"]["environment"]


def test_the_steps_interpreter_and_packages_are_recorded_and_torch_is_never_imported(
        work: Path, keys: KeyPair, step_venv: Path) -> None:
    result = record(work, keys, [str(step_venv / "bin" / "python"), "step.py"])
    assert result.code == 0, result.output
    recorded = recorded_environment(work)
    assert recorded["python"]["source"] == "argv"
    assert recorded["python"]["executable"] == "python"
    assert recorded["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    # The step venv's packages, not the recorder's (model-verifier is installed only there).
    assert recorded["packages"] == {"torch": "2.13.0"}
    assert recorded["torch"] == {"version": "2.13.0", "cuda": "12.8", "hip": None}
    assert not imported_marker(step_venv).exists()


def test_settings_come_from_the_steps_report_only(work: Path, keys: KeyPair,
                                                  step_venv: Path) -> None:
    reported = {"torch": {"deterministic_algorithms": True, "cudnn_benchmark": False,
                          "tf32_matmul": False, "threads": 1, "seed": 1234}}
    (work / "report.json").write_text(json.dumps(reported))
    result = record(work, keys, [str(step_venv / "bin" / "python"), "step.py"],
                    "--material", "report.json")
    assert result.code == 0, result.output
    torch = recorded_environment(work)["torch"]
    assert torch == {"version": "2.13.0", "cuda": "12.8", "hip": None,
                     "deterministic_algorithms": True, "cudnn_benchmark": False,
                     "tf32_matmul": False, "threads": 1, "seed": 1234}


def test_a_step_without_a_report_records_no_settings(work: Path, keys: KeyPair,
                                                      step_venv: Path) -> None:
    result = record(work, keys, [str(step_venv / "bin" / "python"), "step.py"])
    assert result.code == 0, result.output
    assert "deterministic_algorithms" not in recorded_environment(work)["torch"]


@pytest.mark.parametrize("report", [
    "not json", "[1]", '{"torch": {"deterministic_algorithms": "yes"}}',
    '{"torch": {"made_up": true}}', '{"other": 1}', '{"torch": {"threads": -1}}',
])
def test_a_malformed_report_is_a_warning_and_records_nothing(
        work: Path, keys: KeyPair, step_venv: Path, report: str) -> None:
    (work / "report.json").write_text(report)
    result = record(work, keys, [str(step_venv / "bin" / "python"), "step.py"],
                    "--material", "report.json")
    assert_no_traceback(result)
    assert result.code == 0, result.output
    assert "MODEL_VERIFIER_REPORT" in result.stderr and "not recorded" in result.stderr
    assert recorded_environment(work)["torch"] == {"version": "2.13.0", "cuda": "12.8",
                                                   "hip": None}


def test_python_option_names_the_interpreter_a_shell_step_runs(
        work: Path, keys: KeyPair, step_venv: Path) -> None:
    python = step_venv / "bin" / "python"
    result = record(work, keys, ["sh", "-c", f"'{python}' step.py"], "--python", str(python))
    assert result.code == 0, result.output
    recorded = recorded_environment(work)
    assert recorded["python"]["source"] == "--python"
    assert recorded["packages"] == {"torch": "2.13.0"}


def test_a_shebang_names_the_interpreter(work: Path, keys: KeyPair, step_venv: Path) -> None:
    script = work / "step.py"
    script.write_text(f"#!{step_venv / 'bin' / 'python'}\n" + STEP)
    script.chmod(0o755)
    result = record(work, keys, ["./step.py"])
    assert result.code == 0, result.output
    recorded = recorded_environment(work)
    assert recorded["python"]["source"] == "shebang"
    assert recorded["packages"] == {"torch": "2.13.0"}


def test_a_missing_python_option_is_exit_2_before_anything_runs(work: Path,
                                                                keys: KeyPair) -> None:
    result = record(work, keys, [sys.executable, "step.py"], "--python", "no/such/python")
    assert_error(result, 2, "--python no/such/python", "no such file")
    assert not (work / "out.txt").exists()


def test_an_interpreter_that_cannot_answer_is_exit_2_with_python_option(
        work: Path, keys: KeyPair) -> None:
    fake = work / "python3"
    fake.write_text("#!/bin/sh\necho not an answer\n")
    fake.chmod(0o755)
    result = record(work, keys, [sys.executable, "step.py"], "--python", str(fake),
                    "--material", "python3")
    assert_error(result, 2, "could not be asked", "printed no answer")
    assert not (work / "out.txt").exists()


def test_a_detected_interpreter_that_cannot_answer_is_recorded_as_such(
        work: Path, keys: KeyPair) -> None:
    fake = work / "python3"
    fake.write_text("#!/bin/sh\ncase \"$1\" in -c) exit 3;; esac\necho done > out.txt\n")
    fake.chmod(0o755)
    result = record(work, keys, ["./python3"], "--material", "python3")
    assert result.code == 0, result.output
    recorded = recorded_environment(work)
    assert "exited with status 3" in recorded["python"]["error"]
    assert recorded["packages"] == {}
    assert "--python" in result.stderr


def test_the_probe_is_bounded_in_time_and_output(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    slow = tmp_path / "python"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr(environment, "_PROBE_TIMEOUT", 0.5)
    with pytest.raises(InputError, match="stopped after"):
        environment.probe(environment.Interpreter(slow, "--python"), tmp_path, os.environ)
    # A process that left the session behind but holds the pipe open: still bounded.
    detached = tmp_path / "python-detached"
    detached.write_text("#!/bin/sh\nsetsid sleep 3 &\nexit 0\n")
    detached.chmod(0o755)
    with pytest.raises(InputError, match="stopped after"):
        environment.probe(environment.Interpreter(detached, "--python"), tmp_path, os.environ)
    loud = tmp_path / "python-loud"
    loud.write_text("#!/bin/sh\nexec yes\n")
    loud.chmod(0o755)
    monkeypatch.setattr(environment, "_PROBE_LIMIT", 1 << 16)
    with pytest.raises(InputError, match="printed more than"):
        environment.probe(environment.Interpreter(loud, "--python"), tmp_path, os.environ)


@pytest.mark.parametrize("answer", [
    {"version": "3.11.7", "implementation": "CPython", "packages": {"x": 1}, "torch": None},
    {"version": "", "implementation": "CPython", "packages": {}, "torch": None},
    {"version": "3.11.7", "implementation": "CPython", "packages": {}, "torch": {"cuda": "x"}},
    {"version": "3.11.7", "implementation": "CPython", "packages": {"a" * 500: "1"},
     "torch": None},
    ["not", "an", "object"],
])
def test_a_malformed_probe_answer_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError):
        environment._probe_output(
            f"noise\n{environment._PROBE_MARK}{json.dumps(answer)}\n".encode())


def test_interpreter_detection(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3.12", "env", "bash"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    path = str(bin_dir)
    found = environment.step_interpreter(["python3.12", "x.py"], path, tmp_path)
    assert found == environment.Interpreter(bin_dir / "python3.12", "argv")
    found = environment.step_interpreter(["env", "A=1", "python3.12", "x.py"], path, tmp_path)
    assert found == environment.Interpreter(bin_dir / "python3.12", "argv")
    script = tmp_path / "run"
    script.write_text("#!/usr/bin/env -S python3.12 -u\n")
    found = environment.step_interpreter(["./run"], path, tmp_path)
    assert found == environment.Interpreter(bin_dir / "python3.12", "shebang")
    # Nothing names a Python and there is no python3 on PATH: none.
    assert environment.step_interpreter(["bash", "-c", "true"], path, tmp_path) is None


def test_the_recorder_never_imports_torch_to_capture() -> None:
    """environment.capture's own process: the module never imports torch (nor its probe)."""
    code = ("import sys; from pathlib import Path; from verifier.steps import environment; "
            "environment.capture(Path('.'), interpreter=environment.Interpreter("
            "Path(sys.executable), 'argv')); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


@settings(max_examples=200, deadline=None)
@given(report=st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["torch", "threads", "seed", "devices", "cudnn", "tf32_matmul",
                         "float32_matmul_precision", "x"]), inner, max_size=5),
    max_leaves=20))
def test_fuzz_the_report_parser_only_input_error_escapes(report: Any,
                                                          tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("report") / "report.json"
    path.write_text(json.dumps(report))
    try:
        checked = environment.read_report(path)
    except InputError as error:
        assert "MODEL_VERIFIER_REPORT" in str(error) and "\n" not in str(error)
        return
    assert checked is not None and set(checked) <= {"torch", "determinism"}


def test_a_statement_with_reported_settings_validates_against_the_schema(
        work: Path, keys: KeyPair, step_venv: Path) -> None:
    import jsonschema

    (work / "report.json").write_text(json.dumps({"torch": {
        "deterministic_algorithms": True, "float32_matmul_precision": "high",
        "devices": ["NVIDIA H100"], "cudnn": 90100, "cuda_available": True}}))
    result = record(work, keys, [str(step_venv / "bin" / "python"), "step.py"],
                    "--material", "report.json")
    assert result.code == 0, result.output
    statement = payload_of(read_json(work / "attestations" / "s.intoto.json"))
    schema = json.loads((Path(__file__).resolve().parents[1] / "attestations" /
                         "step-statement.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(statement, schema)


def test_a_rebuild_asks_the_same_interpreter_and_reads_the_same_report(
        work: Path, keys: KeyPair, step_venv: Path, tmp_path: Path) -> None:
    """No drift in python, packages or torch when the rebuilder runs the same step: its side
    is the step's interpreter and report too, not the rebuilder's own process."""
    (work / "report.json").write_text(json.dumps({"torch": {"deterministic_algorithms": True}}))
    result = record(work, keys, [str(step_venv / "bin" / "python"), "step.py"],
                    "--material", "report.json")
    assert result.code == 0, result.output
    rebuilder = make_keys(tmp_path / "keys", "rebuilder")
    result = run(["rebuild", work / "attestations", "--trust-key", keys.public, "--source", work,
                  "--key", rebuilder.private, "--out", tmp_path / "rebuilds"], cwd=work)
    assert result.code == 0, result.output
    rebuilt = payload_of(read_json(tmp_path / "rebuilds" / "rebuilder" / "s.rebuild.intoto.json"))
    current = rebuilt["predicate"]["environment"]
    assert current["packages"] == {"torch": "2.13.0"}
    assert current["torch"]["deterministic_algorithms"] is True
    drifted = [d["field"] for d in rebuilt["predicate"]["drift"]]
    assert not [f for f in drifted if f.split(".")[0] in ("python", "packages", "torch")], drifted
