"""Views of an audit report: text for a terminal and Graphviz DOT (HTML: `audit_html`; the
choice among them: `audit_views`).

Every view reads the report's JSON form (`AuditReport.to_dict()`, described by
attestations/audit-report.schema.json), whose strings are already cleaned of control and
bidirectional characters; each format still escapes what is special to it.
"""

from __future__ import annotations

from typing import Any

MARKS = {"error": "✗", "warning": "!", "info": "·"}
COLOURS = {"error": "#f2a5a5", "warning": "#ffd98a", "ok": "#b9e4b9", "unchecked": "#dddddd",
           "info": "#e3eefc", "pinned": "#bcd7f5", "unpinned": "#e9e4f5"}


def rebuild_status(rebuild: dict[str, Any]) -> str:
    """A rebuild's colour and badge: its trust status unless that is ok, then what it found.
    A rebuild or probe whose outputs diverged is never a green 'ok'."""
    if rebuild["status"] != "ok":
        return str(rebuild["status"])
    if rebuild["verdict"] == "mismatched":
        return "warning"
    if rebuild["verdict"] == "probe" and rebuild["mismatches"]:
        return "info"
    return "ok" if rebuild["verdict"] in ("matched", "probe") else "unchecked"


def short_digest(digest: dict[str, str]) -> str:
    for algorithm in ("sha256", "dirHash"):
        if algorithm in digest:
            return f"{algorithm}:{digest[algorithm][:12]}…"
    algorithm = min(digest) if digest else "?"
    return f"{algorithm}:{str(digest.get(algorithm, ''))[:12]}…"


def signer_label(signer: dict[str, Any]) -> str:
    if signer["names"]:
        return ", ".join(signer["names"])
    if signer["status"] == "unchecked":
        return f"{signer['claimed']} (unverified)"
    return f"{signer['claimed']} ({signer['status']})"


