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

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.certsigner import CertificateIdentity
from verifier.formats.keyless import KeylessIdentity
from verifier.judgement.policy_schema import did_you_mean, explain_schema_error

DEFAULT_POLICY = Path("model-policy.yaml")


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


def ignore_pattern_for(name: str, patterns: tuple[str, ...], regular: bool = True
                       ) -> str | None:
    """The first ignore pattern that leaves the entry `name` (relative to a directory artifact;
    `regular`: whether it is a regular file) out. A pattern ending in '/' names a folder and
    leaves out everything in it (`.cache/`); one ending in `**` everything below
    (`.cache/huggingface/**`), whatever it is; any other pattern names files, and matches a
    regular file's own path only: `README.md` never hides a folder, link or FIFO of that name,
    nor what a folder of that name holds."""
    for pattern in patterns:
        if pattern.endswith("/"):
            if any(_glob(parent, pattern[:-1]) for parent in _parents(name)):
                return pattern
        elif pattern == "**" or pattern.endswith("/**"):
            if _glob(name, pattern):
                return pattern
        elif regular and _glob(name, pattern):
            return pattern
    return None


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def check_ignore_pattern(pattern: str) -> str | None:
    """Why an ignore pattern is unusable, or None: it is matched against paths relative to the
    directory artifact, so it can neither be absolute nor climb out of it."""
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/") or "\\" in pattern:
        return (f"ignore pattern {pattern!r} must be a relative path pattern inside the "
                "directory (no leading '/', no '..', no backslash)")
    return None


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
    hermetic: bool = False  # recorded sandboxed without network (verifier.judgement.hermetic)
    undeclared_inputs: str = "allow"  # or "forbid": traced, and no undeclared input


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


PRODUCT_RULES = ("exact", "tensors", "json", "informational")


@dataclass(frozen=True)
class ProductRule:
    """How a rebuilt product matching `pattern` is judged: bit for bit (exact), tensor by tensor
    within a tolerance (tensors), as JSON with numbers within a tolerance (json), or compared
    and reported only (informational: never a match nor dissent)."""

    pattern: str
    kind: str  # one of PRODUCT_RULES
    tolerance: Tolerance | None = None


@dataclass(frozen=True)
class StepMatch:
    """A step's match rule: `default` for products no pattern names (None: exact; a tolerance:
    tensor files within it), and per-product rules by glob."""

    default: Tolerance | None = None
    products: tuple[ProductRule, ...] = ()
    where: str = "rebuild.match"  # the policy field, for messages

    @property
    def all_exact(self) -> bool:
        return self.default is None and all(r.kind == "exact" for r in self.products)

    def rule_for(self, name: str) -> ProductRule:
        """The rule for one product; InputError when patterns with different rules match it."""
        found = [r for r in self.products if _glob(name, r.pattern)]
        if len({(r.kind, r.tolerance) for r in found}) > 1:
            raise InputError(
                f"{self.where}: product {name} matches the patterns "
                f"{' and '.join(repr(r.pattern) for r in found)} with different rules; "
                "the policy must say one rule per product.")
        if found:
            return found[0]
        if self.default is None:
            return ProductRule("**", "exact")
        return ProductRule("**", "tensors", self.default)


@dataclass(frozen=True)
class ReplayRule:
    """`rebuild.replay.STEP`: each rebuilder must have replayed at least `segments` distinct
    segments of the step's checkpoint log, each matching bit for bit or, with `update_rtol`,
    within that share of the segment's own update (verifier.judgement.replay)."""

    segments: int
    update_rtol: float | None = None


@dataclass(frozen=True)
class RebuildRule:
    quorum: int
    rebuilders: tuple[str, ...]
    steps: tuple[str, ...]
    match: dict[str, StepMatch]  # per step
    max_dissent: int | None = None
    # Count only sandboxed, offline rebuilds (verifier.judgement.hermetic).
    require_sandbox: bool = False
    # Steps judged by segment replay instead of (or besides) a whole rebuild, per step.
    replay: dict[str, ReplayRule] = field(default_factory=dict)


