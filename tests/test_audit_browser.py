"""The HTML audit report in a real browser: headless Chromium from the system packages.

The report is opened from disk with networking off; the DOM Chromium builds must hold the graph
(an SVG with a node per step) and a section per step, no script may exist in it even though one
step is named like one, and a screenshot is saved next to the report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from audit_fixtures import Chain, copy_attestations, digest_of, real_chain, signed_step

from verifier.judgement.policy import load_policy
from verifier.reports.audit import audit
from verifier.reports.audit_views import render

EVIL_STEP = "<script>alert(1)</script>"


def chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


pytestmark = pytest.mark.skipif(
    chromium() is None,
    reason="headless Chromium is not installed (apt-get install chromium; .ci/run does it)",
)


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = chromium()
    assert browser is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True,
                          timeout=120, check=True)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return real_chain(tmp_path_factory)


def test_report_renders_graph_and_every_step_in_chromium(chain: Chain, tmp_path: Path) -> None:
    attestations, rebuilds = copy_attestations(chain, tmp_path)
    signed_step(attestations / "evil.intoto.json", chain.key("builder"), EVIL_STEP,
                {"build/model/config.json": digest_of("whatever")},
                {"evil/out.txt": digest_of("out")})
    report = audit([attestations, rebuilds], load_policy(chain.policy))
    data = report.to_dict()
    page = tmp_path / "report.html"
    page.write_text(render(data, "html"))

    dom = run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "<svg" in dom and 'class="graph"' in dom
    drawn = set(re.findall(r'<g class="node step" data-id="([^"]+)"', dom))
    sections = set(re.findall(r'<section class="step[^"]*" id="([^"]+)"', dom))
    step_ids = {s["id"] for s in data["steps"]}
    assert len(step_ids) == 4 and drawn == step_ids and sections == step_ids
    for name in ("prepare-data", "train", "package"):
        assert f'data-step="{name}"' in dom
    # The hostile step name is text in the page, never an element.
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    # Rebuild verdicts with their per-tensor metrics made it into the page.
    assert "rebuilder-c" in dom and "max abs diff" in dom

    screenshot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={screenshot}", page.as_uri())
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
