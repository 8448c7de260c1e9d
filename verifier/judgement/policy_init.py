"""`policy init`: a commented policy written from a recorded chain, and checked against it.

The chain says which steps exist, in which order, who signed each, and which inputs no attested
step produced (the root inputs, pinned here by their digests). Code files among the root inputs
become unpinned patterns unless the caller pins code too: code is usually edited between runs,
and an unpinned pattern is reported on every verification, so nothing is hidden. The policy is
written only after the one evaluation (`verifier.judgement.evaluation`) has judged the chain
under it;
the output has no timestamps and everything in it is sorted or in step order, so the same chain
gives the same file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from verifier.errors import InputError
from verifier.formats.envelope import write_atomic
from verifier.judgement.evaluation import Evaluation, StepNode, evaluate
from verifier.judgement.policy import Policy, SignerSpec, load_policy
from verifier.judgement.trust import TrustedSigners

# Root inputs with these suffixes are code: allowed as unpinned patterns unless --pin-code.
CODE_SUFFIXES = (".py", ".sh", ".ipynb", ".r", ".jl", ".lua", ".js", ".ts")

# What a Hugging Face Hub download adds to a model directory, with why each may be ignored.
HUB_IGNORES = (
    (".gitattributes", "Git LFS settings of the Hub repository, not part of the model"),
    (".cache/huggingface/**", "huggingface_hub's download metadata (etags, commit ids)"),
)
MODEL_CARD = "README.md"


@dataclass
class InitResult:
    path: Path
    steps: list[str]
    pinned: int
    unpinned_patterns: list[str]
    rebuild_steps: list[str]
    # Steps of rebuild.steps no given rebuild attestation of a --rebuilder covers.
    unrebuilt_steps: list[str] = field(default_factory=list)
    # Every final artifact of the chain and whether the written policy verifies it.
    artifacts: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def verifies(self) -> bool:
        return bool(self.artifacts) and all(ok for _, ok, _ in self.artifacts)

    def to_dict(self) -> dict[str, object]:
        return {"policy": str(self.path), "steps": self.steps, "pinned_sources": self.pinned,
                "unpinned_patterns": self.unpinned_patterns,
                "rebuild_steps": self.rebuild_steps,
                "unrebuilt_steps": self.unrebuilt_steps, "verifies": self.verifies,
                "artifacts": [{"artifact": a, "verdict": "PASS" if ok else "FAIL",
                               "problem": why} for a, ok, why in self.artifacts]}


def parse_named_keys(values: list[str], option: str) -> dict[str, Path]:
    """NAME=KEYFILE pairs, each name once."""
    found: dict[str, Path] = {}
    for value in values:
        name, sep, key = value.partition("=")
        if not sep or not name or not key:
            raise InputError(f"{option} {value!r}: expected NAME=KEYFILE (a public key PEM).")
        if name in found:
            raise InputError(f"{option}: the name {name!r} is given twice.")
        if not Path(key).is_file():
            raise InputError(f"{key}: no such key file (given as {option} {value}).")
        found[name] = Path(key)
    return found


def _is_code(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in CODE_SUFFIXES


def _code_pattern(name: str) -> str:
    path = PurePosixPath(name)
    folder = "" if str(path.parent) == "." else f"{path.parent}/"
    return f"{folder}*{path.suffix}"


def _reduce(after: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop an `after` entry another one already implies (a after b after c: not a after c)."""

    def reaches(start: str, goal: str, skip: str) -> bool:
        pending, seen = [n for n in after.get(start, ()) if n != skip], set()
        while pending:
            node = pending.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                pending.extend(after.get(node, ()))
        return False

    return {step: {e for e in earlier if not reaches(step, e, e)}
            for step, earlier in after.items()}


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML_WORDS = {"yes", "no", "true", "false", "on", "off", "null"}


def _q(text: str) -> str:
    """A YAML flow scalar: plain where that cannot be read as anything else, else quoted
    (a JSON string is a valid YAML one)."""
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _relative_key(key: Path, out: Path) -> str:
    return Path(os.path.relpath(key.resolve(), out.parent.resolve())).as_posix()


def _provisional(out: Path, keys: dict[str, Path]) -> Policy:
    signers = {n: SignerSpec(n, key_path=k) for n, k in keys.items()}
    return Policy(path=out, name="init", expires=None, signers=signers, sources=(), steps=())


