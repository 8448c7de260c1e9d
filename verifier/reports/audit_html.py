"""The audit report as one self-contained HTML file: inline CSS and SVG, no script, no network.

The graph is laid out here, left to right in layers: sources, then each step after the steps
whose products it consumes, each product right of its step, rebuild attestations under the step
they rebuilt. Within a layer nodes are ordered by the mean position of their inputs (one
barycentre sweep), which keeps most edges short. Every string comes from attestations, which are
hostile: all of it is HTML-escaped, and a Content-Security-Policy forbids scripts and every
fetch in case something were ever missed.
"""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass
from typing import Any

from verifier.reports.audit_render import (
    COLOURS,
    findings_by_step,
    rebuild_status,
    short_digest,
    signer_label,
    summary_line,
)

MAX_DRAWN_NODES = 1200  # beyond this a drawing helps nobody; steps alone are drawn, or nothing
NODE_W, NODE_H, REBUILD_H = 200, 40, 28
COLUMN_GAP, ROW_GAP, MARGIN = 80, 14, 20
LABEL_CHARS = 28
# The graph shrinks to the page down to this scale (a 2400 px graph fits a 1400 px window),
# and its frame scrolls beyond it: smaller, its 12 px labels could no longer be read.
MIN_SCALE = 0.5


def e(value: Any) -> str:
    """Escape for HTML text and attribute values alike."""
    return html.escape(str(value), quote=True)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


LABEL_LINES = 6  # a name longer than this many lines ends in "…"; the tooltip holds it all
LINE_H = 14


