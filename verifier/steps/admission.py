"""Which recorded steps a rebuild may run, and in what order.

Nothing runs unless a signer the rebuilder trusts signed the step (a key, a keyless identity,
or the policy's signers of that step): `Trust` says who, `load_steps` keeps only step
attestations such a signer made, `order_steps` sorts them so that every step runs after the
steps that make its materials, and `_check_paths` refuses names that would leave the workspace
before anything is planned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle, read_bundles
from verifier.formats.signing import PublicKey, bundle_signed_by
from verifier.formats.statement import (
    REBUILD_PREDICATE_TYPE,
    StepRecord,
    as_step,
    parse_statement,
)

if TYPE_CHECKING:
    from verifier.judgement.policy import KeylessIdentity, Policy


@dataclass
class Trust:
    """Whose step attestations a rebuild runs: keys, keyless identities, a policy's signers."""

    keys: list[PublicKey] = field(default_factory=list)
    identities: list[KeylessIdentity] = field(default_factory=list)
    policy: Policy | None = None
    trusted_root: Path | None = None

    def __post_init__(self) -> None:
        self._signers: Any = None

    @property
    def empty(self) -> bool:
        return not (self.keys or self.identities or self.policy)

    def describe(self) -> str:
        names = [k.source for k in self.keys]
        names += [f"{i.identity} ({i.issuer})" for i in self.identities]
        if self.policy is not None:
            names.append(f"the signers {self.policy.path} names for each step")
        return ", ".join(names)

    def admits(self, bundle: Bundle, step: str) -> bool:
        if any(bundle_signed_by(bundle, key) for key in self.keys):
            return True
        if self.identities and bundle.is_keyless:
            from verifier.formats.keyless import check_keyless

            if any(check_keyless(bundle, spec, self.trusted_root) is not None
                   for spec in self.identities):
                return True
        if self.policy is not None:
            rule = self.policy.step(step)
            if rule is None:
                return False
            if self._signers is None:
                from verifier.formats.keyless import check_keyless
                from verifier.judgement.trust import TrustedSigners

                self._signers = TrustedSigners(self.policy, check_keyless)
            return bool(set(self._signers.attribute(bundle).names) & set(rule.signed_by))
        return False


def load_steps(paths: Sequence[Path], trust: Trust) -> list[StepRecord]:
    """The step records in the given bundle files (or directories of them).

    A step attestation that no trusted signer signed is refused (InputError) before anything
    runs; so is a rebuild with nobody to trust. Rebuild attestations in the same directories
    are skipped.
    """
    if trust.empty:
        raise InputError("rebuild runs the commands the attestations name, so it needs to know "
                         "whom to trust: pass --trust-key FILE, --trust-identity ID with "
                         "--trust-issuer URL, or --policy FILE.")
    records: list[StepRecord] = []
    for path in paths:
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")
        ) if path.is_dir() else [path]
        for file in files:
            for bundle in read_bundles(file):
                if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
                    raise InputError(f"{bundle.source}: payload type is not in-toto.")
                statement = parse_statement(bundle.payload, bundle.source)
                if statement.predicate_type == REBUILD_PREDICATE_TYPE:
                    continue
                record = as_step(statement)
                if not trust.admits(bundle, record.step):
                    raise InputError(
                        f"{bundle.source}: is not signed by any trusted signer "
                        f"({trust.describe()}), so its command is not run; nothing was run."
                    )
                records.append(record)
    if not records:
        raise InputError("no step attestations found in " + ", ".join(map(str, paths)) + ".")
    return records


def order_steps(records: list[StepRecord]) -> list[StepRecord]:
    """Topological order by material/product digests (a step after those it consumes)."""
    produced_by: dict[tuple[str, str], int] = {}
    for index, record in enumerate(records):
        for product in record.products:
            for algorithm, value in product["digest"].items():
                produced_by[(algorithm, value)] = index
    depends: dict[int, set[int]] = {i: set() for i in range(len(records))}
    for index, record in enumerate(records):
        for material in record.materials:
            for algorithm, value in material["digest"].items():
                producer = produced_by.get((algorithm, value))
                if producer is not None and producer != index:
                    depends[index].add(producer)
    ordered: list[int] = []
    state: dict[int, str] = {}

    def visit(node: int) -> None:
        if state.get(node) == "done":
            return
        if state.get(node) == "active":
            raise InputError(f"{records[node].source}: the steps' materials and products form "
                             "a cycle, so they have no build order.")
        state[node] = "active"
        for dependency in sorted(depends[node]):
            visit(dependency)
        state[node] = "done"
        ordered.append(node)

    for node in range(len(records)):
        visit(node)
    return [records[i] for i in ordered]


def _safe_relative(name: str, source: str) -> PurePosixPath:
    """A recorded name as a path that cannot leave the workspace (attestations are input)."""
    path = PurePosixPath(name)
    if "\x00" in name or path.is_absolute() or ".." in path.parts:
        raise InputError(f"{source}: the path {name!r} leaves the workspace; refusing to use it.")
    return path


def _check_text(value: str, what: str, source: str) -> None:
    """Refuse text no file name, argument or variable can carry: a NUL or a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{source}: the {what} {value!r} is not valid Unicode text; "
                         "refusing to use it.") from None
    if "\x00" in value:
        raise InputError(f"{source}: the {what} {value!r} holds a NUL character; refusing to "
                         "use it.")


def _check_paths(record: StepRecord) -> None:
    """Refuse, before anything runs, a step whose recorded names would reach outside or that
    no file name, command line or environment can carry."""
    _check_text(record.working_directory, "working directory", record.source)
    _safe_relative(record.working_directory, record.source)
    for descriptor in (*record.materials, *record.products):
        _check_text(descriptor["name"], "path", record.source)
        _safe_relative(descriptor["name"], record.source)
    for argument in record.argv:
        _check_text(argument, "command argument", record.source)
    for name, value in record.declared_env.items():
        _check_text(name, "variable name", record.source)
        _check_text(value, f"value of {name}", record.source)
        if not name or "=" in name:
            raise InputError(f"{record.source}: the variable name {name!r} is empty or holds "
                             "'='; refusing to use it.")