def final_steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps whose products are the final artifacts, in build order."""
    return [s for s in report["steps"] if s["final"]]


def findings_by_step(report: dict[str, Any]) -> dict[str | None, list[dict[str, Any]]]:
    """Findings grouped by the step they belong to (a rebuild's go to the step it rebuilt)."""
    step_of_rebuild = {r["id"]: r["step_node"] for r in report["rebuilds"]}
    grouped: dict[str | None, list[dict[str, Any]]] = {}
    for finding in report["findings"]:
        node = finding["node"]
        node = step_of_rebuild.get(node, node) if node else None
        grouped.setdefault(node, []).append(finding)
    return grouped


def _without_file(message: str, files: list[str]) -> str:
    """Under its step the file is already shown; drop it from the start of the sentence."""
    for name in files:
        if message.startswith(f"{name}: "):
            return message[len(name) + 2:]
    return message


def summary_line(report: dict[str, Any]) -> str:
    counts = report["summary"]
    return (f"{report['verdict']}: {counts['error']} error(s), {counts['warning']} warning(s), "
            f"{counts['info']} note(s)")


def render_text(report: dict[str, Any]) -> str:
    counts = report["summary"]
    lines = [
        f"audit of {', '.join(report['directories'])}: {counts['steps']} step attestation(s), "
        f"{counts['rebuilds']} rebuild(s), {counts['artifacts']} artifact(s) "
        f"in {counts['bundles']} bundle(s)",
        (f"policy: {report['policy']} (signatures checked)" if report["checked"] else
         "no policy: chain unchecked; signers are shown as the bundles claim them"),
        summary_line(report),
    ]
    steps = {s["id"]: s for s in report["steps"]}
    artifacts = {a["id"]: a for a in report["artifacts"]}
    rebuilds = {r["id"]: r for r in report["rebuilds"]}
    findings = findings_by_step(report)
    shown: set[str] = set()
    for root in final_steps(report):
        names = [p["name"] + (f" {artifacts[p['artifact']]['verdict']}"
                              if artifacts[p["artifact"]].get("verdict") else "")
                 for p in root["products"] if artifacts[p["artifact"]]["final"]]
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        lines += ["", f"final artifact(s): {', '.join(names[:4])}{more}"]
        lines += _tree(root["id"], steps, artifacts, rebuilds, findings, shown)
    rest = [s for s in report["steps"] if s["id"] not in shown]
    if rest:
        lines += ["", "steps under no final artifact:"]
        for step in rest:
            lines += _tree(step["id"], steps, artifacts, rebuilds, findings, shown)
    loose = [f for node, group in findings.items() if node not in shown for f in group]
    if loose:
        lines += ["", "other findings:"]
        lines += [f"  {MARKS[f['severity']]} {f['severity']}: {f['message']}" for f in loose]
    return "\n".join(lines) + "\n"


def _step_line(step: dict[str, Any]) -> str:
    return (f"step {step['step']}  [{signer_label(step['signer'])}]  "
            f"{', '.join(step['files'])}")


def _rebuild_line(step: dict[str, Any], rebuilds: dict[str, dict[str, Any]]) -> str | None:
    attached = [rebuilds[r] for r in step["rebuilds"]]
    quorum = step.get("quorum")
    if not attached and not quorum:
        return None
    matched, own, unverified = _independent([r for r in attached if r["verdict"] == "matched"],
                                            step["signer"])
    other, _, _ = _independent([r for r in attached
                                if r["verdict"] not in ("matched", "probe")], step["signer"])
    probes = sorted({signer_label(r["signer"]) for r in attached if r["verdict"] == "probe"})
    text = f"rebuilds: {len(matched)} matching"
    text += f" ({', '.join(matched)})" if matched else ""
    text += f", {len(other)} differing ({', '.join(other)})" if other else ""
    text += f", {len(probes)} probe(s) ({', '.join(probes)})" if probes else ""
    text += (f"; not independent, the step's own signer: {', '.join(own)}" if own else "")
    text += (f"; not counted, signer not verified: {', '.join(unverified)}"
             if unverified else "")
    if quorum:
        text += f"; quorum {quorum.get('matching', len(quorum['matched']))}/{quorum['quorum']}"
        text += f" ({quorum['summary']})" if quorum.get("summary") else ""
    return text


def _independent(attached: list[dict[str, Any]], step_signer: dict[str, Any]
                 ) -> tuple[list[str], list[str], list[str]]:
    """(distinct independent rebuilders, the step's own signer, unverified signers) among
    rebuilds, as labels. A rebuilder who sent two rebuilds is one; whoever signed the step
    (by name or identity) never rebuilt it independently; a signature no policy key verifies
    names nobody."""
    own_names, own_ids = set(step_signer["names"]), set(step_signer["identities"])
    counted: dict[tuple[str, ...], str] = {}
    own: set[str] = set()
    unverified: set[str] = set()
    for rebuild in attached:
        signer = rebuild["signer"]
        label = signer_label(signer)
        if signer["status"] not in ("verified", "unchecked"):
            unverified.add(label)
        elif (own_names & set(signer["names"]) or own_ids & set(signer["identities"])
              or (not signer["identities"] and signer["claimed"] == step_signer["claimed"])):
            own.add(label)
        else:
            counted.setdefault(tuple(signer["identities"]) or (signer["claimed"],), label)
    return sorted(set(counted.values())), sorted(own), sorted(unverified)


def _tree(root: str, steps: dict[str, dict[str, Any]], artifacts: dict[str, dict[str, Any]],
          rebuilds: dict[str, dict[str, Any]],
          findings: dict[str | None, list[dict[str, Any]]], shown: set[str]) -> list[str]:
    """Lines of the tree below one step, walked with an explicit stack (chains can be long)."""
    lines: list[str] = []
    # (line prefix, prefix of the lines below it, what to print)
    stack: list[tuple[str, str, tuple[str, str, str]]] = [("", "", ("step", root, ""))]
    while stack:
        prefix, below, (kind, node, name) = stack.pop()
        if kind == "step":
            step = steps[node]
            if node in shown:
                lines.append(f"{prefix}{_step_line(step)}  (shown above)")
                continue
            shown.add(node)
            lines.append(f"{prefix}{_step_line(step)}")
            detail = _rebuild_line(step, rebuilds)
            lines += [f"{below}│ {detail}"] if detail else []
            lines += [f"{below}│ {MARKS[f['severity']]} {f['severity']}: "
                      f"{_without_file(f['message'], step['files'])}"
                      for f in findings.get(node, [])]
            children = [("material", m["artifact"], m["name"]) for m in step["materials"]]
            for index in range(len(children) - 1, -1, -1):
                last = index == len(children) - 1
                stack.append((below + ("└─ " if last else "├─ "),
                              below + ("   " if last else "│  "), children[index]))
        else:
            artifact = artifacts[node]
            producers = artifact["producers"]
            where = "" if producers else f"  (source, {artifact['source'] or 'unpinned'})"
            lines.append(f"{prefix}{name}  {short_digest(artifact['digest'])}{where}")
            lines += [f"{below}  {MARKS[f['severity']]} {f['severity']}: {f['message']}"
                      for f in findings.get(node, []) if f["kind"] != "unpinned-source"]
            shown.add(node)
            for index in range(len(producers) - 1, -1, -1):
                last = index == len(producers) - 1
                stack.append((below + ("└─ " if last else "├─ "),
                              below + ("   " if last else "│  "), ("step", producers[index], "")))
    return lines


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(report: dict[str, Any]) -> str:
    """Graphviz: steps as boxes, artifacts as notes, sources as ellipses, rebuilds as
    diamonds; each filled with the colour of its status."""
    lines = ["digraph audit {", "  rankdir=LR;",
             '  node [style=filled, fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555"];']
    for step in report["steps"]:
        label = _dot_label(step["step"], signer_label(step["signer"]))
        lines.append(f"  {_dot_string(step['id'])} [shape=box, label={label}, "
                     f"fillcolor={_dot_string(COLOURS[step['status']])}];")
    for artifact in report["artifacts"]:
        colour = COLOURS[artifact["status"]] if artifact["status"] != "ok" else (
            COLOURS[artifact["source"]] if artifact["source"] in COLOURS else COLOURS["ok"])
        shape = "note" if artifact["producers"] else "ellipse"
        label = _dot_label(", ".join(artifact["names"][:2]), short_digest(artifact["digest"]))
        lines.append(f"  {_dot_string(artifact['id'])} [shape={shape}, label={label}, "
                     f"fillcolor={_dot_string(colour)}"
                     f"{', penwidth=2' if artifact['final'] else ''}];")
    for rebuild in report["rebuilds"]:
        label = _dot_label(f"rebuild {rebuild['verdict']}", signer_label(rebuild["signer"]))
        lines.append(f"  {_dot_string(rebuild['id'])} [shape=diamond, label={label}, "
                     f"fillcolor={_dot_string(COLOURS[rebuild_status(rebuild)])}];")
    for edge in report["edges"]:
        style = " [style=dashed]" if edge["kind"] == "rebuilds" else ""
        lines.append(f"  {_dot_string(edge['from'])} -> {_dot_string(edge['to'])}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_label(*lines: str) -> str:
    """A quoted label of several lines; the line breaks are the only escapes it contains."""
    return '"' + "\\n".join(_dot_string(line)[1:-1] for line in lines) + '"'