@dataclass(frozen=True)
class LicenseRule:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # Recognised as open by the openness report besides the SPDX list's OSI/FSF licences; it
    # allows nothing by itself (verifier.reports.openness).
    open: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    path: Path
    name: str
    expires: dt.date | None
    signers: dict[str, SignerSpec]
    sources: tuple[SourceRule, ...]
    steps: tuple[StepRule, ...]
    rebuild: RebuildRule | None = None
    licenses: LicenseRule | None = None  # judged by verifier.judgement.evaluation over every step
    max_benchmark_overlap: float | None = None  # judged by verifier.reports.contamination
    trusted_root: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # Digests that may establish a match; blake3 only where the policy opts in (docs/digests.md).
    accept_digests: tuple[str, ...] = ("sha256",)
    # Glob patterns of files left out when a directory artifact is hashed for verification.
    ignore: tuple[str, ...] = ()

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
        # The explanation names the field; a value is quoted only briefly, so that no
        # message grows with the input (a policy may be a stranger's).
        message = explain_schema_error(error)
        raise InputError(f"{path}: {message if len(message) <= 300 else message[:299] + '…'}.")


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
    for pattern in data.get("ignore", []):
        if (why := check_ignore_pattern(pattern)) is not None:
            raise InputError(f"{path}: ignore: {why}.")
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
        rebuild=_rebuild_rule(path, data.get("rebuild")),
        trusted_root=base / data["trusted_root"] if "trusted_root" in data else None,
        raw=data,
        accept_digests=tuple(data.get("digests", {}).get("accept", ["sha256"])),
        ignore=tuple(data.get("ignore", [])),
    )


def _license_rule(path: Path, data: dict[str, Any] | None) -> LicenseRule | None:
    """The licence lists, each entry checked as an SPDX identifier (or ID WITH EXCEPTION)."""
    from verifier.judgement import spdx

    if not data:
        return None
    for key in ("allow", "deny", "open"):
        for entry in data.get(key, []):
            try:
                parsed = spdx.parse(entry)
            except InputError as error:
                raise InputError(f"{path}: licenses.{key}: {error}") from None
            if len(parsed.alternatives) != 1 or len(parsed.alternatives[0]) != 1:
                raise InputError(f"{path}: licenses.{key}: {entry!r} is an expression; list "
                                 "single licence identifiers.")
    return LicenseRule(tuple(data.get("allow", ())), tuple(data.get("deny", ())),
                       tuple(data.get("open", ())))


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
                raise InputError(f"{path}: step {step.name!r} names an unknown signer {signer!r}"
                                 f"{did_you_mean(signer, signers)}.")
        for earlier in step.after:
            if earlier not in names:
                raise InputError(f"{path}: step {step.name!r} comes after an unknown step "
                                 f"{earlier!r}{did_you_mean(earlier, names)}.")
    if rebuild:
        for rebuilder in rebuild["rebuilders"]:
            if rebuilder not in signers:
                raise InputError(f"{path}: rebuild.rebuilders names an unknown signer "
                                 f"{rebuilder!r}{did_you_mean(rebuilder, signers)}.")
        for step_name in rebuild.get("steps", []):
            if step_name not in names:
                raise InputError(f"{path}: rebuild.steps names an unknown step {step_name!r}"
                                 f"{did_you_mean(step_name, names)}.")
        for step_name in rebuild.get("replay", {}):
            if step_name not in names:
                raise InputError(f"{path}: rebuild.replay names an unknown step {step_name!r}"
                                 f"{did_you_mean(step_name, names)}.")
        match = rebuild.get("match")
        if isinstance(match, dict) and "rtol" not in match:
            for step_name in match:
                if step_name not in rebuild.get("steps", []):
                    raise InputError(
                        f"{path}: rebuild.match.{step_name}: names no step of rebuild.steps"
                        f"{did_you_mean(step_name, rebuild.get('steps', []))}; a rule for a "
                        "step that is not rebuilt would be no rule.")


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


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{where} must be a finite number.")
    return number