def init_policy(attestation_dirs: list[Path], signers: dict[str, Path],
                rebuilders: dict[str, Path], out: Path, *, quorum: int | None = None,
                pin_code: bool = False, name: str | None = None,
                force: bool = False, rebuild_steps: list[str] | None = None) -> InitResult:
    """Write the policy the chain under `attestation_dirs` satisfies; see the module.

    With rebuilders, every step must be rebuilt unless `rebuild_steps` names the ones that
    must: a step nobody rebuilt is never dropped from the policy silently (the policy then
    fails on it, and the result names it)."""
    from verifier.judgement.verify import load_bundles

    if out.exists() and not force:
        raise InputError(f"{out}: already exists; pass --force to replace it.")
    if not signers:
        raise InputError("give at least one --signer NAME=KEYFILE: the key that signed steps.")
    shared = sorted(set(signers) & set(rebuilders))
    if shared:
        raise InputError(f"{shared[0]!r} is given as both --signer and --rebuilder.")
    if quorum is not None and not 1 <= quorum <= max(len(rebuilders), 1):
        raise InputError(f"--quorum {quorum}: must be between 1 and the number of "
                         f"--rebuilder keys ({len(rebuilders)}).")
    keys = {**signers, **rebuilders}
    provisional = _provisional(out, keys)
    notes: list[str] = []
    evaluation = evaluate(provisional, load_bundles(attestation_dirs, notes),
                          TrustedSigners(provisional))
    nodes = [s for s in evaluation.steps if set(s.attribution.names) & set(signers)]
    if not nodes:
        raise InputError(f"{', '.join(map(str, attestation_dirs))}: no step attestation is "
                         f"signed by {', '.join(sorted(signers))}; check the --signer keys.")
    if rebuild_steps and not rebuilders:
        raise InputError("--rebuild-step needs at least one --rebuilder NAME=KEYFILE.")
    steps = {node.record.step for node in nodes}
    unknown = sorted(set(rebuild_steps or ()) - steps)
    if unknown:
        raise InputError(f"--rebuild-step {unknown[0]}: the chain has no step of that name "
                         f"signed by the --signer keys (it has {', '.join(sorted(steps))}).")
    text, result = _render(evaluation, nodes, signers, rebuilders, out, quorum, pin_code,
                           name or out.stem, rebuild_steps)
    _write_checked(out, text, result, force, attestation_dirs)
    return result


def _render(evaluation: Evaluation, nodes: list[StepNode], signers: dict[str, Path],
            rebuilders: dict[str, Path], out: Path, quorum: int | None, pin_code: bool,
            name: str, rebuild_steps: list[str] | None) -> tuple[str, InitResult]:
    order: list[str] = []
    signed_by: dict[str, set[str]] = {}
    after: dict[str, set[str]] = {}
    pins: set[tuple[str, str, str]] = set()
    code: set[str] = set()
    for node in nodes:
        step = node.record.step
        if step not in order:
            order.append(step)
        signed_by.setdefault(step, set()).update(set(node.attribution.names) & set(signers))
        earlier = after.setdefault(step, set())
        for link in node.links:
            producers = [p for p in link.producers if set(p.attribution.names) & set(signers)]
            earlier.update(p.record.step for p in producers if p.record.step != step)
            if producers:
                continue
            if _is_code(link.name) and not pin_code:
                code.add(_code_pattern(link.name))
            elif "dirHash" in link.digest:
                pins.add((link.name, "dirHash", link.digest["dirHash"]))
            elif "sha256" in link.digest:
                pins.add((link.name, "sha256", link.digest["sha256"]))
    after = _reduce(after)
    finals = [s for s in order if not any(s in after[o] for o in order)]
    # Every step, or the ones the caller named: which steps were rebuilt says nothing about
    # which must be (a step left out of the given rebuilds must not leave the policy).
    rebuilt = [s for s in order if s in rebuild_steps] if rebuild_steps else list(order)
    unrebuilt = [s for s in rebuilt if not any(
        r.claim.step == s and set(r.attribution.names) & set(rebuilders)
        for r in evaluation.rebuilds)] if rebuilders else []

    lines = [
        f"# Policy {name}, written by `model-verifier policy init` from {len(nodes)} step "
        "attestation(s).",
        "# Review it before relying on it: every name, pin and rule below came from the chain.",
        "# Key paths are relative to this file. Check it with `model-verifier policy check`.",
        "version: 1",
        f"name: {_q(name)}",
        "# Add `expires: YYYY-MM-DD`: an expired policy verifies nothing.",
        "signers:",
    ]
    lines += [f"  {_q(n)}: {{key: {_q(_relative_key(k, out))}}}" for n, k in sorted(
        signers.items())]
    lines += [f"  {_q(n)}: {{key: {_q(_relative_key(k, out))}}}" for n, k in sorted(
        rebuilders.items())]
    if pins or code:
        lines.append("# Root inputs (no attested step produced them), pinned by digest.")
        lines.append("sources:")
        for source, algorithm, value in sorted(pins):
            lines.append(f"  - {{name: {_q(source)}, {algorithm}: {value}}}")
        if code:
            lines.append("  # Code, allowed unpinned and reported as such on every "
                         "verification (policy init --pin-code pins it).")
            lines += [f"  - {{pattern: {_q(p)}, unpinned: true}}" for p in sorted(code)]
    lines.append("# The steps in build order, each with who must sign it and what it follows.")
    lines.append("steps:")
    for step in order:
        earlier = [e for e in order if e in after[step]]
        tail = f", after: [{', '.join(_q(e) for e in earlier)}]" if earlier else ""
        lines.append(f"  - {{name: {_q(step)}, signed_by: "
                     f"[{', '.join(_q(s) for s in sorted(signed_by[step]))}]{tail}}}")
    lines += _ignore_lines(evaluation, nodes, finals)
    if rebuilders:
        count = quorum if quorum is not None else len(rebuilders)
        lines += [
            "# Independent rebuilds: how many of the rebuilders must reproduce each step.",
            "rebuild:",
            f"  quorum: {count}",
            f"  rebuilders: [{', '.join(_q(r) for r in sorted(rebuilders))}]",
            *([f"  # No rebuild of {', '.join(unrebuilt)} was given: until one is, the "
               "policy fails on it."] if unrebuilt else []),
            f"  steps: [{', '.join(_q(s) for s in rebuilt)}]",
            "  # Bit for bit. Per step and product it can be a tensor tolerance {rtol, atol},",
            "  # {json: {rtol, atol}} or informational (policies/README.md, rebuild.match).",
            "  match: exact",
        ]
    pinned = len(pins)
    result = InitResult(out, order, pinned, sorted(code), rebuilt if rebuilders else [],
                        unrebuilt)
    return "\n".join(lines) + "\n", result


