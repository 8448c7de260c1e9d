"""`policy check`: every error of a policy, each with the field's path and, for a name that is
not known, the closest known one.

Loading a policy (`verifier.judgement.policy.load_policy`) stops at the first error; a person
fixing a policy wants them all. The schema's errors are explained one by one (an unknown field
names the
fields allowed there; a value that fits none of a field's forms is explained by the form it came
closest to), then the names the schema cannot check (signers, steps, `after`, the rebuild
section's steps and match), then what only loading finds (keys, patterns).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.judgement.policy import _read_yaml, _schema, did_you_mean, load_policy


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "the top level"


def _explain(error: Any) -> list[str]:
    """One sentence per problem inside a schema error."""
    import jsonschema

    where = _where(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        if allowed:
            return [f"{_where([*error.absolute_path, k])}: unknown field {k!r}"
                    f"{did_you_mean(k, allowed)}; allowed here: {', '.join(allowed)}"
                    for k in unknown]
        return [f"{where}: {error.message}"]
    if error.validator in ("oneOf", "anyOf") and error.context:
        # A misspelt field inside one of the forms says most; else the alternative the value
        # came closest to (the one whose errors lie deepest).
        typo = _misspelt_field(error)
        if typo is not None:
            return _explain(typo)
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None and best.validator not in ("const", "type", "required", "not",
                                                       "oneOf", "anyOf"):
            return _explain(best)
        if best is not None and best.validator in ("oneOf", "anyOf") and best.context:
            return _explain(best)
        consts = [str(e.schema["const"]) for e in _descendants(error)
                  if e.validator == "const" and isinstance(e.schema.get("const"), str)]
        close = did_you_mean(error.instance, consts) if isinstance(error.instance, str) else ""
        return [f"{where}: {_short(error.instance)} fits none of the forms this field takes"
                f"{close}{_forms(where)}"]
    return [f"{where}: {error.message}"]


def _descendants(error: Any) -> list[Any]:
    found, pending = [], list(error.context or ())
    while pending:
        sub = pending.pop()
        found.append(sub)
        pending.extend(sub.context or ())
    return found


def _misspelt_field(error: Any) -> Any:
    """The deepest 'unknown field' error under a oneOf whose name is close to an allowed one."""
    found, pending = [], list(error.context)
    while pending:
        sub = pending.pop()
        pending.extend(sub.context or ())
        if sub.validator == "additionalProperties" and isinstance(sub.instance, dict):
            allowed = list(sub.schema.get("properties", {}))
            if allowed and any(did_you_mean(k, allowed) for k in sub.instance
                               if k not in allowed):
                found.append(sub)
    return max(found, key=lambda e: len(e.absolute_path), default=None)


def explain_schema_error(error: Any) -> str:
    """The first sentence explaining a schema error (what loading a policy reports)."""
    return _explain(error)[0]


def _forms(where: str) -> str:
    if where.startswith("rebuild.match"):
        return (" (exact, a tolerance {rtol, atol}, per step one of those or {products: "
                "{GLOB: exact | informational | {rtol, atol} | {json: {rtol, atol}}}})")
    if where.startswith("sources"):
        return (" ({name, sha256}, {name, dirHash}, {pattern, unpinned: true} or "
                "{pattern, git_commit})")
    if where.startswith("signers"):
        return " ({key}, {sigstore: {issuer, identity}} or {certificate: {roots, subject}})"
    return ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _name_errors(data: dict[str, Any]) -> list[str]:
    """Names the schema cannot check: who signs, which steps, what the rebuild rule names."""
    found: list[str] = []
    signers = list(data.get("signers", {}))
    steps = [s.get("name") for s in data.get("steps", []) if isinstance(s, dict)]
    seen: set[str] = set()
    for index, step in enumerate(data.get("steps", [])):
        if step.get("name") in seen:
            found.append(f"steps.{index}.name: the step {step['name']!r} appears twice")
        seen.add(step.get("name"))
        for position, signer in enumerate(step.get("signed_by", [])):
            if signer not in signers:
                found.append(f"steps.{index}.signed_by.{position}: unknown signer {signer!r}"
                             f"{did_you_mean(signer, signers)}")
        for position, earlier in enumerate(step.get("after", [])):
            if earlier not in steps:
                found.append(f"steps.{index}.after.{position}: unknown step {earlier!r}"
                             f"{did_you_mean(earlier, steps)}")
    rebuild = data.get("rebuild") or {}
    for position, rebuilder in enumerate(rebuild.get("rebuilders", [])):
        if rebuilder not in signers:
            found.append(f"rebuild.rebuilders.{position}: unknown signer {rebuilder!r}"
                         f"{did_you_mean(rebuilder, signers)}")
    rebuilt = rebuild.get("steps", [])
    for position, step_name in enumerate(rebuilt):
        if step_name not in steps:
            found.append(f"rebuild.steps.{position}: unknown step {step_name!r}"
                         f"{did_you_mean(step_name, steps)}")
    replayed = rebuild.get("replay")
    for step_name in replayed if isinstance(replayed, dict) else []:
        if step_name not in steps:
            found.append(f"rebuild.replay.{step_name}: unknown step {step_name!r}"
                         f"{did_you_mean(step_name, steps)}")
    match = rebuild.get("match")
    if isinstance(match, dict) and "rtol" not in match:
        for step_name in match:
            if step_name not in rebuilt:
                found.append(f"rebuild.match.{step_name}: names no step of rebuild.steps"
                             f"{did_you_mean(step_name, rebuilt)}")
    return found


def check_policy(path: Path) -> list[str]:
    """Every error found in the policy, as 'FIELD: what is wrong' sentences; [] when valid.
    An unreadable or non-YAML file raises InputError (unusable input, not a verdict)."""
    import jsonschema

    data = _read_yaml(path)
    if data is None:
        return ["the top level: the file is empty; a policy needs version, signers and steps"]
    if isinstance(data, dict) and isinstance(data.get("expires"), dt.date):
        data["expires"] = data["expires"].isoformat()
    validator = jsonschema.Draft202012Validator(
        _schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    found: list[str] = []
    for error in errors:
        found.extend(m for m in _explain(error) if m not in found)
    # A field explained by an unknown name inside it needs no second, vaguer sentence.
    found = [m for m in found if not (" fits none of the forms" in m and any(
        other.startswith(m.split(": ", 1)[0] + ".") for other in found))]
    if not isinstance(data, dict):
        return found
    found.extend(m for m in _name_errors(data) if m not in found)
    if found:
        return found
    try:
        policy = load_policy(path)
        from verifier.judgement.trust import TrustedSigners

        TrustedSigners(policy)  # every key file loads
    except InputError as error:
        message = str(error)
        prefix = f"{path}: "
        return [message[len(prefix):] if message.startswith(prefix) else message]
    return []
