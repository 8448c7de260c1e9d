"""The policy a deployable model must satisfy: loading, schema validation, the model of it.

Paths inside a policy (keys, trusted roots) are relative to the policy file. Unknown fields are
errors: a misspelt rule must never silently turn into no rule.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from verifier import readers
from verifier.certsigner import CertificateIdentity
from verifier.errors import InputError

DEFAULT_POLICY = Path("model-policy.yaml")


@dataclass(frozen=True)
class KeylessIdentity:
    issuer: str
    identity: str | None = None
    identity_regex: str | None = None
    repository: str | None = None
    ref: str | None = None
    workflow_sha: str | None = None
    trigger: str | None = None


@dataclass(frozen=True)
class SignerSpec:
    name: str
    key_path: Path | None = None
    keyless: KeylessIdentity | None = None
    certificate: CertificateIdentity | None = None


@dataclass(frozen=True)
class SourceRule:
    name: str | None = None
    sha256: str | None = None
    pattern: str | None = None
    unpinned: bool = False
    git_commit: str | None = None
    dir_hash: str | None = None  # a directory pinned as a whole

    def describe(self) -> str:
        if self.sha256:
            return f"source {self.name} (sha256 {self.sha256[:12]}…)"
        if self.dir_hash:
            return f"source directory {self.name} (dirHash {self.dir_hash[:12]}…)"
        if self.git_commit:
            return f"source pattern {self.pattern!r} at git commit {self.git_commit[:12]}"
        return f"unpinned source pattern {self.pattern!r}"

    def matches_name(self, name: str) -> bool:
        if self.name is not None:
            return name == self.name
        return self.pattern is not None and _glob(name, self.pattern)


def _glob(name: str, pattern: str) -> bool:
    """Match a POSIX path: `*` and `?` stay within one component, `**` spans directories."""
    return _glob_regex(pattern).fullmatch(name) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    regex, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif pattern[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif pattern[index] == "?":
            regex, index = regex + "[^/]", index + 1
        else:
            regex, index = regex + re.escape(pattern[index]), index + 1
    return re.compile(regex, flags=re.DOTALL)


@dataclass(frozen=True)
class StepRule:
    name: str
    signed_by: tuple[str, ...]
    after: tuple[str, ...] = ()
    hermetic: bool = False  # recorded sandboxed without network (verifier.hermetic)
    undeclared_inputs: str = "allow"  # or "forbid": traced, and no undeclared input


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


@dataclass(frozen=True)
class RebuildRule:
    quorum: int
    rebuilders: tuple[str, ...]
    steps: tuple[str, ...]
    match: dict[str, Tolerance | None]  # per step; None = exact
    max_dissent: int | None = None
    require_sandbox: bool = False  # count only sandboxed, offline rebuilds (verifier.hermetic)


@dataclass(frozen=True)
class LicenseRule:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    path: Path
    name: str
    expires: dt.date | None
    signers: dict[str, SignerSpec]
    sources: tuple[SourceRule, ...]
    steps: tuple[StepRule, ...]
    rebuild: RebuildRule | None = None
    licenses: LicenseRule | None = None  # judged by verifier.judgement over every step
    max_benchmark_overlap: float | None = None  # judged by verifier.contamination
    trusted_root: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # Digests that may establish a match; blake3 only where the policy opts in (docs/digests.md).
    accept_digests: tuple[str, ...] = ("sha256",)

    def step(self, name: str) -> StepRule | None:
        return next((s for s in self.steps if s.name == name), None)

    def final_steps(self) -> list[StepRule]:
        """Steps no other step comes after: the ones that produce the deployable artifact."""
        preceding = {name for s in self.steps for name in s.after}
        return [s for s in self.steps if s.name not in preceding]

    def is_expired(self, today: dt.date | None = None) -> bool:
        return self.expires is not None and (today or dt.date.today()) > self.expires


def _schema() -> dict[str, Any]:
    text = resources.files("verifier").joinpath("schemas/policy.schema.json").read_text()
    return json.loads(text)


def _read_yaml(path: Path) -> Any:
    import yaml

    text = readers.read_text(path, "policy file", readers.MAX_POLICY_BYTES, missing=(
        f"{path}: no such policy file; pass one with --policy FILE (policies/ has examples)."))
    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass: safe
    except _Refused as refusal:
        raise InputError(f"{path}: {refusal.sentence} (line {refusal.line}).") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise InputError(f"{path}: is not valid YAML ({problem}{where}).") from None
    except RecursionError:
        raise InputError(f"{path}: is nested too deeply to be a policy.") from None
    except (ValueError, OverflowError) as error:  # e.g. a date that does not exist, 2024-02-30
        raise InputError(f"{path}: is not a valid policy ({readers.brief(str(error), 120)}).")\
            from None


class _Refused(Exception):
    """A YAML construct a policy may not use; the sentence says which and why."""

    def __init__(self, sentence: str, line: int) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.line = line


def _strict_loader() -> type:
    """PyYAML's SafeLoader, stricter in three ways, each a way a policy could mean other than
    it says or cost more than its size:

    - a key given twice in one mapping is an error (the plain loader keeps the second, turning
      a rule into no rule);
    - aliases (`*name`, and so `<<` merge keys) are refused before anything is expanded: a
      policy is a short file that spells out every value, and an alias bomb of a few hundred
      bytes would otherwise expand into billions of nodes for the schema check to walk;
    - mapping keys must be plain strings: a list or map as a key cannot be hashed, and `on:` or
      `2024:` silently becomes a boolean or a number.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise _Refused("uses a YAML alias; aliases and merge keys are refused in "
                               "policies, so write the value out", mark.line + 1)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[str] = set()
            for key_node, _ in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _Refused("uses a list or a mapping as a mapping key; keys must be "
                                   "strings", line)
                if key_node.tag != "tag:yaml.org,2002:str":
                    raise _Refused(f"has the key {readers.brief(key_node.value)}, which YAML "
                                   "reads as another type than a string; quote it", line)
                key = key_node.value
                if key in seen:
                    raise _Refused(f"has the key {readers.brief(key)} twice in one mapping",
                                   line)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def _validate(data: Any, path: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        _schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        where = ".".join(readers.brief(p, 40).strip("'") if not isinstance(p, int) else str(p)
                         for p in error.absolute_path) or "the top level"
        raise InputError(f"{path}: {where}: {_schema_message(error)}.")


def _schema_message(error: Any) -> str:
    """jsonschema's message, except that it quotes the offending value whole: a long or nested
    value is named by its kind instead, so that no message grows with the input."""
    message = str(error.message)
    quoted = repr(error.instance) if not isinstance(error.instance, int | float) else ""
    if len(message) <= 200:
        return message
    if quoted and quoted in message:
        return message.replace(quoted, readers.brief(error.instance))[:200]
    return message[:199] + "…"


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; InputError names the file and the field at fault."""
    data = _read_yaml(path)
    if data is None:
        raise InputError(f"{path}: is empty; a policy needs at least version, signers and steps.")
    if isinstance(data, dict) and isinstance(data.get("expires"), dt.date):
        data["expires"] = data["expires"].isoformat()
    _check_match_options(data, path)
    _validate(data, path)
    base = path.parent
    signers = {}
    for name, spec in data["signers"].items():
        if "key" in spec:
            signers[name] = SignerSpec(name, key_path=base / spec["key"])
        elif "certificate" in spec:
            certificate = spec["certificate"]
            signers[name] = SignerSpec(name, certificate=CertificateIdentity(
                base / certificate["roots"], certificate.get("subject"), certificate.get("san")))
        else:
            signers[name] = SignerSpec(name, keyless=KeylessIdentity(**spec["sigstore"]))
    steps = tuple(
        StepRule(s["name"], tuple(s["signed_by"]), tuple(s.get("after", ())),
                 hermetic=s.get("hermetic", False),
                 undeclared_inputs=s.get("undeclared_inputs", "allow"))
        for s in data["steps"]
    )
    _check_references(path, signers, steps, data.get("rebuild"))
    expires = dt.date.fromisoformat(data["expires"]) if "expires" in data else None
    return Policy(
        path=path,
        name=data.get("name", path.stem),
        expires=expires,
        licenses=_license_rule(path, data.get("licenses")),
        max_benchmark_overlap=data.get("data", {}).get("max_benchmark_overlap"),
        signers=signers,
        sources=tuple(_source_rule(s) for s in data.get("sources", [])),
        steps=steps,
        rebuild=_rebuild_rule(data.get("rebuild"), steps, path),
        trusted_root=base / data["trusted_root"] if "trusted_root" in data else None,
        raw=data,
        accept_digests=tuple(data.get("digests", {}).get("accept", ["sha256"])),
    )


def _license_rule(path: Path, data: dict[str, Any] | None) -> LicenseRule | None:
    """The licence lists, each entry checked as an SPDX identifier (or ID WITH EXCEPTION)."""
    from verifier import spdx

    if not data:
        return None
    for key in ("allow", "deny"):
        for entry in data.get(key, []):
            try:
                parsed = spdx.parse(entry)
            except InputError as error:
                raise InputError(f"{path}: licenses.{key}: {error}") from None
            if len(parsed.alternatives) != 1 or len(parsed.alternatives[0]) != 1:
                raise InputError(f"{path}: licenses.{key}: {entry!r} is an expression; list "
                                 "single licence identifiers.")
    return LicenseRule(tuple(data.get("allow", ())), tuple(data.get("deny", ())))


def _source_rule(data: dict[str, Any]) -> SourceRule:
    fields = {k: v for k, v in data.items() if k != "dirHash"}
    return SourceRule(**fields, dir_hash=data.get("dirHash"))


def _check_references(path: Path, signers: dict[str, SignerSpec], steps: tuple[StepRule, ...],
                      rebuild: dict[str, Any] | None) -> None:
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: steps: a step name appears twice.")
    for step in steps:
        for signer in step.signed_by:
            if signer not in signers:
                raise InputError(f"{path}: step {step.name!r} names an unknown signer {signer!r}.")
        for earlier in step.after:
            if earlier not in names:
                raise InputError(f"{path}: step {step.name!r} comes after an unknown step "
                                 f"{earlier!r}.")
    if rebuild:
        for rebuilder in rebuild["rebuilders"]:
            if rebuilder not in signers:
                raise InputError(f"{path}: rebuild.rebuilders names an unknown signer "
                                 f"{rebuilder!r}.")
        for step_name in rebuild["steps"]:
            if step_name not in names:
                raise InputError(f"{path}: rebuild.steps names an unknown step {step_name!r}.")


TOLERANCE_OPTIONS = ("rtol", "atol")


def _check_match_options(data: Any, path: Path) -> None:
    """`rebuild.match` is either one tolerance {rtol, atol} for every step, or a map from step
    names to `exact` or a tolerance. A step named `rtol` or `atol` would make the two forms
    indistinguishable, so it is refused, as is a map mixing the two forms."""
    rebuild = data.get("rebuild") if isinstance(data, dict) else None
    if not isinstance(rebuild, dict):
        return
    steps = rebuild.get("steps")
    named = [s for s in steps if s in TOLERANCE_OPTIONS] if isinstance(steps, list) else []
    match = rebuild.get("match")
    if named and isinstance(match, dict):
        raise InputError(f"{path}: rebuild.steps names a step {named[0]!r}, which rebuild.match "
                         "cannot tell from its tolerance option of that name; rename the step.")
    if isinstance(match, dict):
        options = [k for k in match if k in TOLERANCE_OPTIONS]
        others = [k for k in match if k not in TOLERANCE_OPTIONS]
        if options and others:
            raise InputError(
                f"{path}: rebuild.match mixes the tolerance option {options[0]!r} with the step "
                f"entry {readers.brief(others[0])}; give either {{rtol, atol}} for every step "
                "or one entry per step.")


def _number(value: Any, path: Path, where: str) -> float:
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{path}: {where} must be a finite number.")
    return number


def _tolerance(spec: dict[str, Any], path: Path, where: str) -> Tolerance:
    return Tolerance(_number(spec["rtol"], path, f"{where}.rtol"),
                     _number(spec["atol"], path, f"{where}.atol"))


def _rebuild_rule(data: dict[str, Any] | None, steps: tuple[StepRule, ...],
                  path: Path = Path("policy")) -> RebuildRule | None:
    if not data:
        return None
    match = data.get("match", "exact")
    per_step: dict[str, Tolerance | None] = {}
    for step in data["steps"]:
        if match == "exact":
            per_step[step] = None
        elif set(match) == set(TOLERANCE_OPTIONS):
            per_step[step] = _tolerance(match, path, "rebuild.match")
        else:
            chosen = match.get(step, "exact")
            per_step[step] = (None if chosen == "exact"
                              else _tolerance(chosen, path, f"rebuild.match.{step}"))
    return RebuildRule(
        quorum=int(data["quorum"]),
        rebuilders=tuple(data["rebuilders"]),
        steps=tuple(data["steps"]),
        match=per_step,
        max_dissent=data.get("max_dissent"),
        require_sandbox=data.get("require_sandbox", False),
    )
