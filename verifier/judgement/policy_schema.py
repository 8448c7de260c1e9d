"""What a schema error in a policy means, in one sentence per problem: an unknown field names
the fields allowed there and the closest one; a value that fits none of a field's forms is
explained by the form it came closest to. Loading a policy (policy) explains its first error
with it, `policy check` (policy_check) all of them.
"""

from __future__ import annotations

from typing import Any


def did_you_mean(name: str, known: Any) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    import difflib

    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
