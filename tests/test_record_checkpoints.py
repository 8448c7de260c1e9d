"""record --checkpoints DIR --resume TEMPLATE: the checkpoint log a training step signs.

The honest case records the real training script (examples/checkpointed-training) and reads the
signed payload back without the code under test: the DSSE signature is checked with
`cryptography`, every checkpoint's dirHash and the log's RFC 6962 root are recomputed here with
hashlib. Each bad input is refused with exit 2, one sentence, and no attestation; those that can
be seen before the command runs are refused before it runs (the command would leave a marker).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import KeyPair, assert_error, dsse_verifies, make_keys, payload_of, read_json, run

from verifier.steps.checkpoints import DETERMINISM_VARIABLES

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "checkpointed-training"
TEMPLATE = (f"{sys.executable} train.py --data data --from {{checkpoint}} --until {{step}} "
            "--out {out}")
TRAIN = [sys.executable, "train.py", "--data", "data", "--steps", "100", "--every", "20",
         "--out", "ckpt"]
FAST = ["--sandbox", "none", "--no-trace"]  # the bad inputs need neither


def dir_hash(directory: Path) -> str:
    """in-toto dirHash, as `find . -type f | cut -c3- | LC_ALL=C sort | xargs sha256sum |
    sha256sum` computes it."""
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file())
    lines = "".join(f"{hashlib.sha256((directory / n).read_bytes()).hexdigest()}  {n}\n"
                    for n in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def rfc6962_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:split])
                          + rfc6962_root(leaves[split:])).digest()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_keys(tmp_path_factory.mktemp("keys"), "builder")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, keys: KeyPair) -> tuple[Path, dict]:
    """The example's training step recorded once, sandboxed and traced as by default."""
    work = tmp_path_factory.mktemp("recorded")
    for name in ("make_data.py", "train.py"):
        shutil.copy(EXAMPLE / name, work / name)
    assert run(["record", "--step", "make-data", "--key", keys.private, "--material",
                "make_data.py", "--product", "data", "--", sys.executable, "make_data.py"],
               cwd=work).code == 0
    result = run(["record", "--step", "train", "--key", keys.private, "--material", "data",
                  "--material", "train.py", "--product", "model", "--checkpoints", "ckpt",
                  "--resume", TEMPLATE, "--json", "--", *TRAIN], cwd=work)
    assert result.code == 0, result.output
    return work, json.loads(result.stdout)


def test_the_signed_log_holds_every_checkpoint_under_its_merkle_root(
        recorded: tuple[Path, dict], keys: KeyPair) -> None:
    work, _ = recorded
    bundle = read_json(work / "attestations" / "train.intoto.json")
    assert dsse_verifies(bundle, keys.public_pem)
    statement = payload_of(bundle)
    predicate = statement["predicate"]
    checkpoints = sorted((work / "ckpt").iterdir())
    assert [p.name for p in checkpoints] == [f"step-{s:06d}" for s in range(0, 101, 20)]
    expected = [{"name": p.name, "step": int(p.name[5:]), "digest": {"dirHash": dir_hash(p)}}
                for p in checkpoints]
    assert predicate["buildDefinition"]["externalParameters"]["checkpoints"] == {
        "directory": "ckpt",
        "resume": [sys.executable, "train.py", "--data", "data", "--from", "{checkpoint}",
                   "--until", "{step}", "--out", "{out}"]}
    [log] = [b for b in predicate["runDetails"]["byproducts"] if b["name"] == "checkpoint-log"]
    assert log["annotations"]["checkpoints"] == expected
    leaves = [json.dumps(e, sort_keys=True, separators=(",", ":")).encode() for e in expected]
    assert log["digest"] == {"sha256": rfc6962_root(leaves).hex()}
    # Each checkpoint is a product of the step, like the final weights.
    subjects = {s["name"]: s["digest"] for s in statement["subject"]}
    for entry in expected:
        assert subjects[f"ckpt/{entry['name']}"] == entry["digest"]
    assert "model/weights.safetensors" in subjects


def test_json_output_names_the_root_and_the_count(recorded: tuple[Path, dict]) -> None:
    work, shown = recorded
    statement = payload_of(read_json(work / "attestations" / "train.intoto.json"))
    [log] = [b for b in statement["predicate"]["runDetails"]["byproducts"]
             if b["name"] == "checkpoint-log"]
    assert shown["checkpoints"] == {"root": log["digest"]["sha256"], "count": 6,
                                    "directory": "ckpt"}


