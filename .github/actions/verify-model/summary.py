"""The verify-model JSON report as Markdown for a job summary ($GITHUB_STEP_SUMMARY).

Standard library only: it runs with the runner's python3. Text from attestations (step names,
signer names, file names, messages) is escaped, so nothing in a bundle can inject links, HTML
or table cells into the page a reviewer reads.
"""

from __future__ import annotations

import json
import sys
from typing import Any

_SPECIAL = str.maketrans({c: f"&#{ord(c)};" for c in "<>&|[]()*_`#!\\~"})


def text(value: Any) -> str:
    return " ".join(str(value).split()).translate(_SPECIAL)


def render(report: dict[str, Any]) -> str:
    passed = report.get("verdict") == "PASS"
    algorithm, value = next(iter(report.get("digest", {"?": "?"}).items()))
    oci = report.get("oci") or {}
    lines = [f"## verify-model: {'✅ PASS' if passed else '❌ FAIL'}", ""]
    lines.append(f"**Model** `{text(oci.get('reference') or report.get('artifact'))}`  ")
    lines.append(f"**Digest** `{text(algorithm)}:{text(value)}`  ")
    lines.append(f"**Policy** `{text(report.get('policy'))}`")
    if oci:
        lines.append("")
        lines.append(f"Fetched {text(oci.get('files'))} file(s) and "
                     f"{len(oci.get('referrers', []))} attestation(s) from the registry "
                     f"(via the {text(oci.get('discovery'))}).")
    lines += ["", "| Step | Signed by | Attestation |", "|---|---|---|"]
    for step in report.get("steps", []):
        lines.append(f"| {text(step.get('step'))} | {text(', '.join(step.get('signed_by', [])))}"
                     f" | `{text(step.get('attestation'))}` |")
    if report.get("rebuilds"):
        lines += ["", "| Rebuilt step | Matching | Quorum | Dissent |", "|---|---|---|---|"]
        for quorum in report["rebuilds"]:
            dissent = ", ".join(d.get("rebuilder", "?") for d in quorum.get("dissent", []))
            lines.append(f"| {text(quorum.get('step'))} | "
                         f"{text(', '.join(quorum.get('matched', [])) or 'none')} | "
                         f"{len(quorum.get('matched', []))}/{text(quorum.get('quorum'))} | "
                         f"{text(dissent) or '—'} |")
    problems = report.get("problems", [])
    if problems:
        lines += ["", "### Problems", ""]
        lines += [f"- {text(p.get('message'))}" for p in problems]
    notes = report.get("notes", [])
    if notes:
        lines += ["", "<details><summary>Notes</summary>", ""]
        lines += [f"- {text(n)}" for n in notes]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n\n"


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as stream:
        sys.stdout.write(render(json.load(stream)))


if __name__ == "__main__":
    main()
