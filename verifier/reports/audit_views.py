"""The audit report in the format asked for: JSON, text or DOT (audit_render), HTML
(audit_html). Above both, so that the HTML view can use the text view's helpers without either
importing the other.
"""

from __future__ import annotations

import json
from typing import Any

from verifier.reports.audit_render import render_dot, render_text

FORMATS = ("text", "json", "dot", "html")


def render(report: dict[str, Any], fmt: str) -> str:
    """The report in one of FORMATS."""
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    if fmt == "dot":
        return render_dot(report)
    if fmt == "html":
        from verifier.reports.audit_html import render_html

        return render_html(report)
    return render_text(report)
