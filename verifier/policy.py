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
        error = jsonschema.exceptions.best_match(errors)
        where = ".".join(str(p) for p in error.absolute_path) or "the top level"
        raise InputError(f"{path}: {where}: {error.message}.")


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
        rebuild=_rebuild_rule(data.get("rebuild"), steps),
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


def _rebuild_rule(data: dict[str, Any] | None, steps: tuple[StepRule, ...]) -> RebuildRule | None:
    if not data:
        return None
    match = data.get("match", "exact")
    per_step: dict[str, Tolerance | None] = {}
    for step in data["steps"]:
        if match == "exact":
            per_step[step] = None
        elif "rtol" in match and "atol" in match:
            per_step[step] = Tolerance(float(match["rtol"]), float(match["atol"]))
        else:
            chosen = match.get(step, "exact")
            per_step[step] = (
                None if chosen == "exact" else Tolerance(float(chosen["rtol"]),
                                                         float(chosen["atol"]))
            )
    return RebuildRule(
        quorum=int(data["quorum"]),
        rebuilders=tuple(data["rebuilders"]),
        steps=tuple(data["steps"]),
        match=per_step,
        max_dissent=data.get("max_dissent"),
        require_sandbox=data.get("require_sandbox", False),
    )
