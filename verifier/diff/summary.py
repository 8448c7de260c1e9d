"""One line per rebuilt product that was not reproduced, saying what differs: the tensors (how
many, the worst), the JSON values, or the first differing byte; or, when the centrally built
file was not at hand, how to get the diff. What a rebuilder reads first, before the notes and
the environment: the signed file holds it too, but nobody reads a signed file to learn why.
"""

from __future__ import annotations

from typing import Any


def result_line(result: dict[str, Any]) -> str:
    """`NAME: VERDICT; what differs` for one entry of a rebuild's results."""
    diff = result.get("diff") if isinstance(result.get("diff"), dict) else None
    line = f"{result.get('name')}: {result.get('verdict')}"
    if diff is None:
        if result.get("note") == "the centrally built file was not available for a diff":
            return (line + "; no tensor diff: the centrally built file is not at hand (pass "
                    "its folder with --materials-from, e.g. one `model-verifier pull` wrote)")
        return line + (f"; {result['note']}" if result.get("note") else "")
    tensors = [t for t in diff.get("tensors", []) if isinstance(t, dict)
               and t.get("status") != "equal"]
    if tensors:
        worst = max(tensors, key=lambda t: _number(t.get("max_abs_diff")))
        return (line + f"; {len(tensors)} of {len(diff.get('tensors', []))} tensor(s) differ, "
                f"worst {worst.get('name')} (max abs diff {worst.get('max_abs_diff')}, "
                f"rel L2 {worst.get('rel_l2')})")
    summary = diff.get("json")
    if isinstance(summary, dict):
        if not summary.get("structure_equal"):
            return (line + "; JSON structure differs at "
                    f"{summary.get('first_structural_difference')}")
        parts = []
        if summary.get("numbers_differing"):
            parts.append(f"{summary['numbers_differing']} number(s) differ, first at "
                         f"{summary.get('first_number_difference')} (max abs diff "
                         f"{summary.get('max_abs_diff')})")
        if summary.get("other_differences"):
            parts.append(f"{summary['other_differences']} other value(s) differ, first at "
                         f"{summary.get('first_other_difference')}")
        return line + ("; " + "; ".join(parts) if parts else "")
    if diff.get("first_difference_offset") is not None:
        return line + f"; first differing byte at offset {diff['first_difference_offset']}"
    return line


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else float("inf") if value is None else 0.0