def _wrap(text: str, limit: int = LABEL_CHARS) -> list[str]:
    """The whole label over lines of at most `limit` characters, broken after a '/', ',',
    '-', '_' or '.' where one falls late enough in the line, else anywhere: a name cut to
    `tokenizer.js…` names no file, and two files sharing a prefix look like one."""
    lines: list[str] = []
    rest = text
    while rest and len(lines) < LABEL_LINES:
        if len(rest) <= limit:
            lines.append(rest)
            rest = ""
            break
        cut = max(rest.rfind(c, limit // 2, limit) for c in "/,-_. ")
        cut = cut + 1 if cut > 0 else limit
        lines.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        lines[-1] = lines[-1][:limit - 1] + "…"
    return lines or [""]


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@dataclass
class Box:
    id: str
    kind: str  # step | artifact | source | rebuild
    column: int
    label: str
    sublabel: str
    title: str
    colour: str
    href: str | None
    height: int = NODE_H
    lines: tuple[str, ...] = ()  # the label wrapped (big boxes); set in __post_init__
    x: float = 0.0
    y: float = 0.0
    order: float = 0.0

    def __post_init__(self) -> None:
        if self.height == NODE_H:
            self.lines = tuple(_wrap(self.label))
            self.height = NODE_H + LINE_H * (len(self.lines) - 1)


def _artifact_colour(artifact: dict[str, Any]) -> str:
    if artifact["status"] != "ok":
        return COLOURS[artifact["status"]]
    return COLOURS.get(artifact["source"] or "", COLOURS["ok"])


def _boxes(report: dict[str, Any]) -> tuple[list[Box], list[tuple[str, str, str]], str]:
    """Nodes and edges to draw, and a sentence when the graph had to be reduced."""
    steps, artifacts, rebuilds = report["steps"], report["artifacts"], report["rebuilds"]
    step_boxes = [
        Box(s["id"], "step", s["layer"], f"step {s['step']}",
            _short(signer_label(s["signer"])), f"step {s['step']} — {', '.join(s['files'])}",
            COLOURS[s["status"]], f"#{s['id']}")
        for s in steps
    ]
    rebuild_boxes = [
        Box(r["id"], "rebuild", 0, _short(f"rebuild: {r['verdict']}"),
            _short(signer_label(r["signer"])), f"rebuild of {r['step']} — {', '.join(r['files'])}",
            COLOURS[rebuild_status(r)], f"#{r['step_node']}" if r["step_node"] else None,
            REBUILD_H)
        for r in rebuilds if r["step_node"]
    ]
    column_of = {s["id"]: s["layer"] for s in steps}
    for box, rebuild in zip(rebuild_boxes, [r for r in rebuilds if r["step_node"]], strict=True):
        box.column = column_of[rebuild["step_node"]]
    rebuild_edges = [(r["id"], r["step_node"], "rebuilds") for r in rebuilds if r["step_node"]]
    total = len(steps) + len(artifacts) + len(rebuild_boxes)
    if total <= MAX_DRAWN_NODES:
        artifact_boxes = [
            Box(a["id"], "artifact" if a["producers"] else "source", a["layer"],
                ", ".join(a["names"]), short_digest(a["digest"]),
                f"{', '.join(a['names'])} — {short_digest(a['digest'])}"
                + ("" if a["producers"] else f" — source ({a['source']})")
                + (" — final artifact" if a["final"] else ""),
                _artifact_colour(a), None)
            for a in artifacts
        ]
        edges = [(edge["from"], edge["to"], edge["kind"]) for edge in report["edges"]]
        return step_boxes + artifact_boxes + rebuild_boxes, edges, ""
    if len(steps) + len(rebuild_boxes) <= MAX_DRAWN_NODES:
        edges = [(p, c, "feeds") for a in artifacts for p in a["producers"]
                 for c in a["consumers"] if p != c]
        return (step_boxes + rebuild_boxes, list(dict.fromkeys(edges)) + rebuild_edges,
                f"{total} nodes are too many to draw: steps and rebuilds only, "
                "artifacts are listed below.")
    return [], [], f"{total} nodes are too many to draw; every step is listed below."


def layout(boxes: list[Box], edges: list[tuple[str, str, str]]) -> tuple[float, float]:
    """Place boxes in columns, ordered by the mean row of their inputs; return the size."""
    columns: dict[int, list[Box]] = {}
    for box in boxes:
        columns.setdefault(box.column, []).append(box)
    inputs: dict[str, list[str]] = {}
    rebuild_of: dict[str, str] = {}
    for source, target, kind in edges:
        if kind == "rebuilds":
            rebuild_of[source] = target
        else:
            inputs.setdefault(target, []).append(source)
    by_id = {box.id: box for box in boxes}
    for index, column in enumerate(sorted(columns)):
        members = columns[column]
        for position, box in enumerate(members):
            placed = [by_id[i].order for i in inputs.get(box.id, ()) if i in by_id
                      and by_id[i].column < column]
            box.order = sum(placed) / len(placed) if placed and index else float(position)
        for box in members:
            if box.id in rebuild_of and rebuild_of[box.id] in by_id:
                box.order = by_id[rebuild_of[box.id]].order + 0.001  # right under its step
        members.sort(key=lambda b: b.order)
        for position, box in enumerate(members):
            box.order = float(position)
    heights = {c: sum(b.height + ROW_GAP for b in members) for c, members in columns.items()}
    tallest = max(heights.values(), default=0)
    for index, column in enumerate(sorted(columns)):
        y = MARGIN + (tallest - heights[column]) / 2
        for box in columns[column]:
            box.x = MARGIN + index * (NODE_W + COLUMN_GAP)
            box.y = y
            y += box.height + ROW_GAP
    return MARGIN * 2 + len(columns) * (NODE_W + COLUMN_GAP) - COLUMN_GAP, MARGIN * 2 + tallest


def render_svg(report: dict[str, Any]) -> tuple[str, str]:
    """(the inline SVG, a note when the graph was reduced or not drawn)."""
    boxes, edges, note = _boxes(report)
    if not boxes:
        return "", note
    width, height = layout(boxes, edges)
    by_id = {box.id: box for box in boxes}
    parts = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'aria-label="attestation graph" width="{width:.0f}" height="{height:.0f}" '
             f'style="width:100%;min-width:{width * MIN_SCALE:.0f}px;max-width:{width:.0f}px;'
             'height:auto" '
             f'viewBox="0 0 {width:.0f} {height:.0f}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
             'fill="#666"/></marker></defs>']
    for source, target, kind in edges:
        a, b = by_id.get(source), by_id.get(target)
        if a is None or b is None:
            continue
        if kind == "rebuilds":
            x = a.x + NODE_W / 2
            parts.append(f'<path class="edge rebuilds" d="M{x:.0f},{a.y:.0f} '
                         f'L{x:.0f},{b.y + b.height:.0f}" marker-end="url(#arrow)"/>')
            continue
        x1, y1 = a.x + NODE_W, a.y + a.height / 2
        x2, y2 = b.x, b.y + b.height / 2
        bend = max(abs(x2 - x1) / 2, 30)
        parts.append(f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} '
                     f'{x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}" marker-end="url(#arrow)"/>')
    for box in boxes:
        shape = (f'<rect width="{NODE_W}" height="{box.height}" rx="'
                 f'{18 if box.kind == "source" else 3 if box.kind == "step" else 8}" '
                 f'fill="{e(box.colour)}"/>')
        if box.lines:
            text = "".join(f'<text x="8" y="{16 + LINE_H * i}" class="label">{e(line)}</text>'
                           for i, line in enumerate(box.lines))
            text += (f'<text x="8" y="{32 + LINE_H * (len(box.lines) - 1)}" class="sub">'
                     f'{e(box.sublabel)}</text>')
        else:
            text = (f'<text x="8" y="12" class="label">{e(box.label)}</text>'
                    f'<text x="8" y="24" class="sub">{e(box.sublabel)}</text>')
        group = (f'<g class="node {box.kind}" data-id="{e(box.id)}" '
                 f'transform="translate({box.x:.0f},{box.y:.0f})"><title>{e(box.title)}</title>'
                 f'{shape}{text}</g>')
        if box.href:
            group = f'<a href="{e(box.href)}">{group}</a>'
        parts.append(group)
    parts.append("</svg>")
    return "".join(parts), note


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1d1d1d;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{margin-top:32px;border-bottom:1px solid #ccc}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;
word-break:break-all}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600}
.error{background:#f2a5a5}.warning{background:#ffd98a}.ok{background:#b9e4b9}
.unchecked{background:#dddddd}.info{background:#e3eefc}
.PASS{background:#b9e4b9}.FAIL{background:#f2a5a5}
.graph-wrap{overflow:auto;border:1px solid #ccc;background:#fff;max-height:80vh}
svg.graph .label{font:600 12px system-ui,sans-serif} svg.graph .sub{font:11px system-ui,sans-serif;
fill:#333} svg.graph rect{stroke:#555;stroke-width:1}
svg.graph .edge{fill:none;stroke:#777;stroke-width:1.2} svg.graph .rebuilds{stroke-dasharray:4 3}
section.step{background:#fff;border:1px solid #ccc;border-left:6px solid #999;margin:14px 0;
padding:4px 14px}
section.step.st-error{border-left-color:#d64545} section.step.st-warning{border-left-color:#e0a100}
section.step.st-ok{border-left-color:#3a9a3a}
.legend span{margin-right:10px}
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already-escaped HTML."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(status: str) -> str:
    return f'<span class="badge {e(status)}">{e(status)}</span>'


def _findings(findings: list[dict[str, Any]]) -> str:
    rows = [[_badge(f["severity"]), e(f["kind"]), e(f["message"]),
             "<br>".join(f"<code>{e(name)}</code>" for name in f["files"][:10])]
            for f in findings]
    return _table(["severity", "kind", "finding", "files"], rows) if rows else "<p>none</p>"


def _environment(environment: dict[str, Any]) -> str:
    torch = environment.get("torch")
    git = environment.get("git")
    items = [
        ("python", environment.get("python")), ("platform", environment.get("platform")),
        ("cpu", f"{environment.get('cpu')} ({environment.get('cpu_count')} cores)"),
        ("gpus", ", ".join(map(str, environment.get("gpus") or [])) or "none"),
        ("torch", ", ".join(f"{k}={_number(v)}" for k, v in torch.items())
         if isinstance(torch, dict) else "not installed"),
        ("variables", ", ".join(f"{k}={v}" for k, v in environment["variables"].items())
         or "none recorded"),
        ("git", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}"
         if isinstance(git, dict) else "not recorded"),
        ("packages", f"{environment.get('packages')} recorded"),
    ]
    return "<br>".join(f"<b>{e(k)}</b>: <span class=mono>{e(v)}</span>" for k, v in items)


def _code(text: str) -> str:
    return f"<code>{e(text)}</code>"


def _link(node_id: str | None, text: str) -> str:
    return f'<a href="#{e(node_id)}">{e(text)}</a>' if node_id else e(text)


def _rebuild(rebuild: dict[str, Any]) -> str:
    differs = rebuild["verdict"] in ("mismatched", "probe") and rebuild["mismatches"]
    verdict = f"{rebuild['verdict']}: outputs diverged" if differs else rebuild["verdict"]
    out = [f"<p>{_badge(rebuild_status(rebuild))} <b>{e(verdict)}</b> by "
           f"{e(signer_label(rebuild['signer']))} — <code>{e(', '.join(rebuild['files']))}</code>"
           "</p>"]
    rows = [[e(r["name"]), e(r["verdict"]), f"<code>{e(short_digest(r['expected']))}</code>",
             f"<code>{e(short_digest(r['actual']))}</code>" if r.get("actual") else "",
             e(_number(r.get("first_difference_offset")))]
            for r in rebuild["results"]]
    out.append(_table(["file", "verdict", "expected", "rebuilt", "first differing byte"], rows))
    for result in rebuild["results"]:
        tensors = result.get("tensors") or []
        if not tensors:
            continue
        out.append(f"<p>tensors of <code>{e(result['name'])}</code> "
                   f"({e(result.get('tensor_count'))}):</p>")
        columns = ["name", "status", "max_abs_diff", "mean_abs_diff", "rel_l2", "cosine",
                   "bit_equal_fraction", "median_ulp"]
        out.append(_table([c.replace("_", " ") for c in columns],
                          [[e(_number(t.get(c))) for c in columns] for t in tensors]))
    if rebuild["drift"]:
        out.append("<p>environment drift: " + "; ".join(
            f"<code>{e(d['field'])}</code>: {e(d['recorded'])} → {e(d['current'])}"
            for d in rebuild["drift"][:10]) + "</p>")
    return "".join(out)


def _step_section(step: dict[str, Any], artifacts: dict[str, dict[str, Any]],
                  steps: dict[str, dict[str, Any]], rebuilds: dict[str, dict[str, Any]],
                  findings: list[dict[str, Any]]) -> str:
    def producer_cell(material: dict[str, Any]) -> str:
        artifact = artifacts.get(material["artifact"] or "")
        if artifact is None:
            return ""
        if not artifact["producers"]:
            return e(f"source ({artifact['source'] or 'unpinned'})")
        return ", ".join(_link(p, f"step {steps[p]['step']}") for p in artifact["producers"])

    def consumer_cell(product: dict[str, Any]) -> str:
        artifact = artifacts.get(product["artifact"] or "")
        if artifact is None:
            return ""
        cells = [_link(c, f"step {steps[c]['step']}") for c in artifact["consumers"][:20]]
        if artifact["final"]:
            cells.insert(0, "<b>final artifact</b>")
        return ", ".join(cells) or "nothing"

    signer = step["signer"]
    rows = [
        ("attestation", "<br>".join(f"<code>{e(f)}</code>" for f in step["files"])),
        ("payload sha256", f"<code>{e(step['payload_sha256'])}</code>"),
        ("signed by", f"{e(signer_label(signer))} {_badge(signer['status'])} "
                      f"<span class=mono>{e(signer['claimed'])}</span>"),
        ("command", f"<code>{e(shlex.join(step['argv']))}</code>"),
        ("working directory", f"<code>{e(step['working_directory'])}</code>"),
        ("declared env", "<code>" + e(", ".join(f"{k}={v}" for k, v in
                                               step["declared_env"].items()) or "none")
         + "</code>"),
        ("environment", _environment(step["environment"])),
    ]
    if step.get("quorum"):
        quorum = step["quorum"]
        rows.append(("rebuild quorum", e(f"{len(quorum['matched'])} of {quorum['quorum']} "
                                         f"({', '.join(quorum['matched']) or 'none'})")))
    parts = [f'<section class="step st-{e(step["status"])}" id="{e(step["id"])}" '
             f'data-step="{e(step["step"])}">',
             f"<h3>step <span class=name>{e(step['step'])}</span> {_badge(step['status'])}</h3>",
             "<table class=kv>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>"
                                          for k, v in rows) + "</table>",
             "<h4>materials</h4>",
             _table(["name", "digest", "from"],
                    [[_code(m["name"]), _code(short_digest(m["digest"])), producer_cell(m)]
                     for m in step["materials"]]),
             "<h4>products</h4>",
             _table(["name", "digest", "used by"],
                    [[_code(p["name"]), _code(short_digest(p["digest"])), consumer_cell(p)]
                     for p in step["products"]])]
    if step["rebuilds"]:
        parts.append("<h4>rebuilds</h4>")
        parts.extend(_rebuild(rebuilds[r]) for r in step["rebuilds"])
    if findings:
        parts += ["<h4>findings</h4>", _findings(findings)]
    parts.append("</section>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    svg, note = render_svg(report)
    steps = {s["id"]: s for s in report["steps"]}
    artifacts = {a["id"]: a for a in report["artifacts"]}
    rebuilds = {r["id"]: r for r in report["rebuilds"]}
    grouped = findings_by_step(report)
    counts = report["summary"]
    policy = (f"policy <code>{e(report['policy'])}</code>, signatures checked"
              if report["checked"] else
              "<b>no policy: chain unchecked</b>; signers are shown as the bundles claim them")
    legend = "".join(f'<span><span class="badge {k}">{k}</span></span>'
                     for k in ("ok", "warning", "error", "unchecked"))
    legend += (f'<span><span class="badge" style="background:{COLOURS["pinned"]}">pinned source'
               f'</span></span><span><span class="badge" style="background:'
               f'{COLOURS["unpinned"]}">unpinned source</span></span>')
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'style-src \'unsafe-inline\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>model-verifier audit</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>model-verifier audit</h1>",
        f"<p><span class=\"badge {e(report['verdict'])}\">{e(report['verdict'])}</span> "
        f"{e(summary_line(report))}</p>",
        f"<p>{counts['steps']} step attestations, {counts['rebuilds']} rebuilds, "
        f"{counts['artifacts']} artifacts in {counts['bundles']} bundles from "
        f"<code>{e(', '.join(report['directories']))}</code>; {policy}.</p>",
        "<h2>Graph</h2>",
        f'<p class="legend">{legend} — steps are boxes, artifacts rounded, sources round, '
        "rebuilds small boxes under their step (dashed arrow); final artifacts are the "
        "rightmost products.</p>",
        f"<p>{e(note)}</p>" if note else "",
        f'<div class="graph-wrap">{svg}</div>' if svg else "",
        "<h2>Findings</h2>",
        _findings(report["findings"]),
        "<h2>Steps</h2>",
    ]
    body.extend(_step_section(s, artifacts, steps, rebuilds, grouped.get(s["id"], []))
                for s in report["steps"])
    sources = [a for a in report["artifacts"] if not a["producers"]]
    body += ["<h2>Sources</h2>",
             _table(["name", "digest", "status", "used by"],
                    [[f"<code>{e(', '.join(a['names']))}</code>",
                      f"<code>{e(short_digest(a['digest']))}</code>", e(a["source"] or ""),
                      ", ".join(_link(c, f"step {steps[c]['step']}") for c in a["consumers"][:20])]
                     for a in sources])]
    body.extend(_openness_sections(report))
    body.append("</body></html>\n")
    return "\n".join(body)


def _openness_sections(report: dict[str, Any]) -> list[str]:
    """For each final artifact judged against a policy: verifier.reports.openness's view of it."""
    import json

    # A directory and the files in it share one chain: one section for all of them.
    grouped: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for artifact in report["artifacts"]:
        view = artifact.get("openness")
        if not artifact.get("final") or not view:
            continue
        key = json.dumps({k: v for k, v in view.items() if k not in ("artifact", "digest")},
                         sort_keys=True)
        grouped.setdefault(key, ([], view))[0].extend(artifact["names"])
    parts: list[str] = []
    for names, view in grouped.values():
        supported = view["supported_class"]
        parts.append(f"<h2>Openness of <code>{e(', '.join(sorted(names)))}</code></h2>")
        parts.append(f"<p>{e(view['framework'])}: the chain supports "
                     f"<b>{e('Class ' + supported if supported else 'no class')}</b> "
                     f"(chain {e(view['chain'])}). {e(view['note'])}</p>")
        rows = []
        for component in view["components"]:
            files = "<br>".join(
                f"<code>{e(f['name'])}</code> {e(f['accounted'])}"
                + (f", rebuilt {f['rebuilt']['matching']}/{f['rebuilt']['of']}"
                   if f["rebuilt"] else "")
                + f", {e(f['license'] or 'no licence declared')}"
                for f in component["files"]) or "not declared"
            rows.append([e(component["component"]),
                         e(f"{component['mof_component'] or '—'} "
                           f"({component['mof_class'] or 'no class'})"),
                         files, e("; ".join(component["gaps"]))])
        parts.append(_table(["component", "MOF component (class)", "in the chain", "gaps"],
                            rows))
    return parts
