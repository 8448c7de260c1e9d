"""The policy a deployable model must satisfy: loading, schema validation, the model of it.

Paths inside a policy (keys, trusted roots) are relative to the policy file. Unknown fields are
errors: a misspelt rule must never silently turn into no rule.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

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


def ignore_pattern_for(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first ignore pattern that leaves the file `name` (relative to a directory artifact)
    out: one matching its path or the path of a directory holding it, so `.git` leaves out all
    of `.git/` and `.cache/huggingface/**` everything below that folder."""
    if not patterns:
        return None
    candidates = [name, *_parents(name)]
    return next((p for p in patterns if any(_glob(c, p) for c in candidates)), None)


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
    hermetic: bool = False  # recorded sandboxed without network (verifier.hermetic)
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
class RebuildRule:
    quorum: int
    rebuilders: tuple[str, ...]
    steps: tuple[str, ...]
    match: dict[str, StepMatch]  # per step
    max_dissent: int | None = None
    require_sandbox: bool = False  # count only sandboxed, offline rebuilds (verifier.hermetic)


@dataclass(frozen=True)
class Policy:
    path: Path
    name: str
    expires: dt.date | None
    signers: dict[str, SignerSpec]
    sources: tuple[SourceRule, ...]
    steps: tuple[StepRule, ...]
    rebuild: RebuildRule | None = None
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

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"{path}: no such policy file; pass one with --policy FILE "
            "(policies/ has examples)."
        ) from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a policy YAML file.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: is not UTF-8 text.") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror}).") from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass: safe
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise InputError(f"{path}: is not valid YAML ({problem}{where}).") from None
    except RecursionError:
        raise InputError(f"{path}: is nested too deeply to be a policy.") from None
    except ValueError as error:  # e.g. a date that does not exist, such as 2024-02-30
        raise InputError(f"{path}: is not a valid policy ({error}).") from None


def _strict_loader() -> type:
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error: with the
    plain loader the second silently replaces the first, turning a rule into no rule."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def _validate(data: Any, path: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        _schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        from verifier.policy_check import explain_schema_error

        error = jsonschema.exceptions.best_match(errors)
        raise InputError(f"{path}: {explain_schema_error(error)}.")


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; InputError names the file and the field at fault."""
    data = _read_yaml(path)
    if data is None:
        raise InputError(f"{path}: is empty; a policy needs at least version, signers and steps.")
    if isinstance(data, dict) and isinstance(data.get("expires"), dt.date):
        data["expires"] = data["expires"].isoformat()
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
        signers=signers,
        sources=tuple(_source_rule(s) for s in data.get("sources", [])),
        steps=steps,
        rebuild=_rebuild_rule(path, data.get("rebuild")),
        trusted_root=base / data["trusted_root"] if "trusted_root" in data else None,
        raw=data,
        accept_digests=tuple(data.get("digests", {}).get("accept", ["sha256"])),
        ignore=tuple(data.get("ignore", [])),
    )


def _source_rule(data: dict[str, Any]) -> SourceRule:
    fields = {k: v for k, v in data.items() if k != "dirHash"}
    return SourceRule(**fields, dir_hash=data.get("dirHash"))


def did_you_mean(name: str, known: Any) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    import difflib

    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        for step_name in rebuild["steps"]:
            if step_name not in names:
                raise InputError(f"{path}: rebuild.steps names an unknown step {step_name!r}"
                                 f"{did_you_mean(step_name, names)}.")
        match = rebuild.get("match")
        if isinstance(match, dict) and "rtol" not in match:
            for step_name in match:
                if step_name not in rebuild["steps"]:
                    raise InputError(
                        f"{path}: rebuild.match.{step_name}: names no step of rebuild.steps"
                        f"{did_you_mean(step_name, rebuild['steps'])}; a rule for a step that "
                        "is not rebuilt would be no rule.")


def _tolerance_of(data: dict[str, Any]) -> Tolerance:
    return Tolerance(float(data["rtol"]), float(data["atol"]))


def _whole_step(value: Any) -> Tolerance | None:
    return None if value == "exact" else _tolerance_of(value)


def _product_rule(pattern: str, value: Any) -> ProductRule:
    if value in ("exact", "informational"):
        return ProductRule(pattern, value)
    if "json" in value:
        return ProductRule(pattern, "json", _tolerance_of(value["json"]))
    return ProductRule(pattern, "tensors", _tolerance_of(value.get("tensors", value)))


def _step_match(path: Path, step: str, value: Any) -> StepMatch:
    where = f"{path}: rebuild.match.{step}"
    if not isinstance(value, dict) or "products" not in value:
        return StepMatch(_whole_step(value), where=where)
    rules = tuple(_product_rule(p, v) for p, v in value["products"].items())
    for rule in rules:
        if (why := check_ignore_pattern(rule.pattern)) is not None:
            raise InputError(f"{where}.products: {why.replace('ignore pattern', 'pattern')}.")
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
    return StepMatch(_whole_step(value.get("default", "exact")), rules, where)


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?")


def _rebuild_rule(path: Path, data: dict[str, Any] | None) -> RebuildRule | None:
    if not data:
        return None
    match = data.get("match", "exact")
    per_step: dict[str, StepMatch] = {}
    whole = match == "exact" or (isinstance(match, dict) and "rtol" in match)
    for step in data["steps"]:
        if whole:
            per_step[step] = StepMatch(_whole_step(match), where=f"{path}: rebuild.match")
        else:
            per_step[step] = _step_match(path, step, match.get(step, "exact"))
    return RebuildRule(
        quorum=int(data["quorum"]),
        rebuilders=tuple(data["rebuilders"]),
        steps=tuple(data["steps"]),
        match=per_step,
        max_dissent=data.get("max_dissent"),
        require_sandbox=data.get("require_sandbox", False),
    )