# --- bad input: exit 2, one sentence, nothing written ----------------------------------------

MARKER = "ran.txt"


def writer(*directories: str, files: tuple[str, ...] = ()) -> list[str]:
    """A step that leaves a marker and writes these checkpoint directories (each with a file)."""
    code = (f"import pathlib; pathlib.Path({MARKER!r}).write_text('x')\n"
            f"for d in {list(directories)!r}:\n"
            "    pathlib.Path(d).mkdir(parents=True); (pathlib.Path(d) / 'w.bin').write_text(d)\n"
            f"for f in {list(files)!r}:\n"
            "    pathlib.Path(f).parent.mkdir(parents=True, exist_ok=True); "
            "pathlib.Path(f).write_text(f)\n")
    return [sys.executable, "-c", code]


def record_bad(work: Path, keys: KeyPair, command: list[str], *options: str) -> object:
    # The determinism variables of whoever runs the tests stay out of the recorded ones.
    clean: dict[str, str | None] = {name: None for name in DETERMINISM_VARIABLES}
    return run(["record", "--step", "train", "--key", keys.private, *FAST, *options, "--",
                *command], cwd=work, env=clean)


BEFORE_RUN = {
    "a placeholder missing": (["--checkpoints", "ckpt", "--resume",
                               "python train.py --from {checkpoint} --until {step}"],
                              ["--resume", "{out}"]),
    "an unknown placeholder": (["--checkpoints", "ckpt", "--resume",
                                "train {checkpoint} {step} {out} {seed}"],
                               ["--resume", "{seed}"]),
    "a directory outside the working directory": (
        ["--checkpoints", "../elsewhere", "--resume", "t {checkpoint} {step} {out}"],
        ["--checkpoints ../elsewhere", "inside the working directory"]),
    "the working directory itself": (
        ["--checkpoints", ".", "--resume", "t {checkpoint} {step} {out}"],
        ["--checkpoints .", "not the working directory itself"]),
    "a log without its template": (["--checkpoints", "ckpt"], ["--resume"]),
    "a template without its log": (["--resume", "t {checkpoint} {step} {out}"],
                                   ["--checkpoints"]),
}


@pytest.mark.parametrize("case", sorted(BEFORE_RUN))
def test_what_can_be_refused_before_the_run_is_refused_before_it(
        case: str, keys: KeyPair, tmp_path: Path) -> None:
    options, fragments = BEFORE_RUN[case]
    (tmp_path / "work").mkdir()
    result = record_bad(tmp_path / "work", keys, writer("ckpt/step-0", "ckpt/step-10"),
                        *options)
    assert_error(result, 2, *fragments)
    assert not (tmp_path / "work" / MARKER).exists(), "the command ran"
    assert not (tmp_path / "work" / "attestations").exists()


def test_a_directory_linked_out_of_the_working_directory_is_refused(
        keys: KeyPair, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "work").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "work" / "runs")
    result = record_bad(tmp_path / "work", keys, writer("runs/ckpt/step-0"),
                        "--checkpoints", "runs/ckpt", "--resume", "t {checkpoint} {step} {out}")
    assert_error(result, 2, "runs/ckpt", "symbolic link")
    assert not (tmp_path / "work" / MARKER).exists()
    assert not (tmp_path / "work" / "attestations").exists()


AFTER_RUN = {
    "no checkpoint at all": (writer(files=("ckpt/notes.txt",)), ["ckpt", "no checkpoint"]),
    "no directory at all": (writer(), ["ckpt", "not one"]),
    "two checkpoints of one step": (writer("ckpt/step-10", "ckpt/checkpoint-10"),
                                    ["checkpoint-10", "step-10", "step 10"]),
    "a name without a step number": (writer("ckpt/step-0", "ckpt/latest"),
                                     ["ckpt/latest", "step number"]),
    "the directory is a link": (writer("real/step-0"), ["ckpt", "not one"]),
}


@pytest.mark.parametrize("case", sorted(AFTER_RUN))
def test_a_directory_that_holds_no_usable_log_is_refused(case: str, keys: KeyPair,
                                                         tmp_path: Path) -> None:
    command, fragments = AFTER_RUN[case]
    work = tmp_path / "work"
    work.mkdir()
    if case == "the directory is a link":
        os.symlink("real", work / "ckpt")
    result = record_bad(work, keys, command, "--checkpoints", "ckpt",
                        "--resume", "t {checkpoint} {step} {out}")
    assert_error(result, 2, *fragments)
    assert (work / MARKER).exists()
    assert not (work / "attestations").exists()


