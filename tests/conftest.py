"""Fixtures shared by the test modules that work on a recorded three-step chain.

A module may override `recorded` (to add keys or a layout, say); `chain` then copies that.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import Chain, bubblewrap_starts, build_chain

# Where bubblewrap cannot start (a machine with only Python and make), `rebuild` refuses to
# run a step unsandboxed unless told to: the suite says so once for every command it runs, in
# process or not. Tests of the sandbox itself skip there, naming why; tests that pass
# --sandbox themselves are unaffected.
if not bubblewrap_starts():
    os.environ.setdefault("MODEL_VERIFIER_SANDBOX", "none")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """One chain recorded per test module (recording is the slow part)."""
    return build_chain(tmp_path_factory.mktemp("recorded"))


@pytest.fixture
def chain(recorded: Chain, tmp_path: Path) -> Chain:
    """A private copy of the recorded chain that a test may change."""
    shutil.copytree(recorded.root, tmp_path / "chain", symlinks=True)
    return Chain(tmp_path / "chain")
