"""Start-up: `--help` and `digest` import none of the heavy libraries.

Each case runs the real entry point in a fresh interpreter and lists the modules loaded by the
end of the command. Nothing is timed here (make bench measures the wall time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Heavy, and needed only by commands that sign, verify signatures, read policies or tensors.
# pydantic arrives with typer 0.29 (which validates every argument through it) and rich with
# typer's rich help; both cost a large share of a short command's run time.
HEAVY = ("sigstore", "cryptography", "numpy", "safetensors", "yaml", "jsonschema", "in_toto",
         "securesystemslib", "pydantic", "rich", "requests", "blake3")

def _modules_after(tmp_path: Path, *argv: str) -> set[str]:
    """Top-level packages loaded once the CLI has run with argv (argv[0] is the program)."""
    out = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        "from verifier import cli\n"
        "program, *args = sys.argv[1:]\n"
        "entry = cli.verify_model_main if program == 'verify-model' else cli.main\n"
        "sys.argv = [program, *args]\n"
        "try:\n"
        "    entry()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True,
                   check=True, timeout=120)
    return {name.split(".")[0] for name in json.loads(out.read_text())}


@pytest.mark.parametrize("argv", [
    ("verify-model", "--help"),
    ("model-verifier", "--help"),
    ("model-verifier", "digest", "--help"),
    ("model-verifier", "verify", "--help"),
    ("model-verifier", "record", "--help"),
])
def test_help_imports_no_heavy_library(tmp_path: Path, argv: tuple[str, ...]) -> None:
    loaded = _modules_after(tmp_path, *argv)
    assert "verifier" in loaded and "typer" in loaded  # the probe did run the CLI
    assert sorted(loaded & set(HEAVY)) == []


def test_digest_of_files_and_directories_imports_no_heavy_library(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 4096)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    loaded = _modules_after(tmp_path, "model-verifier", "digest", "model", "config.json",
                            "--json")
    assert "verifier" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_digest_blake3_loads_blake3_and_nothing_else_heavy(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    loaded = _modules_after(tmp_path, "model-verifier", "digest", "--digest", "blake3", "f")
    assert "blake3" in loaded
    assert sorted(loaded & set(HEAVY) - {"blake3"}) == []


def test_a_failing_verify_loads_what_it_needs_lazily(tmp_path: Path) -> None:
    """The heavy imports live inside the commands: a verify that gets as far as the policy
    loads yaml, which shows the probe would notice an import."""
    (tmp_path / "artifact").write_bytes(b"x")
    (tmp_path / "policy.yaml").write_text("version: 1\n", encoding="utf-8")
    loaded = _modules_after(tmp_path, "verify-model", "artifact", "--policy", "policy.yaml")
    assert "yaml" in loaded