def test_a_checkpoint_the_step_did_not_write_is_refused(keys: KeyPair, tmp_path: Path) -> None:
    """Weights placed before the run (say, another model's) may not enter the log as the
    run's start."""
    work = tmp_path / "work"
    (work / "ckpt" / "step-0").mkdir(parents=True)
    (work / "ckpt" / "step-0" / "w.bin").write_text("someone else's weights")
    result = record_bad(work, keys, writer("ckpt/step-10"), "--checkpoints", "ckpt",
                        "--resume", "t {checkpoint} {step} {out}")
    assert_error(result, 2, "ckpt/step-0", "existed before the step ran")
    assert not (work / "attestations").exists()
    again = record_bad(work, keys, [sys.executable, "-c", "pass"], "--attest-existing",
                       "--checkpoints", "ckpt", "--resume", "t {checkpoint} {step} {out}")
    assert again.code == 0, again.output


# --- the determinism settings and the schema ---------------------------------------------------

def test_the_statement_validates_and_says_exact_replay_is_expected(
        recorded: tuple[Path, dict]) -> None:
    import jsonschema

    work, _ = recorded
    statement = payload_of(read_json(work / "attestations" / "train.intoto.json"))
    schema = json.loads((Path(__file__).resolve().parents[1] / "attestations"
                         / "step-statement.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(statement, schema)
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    # The script pins one BLAS thread and reports it; numpy has no other switch.
    assert internal["environment"]["determinism"] == {"threads": 1}
    assert internal["determinism"]["reported"] == {"threads": 1}
    assert internal["determinism"]["exactReplay"] == "expected"


@pytest.mark.parametrize(("report", "variables", "verdict"), [
    ({"determinism": {"threads": 1}}, {}, "expected"),
    ({"determinism": {"cudnn_benchmark": True, "threads": 8}}, {}, "not-expected"),
    ({"torch": {"deterministic_algorithms": False, "cuda_available": True,
                "threads": 4}}, {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}, "not-expected"),
    ({"torch": {"deterministic_algorithms": True, "cuda_available": True, "tf32_matmul": False,
                "cudnn_benchmark": False}},
     {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": "1"}, "expected"),
    ({"torch": {"deterministic_algorithms": True, "cuda_available": True}},
     {"OMP_NUM_THREADS": "1"}, "not-expected"),  # no CUBLAS_WORKSPACE_CONFIG on a GPU
    (None, {}, "unknown"),
])
def test_the_determinism_report_decides_whether_exact_replay_is_expected(
        report: dict | None, variables: dict[str, str], verdict: str, keys: KeyPair,
        tmp_path: Path) -> None:
    """What a step reports (torch's flags, or the framework-neutral section) and the variables
    it ran with are signed with the log, with the verdict they imply."""
    work = tmp_path / "work"
    work.mkdir()
    write = ("import json, os, pathlib\n"
             f"report = {report!r}\n"
             "if report is not None:\n"
             "    pathlib.Path(os.environ['MODEL_VERIFIER_REPORT']).write_text("
             "json.dumps(report))\n")
    command = writer("ckpt/step-0", "ckpt/step-10")
    command[-1] += write
    env = [f"--env={name}={value}" for name, value in variables.items()]
    result = record_bad(work, keys, command, *env, "--checkpoints", "ckpt",
                        "--resume", "t {checkpoint} {step} {out}")
    assert result.code == 0, result.output
    statement = payload_of(read_json(work / "attestations" / "train.intoto.json"))
    settings = statement["predicate"]["buildDefinition"]["internalParameters"]["determinism"]
    assert settings["exactReplay"] == verdict, settings
    assert settings["variables"] == variables


def test_a_malformed_determinism_report_is_not_recorded(keys: KeyPair, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    command = writer("ckpt/step-0", "ckpt/step-10")
    command[-1] += ("import os, pathlib\npathlib.Path(os.environ['MODEL_VERIFIER_REPORT'])"
                    ".write_text('{\"determinism\": {\"threads\": \"all\"}}')\n")
    result = record_bad(work, keys, command, "--checkpoints", "ckpt",
                        "--resume", "t {checkpoint} {step} {out}")
    assert result.code == 0, result.output
    assert "determinism setting 'threads' has the wrong type" in result.stderr
    statement = payload_of(read_json(work / "attestations" / "train.intoto.json"))
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert "determinism" not in internal["environment"]
    assert internal["determinism"]["exactReplay"] == "unknown"