def _tolerance_of(data: dict[str, Any], where: str) -> Tolerance:
    return Tolerance(_number(data["rtol"], f"{where}.rtol"), _number(data["atol"], f"{where}.atol"))


def _whole_step(value: Any, where: str) -> Tolerance | None:
    return None if value == "exact" else _tolerance_of(value, where)


def _product_rule(pattern: str, value: Any, where: str) -> ProductRule:
    if value in ("exact", "informational"):
        return ProductRule(pattern, value)
    if "json" in value:
        return ProductRule(pattern, "json", _tolerance_of(value["json"], f"{where}.json"))
    return ProductRule(pattern, "tensors", _tolerance_of(value.get("tensors", value), where))


def _step_match(path: Path, step: str, value: Any) -> StepMatch:
    where = f"{path}: rebuild.match.{step}"
    if not isinstance(value, dict) or "products" not in value:
        return StepMatch(_whole_step(value, where), where=where)
    rules = tuple(_product_rule(p, v, f"{where}.products.{p}")
                  for p, v in value["products"].items())
    for rule in rules:
        if (why := check_ignore_pattern(rule.pattern)) is not None:
            raise InputError(f"{where}.products: {why.replace('ignore pattern', 'pattern')}.")
        if rule.kind == "informational" and all(
                _glob(name, rule.pattern) for name in ("x", ".x", "x/y/z.bin")):
            # Every product informational: a rebuild could reproduce nothing that is checked,
            # yet read as a match.
            raise InputError(f"{where}.products.{rule.pattern}: informational for every product "
                             "leaves nothing a rebuild is judged on; name the products that "
                             "are informational and let the model's files be judged.")
    # Two patterns where one names a file the other matches, with different rules: ambiguous
    # whatever the step produces (other overlaps are refused when a product meets them).
    for first in rules:
        for second in rules:
            if (first is not second and not _has_wildcard(first.pattern)
                    and _glob(first.pattern, second.pattern)
                    and (first.kind, first.tolerance) != (second.kind, second.tolerance)):
                raise InputError(f"{where}.products: {first.pattern} matches both "
                                 f"{first.pattern!r} and {second.pattern!r}, with different "
                                 "rules; give each product one rule.")
    return StepMatch(_whole_step(value.get("default", "exact"), f"{where}.default"), rules,
                     where)


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?")


def _rebuild_rule(path: Path, data: dict[str, Any] | None) -> RebuildRule | None:
    if not data:
        return None
    match = data.get("match", "exact")
    per_step: dict[str, StepMatch] = {}
    whole = match == "exact" or (isinstance(match, dict) and "rtol" in match)
    for step in data.get("steps", []):
        if whole:
            per_step[step] = StepMatch(_whole_step(match, f"{path}: rebuild.match"),
                                       where=f"{path}: rebuild.match")
        else:
            per_step[step] = _step_match(path, step, match.get(step, "exact"))
    return RebuildRule(
        quorum=int(data["quorum"]),
        rebuilders=tuple(data["rebuilders"]),
        steps=tuple(data.get("steps", [])),
        match=per_step,
        max_dissent=data.get("max_dissent"),
        require_sandbox=data.get("require_sandbox", False),
        replay={step: _replay_rule(path, step, value)
                for step, value in data.get("replay", {}).items()},
    )


def _replay_rule(path: Path, step: str, value: dict[str, Any]) -> ReplayRule:
    from verifier.diff.update import check_update_rtol

    match = value.get("match")
    rtol = None if match is None else check_update_rtol(
        _number(match["update_rtol"], f"{path}: rebuild.replay.{step}.match.update_rtol"),
        f"{path}: rebuild.replay.{step}.match.update_rtol")
    return ReplayRule(segments=int(value["segments"]), update_rtol=rtol)
