"""`policy check`: every error of a policy, each with the field's path and, for a name that is
not known, the closest known one.

Loading a policy (`verifier.judgement.policy.load_policy`) stops at the first error; a person
fixing a policy wants them all. The schema's errors are explained one by one (an unknown field
names the
fields allowed there; a value that fits none of a field's forms is explained by the form it came
closest to), then the names the schema cannot check (signers, steps, `after`, the rebuild
section's steps and match), then what makes a policy that loads useless: one that can never
pass (a quorum larger than its independent rebuilders, an `expires` gone by) or passes too
easily (two signer names for one key, which the trust rules count as one identity), and every
key file that cannot be read, whatever else is wrong. Last, what only loading finds (patterns).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.judgement.policy import _read_yaml, _schema, load_policy
from verifier.judgement.policy_schema import _explain, did_you_mean


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _fields(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name_errors(data: dict[str, Any]) -> list[str]:
    """Names the schema cannot check: who signs, which steps, what the rebuild rule names.
    A field of the wrong type is the schema's error (already reported): it is passed over
    here, never read as if it had the right one."""
    found: list[str] = []
    signers = [k for k in _fields(data.get("signers")) if isinstance(k, str)]
    step_entries = [_fields(s) for s in _items(data.get("steps"))]
    steps = [s["name"] for s in step_entries if isinstance(s.get("name"), str)]
    seen: set[str] = set()
    for index, step in enumerate(step_entries):
        name = step.get("name")
        if isinstance(name, str):
            if name in seen:
                found.append(f"steps.{index}.name: the step {name!r} appears twice")
            seen.add(name)
        for position, signer in enumerate(_items(step.get("signed_by"))):
            if isinstance(signer, str) and signer not in signers:
                found.append(f"steps.{index}.signed_by.{position}: unknown signer {signer!r}"
                             f"{did_you_mean(signer, signers)}")
        for position, earlier in enumerate(_items(step.get("after"))):
            if isinstance(earlier, str) and earlier not in steps:
                found.append(f"steps.{index}.after.{position}: unknown step {earlier!r}"
                             f"{did_you_mean(earlier, steps)}")
    rebuild = _fields(data.get("rebuild"))
    for position, rebuilder in enumerate(_items(rebuild.get("rebuilders"))):
        if isinstance(rebuilder, str) and rebuilder not in signers:
            found.append(f"rebuild.rebuilders.{position}: unknown signer {rebuilder!r}"
                         f"{did_you_mean(rebuilder, signers)}")
    rebuilt = [s for s in _items(rebuild.get("steps")) if isinstance(s, str)]
    for position, step_name in enumerate(_items(rebuild.get("steps"))):
        if isinstance(step_name, str) and step_name not in steps:
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
            if isinstance(step_name, str) and step_name not in rebuilt:
                found.append(f"rebuild.match.{step_name}: names no step of rebuild.steps"
                             f"{did_you_mean(step_name, rebuilt)}")
    return found


def _signer_errors(data: dict[str, Any], base: Path) -> list[str]:
    """Key files that do not load, and two signer names for one identity (one public key, or
    one keyless issuer and identity): whoever holds that key signs as both names, so a
    rebuilder sharing the builder's key is no independent rebuilder, and two rebuilders
    sharing one key are one rebuilder. Checked whatever the rest of the policy holds."""
    from verifier.formats.signing import load_public_key

    found: list[str] = []
    owners: dict[str, str] = {}
    for name, spec in _fields(data.get("signers")).items():
        spec = _fields(spec)
        identity = None
        if isinstance(spec.get("key"), str):
            try:
                identity = "the public key of " + load_public_key(base / spec["key"]).hint
            except InputError as error:
                found.append(f"signers.{name}.key: {_sentence(str(error))}")
        elif isinstance(spec.get("sigstore"), dict):
            sigstore = spec["sigstore"]
            identity = "the keyless identity " + repr(
                (sigstore.get("issuer"), sigstore.get("identity"), sigstore.get("identity_regex")))
        if identity is None:
            continue
        if identity in owners:
            kind = "public key" if "key" in spec else "keyless identity"
            found.append(f"signers.{name}: has the same {kind} as signer {owners[identity]!r}; "
                         "one identity under two names counts once, so give each signer its "
                         "own")
        else:
            owners[identity] = str(name)
    return found


def _sentence(message: str) -> str:
    return message[:-1] if message.endswith(".") else message


def _reach_errors(data: dict[str, Any], today: dt.date) -> list[str]:
    """A policy that loads and can never pass: it has expired, or its quorum asks for more
    independent rebuilders than it names."""
    found: list[str] = []
    expires = data.get("expires")
    try:
        expiry = dt.date.fromisoformat(expires) if isinstance(expires, str) else None
    except ValueError:
        expiry = None  # the schema's error
    if expiry is not None and today > expiry:
        found.append(f"expires: {expiry.isoformat()} is in the past, so every verification "
                     "under this policy fails; renew the date")
    rebuild = _fields(data.get("rebuild"))
    quorum = rebuild.get("quorum")
    rebuilders = {r for r in _items(rebuild.get("rebuilders")) if isinstance(r, str)}
    if not isinstance(quorum, int) or isinstance(quorum, bool):
        return found
    if quorum > len(rebuilders):
        found.append(f"rebuild.quorum: {quorum} independent matching rebuilds are required but "
                     f"rebuild.rebuilders names {len(rebuilders)}, so no step can ever pass; "
                     "lower the quorum or name more rebuilders")
        return found
    # A step's own signer never rebuilds it independently (quorum.judge_rebuilds).
    signers_of = {s["name"]: {n for n in _items(s.get("signed_by")) if isinstance(n, str)}
                  for s in map(_fields, _items(data.get("steps")))
                  if isinstance(s.get("name"), str)}
    for position, step in enumerate(_items(rebuild.get("steps"))):
        own = signers_of.get(step, set()) & rebuilders if isinstance(step, str) else set()
        if own and quorum > len(rebuilders - own):
            found.append(f"rebuild.steps.{position}: step {step!r} is signed by "
                         f"{', '.join(sorted(own))}, who never counts as its independent "
                         f"rebuilder, leaving {len(rebuilders - own)} for a quorum of {quorum}; "
                         "it can never pass")
    return found


def policy_warnings(path: Path) -> list[str]:
    """What lets a valid policy pass more easily than its author may think: with a rebuild
    section, a step it names neither in `steps` nor in `replay` passes without any rebuild
    reproducing it (a replayed step needs its segments replayed instead)."""
    data = _read_yaml(path)
    rebuild = _fields(data.get("rebuild")) if isinstance(data, dict) else {}
    if not rebuild:
        return []
    rebuilt = {s for s in _items(rebuild.get("steps")) if isinstance(s, str)}
    replayed = rebuild.get("replay")
    rebuilt |= {s for s in replayed if isinstance(s, str)} if isinstance(replayed, dict) else set()
    return [f"steps.{index}: step {step['name']!r} is not in rebuild.steps, so it passes "
            "without any rebuild reproducing it; add it there unless that is meant"
            for index, step in enumerate(map(_fields, _items(data.get("steps"))))
            if isinstance(step.get("name"), str) and step["name"] not in rebuilt]


def check_policy(path: Path, today: dt.date | None = None) -> list[str]:
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
    for more in (_name_errors(data), _signer_errors(data, path.parent),
                 _reach_errors(data, today or dt.date.today())):
        found.extend(m for m in more if m not in found)
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