def _ignore_lines(evaluation: Evaluation, nodes: list[StepNode], finals: list[str]
                  ) -> list[str]:
    """The Hub defaults; the model card only when the attested directories carry none (then a
    card added by the Hub is not part of the attested model; if it is, it must match)."""
    carded = any(
        "dirHash" in p["digest"] and f"{p['name']}/{MODEL_CARD}" in {
            q["name"] for q in node.record.products}
        for node in nodes if node.record.step in finals for p in node.record.products)
    lines = ["# Files a Hugging Face Hub download adds to a model directory: left out of a",
             "# directory artifact's digest, and every one present is listed in the report.",
             "ignore:"]
    lines += [f"  - {_q(p)}  # {why}" for p, why in HUB_IGNORES]
    if carded:
        lines += ["  # The attested model directory holds its model card: it must match, so it",
                  "  # is not ignored.",
                  f"  # - {_q(MODEL_CARD)}"]
    else:
        lines += ["  # The model card the Hub shows; no attested directory holds one, so it is",
                  "  # unverified. It states the license and intended use: if those matter,",
                  "  # make it a product of the packaging step and drop this line.",
                  f"  - {_q(MODEL_CARD)}"]
    return lines


def _write_checked(out: Path, text: str, result: InitResult, force: bool,
                   attestation_dirs: list[Path]) -> None:
    """Write the policy beside `out` (so its relative key paths resolve), judge the chain
    under it, and only then rename it into place."""
    def judge(temporary: Path) -> None:
        result.artifacts = _judge(load_policy(temporary), attestation_dirs)

    write_atomic(out, text, overwrite=force, check=judge, suffix=".yaml")


def _judge(policy: Policy, attestation_dirs: list[Path]) -> list[tuple[str, bool, str]]:
    """Every final artifact of the chain under the written policy (the products of the final
    steps' attestations that are not files inside an attested directory), by the one
    evaluation verify-model uses."""
    from verifier.judgement.verify import load_bundles

    evaluation = evaluate(policy, load_bundles(attestation_dirs, []), TrustedSigners(policy))
    finals = {s.name for s in policy.final_steps()}
    judged: dict[str, tuple[str, bool, str]] = {}
    for node in evaluation.steps:
        if not node.trusted or node.record.step not in finals:
            continue
        products = node.record.products
        directories = [p["name"] for p in products if "dirHash" in p["digest"]]
        for product in products:
            label = product["name"]
            if label in judged or any(label.startswith(f"{d}/") for d in directories):
                continue
            verdict = evaluation.artifact(dict(product["digest"]), label)
            first = verdict.problems[0].message if verdict.problems else ""
            judged[label] = (label, verdict.passed, first)
    return [judged[k] for k in sorted(judged)]
