"""Judgements on how isolated a step or a rebuild ran: pure functions of signed records.

What they read is what `record` and `rebuild` sign: the step's environment.sandbox (kind,
network, devices) and internalParameters.undeclaredInputs (present only when the step was
traced), and the rebuild predicate's environment.sandbox. Each returns None (or nothing) when
all is well and otherwise the sentence a report shows; none of them prints or loads anything.

Policy rules they serve:
  rebuild: {require_sandbox: true}          only rebuilds that ran in bubblewrap without
                                            network count toward the quorum
  steps: [{..., hermetic: true}]            the step was recorded that way
  steps: [{..., undeclared_inputs: forbid}] the step was traced and read no undeclared file
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from verifier.formats.statement import Statement, StepRecord
    from verifier.judgement.policy import StepRule


class _Rebuild(Protocol):
    """What the isolation check reads of a rebuild claim (quorum.RebuildClaim), named here
    without importing quorum, which calls this module."""

    @property
    def statement(self) -> Statement: ...


def _sandbox_problem(environment: Any) -> str | None:
    sandbox = environment.get("sandbox") if isinstance(environment, dict) else None
    if not isinstance(sandbox, dict):
        return "records no sandbox (it ran unsandboxed, or before sandboxes were recorded)"
    kind, network = sandbox.get("kind"), sandbox.get("network")
    if kind != "bwrap":
        return f"ran without a sandbox (sandbox {kind!r})"
    if network != "none":
        return f"ran in a sandbox with network {network!r}"
    return None


def rebuild_isolation_problem(claim: _Rebuild) -> str | None:
    """Why this rebuild does not count under `require_sandbox` (None: it ran sandboxed, offline)."""
    problem = _sandbox_problem(claim.statement.predicate.get("environment"))
    return None if problem is None else f"the rebuild {problem}; require_sandbox counts it not."


def step_isolation_problem(record: StepRecord) -> str | None:
    """Why this step record is not hermetic (None: recorded in bubblewrap without network)."""
    problem = _sandbox_problem(record.environment)
    return None if problem is None else f"the step {problem}, but the policy requires it hermetic."


def undeclared_inputs(record: StepRecord) -> list[str] | None:
    """The signed list of files the step read without declaring them; None when not traced."""
    internal = record.statement.predicate.get("buildDefinition", {})
    internal = internal.get("internalParameters") if isinstance(internal, dict) else None
    listed = internal.get("undeclaredInputs") if isinstance(internal, dict) else None
    if not isinstance(listed, list):
        return None
    return sorted(str(item) for item in listed)


def _listing(names: list[str]) -> str:
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def undeclared_inputs_problem(record: StepRecord) -> str | None:
    """Why the step fails `undeclared_inputs: forbid` (None: traced, and it read none)."""
    listed = undeclared_inputs(record)
    if listed is None:
        return ("the step was not traced, so nothing shows what it read, but the policy "
                "forbids undeclared inputs.")
    if listed:
        return (f"the step read {len(listed)} undeclared input(s) ({_listing(listed)}), which "
                "the policy forbids.")
    return None


def step_findings(rule: StepRule | None, record: StepRecord) -> list[tuple[str, str]]:
    """(severity, sentence) for one step: "error" for what its policy rule forbids, "warning"
    for undeclared inputs the step recorded (reported whether or not a policy forbids them)."""
    prefix = f"{record.source}: step {record.step!r}: "
    findings: list[tuple[str, str]] = []
    if rule is not None and getattr(rule, "hermetic", False):
        problem = step_isolation_problem(record)
        if problem:
            findings.append(("error", prefix + problem))
    forbid = rule is not None and getattr(rule, "undeclared_inputs", "allow") == "forbid"
    if forbid:
        problem = undeclared_inputs_problem(record)
        if problem:
            findings.append(("error", prefix + problem))
    listed = undeclared_inputs(record)
    if listed and not forbid:
        findings.append(("warning", prefix + f"read {len(listed)} undeclared input(s): "
                         f"{_listing(listed)}."))
    return findings
